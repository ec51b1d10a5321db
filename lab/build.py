"""Building and removing the lab cluster's pieces on the host: the preflight, state directories,
certificates, network, shared disk, per-node directories, fence agent, PDU and kolabmon's resource
agent, the nodes' power, and what is left of them. lab/cluster.py orders these and waits for the
cluster in between.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from kolabmon import ocf
from lab import cyrus, disk, net, nodes, pcmk, pdu, release
from lab.topology import (
    FENCE_AGENT,
    IMAGE,
    IMAGE_SIZE,
    LAB_DIR,
    LOGS,
    NAMESPACES,
    NODELOG,
    NODES,
    PDU_SOCKET,
    RUN,
    SHARED,
    WATCH_BINARY,
    WATCHER_AGENT,
    attempt,
    phase,
)
from lab.util import LabError, fresh_dir, make_traversable


def is_up() -> bool:
    """The lab is built: all its namespaces, its loop device and the PDU are there."""
    return (set(net.recorded_namespaces()) == set(NAMESPACES) and net.lab_namespaces() == set(NAMESPACES)
            and bool(disk.loop_devices()) and nodes.recorded("pdu") is not None)


def has_leftovers() -> bool:
    """Something of an earlier lab is recorded (namespaces, loop device or PDU)."""
    return bool(net.recorded_namespaces() or disk.loop_devices() or nodes.recorded("pdu"))


def check_host() -> None:
    """Refuse to start without root, a tool or resource agent, or with foreign lab-named namespaces."""
    if os.geteuid() != 0:
        raise LabError("preflight: the cluster lab needs root (namespaces, loop devices, mounts)")
    tools = ["ip", "bridge", "unshare", "nsenter", "losetup", "mkfs.ext4", "corosync", "pacemakerd",
             "crm_mon", "cibadmin", "crm_verify", "modprobe", "saslauthd", "slapd", "slapadd", "postconf",
             "nginx", "htpasswd", "ldapsearch"]
    missing = [tool for tool in tools if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    agents = Path("/usr/lib/ocf/resource.d/heartbeat")
    missing += [f"ocf:heartbeat:{ra}" for ra in ("Filesystem", "IPaddr2", "slapd", "postfix", "nginx")
                if not (agents / ra).exists()]
    missing += [str(path) for path in (cyrus.MASTER, cyrus.IMAPD) if not path.exists()]
    if missing:
        raise LabError(f"preflight: missing {', '.join(missing)}: run lab/setup.sh (lab/packages.txt)")
    foreign = net.lab_namespaces() - set(net.recorded_namespaces())
    if foreign:
        raise LabError(f"preflight: network namespace(s) {' '.join(sorted(foreign))} exist but were not "
                       "made by the lab (ip netns list); not touching them")


def build() -> None:
    """Everything up to powered-on nodes: state, certificates, network, shared disk, node
    directories with corosync.conf and the CIB, fence agent, PDU, ocf:kolabmon:watcher; then power
    both nodes on."""
    if LOGS.exists():  # keep the previous run's logs for a post-mortem
        shutil.rmtree(LAB_DIR / "logs.previous", ignore_errors=True)
        LOGS.rename(LAB_DIR / "logs.previous")
    LOGS.mkdir(parents=True)
    fresh_dir(RUN)
    make_traversable(LAB_DIR)
    phase(f"lab dir {LAB_DIR}; {release.describe()}, Pacemaker {'.'.join(map(str, pcmk.pacemaker_version()))}, "
          f"Cyrus IMAP {cyrus.cyrus_version()}")
    certs = disk.make_certs()
    phase("certificates ready")
    net.make_network()
    phase(f"network: namespaces {' '.join(NAMESPACES)}, LAN br0 + interconnect br1")
    loopdev = disk.make_shared_disk(certs)
    phase(f"shared disk: {IMAGE} ({IMAGE_SIZE}) on {loopdev}, configs + data seeded")
    pcmk.make_node_dirs(pcmk.make_cib(loopdev))
    phase("node directories, corosync.conf and the CIB written (crm_verify OK)")
    pdu.install_fence_agent()
    pid = pdu.start_pdu()
    phase(f"fence agent {FENCE_AGENT} installed; lab PDU pid {pid}")
    install_agents()
    names = ", ".join(ocf.SERVICE_AGENTS)
    phase(f"resource agents {WATCHER_AGENT} (for {WATCH_BINARY}), {names} installed")
    for node in NODES:
        answer = pdu.pdu_request(f"on {node}")
        if not answer.startswith("ok"):
            raise LabError(f"power on {node}: {answer}")
    phase("nodes powered on: " + ", ".join(f"{n} unshare {nodes.recorded(n)}" for n in NODES))


def install_agents() -> None:
    """ocf:kolabmon:watcher for the project's kolabmon-watch and the service agents, as shipped."""
    ocf.install(WATCHER_AGENT.parent, str(WATCH_BINARY))
    for name in ocf.SERVICE_AGENTS:
        ocf.install_service_agent(name, WATCHER_AGENT.parent)


