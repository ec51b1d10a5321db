"""The lab cluster's names, addresses and paths (one owner for every module of the cluster lab),
its phase log and the lock that serialises up/down/restore.

Everything lives under LAB_DIR (``$KOLABMON_LAB_DIR``, default /var/lib/kolabmon-lab): ``run/`` the
PIDs the lab started (``NAME.pid``: "pid starttime"), the namespaces it created and the loop device;
``nodes/`` per-node state; ``shared.img`` the shared disk; ``logs/`` (the lab's phase log, the
PDU's and fence agent's logs, each node's pacemaker/corosync/service logs; the run before is kept in
``logs.previous/``) and ``tls/`` are kept by ``down``, everything else removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAB_DIR = Path(os.environ.get("KOLABMON_LAB_DIR", "/var/lib/kolabmon-lab"))
ON = ROOT / "lab" / "on"
CLUSTER_PY = ROOT / "lab" / "cluster.py"  # the CLI: the PDU and the in-node helpers run through it
NODE_RUN = ROOT / "lab" / "cluster" / "node-run.sh"
FENCE_AGENT_SOURCE = ROOT / "lab" / "fence" / "fence_labns"
FENCE_AGENT = Path("/usr/sbin/fence_labns")  # where pacemaker-fenced looks for fence_* agents
# ocf:kolabmon:watcher, installed for the project's kolabmon-watch, and beside it the service agents
# (ocf:kolabmon:cyrus-imapd, saslauthd) as shipped; the nodes share the host's /usr
WATCHER_AGENT = Path("/usr/lib/ocf/resource.d/kolabmon/watcher")
WATCH_BINARY = ROOT / ".venv" / "bin" / "kolabmon-watch"

CLUSTER_NAME = "kolablab"
CLUSTER_IP = "10.99.0.100"
NODES = ("node1", "node2")
# corosync nodeid = the CIB <node id>: the two must agree, so both come from here
NODE_IDS = {node: i for i, node in enumerate(NODES, start=1)}
ADMIN_IPS = {"node1": "10.99.0.1", "node2": "10.99.0.2"}
INTERCONNECT_IPS = {"node1": "10.98.0.1", "node2": "10.98.0.2"}
CLIENT_IP = "10.99.0.10"
MONITOR_IP = "10.99.0.20"
LAN_IPS = {**ADMIN_IPS, "client": CLIENT_IP, "monitor": MONITOR_IP}
NAMESPACES = ("lan", "hb", "node1", "node2", "client", "monitor")
GROUP = "kolab"
GROUP_MEMBERS = ("fs", "vip", "ldap", "sasl", "imap", "smtp", "web")
FENCE_DEVICE = "fence-lab"
DEGRADED_ATTRIBUTE = "kolab-degraded"
# the per-node command prefix (docs/design.md) for kolabmon's configuration in the lab
NODE_COMMAND_PREFIX = f"{ON} {{node}}"
PORTS = {"imap": 143, "imaps": 993, "smtp": 25, "smtps": 465, "submission": 587, "ldap": 389,
         "ldaps": 636, "http": 80, "https": 443}

SHARED = LAB_DIR / "shared"    # mount point of the shared disk (mounted only inside the active node)
NODELOG = LAB_DIR / "nodelog"  # inside each node: a bind mount of logs/NODE/services
IMAGE = LAB_DIR / "shared.img"
IMAGE_SIZE = "256M"
RUN = LAB_DIR / "run"
LOGS = LAB_DIR / "logs"
PDU_SOCKET = LAB_DIR / "pdu.sock"

# services of the group: (Pacemaker resource, pid file of the master process inside the node)
SERVICE_PIDFILES = {
    "slapd": "/run/kolab-slapd/slapd.pid",
    "saslauthd": "/run/kolab-saslauthd/saslauthd.pid",
    "cyrus": "/run/kolab-cyrus/master.pid",
    "postfix": f"{SHARED}/postfix/spool/pid/master.pid",  # Postfix keeps it in its queue dir
    "nginx": "/run/kolab-nginx.pid",
}

# node-private runtime dirs of the group's Cyrus and saslauthd (Postfix delivers to Cyrus's LMTP socket)
CYRUS_RUN = Path("/run/kolab-cyrus")
SASL_RUN = Path("/run/kolab-saslauthd")
USER1 = "user1@example.org"
CERT_SAN = ",".join(["DNS:kolab.example.org", "DNS:localhost", f"IP:{CLUSTER_IP}",
                     *(f"IP:{ip}" for ip in ADMIN_IPS.values()), "IP:127.0.0.1"])

PHASE_T0 = [time.monotonic()]


def phase(msg: str) -> None:
    """Print one timestamped line of the lab's phase log (stderr and logs/lab.log)."""
    line = f"{time.strftime('%H:%M:%S')} {time.monotonic() - PHASE_T0[0]:6.2f}s {msg}"
    print(line, file=sys.stderr, flush=True)
    with contextlib.suppress(OSError):
        with (LOGS / "lab.log").open("a") as fh:
            fh.write(line + "\n")


def attempt(cmd: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``, never raising for its exit code."""
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, check=False)


@contextlib.contextmanager
def lab_lock() -> Iterator[None]:
    """Serialise up/down/restore between processes (an flock on LAB_DIR/lock)."""
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    with (LAB_DIR / "lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
