"""check_kolab_storage: is the shared storage mounted here as it should be, and does it take a write?

`STORAGE OK - /srv/kolab: ext4 on /dev/loop1 read-write, write round trip 0.001 s, 99.94% free (23.0 MiB),
99.87% inodes free | free_bytes=24101888B;;;0;24116224 free_pct=99.94%;20:;10:;0;100
inodes_free_pct=99.87%;;;0;100 time=0.001359s;;;0`

On the passive node (`--expect unmounted`) the storage must not be mounted: there it means split brain.

A dead NFS/iSCSI mount blocks every process that touches it in the kernel, where no signal reaches it.
So every call that may touch the storage (realpath, statvfs, the write round trip) runs in a separate
process; at the deadline the check kills it, does not wait for it, and reports the hang.

With `--command-prefix` (a monitoring host without an agent on the node) the check runs itself on the
node -H names through that prefix and passes its line and exit code on; when the prefix cannot reach
the node, the line is the heartbeat's (`pacemaker.unreachable`): `node1 unreachable (...); node1 fenced
by the takeover at 19:50:12`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Sequence

from kolabmon import runtime

TYPE_CHECKING = False  # no typing import at start-up (see runtime)
if TYPE_CHECKING:
    import nagiosplugin

    from kolabmon import pacemaker
    from kolabmon.isolate import Report

SERVICE = "STORAGE"
MOUNTINFO = "/proc/self/mountinfo"  # this process's mount namespace, as the services on this node see it
PROBE_PREFIX = ".kolabmon-probe-"


# --- acquire -------------------------------------------------------------------------------


class Mount:
    """One line of /proc/self/mountinfo."""

    def __init__(self, point: str, fstype: str, source: str, options: str, super_options: str) -> None:
        self.point, self.fstype, self.source = point, fstype, source
        self.options, self.super_options = set(options.split(",")), set(super_options.split(","))

    @property
    def read_only(self) -> bool:
        return "ro" in self.options or "ro" in self.super_options or self.forced_read_only

    @property
    def forced_read_only(self) -> bool:
        """ext4 after an error with errors=remount-ro (kernels from 6.x say emergency_ro, older ones ro)."""
        return "emergency_ro" in self.super_options


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes (\\040)."""
    if "\\" not in field:
        return field
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def mount_table(text: str) -> list[Mount]:
    """Parse /proc/self/mountinfo: `id parent dev root POINT OPTIONS [optional...] - TYPE SOURCE SUPER`."""
    table = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(" "), right.split(" ")
        if not sep or len(fields) < 6 or len(tail) < 3:
            continue
        table.append(Mount(_unescape(fields[4]), tail[0], _unescape(tail[1]), fields[5], tail[2]))
    return table


def mount_at(path: str, table: Sequence[Mount]) -> Mount | None:
    """The mount whose mount point is exactly `path` (the last one wins: it hides those under it)."""
    found = [m for m in table if m.point == path]
    return found[-1] if found else None


def mount_under(path: str, table: Sequence[Mount]) -> Mount | None:
    """The mount that holds `path` (the longest mount point above it)."""
    above = [m for m in table if path == m.point or path.startswith(m.point.rstrip("/") + "/")]
    return max(reversed(above), key=lambda m: len(m.point), default=None)


def mount_problem(path: str, mount: Mount | None, table: Sequence[Mount], args: argparse.Namespace) -> str | None:
    """Why `path` is not what --expect and --fstype ask for, in the admin's words; None when it is."""
    if args.expect == "unmounted":
        if mount is not None and (args.fstype is None or mount.fstype == args.fstype):
            return f"{path} is mounted on the passive node (split brain): {mount.fstype} on {mount.source}"
        return None
    if mount is None:
        holder = mount_under(path, table)
        where = f" (the path is on {holder.point}, {holder.fstype})" if holder else ""
        return f"{path} is not mounted{where}"
    if args.fstype and mount.fstype != args.fstype:
        return f"{path} is {mount.fstype} on {mount.source}, expected {args.fstype}"
    if mount.forced_read_only:
        return f"{path} is mounted read-only: the kernel forced it after a filesystem error ({mount.source})"
    if mount.read_only:
        return f"{path} is mounted read-only ({mount.fstype} on {mount.source})"
    return None


