"""The resource agent ocf:kolabmon:watcher (kolabmon/ocf/watcher) as kolabmon.ocf.install installs it,
run on the host against the real kolabmon-watch: ocf-tester, its meta-data against the OCF DTD, and
each way it must fail (bad config, missing binary, a killed and a hung watcher)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kolabmon import ocf
from tests.fakes import watch as fake_watch
from tests.helpers import exit_reason, valid_meta_data

ROOT = Path(__file__).resolve().parents[2]
WATCH = ROOT / ".venv" / "bin" / "kolabmon-watch"
THREE_NODES = Path(__file__).parent / "bad-configs" / "three-nodes.toml"
CONFIG = """
cluster = "kolab-cluster"
group = "kolab"
state_dir = "{state}"
[nodes.test]
[nodes.peer]
[services.imap]
reprobe = ["check_kolab_imap", "-H", "192.0.2.1"]
"""
OCF_SUCCESS, OCF_ERR_GENERIC, OCF_ERR_PERM, OCF_ERR_INSTALLED, OCF_ERR_CONFIGURED, OCF_NOT_RUNNING = 0, 1, 4, 5, 6, 7


@pytest.fixture(scope="module")
def agent() -> Iterator[Path]:
    """The agent installed for the venv's kolabmon-watch, in a directory uid nobody can read (ocf-tester
    runs meta-data as nobody; pytest's own tmp directories are root's alone)."""
    assert os.access(WATCH, os.X_OK), f"{WATCH} is missing: run lab/setup.sh"
    top = Path(tempfile.mkdtemp(prefix="kolabmon-ocf-"))
    top.chmod(0o755)
    try:
        yield ocf.install(top / "kolabmon", str(WATCH))
    finally:
        shutil.rmtree(top)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "takeover.toml"
    path.write_text(CONFIG.format(state=tmp_path))
    return path


@pytest.fixture
def env(agent: Path, config: Path, state: Path) -> Iterator[dict[str, str]]:
    """The environment Pacemaker gives the agent; on teardown the agent stops whatever a test left running."""
    values = {"PATH": os.environ["PATH"], "OCF_ROOT": "/usr/lib/ocf", "OCF_RESOURCE_INSTANCE": "watcher-test",
              "OCF_RESKEY_config": str(config), "OCF_RESKEY_node": "test", "OCF_RESKEY_state_dir": str(state),
              "OCF_RESKEY_CRM_meta_timeout": "20000"}
    yield values
    stop = run(agent, "stop", values)
    assert stop.returncode == OCF_SUCCESS, stop.stderr
    assert watchers(state) == [], "a watcher outlived stop"


def run(agent: Path, action: str, env: dict[str, str], **override: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(agent), action], env={**env, **override}, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def watchers(state: Path) -> list[int]:
    """Live (not zombie) processes whose arguments name a status file in STATE."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if any(arg.startswith(str(state).encode() + b"/") for arg in args):
            found.append(int(proc.name))
    return found


def started(agent: Path, env: dict[str, str], state: Path) -> int:
    """Start the watcher through the agent; its pid, checked to be the real kolabmon-watch."""
    start = run(agent, "start", env)
    assert start.returncode == OCF_SUCCESS, start.stderr
    assert start.stdout == "", "start must leave nothing on stdout"
    pid = int((state / "kolabmon-watch-watcher-test.pid").read_text())
    assert str(WATCH).encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert (state / "kolabmon-watch-watcher-test.json").is_file()
    assert run(agent, "monitor", env).returncode == OCF_SUCCESS
    return pid


