"""The takeover itself, whoever triggers it: Icinga's event handler (kolabmon-takeover) or the
watcher inside the cluster (kolabmon-watch). One path for both: lock, decide, second opinion,
fence or move, follow, verify, record — one policy, one backend, one audit record format.

A hung service (its probe got no answer) is fenced at once when `fence = true`: its stop would hang
too, and Pacemaker would fence only after the stop timed out (`fence_first = "always"` for a service
whose failure makes the stops fail, such as a read-only spool). A service that is gone (refused,
reset) first gets `restart_grace` for Pacemaker's own restart in place. Everything ends within the
budget, so that Icinga never kills a takeover mid-move.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from kolabmon import runtime
from kolabmon.takeover import audit, policy
from kolabmon.takeover.backends import MOVED, Backend, BackendError, make
from kolabmon.takeover.config import Config, Probe

LOCK_POLL = 0.5
LOCK_ERROR_RETRY = 10.0  # a lock that cannot be taken (not: is held) is asked for again this long


@dataclass(frozen=True)
class Trigger:
    """Why a takeover was asked for, and by whom."""

    event: policy.Event
    origin: str                     # "icinga on HOST", "watcher on NODE": named in the audit and the cool-down
    output: str = ""                # the failing check's line, as the trigger saw it
    confirmed: bool = False         # the watcher saw it fail N times in a row: its line is the second opinion
    detection: float | None = None  # seconds from the first failed probe to the trigger (the watcher knows)
    dry_run: bool = False


@dataclass(frozen=True)
class Result:
    label: str   # ACTED, NOTHING, WAIT, REFUSED, FAILED
    reason: str
    code: int    # 0 acted or nothing to do, 1 refused or waiting, 2 failed
    record: audit.Record = field(default_factory=dict, compare=False)  # what went into the audit log
    told: bool = False  # on-call has had its TAKEOVER message already (announce sends none again)

    @property
    def line(self) -> str:
        return f"TAKEOVER {self.label} - {' '.join(self.reason.split())}"


LABELS = {policy.ACT: "ACTED", policy.NOTHING: "NOTHING", policy.WAIT: "WAIT", policy.REFUSE: "REFUSED"}
EXIT_FAILED = 2


# --- probes: second opinion and verification ---------------------------------------------------


def found_beside(words: tuple[str, ...]) -> list[str]:
    """argv with a bare command name found beside this executable (the venv's bin), if it is there."""
    argv = list(words)
    if "/" not in argv[0]:
        beside = Path(sys.argv[0]).resolve().parent / argv[0]
        argv[0] = str(beside) if beside.exists() else argv[0]
    return argv


def run_probe(config: Config, probe: Probe, active: str | None, timeout: float) -> tuple[int, str]:
    """Run a check; (exit code, its first line). Bare names are found beside this executable."""
    from kolabmon import pacemaker

    argv = found_beside(probe.argv)
    prefix = config.nodes[active] if probe.on_active_node and active else ""
    if prefix:
        argv = pacemaker.node_command(prefix, active, argv)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              errors="replace")
        pacemaker.reached(prefix, active, proc)
    except FileNotFoundError:
        return runtime.UNKNOWN, f"{argv[0]} not found"
    except subprocess.TimeoutExpired:
        return runtime.CRITICAL, f"no answer within {timeout:g} s"
    except pacemaker.Unreachable as exc:  # the check did not run: it says nothing about the service
        return runtime.UNKNOWN, str(exc)
    first = (proc.stdout.strip().splitlines() or [f"exit {proc.returncode}"])[0]
    return proc.returncode, first.split(" | ", 1)[0]  # the status line without its perfdata


def until_it_passes(config: Config, probe: Probe, active: str, deadline: float, pause_first: bool = False
                    ) -> tuple[int, str]:
    """Re-probe every second until the probe passes or the deadline: the verification on the new node,
    and (pausing first) a gone service's wait for Pacemaker's restart in place."""
    code, line = runtime.CRITICAL, "not run"
    while time.monotonic() < deadline:
        if pause_first:
            time.sleep(1)
        left = max(deadline - time.monotonic(), runtime.REPROBE_MIN)
        code, line = run_probe(config, probe, active, min(config.probe_timeout, left))
        if code == 0:
            break
        if not pause_first:
            time.sleep(1)
    return code, line


# --- the takeover ------------------------------------------------------------------------------


def take_lock(backend: Backend, origin: str, deadline: float, wait_until: float) -> tuple[str | None, bool]:
    """(None, waited) once held; (holder, True) if someone still holds it at `wait_until`. The lock
    expires with our budget: a holder killed mid-move never blocks the next trigger for long."""
    waited = False
    until = time.time() + (deadline - time.monotonic())
    failing_since: float | None = None
    while True:
        try:
            holder = backend.acquire(origin, until)
        except BackendError:  # e.g. the node it asked is being fenced right now: ask again, briefly
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since >= LOCK_ERROR_RETRY or time.monotonic() >= wait_until:
                raise
            time.sleep(LOCK_POLL)
            continue
        failing_since = None
        if holder is None or time.monotonic() >= wait_until:
            return holder, waited
        waited = True
        time.sleep(LOCK_POLL)