class StorageCheck:
    """Reads the mount table, then resolves, measures and writes the storage in a disposable process."""

    name = SERVICE

    def __init__(self, args: argparse.Namespace, clock: runtime.Clock, mountinfo: str = MOUNTINFO) -> None:
        self.args, self.clock, self.mountinfo = args, clock, mountinfo
        self.path = args.path
        self.mount: Mount | None = None
        self.swept = 0
        self.moved_here = False  # expected unmounted, but Pacemaker says the group runs here now
        self.moved_away: str | None = None  # expected mounted, nothing is, and the group runs there now

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        import nagiosplugin

        from kolabmon import isolate

        args, clock = self.args, self.clock
        clock.enter("reading the mount table")
        with open(self.mountinfo, encoding="utf-8", errors="surrogateescape") as handle:
            table = mount_table(handle.read())  # procfs: answers even when a mount in it is dead
        # --expect is the monitoring side's view of the roles (a fixed one, as Nagios's, is stale after
        # a takeover): where it disagrees with the mount table, Pacemaker on this node decides
        mounted = mount_at(args.path, table) is not None
        if args.expect == "unmounted":
            where = self.where_group_runs()
            # a mount where the group (any member) runs here alone is no split brain; nothing mounted
            # where the whole group is started here is the active node's storage missing
            if where and ((mounted and where[1].group_nodes(args.group) == {where[0]}) or
                          (not mounted and where[1].group_node(args.group) == where[0])):
                args = self.args = argparse.Namespace(**{**vars(args), "expect": "mounted"})
                self.moved_here = True
        elif not mounted and (where := self.where_group_runs()):
            # nothing mounted is the passive node only while the whole group is started on another node
            elsewhere = where[1].group_node(args.group)
            if elsewhere is not None and elsewhere != where[0]:
                args = self.args = argparse.Namespace(**{**vars(args), "expect": "unmounted"})
                self.moved_away = elsewhere
        clock.enter("starting the I/O process")
        facts = isolate.isolated(lambda report: _storage_io(args, table, report), clock, "storage I/O")
        self.path = str(facts["path"])
        self.mount = mount_at(self.path, table)
        problem = mount_problem(self.path, self.mount, table, args)
        if problem:
            here = f"; the active node now: Pacemaker runs {args.group} here" if self.moved_here else ""
            raise runtime.PluginError(problem + here)
        if args.expect == "unmounted":
            yield nagiosplugin.Metric("mounted", 0, min=0, max=1, context="mounted")
            return
        space = _space(facts.get("statvfs"))  # type: ignore[arg-type]
        if "failed" in facts:
            raise _io_error(self.path, facts["failed"], space)  # type: ignore[arg-type]
        if facts.get("mismatch"):
            raise runtime.PluginError(f"{self.path}: the probe file read back different bytes than written")
        self.swept = int(facts.get("swept", 0))  # type: ignore[call-overload]
        free_pct, free_bytes, total_bytes, inodes_free_pct = space
        if free_pct is not None:
            yield nagiosplugin.Metric("free_pct", free_pct, "%", min=0, max=100)
            yield nagiosplugin.Metric("free_bytes", free_bytes, "B", min=0, max=total_bytes, context="free_bytes")
        if inodes_free_pct is not None:  # btrfs and some network filesystems have no inode count
            yield nagiosplugin.Metric("inodes_free_pct", inodes_free_pct, "%", min=0, max=100)
        yield nagiosplugin.Metric("time", facts["time"], "s", min=0, context="time")


    def where_group_runs(self) -> tuple[str, pacemaker.Status] | None:
        """(this node, what Pacemaker on it says), None when the cluster tools do not say: then --expect
        stands (a mount on the passive node stays split brain)."""
        from kolabmon import pacemaker

        self.clock.enter("asking Pacemaker where the group runs")
        deadline = time.monotonic() + min(self.clock.for_child() / 3, 3.0)  # the rest is for the I/O
        try:
            node = pacemaker.local_node(max(deadline - time.monotonic(), 0.1))
            view = pacemaker.status("", None, max(deadline - time.monotonic(), 0.1))
        except (pacemaker.ToolError, pacemaker.StackDown, TimeoutError, OSError):
            return None
        return node, view


