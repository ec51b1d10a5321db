"""Pacemaker: move by marking the degraded node with a transient attribute that the admin's
location rule honours (nothing stays pinned), or by `crm_resource --move` then `--clear`; fence a
node whose service hangs at once; follow the transition, fencing included, and say exactly what
blocks it when it does not finish.

The lock and the last move live in the CIB, in two cluster_property_sets of kolabmon's own (Pacemaker
ignores option names it does not know): `kolabmon-lock` exists while a takeover runs — creating an
element whose id exists fails, so taking it is atomic cluster-wide — and `kolabmon-state` holds the
last move for the cool-down.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import quoteattr

from kolabmon import pacemaker
from kolabmon.takeover import policy
from kolabmon.takeover.backends import BLOCKED, MOVED, TIMEOUT, BackendError, Settled, other
from kolabmon.takeover.config import Config

TOOL_TIMEOUT = 15.0
POLL = 0.5
MOVING_ROLES = ("Starting", "Stopping", "Migrating", "Promoting", "Demoting")
LOCK, STATE = "kolabmon-lock", "kolabmon-state"  # cluster_property_set ids in crm_config
RELEASE_TIMEOUT = 4.0  # per node: the release runs within the budget's margin
CIB_EXISTS = 108  # cibadmin -C of an id that exists: "File exists" (Pacemaker 2.1 and 3.0)
LOCK_HOLDER, LAST_MOVE = "kolabmon-lock-holder", "kolabmon-last-move"  # their nvpairs


def _nvpair_set(set_id: str, name: str, value: str) -> str:
    return (f'<cluster_property_set id="{set_id}"><nvpair id="{name}" name="{name}" value={quoteattr(value)}/>'
            "</cluster_property_set>")


def _lock_xpath(value: str) -> str:
    """The lock set whose holder has exactly this value (values never hold a quote: `_safe`)."""
    return f"//cluster_property_set[@id='{LOCK}'][nvpair[@value='{value}']]"


def _safe(text: str) -> str:
    """A value that can stand in an XPath string literal and on one line."""
    return re.sub(r"[^\w.@:+ -]", "_", text)


class PacemakerBackend:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.held: str | None = None   # the lock holder value this backend wrote
        self.where: str | None = None  # the node that last answered crm_mon

    # --- reading ---------------------------------------------------------------------------

    def run(self, node: str, argv: list[str], timeout: float = TOOL_TIMEOUT) -> tuple[int, str, str]:
        try:
            proc = pacemaker.run(self.config.nodes[node], node, argv, timeout)
        except (pacemaker.ToolError, TimeoutError) as exc:
            raise BackendError(f"{argv[0]} on {node}: {exc}") from None
        return proc.returncode, proc.stdout, proc.stderr

    def status(self, prefer: str | None = None) -> tuple[pacemaker.Status, str]:
        """crm_mon from the first node that answers (the preferred one first)."""
        order = sorted(self.config.nodes, key=lambda n: n != prefer)
        problems = []
        for node in order:
            try:
                found = pacemaker.status(self.config.nodes[node], node, TOOL_TIMEOUT)
                self.where = node
                return found, node
            except (pacemaker.ToolError, pacemaker.StackDown, TimeoutError) as exc:
                problems.append(f"{node}: {exc}")
        raise BackendError("cannot read the cluster state (" + "; ".join(problems) + ")")

    def cluster(self) -> policy.Cluster:
        status, _ = self.status()
        return self.view(status)

    def view(self, status: pacemaker.Status) -> policy.Cluster:
        group = self.config.group
        running = status.group_nodes(group)
        active = next(iter(running)) if len(running) == 1 else None
        passive = other(self.config, active)
        peer = status.node(passive) if passive else None
        marked = bool(passive) and status.attributes.get(passive or "", {}).get(self.config.attribute) == "true"
        return policy.Cluster(
            quorate=status.quorate, active=active, passive=passive,
            passive_online=bool(peer and peer.online), passive_member=bool(peer and peer.member),
            passive_degraded=bool(peer and (peer.standby or peer.maintenance or peer.unclean)) or marked,
            transition=transition(status, group), split=len(running) > 1)

    def setup_problem(self) -> str | None:
        if self.config.move != "attribute":
            return None
        status, node = self.status()
        code, out, err = self.run(node, ["cibadmin", "-Q", "-o", "constraints"])
        if code != 0:
            return f"cannot read constraints: {err.strip() or code}"
        if not has_location_rule(out, self.config.group, self.config.attribute):
            return (f"no location rule keeps {self.config.group} off a node with {self.config.attribute}=true "
                    f"(one-time setup, see README: crm configure location kolab-avoid-degraded "
                    f"{self.config.group} rule -inf: {self.config.attribute} eq true)")
        return None

    # --- the lock and the last move, in the CIB ----------------------------------------------

    def cib(self, argv: list[str], timeout: float = TOOL_TIMEOUT) -> tuple[int, str, str]:
        """A CIB command on any node that answers (the CIB is cluster-wide): the one that last answered
        crm_mon first; a node that cannot be reached (its prefix exits 255) is skipped."""
        if self.where is None:
            self.status()
        order = sorted(self.config.nodes, key=lambda n: n != self.where)
        for node in order:
            try:
                code, out, err = self.run(node, argv, timeout)
            except BackendError:
                continue
            if code == 255 and self.config.nodes[node]:
                continue
            self.where = node
            return code, out, err
        raise BackendError(f"{argv[0]}: no node answers ({', '.join(order)})")

    def crm_config(self) -> dict[str, str]:
        """kolabmon's values in crm_config: the lock holder and the last move, where set."""
        code, out, err = self.cib(["cibadmin", "-Q", "-o", "crm_config"])
        if code != 0:
            raise BackendError(f"cannot read crm_config: {err.strip() or f'exit {code}'}")
        try:
            root = ET.fromstring(out)
        except ET.ParseError as exc:
            raise BackendError(f"cibadmin printed malformed XML ({exc})") from None
        return {pair.get("name", ""): pair.get("value", "") for pair in root.iter("nvpair")
                if pair.get("name") in (LOCK_HOLDER, LAST_MOVE)}

    def local_node(self) -> str | None:
        """The cluster node this process runs on (crm_node -n here), if it is one of ours."""
        if not hasattr(self, "_local"):
            try:
                name: str | None = pacemaker.local_node(5.0)
            except pacemaker.ToolError:
                name = None
            self._local = name if name in self.config.nodes else None
        return self._local

    def stale(self, value: str) -> bool:
        """A lock whose holder is past its budget, or ran on a node that is gone (fenced with it)."""
        expires = value.rsplit(" ", 1)[-1]
        if expires.isdigit() and int(expires) < time.time():
            return True
        found = re.search(r" node=(\S+) until ", value)
        if not found or found[1] not in self.config.nodes:
            return False
        status, _ = self.status()
        node = status.node(found[1])
        return node is not None and (not node.online or node.unclean)

    def acquire(self, holder: str, until: float) -> str | None:
        value = f"{_safe(holder)} node={self.local_node() or '-'} until {until:.0f}"
        for _ in range(2):
            code, out, err = self.cib(["cibadmin", "-o", "crm_config", "-C", "-X",
                                       _nvpair_set(LOCK, LOCK_HOLDER, value)])
            if code == 0:
                self.held = value
                return None
            if code != CIB_EXISTS and "file exists" not in (out + err).lower():  # the CIB refused the write itself
                self.where = None  # the node asked may be going down: the next call reads the cluster afresh
                raise BackendError(f"cibadmin refused the lock: {err.strip() or f'exit {code}'}")
            current = self.crm_config().get(LOCK_HOLDER)
            if current is None:  # released between the two calls: try once more
                continue
            if not self.stale(current) or "'" in current:  # (a value we cannot quote is not ours to break)
                return current
            # its holder was killed: remove exactly that lock (a newer one stays), and take it
            self.cib(["cibadmin", "-D", "--xpath", _lock_xpath(current)])
        return self.crm_config().get(LOCK_HOLDER) or "someone (the lock changed hands twice)"

    def release(self) -> None:
        """Bounded (it runs after the budget's work): a lock left behind expires with its budget."""
        if self.held is None:
            return
        held, self.held = self.held, None
        code, _, err = self.cib(["cibadmin", "-D", "--xpath", _lock_xpath(held)], timeout=RELEASE_TIMEOUT)
        if code != 0:
            raise BackendError(f"cannot release the lock: {err.strip() or f'exit {code}'}")

    def last_move(self) -> policy.LastMove | None:
        words = self.crm_config().get(LAST_MOVE, "").split(" ", 3)
        try:
            return policy.LastMove(float(words[0]), words[1], words[2], words[3])
        except (ValueError, IndexError):
            return None

    def note_move(self, move: policy.LastMove) -> None:
        value = f"{move.epoch:.0f} {move.source} {move.target} {_safe(move.origin)}"
        code, _, err = self.cib(["cibadmin", "-o", "crm_config", "-M", "--allow-create", "-X",
                                 _nvpair_set(STATE, LAST_MOVE, value)])
        if code != 0:
            raise BackendError(f"cannot record the move in the CIB: {err.strip() or f'exit {code}'}")

    # --- acting ----------------------------------------------------------------------------

    def fence(self, source: str, target: str, timeout: float) -> str | None:
        try:
            status, _ = self.status(prefer=target)
        except BackendError as exc:
            return f"cannot read the cluster before fencing: {exc}"
        if not self.may_fence(status, source, target):
            return f"no fencing from {target} (needs quorum, {target} online, stonith enabled, a fence device)"
        # --delay=-1 skips pcmk_delay_base for this request only: that delay is the split-brain tie-break,
        # kept for Pacemaker's own fencing; here the healthy peer asks, there is no race to break
        try:
            code, _, err = self.run(target, ["stonith_admin", "--fence", source, "--delay=-1", "--timeout",
                                             str(max(int(timeout), 5))], timeout=timeout + 5)
        except BackendError as exc:  # stonith_admin missing or hung: the move is still there to try
            return str(exc)
        if code != 0:
            return f"stonith_admin --fence {source} on {target}: {err.strip() or f'exit {code}'}"
        return None

    def move(self, source: str, target: str) -> None:
        if self.config.move == "attribute":
            argv = ["crm_attribute", "-N", source, "-n", self.config.attribute, "-v", "true", "-l", "reboot"]
        else:
            argv = ["crm_resource", "--move", "-r", self.config.group, "-N", target]
        for node in (target, source):  # the degraded node may not answer; the target must
            try:
                code, _, err = self.run(node, argv)
            except BackendError:
                continue
            if code == 0:
                return
            raise BackendError(f"{' '.join(argv[:2])} refused on {node}: {err.strip() or f'exit {code}'}")
        raise BackendError(f"neither {target} nor {source} accepted {argv[0]}")

    def settle(self, source: str, target: str, timeout: float) -> Settled:
        deadline = time.monotonic() + timeout
        fenced = fence_requested = False
        last = "no state read"
        while time.monotonic() < deadline:
            try:
                status, _ = self.status(prefer=target)
            except BackendError as exc:
                last = str(exc)
                time.sleep(POLL)
                continue
            node = status.node(source)
            if node is not None and (not node.online or node.unclean):
                fenced = fenced or any(e.get("target") == source and e.get("status") == "success"
                                       for e in status.fence_events) or not node.online
            if status.group_started(self.config.group) and status.group_nodes(self.config.group) == {target}:
                if self.config.move == "crm_resource":
                    self.run(target, ["crm_resource", "--clear", "-r", self.config.group])
                return Settled(MOVED, f"{self.config.group} started on {target}", fenced)
            last = describe(status, self.config.group)
            stuck = blocked(status)
            if stuck and not transition(status, self.config.group):
                if self.config.fence and not fence_requested and self.may_fence(status, source, target):
                    fence_requested = True
                    left = max(deadline - time.monotonic(), 5)
                    self.run(target, ["stonith_admin", "--fence", source, "--timeout", str(int(left))], timeout=left)
                    continue
                return Settled(BLOCKED, f"{stuck}; {what_to_do(status, source)}", fenced)
            time.sleep(POLL)
        return Settled(TIMEOUT, f"not settled after {timeout:.0f} s: {last}", fenced)

    def may_fence(self, status: pacemaker.Status, source: str, target: str) -> bool:
        """Only with quorum, a healthy peer, and a fence device to do it."""
        peer = status.node(target)
        return bool(status.quorate and peer and peer.online and peer.member and status.fence_devices()
                    and status.stonith_enabled)

    def recover(self, node: str) -> str:
        if node not in self.config.nodes:
            raise BackendError(f"unknown node {node} (known: {', '.join(self.config.nodes)})")
        _, where = self.status(prefer=node)
        done = []
        code, _, err = self.run(where, ["crm_attribute", "-N", node, "-n", self.config.attribute, "-D", "-l", "reboot"])
        if code != 0:
            raise BackendError(f"cannot clear {self.config.attribute} on {node}: {err.strip() or code}")
        done.append(f"{self.config.attribute} cleared")
        code, _, err = self.run(where, ["crm_resource", "--cleanup", "--node", node])
        if code != 0:
            raise BackendError(f"cannot clean up fail-counts on {node}: {err.strip() or code}")
        done.append("fail-counts and failed actions cleaned up")
        if self.config.move == "crm_resource":
            self.run(where, ["crm_resource", "--clear", "-r", self.config.group])
            done.append("move constraints cleared")
        return f"{node}: " + ", ".join(done)


