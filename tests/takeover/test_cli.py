"""kolabmon-takeover end to end with the command backend: a two-node "cluster" whose active node is a
file, moved by a command — the same interface a keepalived setup uses. Lock, audit, exit codes,
dry-run, second opinion and macro validation; the Pacemaker backend is tested in the lab cluster."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fakes import crm_mon
from tests.helpers import BIN, clean_env

PY = sys.executable
HARD = ["--host", "kolab-cluster", "--service", "imap", "--state", "CRITICAL", "--state-type", "HARD",
        "--attempt", "1", "--max-attempts", "3"]


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """node1 active; the 'imap' probe fails while node1 is active (and the fault flag is set)."""
    active, fault, moves = tmp_path / "active", tmp_path / "fault", tmp_path / "moves"
    active.write_text("node1\n")
    fault.write_text("node1")
    probe = (f"import sys; a=open({str(active)!r}).read().strip(); f=open({str(fault)!r}).read().strip();"
             "print(f'IMAP CRITICAL - hung on {a}' if a == f else f'IMAP OK - served by {a}');"
             "sys.exit(2 if a == f else 0)")
    move = (f"import sys, time; time.sleep(0.3); "
            f"open({str(moves)!r}, 'a').write(sys.argv[1] + '->' + sys.argv[2] + '\\n');"
            f"open({str(active)!r}, 'w').write(sys.argv[2])")
    config = tmp_path / "takeover.toml"
    config.write_text(f"""
