"""check_kolab_heartbeat: the cluster as on-call needs to see it — members, quorum, DC, the
interconnect, where the Kolab group runs, and what will block the next takeover.

`HEARTBEAT OK - kolab active on node1, 2/2 nodes online, quorate, DC node2 answering, 2/2 links up | active=1;;;0;1 ...`

`active` (1/0: whether the group runs on the node -H names) is what the Icinga config reads for
that node's role, `active_on_NODE` (1/0 for every node Pacemaker knows) where the group runs as
this node sees it; the status line is for people.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Iterator, Sequence

from kolabmon import runtime

TYPE_CHECKING = False  # no typing import at start-up (see runtime)
if TYPE_CHECKING:
    import nagiosplugin

    from kolabmon import pacemaker

SERVICE = "HEARTBEAT"
OK, WARNING, CRITICAL = runtime.OK, runtime.WARNING, runtime.CRITICAL


# --- acquire -------------------------------------------------------------------------------


class PacemakerHeartbeat:
    """Reads crm_mon's XML and corosync's link state on one node (through the command prefix)."""

    name = SERVICE

    def __init__(self, args: argparse.Namespace, clock: runtime.Clock) -> None:
        self.args, self.clock = args, clock
        self.active: str | None = None
        self.facts: list[str] = []

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        import nagiosplugin

        from kolabmon import pacemaker

        args, clock = self.args, self.clock
        clock.enter("reading crm_mon")
        try:
            status = pacemaker.status(args.command_prefix, args.hostname, clock.for_child())
        except (pacemaker.ToolError, pacemaker.Unreachable) as exc:
            raise pacemaker.plugin_error(exc, args.command_prefix, args.peers, clock) from None
        except pacemaker.StackDown as exc:
            raise runtime.PluginError(str(exc)) from None
        findings = assess(status, args.group, args.nodes)
        online = [n.name for n in status.nodes if n.online and n.member]
        self.active = ",".join(sorted(status.group_nodes(args.group))) or None
        self.facts = [f"{len(online)}/{len(status.nodes)} nodes online",
                      "quorate" if status.quorate else "NO QUORUM"]
        clock.enter("reading corosync links")
        up, total, link_findings = self.links(status)
        findings += link_findings
        if total:
            self.facts.append(f"{up}/{total} links up")
        age = None
        if status.dc:
            clock.enter(f"asking the DC {status.dc}")
            age, dc_finding = self.dc_answer(status.dc)
            findings += dc_finding
            self.facts.append(f"DC {status.dc} answering" if not dc_finding else f"DC {status.dc} silent")
        for state, text in findings:
            yield nagiosplugin.Metric(text, state, context="findings")
        failed = len(status.failures)
        running = sum(1 for r in status.resources if r.active)
        yield nagiosplugin.Metric("nodes_online", len(online), min=0, max=len(status.nodes), context="plain")
        yield nagiosplugin.Metric("resources_running", running, min=0, context="plain")
        yield nagiosplugin.Metric("failed_actions", failed, min=0, context="plain")
        if age is not None:
            yield nagiosplugin.Metric("heartbeat_age", round(age, 3), "s", min=0, context="heartbeat_age")
        if total:
            yield nagiosplugin.Metric("links_up", up, min=0, max=total, context="plain")
        running_on = status.group_nodes(args.group)
        if status.node(args.hostname or ""):  # the node -H names: does the group run here? (storage's role)
            yield nagiosplugin.Metric("active", int(args.hostname in running_on), min=0, max=1, context="plain")
        for node in status.nodes:  # where it runs, as this node sees the cluster (notifications' active node)
            yield nagiosplugin.Metric(f"active_on_{node.name}", int(node.name in running_on), min=0, max=1,
                                      context="plain")

    def links(self, status: pacemaker.Status) -> tuple[int, int, list[tuple[int, str]]]:
        """Corosync knet links to every peer: (up, total, findings)."""
        from kolabmon import pacemaker

        args = self.args
        stats = pacemaker.run(args.command_prefix, args.hostname,
                              ["corosync-cmapctl", "-m", "stats", "stats.knet."], self.clock.for_child())
        cmap = pacemaker.run(args.command_prefix, args.hostname, ["corosync-cmapctl"], self.clock.for_child())
        if stats.returncode != 0 or cmap.returncode != 0:
            text = (stats.stderr or cmap.stderr).strip().splitlines()
            return 0, 0, [(runtime.UNKNOWN, "corosync-cmapctl failed: " + (text[-1] if text else "no output"))]
        return link_state(stats.stdout, cmap.stdout)

    def dc_answer(self, dc: str) -> tuple[float | None, list[tuple[int, str]]]:
        """Ask the DC's controller now: its answer time is the heartbeat age."""
        from kolabmon import pacemaker

        args = self.args
        started = time.monotonic()
        wait = min(self.clock.for_child() - runtime.TOOL_TIMEOUT_MARGIN, 5.0)
        crmadmin = ["crmadmin", "-q", "-t", str(int(max(wait, 1) * 1000)), "-S", dc]
        try:
            proc = pacemaker.run(args.command_prefix, args.hostname, crmadmin, wait + runtime.TOOL_TIMEOUT_MARGIN)
        except TimeoutError:
            return None, [(CRITICAL, f"DC {dc} does not answer")]
        age = time.monotonic() - started
        answer = (proc.stdout + proc.stderr).strip()
        if proc.returncode != 0 or "S_" not in answer:
            said = answer.splitlines()[-1] if answer else f"exit {proc.returncode}"
            return age, [(CRITICAL, f"DC {dc} does not answer ({said})")]
        return age, []