def take_over(config: Config, trigger: Trigger, budget: float | None = None) -> Result:
    """Decide on one trigger and carry the decision out; never raises BackendError, always audits."""
    started = time.monotonic()
    deadline = started + (budget if budget is not None else config.budget)
    event = trigger.event
    record = audit.event_record(config.cluster, event, trigger.dry_run) | {"origin": trigger.origin,
                                                                             "output": trigger.output}
    durations: dict[str, float] = {}
    if trigger.detection is not None:
        durations["detect"] = round(trigger.detection, 3)

    def finish(decision: str, reason: str, code: int, label: str, **extra: object) -> Result:
        durations["total"] = round(time.monotonic() - started, 3)
        audit.append(config.audit, audit.decided(record, decision, reason, code, durations, **extra))
        return Result(label, reason, code, dict(record))

    first = policy.decide_event(event, config.rules)
    if first is not None:  # OK/WARNING/SOFT events: decided without touching the cluster
        return finish(first.action, first.reason, first.exit_code, LABELS[first.action])
    backend = make(config)
    waiting_since = time.time()
    try:
        holder, waited = take_lock(backend, trigger.origin, deadline, deadline - config.move_needs())
    except BackendError as exc:
        return finish(policy.REFUSE, f"cannot take the takeover lock: {exc}", 1, "REFUSED")
    if holder is not None:
        return finish(policy.NOTHING, f"another takeover is still in progress ({holder}): this call does nothing",
                      0, "NOTHING")
    try:
        return act(config, trigger, backend, record, durations, finish, started, deadline,
                   waited_since=waiting_since if waited else None)
    except BackendError as exc:
        return finish(policy.REFUSE, f"cannot decide: {exc}", 1, "REFUSED")
    finally:
        try:
            backend.release()
        except BackendError:
            pass  # it expires with the budget


def act(config: Config, trigger: Trigger, backend: Backend, record: audit.Record, durations: dict[str, float],
        finish, started: float, deadline: float, waited_since: float | None) -> Result:  # noqa: ANN001
    event = trigger.event
    last = backend.last_move()
    if waited_since is not None and last is not None and last.epoch >= waited_since - 1:
        return finish(policy.NOTHING, f"{last.words(time.time())}: this call does nothing", 0, "NOTHING")
    cluster = backend.cluster()
    record["cluster_state"] = cluster.__dict__
    decision = policy.decide(event, config.rules, cluster, time.time(), last)
    durations["decide"] = round(time.monotonic() - started, 3)
    if decision.cooldown and last is not None and cluster.active:
        # the move it refers to may have been for this very failure (another check of the same fault,
        # reported a little later): if the service passes where the group runs now, that is no refusal
        code, line = run_probe(config, config.probes[event.service], cluster.active, config.probe_timeout)
        if code == 0:
            return finish(policy.NOTHING, f"{event.service} passes on {cluster.active} since "
                          f"{last.words(time.time())} ({line}): nothing to do", 0, "NOTHING")
    if decision.action != policy.ACT:
        return finish(decision.action, decision.reason, decision.exit_code, LABELS[decision.action])
    problem = backend.setup_problem()
    if problem:
        return finish(policy.REFUSE, problem, 1, "REFUSED")
    source, target = cluster.active, cluster.passive
    assert source and target  # the policy acts only with both
    probe = config.probes[event.service]
    mark = time.monotonic()
    if trigger.confirmed:
        code, line = runtime.CRITICAL, trigger.output
    else:  # a hang is confirmed in a few seconds: a healthy server answers well within hang_probe_timeout
        hung = runtime.failure_kind(trigger.output) == runtime.HUNG
        code, line = run_probe(config, probe, source, config.hang_probe_timeout if hung else config.probe_timeout)
    kind = runtime.failure_kind(line)
    if kind == runtime.GONE and not trigger.confirmed:  # Pacemaker's monitor and restart in place come first
        code, line = until_it_passes(config, probe, source, started + config.rules.restart_grace, pause_first=True)
    durations["reprobe"] = round(time.monotonic() - mark, 3)
    record["second_opinion"] = audit.probe_result(code, line) | {"kind": kind}
    if code == 0:
        now = "Pacemaker restarted it in place" if kind == runtime.GONE else "passes now"
        return finish(policy.REFUSE, f"second opinion: {event.service} {now} ({line}); not moving", 1, "REFUSED")
    if code == runtime.UNKNOWN:
        return finish(policy.REFUSE, f"second opinion could not run ({line}): not moving on a broken check", 1,
                      "REFUSED")
    fence_first = config.fence and probe.fences_first(kind)
    if trigger.dry_run:
        how = f"fence {source} first and move" if fence_first else "move"
        return finish(policy.ACT, f"dry run: would {how} {config.group} {source} -> {target} (second opinion: "
                      f"{line})", 0, "NOTHING")
    backend.note_move(policy.LastMove(time.time(), source, target, trigger.origin))
    what = f"fencing {source} and moving" if fence_first else "moving"
    audit.append(config.audit, audit.acting(record, reason=f"{what} {config.group} {source} -> {target}"))
    verify_window = config.probe_timeout * runtime.REPROBE_WINDOWS
    mark = time.monotonic()
    fence_timeout = max(min(60.0, deadline - mark - verify_window), 5.0)
    fenced_first = False
    if fence_first and backend.local_node() == source:
        # this call runs on the node it is about to fence (an agent's handler): it cannot follow or
        # verify, so it says so and lets go of the lock first; the cool-down is already recorded
        done = finish(policy.ACT, f"fencing {source} (this node) at once; the group starts on {target}, this call "
                      "cannot follow or verify it", 0, "ACTED", moved=True, fenced=True,
                      fence_first="requested from the node itself")
        try:
            backend.release()
        except BackendError:
            pass  # it is stale once this node is gone
        announce(config, done, time.monotonic() + min(config.notify_timeout, 10.0))  # this process dies next
        why = backend.fence(source, target, fence_timeout)
        if why is None:
            return replace(done, told=True)  # (this process dies with its node first)
        # still alive: nothing was fenced, and without the lock this call moves nothing
        record.pop("moved", None)
        return finish(policy.ACT, f"fencing {source} (this node) was refused: {why}; nothing moved", EXIT_FAILED,
                      "FAILED", moved=False, fenced=False, fence_first=why)
    if fence_first:
        why = backend.fence(source, target, fence_timeout)
        durations["fence"] = round(time.monotonic() - mark, 3)
        record["fence_first"] = why or "done"
        fenced_first = why is None
    try:
        if not fenced_first:
            backend.move(source, target)
        settled = backend.settle(source, target, max(min(config.transition_timeout,
                                                         deadline - time.monotonic() - verify_window), 1.0))
    except BackendError as exc:
        return finish(policy.ACT, f"move {source} -> {target} failed: {exc}", EXIT_FAILED, "FAILED", moved=False)
    durations["move"] = round(time.monotonic() - mark, 3)
    record["fenced"] = settled.fenced or fenced_first
    if settled.outcome != MOVED:
        return finish(policy.ACT, f"move {source} -> {target} {settled.outcome}: {settled.detail}", EXIT_FAILED,
                      "FAILED", moved=False)
    mark = time.monotonic()
    code, line = until_it_passes(config, probe, target, min(mark + verify_window, deadline))
    durations["verify"] = round(time.monotonic() - mark, 3)
    record["verify"] = audit.probe_result(code, line)
    fenced = f", {source} fenced" + (" first" if fenced_first else "") if record["fenced"] else ""
    moved_for = round(time.monotonic() - started, 1)
    if code != 0:
        return finish(policy.ACT, f"moved {config.group} {source} -> {target}{fenced}, but {event.service} still "
                      f"fails: {line}", EXIT_FAILED, "FAILED", moved=True)
    return finish(policy.ACT, f"moved {config.group} {source} -> {target} in {moved_for} s{fenced}; "
                  f"{event.service} verified: {line}", 0, "ACTED", moved=True)