cluster = "kolab-cluster"
backend = "command"
cooldown = 600
state_dir = "{tmp_path}"
transition_timeout = 10
probe_timeout = 5
[nodes.node1]
[nodes.node2]
[services.imap]
reprobe = {json.dumps([PY, "-c", probe])}
[commands]
active = ["cat", "{active}"]
move = {json.dumps([PY, "-c", move, "{from}", "{to}"])}
""")
    return {"config": config, "active": active, "fault": fault, "moves": moves, "audit": tmp_path / "audit.jsonl"}


def takeover(world: dict[str, Path], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "kolabmon-takeover"), "--config", str(world["config"]), *args],
                          capture_output=True, text=True, env=clean_env(**env), timeout=60)


def records(world: dict[str, Path]) -> list[dict]:
    return [json.loads(line) for line in world["audit"].read_text().splitlines()]


def test_hard_critical_moves_and_verifies(world) -> None:
    proc = takeover(world, *HARD)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("TAKEOVER ACTED - moved kolab node1 -> node2") and proc.stdout.count("\n") == 1
    assert "imap verified: IMAP OK - served by node2" in proc.stdout
    assert world["active"].read_text() == "node2"
    [started, record] = records(world)  # the start of the move, then the decision
    assert started["decision"] == "acting" and started["epoch"] == record["epoch"]
    assert started["reason"] == "moving kolab node1 -> node2" and "moved" not in started
    assert record["decision"] == "act" and record["moved"] is True and record["exit"] == 0
    assert record["second_opinion"]["exit"] == 2 and record["verify"]["exit"] == 0
    assert set(record["durations"]) >= {"decide", "reprobe", "move", "verify", "total"}
    assert record["event"]["state_type"] == "HARD"


def test_soft_and_ok_do_not_move(world) -> None:
    soft = [a if a != "HARD" else "SOFT" for a in HARD]
    proc = takeover(world, *soft)
    assert proc.returncode == 1 and proc.stdout.startswith("TAKEOVER WAIT - SOFT CRITICAL attempt 1/3")
    ok = [a if a != "CRITICAL" else "OK" for a in HARD]
    proc = takeover(world, *ok)
    assert proc.returncode == 0 and "imap is OK: nothing to do" in proc.stdout
    assert world["active"].read_text().strip() == "node1" and not world["moves"].exists()
    assert [r["decision"] for r in records(world)] == ["wait", "nothing"]


def test_nagios_env_gives_the_plugins_line_verbatim(world) -> None:
    line = "IMAP CRITICAL - it's; \"$(touch /tmp/kolabmon-pwned)\" `id` a=b"
    ok = [a if a != "CRITICAL" else "OK" for a in HARD]
    proc = takeover(world, *ok, "--nagios-env", NAGIOS_SERVICEOUTPUT=line)  # as Nagios exports $SERVICEOUTPUT$
    assert proc.returncode == 0 and "imap is OK: nothing to do" in proc.stdout, proc.stdout
    assert records(world)[-1]["output"] == line


def test_second_opinion_passing_refuses(world) -> None:
    world["fault"].write_text("gone")  # the fault went away before the handler ran
    proc = takeover(world, *HARD)
    assert proc.returncode == 1 and "second opinion: imap passes now" in proc.stdout
    assert not world["moves"].exists()


def test_dry_run_changes_nothing(world) -> None:
    proc = takeover(world, "--dry-run", *HARD)
    assert proc.returncode == 0 and "dry run: would move kolab node1 -> node2" in proc.stdout
    assert world["active"].read_text().strip() == "node1" and not world["moves"].exists()
    assert records(world)[-1]["dry_run"] is True


def test_the_audit_and_the_cooldown_name_nagios_when_it_ran_the_handler(world) -> None:
    assert takeover(world, "--nagios-env", *HARD, NAGIOS_SERVICEOUTPUT="IMAP CRITICAL - hung").returncode == 0
    assert records(world)[-1]["origin"] == f"nagios on {socket.gethostname()}"
    world["fault"].write_text("node2")
    proc = takeover(world, *HARD)  # Icinga's handler now: the cool-down names who moved
    assert proc.returncode == 1 and "cool-down: nagios on" in proc.stdout
    assert records(world)[-1]["origin"].startswith("icinga on ")


def test_cooldown_after_a_move(world) -> None:
    assert takeover(world, *HARD).returncode == 0
    world["fault"].write_text("node2")  # now the new node degrades at once: no ping-pong
    proc = takeover(world, *HARD)
    assert proc.returncode == 1 and "cool-down: icinga on" in proc.stdout
    assert world["moves"].read_text() == "node1->node2\n"


def test_a_late_event_of_the_fault_that_was_moved_away_from_is_no_refusal(world) -> None:
    assert takeover(world, *HARD).returncode == 0
    proc = takeover(world, *HARD)  # the same fault, reported by a later check: imap passes on node2 now
    assert proc.returncode == 0 and proc.stdout.startswith("TAKEOVER NOTHING - imap passes on node2 since icinga")
    assert records(world)[-1]["decision"] == "nothing" and world["moves"].read_text() == "node1->node2\n"


def test_decisions_on_a_problem_are_told_and_nothing_else(world, tmp_path: Path) -> None:
    told = tmp_path / "told.jsonl"
    script = (f"import json, sys; open({str(told)!r}, 'a').write(json.dumps([sys.argv[1:], "
              "json.load(sys.stdin)]) + '\\n')")
    with world["config"].open("a") as config:
        config.write(f"[notify]\ncommand = {json.dumps([PY, '-c', script, '--to', 'oncall@example.org'])}\n")
    soft = [a if a != "HARD" else "SOFT" for a in HARD]
    assert takeover(world, *soft).returncode == 1                    # WAIT: not news
    assert takeover(world, "--dry-run", *HARD).returncode == 0      # a dry run changes nothing: not news
    assert not told.exists()
    assert takeover(world, *HARD, "--changed", "1796000000").returncode == 0  # moved: told
    assert takeover(world, *HARD).returncode == 0  # the same fault reported late, passes on node2: not news
    world["fault"].write_text("node2")
    assert takeover(world, *HARD).returncode == 1  # cool-down, and node2 fails too: told
    calls = [json.loads(line) for line in told.read_text().splitlines()]
    assert [record["decision"] for _, record in calls] == ["act", "refuse"]
    argv, record = calls[0]
    assert argv == ["--to", "oncall@example.org", "--type", "TAKEOVER", "--host", "kolab-cluster", "--service",
                    "imap", "--state", "CRITICAL", "--record", "-", "--audit", str(world["audit"]), "-t", "28"]
    assert record["moved"] and record["event"]["changed"] == "1796000000" and record == records(world)[3]
    assert "cool-down" in calls[1][1]["reason"]


def test_ten_concurrent_calls_move_exactly_once(world) -> None:
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: takeover(world, *HARD), range(10)))
    assert world["moves"].read_text() == "node1->node2\n"
    acted = [r for r in results if r.stdout.startswith("TAKEOVER ACTED")]
    assert len(acted) == 1
    others = [r.stdout for r in results if r not in acted]
    assert all("moved the group node1 -> node2" in o and "this call does nothing" in o for o in others), others
    assert all(r.returncode == 0 for r in results)  # a repeated call is a no-op that says so


def test_a_refusal_for_one_service_does_not_swallow_another_services_event(world) -> None:
    """smtp and imap turn HARD together; smtp's second opinion passes (slowly, holding the lock):
    imap's call must wait its turn and still move, not be dropped as "in progress"."""
    config = world["config"].read_text().replace("[commands]", f'''[services.smtp]
reprobe = {json.dumps([PY, "-c", "import time; time.sleep(1.5); print('SMTP OK - banner only')"])}
[commands]''')
    world["config"].write_text(config)
    smtp = [a if a != "imap" else "smtp" for a in HARD]
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(takeover, world, *smtp)
        time.sleep(0.5)
        second = pool.submit(takeover, world, *HARD)
        refused, moved = first.result(), second.result()
    assert refused.returncode == 1 and "second opinion: smtp passes now" in refused.stdout, refused.stdout
    assert moved.returncode == 0 and moved.stdout.startswith("TAKEOVER ACTED"), moved.stdout
    assert world["moves"].read_text() == "node1->node2\n"


