"""kolabmon-takeover: the Icinga event handler. Parse the macros, lock, decide, act, verify, log.

    kolabmon-takeover [--config FILE] [--dry-run] --host H --service S --state STATE
                      --state-type SOFT|HARD --attempt N --max-attempts N [--flapping 0|1]
    kolabmon-takeover [--config FILE] recover NODE

Exit 0: acted and verified, or nothing to do; 1: refused or deferred by policy; 2: acted and
failed, or left the cluster blocked; 3: bad input or config. One line on stdout, always; one
JSON line per decision in the audit log, fsync'ed.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kolabmon import runtime
from kolabmon.takeover import audit, policy
from kolabmon.takeover.config import Config, ConfigError, Probe, load

DEFAULT_CONFIG = "/etc/kolabmon/takeover.toml"
EXIT_FAILED, EXIT_USAGE = 2, 3
LABELS = {policy.ACT: "ACTED", policy.NOTHING: "NOTHING", policy.WAIT: "WAIT", policy.REFUSE: "REFUSED"}


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return int(text)


def _choice(options: Sequence[str]):  # noqa: ANN202
    def check(text: str) -> str:
        if text.upper() not in options:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(options)}, not {text!r}")
        return text.upper()
    return check


def _shared() -> runtime.Parser:
    """The options of every form: --config and --dry-run."""
    p = runtime.Parser("TAKEOVER", prog="kolabmon-takeover")
    p.add_argument("--config", default=os.environ.get("KOLABMON_TAKEOVER_CONFIG", DEFAULT_CONFIG))
    p.add_argument("--dry-run", action="store_true", help="say what would happen, change nothing")
    return p


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The event's macros, or `recover NODE`: the first word argparse leaves over after the shared
    options names the subcommand (a stray word after the macros stays "unrecognized arguments")."""
    shared = _shared()
    rest = shared.parse_known_args(argv)[1]
    p = runtime.Parser("TAKEOVER", prog="kolabmon-takeover", add_help=True, parents=[shared],
                       description="Icinga event handler: move the Kolab group off a degraded active node "
                       "when the policy allows, and prove the service is back.")
    if rest[:1] == ["recover"]:
        p.add_argument("command", choices=["recover"])
        p.add_argument("node")
        return p.parse_args(argv)
    p.add_argument("--host", required=True, help="$host.name$")
    p.add_argument("--service", required=True, help="$service.name$")
    p.add_argument("--state", required=True, type=_choice(policy.STATES), help="$service.state$")
    p.add_argument("--state-type", required=True, type=_choice(policy.STATE_TYPES), help="$service.state_type$")
    p.add_argument("--attempt", required=True, type=_positive, help="$service.check_attempt$")
    p.add_argument("--max-attempts", required=True, type=_positive, help="$service.max_check_attempts$")
    p.add_argument("--flapping", type=runtime.zero_or_one, default=False,
                   help="$service.flapping$ as 0|1 (the EventCommand converts true/false)")
    args = p.parse_args(argv)
    for name in ("host", "service"):
        if not getattr(args, name).strip():
            raise runtime.UsageError(f"--{name} is empty (undefined Icinga macro?)")
    args.command = None
    return args


# --- lock ------------------------------------------------------------------------------------


class Lock:
    """One decision and move at a time. A second caller (another service's event, or the same one
    again) waits its turn, up to `wait` seconds, and then decides on what the first one left:
    dropping it would lose the event when the first caller refused. `waited` says it had to wait."""

    def __init__(self, path: Path, wait: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
        self.held = self.waited = False
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.held = True
                return
            except BlockingIOError:
                self.waited = True
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.2)

    def release(self) -> None:
        os.close(self.fd)


# --- probes: second opinion and verification ---------------------------------------------------


def run_probe(config: Config, probe: Probe, active: str | None, timeout: float) -> tuple[int, str]:
    """Run a check; (exit code, its first line). Bare names are found beside this executable."""
    argv = list(probe.argv)
    if "/" not in argv[0]:
        beside = Path(sys.argv[0]).resolve().parent / argv[0]
        argv[0] = str(beside) if beside.exists() else argv[0]
    if probe.on_active_node and active:
        from kolabmon import pacemaker

        argv = pacemaker.node_command(config.nodes[active], active, argv)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              errors="replace")
    except FileNotFoundError:
        return 3, f"{argv[0]} not found"
    except subprocess.TimeoutExpired:
        return 2, f"no answer within {timeout:.0f} s"
    first = (proc.stdout.strip().splitlines() or [f"exit {proc.returncode}"])[0]
    return proc.returncode, first.split(" | ", 1)[0]  # the status line without its perfdata


def verify(config: Config, probe: Probe, active: str, deadline: float) -> tuple[int, str]:
    """The failing probe must pass on the cluster IP, served by the new node; retried until the deadline."""
    code, line = 2, "not run"
    while time.monotonic() < deadline:
        left = max(deadline - time.monotonic(), runtime.REPROBE_MIN)
        code, line = run_probe(config, probe, active, min(config.probe_timeout, left))
        if code == 0:
            break
        time.sleep(1)
    return code, line


# --- main -----------------------------------------------------------------------------------