def dead(pid: int, within: float = 5.0) -> None:
    """Wait until PID has exited (gone, or a zombie nobody reaped)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except (FileNotFoundError, ProcessLookupError):
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} still running after {within} s")


def test_ocf_tester_passes(agent: Path, config: Path, state: Path, env: dict[str, str]) -> None:
    tester = subprocess.run(["ocf-tester", "-n", "test", "-o", f"config={config}", "-o", "node=test",
                             "-o", f"state_dir={state}", "-o", f"binary={WATCH}", str(agent)],
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert tester.returncode == 0 and f"{agent} passed all tests" in tester.stdout, tester.stdout + tester.stderr
    assert list(state.iterdir()) == [] and watchers(state) == []


def test_meta_data_is_valid_and_documents_every_parameter(agent: Path) -> None:
    # as ocf-tester validates it: DOCTYPE ra-api-1.dtd, resolved in the DTD's directory
    root = valid_meta_data(agent)
    defaults = {p.get("name"): p.find("content").get("default")  # type: ignore[union-attr]
                for p in root.iter("parameter")}
    assert defaults == {"config": "/etc/kolabmon/takeover.toml", "binary": str(WATCH), "node": "",
                        "state_dir": "/run/resource-agents", "stale": "30", "log": ""}
    assert all(p.findtext("longdesc", "").strip() and p.findtext("shortdesc", "").strip()
               for p in root.iter("parameter"))
    actions = {a.get("name"): (a.get("timeout"), a.get("interval")) for a in root.iter("action")}
    assert actions["start"] == ("20s", None) and actions["stop"] == ("20s", None)
    assert actions["monitor"] == ("20s", "10s") and "validate-all" in actions


def test_installed_binary_is_the_default(agent: Path, env: dict[str, str]) -> None:
    """No binary parameter: the agent runs the kolabmon-watch it was installed for."""
    assert "OCF_RESKEY_binary" not in env
    assert run(agent, "validate-all", env).returncode == OCF_SUCCESS


def test_bad_config_is_refused_with_the_watchers_line(agent: Path, env: dict[str, str], state: Path) -> None:
    check = subprocess.run([str(WATCH), "--config", str(THREE_NODES), "check"], capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
    assert check.returncode == 3 and check.stdout.startswith("WATCH ERROR - "), check
    line = check.stdout.strip()
    for action in ("validate-all", "start"):
        result = run(agent, action, env, OCF_RESKEY_config=str(THREE_NODES))
        assert result.returncode == OCF_ERR_CONFIGURED, (action, result.stderr)
        assert exit_reason(result) == line
    assert list(state.iterdir()) == [] and watchers(state) == []


def test_node_not_in_the_config_is_refused(agent: Path, env: dict[str, str], state: Path) -> None:
    for action in ("validate-all", "start"):
        result = run(agent, action, env, OCF_RESKEY_node="node9")
        assert result.returncode == OCF_ERR_CONFIGURED, (action, result.stderr)
        assert exit_reason(result).startswith("WATCH ERROR - ") and "node9" in exit_reason(result)
    assert list(state.iterdir()) == [] and watchers(state) == []


def test_missing_binary_is_not_installed(agent: Path, env: dict[str, str], tmp_path: Path) -> None:
    for binary in (str(tmp_path / "kolabmon-watch"), "kolabmon-watch-nowhere"):
        for action in ("validate-all", "start"):
            result = run(agent, action, env, OCF_RESKEY_binary=binary)
            assert result.returncode == OCF_ERR_INSTALLED, (binary, action, result.stderr)
            assert binary in exit_reason(result)
        # the probe of a stopped resource must not depend on the binary
        assert run(agent, "monitor", env, OCF_RESKEY_binary=binary).returncode == OCF_NOT_RUNNING


def test_unwritable_state_dir_and_bad_stale_are_refused(agent: Path, env: dict[str, str], tmp_path: Path) -> None:
    result = run(agent, "validate-all", env, OCF_RESKEY_state_dir=str(tmp_path / "nonexistent"))
    assert result.returncode == OCF_ERR_PERM and "state_dir" in exit_reason(result)
    result = run(agent, "validate-all", env, OCF_RESKEY_log=str(tmp_path / "nonexistent" / "watch.log"))
    assert result.returncode == OCF_ERR_PERM and "log" in exit_reason(result)
    for stale in ("0", "-1", "ten", ""):
        result = run(agent, "validate-all", env, OCF_RESKEY_stale=stale)
        assert result.returncode == OCF_ERR_CONFIGURED and "stale" in exit_reason(result), stale


def test_watcher_that_dies_at_start_fails_start(agent: Path, env: dict[str, str], state: Path,
                                                tmp_path: Path) -> None:
    start = run(agent, "start", env, OCF_RESKEY_binary=str(fake_watch.dies_at_start(tmp_path, 4)))
    assert start.returncode == OCF_ERR_GENERIC and start.stdout == ""
    assert "exited during start (exit 4)" in exit_reason(start) and "fake kolabmon-watch" not in start.stderr
    assert list(state.iterdir()) == []


def test_log_gets_the_watchers_output(agent: Path, env: dict[str, str], state: Path, tmp_path: Path) -> None:
    log = tmp_path / "watch.log"
    start = run(agent, "start", env, OCF_RESKEY_binary=str(fake_watch.dies_at_start(tmp_path, 4)),
                OCF_RESKEY_log=str(log))
    assert start.returncode == OCF_ERR_GENERIC
    assert exit_reason(start).endswith("exited during start (exit 4): fake kolabmon-watch: exiting 4")
    assert log.read_text() == "fake kolabmon-watch running\nfake kolabmon-watch: exiting 4\n"
    env["OCF_RESKEY_log"] = str(log)
    started(agent, env, state)
    assert run(agent, "stop", env).returncode == OCF_SUCCESS
    assert len(log.read_text().splitlines()) > 2, "the real watcher logged nothing, or the log was truncated"


def test_start_is_bounded_by_its_timeout(agent: Path, env: dict[str, str], state: Path, tmp_path: Path) -> None:
    """A watcher that never writes its status file fails start before Pacemaker's timeout (4 s here)."""
    silent = str(fake_watch.never_writes_status(tmp_path))
    begun = time.monotonic()
    start = run(agent, "start", env, OCF_RESKEY_binary=silent, OCF_RESKEY_CRM_meta_timeout="4000")
    assert start.returncode == OCF_ERR_GENERIC and time.monotonic() - begun < 4
    assert "wrote no status file" in exit_reason(start) and "fake kolabmon-watch" not in start.stderr
    assert run(agent, "stop", env, OCF_RESKEY_binary=silent).returncode == OCF_SUCCESS
    assert watchers(state) == []