def test_a_second_opinion_the_prefix_cannot_run_moves_nothing(world, tmp_path) -> None:
    """The active node cannot be reached from here (its prefix exits 255): the check did not run, so it
    says nothing about the service (a down node is Pacemaker's to fence and to take over from)."""
    prefix = crm_mon.install_prefix(tmp_path / "prefix", tmp_path / "no-tools", "node1")
    config = world["config"].read_text().replace("[nodes.node1]", f"[nodes.node1]\nprefix = {json.dumps(prefix)}")
    world["config"].write_text(config.replace("[services.imap]", "[services.imap]\non = \"active\""))
    proc = takeover(world, *HARD)
    assert proc.returncode == 1, proc.stdout
    assert ("second opinion could not run (node1 unreachable (on: node1 is down (powered off or fenced))): "
            "not moving on a broken check") in proc.stdout, proc.stdout
    assert not world["moves"].exists()


@pytest.mark.parametrize(("args", "words"), [
    ([], "the following arguments are required"),
    (HARD[:-2], "--max-attempts"),
    ([a if a != "CRITICAL" else "" for a in HARD], "--state: must be one of"),
    ([a if a != "CRITICAL" else "BROKEN" for a in HARD], "--state: must be one of"),
    ([a if a != "3" else "x" for a in HARD], "--max-attempts: must be a positive integer"),
    ([a if a != "kolab-cluster" else "" for a in HARD], "--host is empty"),
    ([*HARD, "--flapping", "maybe"], "--flapping: must be 0 or 1"),
    ([*HARD, "; rm -rf /"], "unrecognized arguments"),
    ([*HARD, "--nagios-env"], "--nagios-env: NAGIOS_SERVICEOUTPUT is not in the environment (set "
                              "enable_environment_macros=1 in nagios.cfg)"),
    ([*HARD, "--nagios-env", "--output", "x"], "--output with --nagios-env: free text comes from Nagios's environment"),
    ([*HARD, "--changed", "$service.last_hard_state_change$"], "--changed '$service.last_hard_state_change$' is not "
                                                                 "an epoch"),
])
def test_bad_macros_are_one_line_exit_3_and_change_nothing(world, args, words) -> None:
    proc = takeover(world, *args)
    assert proc.returncode == 3, proc.stdout
    assert proc.stdout.startswith("TAKEOVER ERROR - ") and words in proc.stdout and proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not world["moves"].exists() and not world["audit"].exists()


def test_bad_config_is_exit_3(tmp_path) -> None:
    proc = subprocess.run([str(BIN / "kolabmon-takeover"), "--config", str(tmp_path / "none.toml"), *HARD],
                          capture_output=True, text=True, env=clean_env())
    assert proc.returncode == 3 and "cannot read config" in proc.stdout


@pytest.mark.parametrize("name", ["unknown-key", "unknown-key-node", "unknown-key-service", "unknown-key-commands",
                                  "unknown-key-notify"])
def test_unknown_key_is_exit_3_in_one_line_naming_its_table(name: str) -> None:
    path = Path(__file__).parent / "bad-configs" / f"{name}.toml"
    proc = subprocess.run([str(BIN / "kolabmon-takeover"), "--config", str(path), *HARD],
                          capture_output=True, text=True, env=clean_env(), timeout=30)
    expected = path.read_text().splitlines()[0].removeprefix("# refused: ")
    assert proc.returncode == 3 and proc.stdout.count("\n") == 1, proc.stdout
    assert proc.stdout.startswith("TAKEOVER ERROR - config error: unknown key ") and expected in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_unwritable_state_dir_is_exit_3_in_one_line(world) -> None:
    config = world["config"].read_text().replace(f'state_dir = "{world["audit"].parent}"',
                                                 'state_dir = "/proc/kolabmon-nowhere"')
    world["config"].write_text(config)
    ok = [a if a != "CRITICAL" else "OK" for a in HARD]
    proc = takeover(world, *ok)
    assert proc.returncode == 3 and proc.stdout.count("\n") == 1, proc.stdout
    assert proc.stdout.startswith("TAKEOVER ERROR - cannot write /proc/kolabmon-nowhere"), proc.stdout


