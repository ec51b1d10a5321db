"""kolabmon-notify's message: the cluster's context from the takeover audit log, the next step
for the person on call, and the subject, body and webhook document."""

from __future__ import annotations

import time

TYPE_CHECKING = False  # no typing import at start-up (see runtime)
if TYPE_CHECKING:
    from kolabmon.notify import Event

RECENT = 3600.0  # a takeover older than this is history, not the cause of this notification


# --- the cluster's context: the last takeover, and what to do next ---------------------------


class Takeover:
    """What kolabmon-takeover's audit log says: the last move it tried and its latest decision."""

    def __init__(self, last_move: dict | None, latest: dict | None, recovered: set[str], note: str = "") -> None:
        self.last_move, self.latest, self.recovered, self.note = last_move, latest, recovered, note

    @property
    def moved_from(self) -> str | None:
        """The node the group left in the last move (if it moved and that node is not recovered yet)."""
        move = self.last_move
        if not move or not move.get("moved"):
            return None
        source = (move.get("cluster_state") or {}).get("active")
        return source if source and source not in self.recovered else None

    def recent(self, record: dict | None, now: float) -> bool:
        return bool(record) and now - float(record.get("epoch", 0)) < RECENT  # type: ignore[union-attr]

    def line(self) -> str:
        if self.note:
            return self.note
        if not self.last_move:
            return "none recorded"
        return f"{_when(self.last_move)} {self.last_move.get('reason', '(no reason recorded)')}"


def read_audit(path: str | None) -> Takeover:
    """The audit log's tail, as kolabmon-takeover reads it: a broken line is skipped, a missing log is said so."""
    from kolabmon.takeover import audit  # late: --help and usage errors do not load it

    if not path:
        return Takeover(None, None, set(), "unknown (no --audit log given)")
    try:
        records = audit.tail(path)
    except FileNotFoundError:
        return Takeover(None, None, set(), f"none recorded ({path} does not exist yet)")
    except OSError as exc:
        return Takeover(None, None, set(), f"unknown (cannot read {path}: {exc.strerror})")
    last_move = audit.last_takeover(records)
    return Takeover(last_move, audit.last_decision(records), audit.recovered_since(records, last_move))


def _when(record: dict) -> str:
    if record.get("time"):
        return str(record["time"])
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(float(record["epoch"])))
    except (KeyError, TypeError, ValueError):
        return "(time unknown)"


def next_step(event: Event, takeover: Takeover, active: str, now: float | None = None) -> str:
    """One line: what the person on call does now. `active` is the node name(s), "none" or ""."""
    now = time.time() if now is None else now
    what = event.service or f"host {event.host}"
    where = f" on {active}" if active and active != "none" else ""
    source = takeover.moved_from
    if event.type == "ACKNOWLEDGEMENT":
        return f"{event.author or 'someone'} is on it ({event.comment or 'no comment'}); nothing else to do."
    if event.type.startswith("DOWNTIME"):
        return f"Downtime by {event.author or 'someone'}: {event.comment or 'no comment'}."
    if event.type == "FLAPPINGSTART":
        return (f"{what} is flapping: kolabmon will not move the group while it flaps. "
                f"Look for an intermittent cause{where}.")
    if not event.problem:
        if source:
            return (f"{what} is back. The group left {source} in the last takeover: check {source}, "
                    f"then run: kolabmon-takeover recover {source}")
        return "Nothing to do."
    move = takeover.last_move
    if move and takeover.recent(move, now):
        if source:
            return (f"kolabmon moved the group away from {source}: check {source} (why it failed there), "
                    f"then run: kolabmon-takeover recover {source}")
        return ("The takeover failed or left the cluster blocked: look at crm_mon -1 on the nodes, "
                "clean up, move by hand if needed.")
    latest = takeover.latest
    if latest and takeover.recent(latest, now):
        reason = latest.get("reason", "no reason recorded")
        if latest.get("decision") == "error":
            return f"kolabmon-takeover failed ({reason}): check {what}{where} by hand."
        return f"kolabmon did not move ({reason}): check {what}{where} by hand."
    if event.state == "UNKNOWN":
        return f"The check itself failed (configuration, tool, permissions): read its line, then check {what}{where}."
    if event.state == "WARNING":
        return f"Look at {what}{where} in working hours."
    if not event.service:
        return f"{event.host} does not answer: check its power and network (Pacemaker fences and moves a dead node)."
    if event.failover:
        return (f"kolabmon-takeover is deciding on this HARD CRITICAL now (second opinion, then a move if its "
                f"policy allows): a RECOVERY should follow within minutes; if not, check {what}{where}.")
    return f"Check {what}{where}."


# --- the message ------------------------------------------------------------------------------


def compose(event: Event, takeover: Takeover, active: str) -> tuple[str, str, dict[str, object]]:
    """Subject, plain-text body and the webhook's JSON document. `active` as for next_step."""
    step = next_step(event, takeover, active)
    rows = [("When", event.when), ("Check", event.output or "(no output)"), ("Active node", active_text(active)),
            ("Last takeover", takeover.line())]
    if takeover.latest and takeover.latest is not takeover.last_move:
        decision = str(takeover.latest.get("decision", "?")).upper()
        rows.append(("Latest decision", f"{_when(takeover.latest)} {decision}: {takeover.latest.get('reason', '')}"))
    if event.author or event.comment:
        rows.append(("Comment", f"{event.comment} ({event.author})" if event.author else event.comment))
    rows.append(("Next", step))
    body = "\n".join([event.subject, ""] + [f"{name + ':':<16} {_one_line(value)}" for name, value in rows]) + "\n"
    document: dict[str, object] = {
        "type": event.type, "host": event.host, "service": event.service, "state": event.state,
        "output": event.output, "time": event.when, "author": event.author, "comment": event.comment,
        "active_node": active or None, "last_takeover": takeover.line(), "next_step": step, "summary": event.subject,
    }
    return f"[kolabmon] {_one_line(event.subject)}", body, document


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def active_text(active: str) -> str:
    if active == "none":
        return "none: the Kolab group runs on no node (heartbeat)"
    if active:
        return f"{active} (from the nodes' heartbeat checks)"
    return "unknown (no fresh heartbeat result said where the group runs)"
