"""The resource agents for Kolab's own services, ocf:kolabmon:cyrus-imapd and ocf:kolabmon:saslauthd
(kolabmon/ocf), installed as kolabmon.ocf installs them and run on the host against a real Cyrus and a
real saslauthd (the lab's slapd behind it): ocf-tester, their meta-data against the OCF DTD, a login
through what they started, and each way they must fail (a hung imapd at depth 10, a killed daemon,
missing files, bad parameters)."""

from __future__ import annotations

import contextlib
import grp
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
from lab import cyrus, saslauthd, servers
from tests.helpers import exit_reason, valid_meta_data

OCF_SUCCESS, OCF_ERR_GENERIC, OCF_ERR_INSTALLED, OCF_ERR_CONFIGURED, OCF_NOT_RUNNING = 0, 1, 5, 6, 7


@pytest.fixture(scope="module")
def top() -> Iterator[Path]:
    """A directory everyone can traverse: ocf-tester reads meta-data as nobody, Cyrus runs as cyrus."""
    path = Path(tempfile.mkdtemp(prefix="kolabmon-ocf-services-"))
    path.chmod(0o755)
    try:
        yield path
    finally:  # whatever a failed test left running under it
        for pid in [pid for word in (str(path / "cyrus" / "imapd.conf"), str(path / "sasl-run"))
                    for pid in processes(word)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(path)


@pytest.fixture(scope="module")
def agents(top: Path) -> dict[str, Path]:
    return {name: ocf.install_service_agent(name, top / "kolabmon") for name in ocf.SERVICE_AGENTS}


@pytest.fixture(scope="module")
def sasl_env(top: Path, slapd: servers.Server) -> dict[str, str]:
    conf = top / "saslauthd.conf"
    conf.write_text(saslauthd.saslauthd_conf(f"ldap://{slapd.host}:{slapd.ports['ldap']}/"))
    conf.chmod(0o600)
    return base_env("sasl-test", OCF_RESKEY_config=str(conf), OCF_RESKEY_socket_dir=str(top / "sasl-run"),
                    OCF_RESKEY_threads="2")


@pytest.fixture(scope="module")
def cyrus_env(top: Path, certs: servers.Certs) -> dict[str, str]:
    """A Cyrus store and config (logins through a saslauthd socket in top/sasl-run) on free ports."""
    store, run_dir = top / "cyrus", top / "cyrus-run"
    store.mkdir()
    cert, key = cyrus.make_store(store, certs.cert, certs.key)
    conf = store / "imapd.conf"
    conf.write_text(cyrus.imapd_conf(store, run_dir, top / "sasl-run" / "mux", cert, key, "ocf-test"))
    ports = {name: servers.free_port() for name in ("imap", "imaps")}
    (store / "cyrus.conf").write_text(cyrus.cyrus_conf(conf, "127.0.0.1", ports, run_dir / "socket" / "lmtp"))
    return base_env("imap-test", OCF_RESKEY_binary=str(cyrus.MASTER), OCF_RESKEY_config=str(conf),
                    OCF_RESKEY_cyrus_conf=str(store / "cyrus.conf"), OCF_RESKEY_pidfile=str(run_dir / "master.pid"),
                    OCF_RESKEY_imap_address=f"127.0.0.1:{ports['imap']}", OCF_RESKEY_CRM_meta_timeout="20000")


def base_env(instance: str, **params: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "OCF_ROOT": "/usr/lib/ocf", "OCF_RESOURCE_INSTANCE": instance, **params}


def run(agent: Path, action: str, env: dict[str, str], **override: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(agent), action], env={**env, **override}, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def processes(word: str) -> list[int]:
    """Live (not zombie) processes with `word` among their arguments."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            continue
        if state != "Z" and word.encode() in args:
            found.append(int(proc.name))
    return found


def children(pid: int, comm: str) -> list[int]:
    """Processes of `pid`'s session named `comm`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            name = (proc / "comm").read_text().strip()
        except (OSError, ValueError, IndexError):
            continue
        if fields[3] == str(pid) and name == comm:
            found.append(int(proc.name))
    return found


def ocf_tester(agent: Path, params: dict[str, str]) -> subprocess.CompletedProcess[str]:
    options = [arg for name, value in params.items() if name.startswith("OCF_RESKEY_") and "CRM_meta" not in name
               for arg in ("-o", f"{name.removeprefix('OCF_RESKEY_')}={value}")]
    return subprocess.run(["ocf-tester", "-n", "test", *options, str(agent)], capture_output=True, text=True,
                          timeout=180, stdin=subprocess.DEVNULL)


@pytest.fixture
def sasl(agents: dict[str, Path], sasl_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """saslauthd started through its agent; stopped (and checked gone) afterwards."""
    start = run(agents["saslauthd"], "start", sasl_env)
    assert start.returncode == OCF_SUCCESS and start.stdout == "", start.stderr
    yield sasl_env
    assert run(agents["saslauthd"], "stop", sasl_env).returncode == OCF_SUCCESS
    assert processes(sasl_env["OCF_RESKEY_socket_dir"]) == []


def test_ocf_tester_passes_both(agents: dict[str, Path], sasl_env: dict[str, str], cyrus_env: dict[str, str]
                                ) -> None:
    for name, params in (("saslauthd", sasl_env), ("cyrus-imapd", cyrus_env)):
        result = ocf_tester(agents[name], params)
        assert result.returncode == 0 and f"{agents[name]} passed all tests" in result.stdout, \
            result.stdout + result.stderr
    assert processes(sasl_env["OCF_RESKEY_socket_dir"]) == [] and processes(cyrus_env["OCF_RESKEY_config"]) == []


def test_meta_data_is_valid_and_documents_every_parameter(agents: dict[str, Path]) -> None:
    for agent in agents.values():
        root = valid_meta_data(agent)
        assert root.get("name") == agent.name
        assert all(p.findtext("longdesc", "").strip() and p.findtext("shortdesc", "").strip()
                   for p in root.iter("parameter"))
        assert {"start", "stop", "monitor", "validate-all", "meta-data"} <= {a.get("name") for a in root.iter("action")}


def test_a_login_works_through_what_the_agents_started(agents: dict[str, Path], sasl: dict[str, str],
                                                      cyrus_env: dict[str, str]) -> None:
    socket_dir = Path(sasl["OCF_RESKEY_socket_dir"])
    assert (socket_dir / "mux").is_socket()
    assert socket_dir.stat().st_mode & 0o777 == 0o710 and socket_dir.stat().st_gid == grp.getgrnam("sasl").gr_gid
    user = next(iter(servers.USERS))
    agent = agents["cyrus-imapd"]
    try:
        assert run(agent, "start", cyrus_env).returncode == OCF_SUCCESS
        port = int(cyrus_env["OCF_RESKEY_imap_address"].rsplit(":", 1)[1])
        cyrus.create_mailboxes("127.0.0.1", port, [user])  # cyrus-admin logs in through that saslauthd
        deep = run(agent, "monitor", cyrus_env, OCF_CHECK_LEVEL="10")
        assert deep.returncode == OCF_SUCCESS, deep.stderr
    finally:
        assert run(agent, "stop", cyrus_env).returncode == OCF_SUCCESS
    assert processes(cyrus_env["OCF_RESKEY_config"]) == []


def test_hung_imapd_fails_only_the_deep_monitor_and_stop_ends_it(agents: dict[str, Path],
                                                                 cyrus_env: dict[str, str]) -> None:
    agent = agents["cyrus-imapd"]
    assert run(agent, "start", cyrus_env).returncode == OCF_SUCCESS
    try:
        master = int(Path(cyrus_env["OCF_RESKEY_pidfile"]).read_text().split()[0])
        imapds = children(master, "imapd")
        assert imapds, "the master preforks imapd"
        for pid in imapds:
            os.kill(pid, signal.SIGSTOP)
        assert run(agent, "monitor", cyrus_env).returncode == OCF_SUCCESS  # depth 0: the master runs
        deep = run(agent, "monitor", cyrus_env, OCF_CHECK_LEVEL="10", OCF_RESKEY_greeting_timeout="2")
        assert deep.returncode == OCF_ERR_GENERIC
        assert "no IMAP greeting" in exit_reason(deep) and f"pid {master}" in exit_reason(deep)
    finally:
        stop = run(agent, "stop", cyrus_env)
    assert stop.returncode == OCF_SUCCESS, stop.stderr
    assert processes(cyrus_env["OCF_RESKEY_config"]) == []
    assert run(agent, "monitor", cyrus_env).returncode == OCF_NOT_RUNNING


def test_a_daemon_killed_alone_is_not_running_and_stop_ends_what_it_left(
        agents: dict[str, Path], sasl_env: dict[str, str], cyrus_env: dict[str, str]) -> None:
    """The daemon SIGKILLed and its workers (saslauthd) or services (Cyrus) left behind: monitor says
    not running, and stop ends the orphans by the session the pid file names."""
    for name, params, pid_file, word in (
            ("saslauthd", sasl_env, Path(sasl_env["OCF_RESKEY_socket_dir"]) / "saslauthd.pid",
             sasl_env["OCF_RESKEY_socket_dir"]),
            ("cyrus-imapd", cyrus_env, Path(cyrus_env["OCF_RESKEY_pidfile"]), cyrus_env["OCF_RESKEY_config"])):
        agent = agents[name]
        assert run(agent, "start", params).returncode == OCF_SUCCESS
        leader = int(pid_file.read_text().split()[0])
        os.kill(leader, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while leader in processes(word) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = processes(word)
        assert left and leader not in left, (name, left)  # the workers or services outlive it
        assert run(agent, "monitor", params).returncode == OCF_NOT_RUNNING
        stop = run(agent, "stop", params)
        assert stop.returncode == OCF_SUCCESS, stop.stderr
        assert processes(word) == [], name
        assert not pid_file.exists()


def test_bad_parameters_are_refused(agents: dict[str, Path], cyrus_env: dict[str, str], sasl_env: dict[str, str],
                                    tmp_path: Path) -> None:
    agent = agents["cyrus-imapd"]
    cases = [({"OCF_RESKEY_config": str(tmp_path / "none.conf")}, OCF_ERR_INSTALLED, "cannot be read"),
             ({"OCF_RESKEY_imap_address": "localhost"}, OCF_ERR_CONFIGURED, "HOST:PORT"),
             ({"OCF_RESKEY_greeting_timeout": "0"}, OCF_ERR_CONFIGURED, "greeting_timeout"),
             ({"OCF_RESKEY_binary": str(tmp_path / "master")}, OCF_ERR_INSTALLED, "not executable"),
             ({"OCF_RESKEY_user": "no-such-user-here"}, OCF_ERR_INSTALLED, "does not exist")]
    for override, rc, words in cases:
        for action in ("validate-all", "start"):
            result = run(agent, action, cyrus_env, **override)
            assert result.returncode == rc and words in exit_reason(result), (override, action, result.stderr)
        assert run(agent, "monitor", cyrus_env, **override).returncode == OCF_NOT_RUNNING
    for override, rc, words in [
            ({"OCF_RESKEY_threads": "many"}, OCF_ERR_CONFIGURED, "threads"),
            ({"OCF_RESKEY_config": str(tmp_path / "none.conf")}, OCF_ERR_INSTALLED, "cannot be read"),
            ({"OCF_RESKEY_socket_group": "no-such-group-here"}, OCF_ERR_INSTALLED, "socket_group"),
            ({"OCF_RESKEY_binary": str(tmp_path / "saslauthd")}, OCF_ERR_INSTALLED, "not executable")]:
        result = run(agents["saslauthd"], "start", sasl_env, **override)
        assert result.returncode == rc and words in exit_reason(result), (override, result.stderr)
    assert processes(cyrus_env["OCF_RESKEY_config"]) == [] and processes(sasl_env["OCF_RESKEY_socket_dir"]) == []


def test_install_agent_installs_the_service_agents_beside_the_watchers(tmp_path: Path) -> None:
    watch = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kolabmon-watch"
    done = subprocess.run([str(watch), "install-agent", "--directory", str(tmp_path / "kolabmon")],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and done.stdout.startswith("WATCH OK - installed "), done.stdout + done.stderr
    installed = sorted(path.name for path in (tmp_path / "kolabmon").iterdir())
    assert installed == sorted(["watcher", *ocf.SERVICE_AGENTS])
    for name in ocf.SERVICE_AGENTS:
        path = tmp_path / "kolabmon" / name
        assert path.read_text() == ocf.service_agent_text(name) and path.stat().st_mode & 0o777 == 0o755
