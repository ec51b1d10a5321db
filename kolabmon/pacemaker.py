"""Pacemaker/Corosync status as kolabmon reads it: `crm_mon --output-as=xml`, never its text; the
per-node command prefix, and the one description of a node that prefix cannot reach.

Shared by check_kolab_heartbeat, check_kolab_storage and the takeover backend. Pacemaker 2.1
(api-version 2.25, Debian 12) and 3.0 (2.38, Debian 13) differ only in details this parser does not
depend on (`<pacemakerd>` folded into `<stack>`, `rc_text` case); what differs is handled here, once.
"""

from __future__ import annotations

import datetime
import shlex
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kolabmon import runtime

CRM_MON = ["crm_mon", "-1", "--output-as=xml",
           "--include=summary,options,nodes,resources,failures,failcounts,bans,fencing,attributes"]
NOT_CONNECTED = {102, 107}  # crm_mon: "Not connected" / cluster stack down → CRITICAL, not UNKNOWN
PREFIX_FAILED = 255  # ssh, and lab/on, exit 255 when they cannot reach the node (down, fenced, no route)


class ToolError(Exception):
    """A cluster tool is missing, hung or said something unparsable (UNKNOWN)."""


class StackDown(Exception):
    """The cluster stack is not running or refuses the connection (CRITICAL)."""


class Unreachable(StackDown):
    """The command prefix cannot reach the node (CRITICAL; `unreachable()` adds what its peers know)."""

    def __init__(self, node: str, said: str) -> None:
        super().__init__(f"{node} unreachable ({said})")
        self.node, self.said = node, said


@dataclass
class Node:
    name: str
    online: bool
    member: bool
    standby: bool
    maintenance: bool
    unclean: bool
    pending: bool
    is_dc: bool


@dataclass
class Resource:
    id: str
    role: str
    active: bool
    failed: bool
    blocked: bool
    managed: bool
    nodes: list[str]
    group: str | None = None
    agent: str = ""


@dataclass
class Status:
    """One snapshot of the cluster, as crm_mon saw it."""

    api_version: str = ""
    dc: str | None = None
    quorate: bool = False
    stonith_enabled: bool = True
    maintenance_mode: bool = False
    nodes: list[Node] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    failcounts: dict[tuple[str, str], int] = field(default_factory=dict)
    bans: list[str] = field(default_factory=list)
    fence_events: list[dict[str, str]] = field(default_factory=list)
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)

    def group(self, group: str) -> list[Resource]:
        return [r for r in self.resources if r.group == group]

    def group_nodes(self, group: str) -> set[str]:
        """Nodes where any member of the group is active (two = split brain)."""
        return {name for r in self.group(group) if r.active for name in r.nodes}

    def group_started(self, group: str) -> bool:
        members = self.group(group)
        return bool(members) and all(r.active and r.role == "Started" and not r.failed for r in members)

    def group_node(self, group: str) -> str | None:
        """The one node on which the whole group is started, else None."""
        nodes = self.group_nodes(group)
        return next(iter(nodes)) if len(nodes) == 1 and self.group_started(group) else None

    def fence_devices(self) -> list[Resource]:
        return [r for r in self.resources if r.agent.startswith("stonith:")]


def _bool(element: ET.Element, name: str, default: bool = False) -> bool:
    value = element.get(name)
    return default if value is None else value.lower() == "true"