def _storage_io(args: argparse.Namespace, table: Sequence[Mount], report: Report) -> None:
    """Everything that touches the storage (runs in the disposable process); facts go to `report`."""
    step = f"resolving {args.path}"

    def enter(name: str) -> None:
        nonlocal step
        step = name
        report({"step": name})

    enter(step)
    path = os.path.realpath(args.path)
    report({"path": path})
    if mount_problem(path, mount_at(path, table), table, args) or args.expect == "unmounted":
        return  # not ours to write to: the parent says why
    host = os.uname().nodename
    probe = os.path.join(path, f"{PROBE_PREFIX}{host}-{os.getpid()}-{os.urandom(8).hex()}")
    payload = f"kolabmon storage probe {os.path.basename(probe)}\n".encode()
    try:
        enter("reading free space")
        st = os.statvfs(path)
        report({"statvfs": {"frsize": st.f_frsize, "blocks": st.f_blocks, "bfree": st.f_bfree,
                            "bavail": st.f_bavail, "files": st.f_files, "favail": st.f_favail}})
        enter("creating the probe file")
        started = time.monotonic()
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            enter("writing the probe file")
            data = payload
            while data:
                data = data[os.write(fd, data):]
            enter("syncing the probe file")
            os.fsync(fd)
        finally:
            os.close(fd)
        enter("reading back the probe file")
        fd = os.open(probe, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            read_back = os.read(fd, len(payload) + 1)
        finally:
            os.close(fd)
        enter("removing the probe file")
        os.unlink(probe)
        enter("syncing the directory")
        directory = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        report({"time": round(time.monotonic() - started, 6), "mismatch": read_back != payload})
    except OSError as exc:
        report({"failed": {"errno": exc.errno, "strerror": exc.strerror or str(exc), "step": step}})
        enter("removing the probe file after the failure")
        _discard(probe)
        return
    enter("removing leftover probe files")
    report({"swept": _sweep(path, host)})


def _discard(probe: str) -> None:
    try:
        os.unlink(probe)
    except OSError:  # never created, or the storage refuses this too
        pass


def _sweep(path: str, host: str) -> int:
    """Remove probe files this host's killed I/O processes left behind (once those are gone)."""
    removed = 0
    mine = f"{PROBE_PREFIX}{host}-"
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if not entry.name.startswith(mine):
                    continue
                pid, _, tag = entry.name[len(mine):].partition("-")  # a host "vm-2" must not match "vm"
                if pid.isdigit() and len(tag) == 16 and "-" not in tag and not _alive(int(pid)):
                    os.unlink(entry.path)
                    removed += 1
    except OSError:  # best effort: the round trip already proved the storage
        pass
    return removed


def _alive(pid: int) -> bool:
    """Running, or blocked in the kernel; a zombie (exited, not yet reaped) writes nothing any more."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # cannot tell: keep its file
        return True


def _space(st: dict[str, int] | None) -> tuple[float | None, int, int, float | None]:
    """free_pct as df counts it (space for unprivileged users over used + that), bytes, inodes %."""
    if not st:
        return None, 0, 0, None
    usable = st["blocks"] - st["bfree"] + st["bavail"]
    free_pct = round(100 * st["bavail"] / usable, 2) if usable > 0 else None
    inodes = round(100 * st["favail"] / st["files"], 2) if st["files"] > 0 else None
    return free_pct, st["bavail"] * st["frsize"], usable * st["frsize"], inodes


def _io_error(path: str, failed: dict[str, object], space: tuple[float | None, int, int, float | None]
              ) -> runtime.PluginError:
    import errno

    code = int(failed["errno"] or 0)  # type: ignore[call-overload]
    words = f"{failed['strerror']} ({errno.errorcode.get(code, code)})"
    if code in (errno.EACCES, errno.EPERM):
        return runtime.PluginError(f"{path}: {words} while {failed['step']}: the check's user needs write "
                                   "access there", runtime.UNKNOWN)
    free_pct, _, _, inodes = space
    room = [f"{value:g}% {what}free" for value, what in ((free_pct, ""), (inodes, "inodes ")) if value is not None]
    return runtime.PluginError(f"{path}: {words} while {failed['step']}" + "".join(f", {r}" for r in room))


def relay(args: argparse.Namespace, argv: Sequence[str], clock: runtime.Clock) -> runtime.Outcome | None:
    """With --command-prefix: this executable, run on the node through the prefix with the same options
    (less the prefix), its line and exit code as they are. None without a prefix: the check runs here."""
    if not args.command_prefix:
        return None
    from kolabmon import pacemaker

    clock.enter(f"running the check on {args.hostname}")
    wait = clock.for_child()
    # the node's check ends first, so that it reports a hang in its own words before this side gives up
    remote = [os.path.abspath(sys.argv[0]), *without_prefix(argv),
              "-t", f"{max(wait - runtime.RELAY_MARGIN, runtime.SHORTEST_WAIT):.2f}"]
    try:
        proc = pacemaker.run(args.command_prefix, args.hostname, remote, wait)
        pacemaker.reached(args.command_prefix, args.hostname, proc)
    except (pacemaker.ToolError, pacemaker.Unreachable) as exc:
        raise pacemaker.plugin_error(exc, args.command_prefix, args.peers, clock) from None
    if proc.returncode not in (runtime.OK, runtime.WARNING, runtime.CRITICAL, runtime.UNKNOWN) \
            or not proc.stdout.strip():
        said = (proc.stderr.strip().splitlines() or ["nothing on stderr"])[-1]
        raise runtime.PluginError(f"the check on {args.hostname} exited {proc.returncode} without a status "
                                  f"line: {said}", runtime.UNKNOWN)
    return runtime.Outcome(proc.returncode, proc.stdout.rstrip("\n"))


def without_prefix(argv: Sequence[str]) -> list[str]:
    """argv less --command-prefix as argparse reads it (`--command-prefix X`, `=X`, or abbreviated)."""
    kept, words = [], iter(argv)
    for word in words:
        option, equals, _ = word.partition("=")
        if len(option) > 2 and "--command-prefix".startswith(option):
            if not equals:
                next(words, None)
            continue
        kept.append(word)
    return kept


# --- evaluate ------------------------------------------------------------------------------


def contexts(args: argparse.Namespace) -> list[object]:
    return [runtime.threshold("free_pct", args.warning, args.critical),
            runtime.threshold("inodes_free_pct", args.inodes_warning, args.inodes_critical),
            runtime.plain("free_bytes"), runtime.plain("time"), runtime.plain("mounted")]


# --- present -------------------------------------------------------------------------------


def _size(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # not reached


def present(probe: StorageCheck) -> object:
    def line(results: nagiosplugin.Results) -> str:
        if "mounted" in results:
            if probe.mount:  # something else than the shared storage
                return (f"{probe.path}: no {probe.args.fstype} mounted (only {probe.mount.fstype} on "
                        f"{probe.mount.source}), as it should be on the passive node")
            return f"{probe.path} not mounted, as it should be on the passive node" + (
                f" (the passive node now: Pacemaker runs {probe.args.group} on {probe.moved_away})"
                if probe.moved_away else "")
        mount = probe.mount
        parts = [f"{probe.path}: {mount.fstype} on {mount.source} read-write" if mount else probe.path,
                 f"write round trip {results['time'].metric.value:.3f} s"]
        if "free_pct" in results:
            parts.append(f"{results['free_pct'].metric.value:g}% free "
                         f"({_size(results['free_bytes'].metric.value)})")
        if "inodes_free_pct" in results:
            parts.append(f"{results['inodes_free_pct'].metric.value:g}% inodes free")
        if probe.moved_here:
            parts.append(f"the active node now (Pacemaker runs {probe.args.group} here)")
        if probe.swept:
            parts.append(f"removed {probe.swept} probe file{'s' if probe.swept > 1 else ''} left by hung checks")
        return ", ".join(parts)
    return line


# --- wire ----------------------------------------------------------------------------------


def absolute_path(text: str) -> str:
    if not os.path.isabs(text):
        raise argparse.ArgumentTypeError(f"not an absolute path {text!r}")
    return os.path.normpath(text)


def make_parser() -> runtime.Parser:
    p = runtime.parser(SERVICE, "Check the shared storage as this cluster node sees it: mounted (or not, on "
                                "the passive node), the right type, read-write, a write that reaches the "
                                "disk, free space and inodes. A hung storage is CRITICAL within --timeout.",
                       hostname="the node: the {node} of --command-prefix (without a prefix the check looks "
                                "at the node it runs on)", port=runtime.HIDDEN,
                       warning="warning range for the free space in percent (20: = below 20%%)",
                       critical="critical range for the free space in percent (10: = below 10%%)")
    p.add_argument("--path", type=absolute_path, help="mount point of the shared storage (required)")
    p.add_argument("--fstype", metavar="TYPE", help="filesystem type it must have, as in /proc/mounts (ext4, nfs4)")
    p.add_argument("--group", default="kolab",
                   help="the resource group: a mount where --expect unmounted is no split brain while Pacemaker "
                        "on this node says the group runs here, and no mount where --expect mounted is the "
                        "passive node while it says the group runs on another node (default kolab)")
    p.add_argument("--expect", choices=("mounted", "unmounted"), default="mounted",
                   help="mounted (the active node, default) or unmounted (the passive node: a mount there "
                        "is split brain)")
    p.add_argument("--inodes-warning", type=runtime.nagios_range, metavar="RANGE",
                   help="warning range for the free inodes in percent")
    p.add_argument("--inodes-critical", type=runtime.nagios_range, metavar="RANGE",
                   help="critical range for the free inodes in percent")
    runtime.add_node_access(p, "run this check on the node through this, {node} = -H: '' (here, the default), "
                               "'ssh -o BatchMode=yes {node}', 'lab/on {node}'")
    return p


def build(args: argparse.Namespace, clock: runtime.Clock, mountinfo: str = MOUNTINFO) -> nagiosplugin.Check:
    probe = StorageCheck(args, clock, mountinfo)
    return runtime.check(probe, contexts(args), present(probe))  # type: ignore[arg-type]


PLUGIN = runtime.Plugin(SERVICE, build, make_parser, required=("path",), validate=runtime.node_access, relay=relay)


def main(argv: Sequence[str] | None = None) -> int:
    return PLUGIN.main(argv)