def say(label: str, text: str) -> None:
    sys.stdout.write(f"TAKEOVER {label} - {' '.join(text.split())}\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse(argv)
        config = load(args.config)
    except (runtime.UsageError, ConfigError) as exc:
        say("ERROR", str(exc))
        return EXIT_USAGE
    try:
        if args.command == "recover":
            return recover(config, args)
        return takeover(config, args)
    except OSError as exc:  # the lock or the audit log cannot be written: the state dir is wrong
        say("ERROR", f"cannot write {exc.filename or 'the state directory'}: {exc.strerror} "
            f"(state_dir, lock and audit in {args.config})")
        return EXIT_USAGE
    except Exception as exc:  # one line and a record, whatever broke
        say("FAILED", f"internal error: {type(exc).__name__}: {exc}")
        try:
            audit.append(config.audit, audit.error_record(f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
        return EXIT_FAILED


def recover(config: Config, args: argparse.Namespace) -> int:
    from kolabmon.takeover.backends import BackendError, make

    record = audit.recover_record(args.node, args.dry_run)
    if args.dry_run:
        say("NOTHING", f"dry run: would clear kolabmon's marks and fail-counts on {args.node}")
        return 0
    try:
        done = make(config).recover(args.node)
    except BackendError as exc:
        audit.append(config.audit, audit.recovered(record, "failed", str(exc)))
        say("FAILED", str(exc))
        return EXIT_FAILED
    audit.append(config.audit, audit.recovered(record, "recovered", done))
    say("ACTED", f"recovered {done}")
    return 0


def takeover(config: Config, args: argparse.Namespace) -> int:
    from kolabmon.takeover.backends import MOVED, BackendError, make

    started = time.monotonic()
    event = policy.Event(args.host, args.service, args.state, args.state_type, args.attempt, args.max_attempts,
                         args.flapping)
    record = audit.event_record(config.cluster, event, args.dry_run)
    durations: dict[str, float] = {}

    def finish(decision: str, reason: str, code: int, label: str, **extra: object) -> int:
        durations["total"] = round(time.monotonic() - started, 3)
        audit.append(config.audit, audit.decided(record, decision, reason, code, durations, **extra))
        say(label, reason)
        return code

    first = policy.decide_event(event, config.rules)
    if first is not None:  # OK/WARNING/SOFT events: decided without touching the cluster
        return finish(first.action, first.reason, first.exit_code, LABELS[first.action])
    waiting_since = time.time()
    lock = Lock(config.lock, wait=config.transition_timeout + runtime.REPROBE_WINDOWS * config.probe_timeout
                + runtime.LOCK_SLACK)
    if not lock.held:
        lock.release()
        return finish("nothing", "another takeover is still in progress: this call does nothing", 0, "NOTHING")
    try:
        moved_at = audit.moved_at(config.audit)
        if lock.waited and moved_at is not None and moved_at >= waiting_since - 1:
            return finish("nothing", f"another call moved the group {time.time() - moved_at:.0f} s ago: "
                          "this call does nothing", 0, "NOTHING")
        backend = make(config)
        try:
            cluster = backend.cluster()
        except BackendError as exc:
            return finish(policy.REFUSE, f"cannot decide: {exc}", 1, "REFUSED")
        record["cluster_state"] = cluster.__dict__
        decision = policy.decide(event, config.rules, cluster, time.time(), moved_at)
        durations["decide"] = round(time.monotonic() - started, 3)
        if decision.action != policy.ACT:
            return finish(decision.action, decision.reason, decision.exit_code, LABELS[decision.action])
        problem = backend.setup_problem()
        if problem:
            return finish(policy.REFUSE, problem, 1, "REFUSED")
        source, target = cluster.active, cluster.passive
        assert source and target  # the policy acts only with both
        probe = config.probes[event.service]
        mark = time.monotonic()
        code, line = run_probe(config, probe, source, config.probe_timeout)
        durations["reprobe"] = round(time.monotonic() - mark, 3)
        record["second_opinion"] = audit.probe_result(code, line)
        if code == 0:
            return finish(policy.REFUSE, f"second opinion: {event.service} passes now ({line}); not moving", 1,
                          "REFUSED")
        if args.dry_run:
            return finish(policy.ACT, f"dry run: would move {config.group} {source} -> {target} "
                          f"(second opinion: {line})", 0, "NOTHING")
        mark = time.monotonic()
        try:
            backend.move(source, target)
            settled = backend.settle(source, target, config.transition_timeout)
        except BackendError as exc:
            return finish(policy.ACT, f"move {source} -> {target} failed: {exc}", EXIT_FAILED, "FAILED",
                          moved=False)
        durations["move"] = round(time.monotonic() - mark, 3)
        record["fenced"] = settled.fenced
        if settled.outcome != MOVED:
            return finish(policy.ACT, f"move {source} -> {target} {settled.outcome}: {settled.detail}", EXIT_FAILED,
                          "FAILED", moved=False)
        mark = time.monotonic()
        code, line = verify(config, probe, target, mark + config.probe_timeout * runtime.REPROBE_WINDOWS)
        durations["verify"] = round(time.monotonic() - mark, 3)
        record["verify"] = audit.probe_result(code, line)
        fenced = f", {source} fenced" if settled.fenced else ""
        moved_for = round(time.monotonic() - started, 1)
        if code != 0:
            return finish(policy.ACT, f"moved {config.group} {source} -> {target}{fenced}, but {event.service} still "
                          f"fails: {line}", EXIT_FAILED, "FAILED", moved=True)
        return finish(policy.ACT, f"moved {config.group} {source} -> {target} in {moved_for} s{fenced}; "
                      f"{event.service} verified: {line}", 0, "ACTED", moved=True)
    finally:
        lock.release()


if __name__ == "__main__":
    raise SystemExit(main())