def transition(status: pacemaker.Status, group: str) -> str | None:
    """What Pacemaker is already doing, in words (None: idle)."""
    for node in status.nodes:
        if node.unclean:
            return f"{node.name} is unclean, fencing pending"
        if node.pending:
            return f"{node.name} is joining"
    for event in status.fence_events:
        if event.get("status") == "pending":
            return f"fencing {event.get('target')} in progress"
    moving = [f"{r.id} {r.role.lower()}" for r in status.resources if r.role in MOVING_ROLES]
    if moving:
        return ", ".join(moving)
    return None


def blocked(status: pacemaker.Status) -> str | None:
    """The resource that blocks the group, in Pacemaker's own terms (None: nothing blocks)."""
    for r in status.resources:
        if r.blocked or (r.failed and not r.managed):
            where = ",".join(r.nodes) or "-"
            return f"{r.id} FAILED on {where} (blocked)"
    return None


def what_to_do(status: pacemaker.Status, source: str) -> str:
    if not status.stonith_enabled or not status.fence_devices():
        return (f"fencing is off: power {source} off (or stonith_admin --confirm {source} once it is down), "
                f"then crm_resource --cleanup")
    return f"fence {source} (stonith_admin --fence {source}) or fix it and run crm_resource --cleanup"


def describe(status: pacemaker.Status, group: str) -> str:
    members = ", ".join(f"{r.id}={r.role}@{','.join(r.nodes) or '-'}" for r in status.group(group))
    failures = "; ".join(status.failures[:2])
    return members + (f" | failed: {failures}" if failures else "")


def has_location_rule(constraints_xml: str, group: str, attribute: str) -> bool:
    """Is there an rsc_location on the group with a -INFINITY rule on attribute eq true?"""
    try:
        root = ET.fromstring(constraints_xml)
    except ET.ParseError:
        return False
    for location in root.iter("rsc_location"):
        if location.get("rsc") != group:
            continue
        for rule in location.iter("rule"):
            if rule.get("score", "").lstrip("-").upper() not in ("INFINITY", "INF") or \
                    not rule.get("score", "").startswith("-"):
                continue
            for expression in rule.iter("expression"):
                if (expression.get("attribute") == attribute and expression.get("operation") == "eq"
                        and expression.get("value") == "true"):
                    return True
    return False