def test_start_of_a_running_watcher_keeps_it(agent: Path, env: dict[str, str], state: Path) -> None:
    pid = started(agent, env, state)
    assert run(agent, "start", env).returncode == OCF_SUCCESS
    assert int((state / "kolabmon-watch-watcher-test.pid").read_text()) == pid
    assert watchers(state) == [pid]


def test_killed_watcher_is_not_running(agent: Path, env: dict[str, str], state: Path) -> None:
    pid = started(agent, env, state)
    os.kill(pid, signal.SIGKILL)
    dead(pid)
    monitor = run(agent, "monitor", env)
    assert monitor.returncode == OCF_NOT_RUNNING, monitor.stderr
    assert not (state / "kolabmon-watch-watcher-test.pid").exists(), "the stale pid file stays"
    assert run(agent, "stop", env).returncode == OCF_SUCCESS
    assert started(agent, env, state) != pid


def test_hung_watcher_fails_monitor_once_its_status_file_is_stale(agent: Path, env: dict[str, str],
                                                                   state: Path) -> None:
    env["OCF_RESKEY_stale"] = "2"
    pid = started(agent, env, state)
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        while (monitor := run(agent, "monitor", env)).returncode == OCF_SUCCESS:
            assert time.monotonic() - stopped_at < 10, "monitor still OK 10 s after the watcher hung"
            time.sleep(0.5)
        assert monitor.returncode == OCF_ERR_GENERIC, monitor.stderr
        assert f"kolabmon-watch (pid {pid}) has not updated" in exit_reason(monitor)
        assert time.monotonic() - stopped_at > 1, "monitor failed before the status file could be stale"
        # stop ends a stopped watcher by TERM (with CONT), well within the 10 s before KILL
        begun = time.monotonic()
        assert run(agent, "stop", env).returncode == OCF_SUCCESS
        assert time.monotonic() - begun < 5
        dead(pid)
    finally:
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGCONT)


def test_works_without_a_resource_instance(agent: Path, env: dict[str, str], state: Path) -> None:
    del env["OCF_RESOURCE_INSTANCE"]
    assert run(agent, "monitor", env).returncode == OCF_NOT_RUNNING
    assert run(agent, "start", env).returncode == OCF_SUCCESS
    assert run(agent, "monitor", env).returncode == OCF_SUCCESS and len(watchers(state)) == 1
    assert run(agent, "stop", env).returncode == OCF_SUCCESS
    assert run(agent, "monitor", env).returncode == OCF_NOT_RUNNING and watchers(state) == []


def test_install_is_idempotent_and_sets_the_binary(tmp_path: Path) -> None:
    path = ocf.install(tmp_path / "kolabmon", "/opt/kolabmon/bin/kolabmon-watch")
    assert path == tmp_path / "kolabmon" / "watcher" and path.stat().st_mode & 0o777 == 0o755
    assert 'OCF_RESKEY_binary_default="/opt/kolabmon/bin/kolabmon-watch"\n' in path.read_text()
    inode = path.stat().st_ino
    assert ocf.install(tmp_path / "kolabmon", "/opt/kolabmon/bin/kolabmon-watch") == path
    assert path.stat().st_ino == inode, "an unchanged agent was rewritten"
    ocf.install(tmp_path / "kolabmon")  # no binary: back to kolabmon-watch on PATH
    assert path.read_bytes() == ocf.AGENT.read_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == ["watcher"]
    for bad in ("kolabmon-watch", "/opt/$HOME/kolabmon-watch", '/opt/"/kolabmon-watch', "/opt/<x>/kolabmon-watch"):
        with pytest.raises(ValueError):
            ocf.install(tmp_path / "kolabmon", bad)

