"""kolabmon-notify's message: what kolabmon decided about the event it is about (matched by the
event, never by a time window), where the group runs, the last move, and the next step for the
person on call; the subject, body and webhook document.

A decision belongs to an event: the event handler and every notification about one HARD state
receive the same $service.last_hard_state_change$. A PROBLEM carries the decision on its event if
it is made already, else says it is pending (kolabmon-takeover then sends it as a TAKEOVER message);
a RECOVERY carries the decision on the problem it ends. The last move is the cluster's state, not
a decision: every message says it until `kolabmon-takeover recover` has run for the node it left.
"""

from __future__ import annotations

import re
import time

TYPE_CHECKING = False  # no typing import at start-up (see runtime)
if TYPE_CHECKING:
    from kolabmon.notify import Event

DEFAULT_AUDIT = "/var/lib/kolabmon/audit.jsonl"


# --- the cluster's context: the decision on this event, the last move ----------------------------


class Takeover:
    """What kolabmon-takeover's records say for one notification."""

    def __init__(self, last_move: dict | None, decision: dict | None, recovered: set[str], note: str = "",
                 followup: bool = False, audit: str = "") -> None:
        self.last_move, self.decision, self.recovered, self.note = last_move, decision, recovered, note
        self.followup, self.audit = followup, audit
        self.deciding = False  # a recovery came before the decision on the problem it ends was written
        self.acting: dict | None = None  # a takeover fencing or moving right now (no final record yet)

    @property
    def moved_from(self) -> str | None:
        """The node the group left in the last move, until `recover` has run for it."""
        source = moved_from(self.last_move)
        return source if source and source not in self.recovered else None

    def line(self) -> str:
        if self.note:
            return self.note
        if self.acting:
            event = self.acting.get("event") or {}
            return (f"in progress since {_clock(self.acting)}: {self.acting.get('origin', 'kolabmon')} is "
                    f"{self.acting.get('reason', 'moving the group')} (for {event.get('service')} on "
                    f"{event.get('host')}); its outcome follows")
        if not self.last_move:
            return "none recorded"
        source = self.moved_from
        still = f"; {source} is not recovered yet" if source else ""
        return f"{_when(self.last_move)} {self.last_move.get('reason', '(no reason recorded)')}{still}"


def moving_from(record: dict | None) -> str | None:
    """The node a takeover (in progress or done) takes the group away from: the active node it saw."""
    return ((record or {}).get("cluster_state") or {}).get("active")


def moved_from(record: dict | None) -> str | None:
    """The node the group left, if that takeover moved it."""
    return moving_from(record) if record and record.get("moved") else None


def label(record: dict) -> str:
    """MOVED, FAILED, REFUSED, WAITED or NOTHING: what a decision record amounts to for on-call."""
    if record.get("decision") == "error" or (record.get("decision") == "act" and record.get("exit") == 2):
        return "FAILED" if not record.get("moved") else "MOVED, NOT VERIFIED"
    if record.get("moved"):
        return "MOVED"
    return {"refuse": "REFUSED", "wait": "WAITED"}.get(str(record.get("decision")), "NOTHING")