def agent_paths() -> list[Path]:
    """Where the lab installs ocf:kolabmon:watcher and, beside it, the service agents."""
    return [WATCHER_AGENT, *(WATCHER_AGENT.with_name(name) for name in ocf.SERVICE_AGENTS)]


def remove_agents() -> None:
    """Remove ocf:kolabmon:watcher and the service agents where they are the lab's copies (another is
    left and reported), and their provider directory once empty."""
    texts = [ocf.agent_text(str(WATCH_BINARY)), *(ocf.service_agent_text(name) for name in ocf.SERVICE_AGENTS)]
    for agent, text in zip(agent_paths(), texts, strict=True):
        if not agent.exists():
            continue
        if agent.read_text() == text:
            agent.unlink()
        else:
            phase(f"WARNING {agent} is not the lab's copy: left in place")
    with contextlib.suppress(OSError):  # not there, or not empty
        WATCHER_AGENT.parent.rmdir()


def stop_nodes(running: dict[str, int]) -> None:
    """SIGTERM each node's PID 1 (node-run.sh stops pacemakerd, then corosync); SIGKILL after 20 s."""
    for pid1 in running.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid1, signal.SIGTERM)
    if running:
        phase(f"SIGTERM to PID 1 of {', '.join(running)}")
    unshares = [pid for pid in (nodes.recorded(node) for node in NODES) if pid]
    deadline = time.monotonic() + 20
    while unshares and time.monotonic() < deadline:
        time.sleep(0.05)
        unshares = [pid for pid in unshares if nodes.alive(pid)]
    if unshares:
        pid1s = [p for p in (nodes.node_pid1(n) for n in NODES) if p]
        nodes.stop_pids(pid1s or unshares, signal.SIGKILL, 10)
        phase(f"nodes did not stop in 20 s: SIGKILL {pid1s or unshares}")
    elif running:
        phase("nodes stopped")


def remove() -> None:
    """Stop the PDU, remove the fence agent, ocf:kolabmon:watcher, loop device, namespaces and state
    (keeping logs/ and tls/). The nodes must be stopped."""
    pid = nodes.recorded("pdu")
    if pid:
        if nodes.stop_pids([pid], signal.SIGTERM, 5):
            nodes.stop_pids([pid], signal.SIGKILL, 5)
        phase(f"lab PDU {pid} stopped")
    for proc in list(nodes.CHILDREN.values()):
        proc.poll()
    PDU_SOCKET.unlink(missing_ok=True)
    pdu.remove_fence_agent()
    remove_agents()
    for device in disk.loop_devices():
        attempt(["losetup", "--detach", device])
    deadline = time.monotonic() + 10
    while disk.loop_devices() and time.monotonic() < deadline:  # busy until the last mount ns is gone
        time.sleep(0.05)
    if disk.loop_devices():
        phase(f"WARNING loop device(s) {' '.join(disk.loop_devices())} still attached")
    recorded = net.recorded_namespaces()
    for ns in recorded:
        if ns not in net.netns_list():
            continue
        left = attempt(["ip", "netns", "pids", ns]).stdout.split()
        if left:
            phase(f"WARNING processes the lab did not record are left in netns {ns}: {' '.join(left)}")
        attempt(["ip", "netns", "delete", ns])
    if recorded:
        phase(f"namespaces {' '.join(recorded)} deleted")
    for path in (RUN, LAB_DIR / "nodes", LAB_DIR / "seed", LAB_DIR / "seed-scratch"):
        shutil.rmtree(path, ignore_errors=True)
    for mountpoint in (SHARED, NODELOG):  # empty mount points here; never rmtree what may be mounted
        with contextlib.suppress(OSError):
            mountpoint.rmdir()
    IMAGE.unlink(missing_ok=True)


def leftovers() -> list[str]:
    """What of the lab still exists on the host (empty after a clean down)."""
    found = [f"netns {ns}" for ns in sorted(net.lab_namespaces())]
    found += [f"loop device {dev}" for dev in disk.loop_devices()]
    mounts = Path("/proc/mounts").read_text()
    found += [f"mount {line.split()[1]}" for line in mounts.splitlines() if str(LAB_DIR) in line]
    found += [f"pid {name} {pid}" for name in ("pdu", *NODES) if (pid := nodes.recorded(name))]
    found += [f"file {agent}" for agent in (FENCE_AGENT, *agent_paths()) if agent.exists()]
    return found
