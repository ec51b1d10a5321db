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

Corosync runs two knet links, link 0 on the interconnect (preferred) and link 1 on the LAN.
Pacemaker runs the stonith device ``fence-lab`` and one group ``kolab`` of stock resource agents:
Filesystem (a loop-device ext4, the shared storage) -> IPaddr2 -> slapd -> dovecot -> postfix ->
nginx (free/busy). Configs and data live on the shared storage, pid files and sockets in the
node's private /run, logs in the node's own log directory.

Fencing: ``fence_labns`` (lab/fence/, installed as /usr/sbin/fence_labns while the lab is up) asks
the lab PDU, a small daemon in the root namespaces (``python lab/cluster.py pdu``, started by up),
to power a node off: SIGKILL the node's namespace PID 1 (every process of the node dies, its mount
namespace and so the ext4 mount go with it), take its links down and drop the cluster IP from its
netns. The PDU also powers nodes on (up, restore, a fence "reboot").

The admin's one-time setup that kolabmon's takeover relies on is part of the configuration
(in crm shell terms)::

    crm configure property stonith-enabled=true stonith-action=off
    crm configure rsc_defaults resource-stickiness=100
    crm configure location kolab-avoid-degraded kolab rule -inf: kolab-degraded eq true

so ``crm_attribute -N NODE -n kolab-degraded -v true -l reboot`` moves the group off NODE, and
the attribute disappears when the node restarts or is fenced.

State: everything lives under LAB_DIR (``$KOLABMON_LAB_DIR``, default /var/lib/kolabmon-lab):
``run/`` the PIDs the lab started (``NAME.pid``: "pid starttime"), the namespaces it created and
the loop device; ``nodes/`` per-node state; ``shared.img`` the shared disk; ``logs/`` (the lab's
phase log, the PDU's and fence agent's logs, each node's pacemaker/corosync/service logs; the run
before is kept in ``logs.previous/``) and ``tls/`` are kept by ``down``, everything else removed.

