"""Faults the lab cluster can be given: a hung service (SIGSTOP/SIGCONT), Cyrus's own failure modes
(every imapd hung, the master alone hung, a lock held on its mailbox list), a read-only spool, a
node crash, a cut interconnect and a full partition.

``signal_service`` and ``hold_lock`` run inside a node (``python lab/cluster.py signal-service SVC
SIG`` / ``hold-lock PATH`` through lab/on); everything else runs in the root namespaces.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from lab import net, nodes
from lab.pdu import pdu_request
from lab.topology import CLUSTER_PY, NODES, ON, RUN, SERVICE_PIDFILES, SHARED
from lab.util import LabError, comm

FAULTS = ("hang-SERVICE", "unhang-SERVICE", "crash-SERVICE", "lock-mailboxes", "unlock-mailboxes",
          "readonly-spool", "kill", "cut-interconnect", "heal-interconnect", "cut-all", "heal-all",
          "cut-monitor", "heal-monitor")
# parts of a service that hang alone: (service, what of its processes)
PARTS = {"imapd": ("cyrus", "imapd"), "cyrus-master": ("cyrus", "master")}
SERVICES = (*SERVICE_PIDFILES, *PARTS)
# Cyrus's mailbox list; Cyrus locks it with fcntl (POSIX) locks, which flock(1) does not touch
MAILBOXES_DB = SHARED / "cyrus" / "config" / "mailboxes.db"
LOCK_HOLDER = RUN / "mailboxes-lock"  # "NODE PID" of the process holding it (PID inside the node)
_HOLDERS: list[subprocess.Popen[str]] = []  # their lab/on processes, reaped by unlock_mailboxes


def signal_service(service: str, sig: str) -> int:
    """Send SIG to ``service`` inside a node: its master and all its descendants, or a part of it
    (PARTS: every imapd, or Cyrus's master alone)."""
    name, part = PARTS.get(service, (service, ""))
    try:
        master = int(Path(SERVICE_PIDFILES[name]).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        print(f"{name} is not running here (no pid file {SERVICE_PIDFILES[name]})", file=sys.stderr)
        return 1
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := nodes.stat(int(entry.name))):
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    pids, todo = [], [master]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(parents.get(pid, []))
    if part == "master":
        pids = [master]
    elif part:
        pids = [pid for pid in pids if comm(pid) == part]
        if not pids:
            print(f"no {part} process of {name} runs here", file=sys.stderr)
            return 1
    number = getattr(signal, f"SIG{sig}")
    for pid in pids:  # the master first: a stopped master cannot respawn its children
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, number)
    print(" ".join(map(str, pids)))
    return 0


def _signal_service(node: str, service: str, sig: str) -> list[int]:
    if service not in SERVICES:
        raise LabError(f"unknown service {service!r} (one of {', '.join(SERVICES)})")
    res = nodes.on(node, sys.executable, str(CLUSTER_PY), "signal-service", service, sig)
    if res.returncode != 0:
        raise LabError(f"{sig} {service} on {node}: {(res.stderr or res.stdout).strip()}")
    return [int(pid) for pid in res.stdout.split()]


def hang(node: str, service: str) -> list[int]:
    """SIGSTOP every process of ``service`` (cyrus, saslauthd, slapd, postfix, nginx), or the part
    of Cyrus PARTS names (imapd, cyrus-master), in ``node``; return their PIDs (inside the node)."""
    return _signal_service(node, service, "STOP")


def unhang(node: str, service: str) -> list[int]:
    """SIGCONT every process of ``service`` in ``node``."""
    return _signal_service(node, service, "CONT")


def crash(node: str, service: str) -> int:
    """SIGKILL the master process of ``service`` alone, as a crash would: its children notice and
    exit, the port closes, and Pacemaker's next monitor finds it gone. Returns its PID (in the node)."""
    if service not in SERVICE_PIDFILES:
        raise LabError(f"unknown service {service!r} (one of {', '.join(SERVICE_PIDFILES)})")
    res = nodes.on(node, "cat", SERVICE_PIDFILES[service])
    words = res.stdout.split()
    if res.returncode != 0 or not words or not words[0].isdigit():
        raise LabError(f"crash {service} on {node}: no pid file ({res.stderr.strip()})")
    killed = nodes.on(node, "kill", "-KILL", words[0])
    if killed.returncode != 0:
        raise LabError(f"crash {service} on {node}: {killed.stderr.strip()}")
    return int(words[0])