def read_audit(path: str | None, event: Event, config_path: str | None = None, wait: float = 0.0) -> Takeover:
    """The records for this notification: the decision matched to its event, the last move. A broken
    line is skipped; a missing or unreadable log, or a broken takeover config, is said so. A RECOVERY
    that comes while the takeover still verifies the problem it ends (the service passed on the new
    node before the takeover's record was written) waits up to `wait` s for that record."""
    from kolabmon.takeover import audit  # late: --help and usage errors do not load it

    followup, note = False, ""
    if config_path:
        from kolabmon.takeover.config import ConfigError, load

        try:
            config = load(config_path)
        except ConfigError as exc:
            note = f"unknown (takeover config: {exc})"
        except (OSError, ValueError) as exc:  # whatever the file holds, the notification goes out
            note = f"unknown (takeover config {config_path}: {type(exc).__name__})"
        else:
            followup, path = bool(config.notify), path or str(config.audit)
    path = path or DEFAULT_AUDIT
    decision = event.record
    try:
        records = audit.tail(path)
    except FileNotFoundError:
        return Takeover(None, decision, set(), note or f"none recorded ({path} does not exist yet)", followup, path)
    except OSError as exc:
        return Takeover(None, decision, set(), note or f"unknown (cannot read {path}: {exc.strerror})", followup,
                        path)
    if decision is None and event.service and event.changed and (event.problem or event.type == "RECOVERY"):
        find = audit.decision_on if event.problem else audit.problem_before
        decision = find(records, event.host, event.service, event.changed)
        until = time.monotonic() + wait
        while (decision is None and event.type == "RECOVERY" and time.monotonic() < until
               and audit.deciding(records, event.host, event.service)):
            time.sleep(0.25)
            records = _tail_or_none(audit, path) or records
            decision = find(records, event.host, event.service, event.changed)
    last_move = audit.last_takeover(records)
    found = Takeover(last_move, decision, audit.recovered_since(records, last_move), note, followup, path)
    found.acting = audit.in_progress(records, time.time())
    found.deciding = bool(decision is None and event.type == "RECOVERY" and event.service
                          and audit.deciding(records, event.host, event.service))
    return found


def _tail_or_none(audit, path: str) -> list[dict] | None:  # noqa: ANN001
    try:
        return audit.tail(path)
    except OSError:
        return None


def _when(record: dict) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(record["epoch"])))
    except (KeyError, TypeError, ValueError):
        return str(record.get("time") or "(time unknown)")


def _clock(record: dict) -> str:
    """HH:MM:SS for a record of today, the date too for an older one."""
    when = _when(record)
    return when[-8:] if when[:10] == time.strftime("%Y-%m-%d") else when


# --- the next step -----------------------------------------------------------------------------


def after(record: dict, what: str) -> str:
    """The next step once kolabmon has decided on the event (`record`)."""
    state = record.get("cluster_state") or {}
    source, target = state.get("active") or "the active node", state.get("passive") or "the other node"
    reason = " ".join(str(record.get("reason", "no reason recorded")).split())
    kind = label(record)
    failing = (record.get("second_opinion") or {}).get("exit") == 2
    if kind == "MOVED":
        fenced = f" ({source} was fenced: power it on)" if record.get("fenced") else ""
        return (f"kolabmon moved the group {source} -> {target}; users are served from {target}. Find out why "
                f"{what} failed on {source}{fenced}, fix it, then run: kolabmon-takeover recover {source}")
    if kind == "MOVED, NOT VERIFIED":
        return (f"kolabmon moved the group {source} -> {target}, but {what} still fails there ({reason}): "
                f"check {what} on {target} now; {source} needs kolabmon-takeover recover {source} once fixed.")
    if kind == "FAILED":
        return (f"The takeover failed ({reason}): look at crm_mon -1 on {target}, clean up, move by hand if "
                f"needed.")
    opinion = record.get("second_opinion") or {}
    if kind == "REFUSED" and opinion.get("exit") == 0:
        return f"kolabmon did not move: {reason}. Find out from {source}'s logs why {what} failed."
    if kind == "REFUSED" and (failing or not record.get("second_opinion")) and state.get("active"):
        return f"kolabmon did not move: {reason}. Users are not served: fix {what} on {source} by hand."
    if kind == "REFUSED":
        return f"kolabmon did not move: {reason}. Check {what} by hand."
    if kind == "WAITED":
        return (f"kolabmon left it to Pacemaker ({reason}) and will not act on this event again: if {what} "
                f"still fails in a few minutes, check it on {source}.")
    return f"kolabmon did nothing on this event ({reason})."


