"""check_kolab_storage against real kernel objects: loop-device ext4 filesystems this module makes.

Every fault is the kernel's own: a mount that is missing or of another type, `mount -o remount,ro`,
ext4's errors=remount-ro after an injected error, a full disk (ENOSPC), and `fsfreeze`, which blocks
every writer in the kernel (D state, deaf to SIGKILL) until it is thawed, as a dead NFS/iSCSI mount
does. Needs root; every disk is unfrozen, unmounted and detached in a finalizer that always runs,
and only the devices and mounts recorded here are touched.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from kolabmon import runtime
from kolabmon.probes import storage
from tests.fakes import crm_mon
from tests.helpers import BIN, assert_plugin_output, clean_env, run_plugin

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root"),
    pytest.mark.skipif(not all(shutil.which(tool) for tool in ("losetup", "mkfs.ext4", "fsfreeze", "mount")),
                       reason="needs util-linux and e2fsprogs"),
]

PROBE_FILES = storage.PROBE_PREFIX + "*"


def check(*args: str | Path):
    return run_plugin("check_kolab_storage", *map(str, args))


def perf(match) -> dict[str, str]:
    return dict(item.split("=", 1) for item in match["perf"].split())


def sh(*argv: str | Path) -> str:
    return subprocess.run(list(map(str, argv)), check=True, capture_output=True, text=True, timeout=30).stdout


def mounted(point: Path) -> bool:
    with open("/proc/self/mountinfo", encoding="utf-8") as table:
        return any(line.split(" ")[4] == str(point) for line in table)


class Disk:
    """One loop-device ext4 made by this module: its image, loop device and mount point."""

    def __init__(self, root: Path, name: str) -> None:
        self.image, self.mnt = root / f"{name}.img", root / name
        self.device: str | None = None
        self.frozen = False
        self.stuck: list[int] = []  # I/O processes a test saw blocked in this filesystem

    def create(self, options: str | None = None) -> Disk:
        sh("truncate", "-s", "32M", self.image)
        sh("mkfs.ext4", "-q", "-F", self.image)
        self.device = sh("losetup", "-f", "--show", self.image).strip()
        self.mnt.mkdir()
        sh("mount", *(("-o", options) if options else ()), self.device, self.mnt)
        return self

    @property
    def kernel_name(self) -> str:
        return os.path.basename(self.device or "")

    def freeze(self) -> None:
        self.frozen = True
        sh("fsfreeze", "-f", self.mnt)

    def thaw(self) -> None:
        sh("fsfreeze", "-u", self.mnt)
        self.frozen = False

    def blocked_processes(self) -> list[int]:
        """The plugin's I/O processes working on this disk (their command line names its mount point)."""
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                    argv = cmdline.read().split(b"\0")
            except OSError:
                continue
            if any(arg.endswith(b"check_kolab_storage") for arg in argv) and str(self.mnt).encode() in argv:
                found.append(int(entry.name))
        self.stuck.extend(found)
        return found

    def destroy(self) -> list[str]:
        """Thaw, wait for our blocked processes, unmount, detach; returns what went wrong."""
        problems = []
        if self.frozen:
            try:
                self.thaw()
            except (subprocess.SubprocessError, OSError) as exc:
                problems.append(f"fsfreeze -u {self.mnt}: {exc}")
        wait_gone(self.stuck, 10)
        if mounted(self.mnt):
            if subprocess.run(["umount", str(self.mnt)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True)
                problems.append(f"{self.mnt} was busy: lazily unmounted")
        if self.device:
            try:  # detach only if it is still the device of our image
                backing = Path(f"/sys/block/{self.kernel_name}/loop/backing_file").read_text().strip()
            except OSError:
                backing = ""
            if backing.removesuffix(" (deleted)") == str(self.image):
                subprocess.run(["losetup", "-d", self.device], capture_output=True)
        self.image.unlink(missing_ok=True)
        return problems


def state_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0].decode()
    except OSError:
        return None


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    """PIDs still present after `seconds` (an exited process counts once its parent, init, reaped it)."""
    deadline = time.monotonic() + seconds
    left = [pid for pid in pids if state_of(pid)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [pid for pid in left if state_of(pid)]
    return left


@pytest.fixture(scope="module")
def disks(request, tmp_path_factory):
    """Makes loop-device ext4 disks; all of them are undone at the end of the module, whatever happened."""
    root = tmp_path_factory.mktemp("storage")
    made: list[Disk] = []

    def make(name: str, options: str | None = None) -> Disk:
        disk = Disk(root, name)
        made.append(disk)  # recorded before it exists, so a half-made disk is undone too
        return disk.create(options)

    def undo() -> None:
        problems = [problem for disk in reversed(made) for problem in disk.destroy()]
        assert not problems, problems

    request.addfinalizer(undo)
    return make


@pytest.fixture(scope="module")
def disk(disks) -> Disk:
    return disks("shared")


def leftovers(disk: Disk) -> list[str]:
    return sorted(path.name for path in disk.mnt.glob(PROBE_FILES))


# --- mounted, as on the active node ----------------------------------------------------------


def test_mounted_ext4_is_ok_with_perfdata(disk) -> None:
    run = check("--path", disk.mnt, "--fstype", "ext4", "-w", "20:", "-c", "10:")
    match = assert_plugin_output(run.out, run.rc)
    assert run.rc == 0, run.out
    assert f"{disk.mnt}: ext4 on {disk.device} read-write, write round trip" in run.line
    values = perf(match)
    assert values["free_pct"].endswith("%;20:;10:;0;100"), values
    assert float(values["free_pct"].split("%")[0]) > 90
    assert values["free_bytes"].split(";")[0].endswith("B")
    assert values["inodes_free_pct"].endswith("%;;;0;100")
    assert 0 < float(values["time"].split("s")[0]) < 1
    assert leftovers(disk) == []


def test_symlink_to_the_mount_point_is_resolved(disk, tmp_path) -> None:
    link = tmp_path / "spool"
    link.symlink_to(disk.mnt)
    run = check("--path", link)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 0 and f"{disk.mnt}: ext4" in run.line, run.out


def test_wrong_filesystem_type_is_critical(disk) -> None:
    run = check("--path", disk.mnt, "--fstype", "xfs")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2, run.out
    assert run.line == f"STORAGE CRITICAL - {disk.mnt} is ext4 on {disk.device}, expected xfs"


def test_not_mounted_is_critical_and_names_what_holds_the_path(tmp_path) -> None:
    for path in (tmp_path, tmp_path / "missing"):
        run = check("--path", path)
        assert_plugin_output(run.out, run.rc)
        assert run.rc == 2, run.out
        assert f"{path} is not mounted (the path is on /" in run.line
    assert list(tmp_path.iterdir()) == []  # nothing written to the directory under the missing mount


def test_remounted_read_only_is_critical(disk) -> None:
    sh("mount", "-o", "remount,ro", disk.mnt)
    try:
        run = check("--path", disk.mnt)
    finally:
        sh("mount", "-o", "remount,rw", disk.mnt)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2, run.out
    assert run.line == f"STORAGE CRITICAL - {disk.mnt} is mounted read-only (ext4 on {disk.device})"
    assert check("--path", disk.mnt).rc == 0


# --- unmounted, as on the passive node -------------------------------------------------------


def test_mounted_on_the_passive_node_is_split_brain(disk, tmp_path) -> None:
    link = tmp_path / "spool"
    link.symlink_to(disk.mnt)
    for path in (disk.mnt, link):
        run = check("--path", path, "--expect", "unmounted", "--fstype", "ext4")
        assert_plugin_output(run.out, run.rc)
        assert run.rc == 2, run.out
        assert f"{disk.mnt} is mounted on the passive node (split brain): ext4 on {disk.device}" in run.line


def test_a_mount_where_pacemaker_has_just_moved_the_group_is_no_split_brain(disk, tmp_path) -> None:
    # Icinga read the role before the takeover; the node's own Pacemaker knows better
    for runs_on, state in (("node1", 0), ("node2", 2)):
        tools = crm_mon.install(tmp_path / runs_on, crm_mon.group_on(runs_on))
        (tools / "crm_node").write_text("#!/bin/sh\necho node1\n")
        (tools / "crm_node").chmod(0o755)
        run = run_plugin("check_kolab_storage", "--path", str(disk.mnt), "--expect", "unmounted", "--fstype", "ext4",
                         PATH=f"{tools}:/usr/bin:/bin")
        assert_plugin_output(run.out, run.rc)
        assert run.rc == state, run.out
    assert "split brain" in run.line  # the group runs on the other node: this mount is split brain
    both = crm_mon.install(tmp_path / "both", crm_mon.group_on("node1", "node2"))
    (both / "crm_node").write_text("#!/bin/sh\necho node1\n")
    (both / "crm_node").chmod(0o755)
    run = run_plugin("check_kolab_storage", "--path", str(disk.mnt), "--expect", "unmounted", "--fstype", "ext4",
                     PATH=f"{both}:/usr/bin:/bin")
    assert run.rc == 2 and "split brain" in run.line, run.out  # the group on both nodes is no excuse
    run = run_plugin("check_kolab_storage", "--path", str(disk.mnt), "--expect", "unmounted", "--fstype", "ext4",
                     PATH=f"{tmp_path / 'node1'}:/usr/bin:/bin")
    assert "read-write" in run.line and "the active node now (Pacemaker runs kolab here)" in run.line, run.line


def test_nothing_mounted_where_pacemaker_has_moved_the_group_away_is_the_passive_node(tmp_path) -> None:
    # a role set at install time (Nagios's _KOLAB_STORAGE_EXPECT) after a takeover: the node's own
    # Pacemaker says the group runs on the other node, so nothing mounted here is right
    spool = tmp_path / "spool"
    spool.mkdir()
    for runs_on, state in (("node2", 0), ("node1", 2), ("both", 2), ("stopped", 2)):
        nodes = {"both": ("node1", "node2"), "stopped": ()}.get(runs_on, (runs_on,))
        tools = crm_mon.install(tmp_path / runs_on, crm_mon.group_on(*nodes))
        (tools / "crm_node").write_text("#!/bin/sh\necho node1\n")
        (tools / "crm_node").chmod(0o755)
        run = run_plugin("check_kolab_storage", "--path", str(spool), "--expect", "mounted",
                         PATH=f"{tools}:/usr/bin:/bin")
        assert_plugin_output(run.out, run.rc)
        assert run.rc == state, (runs_on, run.out)
        if runs_on == "node2":
            assert run.line.startswith(f"STORAGE OK - {spool} not mounted, as it should be on the passive node "
                                       "(the passive node now: Pacemaker runs kolab on node2)"), run.line
        if state == 2:
            assert f"{spool} is not mounted" in run.line, run.line
    run = check("--path", spool)  # no cluster tools to ask: a missing storage on the active node
    assert run.rc == 2, run.out
    # and the other way: a node set passive that the whole group now runs on must have the storage
    for runs_on, state in (("node1", 2), ("node2", 0)):
        run = run_plugin("check_kolab_storage", "--path", str(spool), "--expect", "unmounted",
                         PATH=f"{tmp_path / runs_on}:/usr/bin:/bin")
        assert_plugin_output(run.out, run.rc)
        assert run.rc == state, (runs_on, run.out)
    assert run.line.startswith(f"STORAGE OK - {spool} not mounted, as it should be on the passive node"), run.line
    run = run_plugin("check_kolab_storage", "--path", str(spool), "--expect", "unmounted",
                     PATH=f"{tmp_path / 'node1'}:/usr/bin:/bin")
    assert "is not mounted" in run.line, run.line
    assert run.line.endswith("; the active node now: Pacemaker runs kolab here"), run.line


def test_not_mounted_on_the_passive_node_is_ok(disk, tmp_path) -> None:
    run = check("--path", tmp_path, "--expect", "unmounted")
    match = assert_plugin_output(run.out, run.rc)
    assert run.rc == 0, run.out
    assert run.line.startswith(f"STORAGE OK - {tmp_path} not mounted, as it should be on the passive node")
    assert perf(match) == {"mounted": "0;;;0;1"}
    # another filesystem there is not the shared storage
    run = check("--path", disk.mnt, "--expect", "unmounted", "--fstype", "xfs")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 0 and "no xfs mounted (only ext4" in run.line, run.out


# --- free space and inodes -------------------------------------------------------------------


def test_inode_thresholds(disk) -> None:
    run = check("--path", disk.mnt, "--inodes-warning", "99.99:")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 1 and "below warning 99.99)" in run.line, run.out
    run = check("--path", disk.mnt, "--inodes-warning", "99.99:", "--inodes-critical", "100:")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and "below critical 100)" in run.line, run.out


def fill(path: Path) -> None:
    """Write until ENOSPC, in ever smaller pieces, so that not one block is left (root uses the reserve)."""
    for number, size in enumerate((1 << 20, 1 << 12, 1 << 10, 1 << 10)):
        try:
            with open(path / f"fill-{number}", "wb", buffering=0) as handle:
                while True:
                    handle.write(b"\0" * size)
                    os.fsync(handle.fileno())
        except OSError as exc:  # at the write, the fsync, or already at the create
            assert exc.errno == errno.ENOSPC, exc


def test_full_disk_is_critical_and_low_space_alerts_by_threshold(disks) -> None:
    disk = disks("full")
    fill(disk.mnt)
    run = check("--path", disk.mnt, "-w", "20:", "-c", "10:")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2, run.out
    assert f"{disk.mnt}: No space left on device (ENOSPC) while " in run.line
    assert ", 0% free," in run.line
    assert leftovers(disk) == []
    # room again, but only 5 % of it: the write works, the threshold alerts
    for filler in disk.mnt.glob("fill-*"):
        filler.unlink()
    st = os.statvfs(disk.mnt)
    usable = st.f_blocks - st.f_bfree + st.f_bavail
    sh("fallocate", "-l", str((st.f_bavail - usable // 20) * st.f_frsize), disk.mnt / "fill-95")
    run = check("--path", disk.mnt, "-w", "20:", "-c", "10:")
    match = assert_plugin_output(run.out, run.rc)
    assert run.rc == 2, run.out
    free = float(perf(match)["free_pct"].split("%")[0])
    assert 3 < free < 7, run.out
    assert match["text"].endswith(f"(free_pct {free:g}% below critical 10)"), run.line
    assert "write round trip" in run.line and "time" in perf(match)
    run = check("--path", disk.mnt, "-w", "20:", "-c", "2:")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 1 and f"(free_pct {free:g}% below warning 20)" in run.line, run.out
    run = check("--path", disk.mnt, "-w", "3:", "-c", "2:")
    assert run.rc == 0, run.out


# --- read-only by the kernel, after a filesystem error ----------------------------------------


@pytest.fixture(scope="module")
def broken(disks) -> Disk:
    """ext4 with errors=remount-ro after an injected error."""
    disk = disks("broken", options="errors=remount-ro")
    trigger = Path(f"/sys/fs/ext4/{disk.kernel_name}/trigger_fs_error")
    if not trigger.exists():
        pytest.skip(f"{trigger} missing: this kernel cannot inject an ext4 error")
    trigger.write_text("1\n")
    return disk


def test_kernel_forced_read_only_is_critical(broken) -> None:
    run = check("--path", broken.mnt, "--fstype", "ext4")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2, run.out
    assert f"{broken.mnt} is mounted read-only" in run.line
    assert "the kernel forced it after a filesystem error" in run.line


def test_write_refused_by_the_kernel_is_critical_with_the_errno(broken, tmp_path) -> None:
    """A mount table that still says rw (as a race or another kernel may): the write itself gets EROFS."""
    lying = tmp_path / "mountinfo"
    lying.write_text(Path("/proc/self/mountinfo").read_text().replace(",emergency_ro", "")
                     .replace(f"{broken.mnt} ro,", f"{broken.mnt} rw,")
                     .replace(f"{broken.device} ro,", f"{broken.device} rw,"))
    args = runtime.parse(storage.make_parser(), ["--path", str(broken.mnt)], ("path",))
    clock = runtime.Clock(args.timeout)
    outcome = runtime.run(storage.SERVICE, storage.build(args, clock, str(lying)), clock)
    assert_plugin_output(outcome.text, outcome.state)
    assert outcome.state == 2, outcome.text
    assert f"{broken.mnt}: Read-only file system (EROFS) while creating the probe file" in outcome.line


# --- a hang in the kernel ----------------------------------------------------------------------


def test_frozen_storage_is_critical_within_the_timeout_and_abandons_the_io(disk) -> None:
    disk.freeze()
    try:
        run = check("--path", disk.mnt, "-t", "2")
        blocked = disk.blocked_processes()
        states = {pid: state_of(pid) for pid in blocked}
        stdio = {pid: [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1, 2)] for pid in blocked}
    finally:
        disk.thaw()
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2, run.out
    assert run.seconds < 3, run.seconds  # the plugin exited, and nothing held its stdout open
    assert run.out.count("\n") == 1, run.out
    assert run.line.startswith("STORAGE CRITICAL - storage I/O hung (while creating the probe file) after 1.")
    # it left exactly one I/O process behind, blocked in the kernel, on /dev/null
    assert len(blocked) == 1 and f"process {blocked[0]} stays blocked" in run.line, (blocked, run.line)
    assert states == {blocked[0]: "D"}, states
    assert stdio == {blocked[0]: ["/dev/null"] * 3}, stdio
    # thawed: the killed process finishes its last call and dies
    assert wait_gone(blocked, 10) == [], [state_of(pid) for pid in blocked]
    left = leftovers(disk)
    assert len(left) <= 1 and all(f"-{blocked[0]}-" in name for name in left), left
    run = check("--path", disk.mnt)
    assert run.rc == 0, run.out
    if left:
        assert "removed 1 probe file left by hung checks" in run.line, run.out
    assert leftovers(disk) == []


def test_hang_is_critical_whatever_the_timeout_state(disk) -> None:
    disk.freeze()
    try:
        run = check("--path", disk.mnt, "-t", "1", "--timeout-state", "UNKNOWN")
        blocked = disk.blocked_processes()
    finally:
        disk.thaw()
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and "storage I/O hung" in run.line, run.out
    assert run.seconds < 2, run.seconds
    assert wait_gone(blocked, 10) == []
    assert check("--path", disk.mnt).rc == 0
    assert leftovers(disk) == []


def test_sweep_removes_only_this_hosts_files_of_gone_processes(disk) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    host, tag = os.uname().nodename, "0123456789abcdef"
    names = {"dead": f"{storage.PROBE_PREFIX}{host}-{gone.pid}-{tag}",
             "running": f"{storage.PROBE_PREFIX}{host}-{os.getpid()}-{tag}",
             "other host": f"{storage.PROBE_PREFIX}{host}-b-{gone.pid}-{tag}"}
    for name in names.values():
        (disk.mnt / name).write_bytes(b"")
    try:
        run = check("--path", disk.mnt)
        assert_plugin_output(run.out, run.rc)
        assert run.rc == 0 and "removed 1 probe file left by hung checks" in run.line, run.out
        assert leftovers(disk) == sorted([names["running"], names["other host"]])
    finally:
        for name in names.values():
            (disk.mnt / name).unlink(missing_ok=True)


# --- from elsewhere, through the node's command prefix ---------------------------------------------


def test_through_a_working_prefix_the_line_is_the_one_on_the_node(disk, tmp_path) -> None:
    prefix = crm_mon.install_prefix(tmp_path / "prefix", tmp_path / "no-tools")
    for args in (["--path", disk.mnt, "--fstype", "xfs"], ["--path", tmp_path, "--expect", "unmounted"],
                 ["--path", tmp_path, "-v"]):
        here = check(*args)
        there = check("-H", "node2", *args, "--command-prefix", prefix, "--peers", "node1")
        assert_plugin_output(there.out, there.rc)
        assert (there.rc, there.line) == (here.rc, here.line), (here.out, there.out)
        assert there.out.count("\n") == here.out.count("\n"), there.out  # -v: the node's steps line too
    ok = check("-H", "node2", "--path", disk.mnt, "--command-prefix", prefix)
    assert ok.rc == 0 and ok.line.startswith(f"STORAGE OK - {disk.mnt}: ext4 on {disk.device} read-write"), ok.out


def test_through_the_prefix_a_hang_is_reported_by_the_node(disk, tmp_path) -> None:
    """The node's check gets less time than this side waits: the hang is its own line, CRITICAL."""
    prefix = crm_mon.install_prefix(tmp_path / "prefix", tmp_path / "no-tools")
    disk.freeze()
    try:
        run = check("-H", "node2", "--path", disk.mnt, "-t", "3", "--timeout-state", "UNKNOWN",
                    "--command-prefix", prefix)
        blocked = disk.blocked_processes()
    finally:
        disk.thaw()
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and run.line.startswith("STORAGE CRITICAL - storage I/O hung (while "), run.out
    assert run.seconds < 3, run.seconds
    assert wait_gone(blocked, 10) == []
    assert check("--path", disk.mnt).rc == 0


@pytest.mark.parametrize(("client", "by"), [("stonith_admin.3114", "the takeover"),
                                            ("pacemaker-controld.1207", "Pacemaker")])
def test_an_unreachable_node_is_described_as_the_heartbeat_does(tmp_path, client, by) -> None:
    at = float(int(time.time()) - 60)
    tools = crm_mon.install(tmp_path / "node2", crm_mon.fenced("node1", client, at))
    prefix = crm_mon.install_prefix(tmp_path / "prefix", tools, "node1")
    args = ("-H", "node1", "--command-prefix", prefix, "--peers", "node2")
    storage_run = run_plugin("check_kolab_storage", *args, "--path", "/srv/kolab", TZ="CET-1")
    heartbeat = run_plugin("check_kolab_heartbeat", *args, TZ="CET-1")
    assert_plugin_output(storage_run.out, storage_run.rc)
    fenced = time.strftime("%H:%M:%S", time.gmtime(at + 3600))
    text = f"node1 unreachable (on: node1 is down (powered off or fenced)); node1 fenced by {by} at {fenced}"
    assert (storage_run.rc, storage_run.out) == (2, f"STORAGE CRITICAL - {text}\n")
    assert (heartbeat.rc, heartbeat.out) == (2, f"HEARTBEAT CRITICAL - {text}\n")


@pytest.mark.parametrize(("prefix", "words"), [
    ("false", (3, "STORAGE UNKNOWN - the check on node1 exited 1 without a status line: nothing on stderr")),
    ("sh -c exit\\ 255", (2, "STORAGE CRITICAL - node1 unreachable (no answer)")),
    ("no-such-prefix {node}", (3, "STORAGE UNKNOWN - no-such-prefix not found")),
])
def test_a_prefix_that_runs_no_check(prefix, words) -> None:
    run = check("-H", "node1", "--path", "/srv/kolab", "--command-prefix", prefix, "--peers", "node2")
    assert_plugin_output(run.out, run.rc)
    assert (run.rc, run.line) == words, run.out


def test_the_node_gets_every_option_but_the_prefix() -> None:
    assert storage.without_prefix(["-H", "n1", "--command-prefix", "ssh {node}", "--path", "/srv", "--command-prefix=x",
                                   "--command", "y", "--peers", "n2", "-t", "5"]) == [
        "-H", "n1", "--path", "/srv", "--peers", "n2", "-t", "5"]


# --- usage ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "words"), [
    (["--path", "/srv", "--expect", "maybe"], "argument --expect: invalid choice: 'maybe'"),
    (["--path", "/srv", "-w", "abc"], "invalid range 'abc'"),
    (["--path", "/srv", "--inodes-critical", "5:1"], "start is greater than end"),
    (["--fstype", "ext4"], "missing --path"),
    (["--path", "srv"], "not an absolute path 'srv'"),
    (["--path", "/srv", "-t", "0"], "invalid number of seconds"),
    (["--path", "/srv", "--command-prefix", "ssh -o BatchMode=yes {node}"], "--command-prefix: give the node with -H"),
])
def test_usage_errors_are_unknown(args, words) -> None:
    run = check(*args)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 3 and words in run.line, run.out


def test_help_and_version_exit_unknown_without_library_imports() -> None:
    probe = ("import sys; from kolabmon.probes import storage; rc = storage.main(sys.argv[1:]); "
             "print(rc, sorted(m for m in ('nagiosplugin', 'json', 'select') if m in sys.modules))")
    for flag in ("--help", "--version", "--bogus"):
        proc = subprocess.run([str(BIN / "python"), "-c", probe, flag], capture_output=True, text=True,
                              env=clean_env())
        assert proc.stdout.rstrip().endswith("3 []"), proc.stdout
        assert "Traceback" not in proc.stderr, proc.stderr
    proc = subprocess.run([str(BIN / "check_kolab_storage"), "--help"], capture_output=True, text=True)
    assert proc.returncode == 3 and "--expect {mounted,unmounted}" in proc.stdout, proc.stdout + proc.stderr