def parse(text: str) -> Status:
    """crm_mon XML → Status; ValueError on anything that is not crm_mon's XML."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"crm_mon printed malformed XML ({exc})") from None
    if root.tag not in ("pacemaker-result", "crm_mon"):
        raise ValueError(f"crm_mon printed <{root.tag}>, not <pacemaker-result>")
    status_element = root.find("status")
    if status_element is not None and status_element.get("code", "0") != "0":
        message = status_element.get("message", "")
        errors = "; ".join(e.text or "" for e in status_element.iter("error"))
        if int(status_element.get("code", "1")) in NOT_CONNECTED:
            raise StackDown(f"cluster stack not reachable: {errors or message}")
        raise ValueError(f"crm_mon failed: {message} {errors}".strip())
    summary = root.find("summary")
    if summary is None or root.find("nodes") is None:
        raise ValueError("crm_mon XML has no <summary>/<nodes> (truncated?)")
    status = Status(api_version=root.get("api-version", ""))
    dc = summary.find("current_dc")
    if dc is not None and _bool(dc, "present"):
        status.dc = dc.get("name")
        status.quorate = _bool(dc, "with_quorum")
    options = summary.find("cluster_options")
    if options is not None:
        status.stonith_enabled = _bool(options, "stonith-enabled", True)
        status.maintenance_mode = _bool(options, "maintenance-mode")
    for n in root.iterfind("nodes/node"):
        status.nodes.append(Node(
            name=n.get("name", "?"), online=_bool(n, "online"), member=n.get("type", "member") == "member",
            standby=_bool(n, "standby") or _bool(n, "standby_onfail"), maintenance=_bool(n, "maintenance"),
            unclean=_bool(n, "unclean"), pending=_bool(n, "pending"), is_dc=_bool(n, "is_dc")))
    for child in root.iterfind("resources/*"):
        group = child.get("id") if child.tag == "group" else None
        members = [child] if child.tag == "resource" else child.iter("resource")  # group, clone, bundle
        status.resources.extend(_resource(element, group) for element in members)
    for f in root.iterfind("failures/failure"):
        status.failures.append(f"{f.get('op_key')} on {f.get('node')}: {f.get('exitstatus') or f.get('exitcode')}"
                               + (f" ({f.get('exitreason')})" if f.get("exitreason") else ""))
    for node_history in root.iterfind("node_history/node"):
        for history in node_history.iterfind("resource_history"):
            count = history.get("fail-count")
            if count and count not in ("0",):
                status.failcounts[(node_history.get("name", "?"), history.get("id", "?"))] = (
                    1000000 if count.upper() == "INFINITY" else int(count))
    for ban in root.iterfind("bans/ban"):
        status.bans.append(ban.get("id", "?"))
    for event in root.iterfind("fence_history/fence_event"):
        status.fence_events.append(dict(event.attrib))
    for node_attrs in root.iterfind("node_attributes/node"):
        status.attributes[node_attrs.get("name", "?")] = {
            a.get("name", "?"): a.get("value", "") for a in node_attrs.iterfind("attribute")}
    return status


def _resource(element: ET.Element, group: str | None) -> Resource:
    return Resource(
        id=element.get("id", "?"), role=element.get("role", ""), agent=element.get("resource_agent", ""),
        active=_bool(element, "active"), failed=_bool(element, "failed"), blocked=_bool(element, "blocked"),
        managed=_bool(element, "managed", True), nodes=[n.get("name", "?") for n in element.iterfind("node")],
        group=group)


def node_command(prefix: str, node: str | None, argv: Sequence[str]) -> list[str]:
    """The per-node command prefix (docs/design.md): '' runs locally, 'ssh -o BatchMode=yes {node}' or
    'lab/on {node}' elsewhere; split without a shell."""
    words = [w.replace("{node}", node or "") for w in shlex.split(prefix)] if prefix else []
    return words + list(argv)


def run(prefix: str, node: str | None, argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a cluster tool on a node; ToolError if it is missing, TimeoutError if it hangs."""
    command = node_command(prefix, node, argv)
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, errors="replace")
    except FileNotFoundError:
        raise ToolError(f"{command[0]} not found") from None
    except PermissionError:
        raise ToolError(f"{command[0]} is not executable") from None
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{argv[0]} did not answer") from None


def fence_completed(event: dict[str, str]) -> float | None:
    """When a fence_event completed (epoch), from its `completed`: "2026-11-30 16:43:58Z", with the local
    offset ("+01:00") where that is not UTC, and microseconds on later releases; None without one."""
    try:
        return datetime.datetime.fromisoformat(event.get("completed", "")).timestamp()
    except ValueError:
        return None


def local_node(timeout: float) -> str:
    """This machine's cluster node name (`crm_node -n`); ToolError with the reason if it has none."""
    try:
        done = run("", None, ["crm_node", "-n"], timeout)
    except TimeoutError as exc:
        raise ToolError(str(exc)) from None
    name = done.stdout.strip()
    if done.returncode != 0 or not name:
        raise ToolError(f"crm_node -n: {done.stderr.strip() or f'exit {done.returncode}'}")
    return name


