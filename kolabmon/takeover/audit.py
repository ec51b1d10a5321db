"""The takeover's audit log: one JSON object per line, one line per decision, append-only.

The takeover writes it (kolabmon-takeover and kolabmon-watch alike); kolabmon-notify reads it for
the decision on an event and the last move, here, by one rule (`tail`). The cool-down is kept by
the cluster (the backend), not read from this log. Every record has `epoch` (for arithmetic) and
`time` (for people). An event's record adds `cluster`, `dry_run`, `event` (with `changed`, Icinga's
$service.last_hard_state_change$), `origin`, `output` (the trigger's check line), `durations` and,
once decided, `decision`, `reason`, `exit` and `finished` (plus `cluster_state`, `second_opinion`,
`verify`, `moved`, `fenced` as far as it got); `recover` writes `command`, `node`, `result`,
`reason`; an internal error `decision: "error"`. A takeover that fences or moves writes an
`acting` line first, with the `epoch` and `origin` of its final record (`acting`, `in_progress`).

Only json, os and time at import: kolabmon-notify imports this module late (not for --help or a
usage error), and a notification should not pay for more.
"""

from __future__ import annotations

import json
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from kolabmon.takeover.policy import Event

# How much of the log a reader looks at: its end, this many bytes, whole lines only. The log only
# grows, and a few hundred records reach back further than the cool-down or a notification cares.
TAIL_BYTES = 256 * 1024
ACTING = "acting"  # not a decision: a takeover fencing or moving now (see `acting`)
ACTING_LONGEST = 600.0  # longer than any takeover's budget (290 s by default, Icinga kills at 300 s)

Record = dict[str, object]


# --- the record format -----------------------------------------------------------------------