def test_recover_runs_the_recover_command(world) -> None:
    proc = takeover(world, "recover", "node1")
    assert proc.returncode == 0 and "nothing to clear" in proc.stdout
    proc = takeover(world, "recover", "node9")
    assert proc.returncode == 2 and "unknown node node9" in proc.stdout


def test_every_path_ends_before_the_eventcommands_timeout(world) -> None:
    """The worst case: a move that never settles holds the lock while a second event comes in. Icinga
    kills the handler at its EventCommand timeout (40 s here); both calls end 10 s before it."""
    config = world["config"].read_text().replace("transition_timeout = 10",
                                                  "transition_timeout = 10\nrestart_grace = 0")
    never = [PY, "-c", "import time; time.sleep(0.3)"]  # asks for the move; the cluster never follows
    config = config.replace(config.split("move = ", 1)[1].split("\n", 1)[0], json.dumps([*never, "{from}", "{to}"]))
    world["config"].write_text(config)
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(takeover, world, *HARD, "--timeout", "40")
        time.sleep(0.5)
        second = pool.submit(takeover, world, *HARD, "--timeout", "40")
        results = [first.result(), second.result()]
    assert time.monotonic() - started < 30, [r.stdout for r in results]
    assert results[0].returncode == 2 and "timeout" in results[0].stdout, results[0].stdout
    assert results[1].returncode == 0 and "still in progress" in results[1].stdout, results[1].stdout
    # a timeout that cannot hold one takeover (5 + 0 + 10 + 2 x 5 = 25 s, + 10 s) is refused up front
    short = takeover(world, *HARD, "--timeout", "30")
    assert short.returncode == 3 and "cannot hold one takeover" in short.stdout, short.stdout


def test_a_lock_that_cannot_be_taken_for_a_moment_is_asked_for_again(monkeypatch) -> None:
    from kolabmon.takeover import action
    from kolabmon.takeover.backends import BackendError

    class Flaky:  # the CIB write fails while the node asked is being fenced, then works
        def __init__(self, failures: int) -> None:
            self.failures, self.calls = failures, 0

        def acquire(self, origin: str, until: float) -> str | None:
            self.calls += 1
            if self.calls <= self.failures:
                raise BackendError("cibadmin refused the lock: nsenter: cannot open /proc/1/ns/mnt")
            return None

    monkeypatch.setattr(action, "LOCK_POLL", 0.01)
    now = time.monotonic()
    flaky = Flaky(3)
    assert action.take_lock(flaky, "icinga on monitor", now + 60, now + 30) == (None, False)  # type: ignore[arg-type]
    assert flaky.calls == 4

    class HeldThenFlaky(Flaky):  # an error, another holder for a while, an error again, then free
        def acquire(self, origin: str, until: float) -> str | None:
            self.calls += 1
            if self.calls in (1, 30):
                raise BackendError("cibadmin refused the lock: nsenter: cannot open /proc/1/ns/mnt")
            return "watcher on node2" if self.calls < 31 else None

    monkeypatch.setattr(action, "LOCK_ERROR_RETRY", 0.2)  # shorter than the wait for the holder
    held = HeldThenFlaky(0)
    assert action.take_lock(held, "icinga on monitor", now + 60, now + 30) == (None, True)  # type: ignore[arg-type]
    monkeypatch.setattr(action, "LOCK_ERROR_RETRY", 0.1)
    with pytest.raises(BackendError, match="cannot open"):  # a lasting failure is refused, briefly after
        action.take_lock(Flaky(10**6), "icinga on monitor", now + 60, now + 30)  # type: ignore[arg-type]


def test_a_decision_already_told_is_not_told_again(world, tmp_path: Path) -> None:
    # the handler that fences its own node tells on-call before the fence; its caller must not repeat it
    from kolabmon.takeover import action
    from kolabmon.takeover.config import load

    told = tmp_path / "told"
    with world["config"].open("a") as config:
        script = f"open({str(told)!r}, 'a').write('x')"
        config.write(f"[notify]\ncommand = {json.dumps([PY, '-c', script])}\n")
    record = {"event": {"host": "kolab-cluster", "service": "imap", "state": "CRITICAL", "state_type": "HARD"},
              "decision": "act", "dry_run": False}
    result = action.Result("ACTED", "fencing node1 (this node) at once", 0, record, told=True)
    assert action.announce(load(world["config"]), result, time.monotonic() + 10) is None and not told.exists()
    fresh = action.Result("ACTED", "fencing node1 (this node) at once", 0, record)
    assert action.announce(load(world["config"]), fresh, time.monotonic() + 10) is None and told.read_text() == "x"