def reached(prefix: str, node: str | None, proc: subprocess.CompletedProcess[str]) -> None:
    """Unreachable when the prefix failed itself (exit 255, nothing on stdout), not the command it ran:
    with the last line it wrote on stderr."""
    if prefix and proc.returncode == PREFIX_FAILED and not proc.stdout.strip():
        raise Unreachable(node or "the node", (proc.stderr.strip().splitlines() or ["no answer"])[-1])


def status(prefix: str, node: str | None, timeout: float) -> Status:
    """crm_mon on that node, parsed; StackDown if the stack is not running there, Unreachable if the
    prefix cannot reach it."""
    proc = run(prefix, node, CRM_MON, timeout)
    reached(prefix, node, proc)
    if proc.returncode == 127 and not proc.stdout.strip():
        raise ToolError("crm_mon not found")
    if not proc.stdout.strip():
        raise ToolError(f"crm_mon exited {proc.returncode} without output"
                        + (f": {proc.stderr.strip().splitlines()[-1]}" if proc.stderr.strip() else ""))
    try:
        return parse(proc.stdout)
    except ValueError as exc:
        if proc.returncode in NOT_CONNECTED:
            raise StackDown(f"cluster stack not running ({proc.returncode})") from None
        raise ToolError(str(exc)) from None


# --- a node the prefix cannot reach: what its peers know -------------------------------------


def last_fence(view: Status, node: str) -> tuple[float, dict[str, str]] | None:
    """(when, event) of the last completed fence (reboot or off) of `node` in crm_mon's fence history."""
    done = [(when, event) for event in view.fence_events
            if event.get("target") == node and event.get("status") == "success"
            and event.get("action") in ("reboot", "off") and (when := fence_completed(event)) is not None]
    return max(done, key=lambda pair: pair[0]) if done else None


def fenced(view: Status, node: str) -> str | None:
    """`node1 fenced by the takeover at 19:50:12`: the last completed fence (reboot or off) of `node` in
    that crm_mon's fence history; by the takeover when kolabmon asked for it (`stonith_admin --fence`),
    else by Pacemaker. Local time, with the date when it is more than a day old."""
    last = last_fence(view, node)
    if last is None:
        return None
    when, event = last
    by = "the takeover" if event.get("client", "").startswith("stonith_admin") else "Pacemaker"
    shown = time.strftime("%H:%M:%S" if time.time() - when < 86400 else "%Y-%m-%d %H:%M:%S", time.localtime(when))
    return f"{node} fenced by {by} at {shown}"


def plugin_error(exc: ToolError | Unreachable, prefix: str, peers: Sequence[str], clock: runtime.Clock
                 ) -> runtime.PluginError:
    """How a node-local check reports a cluster tool it could not run: a missing or broken tool is
    UNKNOWN; a node the prefix cannot reach is CRITICAL, in the one description (`unreachable`)."""
    from kolabmon import runtime

    if isinstance(exc, Unreachable):
        clock.enter(f"asking the peers about {exc.node}")
        return runtime.PluginError(unreachable(exc, prefix, peers, clock.for_child))
    return runtime.PluginError(str(exc), runtime.UNKNOWN)


def unreachable(exc: Unreachable, prefix: str, peers: Sequence[str], timeout: Callable[[], float]) -> str:
    """The one description of a node that its command prefix cannot reach, for every node-local check:
    `node1 unreachable (what the prefix said)`, then what the first peer whose crm_mon answers (through
    the same prefix, within `timeout()` seconds) knows of it: that it was fenced, or how it sees it.
    A peer that cannot be asked adds nothing."""
    node, text = exc.node, str(exc)
    for peer in peers:
        if peer == node:
            continue
        try:
            view = status(prefix, peer, timeout())
        except (StackDown, ToolError, TimeoutError, OSError):
            continue
        seen = view.node(node)
        if seen is None:
            return text
        if seen.unclean:
            return f"{text}; {peer} says {node} is unclean (fencing pending or failed)"
        if seen.online:
            return f"{text}; {peer} says {node} is online"
        return f"{text}; {fenced(view, node) or f'{peer} says {node} is offline'}"
    return text