def stamp() -> Record:
    """When a record was started: epoch for the cool-down's arithmetic, local ISO time for people."""
    return {"epoch": time.time(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def event_record(cluster: str, event: Event, dry_run: bool) -> Record:
    """The record of a decision on one event, before anything is decided; `decided` completes it."""
    return stamp() | {"cluster": cluster, "dry_run": dry_run, "event": dict(vars(event))}


def acting(record: Record, **extra: object) -> Record:
    """The line written when a takeover starts to fence or move (the same `epoch` and `origin` as
    its final record, which follows): readers see a move in progress, and a takeover killed
    mid-move leaves a start without an end."""
    return record | {"decision": ACTING} | extra


def in_progress(records: list[Record], now: float, longest: float = ACTING_LONGEST) -> Record | None:
    """The latest takeover that started to move and has no final record yet, if it started less than
    `longest` s ago (a takeover ends within its budget: an older start was killed mid-move)."""
    real = _real(records)
    for index in range(len(real) - 1, -1, -1):
        record = real[index]
        if record.get("decision") == ACTING:
            if now - float(record.get("epoch", 0)) > longest:  # type: ignore[arg-type]
                return None
            done = any(r.get("epoch") == record.get("epoch") and r.get("origin") == record.get("origin")
                       for r in real[index + 1:])
            return None if done else record
    return None


def probe_result(code: int, line: str) -> Record:
    """A second opinion's or a verification's outcome: the probe's exit code and status line."""
    return {"exit": code, "line": line}


def decided(record: Record, decision: str, reason: str, exit_code: int, durations: dict[str, float],
            **extra: object) -> Record:
    """Complete an event's record with the outcome; `finished` is what the cool-down counts from."""
    record.update(decision=decision, reason=reason, exit=exit_code, finished=time.time(), durations=durations,
                  **extra)
    return record


def recover_record(node: str, dry_run: bool) -> Record:
    """The record of `kolabmon-takeover recover NODE`, started before the backend is asked."""
    return stamp() | {"command": "recover", "node": node, "dry_run": dry_run}


def recovered(record: Record, result: str, reason: str) -> Record:
    """Complete a recover record: `result` is "recovered" or "failed", `reason` the backend's words."""
    return record | {"result": result, "reason": reason}


def error_record(reason: str) -> Record:
    """What is left when the takeover broke: notify reports it as a failed decision."""
    return stamp() | {"decision": "error", "reason": reason}


# --- writing ---------------------------------------------------------------------------------


def append(path: Path, record: Record) -> None:
    """One JSON line, appended in one write and fsync'ed: the record survives a crash right after,
    and a reader never sees half of one as a whole line."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    line = json.dumps(record, sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading ---------------------------------------------------------------------------------


def tail(path: str | Path, limit: int = TAIL_BYTES) -> list[Record]:
    """The records in the last `limit` bytes, oldest first. Only whole lines count: the line the
    window cuts into and a last line without its newline (a write torn by a crash, or still under
    way) are left out, and so is any line that is not a JSON object. OSError (including
    FileNotFoundError) is the caller's: what a missing log means differs between callers."""
    with open(path, "rb") as handle:
        start = max(handle.seek(0, os.SEEK_END) - limit, 0)
        handle.seek(max(start - 1, 0))
        data = handle.read(limit + 1 if start else limit)  # bounded even if the log grows meanwhile
    if start:  # the byte before the window tells whether its first line is whole
        data = data[data.find(b"\n") + 1:]
    records = []
    for line in data.split(b"\n")[:-1]:  # the piece after the last newline is not a whole line
        try:
            record = json.loads(line.decode("utf-8", "replace"))
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _real(records: list[Record]) -> list[Record]:
    """Dry runs changed nothing: no reader counts them."""
    return [record for record in records if not record.get("dry_run")]


def last_takeover(records: list[Record]) -> Record | None:
    """The latest takeover kolabmon decided on an event, whether the group moved or the move failed."""
    return next((r for r in reversed(_real(records)) if r.get("decision") == "act" and "event" in r), None)


def decision_on(records: list[Record], host: str, service: str, changed: str) -> Record | None:
    """The decision on one event: its host, service and Icinga's $service.last_hard_state_change$,
    which the event handler and every notification about that HARD state receive alike."""
    for record in reversed(_real(records)):
        event = _about(record, host, service)
        if event is not None and str(event.get("changed", "")) == changed and record.get("decision") not in (
                None, ACTING):
            return record
    return None


def problem_before(records: list[Record], host: str, service: str, changed: str) -> Record | None:
    """For a recovery (its HARD state changed at `changed`): the decision on the HARD problem it ends,
    if the last HARD event of this service before it was that problem."""
    until = _epoch(changed) or 0
    latest: tuple[float, dict, Record] | None = None
    for record in _real(records):
        event = _about(record, host, service)
        at = _epoch(event.get("changed")) if event and event.get("state_type") == "HARD" else None
        if at is not None and at < until and (latest is None or at >= latest[0]):
            latest = (at, event, record)  # type: ignore[assignment]
    if latest and latest[1].get("state") == "CRITICAL" and latest[2].get("decision") in ("act", "refuse", "wait"):
        return latest[2]
    return None


def deciding(records: list[Record], host: str, service: str) -> bool:
    """Is a decision on this service's HARD problem still being made? Its SOFT attempts are on record
    (waited out at once) and no problem record after them: the HARD event's record comes when the
    takeover ends, after the record of the recovery that the move itself brought about."""
    for record in reversed(_real(records)):
        event = _about(record, host, service)
        if event is not None and event.get("state") != "OK":
            return event.get("state") == "CRITICAL" and (record.get("decision") == ACTING or (
                record.get("decision") == "wait" and event.get("state_type") == "SOFT"))
    return False


def _epoch(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _about(record: Record, host: str, service: str) -> dict | None:
    event = record.get("event")
    if isinstance(event, dict) and event.get("host") == host and event.get("service") == service:
        return event
    return None


def recovered_since(records: list[Record], since: Record | None) -> set[str]:
    """The nodes `kolabmon-takeover recover` cleared after the record `since` (all records: None)."""
    real = _real(records)
    after = next((real[i + 1:] for i in range(len(real) - 1, -1, -1) if real[i] is since), real)
    return {str(r.get("node")) for r in after if r.get("command") == "recover" and r.get("result") == "recovered"}