Python API (tests, the demo, kolabmon's lab configuration): ``up()`` -> ``Cluster``, ``down()``,
``leftovers()``, ``shared_cluster()`` (the pytest fixture: several test sessions share one cluster,
the last one tears it down; a cluster started from the CLI is held by nobody), the constants
below (CLUSTER_IP, NODES, ADMIN_IPS, INTERCONNECT_IPS, GROUP, SHARED, ON, ...), and Cluster's
commands (``on``, ``client``, ``monitor``, ``crm``), state (``status``, ``active_node``,
``wait_for``, ``wait_group``, ``wait_idle``, ``wait_ready``), ``restore`` and the faults.

CLI (as root; run with the project's venv python)::

    python lab/cluster.py up [--timeout S]       # idempotent; ends with a bounded readiness wait
    python lab/cluster.py down                   # stops exactly the recorded PIDs, removes the rest
    python lab/cluster.py status
    python lab/cluster.py restore NODE           # power a fenced/killed node on, as the passive node
    python lab/cluster.py fault KIND [NODE]      # hang-SVC|unhang-SVC NODE (SVC: dovecot, slapd,
                                                 # postfix, nginx), readonly-spool NODE, kill NODE,
                                                 # cut-interconnect, heal-interconnect, cut-all, heal-all
    lab/on NODE CMD...                           # run CMD in node1|node2|client|monitor

Debian 12 and 13: what differs between them is in lab/release.py; the notes below say why the
rest needs nothing per release.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import fcntl
import functools
import imaplib
import os
import shutil
import signal
import smtplib
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import IO, TypeVar
from xml.sax.saxutils import quoteattr

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lab import release, servers  # noqa: E402
from lab.servers import LabError  # noqa: E402

T = TypeVar("T")

LAB_DIR = Path(os.environ.get("KOLABMON_LAB_DIR", "/var/lib/kolabmon-lab"))
ON = ROOT / "lab" / "on"
NODE_RUN = ROOT / "lab" / "cluster" / "node-run.sh"
FENCE_AGENT_SOURCE = ROOT / "lab" / "fence" / "fence_labns"
FENCE_AGENT = Path("/usr/sbin/fence_labns")  # where pacemaker-fenced looks for fence_* agents

CLUSTER_NAME = "kolablab"
CLUSTER_IP = "10.99.0.100"
NODES = ("node1", "node2")
ADMIN_IPS = {"node1": "10.99.0.1", "node2": "10.99.0.2"}
INTERCONNECT_IPS = {"node1": "10.98.0.1", "node2": "10.98.0.2"}
CLIENT_IP = "10.99.0.10"
MONITOR_IP = "10.99.0.20"
LAN_IPS = {**ADMIN_IPS, "client": CLIENT_IP, "monitor": MONITOR_IP}
NAMESPACES = ("lan", "hb", "node1", "node2", "client", "monitor")
GROUP = "kolab"
GROUP_MEMBERS = ("fs", "vip", "ldap", "imap", "smtp", "web")
FENCE_DEVICE = "fence-lab"
DEGRADED_ATTRIBUTE = "kolab-degraded"
# the per-node command prefix (docs/design.md) for kolabmon's configuration in the lab
NODE_COMMAND_PREFIX = f"{ON} {{node}}"
PORTS = {"imap": 143, "imaps": 993, "smtp": 25, "smtps": 465, "submission": 587, "ldap": 389,
         "ldaps": 636, "http": 80, "https": 443, "lmtp": 24, "auth": 12345}

SHARED = LAB_DIR / "shared"    # mount point of the shared disk (mounted only inside the active node)
NODELOG = LAB_DIR / "nodelog"  # inside each node: a bind mount of logs/NODE/services
IMAGE = LAB_DIR / "shared.img"
IMAGE_SIZE = "256M"
RUN = LAB_DIR / "run"
LOGS = LAB_DIR / "logs"
PDU_SOCKET = LAB_DIR / "pdu.sock"

# ---- timing knobs (lab values, and what they cost) ---------------------------------------------
# corosync token: a node that stops answering is declared lost after token + consensus
# (1.2 x token) = 2.2 s, then fenced (default token 3000 ms: 6.6 s). knet pings every token/4 and
# declares a link dead after token/2 = 0.5 s, so a cut interconnect falls back to the LAN link
# long before the token is lost. Shorter would risk false membership losses on a loaded 2-core box.
TOKEN_MS = 1000
# dc-deadtime: only at start-up, how long a starting node waits for an existing DC before it holds
# its own election (default 20 s, most of a default bring-up). No effect on failure detection;
# too short only costs an extra election when the peer is slow to start.
DC_DEADTIME = "2s"
# Fencing delay so that a full partition has one winner: fencing OF node1 waits 2 s, so node1
# shoots first and survives. Cost: every fencing of node1 (crash, failed stop on node1) is 2 s later.
FENCE_DELAY = "node1:2s"
MONITOR_INTERVAL = "10s"

# services of the group: (Pacemaker resource, pid file of the master process inside the node)
SERVICE_PIDFILES = {
    "slapd": "/run/kolab-slapd/slapd.pid",
    "dovecot": "/run/dovecot/master.pid",
    "postfix": f"{SHARED}/postfix/spool/pid/master.pid",  # Postfix keeps it in its queue dir
    "nginx": "/run/kolab-nginx.pid",
}

USER1 = "user1@example.org"
SEED_MESSAGES = 3
CERT_SAN = ",".join(["DNS:kolab.example.org", "DNS:localhost", f"IP:{CLUSTER_IP}",
                     *(f"IP:{ip}" for ip in ADMIN_IPS.values()), "IP:127.0.0.1"])

_PHASE_T0 = [time.monotonic()]


def _phase(msg: str) -> None:
    """Print one timestamped line of the lab's phase log (stderr and logs/lab.log)."""
    line = f"{time.strftime('%H:%M:%S')} {time.monotonic() - _PHASE_T0[0]:6.2f}s {msg}"
    print(line, file=sys.stderr, flush=True)
    with contextlib.suppress(OSError):
        with (LOGS / "lab.log").open("a") as fh:
            fh.write(line + "\n")


# ---------------------------------------------------------------------------------------------
# Release differences that need nothing per release (Debian 12: Pacemaker 2.1.5, corosync 3.1.7,
# Dovecot 2.3; Debian 13: Pacemaker 3.0.0, corosync 3.1.9, crmsh 5, Dovecot 2.4; lab/release.py
# has the ones that do):
# - CIB schema (validate-with pacemaker-3.9 vs 4.0): the CIB is built on `cibadmin --empty` of the
#   installed Pacemaker and checked with crm_verify, so the schema always matches; only plain
#   primitives/group/location rule/rsc_defaults are used, valid in both. crmsh is not needed.
# - pacemakerd -f: "ignored" in 2.1, so node-run.sh starts plain `pacemakerd`.
# - crm_mon XML: the lab reads only <current_dc with_quorum>, <nodes><node online>, resources'
#   role/failed/<node name>, <fence_history>, whose names are the same in api-version 2.25 and 2.38;
#   rc_text case ("ok"/"OK") and <pacemakerd> vs <stack pacemakerd-state> are not used.
# - stonith-action: "off" (3.0 dropped "poweroff").
# - the stock dovecot agent's `dovecot process status` (2.4) runs without -c: the cluster's Dovecot
#   keeps Debian's default base_dir /run/dovecot (node-private), so 2.3's pid-file check and 2.4's
#   status call both find it.
# - Pacemaker 3.0's fencer registers the device only if the CIB it first reads lists its node:
#   the CIB lists both nodes from the start, and `up`/`restore` wait for the registration.


@functools.lru_cache(maxsize=1)
def pacemaker_version() -> tuple[int, int]:
    """(major, minor) of the installed Pacemaker, from `pacemakerd --version`."""
    out = servers._run("pacemaker", ["pacemakerd", "--version"])
    word = out.split()[1] if len(out.split()) > 1 else "0.0"
    major, minor = (word.split(".") + ["0"])[:2]
    return int(major), int(minor)


# ---------------------------------------------------------------------------------------------
# processes and state files


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state [0], ppid [1], starttime [19])."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # processes this process spawned (to reap them)


def _alive(pid: int, start: str | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, when given, has started at ``start`` (no reuse)."""
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        return False
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X") and (start is None or fields[19] == start)


def _record(name: str, pid: int) -> None:
    """Write run/NAME.pid as "pid starttime" (atomically)."""
    fields = _stat(pid)
    tmp = RUN / f".{name}.pid.tmp"
    tmp.write_text(f"{pid} {fields[19] if fields else '?'}\n")
    tmp.replace(RUN / f"{name}.pid")


def _recorded(name: str) -> int | None:
    """The PID recorded in run/NAME.pid if that very process still runs, else None."""
    try:
        pid_text, start = (RUN / f"{name}.pid").read_text().split()[:2]
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if _alive(pid, start) else None


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN: scan /proc
        return [int(e.name) for e in Path("/proc").iterdir()
                if e.name.isdigit() and (f := _stat(int(e.name))) and f[1] == str(pid)]
    except (OSError, ValueError):
        return []


def node_pid1(node: str) -> int | None:
    """Root-namespace PID of ``node``'s namespace PID 1 (node-run.sh), or None when it is off."""
    unshare = _recorded(node)
    if unshare is None:
        return None
    kids = _children(unshare)
    return kids[0] if kids and _alive(kids[0]) else None


def _stop_pids(pids: list[int], sig: signal.Signals, timeout: float) -> list[int]:
    """Send ``sig`` to ``pids`` and wait up to ``timeout``; return those still alive."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if _alive(p)]
    return left


@contextlib.contextmanager
def _lab_lock() -> Iterator[None]:
    """Serialise up/down/restore between processes (an flock on LAB_DIR/lock)."""
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    with (LAB_DIR / "lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(name: str, cmd: list[str], timeout: float = 60.0, input: bytes | None = None) -> str:
    return servers._run(name, cmd, timeout=timeout, input=input)


def _try(cmd: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``, never raising for its exit code."""
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _pcmk_tail(lines: int = 4) -> str:
    """The last error/warning lines of each node's pacemaker.log, as one line."""
    parts = []
    for node in NODES:
        try:
            text = (LOGS / node / "pacemaker" / "pacemaker.log").read_text(errors="replace")
        except OSError:
            continue
        hits = [line.strip() for line in text.splitlines()
                if any(word in line for word in (" error: ", " crit: ", "warning: Unexpected result",
                                                 "ocf-exit-reason", "Result of start", "Result of stop"))]
        if hits:
            parts.append(f"{node}: " + " | ".join(hit[-220:] for hit in hits[-lines:]))
    return " || ".join(parts) or "(no errors in the pacemaker logs)"


# ---------------------------------------------------------------------------------------------
# network


def _netns_list() -> set[str]:
    out = _try(["ip", "netns", "list"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _recorded_namespaces() -> list[str]:
    try:
        return [n for n in (RUN / "namespaces").read_text().split() if n in NAMESPACES]
    except OSError:
        return []


def _make_network() -> None:
    """Namespaces, the LAN and interconnect bridges, veths and addresses."""
    for ns in NAMESPACES:
        with (RUN / "namespaces").open("a") as fh:  # recorded first: down removes half-made ones
            fh.write(ns + "\n")
        _run("network", ["ip", "netns", "add", ns])
        _run("network", ["ip", "-n", ns, "link", "set", "lo", "up"])
    for ns, bridge in (("lan", "br0"), ("hb", "br1")):
        _run("network", ["ip", "-n", ns, "link", "add", bridge, "type", "bridge"])
        _run("network", ["ip", "-n", ns, "link", "set", bridge, "up"])
    links = [("lan", "br0", "eth0", host, ip) for host, ip in LAN_IPS.items()]
    links += [("hb", "br1", "eth1", node, ip) for node, ip in INTERCONNECT_IPS.items()]
    for ns, bridge, dev, host, ip in links:
        port = f"p-{host}"
        # created directly inside the namespaces: no interface of the root namespace is touched
        _run("network", ["ip", "link", "add", dev, "netns", host, "type", "veth", "peer", "name", port,
                         "netns", ns])
        _run("network", ["ip", "-n", ns, "link", "set", port, "master", bridge])
        _run("network", ["ip", "-n", ns, "link", "set", port, "up"])
        _run("network", ["ip", "-n", host, "addr", "add", f"{ip}/24", "dev", dev])
        _run("network", ["ip", "-n", host, "link", "set", dev, "up"])


# ---------------------------------------------------------------------------------------------
# shared storage: configs and data, written to seed/ and copied into the image by mkfs.ext4 -d


def make_certs() -> servers.Certs:
    """servers.make_certs under LAB_DIR/tls, with the cluster IP and node IPs in the SANs."""
    ca_cnf = LAB_DIR / "tls" / "ca" / "ca.cnf"
    if ca_cnf.exists() and CERT_SAN not in ca_cnf.read_text():
        shutil.rmtree(LAB_DIR / "tls")  # made for other SANs
    saved = servers.SAN
    servers.SAN = CERT_SAN  # make_certs writes the module's SAN list into the CA config
    try:
        return servers.make_certs(LAB_DIR)
    finally:
        servers.SAN = saved


def _dovecot_conf(certs: servers.Certs) -> str:
    """lab/servers.py's Dovecot config (2.3 or 2.4 syntax) with the cluster's paths and ports."""
    d = SHARED / "dovecot"
    ports = {k: PORTS[k] for k in ("imap", "imaps", "lmtp", "auth")}
    conf = servers._dovecot_conf(d, CLUSTER_IP, ports, certs.cert, certs.key, "cluster")
    # base_dir is Debian's default, in the node's private /run: the stock agent runs `dovecot process
    # status` without -c (Dovecot 2.4, lab/release.py), which looks for /run/dovecot/master
    for old, new in ((f"base_dir = {d}/run", "base_dir = /run/dovecot"),
                     (f"log_path = {d}/dovecot.log", f"log_path = {NODELOG}/dovecot.log")):
        if old not in conf:
            raise LabError(f"dovecot: '{old}' not in servers._dovecot_conf's output")
        conf = conf.replace(old, new)
    return conf


def _slapd_conf(certs: servers.Certs, directory: Path, run: str) -> str:
    return f"""\
include   /etc/ldap/schema/core.schema
include   /etc/ldap/schema/cosine.schema
include   /etc/ldap/schema/nis.schema
include   /etc/ldap/schema/inetorgperson.schema
pidfile   {run}/slapd.pid
argsfile  {run}/slapd.args
TLSCertificateFile {certs.cert}
TLSCertificateKeyFile {certs.key}
modulepath /usr/lib/ldap
moduleload back_mdb
database  mdb
maxsize   104857600
suffix    "{servers.LDAP_BASE}"
rootdn    "{servers.LDAP_ADMIN_DN}"
rootpw    {servers._ssha(servers.LDAP_ADMIN_PASSWORD)}
directory {directory}
index     objectClass eq
index     uid,mail eq
access to dn.base="" by * read
access to dn.base="cn=Subschema" by * read
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by anonymous auth
"""


def _postfix_main_cf(certs: servers.Certs) -> str:
    p = SHARED / "postfix"
    return f"""\
compatibility_level = 3.6
queue_directory = {p}/spool
data_directory = {p}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = {NODELOG}/maillog
maillog_file_prefixes = /var, /dev/stdout, {LAB_DIR}
myhostname = kolab.{servers.LAB_DOMAIN}
mydomain = {servers.LAB_DOMAIN}
myorigin = $mydomain
mydestination =
inet_interfaces = {CLUSTER_IP}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
biff = no
relayhost =
default_transport = error:outbound mail disabled in lab
relay_transport = error:outbound mail disabled in lab
virtual_mailbox_domains = {servers.LAB_DOMAIN}
virtual_mailbox_maps = texthash:{p}/etc/vmailbox
virtual_transport = lmtp:inet:{CLUSTER_IP}:{PORTS['lmtp']}
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:{CLUSTER_IP}:{PORTS['auth']}
smtpd_tls_auth_only = yes
smtpd_tls_security_level = may
smtpd_tls_cert_file = {certs.cert}
smtpd_tls_key_file = {certs.key}
smtpd_tls_loglevel = 1
smtp_tls_security_level = none
# no resolver in the lab: a reverse lookup of each client would only time out
smtpd_peername_lookup = no
"""


_SUBMISSION_CF = f"""\
{CLUSTER_IP}:{PORTS['submission']} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
"""


def _nginx_conf(certs: servers.Certs) -> str:
    # no "daemon off;": ocf:heartbeat:nginx starts nginx and expects it to daemonize
    return f"""\
worker_processes 1;
pid /run/kolab-nginx.pid;
error_log {NODELOG}/nginx-error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {NODELOG}/nginx-access.log;
    client_body_temp_path /run/kolab-nginx-body;
    proxy_temp_path /run/kolab-nginx-proxy;
    fastcgi_temp_path /run/kolab-nginx-fastcgi;
    uwsgi_temp_path /run/kolab-nginx-uwsgi;
    scgi_temp_path /run/kolab-nginx-scgi;
    types {{ text/calendar ifb ics; text/plain txt; text/html html; }}
    default_type application/octet-stream;
    server {{
        listen {CLUSTER_IP}:{PORTS['http']};
        listen {CLUSTER_IP}:{PORTS['https']} ssl;
        server_name kolab.{servers.LAB_DOMAIN};
        ssl_certificate {certs.cert};
        ssl_certificate_key {certs.key};
        root {SHARED}/nginx/html;
        location = /health {{ return 200 "ok $hostname\\n"; }}
        location /freebusy/ {{
            auth_basic "Kolab Free/Busy";
            auth_basic_user_file {SHARED}/nginx/conf/htpasswd;
        }}
    }}
}}
"""


def _seed_maildir(home: Path, user: str, count: int) -> None:
    """Put ``count`` messages into ``user``'s new Maildir INBOX under ``home`` (uid MAIL_UID)."""
    maildir = home / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, mode=0o700)
    now = time.time()
    for i in range(1, count + 1):
        msg = EmailMessage()
        msg["From"] = f"lab@{servers.LAB_DOMAIN}"
        msg["To"] = user
        msg["Subject"] = f"lab seed message {i}"
        msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
        msg["Message-ID"] = make_msgid(domain=servers.LAB_DOMAIN)
        msg.set_content(f"Seed message {i} for {user}.\n")
        path = maildir / "new" / f"{int(now)}.M{i}P{os.getpid()}.kolab"
        path.write_bytes(msg.as_bytes())
        path.chmod(0o600)
    for path in [home, *home.rglob("*")]:
        os.chown(path, servers.MAIL_UID, servers.MAIL_UID)
    home.chmod(0o700)


def _make_seed(certs: servers.Certs) -> Path:
    """Write every config and the initial data of the shared disk into LAB_DIR/seed."""
    seed = servers._fresh_dir(LAB_DIR / "seed")
    dovecot = servers._mkdir(seed / "dovecot")
    servers._mkdir(dovecot / "state")
    mail = servers._mkdir(dovecot / "mail")
    os.chown(mail, servers.MAIL_UID, servers.MAIL_UID)
    for user in servers.USERS:
        home = mail / user
        home.mkdir()
        _seed_maildir(home, user, SEED_MESSAGES if user == USER1 else 0)
    users = servers._write(dovecot / "users", "".join(
        f"{user}:{{PLAIN}}{pw}:{servers.MAIL_UID}:{servers.MAIL_UID}::{SHARED}/dovecot/mail/{user}\n"
        for user, pw in servers.USERS.items()), 0o640)
    shutil.chown(users, "root", "dovecot")
    conf = servers._write(dovecot / "dovecot.conf", _dovecot_conf(certs))
    _run("dovecot", ["dovecot", "-n", "-c", str(conf)])

    ldap = servers._mkdir(seed / "ldap")
    db = servers._mkdir(ldap / "db", 0o700)
    servers._write(ldap / "slapd.conf", _slapd_conf(certs, SHARED / "ldap" / "db", "/run/kolab-slapd"),
                   0o600)
    # the offline load uses a copy that points at the seed and a scratch pid directory
    scratch = servers._fresh_dir(LAB_DIR / "seed-scratch")
    load_conf = servers._write(scratch / "slapd.conf", _slapd_conf(certs, db, str(scratch)), 0o600)
    ldif = servers._write(scratch / "base.ldif", servers._ldap_ldif(), 0o600)
    _run("slapd", ["slaptest", "-u", "-f", str(load_conf)])
    _run("slapd", ["slapadd", "-q", "-f", str(load_conf), "-l", str(ldif)])
    shutil.rmtree(scratch)

    postfix = servers._mkdir(seed / "postfix")
    etc = servers._mkdir(postfix / "etc")
    servers._mkdir(postfix / "spool")
    shutil.chown(servers._mkdir(postfix / "data"), "postfix", "postfix")
    servers._write(etc / "main.cf", _postfix_main_cf(certs))
    master_cf = servers._POSTFIX_MASTER_CF.format(host=CLUSTER_IP, smtp=PORTS["smtp"], smtps=PORTS["smtps"])
    servers._write(etc / "master.cf", master_cf + _SUBMISSION_CF)
    servers._write(etc / "vmailbox", "".join(f"{user} lmtp\n" for user in servers.USERS))
    past = time.time() - 60  # Postfix waits for a main.cf modified "now" to settle
    for path in etc.iterdir():
        os.utime(path, (past, past))

    nginx = servers._mkdir(seed / "nginx")
    conf_dir = servers._mkdir(nginx / "conf")
    servers._mkdir(nginx / "html" / "freebusy")
    servers._write(conf_dir / "nginx.conf", _nginx_conf(certs))
    htpasswd = conf_dir / "htpasswd"
    for i, (user, pw) in enumerate(servers.USERS.items()):
        _run("nginx", ["htpasswd", "-bcB" if i == 0 else "-bB", str(htpasswd), user, pw])
    htpasswd.chmod(0o644)
    fake = servers.Server(name="nginx-cluster", pid=0, ports={}, host=CLUSTER_IP, root=nginx)
    for user in servers.USERS:
        servers.write_freebusy(fake, user)  # fresh DTSTAMP at every bring-up
    return seed


def _make_shared_disk(certs: servers.Certs) -> str:
    """Create the ext4 image from the seed, attach it to a loop device, record it; return the device."""
    seed = _make_seed(certs)
    IMAGE.unlink(missing_ok=True)
    _run("shared disk", ["truncate", "-s", IMAGE_SIZE, str(IMAGE)])
    _run("shared disk", ["mkfs.ext4", "-q", "-F", "-L", "kolabshared", "-d", str(seed), str(IMAGE)])
    shutil.rmtree(seed)
    device = _run("shared disk", ["losetup", "--find", "--show", str(IMAGE)]).strip()
    (RUN / "loopdev").write_text(device + "\n")
    return device


def _loop_devices() -> list[str]:
    """Loop devices backed by the lab image (whatever was recorded)."""
    if not IMAGE.exists():
        return []
    out = _try(["losetup", "--associated", str(IMAGE), "--noheadings", "--output", "NAME"]).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# per-node directories, corosync.conf and the CIB


def _corosync_conf() -> str:
    nodes = "".join(f"""\
    node {{
        name: {node}
        nodeid: {i}
        ring0_addr: {INTERCONNECT_IPS[node]}
        ring1_addr: {ADMIN_IPS[node]}
    }}
""" for i, node in enumerate(NODES, start=1))
    return f"""\
# kolabmon lab (lab/cluster.py). Link 0 = private interconnect (hb, 10.98.0.0/24), link 1 = LAN.
totem {{
    version: 2
    cluster_name: {CLUSTER_NAME}
    transport: knet
    crypto_cipher: none
    crypto_hash: none
    # lost node declared after token + consensus = {TOKEN_MS / 1000 * 2.2:.1f} s (default 3000 ms: 6.6 s);
    # knet: a link is dead after token/2 = {TOKEN_MS // 2} ms without pongs (pings every token/4)
    token: {TOKEN_MS}
    # passive: all traffic on the live link with the highest priority (the interconnect)
    link_mode: passive
    interface {{
        linknumber: 0
        knet_link_priority: 10
    }}
    interface {{
        linknumber: 1
        knet_link_priority: 5
    }}
}}
logging {{
    to_stderr: no
    to_logfile: yes
    logfile: /var/log/corosync/corosync.log
    to_syslog: no
    timestamp: on
}}
quorum {{
    provider: corosync_votequorum
    two_node: 1
}}
nodelist {{
{nodes}}}
"""


def _nv(owner: str, pairs: dict[str, str]) -> str:
    return "".join(f'<nvpair id="{owner}-{name}" name="{name}" value={quoteattr(value)}/>'
                   for name, value in pairs.items())


def _primitive(rid: str, agent: str, params: dict[str, str], timeouts: tuple[str, str, str] | None
               = ("20s", "30s", "30s")) -> str:
    """A <primitive>: agent "ocf:heartbeat:X" or "stonith:X"; timeouts (monitor, start, stop)."""
    cls, _, rest = agent.partition(":")
    provider, _, kind = rest.rpartition(":")
    prov = f' provider="{provider}"' if provider else ""
    ops = ""
    if timeouts:
        monitor, start, stop = timeouts
        interval = "60s" if cls == "stonith" else MONITOR_INTERVAL
        ops = (f'<operations><op id="{rid}-monitor" name="monitor" interval="{interval}" timeout="{monitor}"/>'
               f'<op id="{rid}-start" name="start" interval="0s" timeout="{start}"/>'
               f'<op id="{rid}-stop" name="stop" interval="0s" timeout="{stop}"/></operations>')
    return (f'<primitive id="{rid}" class="{cls}"{prov} type="{kind}">'
            f'<instance_attributes id="{rid}-params">{_nv(rid + "-params", params)}</instance_attributes>'
            f"{ops}</primitive>")


def _cib_configuration(loopdev: str) -> str:
    """The cluster's whole configuration as CIB XML (crm_config, resources, constraints, rsc_defaults)."""
    props = {"stonith-enabled": "true", "stonith-action": "off", "stonith-timeout": "60s",
             "dc-deadtime": DC_DEADTIME, "cluster-name": CLUSTER_NAME}
    fence = _primitive(FENCE_DEVICE, "stonith:fence_labns", {
        "pcmk_host_list": " ".join(NODES), "pcmk_delay_base": FENCE_DELAY,
        "pdu_socket": str(PDU_SOCKET)}, ("20s", "20s", "20s"))
    members = [
        _primitive("fs", "ocf:heartbeat:Filesystem", {
            "device": loopdev, "directory": str(SHARED), "fstype": "ext4"}, ("40s", "60s", "60s")),
        _primitive("vip", "ocf:heartbeat:IPaddr2", {
            "ip": CLUSTER_IP, "cidr_netmask": "24", "nic": "eth0"}),
        _primitive("ldap", "ocf:heartbeat:slapd", {
            "config": f"{SHARED}/ldap/slapd.conf", "pidfile": SERVICE_PIDFILES["slapd"],
            "services": f"ldap://{CLUSTER_IP}:{PORTS['ldap']}/ ldaps://{CLUSTER_IP}:{PORTS['ldaps']}/",
            # the RA's monitor searches each suffix; the rootdn has no blank (the RA does not quote it)
            "bind_dn": servers.LDAP_ADMIN_DN, "password": servers.LDAP_ADMIN_PASSWORD}),
        # the dovecot RA ignores config_file when starting (kolab-cluster.md §3): -c via parameters
        _primitive("imap", "ocf:heartbeat:dovecot", {
            "config_file": f"{SHARED}/dovecot/dovecot.conf",
            "parameters": f"-c {SHARED}/dovecot/dovecot.conf", "pid_file": SERVICE_PIDFILES["dovecot"]}),
        _primitive("smtp", "ocf:heartbeat:postfix", {"config_dir": f"{SHARED}/postfix/etc"}),
        _primitive("web", "ocf:heartbeat:nginx", {
            "httpd": "/usr/sbin/nginx", "configfile": f"{SHARED}/nginx/conf/nginx.conf",
            "options": f"-p {SHARED}/nginx/ -e {NODELOG}/nginx-error.log"}),
    ]
    return f"""\
<crm_config><cluster_property_set id="cib-bootstrap-options">{_nv("opt", props)}</cluster_property_set></crm_config>
<resources>{fence}<group id="{GROUP}">{"".join(members)}</group></resources>
<constraints>
  <rsc_location id="kolab-avoid-degraded" rsc="{GROUP}">
    <rule id="kolab-avoid-degraded-rule" score="-INFINITY">
      <expression id="kolab-avoid-degraded-expr" attribute="{DEGRADED_ATTRIBUTE}" operation="eq" value="true"/>
    </rule>
  </rsc_location>
  <!-- first placement on node1 (the partition winner); below the stickiness, so no fail-back -->
  <rsc_location id="kolab-prefers-node1" rsc="{GROUP}" node="node1" score="50"/>
</constraints>
<rsc_defaults><meta_attributes id="rsc-options">{_nv("rsc-options", {"resource-stickiness": "100"})}\
</meta_attributes></rsc_defaults>
"""


def _make_cib(loopdev: str) -> Path:
    """A complete CIB for the installed Pacemaker, verified offline, at nodes/cib.xml."""
    cib = ET.fromstring(_run("cib", ["cibadmin", "--empty"]))
    conf = cib.find("configuration")
    if conf is None:
        raise LabError("cib: `cibadmin --empty` printed no <configuration>")
    wanted = ET.fromstring(f"<configuration>{_cib_configuration(loopdev)}</configuration>")
    for section in list(wanted):
        old = conf.find(section.tag)
        if old is not None:
            conf.remove(old)
        conf.append(section)
    path = LAB_DIR / "nodes" / "cib.xml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(ET.tostring(cib, encoding="unicode") + "\n")
    _run("cib", ["crm_verify", "--xml-file", str(path)])
    # Then both nodes, so that the CIB each node first reads lists them: Pacemaker 3.0's fencer
    # decides once, from that CIB, whether the local node may run the fence device, and a node not
    # yet in <nodes> may not ("Ignoring fencing device ... because local node is not allowed to run
    # it"). (Not verified with them: offline, crm_verify takes nodes without status for unclean.)
    nodes = conf.find("nodes")
    if nodes is None:
        nodes = ET.SubElement(conf, "nodes")
    for i, node in enumerate(NODES, start=1):
        ET.SubElement(nodes, "node", id=str(i), uname=node)
    path.write_text(ET.tostring(cib, encoding="unicode") + "\n")
    return path


def _make_node_dirs(cib: Path) -> None:
    """nodes/NODE/{lib-pacemaker,lib-corosync,etc-corosync,etc-postfix} and logs/NODE/*."""
    for node in NODES:
        d = servers._fresh_dir(LAB_DIR / "nodes" / node)
        lib = d / "lib-pacemaker"
        for sub in ("cib", "pengine", "blackbox", "cores"):
            (lib / sub).mkdir(parents=True, mode=0o750)
        shutil.copyfile(cib, lib / "cib" / "cib.xml")  # no .sig: Pacemaker accepts it unsigned
        (lib / "cib" / "cib.xml").chmod(0o600)
        for sub in ("lib-corosync", "etc-corosync"):
            (d / sub).mkdir()
        servers._write(d / "etc-corosync" / "corosync.conf", _corosync_conf())
        # ocf:heartbeat:postfix needs the shared config dir listed in the DEFAULT main.cf
        shutil.copytree("/etc/postfix", d / "etc-postfix", symlinks=True)
        _run("postfix", ["postconf", "-c", str(d / "etc-postfix"), "-e",
                         f"alternate_config_directories = {SHARED}/postfix/etc"])
        logs = LOGS / node
        for sub in ("pacemaker", "corosync", "services"):
            (logs / sub).mkdir(parents=True, exist_ok=True)
        (logs / "services").chmod(0o1777)
        for path in [lib, *lib.rglob("*"), logs / "pacemaker"]:
            shutil.chown(path, "hacluster", "haclient")
    for mountpoint in (SHARED, NODELOG):
        mountpoint.mkdir(exist_ok=True)


# ---------------------------------------------------------------------------------------------
# the lab PDU: powers nodes on and off; runs in the root namespaces (`python lab/cluster.py pdu`)


def _set_links(node: str, state: str) -> None:
    for dev in ("eth0", "eth1"):
        _try(["ip", "-n", node, "link", "set", dev, state])


def _power_on(node: str, children: dict[str, subprocess.Popen[bytes]]) -> str:
    """Start ``node``: links up, then node-run.sh as PID 1 of fresh namespaces in its netns."""
    if _recorded(node):
        return f"ok {node} already on"
    _set_links(node, "up")
    with (LOGS / f"{node}.out").open("ab") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", node, "unshare", "--mount", "--uts", "--ipc", "--pid", "--fork",
             "--mount-proc", "--propagation", "private", str(NODE_RUN), node, str(LAB_DIR)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    children[node] = proc
    _record(node, proc.pid)
    return f"ok {node} powered on (unshare {proc.pid})"


def _power_off(node: str) -> str:
    """SIGKILL ``node``'s namespace PID 1 (the whole node dies), links down, cluster IP removed."""
    t0 = time.monotonic()
    unshare = _recorded(node)
    if unshare is None:
        msg = "already off"
    else:
        pid1 = node_pid1(node)
        had_disk = ""
        with contextlib.suppress(OSError):
            had_disk = next((line.split()[0] for line in Path(f"/proc/{pid1}/mounts").read_text().splitlines()
                             if f" {SHARED} " in line), "")
        # SIGKILL to a pid namespace's PID 1 kills every process in it
        left = _stop_pids([pid1] if pid1 else [unshare], signal.SIGKILL, 10.0)
        while _alive(unshare) and time.monotonic() - t0 < 10:
            time.sleep(0.02)
        msg = f"killed PID 1 {pid1} (unshare {unshare})" + (f", STILL ALIVE {left}" if left else "")
        if _alive(unshare):
            msg += f", unshare {unshare} still waiting for the node's processes to exit"
        if had_disk:  # the kernel drops the node's mount with its mount namespace
            gone = Path(f"/proc/fs/ext4/{Path(had_disk).name}")
            while gone.exists() and time.monotonic() - t0 < 5:
                time.sleep(0.02)
            msg += f", shared disk {'released' if not gone.exists() else 'STILL MOUNTED (superblock alive)'}"
    _set_links(node, "down")  # a powered-off machine does not answer on its addresses
    vip = _try(["ip", "-n", node, "addr", "del", f"{CLUSTER_IP}/24", "dev", "eth0"]).returncode == 0
    return f"ok {node} off in {time.monotonic() - t0:.2f}s: {msg}; cluster IP {'removed' if vip else 'absent'}"


def serve_pdu() -> None:
    """Run the lab PDU on LAB_DIR/pdu.sock until SIGTERM. One line per request -> one line answer:
    ``ping`` | ``list`` | ``status NODE`` | ``off NODE`` | ``on NODE [DELAY_S]``."""
    children: dict[str, subprocess.Popen[bytes]] = {}
    power = threading.Lock()

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} {msg}", flush=True)

    def delayed_on(node: str, delay: float) -> None:
        time.sleep(delay)
        with power:
            log(f"delayed on {node}: {_power_on(node, children)}")

    def answer(line: str) -> str:
        parts = line.split()
        act, node = (parts + ["", ""])[:2]
        if act == "ping":
            return "ok pdu alive"
        if act == "list":
            return "ok " + " ".join(NODES)
        if node not in NODES:
            return f"err unknown node {node!r}"
        if act == "status":
            return "ok " + ("on" if _recorded(node) else "off")
        if act == "off":
            with power:
                return _power_off(node)
        if act == "on":
            delay = float(parts[2]) if len(parts) > 2 else 0.0
            if delay > 0:  # "boot time": a rebooted node must not rejoin before its fencing is confirmed
                threading.Thread(target=delayed_on, args=(node, delay), daemon=True).start()
                return f"ok {node} will power on in {delay:.1f}s"
            with power:
                return _power_on(node, children)
        return f"err unknown action {act!r}"

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            line = self.rfile.readline().decode(errors="replace").strip()
            try:
                reply = answer(line)
            except Exception as exc:  # one bad request must not kill the PDU
                reply = f"err {exc!r}"
            if not line.startswith(("ping", "status", "list")):
                log(f"request {line!r} -> {reply}")
            self.wfile.write((reply + "\n").encode())

    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

        def service_actions(self) -> None:
            for proc in children.values():  # reap powered-off nodes
                proc.poll()

    PDU_SOCKET.unlink(missing_ok=True)
    server = Server(str(PDU_SOCKET), Handler)
    PDU_SOCKET.chmod(0o600)

    def terminate(*_: object) -> None:
        log("SIGTERM")
        os._exit(0)

    signal.signal(signal.SIGTERM, terminate)
    log(f"lab PDU listening on {PDU_SOCKET}, pid {os.getpid()}")
    server.serve_forever(poll_interval=0.5)


def pdu_request(request: str, timeout: float = 30.0) -> str:
    """Send one request line to the lab PDU; return its answer (LabError if it cannot be reached)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(PDU_SOCKET))
            sock.sendall((request + "\n").encode())
            return sock.makefile().readline().strip()
    except OSError as exc:
        raise LabError(f"pdu: cannot reach the lab PDU at {PDU_SOCKET}: {exc}") from exc


def _start_pdu() -> int:
    """Start the lab PDU unless the recorded one runs; return its PID once it answers."""
    pid = _recorded("pdu")
    if pid is None:
        with (LOGS / "pdu.log").open("ab") as out:
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "pdu"],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd="/")
        _CHILDREN[proc.pid] = proc
        _record("pdu", proc.pid)
        pid = proc.pid
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(LabError):
            if pdu_request("ping", timeout=2).startswith("ok"):
                return pid
        if not _alive(pid) or time.monotonic() > deadline:
            raise LabError(f"pdu: lab PDU (pid {pid}) not answering [{servers._tail(LOGS / 'pdu.log')}]")
        time.sleep(0.05)


def _install_fence_agent() -> None:
    shutil.copyfile(FENCE_AGENT_SOURCE, FENCE_AGENT)
    FENCE_AGENT.chmod(0o755)


def _remove_fence_agent() -> None:
    """Remove /usr/sbin/fence_labns if it is the lab's (an edited copy is left and reported)."""
    if not FENCE_AGENT.exists():
        return
    if FENCE_AGENT.read_bytes() == FENCE_AGENT_SOURCE.read_bytes():
        FENCE_AGENT.unlink()
    else:
        _phase(f"WARNING {FENCE_AGENT} differs from {FENCE_AGENT_SOURCE}: left in place")


# ---------------------------------------------------------------------------------------------
# the cluster as tests and the demo see it


@dataclasses.dataclass
class Member:
    """One resource of the group in crm_mon: role, failed/blocked flags, nodes it is active on."""

    id: str
    role: str
    failed: bool
    blocked: bool
    nodes: list[str]


def group_members(status: ET.Element) -> list[Member]:
    """The members of GROUP in a ``crm_mon --output-as=xml`` document (empty if none)."""
    group = status.find(f"./resources/group[@id='{GROUP}']")
    if group is None:
        return []
    return [Member(id=r.get("id", "?"), role=r.get("role", "?"), failed=r.get("failed") == "true",
                   blocked=r.get("blocked") == "true",
                   nodes=[n.get("name", "?") for n in r.findall("node")])
            for r in group.findall("resource")]


def group_node(status: ET.Element) -> str | None:
    """The node on which every member of GROUP is Started (and none failed), else None."""
    members = group_members(status)
    nodes = {tuple(m.nodes) for m in members}
    if (len(members) != len(GROUP_MEMBERS) or len(nodes) != 1 or any(m.failed for m in members)
            or any(m.role != "Started" for m in members)):
        return None
    only = nodes.pop()
    return only[0] if len(only) == 1 else None


def node_state(status: ET.Element, node: str) -> dict[str, str]:
    """The attributes of ``node``'s entry in crm_mon's <nodes> (online, unclean, ...); {} if absent."""
    entry = status.find(f"./nodes/node[@name='{node}']")
    return dict(entry.attrib) if entry is not None else {}


def online_nodes(status: ET.Element) -> list[str]:
    return [n.get("name", "?") for n in status.findall("./nodes/node") if n.get("online") == "true"]


def _describe(status: ET.Element) -> str:
    dc = status.find("./summary/current_dc")
    members = ", ".join(f"{m.id} {m.role}{'!' if m.failed else ''}@{'+'.join(m.nodes) or '-'}"
                        for m in group_members(status))
    quorum = dc is not None and dc.get("with_quorum") == "true"
    return (f"DC {dc.get('name') if dc is not None else '?'} quorum={'yes' if quorum else 'no'}, "
            f"online [{' '.join(online_nodes(status))}], group: {members or 'none'}")


class Cluster:
    """Handle on the running lab cluster (stateless: everything is looked up when asked)."""

    def __init__(self, bringup_seconds: float | None = None) -> None:
        self.bringup_seconds = bringup_seconds  # set by up() when it built the cluster

    @functools.cached_property
    def certs(self) -> servers.Certs:
        """The lab CA (``.ca``) and the services' certificate (cluster IP and node IPs in the SANs)."""
        return make_certs()

    # -- running commands ------------------------------------------------------------------------

    def on(self, node: str, *argv: str, timeout: float = 30.0, input: str | None = None
           ) -> subprocess.CompletedProcess[str]:
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

    def status(self, node: str | None = None, timeout: float = 15.0) -> ET.Element:
        """``crm_mon -1 --output-as=xml`` from ``node`` (default: the first node that answers)."""
        res = self.crm("crm_mon", "-1", "--output-as=xml", node=node, timeout=timeout)
        if res.returncode != 0:
            raise LabError(f"crm_mon: exited {res.returncode}: {(res.stderr or res.stdout).strip()[-300:]}")
        try:
            return ET.fromstring(res.stdout)
        except ET.ParseError as exc:
            raise LabError(f"crm_mon: unparsable XML: {exc}") from exc

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
                           f" [{_pcmk_tail()}]")

    def wait_for(self, what: str, check: Callable[[ET.Element], T | None], timeout: float = 60.0,
                 node: str | None = None) -> T:
        """Poll crm_mon's XML (from ``node``, else any running node) until ``check`` returns a
        truthy value, and return it; LabError names ``what`` with the last state seen."""
        deadline = time.monotonic() + timeout
        seen = "no answer"
        while True:
            try:
                status = self.status(node=node, timeout=10)
                seen = _describe(status)
                result = check(status)
                if result:
                    return result
            except (LabError, subprocess.TimeoutExpired) as exc:
                seen = str(exc)
            if time.monotonic() > deadline:
                raise LabError(f"{what}: not reached within {timeout:.0f} s: {seen} [{_pcmk_tail()}]")
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
                                   f" [{_pcmk_tail()}]")
                time.sleep(0.3)

    def check_services(self, timeout: float = 5.0) -> subprocess.CompletedProcess[str]:
        """IMAP, SMTP, LDAP and HTTP on the cluster IP, checked from the client (rc 0: all answer)."""
        return self.client(sys.executable, str(Path(__file__).resolve()), "client-check",
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
                seen = _describe(status)
                dc = status.find("./summary/current_dc")
                step = "quorum and a DC"
                if dc is not None and dc.get("present") == "true" and dc.get("with_quorum") == "true":
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
                               f" [{_pcmk_tail()}]")
            time.sleep(0.3)

    # -- nodes -----------------------------------------------------------------------------------

    def restore(self, node: str, timeout: float = 60.0) -> float:
        """Power a fenced/killed ``node`` on and wait until it is online (as the passive node) and
        the cluster is idle; return the seconds it took (0 if it was running)."""
        if node not in NODES:
            raise LabError(f"restore: unknown node {node!r}")
        with _lab_lock():
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
                node_state(s, node).get("online") == "false" and node_state(s, node).get("unclean") == "false"),
                deadline - time.monotonic(), node=peers[0])
        _start_pdu()
        answer = pdu_request(f"on {node}")
        if not answer.startswith("ok"):
            raise LabError(f"restore: PDU could not power {node} on: {answer}")
        self.wait_for(f"restore: {node} online", lambda s: node_state(s, node).get("online") == "true",
                      max(1.0, deadline - time.monotonic()))
        self.wait_idle(max(5.0, deadline - time.monotonic()))
        if not node_pid1(node):
            raise LabError(f"restore: {node} went down again while joining [{_pcmk_tail()}]")
        self.wait_fencing_ready((node,), max(5.0, deadline - time.monotonic()))
        return time.monotonic() - t0

    def kill_node(self, node: str) -> str:
        """Power ``node`` off through the lab PDU (as a crash would; the cluster then fences it)."""
        answer = pdu_request(f"off {node}")
        if not answer.startswith("ok"):
            raise LabError(f"kill_node: {answer}")
        return answer

    # -- faults ----------------------------------------------------------------------------------

    def _signal_service(self, node: str, service: str, sig: str) -> list[int]:
        if service not in SERVICE_PIDFILES:
            raise LabError(f"unknown service {service!r} (one of {', '.join(SERVICE_PIDFILES)})")
        res = self.on(node, sys.executable, str(Path(__file__).resolve()), "signal-service", service, sig)
        if res.returncode != 0:
            raise LabError(f"{sig} {service} on {node}: {(res.stderr or res.stdout).strip()}")
        return [int(pid) for pid in res.stdout.split()]

    def hang(self, node: str, service: str) -> list[int]:
        """SIGSTOP every process of ``service`` (dovecot, slapd, postfix, nginx) in ``node``;
        return their PIDs (inside the node)."""
        return self._signal_service(node, service, "STOP")

    def unhang(self, node: str, service: str) -> list[int]:
        """SIGCONT every process of ``service`` in ``node``."""
        return self._signal_service(node, service, "CONT")

    def readonly_spool(self, node: str) -> None:
        """Make the kernel force the shared ext4 read-only on ``node`` (errors=remount-ro + an
        injected filesystem error), as a failing disk would."""
        res = self.on(node, "findmnt", "-n", "-o", "SOURCE", str(SHARED))
        device = res.stdout.strip()
        if res.returncode != 0 or not device:
            raise LabError(f"readonly_spool: the shared disk is not mounted on {node}")
        remount = self.on(node, "mount", "-o", "remount,errors=remount-ro", str(SHARED))
        if remount.returncode != 0:
            raise LabError(f"readonly_spool: remount on {node}: {remount.stderr.strip()}")
        # commit the journal first: the abort would drop the running transaction, and a lost unlink
        # of e.g. Dovecot's dovecot-uidlist.lock makes SELECT hang for minutes on the next node
        self.on(node, "sync", "--file-system", str(SHARED))
        Path(f"/sys/fs/ext4/{Path(device).name}/trigger_fs_error").write_text("1\n")

    def _lan_isolation(self, on: bool) -> None:
        for node in NODES:  # isolated bridge ports reach the client and monitor, not each other
            _run("fault", ["bridge", "-n", "lan", "link", "set", "dev", f"p-{node}", "isolated",
                           "on" if on else "off"])

    def cut_interconnect(self) -> None:
        """Take the interconnect (corosync link 0) down between the nodes; the LAN link holds."""
        for node in NODES:
            _run("fault", ["ip", "-n", "hb", "link", "set", f"p-{node}", "down"])

    def heal_interconnect(self) -> None:
        for node in NODES:
            _run("fault", ["ip", "-n", "hb", "link", "set", f"p-{node}", "up"])

    def cut_all(self) -> None:
        """Full partition: interconnect down and the nodes cut from each other on the LAN (both
        still reach the client and monitor). The fencing delay decides who survives."""
        self.cut_interconnect()
        self._lan_isolation(True)

    def heal_all(self) -> None:
        self._lan_isolation(False)
        self.heal_interconnect()