def awaited(event: Event, active: str) -> bool:
    """Does a decision on this event follow? A HARD CRITICAL of a failover-relevant service, unless it is
    a node-local check of a node known not to run the group (the takeover moves nothing for it)."""
    passive = bool(event.node and active and active != "none" and event.node not in active.split(","))
    return event.failover and event.type == "PROBLEM" and event.state == "CRITICAL" and not passive


def next_step(event: Event, takeover: Takeover, active: str) -> str:
    """One line: what the person on call does now, about the object the message is about. `active`
    is the node name(s), "none" or ""; a node-local check's node is `event.node`."""
    what = event.service or f"host {event.host}"
    where = event.node or (active if active and active != "none" else "")
    at = f" on {where}" if where and event.service else ""
    if event.type == "ACKNOWLEDGEMENT":
        return f"{event.author or 'someone'} is on it ({event.comment or 'no comment'}); nothing else to do."
    if event.type.startswith("DOWNTIME"):
        return f"Downtime by {event.author or 'someone'}: {event.comment or 'no comment'}."
    if event.type == "FLAPPINGSTART" and event.nagios and event.failover:  # Nagios has no macro to tell it
        return (f"{what} is flapping, and Nagios cannot tell kolabmon-takeover so: it still moves the group on "
                f"a HARD CRITICAL. Look for an intermittent cause{at}.")
    if event.type == "FLAPPINGSTART":
        return (f"{what} is flapping: kolabmon will not move the group while it flaps. "
                f"Look for an intermittent cause{at}.")
    if event.type == "FLAPPINGDISABLED":
        return f"Flap detection for {what} was switched off while it flapped: its state is notified again."
    decision = takeover.decision
    if event.type == "TAKEOVER" and decision is not None:
        return after(decision, what)
    source, acting = takeover.moved_from, takeover.acting
    doing = (f"kolabmon ({acting.get('origin', '?')}) is {acting.get('reason', 'moving the group')} now" if acting
             else "")
    if acting and not event.problem:
        return f"{what} is back while {doing}: wait for its outcome (the next messages)."
    if not event.problem:
        left = moved_from(decision) if decision else None
        if left and left == source:
            return (f"{what} is back since the takeover moved the group away from {left}: find out why it failed "
                    f"there, fix it, then run: kolabmon-takeover recover {left}")
        if source:
            return (f"{what} is back. The group still runs without {source} (last takeover): fix {source}, then "
                    f"run: kolabmon-takeover recover {source}")
        return "Nothing to do."
    if decision is not None and event.type == "PROBLEM" and label(decision) != "NOTHING":
        return after(decision, what)
    node = event.node or event.host
    if " fenced by the takeover " in event.output:  # the node's own checks, whatever else is under way
        recover = f", then run: kolabmon-takeover recover {node}" if node in (source, moving_from(acting)) else ""
        return f"{node} was fenced by the takeover: power it on, find out why it failed{recover}."
    if acting and not awaited(event, active):
        return f"{doing}: wait for its outcome (the next messages); if {what} still fails after it, check it{at}."
    if (" fenced by " in event.output or " unreachable (" in event.output) and event.node:
        return f"{node} does not answer: check its power and network (Pacemaker fences and moves a dead node)."
    if awaited(event, active) and decision is None:
        then = ("its decision follows in a TAKEOVER message (none when another takeover already handles the "
                "same fault)" if takeover.followup else
                f"its decision goes to its audit log ({takeover.audit}) and the next notification only")
        return f"kolabmon-takeover is deciding on this event now (second opinion, then a move if confirmed): {then}."
    if source and f"{source} offline" in event.output:  # the survivor's view of the node the group left
        return (f"{source} is out of the cluster since the takeover moved the group away from it: power it on, "
                f"find out why it failed, then run: kolabmon-takeover recover {source}")
    offline = re.search(r"[(,] ?([\w.-]+) offline", event.output)  # a heartbeat's view of its peer
    if offline and event.state == "CRITICAL":
        return (f"{offline[1]} is out of the cluster: bring it back (power, network, cluster stack); until it is "
                f"back nothing can take over if {where or 'the active node'} fails.")
    if " fenced by " in event.output or " unreachable (" in event.output:
        return f"{node} does not answer: check its power and network (Pacemaker fences and moves a dead node)."
    if event.state == "UNKNOWN":
        return f"The check itself failed (configuration, tool, permissions): read its line, then check {what}{at}."
    if event.state == "WARNING":
        return f"Look at {what}{at} in working hours."
    if not event.service:
        return f"{event.host} does not answer: check its power and network (Pacemaker fences and moves a dead node)."
    return f"Check {what}{at}."


