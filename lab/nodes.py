"""The lab cluster's machines as processes: the PIDs the lab records, a node's namespace PID 1,
powering a node on and off (the lab PDU calls these), and running a command inside a machine.

A node runs as PID 1 (lab/cluster/node-run.sh) of its own pid, mount, uts and ipc namespaces inside
its netns. Powering it off SIGKILLs that PID 1: every process of the node dies, and its mount
namespace, and so the ext4 mount, go with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from lab.topology import CLUSTER_IP, LAB_DIR, LOGS, NODE_RUN, ON, RUN, SHARED, attempt

CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # processes this process spawned (to reap them)


def stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state [0], ppid [1], starttime [19])."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int, start: str | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, when given, has started at ``start`` (no reuse)."""
    proc = CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        return False
    fields = stat(pid)
    return fields is not None and fields[0] not in ("Z", "X") and (start is None or fields[19] == start)


def record(name: str, pid: int) -> None:
    """Write run/NAME.pid as "pid starttime" (atomically)."""
    fields = stat(pid)
    tmp = RUN / f".{name}.pid.tmp"
    tmp.write_text(f"{pid} {fields[19] if fields else '?'}\n")
    tmp.replace(RUN / f"{name}.pid")


def recorded(name: str) -> int | None:
    """The PID recorded in run/NAME.pid if that very process still runs, else None."""
    try:
        pid_text, start = (RUN / f"{name}.pid").read_text().split()[:2]
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if alive(pid, start) else None


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN: scan /proc
        return [int(e.name) for e in Path("/proc").iterdir()
                if e.name.isdigit() and (f := stat(int(e.name))) and f[1] == str(pid)]
    except (OSError, ValueError):
        return []


def node_pid1(node: str) -> int | None:
    """Root-namespace PID of ``node``'s namespace PID 1 (node-run.sh), or None when it is off."""
    unshare = recorded(node)
    if unshare is None:
        return None
    kids = _children(unshare)
    return kids[0] if kids and alive(kids[0]) else None


def stop_pids(pids: list[int], sig: signal.Signals, timeout: float) -> list[int]:
    """Send ``sig`` to ``pids`` and wait up to ``timeout``; return those still alive."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


def _set_links(node: str, state: str) -> None:
    for dev in ("eth0", "eth1"):
        attempt(["ip", "-n", node, "link", "set", dev, state])


def power_on(node: str, children: dict[str, subprocess.Popen[bytes]]) -> str:
    """Start ``node``: links up, then node-run.sh as PID 1 of fresh namespaces in its netns."""
    if recorded(node):
        return f"ok {node} already on"
    _set_links(node, "up")
    with (LOGS / f"{node}.out").open("ab") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", node, "unshare", "--mount", "--uts", "--ipc", "--pid", "--fork",
             "--mount-proc", "--propagation", "private", str(NODE_RUN), node, str(LAB_DIR)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    children[node] = proc
    record(node, proc.pid)
    return f"ok {node} powered on (unshare {proc.pid})"


def power_off(node: str) -> str:
    """SIGKILL ``node``'s namespace PID 1 (the whole node dies), links down, cluster IP removed."""
    t0 = time.monotonic()
    unshare = recorded(node)
    if unshare is None:
        msg = "already off"
    else:
        pid1 = node_pid1(node)
        had_disk = ""
        with contextlib.suppress(OSError):
            had_disk = next((line.split()[0] for line in Path(f"/proc/{pid1}/mounts").read_text().splitlines()
                             if f" {SHARED} " in line), "")
        # SIGKILL to a pid namespace's PID 1 kills every process in it
        left = stop_pids([pid1] if pid1 else [unshare], signal.SIGKILL, 10.0)
        while alive(unshare) and time.monotonic() - t0 < 10:
            time.sleep(0.02)
        msg = f"killed PID 1 {pid1} (unshare {unshare})" + (f", STILL ALIVE {left}" if left else "")
        if alive(unshare):
            msg += f", unshare {unshare} still waiting for the node's processes to exit"
        if had_disk:  # the kernel drops the node's mount with its mount namespace
            gone = Path(f"/proc/fs/ext4/{Path(had_disk).name}")
            while gone.exists() and time.monotonic() - t0 < 5:
                time.sleep(0.02)
            msg += f", shared disk {'released' if not gone.exists() else 'STILL MOUNTED (superblock alive)'}"
    _set_links(node, "down")  # a powered-off machine does not answer on its addresses
    vip = attempt(["ip", "-n", node, "addr", "del", f"{CLUSTER_IP}/24", "dev", "eth0"]).returncode == 0
    return f"ok {node} off in {time.monotonic() - t0:.2f}s: {msg}; cluster IP {'removed' if vip else 'absent'}"


def on(node: str, *argv: str, timeout: float = 30.0, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``node`` (node1, node2, client, monitor) through lab/on.

    Never raises for the exit code (255 = the node is down); on timeout the command's whole
    process group is killed (inside the node too) and subprocess.TimeoutExpired is raised.
    """
    cmd = [str(ON), node, *argv]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(cmd, timeout, out, err) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