# ---------------------------------------------------------------------------------------------
# bring-up and teardown


def _lab_namespaces_exist() -> set[str]:
    return _netns_list() & set(NAMESPACES)


def _is_up() -> bool:
    """The lab is built: all its namespaces, its loop device and the PDU are there."""
    return (set(_recorded_namespaces()) == set(NAMESPACES) and _lab_namespaces_exist() == set(NAMESPACES)
            and bool(_loop_devices()) and _recorded("pdu") is not None)


def _check_host() -> None:
    if os.geteuid() != 0:
        raise LabError("preflight: the cluster lab needs root (namespaces, loop devices, mounts)")
    tools = ["ip", "bridge", "unshare", "nsenter", "losetup", "mkfs.ext4", "corosync", "pacemakerd",
             "crm_mon", "cibadmin", "crm_verify", "modprobe", "dovecot", "slapd", "slapadd", "postconf",
             "nginx", "htpasswd", "ldapsearch"]
    missing = [tool for tool in tools if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    agents = Path("/usr/lib/ocf/resource.d/heartbeat")
    missing += [f"ocf:heartbeat:{ra}" for ra in ("Filesystem", "IPaddr2", "slapd", "dovecot", "postfix", "nginx")
                if not (agents / ra).exists()]
    if missing:
        raise LabError(f"preflight: missing {', '.join(missing)}: run lab/setup.sh (lab/packages.txt)")
    foreign = _lab_namespaces_exist() - set(_recorded_namespaces())
    if foreign:
        raise LabError(f"preflight: network namespace(s) {' '.join(sorted(foreign))} exist but were not "
                       "made by the lab (ip netns list); not touching them")


def up(timeout: float = 120.0) -> Cluster:
    """Bring the cluster up (idempotent: if it is up, power on missing nodes and verify) and wait,
    bounded by ``timeout``, until it is ready (see Cluster.wait_ready). Prints a phase log.

    On failure the half-built lab is torn down again (logs stay in LAB_DIR/logs) and LabError
    names the failing step.
    """
    _PHASE_T0[0] = time.monotonic()
    with _lab_lock():
        if _is_up():
            _phase("already up: verifying")
            cluster = Cluster()
            deadline = time.monotonic() + timeout
            for node in NODES:
                if not node_pid1(node):
                    _phase(f"{node} is off: restoring it")
                    cluster._restore(node, timeout)
            cluster.wait_ready(max(1.0, deadline - time.monotonic()), nodes=len(NODES))
            _phase(f"ready, group on {cluster.active_node()}")
            return cluster
        _check_host()
        if _recorded_namespaces() or _loop_devices() or _recorded("pdu"):
            _phase("leftovers of an earlier lab: tearing them down first")
            _down_locked()
        try:
            return _bring_up(timeout)
        except BaseException as exc:
            _phase(f"bring-up failed: {exc}; tearing down")
            with contextlib.suppress(Exception):
                _down_locked()
            raise


def _bring_up(timeout: float) -> Cluster:
    t0 = time.monotonic()
    if LOGS.exists():  # keep the previous run's logs for a post-mortem
        shutil.rmtree(LAB_DIR / "logs.previous", ignore_errors=True)
        LOGS.rename(LAB_DIR / "logs.previous")
    LOGS.mkdir(parents=True)
    servers._fresh_dir(RUN)
    servers._make_traversable(LAB_DIR)
    _phase(f"lab dir {LAB_DIR}; {release.describe()}, Pacemaker {'.'.join(map(str, pacemaker_version()))}, "
           f"Dovecot {'.'.join(map(str, servers.dovecot_version()))}")
    certs = make_certs()
    _phase("certificates ready")
    _make_network()
    _phase(f"network: namespaces {' '.join(NAMESPACES)}, LAN br0 + interconnect br1")
    loopdev = _make_shared_disk(certs)
    _phase(f"shared disk: {IMAGE} ({IMAGE_SIZE}) on {loopdev}, configs + data seeded")
    _make_node_dirs(_make_cib(loopdev))
    _phase("node directories, corosync.conf and the CIB written (crm_verify OK)")
    _install_fence_agent()
    pdu = _start_pdu()
    _phase(f"fence agent {FENCE_AGENT} installed; lab PDU pid {pdu}")
    for node in NODES:
        answer = pdu_request(f"on {node}")
        if not answer.startswith("ok"):
            raise LabError(f"power on {node}: {answer}")
    _phase("nodes powered on: " + ", ".join(f"{n} unshare {_recorded(n)}" for n in NODES))
    cluster = Cluster()
    deadline = t0 + timeout
    steps: list[tuple[str, Callable[[ET.Element], bool]]] = [
        ("quorum and a DC", lambda s: s.find("./summary/current_dc[@with_quorum='true']") is not None),
        ("both nodes online", lambda s: len(online_nodes(s)) == len(NODES))]
    for step, done in steps:
        cluster.wait_for(f"up: {step}", done, max(1.0, deadline - time.monotonic()))
        _phase(f"{step}: {_describe(cluster.status())}")
    cluster.wait_fencing_ready(timeout=max(1.0, deadline - time.monotonic()))
    _phase(f"fence device {FENCE_DEVICE} registered on {' and '.join(NODES)}")
    node = cluster.wait_group(max(1.0, deadline - time.monotonic()))
    _phase(f"group {GROUP} started on {node}")
    cluster.wait_ready(max(1.0, deadline - time.monotonic()), nodes=len(NODES))
    cluster.bringup_seconds = time.monotonic() - t0
    _phase(f"ready: IMAP/SMTP/LDAP/HTTP answer on {CLUSTER_IP} from the client; "
           f"bring-up took {cluster.bringup_seconds:.1f} s")
    return cluster


def down() -> float:
    """Tear the lab down: stop the recorded PIDs, remove the loop device, namespaces, fence agent
    and state (keeping logs/ and tls/). Works on a half-built lab or with nodes fenced.
    Return the seconds it took."""
    _PHASE_T0[0] = time.monotonic()
    with _lab_lock():
        return _down_locked()


def _down_locked() -> float:
    t0 = time.monotonic()
    cluster = Cluster()
    nodes = {node: node_pid1(node) for node in NODES}
    running = [node for node, pid1 in nodes.items() if pid1]
    if running:
        # stop the group first, so that a node shutting down does not hand it to the other one
        # (the fence device stays: a failed stop still gets its node fenced)
        try:
            res = cluster.crm("crm_resource", "--resource", GROUP, "--meta", "--set-parameter",
                              "target-role", "--parameter-value", "Stopped", timeout=15)
            if res.returncode == 0:
                cluster.wait_idle(40)
                _phase(f"group {GROUP} stopped")
        except (LabError, subprocess.TimeoutExpired) as exc:
            _phase(f"stopping group {GROUP} failed ({exc}); stopping the nodes anyway")
        for node in running:
            pid1 = nodes[node]
            if pid1:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid1, signal.SIGTERM)  # node-run.sh: pacemakerd, then corosync
        _phase(f"SIGTERM to PID 1 of {', '.join(running)}")
    unshares = [pid for pid in (_recorded(node) for node in NODES) if pid]
    deadline = time.monotonic() + 20
    while unshares and time.monotonic() < deadline:
        time.sleep(0.05)
        unshares = [pid for pid in unshares if _alive(pid)]
    if unshares:
        pid1s = [p for p in (node_pid1(n) for n in NODES) if p]
        _stop_pids(pid1s or unshares, signal.SIGKILL, 10)
        _phase(f"nodes did not stop in 20 s: SIGKILL {pid1s or unshares}")
    elif running:
        _phase("nodes stopped")
    pdu = _recorded("pdu")
    if pdu:
        if _stop_pids([pdu], signal.SIGTERM, 5):
            _stop_pids([pdu], signal.SIGKILL, 5)
        _phase(f"lab PDU {pdu} stopped")
    for proc in list(_CHILDREN.values()):
        proc.poll()
    PDU_SOCKET.unlink(missing_ok=True)
    _remove_fence_agent()
    for device in _loop_devices():
        _try(["losetup", "--detach", device])
    deadline = time.monotonic() + 10
    while _loop_devices() and time.monotonic() < deadline:  # busy until the last mount ns is gone
        time.sleep(0.05)
    if _loop_devices():
        _phase(f"WARNING loop device(s) {' '.join(_loop_devices())} still attached")
    recorded = _recorded_namespaces()
    for ns in recorded:
        if ns not in _netns_list():
            continue
        left = _try(["ip", "netns", "pids", ns]).stdout.split()
        if left:
            _phase(f"WARNING processes the lab did not record are left in netns {ns}: {' '.join(left)}")
        _try(["ip", "netns", "delete", ns])
    if recorded:
        _phase(f"namespaces {' '.join(recorded)} deleted")
    for path in (RUN, LAB_DIR / "nodes", LAB_DIR / "seed", LAB_DIR / "seed-scratch"):
        shutil.rmtree(path, ignore_errors=True)
    for mountpoint in (SHARED, NODELOG):  # empty mount points here; never rmtree what may be mounted
        with contextlib.suppress(OSError):
            mountpoint.rmdir()
    IMAGE.unlink(missing_ok=True)
    took = time.monotonic() - t0
    _phase(f"down: took {took:.1f} s")
    return took