def assess(status: pacemaker.Status, group: str, expected_nodes: int) -> list[tuple[int, str]]:
    """Every problem the admin must know of, each with its state (pure: tested on captured XML)."""
    found: list[tuple[int, str]] = []
    for node in status.nodes:
        if node.unclean:
            found.append((CRITICAL, f"{node.name} unclean (fencing pending or failed)"))
        elif not node.online:
            found.append((CRITICAL, f"{node.name} offline"))
        elif not node.member:
            found.append((CRITICAL, f"{node.name} not a cluster member"))
        elif node.pending:
            found.append((WARNING, f"{node.name} pending"))
        if node.online and node.standby:
            found.append((WARNING, f"{node.name} in standby"))
        if node.online and node.maintenance:
            found.append((WARNING, f"{node.name} in maintenance"))
    if len(status.nodes) < expected_nodes:
        found.append((CRITICAL, f"only {len(status.nodes)} of {expected_nodes} nodes configured"))
    if not status.dc:
        found.append((CRITICAL, "no DC elected"))
    elif not status.quorate:
        found.append((CRITICAL, "partition without quorum"))
    members = status.group(group)
    active_on = status.group_nodes(group)
    if not members:
        found.append((CRITICAL, f"resource group {group} not configured"))
    elif len(active_on) > 1:
        found.append((CRITICAL, f"{group} active on {' and '.join(sorted(active_on))} (split brain)"))
    elif not status.group_started(group):
        stopped = [r.id for r in members if not (r.active and r.role == "Started")]
        found.append((CRITICAL, f"{group} not fully started ({', '.join(stopped) or 'failed members'} down)"))
    for r in status.resources:
        if r.blocked or (r.failed and not r.managed):
            found.append((CRITICAL, f"{r.id} FAILED and blocked: nothing will move it (cleanup needed)"))
        elif not r.managed:
            found.append((WARNING, f"{r.id} unmanaged"))
    if status.failures:
        found.append((WARNING, f"failed actions: {'; '.join(status.failures[:3])}"))
    if status.failcounts:
        counts = ", ".join(f"{rsc} on {node} {n}" for (node, rsc), n in sorted(status.failcounts.items()))
        found.append((WARNING, f"fail-counts: {counts}"))
    moves = [b for b in status.bans if b.startswith(("cli-prefer-", "cli-ban-"))]
    if moves:
        found.append((WARNING, f"leftover move constraints {', '.join(moves)} pin resources (crm_resource --clear)"))
    if status.maintenance_mode:
        found.append((WARNING, "cluster in maintenance mode"))
    if not status.stonith_enabled:
        found.append((WARNING, "fencing disabled: a takeover from a hung node will block"))
    elif not status.fence_devices():
        found.append((WARNING, "no fence device configured: a takeover from a hung node will block"))
    return found


_STAT = re.compile(r"stats\.knet\.node(\d+)\.link(\d+)\.connected \(\w+\) = (\d+)")
_NODE = re.compile(r"nodelist\.node\.(\d+)\.(name|nodeid) \(\w+\) = (\S+)")
_LOCAL = re.compile(r"runtime\.votequorum\.this_node_id \(\w+\) = (\d+)")


