"""kolabmon-watch without a cluster: its probes in-process against a real Dovecot and fakes for the
faults (a silent server, a closed port), how a streak becomes a fault, and its command line.
The watcher in the cluster is tested in test_lab_watch.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from kolabmon.takeover.config import load
from kolabmon.takeover.watch import ServiceWatch
from lab.accounts import USERS
from tests.fakes.faults import Silent
from tests.helpers import BIN, clean_env

USER = "user1@example.org"
PASSWORD = USERS[USER]


def write_config(tmp_path: Path, port: int, extra: str = "", check: str = "check_kolab_imap") -> Path:
    secret = tmp_path / "imap.pw"
    secret.write_text(PASSWORD + "\n")
    argv = [check, "-H", "127.0.0.1", "-p", str(port), "-u", USER, "--password-file", str(secret), "-t", "5"]
    path = tmp_path / "takeover.toml"
    path.write_text(f"""cluster = "kolab-cluster"
state_dir = "{tmp_path}"
[nodes.node1]
[nodes.node2]
[services.imap]
reprobe = {json.dumps(argv)}
{extra}
""")
    return path


def probe(service: ServiceWatch, timeout: float = 1.25) -> float:
    began = time.monotonic()
    service.record(service.plugin.run(service.args, timeout), began, time.monotonic())
    return time.monotonic() - began


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_healthy_server_is_never_a_fault(dovecot, tmp_path) -> None:
    config = load(write_config(tmp_path, dovecot.ports["imap"]))
    service = ServiceWatch("imap", config.probes["imap"].argv, config)
    for _ in range(4):
        assert probe(service) < 1.0
    assert service.fault is None and service.streak == []
    assert service.line.startswith("IMAP OK - user1@example.org logged in"), service.line


def test_a_silent_server_is_a_hang_confirmed_by_the_second_failure(tmp_path) -> None:
    with Silent() as port:
        config = load(write_config(tmp_path, port))
        service = ServiceWatch("imap", config.probes["imap"].argv, config)
        assert 1.2 < probe(service) < 1.8  # the watcher's timeout, not the reprobe's -t 5
        assert service.fault is None  # one failure is a blip
        probe(service)
    assert service.fault is not None and service.fault.kind == "hung", service.line
    assert "no answer within 1.25 s" in service.line


def test_a_closed_port_is_gone_and_waits_for_pacemakers_restart(tmp_path) -> None:
    config = load(write_config(tmp_path, free_port(), "[watch]\nfailures = 2\n"))
    service = ServiceWatch("imap", config.probes["imap"].argv, config)
    for _ in range(4):
        probe(service)
    assert len(service.streak) >= 2 and service.streak[-1].kind == "gone"
    assert service.fault is None  # restart_grace (30 s) has not passed: Pacemaker's turn


def test_a_passing_probe_ends_the_streak(dovecot, tmp_path) -> None:
    with Silent() as port:
        config = load(write_config(tmp_path, port))
        service = ServiceWatch("imap", config.probes["imap"].argv, config)
        probe(service)
    assert len(service.streak) == 1
    service.args.port = dovecot.ports["imap"]  # the server answers again
    probe(service)
    assert service.streak == [] and service.fault is None


def watch(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "kolabmon-watch"), *args], capture_output=True, text=True, timeout=timeout,
                          env=clean_env())


def test_check_names_what_it_will_watch(dovecot, tmp_path) -> None:
    config = write_config(tmp_path, dovecot.ports["imap"])
    done = watch("--config", str(config), "check")
    assert done.returncode == 0 and done.stdout == f"WATCH OK - {config}: watching imap\n", done.stdout


@pytest.mark.parametrize(("extra", "check", "args", "words"), [
    ("", "check_imap", (), "is not a kolabmon check"),
    ("", "check_kolab_nothing", (), "no such kolabmon check"),
    ("[watch]\nintervall = 1\n", "check_kolab_imap", (),
     "unknown key 'intervall' in [watch] (did you mean 'interval'?)"),
    ("[watch]\nservices = [\"smtp\"]\n", "check_kolab_imap", (), "'services' must name services of [services]"),
    ("[watch]\nfailures = 0\n", "check_kolab_imap", (), "'failures' must be 1 or more"),
    ("", "check_kolab_imap", ("--node", "node3"), "node 'node3' is not in [nodes]"),
])
def test_a_bad_watch_config_is_one_line_and_exit_3(tmp_path, extra, check, args, words) -> None:
    config = write_config(tmp_path, 143, extra, check)
    done = watch("--config", str(config), *args, "check")
    assert done.returncode == 3 and done.stdout.startswith("WATCH ERROR - ") and done.stdout.count("\n") == 1
    assert words in done.stdout, done.stdout
    assert done.stderr == ""


def test_it_runs_without_a_cluster_keeps_its_status_fresh_and_stops_on_sigterm(dovecot, tmp_path) -> None:
    """Where crm_mon does not answer the watcher idles and says so; its status file never holds the password."""
    status = tmp_path / "status.json"
    config = write_config(tmp_path, dovecot.ports["imap"])
    env = clean_env(PATH=f"{tmp_path}:/usr/bin:/bin")  # no crm_mon, no attrd_updater here
    proc = subprocess.Popen([str(BIN / "kolabmon-watch"), "--config", str(config), "--node", "node1",
                             "--status-file", str(status)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        deadline = time.monotonic() + 10
        while not status.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        first = status.stat().st_mtime
        time.sleep(1.0)
        assert status.stat().st_mtime > first  # rewritten every cycle: the OCF monitor's heartbeat
        state = json.loads(status.read_text())
        assert state["node"] == "node1" and state["pid"] == proc.pid
        assert state["role"].startswith("cluster unreadable: crm_mon not found"), state["role"]
        assert PASSWORD not in status.read_text()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert PASSWORD not in out + err and "stopped" in err


def test_without_node_and_without_a_cluster_it_says_so_in_one_line(dovecot, tmp_path) -> None:
    config = write_config(tmp_path, dovecot.ports["imap"])
    done = subprocess.run([str(BIN / "kolabmon-watch"), "--config", str(config)], capture_output=True, text=True,
                          timeout=30, env=clean_env(PATH=f"{tmp_path}:/usr/bin:/bin"))  # no crm_node here
    assert done.returncode == 3 and done.stderr == "", done.stderr
    assert done.stdout == "WATCH ERROR - --node not given and crm_node not found\n", done.stdout
