"""The two-node Kolab cluster lab: Pacemaker/Corosync in network namespaces on one machine.

Machines (network namespaces; nothing of the root namespace's network is touched, and nothing is
ever sent to a lab address from the root namespace):

    lan      bridge br0, the client LAN 10.99.0.0/24: node1 .1, node2 .2, client .10, monitor .20,
             cluster IP 10.99.0.100 (held by the active node, moved by IPaddr2 with gratuitous ARP)
    hb       bridge br1, the private interconnect 10.98.0.0/24: node1 .1, node2 .2 (their eth1)
    node1/2  cluster nodes: each runs as PID 1 (lab/cluster/node-run.sh) of its own pid, mount,
             uts and ipc namespaces inside its netns, with a private /run and /dev/shm and per-node
             /var/lib/pacemaker, /var/lib/corosync, /etc/corosync, /etc/postfix, logs
    client   a mail user's machine; monitor: the monitoring host (Icinga) on the client LAN

The parts, one owner each: lab/topology.py (names, addresses, paths, the state under LAB_DIR),
lab/net.py (namespaces, bridges, links), lab/disk.py (the shared disk and its seed, the
certificates), lab/pcmk.py (corosync.conf, the CIB, reading crm_mon), lab/pdu.py (the lab PDU and
the fence agent), lab/nodes.py (node processes, power on/off, running a command in a machine),
lab/faults.py (hang, read-only spool, kill, cuts), lab/client_check.py (the client's service check),
lab/build.py (building and removing them on the host). This module holds the Cluster handle,
up/down and the CLI, and keeps the names callers import from it.

Python API (tests, the demo, kolabmon's lab configuration): ``up()`` -> ``Cluster``, ``down()``,
``leftovers()``, ``shared_cluster()`` (the pytest fixture: several test sessions share one cluster,
the last one tears it down; a cluster started from the CLI is held by nobody), ``heal()``, the
constants (CLUSTER_IP, NODES, ADMIN_IPS, INTERCONNECT_IPS, GROUP, SHARED, ON, ...), and Cluster's
commands (``on``, ``client``, ``monitor``, ``crm``), state (``status``: kolabmon's reading of
crm_mon, ``active_node``, ``wait_for``, ``wait_group``, ``wait_idle``, ``wait_ready``), ``restore``
and the faults.

CLI (as root; run with the project's venv python)::

    python lab/cluster.py up [--timeout S]       # idempotent; ends with a bounded readiness wait
    python lab/cluster.py down                   # stops exactly the recorded PIDs, removes the rest
    python lab/cluster.py status
    python lab/cluster.py restore NODE           # power a fenced/killed node on, as the passive node
    python lab/cluster.py fault KIND [NODE]      # hang-SVC|unhang-SVC NODE (SVC: cyrus, imapd,
                                                 # cyrus-master, saslauthd, slapd, postfix, nginx),
                                                 # crash-SVC NODE, lock-mailboxes NODE, unlock-mailboxes,
                                                 # readonly-spool NODE, kill NODE,
                                                 # cut-interconnect, heal-interconnect, cut-all, heal-all,
                                                 # cut-monitor, heal-monitor
    lab/on NODE CMD...                           # run CMD in node1|node2|client|monitor

Internal subcommands: ``pdu`` (the lab PDU daemon), ``client-check`` (in the client netns),
``signal-service SVC SIG``, ``hold-lock PATH`` and ``seed-mail`` (inside a node).

Debian 12 and 13: what differs between them is in lab/release.py; lab/pcmk.py notes why the rest
needs nothing per release.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TypeVar

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kolabmon import pacemaker  # noqa: E402
from lab import build, disk, faults, net, nodes, pcmk, pdu, tls, watcher  # noqa: E402
from lab.build import leftovers  # noqa: E402, F401
from lab.client_check import client_check  # noqa: E402
from lab.disk import make_certs  # noqa: E402, F401
from lab.nodes import node_pid1  # noqa: E402, F401
from lab.pcmk import group_node, online_nodes  # noqa: E402, F401
from lab.topology import (  # noqa: E402, F401
    ADMIN_IPS,
    CLIENT_IP,
    CLUSTER_IP,
    CLUSTER_NAME,
    CLUSTER_PY,
    DEGRADED_ATTRIBUTE,
    FENCE_AGENT,
    FENCE_DEVICE,
    GROUP,
    GROUP_MEMBERS,
    IMAGE,
    INTERCONNECT_IPS,
    LAB_DIR,
    MONITOR_IP,
    NAMESPACES,
    NODE_COMMAND_PREFIX,
    NODES,
    ON,
    PHASE_T0,
    PORTS,
    SHARED,
    lab_lock,
    phase,
)
from lab.util import LabError  # noqa: E402

T = TypeVar("T")


class Cluster:
    """Handle on the running lab cluster (stateless: everything is looked up when asked)."""

    def __init__(self, bringup_seconds: float | None = None) -> None:
        self.bringup_seconds = bringup_seconds  # set by up() when it built the cluster

    @functools.cached_property
    def certs(self) -> tls.Certs:
        """The lab CA (``.ca``) and the services' certificate (cluster IP and node IPs in the SANs)."""
        return make_certs()

    # -- running commands ------------------------------------------------------------------------

    on = staticmethod(nodes.on)

    def client(self, *argv: str, timeout: float = 30.0, input: str | None = None
               ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on the client machine (the client netns on the LAN)."""
        return self.on("client", *argv, timeout=timeout, input=input)

    def monitor(self, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on the monitoring host (the monitor netns on the LAN)."""
        return self.on("monitor", *argv, timeout=timeout)

    def running_nodes(self) -> list[str]:
        """Nodes that are powered on (their namespace PID 1 runs)."""
        return [node for node in NODES if node_pid1(node)]

    def crm(self, *argv: str, node: str | None = None, timeout: float = 30.0
            ) -> subprocess.CompletedProcess[str]:
        """Run a cluster command on ``node`` or else on the first running node that answers."""
        candidates = [node] if node else self.running_nodes()
        res: subprocess.CompletedProcess[str] | None = None
        for name in candidates:
            res = self.on(name, *argv, timeout=timeout)
            if res.returncode == 0:
                return res
        if res is None:
            raise LabError(f"{argv[0]}: no lab node is running")
        return res

    def status(self, node: str | None = None, timeout: float = 15.0) -> pacemaker.Status:
        """crm_mon's XML from ``node`` (default: the first node that answers), read by kolabmon."""
        res = self.crm(*pacemaker.CRM_MON, node=node, timeout=timeout)
        if res.returncode != 0:
            raise LabError(f"crm_mon: exited {res.returncode}: {(res.stderr or res.stdout).strip()[-300:]}")
        return pcmk.read_status(res.stdout)

    def active_node(self) -> str | None:
        """The node where the whole group is Started (from crm_mon XML), or None."""
        try:
            return group_node(self.status())
        except LabError:
            return None
    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait until the cluster has no transition in flight (crm_resource --wait)."""
        res = self.crm("crm_resource", "--wait", f"--timeout={int(timeout)}s", timeout=timeout + 10)
        if res.returncode != 0:
            raise LabError(f"crm_resource --wait: exited {res.returncode}: {res.stderr.strip()[-300:]}"
                           f" [{pcmk.pcmk_tail()}]")

    def wait_for(self, what: str, check: Callable[[pacemaker.Status], T | None], timeout: float = 60.0,
                 node: str | None = None) -> T:
        """Poll crm_mon's XML (from ``node``, else any running node) until ``check`` returns a
        truthy value, and return it; LabError names ``what`` with the last state seen."""
        deadline = time.monotonic() + timeout
        seen = "no answer"
        while True:
            try:
                status = self.status(node=node, timeout=10)
                seen = pcmk.describe(status)
                result = check(status)
                if result:
                    return result
            except (LabError, subprocess.TimeoutExpired) as exc:
                seen = str(exc)
            if time.monotonic() > deadline:
                raise LabError(f"{what}: not reached within {timeout:.0f} s: {seen} [{pcmk.pcmk_tail()}]")
            time.sleep(0.2)

    def wait_group(self, timeout: float = 60.0, not_on: str | None = None) -> str:
        """Wait until the group is Started on one node (other than ``not_on``); return that node."""
        return self.wait_for(f"group {GROUP} started" + (f" off {not_on}" if not_on else ""),
                             lambda s: node if (node := group_node(s)) != not_on else None, timeout)

    def wait_fencing_ready(self, nodes: tuple[str, ...] = NODES, timeout: float = 30.0) -> None:
        """Wait until the fence device is registered with the fencer of each of ``nodes``
        (`stonith_admin --list-registered` there); LabError names the node that lacks it."""
        deadline = time.monotonic() + timeout
        for node in nodes:
            while True:
                res = self.on(node, "stonith_admin", "--list-registered", timeout=10)
                if res.returncode == 0 and FENCE_DEVICE in res.stdout.split():
                    break
                if time.monotonic() > deadline:
                    raise LabError(f"fencing: {FENCE_DEVICE} not registered on {node} within {timeout:.0f} s "
                                   f"(stonith_admin --list-registered: {(res.stdout + res.stderr).strip()[-200:]!r})"
                                   f" [{pcmk.pcmk_tail()}]")
                time.sleep(0.3)

    def check_services(self, timeout: float = 5.0) -> subprocess.CompletedProcess[str]:
        """IMAP, SMTP, LDAP and HTTP on the cluster IP, checked from the client (rc 0: all answer)."""
        return self.client(sys.executable, str(CLUSTER_PY), "client-check",
                           timeout=timeout * 4 + 10)

    def wait_ready(self, timeout: float = 60.0, nodes: int = 1) -> float:
        """Wait until quorate, ``nodes`` nodes online, the group Started on one node and its services
        answer on the cluster IP from the client. Return the seconds waited; LabError names the step."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        step, seen = "a node answers crm_mon", "no node running"
        while True:
            try:
                status = self.status(timeout=10)
                seen = pcmk.describe(status)
                step = "quorum and a DC"
                if status.dc is not None and status.quorate:
                    step = f"{nodes} node(s) online"
                    if len(online_nodes(status)) >= nodes:
                        step = f"group {GROUP} started on one node"
                        if group_node(status):
                            step = "services answer on the cluster IP from the client"
                            check = self.check_services()
                            seen = " | ".join((check.stdout + check.stderr).split("\n")).strip(" |")
                            if check.returncode == 0:
                                return time.monotonic() - t0
            except (LabError, subprocess.TimeoutExpired) as exc:
                seen = str(exc)
            if time.monotonic() > deadline:
                raise LabError(f"wait_ready: step '{step}' not reached within {timeout:.0f} s: {seen[-500:]}"
                               f" [{pcmk.pcmk_tail()}]")
            time.sleep(0.3)

    def fenced_at(self, node: str) -> float | None:
        """When the cluster last fenced ``node`` successfully (epoch), from crm_mon's fence history."""
        try:
            last = pacemaker.last_fence(self.status(), node)
        except LabError:
            return None
        return last[0] if last else None

    # -- nodes -----------------------------------------------------------------------------------

    def restore(self, node: str, timeout: float = 60.0) -> float:
        """Power a fenced/killed ``node`` on and wait until it is online (as the passive node) and
        the cluster is idle; return the seconds it took (0 if it was running)."""
        if node not in NODES:
            raise LabError(f"restore: unknown node {node!r}")
        with lab_lock():
            return self._restore(node, timeout)

    def _restore(self, node: str, timeout: float) -> float:
        t0 = time.monotonic()
        deadline = t0 + timeout
        if node_pid1(node):
            return 0.0
        peers = [n for n in self.running_nodes() if n != node]
        if peers:
            # A node must not come back before the cluster has seen it gone and fenced it: the
            # fencing would kill the new instance (or it hears it was fenced and stops for good).
            self.wait_for(f"restore: {node} offline and fenced", lambda s: (
                (n := s.node(node)) is not None and not n.online and not n.unclean),
                deadline - time.monotonic(), node=peers[0])
        pdu.start_pdu()
        answer = pdu.pdu_request(f"on {node}")
        if not answer.startswith("ok"):
            raise LabError(f"restore: PDU could not power {node} on: {answer}")
        self.wait_for(f"restore: {node} online", lambda s: (n := s.node(node)) is not None and n.online,
                      max(1.0, deadline - time.monotonic()))
        self.wait_idle(max(5.0, deadline - time.monotonic()))
        if not node_pid1(node):
            raise LabError(f"restore: {node} went down again while joining [{pcmk.pcmk_tail()}]")
        self.wait_fencing_ready((node,), max(5.0, deadline - time.monotonic()))
        return time.monotonic() - t0

    # -- faults (lab/faults.py) ---------------------------------------------------------------

    kill_node = staticmethod(faults.kill_node)
    hang = staticmethod(faults.hang)
    unhang = staticmethod(faults.unhang)
    readonly_spool = staticmethod(faults.readonly_spool)
    lock_mailboxes = staticmethod(faults.lock_mailboxes)
    unlock_mailboxes = staticmethod(faults.unlock_mailboxes)
    crash = staticmethod(faults.crash)
    cut_monitor = staticmethod(faults.cut_monitor)
    heal_monitor = staticmethod(faults.heal_monitor)
    cut_interconnect = staticmethod(faults.cut_interconnect)
    heal_interconnect = staticmethod(faults.heal_interconnect)
    cut_all = staticmethod(faults.cut_all)
    heal_all = staticmethod(faults.heal_all)



def heal(cluster: Cluster, keep_watcher: bool = False) -> None:
    """Back to two healthy nodes, no marks, no failures, no held mailbox lock, no kolabmon lock,
    cool-down or watcher (unless `keep_watcher`); the group wherever it runs."""
    faults.unlock_mailboxes()
    for node in NODES:
        if not node_pid1(node):
            cluster.restore(node, timeout=90)
    if not keep_watcher:
        watcher.disable(cluster)
    watcher.forget_takeovers(cluster)
    for node in NODES:
        cluster.crm("crm_attribute", "-N", node, "-n", DEGRADED_ATTRIBUTE, "-D", "-l", "reboot")
    cluster.crm("crm_resource", "--cleanup")
    cluster.wait_ready(timeout=120, nodes=2)


# ---------------------------------------------------------------------------------------------
# bring-up and teardown


def up(timeout: float = 120.0) -> Cluster:
    """Bring the cluster up (idempotent: if it is up, power on missing nodes and verify) and wait,
    bounded by ``timeout``, until it is ready (see Cluster.wait_ready). Prints a phase log.

    On failure the half-built lab is torn down again (logs stay in LAB_DIR/logs) and LabError
    names the failing step.
    """
    PHASE_T0[0] = time.monotonic()
    with lab_lock():
        if build.is_up():
            phase("already up: verifying")
            cluster = Cluster()
            deadline = time.monotonic() + timeout
            for node in NODES:
                if not node_pid1(node):
                    phase(f"{node} is off: restoring it")
                    cluster._restore(node, timeout)
            cluster.wait_ready(max(1.0, deadline - time.monotonic()), nodes=len(NODES))
            phase(f"ready, group on {cluster.active_node()}")
            return cluster
        build.check_host()
        if build.has_leftovers():
            phase("leftovers of an earlier lab: tearing them down first")
            _down_locked()
        try:
            return _bring_up(timeout)
        except BaseException as exc:
            phase(f"bring-up failed: {exc}; tearing down")
            with contextlib.suppress(Exception):
                _down_locked()
            raise


def _bring_up(timeout: float) -> Cluster:
    t0 = time.monotonic()
    build.build()
    cluster = Cluster()
    deadline = t0 + timeout
    steps: list[tuple[str, Callable[[pacemaker.Status], bool]]] = [
        ("quorum and a DC", lambda s: s.dc is not None and s.quorate),
        ("both nodes online", lambda s: len(online_nodes(s)) == len(NODES))]
    for step, done in steps:
        cluster.wait_for(f"up: {step}", done, max(1.0, deadline - time.monotonic()))
        phase(f"{step}: {pcmk.describe(cluster.status())}")
    cluster.wait_fencing_ready(timeout=max(1.0, deadline - time.monotonic()))
    phase(f"fence device {FENCE_DEVICE} registered on {' and '.join(NODES)}")
    node = cluster.wait_group(max(1.0, deadline - time.monotonic()))
    phase(f"group {GROUP} started on {node}")
    seeded = cluster.on(node, sys.executable, str(CLUSTER_PY), "seed-mail", timeout=60)
    if seeded.returncode != 0:
        raise LabError(f"seed mail on {node}: {(seeded.stderr or seeded.stdout).strip()[-300:]}")
    phase(f"Cyrus: {seeded.stdout.strip()}")
    cluster.wait_ready(max(1.0, deadline - time.monotonic()), nodes=len(NODES))
    cluster.bringup_seconds = time.monotonic() - t0
    phase(f"ready: IMAP/SMTP/LDAP/HTTP answer on {CLUSTER_IP} from the client; "
          f"bring-up took {cluster.bringup_seconds:.1f} s")
    return cluster


def down() -> float:
    """Tear the lab down: stop the recorded PIDs, remove the loop device, namespaces, fence agent
    and state (keeping logs/ and tls/). Works on a half-built lab or with nodes fenced.
    Return the seconds it took."""
    PHASE_T0[0] = time.monotonic()
    with lab_lock():
        return _down_locked()


def _down_locked() -> float:
    t0 = time.monotonic()
    cluster = Cluster()
    running = {node: pid1 for node in NODES if (pid1 := node_pid1(node))}
    if running:
        # stop the group first, so that a node shutting down does not hand it to the other one
        # (the fence device stays: a failed stop still gets its node fenced)
        try:
            res = cluster.crm("crm_resource", "--resource", GROUP, "--meta", "--set-parameter",
                              "target-role", "--parameter-value", "Stopped", timeout=15)
            if res.returncode == 0:
                cluster.wait_idle(40)
                phase(f"group {GROUP} stopped")
        except (LabError, subprocess.TimeoutExpired) as exc:
            phase(f"stopping group {GROUP} failed ({exc}); stopping the nodes anyway")
    build.stop_nodes(running)
    build.remove()
    took = time.monotonic() - t0
    phase(f"down: took {took:.1f} s")
    return took


# ---------------------------------------------------------------------------------------------
# sharing one cluster between test sessions


_HOLD: list[IO[str]] = []


@contextlib.contextmanager
def shared_cluster(timeout: float = 120.0) -> Iterator[Cluster]:
    """up(), hold the cluster (a shared flock) while the block runs, then down() unless another
    process still holds it (a concurrent test session keeps it; the last one tears it down)."""
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    fh = (LAB_DIR / "holders").open("a")
    fcntl.flock(fh, fcntl.LOCK_SH)
    _HOLD.append(fh)
    try:
        yield up(timeout)
    finally:
        _HOLD.remove(fh)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            phase("cluster still used by another process: left up")
        else:
            down()
        finally:
            fh.close()


def sole_holder() -> bool:
    """True if no other process holds the cluster (see shared_cluster)."""
    for fh in _HOLD:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(fh, fcntl.LOCK_SH)
            return False
        fcntl.flock(fh, fcntl.LOCK_SH)
    return True


# ---------------------------------------------------------------------------------------------
# CLI


def _status_text() -> str:
    lines = [f"lab dir {LAB_DIR}: {'up' if build.is_up() else 'not up'}"]
    lines += [f"  {name}: pid {nodes.recorded(name) or '-'}" for name in ("pdu", *NODES)]
    lines.append(f"  loop devices: {' '.join(disk.loop_devices()) or '-'}")
    lines.append(f"  namespaces: {' '.join(sorted(net.lab_namespaces())) or '-'}")
    cluster = Cluster()
    if cluster.running_nodes():
        res = cluster.crm("crm_mon", "-1", "--include=fencing")
        lines.append(res.stdout.rstrip() or res.stderr.rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    usage = ("usage: cluster.py up [--timeout S] | down | status | restore NODE | fault KIND [NODE]\n"
             f"  fault kinds: {', '.join(faults.FAULTS)}")
    if not args:
        print(usage, file=sys.stderr)
        return 2
    cmd, rest = args[0], args[1:]
    try:
        if cmd == "up":
            timeout = float(rest[1]) if rest[:1] == ["--timeout"] and len(rest) > 1 else 120.0
            cluster = up(timeout)
            print(f"up: group {GROUP} on {cluster.active_node()}, cluster IP {CLUSTER_IP}")
        elif cmd == "down":
            down()
            left = leftovers()
            if left:
                print("left behind: " + ", ".join(left), file=sys.stderr)
                return 1
        elif cmd == "status":
            print(_status_text())
        elif cmd == "restore" and len(rest) == 1:
            took = Cluster().restore(rest[0])
            print(f"{rest[0]} online as the passive node ({took:.1f} s)" if took else f"{rest[0]} is running")
        elif cmd == "fault" and len(rest) in (1, 2):
            print(faults.fault(rest[0], rest[1] if len(rest) == 2 else None))
        elif cmd == "pdu":
            pdu.serve_pdu()
        elif cmd == "client-check":
            return client_check()
        elif cmd == "signal-service" and len(rest) == 2:
            return faults.signal_service(rest[0], rest[1])
        elif cmd == "hold-lock" and len(rest) == 1:
            return faults.hold_lock(rest[0])
        elif cmd == "seed-mail":
            print(disk.seed_mail())
        else:
            print(usage, file=sys.stderr)
            return 2
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
