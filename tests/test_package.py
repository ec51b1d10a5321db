"""What pip installs: the sdist, the wheel built from it (pip's path for `pip install kolabmon-*.tar.gz`)
and a venv that wheel is installed into carry the plugins and icinga/ and nagios/ under
share/kolabmon/, byte for byte. Offline: the venv's own setuptools builds (no build isolation, no
index), and the install is --no-deps --no-index.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
NAME = f"{PROJECT['project']['name']}-{PROJECT['project']['version']}"
SCRIPTS = [Path(f).name for f in PROJECT["tool"]["setuptools"]["script-files"]]
# every file in icinga/ and nagios/ is shipped: a new one must be matched by pyproject's data-files
CONFIG = sorted(f"{d}/{p.name}" for d in ("icinga", "nagios") for p in (ROOT / d).iterdir() if p.is_file())


def _run(*argv: str | Path, cwd: Path | None = None) -> None:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _build(how: str, source: Path, out: Path) -> Path:
    """setuptools' PEP 517 hook, in a process of its own (it works in the cwd and keeps state)."""
    out.mkdir()
    _run(sys.executable, "-c", f"from setuptools import build_meta; build_meta.{how}({str(out)!r})", cwd=source)
    (built,) = out.iterdir()
    return built


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel built from the unpacked sdist); built from a copy so the work tree gets no egg-info."""
    tmp = tmp_path_factory.mktemp("package")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "var", "build", "*.egg-info", "__pycache__", ".*_cache"))
    sdist = _build("build_sdist", source, tmp / "sdist")
    (tmp / "unpacked").mkdir()
    _run("tar", "-xzf", sdist, "-C", tmp / "unpacked")  # tarfile's extraction filter is 3.11.4+
    wheel = _build("build_wheel", tmp / "unpacked" / NAME, tmp / "wheel")
    return sdist, wheel


def test_sdist_carries_the_config(built: tuple[Path, Path]) -> None:
    sdist, _ = built
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
    assert CONFIG and {f"{NAME}/{f}" for f in CONFIG} <= names
    assert {f"{NAME}/checks/{s}" for s in SCRIPTS} <= names


def test_wheel_carries_config_and_plugins(built: tuple[Path, Path]) -> None:
    _, wheel = built
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
    data = f"{NAME}.data/data/share/kolabmon/"
    assert sorted(n.removeprefix(data) for n in names if n.startswith(data)) == CONFIG
    assert {f"{NAME}.data/scripts/{s}" for s in SCRIPTS} <= names
    assert {"kolabmon/ocf/watcher", "kolabmon/ocf/cyrus-imapd", "kolabmon/ocf/saslauthd"} <= names


@pytest.fixture(scope="module")
def installed(built: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv the wheel is installed into, as the READMEs' /opt/kolabmon."""
    venv = tmp_path_factory.mktemp("opt") / "kolabmon"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index",
         "--disable-pip-version-check", built[1])
    return venv


def test_installed_venv_has_the_config(installed: Path) -> None:
    share = installed / "share" / "kolabmon"
    assert sorted(str(p.relative_to(share)) for p in share.rglob("*") if p.is_file()) == CONFIG
    for name in CONFIG:
        assert (share / name).read_bytes() == (ROOT / name).read_bytes(), name
    for script in SCRIPTS:
        first = (installed / "bin" / script).read_text().split("\n", 1)[0]
        assert first.startswith(f"#!{installed}/bin/python"), script  # python or python3: pip's choice


@pytest.mark.parametrize("readme", ["README.md", "icinga/README.md", "nagios/README.md"])
def test_the_install_steps_name_installed_files(installed: Path, readme: str) -> None:
    """Every /opt/kolabmon/share/kolabmon/... path an admin is told to include or copy exists there."""
    paths = re.findall(r"/opt/kolabmon/(share/kolabmon/[\w./*-]*\w[*/]?)", (ROOT / readme).read_text())
    assert paths, f"{readme} does not say where the package installed its config"
    for path in paths:
        assert list(installed.glob(path.rstrip("/"))), f"{readme}: /opt/kolabmon/{path} is not installed"