def link_state(stats: str, cmap: str) -> tuple[int, int, list[tuple[int, str]]]:
    """Parse `corosync-cmapctl -m stats` + `corosync-cmapctl`: links up per peer (pure)."""
    local = _LOCAL.search(cmap)
    entries: dict[str, dict[str, str]] = {}
    for index, key, value in _NODE.findall(cmap):
        entries.setdefault(index, {})[key] = value
    names = {e["nodeid"]: e.get("name", f"node {e['nodeid']}") for e in entries.values() if "nodeid" in e}
    peers: dict[str, dict[int, bool]] = {}
    for nodeid, link, connected in _STAT.findall(stats):
        if local and nodeid == local[1]:
            continue
        peers.setdefault(nodeid, {})[int(link)] = connected == "1"
    if not peers:
        return 0, 0, [(CRITICAL, "no corosync link to any peer")]
    found: list[tuple[int, str]] = []
    up = total = 0
    for nodeid, links in sorted(peers.items()):
        name = names.get(nodeid, f"node {nodeid}")
        down = [f"link {n}" for n, ok in sorted(links.items()) if not ok]
        up += len(links) - len(down)
        total += len(links)
        if len(down) == len(links):
            found.append((CRITICAL, f"all links to {name} down"))
        elif down:
            ok = len(links) - len(down)
            found.append((WARNING, f"{' and '.join(down)} to {name} down ({ok} of {len(links)} up)"))
    return up, total, found


class FileHeartbeat:
    """Clusters without Pacemaker: the age of a timestamp the peer writes (epoch seconds, or mtime)."""

    name = SERVICE

    def __init__(self, args: argparse.Namespace, clock: runtime.Clock) -> None:
        self.args, self.clock = args, clock
        self.active = None
        self.facts: list[str] = []

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        import nagiosplugin

        path = self.args.source[len("file:"):]
        self.clock.enter(f"reading {path}")
        try:
            with open(path, encoding="ascii", errors="replace") as handle:
                text = handle.read(64).strip()
            written = float(text) if re.fullmatch(r"\d+(\.\d+)?", text) else os.stat(path).st_mtime
        except FileNotFoundError:
            raise runtime.PluginError(f"heartbeat file {path} does not exist") from None
        except OSError as exc:
            raise runtime.PluginError(f"cannot read heartbeat file {path}: {exc.strerror}") from None
        age = max(time.time() - written, 0.0)
        self.facts = [f"peer heartbeat {age:.1f} s old"]
        yield nagiosplugin.Metric("heartbeat_age", round(age, 3), "s", min=0, context="heartbeat_age")


# --- evaluate ------------------------------------------------------------------------------


def contexts(args: argparse.Namespace) -> list[object]:
    return [runtime.findings(), runtime.plain("plain"),
            runtime.threshold("heartbeat_age", args.warning, args.critical)]


# --- present -------------------------------------------------------------------------------


def present(resource: PacemakerHeartbeat | FileHeartbeat, args: argparse.Namespace) -> object:
    def line(results: nagiosplugin.Results) -> str:
        if isinstance(resource, FileHeartbeat):
            return ", ".join(resource.facts)
        where = f"{args.group} active on {resource.active}" if resource.active else f"{args.group} not running"
        return ", ".join([where, *resource.facts])
    return line


# --- wire ----------------------------------------------------------------------------------


def make_parser() -> runtime.Parser:
    p = runtime.parser(SERVICE, "Cluster membership, quorum, interconnect and the Kolab group, read from "
                       "crm_mon --output-as=xml and corosync (or a heartbeat timestamp file).")
    p.description = (p.description or "") + " -H names the node to ask (the {node} of --command-prefix)."
    p.add_argument("--source", default="pacemaker", metavar="pacemaker|file:PATH",
                   help="pacemaker (default) or file:PATH, a timestamp the peer writes; with file, -w/-c are "
                        "on its age in seconds")
    runtime.add_node_access(p, "run the cluster tools through this, {node} = -H: '' (local, the default), "
                               "'ssh -o BatchMode=yes {node}', 'lab/on {node}'")
    p.add_argument("--group", default="kolab", help="the Kolab resource group (default kolab)")
    p.add_argument("--nodes", type=int, default=2, help="nodes the cluster must have (default 2)")
    return p


def validate(args: argparse.Namespace) -> None:
    if args.source != "pacemaker" and not (args.source.startswith("file:") and len(args.source) > len("file:")):
        raise runtime.UsageError(f"invalid --source {args.source!r} (pacemaker or file:PATH)")
    runtime.node_access(args)


def build(args: argparse.Namespace, clock: runtime.Clock) -> nagiosplugin.Check:
    resource: PacemakerHeartbeat | FileHeartbeat
    resource = PacemakerHeartbeat(args, clock) if args.source == "pacemaker" else FileHeartbeat(args, clock)
    return runtime.check(resource, contexts(args), present(resource, args))  # type: ignore[arg-type]


PLUGIN = runtime.Plugin(SERVICE, build, make_parser, required=(), validate=validate)


def main(argv: Sequence[str] | None = None) -> int:
    return PLUGIN.main(argv)
