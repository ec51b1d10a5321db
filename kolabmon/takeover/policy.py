"""When to move: the event handler's macros and the cluster's state → act, wait, refuse or nothing.

Pure: no I/O, no clock of its own; everything it decides on is an argument, so every rule is a
unit test. The CLI gathers the inputs (macros, config, crm_mon, the audit log) and carries out
the decision.
"""

from __future__ import annotations

from dataclasses import dataclass

from kolabmon import runtime

STATES = runtime.STATE_NAMES
STATE_TYPES = ("SOFT", "HARD")

ACT, WAIT, REFUSE, NOTHING = "act", "wait", "refuse", "nothing"
EXIT_CODES = {ACT: 0, NOTHING: 0, WAIT: 1, REFUSE: 1}


@dataclass(frozen=True)
class Event:
    """What Icinga passed: $host.name$ $service.name$ $service.state$ $service.state_type$
    $service.check_attempt$ $service.max_check_attempts$ $service.flapping$, and
    $service.last_hard_state_change$ as Icinga rendered it: the notifications about the same HARD
    state carry the same value, so kolabmon-notify matches a decision to its event by it."""

    host: str
    service: str
    state: str
    state_type: str
    attempt: int
    max_attempts: int
    flapping: bool = False
    changed: str = ""


@dataclass(frozen=True)
class Rules:
    """The admin's policy, from the config file."""

    hosts: frozenset[str]            # host objects that stand for this cluster (cluster IP host, nodes)
    services: frozenset[str]         # failover-relevant service names
    soft_attempt: int | None = None  # also act on SOFT CRITICAL at this attempt (None: HARD only)
    cooldown: float = 600.0          # seconds after a move during which no new move is made
    restart_grace: float = 30.0      # a refused/reset service gets this long for Pacemaker's restart in place


@dataclass(frozen=True)
class Cluster:
    """What the cluster looks like now (from crm_mon), as far as the decision needs it."""

    quorate: bool
    active: str | None                # node running the group (None: stopped/nowhere)
    passive: str | None               # the node the group would move to
    passive_online: bool
    passive_member: bool
    passive_degraded: bool            # marked by kolabmon, in standby/maintenance, or its links down
    transition: str | None = None     # something already in flight (fencing, a move): its words
    split: bool = False               # group active on more than one node


@dataclass(frozen=True)
class LastMove:
    """The last move kolabmon made in this cluster (the cluster keeps it, so every trigger sees it)."""

    epoch: float
    source: str
    target: str
    origin: str                       # who made it: "icinga on HOST", "watcher on NODE"

    def words(self, now: float) -> str:
        return f"{self.origin} moved the group {self.source} -> {self.target} {now - self.epoch:.0f} s ago"


@dataclass(frozen=True)
class Failure:
    """One failed probe as the watcher saw it (monotonic times) and what its line says (runtime.failure_kind)."""

    started: float
    ended: float
    kind: str
    line: str


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str
    cooldown: bool = False  # refused only because the group moved less than `cooldown` s ago

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.action]


def decide_event(event: Event, rules: Rules) -> Decision | None:
    """The first half: does this event call for a takeover at all? None means yes."""
    if event.host not in rules.hosts:
        return Decision(REFUSE, f"host {event.host} is not part of this cluster")
    if event.state != "CRITICAL":
        return Decision(NOTHING, f"{event.service} is {event.state}: nothing to do")
    if event.service not in rules.services:
        return Decision(NOTHING, f"{event.service} is not failover-relevant")
    if event.flapping:
        return Decision(REFUSE, f"{event.service} is flapping: not moving on a flapping service")
    if event.state_type == "SOFT":
        if rules.soft_attempt is None or event.attempt < rules.soft_attempt:
            when = f"attempt {rules.soft_attempt}" if rules.soft_attempt else "the HARD state"
            return Decision(WAIT, f"SOFT CRITICAL attempt {event.attempt}/{event.max_attempts}: waiting for {when}")
    return None


def confirmed(streak: list[Failure], needed: int, window: float, rules: Rules) -> bool:
    """The watcher's rule: `needed` failures in a row, from the first one's start to the last one's end
    within `window` seconds; a service that is gone (refused, reset) only once it has stayed gone for
    `restart_grace`, so that Pacemaker's monitor and restart in place come first."""
    if len(streak) < needed:
        return False
    recent = streak[-needed:]
    if recent[-1].ended - recent[0].started > window:
        return False
    if recent[-1].kind == runtime.GONE:
        return recent[-1].ended - streak[0].started >= rules.restart_grace
    return True


def decide(event: Event, rules: Rules, cluster: Cluster, now: float, last_move: LastMove | None) -> Decision:
    """Act, wait, refuse or nothing, with the reason in words. HARD is the state type, not attempt = max
    (Icinga passes check_attempt 1 on the HARD change)."""
    first = decide_event(event, rules)
    if first is not None:
        return first
    if event.host == cluster.passive:  # a node-local check of the node the group would move to
        return Decision(NOTHING, f"{event.service} fails on {event.host}, which does not run the group: nothing to "
                        "move away from")
    if cluster.transition:
        return Decision(WAIT, f"the cluster is already busy ({cluster.transition}): not fighting it")
    if cluster.split:
        return Decision(REFUSE, "group active on more than one node: fencing must settle this, not a move")
    if not cluster.quorate:
        return Decision(REFUSE, "no quorum: this partition may not move anything")
    cooling = last_move is not None and now - last_move.epoch < rules.cooldown
    cooldown = f"cool-down: {last_move.words(now)} (< {rules.cooldown:.0f} s)" if last_move and cooling else ""
    if cluster.active is None:  # (a group still starting is a transition, above): say the last move too
        return Decision(REFUSE, "the group runs nowhere: nothing to move (see check_kolab_heartbeat)" +
                        (f"; {cooldown}" if cooldown else ""), cooldown=bool(cooldown))
    if cooldown:
        return Decision(REFUSE, cooldown, cooldown=True)
    if cluster.passive is None:
        return Decision(REFUSE, "no passive node to move to")
    if not cluster.passive_online:
        return Decision(REFUSE, f"passive node {cluster.passive} is offline")
    if not cluster.passive_member:
        return Decision(REFUSE, f"passive node {cluster.passive} is not a cluster member")
    if cluster.passive_degraded:
        return Decision(REFUSE, f"passive node {cluster.passive} is degraded itself")
    when = "HARD" if event.state_type == "HARD" else f"SOFT attempt {event.attempt}"
    return Decision(ACT, f"{event.service} {when} CRITICAL: move {cluster.active} -> {cluster.passive}")