def hold_lock(path: str) -> int:
    """Inside a node: take a POSIX write lock on ``path`` as Cyrus's own locking does, say
    "locked PID", and hold it until killed (or the node dies)."""
    try:
        fh = open(path, "r+b")  # noqa: SIM115 (held until the process dies)
        fcntl.lockf(fh, fcntl.LOCK_EX)
    except OSError as exc:
        print(f"hold-lock: {path}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"locked {os.getpid()}", flush=True)
    while True:
        time.sleep(3600)


def lock_mailboxes(node: str, timeout: float = 10.0) -> int:
    """Hold a write lock on Cyrus's mailbox list in ``node`` (as a stuck Cyrus process would): LOGIN
    still works, SELECT waits. Returns the holder's PID inside the node."""
    proc = subprocess.Popen([str(ON), node, sys.executable, str(CLUSTER_PY), "hold-lock", str(MAILBOXES_DB)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("locked "):
        with contextlib.suppress(ProcessLookupError):  # lab/on, nsenter and the holder: its own session
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        raise LabError(f"lock_mailboxes on {node}: no lock within {timeout:.0f} s: "
                       f"{line.strip() or (proc.stderr.read() if proc.poll() is not None and proc.stderr else '')}")
    _HOLDERS.append(proc)
    pid = int(line.split()[1])
    LOCK_HOLDER.write_text(f"{node} {pid}\n")
    return pid


def unlock_mailboxes() -> str:
    """Kill the lock holder lock_mailboxes started, if its node still runs; say what was done."""
    try:
        node, pid = LOCK_HOLDER.read_text().split()
    except (OSError, ValueError):
        return "no lock held"
    LOCK_HOLDER.unlink(missing_ok=True)
    # only if that PID is still the holder: a node restored since has other processes under it
    res = nodes.on(node, "sh", "-c", 'tr "\\000" " " < /proc/$1/cmdline | grep -q " hold-lock " && kill "$1"',
                   "sh", pid)
    for proc in _HOLDERS:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=5)
    _HOLDERS[:] = [proc for proc in _HOLDERS if proc.poll() is None]
    return f"lock holder {pid} on {node} killed" if res.returncode == 0 else f"lock holder {pid} on {node} gone"


def readonly_spool(node: str) -> None:
    """Make the kernel force the shared ext4 read-only on ``node`` (errors=remount-ro + an
    injected filesystem error), as a failing disk would."""
    res = nodes.on(node, "findmnt", "-n", "-o", "SOURCE", str(SHARED))
    device = res.stdout.strip()
    if res.returncode != 0 or not device:
        raise LabError(f"readonly_spool: the shared disk is not mounted on {node}")
    remount = nodes.on(node, "mount", "-o", "remount,errors=remount-ro", str(SHARED))
    if remount.returncode != 0:
        raise LabError(f"readonly_spool: remount on {node}: {remount.stderr.strip()}")
    # commit the journal first: the abort would drop the running transaction, and a lost unlink
    # of a lock file (Dovecot's dovecot-uidlist.lock did) can make SELECT hang on the next node
    nodes.on(node, "sync", "--file-system", str(SHARED))
    Path(f"/sys/fs/ext4/{Path(device).name}/trigger_fs_error").write_text("1\n")


def kill_node(node: str) -> str:
    """Power ``node`` off through the lab PDU (as a crash would; the cluster then fences it)."""
    answer = pdu_request(f"off {node}")
    if not answer.startswith("ok"):
        raise LabError(f"kill_node: {answer}")
    return answer


def cut_interconnect() -> None:
    """Take the interconnect (corosync link 0) down between the nodes; the LAN link holds."""
    net.set_interconnect("down")


def heal_interconnect() -> None:
    """Bring the interconnect back."""
    net.set_interconnect("up")


def cut_all() -> None:
    """Full partition: interconnect down and the nodes cut from each other on the LAN (both
    still reach the client and monitor). The fencing delay decides who survives."""
    cut_interconnect()
    net.isolate_on_lan(True)


def heal_all() -> None:
    """Undo cut_all."""
    net.isolate_on_lan(False)
    heal_interconnect()


def cut_monitor() -> None:
    """The monitoring host off the LAN: no Icinga check, handler or notification reaches the cluster."""
    net.set_lan_port("monitor", "down")


def heal_monitor() -> None:
    net.set_lan_port("monitor", "up")


def fault(kind: str, node: str | None) -> str:
    """Inject the fault ``kind`` (one of FAULTS) on ``node`` where it needs one; say what was done."""
    if kind == "unlock-mailboxes":
        return unlock_mailboxes()
    no_node = {"cut-interconnect": cut_interconnect, "heal-interconnect": heal_interconnect,
               "cut-all": cut_all, "heal-all": heal_all, "cut-monitor": cut_monitor, "heal-monitor": heal_monitor}
    if kind in no_node:
        no_node[kind]()
        return kind
    if node not in NODES:
        raise LabError(f"fault {kind}: give the node (node1 or node2)")
    if kind.startswith(("hang-", "unhang-")):
        action, service = kind.split("-", 1)
        pids = (hang if action == "hang" else unhang)(node, service)
        return f"{action} {service} on {node}: pids {' '.join(map(str, pids))} (inside the node)"
    if kind == "lock-mailboxes":
        return f"{MAILBOXES_DB} locked on {node} by pid {lock_mailboxes(node)} (inside the node)"
    if kind.startswith("crash-"):
        service = kind.removeprefix("crash-")
        return f"SIGKILL to {service}'s master on {node}: pid {crash(node, service)} (inside the node)"
    if kind == "readonly-spool":
        readonly_spool(node)
        return f"shared disk forced read-only on {node}"
    if kind == "kill":
        return kill_node(node)
    raise LabError(f"unknown fault {kind!r} (one of {', '.join(FAULTS)})")