# --- telling on-call ---------------------------------------------------------------------------

def worth_telling(result: Result) -> bool:
    """Is this a decision on-call must hear of: moved, refused, failed, or left to Pacemaker (the HARD
    event comes once: kolabmon will not act on it again)? Not an OK or SOFT event, not a dry run, not
    "another takeover is in progress" or a late report of a fault already moved away from (NOTHING)."""
    event = result.record.get("event")
    if not isinstance(event, dict) or event.get("state") != "CRITICAL" or result.record.get("dry_run"):
        return False
    decision = result.record.get("decision")
    return decision in ("act", "refuse") or (decision == "wait" and event.get("state_type") == "HARD")


def without_password() -> dict[str, str]:
    """This environment less the re-probes' password: [notify] names its own (a file, or none)."""
    return {key: value for key, value in os.environ.items() if key != runtime.PASSWORD_ENV}


def announce(config: Config, result: Result, deadline: float) -> str | None:
    """Send the decision as on-call's TAKEOVER message through [notify] (kolabmon-notify, the record
    on its stdin); None when sent or nothing to send, else why not (for the caller's log)."""
    if not config.notify or result.told or not worth_telling(result):
        return None
    event: dict = result.record["event"]  # type: ignore[assignment]  # worth_telling checked it
    timeout = min(config.notify_timeout, deadline - time.monotonic())
    if timeout < 1:
        return "no time left to send the decision to on-call"
    argv = found_beside(config.notify) + [
        "--type", "TAKEOVER", "--host", str(event["host"]), "--service", str(event["service"]),
        "--state", str(event["state"]), "--record", "-", "--audit", str(config.audit), "-t", f"{max(timeout - 2, 1):g}"]
    try:
        done = subprocess.run(argv, input=json.dumps(result.record), capture_output=True, text=True,
                              timeout=timeout, errors="replace", env=without_password())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot send the decision to on-call: {argv[0]}: {type(exc).__name__}"
    if done.returncode != 0:
        return f"sending the decision to on-call failed: {(done.stdout.strip().splitlines() or ['no output'])[0]}"
    return None
