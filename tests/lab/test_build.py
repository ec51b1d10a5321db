"""lab/build.py, the parts that need no cluster: installing ocf:kolabmon:watcher for the project's
kolabmon-watch and the service agents when the lab is built, and removing exactly those copies when it
is torn down."""

from __future__ import annotations

from pathlib import Path

import pytest

from kolabmon import ocf
from lab import build


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The agent's path, moved into tmp_path (the real one is the host's, which a running lab uses)."""
    path = tmp_path / "resource.d" / "kolabmon" / "watcher"
    (tmp_path / "resource.d").mkdir()
    monkeypatch.setattr(build, "WATCHER_AGENT", path)
    monkeypatch.setattr(build, "WATCH_BINARY", tmp_path / "venv" / "bin" / "kolabmon-watch")
    monkeypatch.setattr(build, "phase", phases.append)
    phases.clear()
    return path


phases: list[str] = []


def test_built_lab_has_the_agents_for_its_kolabmon_watch_and_down_removes_them(agent: Path, tmp_path: Path) -> None:
    build.install_agents()
    assert agent.stat().st_mode & 0o777 == 0o755
    assert f'OCF_RESKEY_binary_default="{tmp_path}/venv/bin/kolabmon-watch"\n' in agent.read_text()
    assert sorted(p.name for p in agent.parent.iterdir()) == sorted(["watcher", *ocf.SERVICE_AGENTS])
    build.install_agents()  # a second build finds them in place
    build.remove_agents()
    assert not agent.parent.exists() and (tmp_path / "resource.d").is_dir() and phases == []
    build.remove_agents()  # nothing there: nothing to do


def test_an_agent_that_is_not_the_labs_copy_is_left_and_reported(agent: Path) -> None:
    ocf.install(agent.parent, "/opt/kolabmon/bin/kolabmon-watch")
    build.remove_agents()
    assert agent.is_file() and len(phases) == 1 and phases[0].startswith(f"WARNING {agent} is not the lab's copy")