# --- the message ------------------------------------------------------------------------------


def takeover_subject(record: dict, what: str) -> str:
    """A TAKEOVER message's subject: what kolabmon did, for which check."""
    state = record.get("cluster_state") or {}
    source, target = state.get("active") or "?", state.get("passive") or "?"
    kind = label(record)
    if kind.startswith("MOVED"):
        fenced = f", {source} fenced" if record.get("fenced") else ""
        return f"TAKEOVER {kind}: {what}: group {source} -> {target}{fenced}"
    if kind == "FAILED":
        return f"TAKEOVER FAILED: {what}: group {source} -> {target}"
    if kind == "WAITED":
        return f"TAKEOVER WAITED: {what}: Pacemaker was at work" + (f" on {source}" if source != "?" else "")
    return f"TAKEOVER {kind}: {what}: " + (f"group stays on {source}" if source != "?" else "nothing moved")


def decision_text(event: Event, takeover: Takeover, active: str = "") -> str | None:
    """The Decision row: the decision on this event (or on the problem a recovery ends), pending, or none."""
    record = takeover.decision
    if record is not None and (label(record) != "NOTHING" or event.state == "CRITICAL"):
        took = (record.get("durations") or {}).get("total")
        took_text = f", {took:g} s" if isinstance(took, int | float) else ""
        return f"{label(record)} at {_clock(record)} by {record.get('origin', 'kolabmon')}{took_text}: " \
               f"{record.get('reason', '')}"
    if awaited(event, active):
        return "pending (kolabmon-takeover runs now" + (
            "; its decision follows in a TAKEOVER message)" if takeover.followup else ")")
    if takeover.deciding:
        return "not written yet: kolabmon-takeover is still at work on the problem this ends" + (
            " and mails its decision" if takeover.followup else "")
    return None


def compose(event: Event, takeover: Takeover, active: str) -> tuple[str, str, dict[str, object]]:
    """Subject, plain-text body and the webhook's JSON document. `active` as for next_step."""
    step = next_step(event, takeover, active)
    rows = [("When", event.when)]
    if event.record is not None:
        about = event.record.get("event") or {}
        line = event.output or event.record.get("output") or (event.record.get("second_opinion") or {}).get("line")
        rows.append(("Trigger", f"{event.record.get('origin', '?')}: {about.get('service')} on {about.get('host')} "
                                f"{about.get('state_type', '')} {about.get('state')}: {line or '(no line)'}"))
    else:
        rows.append(("Check", event.output or "(no output)"))
    if event.node:
        rows.append(("Node", event.node))
    rows.append(("Active node", active_text(active)))
    decision = decision_text(event, takeover, active)
    if decision:
        rows.append(("Decision", decision))
    rows.append(("Last takeover", takeover.line()))
    if event.author or event.comment:
        rows.append(("Comment", f"{event.comment} ({event.author})" if event.author else event.comment))
    rows.append(("Next", step))
    body = "\n".join([event.subject, ""] + [f"{name + ':':<16} {_one_line(value)}" for name, value in rows]) + "\n"
    document: dict[str, object] = {
        "type": event.type, "host": event.host, "service": event.service, "state": event.state,
        "output": event.output, "time": event.when, "author": event.author, "comment": event.comment,
        "node": event.node or None, "active_node": active or None, "decision": decision,
        "last_takeover": takeover.line(), "next_step": step, "summary": event.subject,
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
