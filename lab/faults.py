"""Faults the lab cluster can be given: a hung service (SIGSTOP/SIGCONT), a read-only spool, a node
crash, a cut interconnect and a full partition.

``signal_service`` runs inside a node (``python lab/cluster.py signal-service SVC SIG`` through
lab/on); everything else runs in the root namespaces.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

from lab import net, nodes
from lab.pdu import pdu_request
from lab.topology import CLUSTER_PY, NODES, SERVICE_PIDFILES, SHARED
from lab.util import LabError

FAULTS = ("hang-SERVICE", "unhang-SERVICE", "crash-SERVICE", "readonly-spool", "kill", "cut-interconnect",
          "heal-interconnect", "cut-all", "heal-all", "cut-monitor", "heal-monitor")


def signal_service(service: str, sig: str) -> int:
    """Send SIG to the master of ``service`` and all its descendants; runs inside a node."""
    try:
        master = int(Path(SERVICE_PIDFILES[service]).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        print(f"{service} is not running here (no pid file {SERVICE_PIDFILES[service]})", file=sys.stderr)
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
    number = getattr(signal, f"SIG{sig}")
    for pid in pids:  # the master first: a stopped master cannot respawn its children
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, number)
    print(" ".join(map(str, pids)))
    return 0


def _signal_service(node: str, service: str, sig: str) -> list[int]:
    if service not in SERVICE_PIDFILES:
        raise LabError(f"unknown service {service!r} (one of {', '.join(SERVICE_PIDFILES)})")
    res = nodes.on(node, sys.executable, str(CLUSTER_PY), "signal-service", service, sig)
    if res.returncode != 0:
        raise LabError(f"{sig} {service} on {node}: {(res.stderr or res.stdout).strip()}")
    return [int(pid) for pid in res.stdout.split()]


def hang(node: str, service: str) -> list[int]:
    """SIGSTOP every process of ``service`` (dovecot, slapd, postfix, nginx) in ``node``;
    return their PIDs (inside the node)."""
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
    # of e.g. Dovecot's dovecot-uidlist.lock makes SELECT hang for minutes on the next node
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
    if kind.startswith("crash-"):
        service = kind.removeprefix("crash-")
        return f"SIGKILL to {service}'s master on {node}: pid {crash(node, service)} (inside the node)"
    if kind == "readonly-spool":
        readonly_spool(node)
        return f"shared disk forced read-only on {node}"
    if kind == "kill":
        return kill_node(node)
    raise LabError(f"unknown fault {kind!r} (one of {', '.join(FAULTS)})")