def leftovers() -> list[str]:
    """What of the lab still exists on the host (empty after a clean down)."""
    found = [f"netns {ns}" for ns in sorted(_lab_namespaces_exist())]
    found += [f"loop device {dev}" for dev in _loop_devices()]
    mounts = Path("/proc/mounts").read_text()
    found += [f"mount {line.split()[1]}" for line in mounts.splitlines() if str(LAB_DIR) in line]
    found += [f"pid {name} {pid}" for name in ("pdu", *NODES) if (pid := _recorded(name))]
    if FENCE_AGENT.exists():
        found.append(f"file {FENCE_AGENT}")
    return found


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
            _phase("cluster still used by another process: left up")
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
# helpers run inside the lab machines (internal subcommands)


def client_check(timeout: float = 5.0) -> int:
    """IMAP login+SELECT, SMTP EHLO (STARTTLS offered), LDAP bind+search, HTTP free/busy on the
    cluster IP; one line per service; 0 if all answer. Runs in the client netns."""
    password = servers.USERS[USER1]

    def imap() -> str:
        with imaplib.IMAP4(CLUSTER_IP, PORTS["imap"], timeout=timeout) as conn:
            conn.login(USER1, password)
            typ, data = conn.select("INBOX", readonly=True)
            if typ != "OK":
                raise imaplib.IMAP4.error(f"SELECT INBOX {typ} {data[0]!r}")
            count = data[0].decode() if isinstance(data[0], bytes) else "?"
            return f"login+select INBOX messages={count}"

    def smtp() -> str:
        with smtplib.SMTP(CLUSTER_IP, PORTS["smtp"], timeout=timeout) as conn:
            code, _ = conn.ehlo("client.example.org")
            if code != 250 or not conn.has_extn("starttls"):
                raise OSError(f"EHLO {code}, STARTTLS offered: {conn.has_extn('starttls')}")
            return "EHLO 250, STARTTLS offered"

    def ldap() -> str:
        res = subprocess.run(["ldapsearch", "-LLL", "-x", "-o", f"nettimeout={int(timeout)}", "-H",
                              f"ldap://{CLUSTER_IP}:{PORTS['ldap']}", "-D", servers.LDAP_SERVICE_DN, "-w",
                              servers.LDAP_SERVICE_PASSWORD, "-b", servers.LDAP_BASE, "(uid=user1)", "mail"],
                             capture_output=True, text=True, timeout=timeout + 2, check=False)
        if res.returncode != 0 or USER1 not in res.stdout:
            raise OSError(f"ldapsearch rc {res.returncode}: {(res.stderr or res.stdout).strip()}")
        return f"bind as service DN, found {USER1}"

    def http() -> str:
        req = urllib.request.Request(f"http://{CLUSTER_IP}/freebusy/{USER1}.ifb")
        token = base64.b64encode(f"{USER1}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        handler = urllib.request.ProxyHandler({})  # never a proxy from the environment
        with urllib.request.build_opener(handler).open(req, timeout=timeout) as resp:
            body = resp.read().decode(errors="replace")
            if resp.status != 200 or "BEGIN:VFREEBUSY" not in body:
                raise OSError(f"HTTP {resp.status}, no VFREEBUSY")
            return f"GET /freebusy/{USER1}.ifb 200 text/calendar"

    failed = 0
    for name, check in (("imap", imap), ("smtp", smtp), ("ldap", ldap), ("http", http)):
        try:
            print(f"{name}: OK {check()}")
        except (OSError, imaplib.IMAP4.error, smtplib.SMTPException, ssl.SSLError,
                subprocess.TimeoutExpired) as exc:
            failed += 1
            print(f"{name}: FAILED {type(exc).__name__}: {exc}")
    return 1 if failed else 0


def signal_service(service: str, sig: str) -> int:
    """Send SIG to the master of ``service`` and all its descendants; runs inside a node."""
    try:
        master = int(Path(SERVICE_PIDFILES[service]).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        print(f"{service} is not running here (no pid file {SERVICE_PIDFILES[service]})", file=sys.stderr)
        return 1
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
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


# ---------------------------------------------------------------------------------------------
# CLI


def _status_text() -> str:
    lines = [f"lab dir {LAB_DIR}: {'up' if _is_up() else 'not up'}"]
    lines += [f"  {name}: pid {_recorded(name) or '-'}" for name in ("pdu", *NODES)]
    lines.append(f"  loop devices: {' '.join(_loop_devices()) or '-'}")
    lines.append(f"  namespaces: {' '.join(sorted(_lab_namespaces_exist())) or '-'}")
    cluster = Cluster()
    if cluster.running_nodes():
        res = cluster.crm("crm_mon", "-1", "--include=fencing")
        lines.append(res.stdout.rstrip() or res.stderr.rstrip())
    return "\n".join(lines)


_FAULTS = ("hang-SERVICE", "unhang-SERVICE", "readonly-spool", "kill", "cut-interconnect",
           "heal-interconnect", "cut-all", "heal-all")


def _fault(cluster: Cluster, kind: str, node: str | None) -> str:
    no_node = {"cut-interconnect": cluster.cut_interconnect, "heal-interconnect": cluster.heal_interconnect,
               "cut-all": cluster.cut_all, "heal-all": cluster.heal_all}
    if kind in no_node:
        no_node[kind]()
        return kind
    if node not in NODES:
        raise LabError(f"fault {kind}: give the node (node1 or node2)")
    if kind.startswith(("hang-", "unhang-")):
        action, service = kind.split("-", 1)
        pids = (cluster.hang if action == "hang" else cluster.unhang)(node, service)
        return f"{action} {service} on {node}: pids {' '.join(map(str, pids))} (inside the node)"
    if kind == "readonly-spool":
        cluster.readonly_spool(node)
        return f"shared disk forced read-only on {node}"
    if kind == "kill":
        return cluster.kill_node(node)
    raise LabError(f"unknown fault {kind!r} (one of {', '.join(_FAULTS)})")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    usage = ("usage: cluster.py up [--timeout S] | down | status | restore NODE | fault KIND [NODE]\n"
             f"  fault kinds: {', '.join(_FAULTS)}")
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
            print(_fault(Cluster(), rest[0], rest[1] if len(rest) == 2 else None))
        elif cmd == "pdu":
            serve_pdu()
        elif cmd == "client-check":
            return client_check()
        elif cmd == "signal-service" and len(rest) == 2:
            return signal_service(rest[0], rest[1])
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
