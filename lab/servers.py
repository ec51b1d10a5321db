"""Real Kolab-like servers on loopback for the test suite and the demo, without systemd.

Dovecot (IMAP/IMAPS/LMTP/SASL), OpenLDAP slapd, Postfix, nginx (free/busy) and dnsmasq are
started from the Debian packages with private configs under a caller-given root directory,
on free loopback ports, each in its own session.  Stdlib only; certificates come from the
``openssl`` CLI.

The servers run partly as unprivileged users (dovenull, postfix, nobody, mail uid 5000), so
the root directory and all its ancestors get the "x" (search) permission for others.

CLI::

    python lab/servers.py up DIR     # start all five, write and print DIR/servers.json
    python lab/servers.py down DIR   # stop exactly the PIDs recorded in DIR/servers.json
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import json
import os
import pty
import select
import shutil
import signal
import smtplib
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent.parent) not in sys.path:  # run as a script (lab/icinga.py)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import release  # noqa: E402

LAB_DOMAIN = "example.org"
USERS = {"user1@example.org": "secret1", "user2@example.org": "secret2"}
LDAP_BASE = "dc=example,dc=org"
LDAP_SERVICE_DN = "uid=kolab-service,ou=Special Users,dc=example,dc=org"
LDAP_SERVICE_PASSWORD = "servicesecret"
LDAP_ADMIN_DN = "cn=admin,dc=example,dc=org"
LDAP_ADMIN_PASSWORD = "adminsecret"

_DEFAULT_PACKAGES = [
    "dovecot-imapd",
    "dovecot-lmtpd",
    "postfix",
    "slapd",
    "ldap-utils",
    "nginx",
    "apache2-utils",
    "dnsmasq-base",
    "openssl",
    "icinga2",
    "monitoring-plugins-basic",
    "monitoring-plugins-standard",
    "bind9-dnsutils",
    "python3-venv",
]


def _read_packages() -> list[str]:
    """Package names from lab/packages.txt (shared with lab/setup.sh), else the built-in list."""
    try:
        lines = Path(__file__).with_name("packages.txt").read_text().splitlines()
    except OSError:
        return list(_DEFAULT_PACKAGES)
    names = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return names or list(_DEFAULT_PACKAGES)


PACKAGES = _read_packages()

DEFAULT_DNS_RECORDS: dict[str, list[tuple[str, ...]]] = {
    "A": [("kolab.example.org", "10.99.0.100")],
    "MX": [("example.org", "kolab.example.org", "10")],
    "SRV": [
        ("_imap._tcp.example.org", "kolab.example.org", "143"),
        ("_submission._tcp.example.org", "kolab.example.org", "587"),
        ("_ldap._tcp.example.org", "kolab.example.org", "389"),
    ],
}

MAIL_UID = 5000
CERT_VARIANTS = ("good", "expiring", "expired", "rogue")
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
SAN = "DNS:localhost," + ",".join(f"IP:127.0.0.{i}" for i in range(1, 10))

POSTFIX_MASTER = Path("/usr/lib/postfix/sbin/master")
DOVECOT_DH = Path("/usr/share/dovecot/dh.pem")

# comm name of the recorded PID per server kind, checked before signalling a PID we did not spawn
_COMM = {"dovecot": "dovecot", "slapd": "slapd", "postfix": "master", "nginx": "nginx",
         "dnsmasq": "dnsmasq"}
_STOP_SIGNAL = {"slapd": signal.SIGINT}
# Popen objects of servers started by this process (to reap them)
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class LabError(Exception):
    """A lab server could not be prepared, started or stopped."""


# ---------------------------------------------------------------------------------------------
# small helpers


def _tail(*paths: Path, lines: int = 6) -> str:
    """Return the last lines of the given log files as one line."""
    parts = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        last = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        if last:
            parts.append(f"{path.name}: " + " | ".join(last))
    return " || ".join(parts) if parts else "(log empty)"


def _run(name: str, cmd: list[str], *, log: Path | None = None, input: bytes | None = None,
         env: dict[str, str] | None = None, timeout: float = 120.0) -> str:
    """Run a helper command; raise LabError naming ``name`` with its output on failure."""
    try:
        res = subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=None if input is not None else subprocess.DEVNULL,
                             env=env, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{name}: {cmd[0]} failed: {exc}") from exc
    out = res.stdout.decode(errors="replace")
    if log is not None:
        with log.open("a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n{out}")
    if res.returncode != 0:
        one_line = " | ".join(line.strip() for line in out.splitlines() if line.strip())[-800:]
        raise LabError(f"{name}: {' '.join(cmd[:3])} ... exited {res.returncode}: {one_line}")
    return out


def _run_with_tty(name: str, cmd: list[str], log: Path, timeout: float = 60.0) -> None:
    """Run ``cmd`` with a pty as stdout/stderr (Postfix only reports errors to a tty)."""
    master_fd, slave_fd = pty.openpty()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave_fd, stderr=slave_fd,
                                start_new_session=True)
    except OSError as exc:
        os.close(master_fd)
        os.close(slave_fd)
        raise LabError(f"{name}: {cmd[0]} failed: {exc}") from exc
    os.close(slave_fd)
    chunks = []
    deadline = time.monotonic() + timeout
    eof = False
    try:
        # read until the command exits (a helper it leaves behind may hold the pty open)
        while True:
            done = proc.poll() is not None
            if not eof and select.select([master_fd], [], [], 0 if done else 0.05)[0]:
                try:
                    data = os.read(master_fd, 4096)
                except OSError:  # EIO: no writer left
                    data = b""
                if data:
                    chunks.append(data)
                    continue
                eof = True
            if done:
                break
            if time.monotonic() > deadline:
                proc.kill()
            elif eof:
                time.sleep(0.05)
    finally:
        os.close(master_fd)
    rc = proc.wait()
    out = b"".join(chunks).decode(errors="replace")
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n{out}")
    if rc != 0:
        one_line = " | ".join(line.strip() for line in out.splitlines() if line.strip())[-800:]
        raise LabError(f"{name}: {' '.join(cmd)} exited {rc}: {one_line}")


def _mkdir(path: Path, mode: int = 0o755) -> Path:
    """Create ``path`` (and parents) with ``mode``."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


def _make_traversable(path: Path) -> None:
    """Give ``path`` and all its ancestors the search bit for others (server users need it)."""
    path = path.resolve()
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if not mode & stat.S_IXOTH:
            p.chmod(stat.S_IMODE(mode) | stat.S_IXOTH | stat.S_IXGRP)


def _fresh_dir(path: Path) -> Path:
    """Return an empty directory at ``path`` (removing an old one)."""
    if path.exists():
        shutil.rmtree(path)
    return _mkdir(path)


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def _ssha(password: str) -> str:
    """Return an LDAP {SSHA} hash of ``password``."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


# ---------------------------------------------------------------------------------------------
# ports


def _free_ports(count: int, host: str = "127.0.0.1", udp: bool = False) -> list[int]:
    """Return ``count`` distinct free TCP ports on ``host`` (also free for UDP if ``udp``)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.bind((host, 0))
            held.append(tcp)
            port = tcp.getsockname()[1]
            if udp:
                probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    probe.bind((host, port))
                except OSError:
                    continue
                finally:
                    probe.close()
            ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def free_port(host: str = "127.0.0.1", udp: bool = False) -> int:
    """Return a currently free TCP port on ``host`` (bind port 0 and read it back)."""
    return _free_ports(1, host, udp)[0]


def _connect_once(host: str, port: int, banner: bytes | None, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if banner is None:
                return True
            sock.settimeout(timeout)
            data = b""
            while len(data) < len(banner):
                chunk = sock.recv(1024)
                if not chunk:
                    return False
                data += chunk
            return data.startswith(banner)
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float = READY_TIMEOUT, banner: bytes | None = None,
              name: str | None = None) -> None:
    """Wait until ``host:port`` accepts connections (and greets with ``banner``).

    Raises LabError naming the server (``name``, else ``host:port``) on timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        if _connect_once(host, port, banner, min(1.0, timeout)):
            return
        if time.monotonic() >= deadline:
            what = f" with banner {banner!r}" if banner else ""
            raise LabError(f"{name or 'server'}: {host}:{port} not ready{what} after {timeout} s")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# processes


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], pgid [2], sid [3])."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (reaps our own children)."""
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        return False
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _session_members(sid: int) -> list[int]:
    """Live PIDs whose session id is ``sid`` (our servers each run in their own session)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[3] == str(sid) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _listen_inodes(host: str, port: int, udp: bool = False) -> set[str]:
    """Socket inodes listening on IPv4 ``host:port`` (TCP LISTEN, or bound UDP)."""
    want = f"{socket.htonl(int.from_bytes(socket.inet_aton(host), 'big')):08X}:{port:04X}"
    table = Path("/proc/net/udp" if udp else "/proc/net/tcp").read_text().splitlines()[1:]
    state = "07" if udp else "0A"
    return {f[9] for f in (line.split() for line in table) if f[1] == want and f[3] == state}


def _session_owns(sid: int, inodes: set[str]) -> bool:
    """True if a process of session ``sid`` holds one of the socket ``inodes``."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in _session_members(sid):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in wanted:
                    return True
            except OSError:
                continue
    return False


def _claim(d: Path, kind: str) -> None:
    """Refuse to reuse an instance directory whose server (lab.pid) is still running."""
    pidfile = d / "lab.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    if _alive(pid) and _comm(pid) == _COMM[kind]:
        raise LabError(f"{kind}: {d} is in use by running PID {pid}; use another root")


def _spawn(cmd: list[str], log: Path, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a server in its own session, output appended to ``log``, stdin from /dev/null."""
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=cwd, env=env, start_new_session=True, close_fds=True)
    _CHILDREN[proc.pid] = proc
    return proc


@dataclass
class Server:
    """A running lab server: ``pid`` is the main (master) process, leader of its own session.

    ``root`` is the server's own directory (config, data, logs).
    """

    name: str
    pid: int
    ports: dict[str, int]
    host: str
    root: Path

    @property
    def kind(self) -> str:
        """Server kind: dovecot, slapd, postfix, nginx or dnsmasq."""
        return self.name.split("-")[0]

    def stop(self) -> None:
        """Stop the server by its recorded PID and wait until it and its session are gone."""
        stop_servers([self])


def _is_ours(server: Server) -> bool:
    if server.pid in _CHILDREN:
        return True
    expected = _COMM.get(server.kind)
    return expected is None or _comm(server.pid) == expected


def stop_servers(servers: Iterable[Server], timeout: float = STOP_TIMEOUT) -> None:
    """Stop several servers in parallel (signal all, then wait; SIGKILL after ``timeout``)."""
    servers = [s for s in servers if _alive(s.pid) and _is_ours(s)]
    for server in servers:
        try:
            os.kill(server.pid, _STOP_SIGNAL.get(server.kind, signal.SIGTERM))
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    pending = list(servers)
    while pending and time.monotonic() < deadline:
        pending = [s for s in pending if _alive(s.pid) or _session_members(s.pid)]
        if pending:
            time.sleep(0.05)
    for server in pending:  # stragglers: kill the whole session we started
        for pid in [server.pid, *_session_members(server.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    kill_deadline = time.monotonic() + 5.0
    while pending and time.monotonic() < kill_deadline:
        pending = [s for s in pending if _alive(s.pid) or _session_members(s.pid)]
        if pending:
            time.sleep(0.05)
    for server in servers:
        proc = _CHILDREN.pop(server.pid, None)
        if proc is not None:
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
    if pending:
        raise LabError(f"{pending[0].name}: PID {pending[0].pid} still running after SIGKILL")


def _launch(name: str, root: Path, host: str, port_names: list[str],
            prepare: Callable[[dict[str, int]], list[str]], logs: list[Path],
            banner: tuple[str, bytes] | None = None, udp: bool = False,
            env: dict[str, str] | None = None, after: Callable[[Server], None] | None = None
            ) -> Server:
    """Pick free ports, write the config (``prepare`` returns the command), start, wait ready.

    Retries with new ports if a port was taken in between; never leaves a half-started server.
    """
    for attempt in range(3):
        ports = dict(zip(port_names, _free_ports(len(port_names), host, udp), strict=True))
        cmd = prepare(ports)
        proc = _spawn(cmd, logs[0], cwd=root, env=env)
        server = Server(name, proc.pid, ports, host, root)
        (root / "lab.pid").write_text(f"{proc.pid}\n")
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            for pname, port in ports.items():
                want = banner[1] if banner and banner[0] == pname else None
                while not _connect_once(host, port, want, 1.0):
                    if proc.poll() is not None:
                        raise LabError(f"{name}: exited with rc {proc.returncode} during startup"
                                       f" [{_tail(*logs)}]")
                    if time.monotonic() >= deadline:
                        raise LabError(f"{name}: {host}:{pname}={port} not ready after "
                                       f"{READY_TIMEOUT} s [{_tail(*logs)}]")
                    time.sleep(0.03)
                # someone else may have taken the port between free_port() and our bind
                if not _session_owns(proc.pid, _listen_inodes(host, port)):
                    raise LabError(f"{name}: {host}:{port} ({pname}) already in use by another"
                                   f" process [{_tail(*logs)}]")
            if after is not None:
                after(server)
            return server
        except LabError as exc:
            stop_servers([server])
            if attempt == 2 or "in use" not in str(exc).lower():
                raise
        except BaseException:
            stop_servers([server])
            raise
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# certificates


@dataclass
class Certs:
    """PEM files under <root>/tls made with the openssl CLI."""

    ca: Path
    cert: Path
    key: Path
    expiring_cert: Path
    expiring_key: Path
    expired_cert: Path
    expired_key: Path
    rogue_cert: Path
    rogue_key: Path

    def pair(self, variant: str) -> tuple[Path, Path]:
        """(cert, key) for ``variant`` in good/expiring/expired/rogue."""
        pairs = {"good": (self.cert, self.key),
                 "expiring": (self.expiring_cert, self.expiring_key),
                 "expired": (self.expired_cert, self.expired_key),
                 "rogue": (self.rogue_cert, self.rogue_key)}
        if variant not in pairs:
            raise LabError(f"unknown cert variant {variant!r} (use one of {CERT_VARIANTS})")
        return pairs[variant]


_CA_CNF = """\
[ req ]
distinguished_name = req_dn
prompt = no
[ req_dn ]
CN = unused
[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ ca ]
default_ca = lab_ca
[ lab_ca ]
dir = {dir}
database = $dir/index.txt
serial = $dir/serial
new_certs_dir = $dir/newcerts
certificate = $dir/ca.pem
private_key = $dir/ca.key
default_md = sha256
default_days = 3650
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
[ policy_any ]
commonName = supplied
[ server_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {san}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


def _asn1_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%y%m%d%H%M%SZ")


def _make_ca(ca_dir: Path, cn: str, log: Path) -> Path:
    """Create a CA (key, self-signed cert, openssl ca database) in ``ca_dir``."""
    _fresh_dir(ca_dir)
    _mkdir(ca_dir / "newcerts", 0o700)
    (ca_dir / "index.txt").write_text("")
    (ca_dir / "serial").write_text(os.urandom(8).hex().upper() + "\n")
    cnf = _write(ca_dir / "ca.cnf", _CA_CNF.format(dir=ca_dir, san=SAN))
    _run("certs", ["openssl", "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes",
                   "-config", str(cnf), "-extensions", "v3_ca", "-subj", f"/CN={cn}",
                   "-days", "3650", "-keyout", str(ca_dir / "ca.key"),
                   "-out", str(ca_dir / "ca.pem")], log=log)
    (ca_dir / "ca.key").chmod(0o600)
    return ca_dir / "ca.pem"


def _issue(ca_dir: Path, cert: Path, key: Path, start: dt.datetime, end: dt.datetime,
           log: Path) -> None:
    """Issue a server cert (CN=localhost, lab SANs) from the CA in ``ca_dir``."""
    cnf = ca_dir / "ca.cnf"
    csr = cert.with_suffix(".csr")
    _run("certs", ["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-config", str(cnf),
                   "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(csr)], log=log)
    key.chmod(0o600)
    _run("certs", ["openssl", "ca", "-batch", "-config", str(cnf), "-extensions", "server_ext",
                   "-notext", "-startdate", _asn1_time(start), "-enddate", _asn1_time(end),
                   "-in", str(csr), "-out", str(cert)], log=log)
    cert.chmod(0o644)
    csr.unlink()


def _valid_for(cert: Path, seconds: int) -> bool:
    res = subprocess.run(["openssl", "x509", "-checkend", str(seconds), "-noout", "-in", str(cert)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return res.returncode == 0


def make_certs(root: Path) -> Certs:
    """Create (or reuse) the lab CA and the good/expiring/expired/rogue server certs.

    Idempotent: existing files are reused; the expiring cert is re-issued when it has
    less than 4 days left.
    """
    tls = _mkdir(Path(root) / "tls")
    _make_traversable(tls)
    log = tls / "openssl.log"
    certs = Certs(ca=tls / "ca.pem", cert=tls / "cert.pem", key=tls / "key.pem",
                  expiring_cert=tls / "expiring-cert.pem", expiring_key=tls / "expiring-key.pem",
                  expired_cert=tls / "expired-cert.pem", expired_key=tls / "expired-key.pem",
                  rogue_cert=tls / "rogue-cert.pem", rogue_key=tls / "rogue-key.pem")
    now = dt.datetime.now(dt.UTC)
    ca_dir, rogue_dir = tls / "ca", tls / "rogue-ca"
    if not (certs.ca.exists() and (ca_dir / "ca.key").exists()):
        for path in (certs.cert, certs.expiring_cert, certs.expired_cert):
            path.unlink(missing_ok=True)
        shutil.copyfile(_make_ca(ca_dir, "kolabmon lab CA", log), certs.ca)
    if not (rogue_dir / "ca.key").exists():
        certs.rogue_cert.unlink(missing_ok=True)
        _make_ca(rogue_dir, "kolabmon rogue CA", log)
    hour, day = dt.timedelta(hours=1), dt.timedelta(days=1)
    wanted = [
        (ca_dir, certs.cert, certs.key, now - hour, now + 3650 * day, 3000 * 86400),
        (ca_dir, certs.expiring_cert, certs.expiring_key, now - hour, now + 5 * day, 4 * 86400),
        (ca_dir, certs.expired_cert, certs.expired_key, now - 30 * day, now - day, None),
        (rogue_dir, certs.rogue_cert, certs.rogue_key, now - hour, now + 3650 * day, 3000 * 86400),
    ]
    for ca, cert, key, start, end, min_left in wanted:
        fresh = cert.exists() and key.exists() and (min_left is None or _valid_for(cert, min_left))
        if not fresh:
            _issue(ca, cert, key, start, end, log)
    return certs


# ---------------------------------------------------------------------------------------------
# Dovecot


@functools.lru_cache(maxsize=1)
def dovecot_version() -> tuple[int, int]:
    """(major, minor) of the installed Dovecot."""
    out = _run("dovecot", ["dovecot", "--version"])
    major, minor = out.split()[0].split(".")[:2]
    return int(major), int(minor)


def _dovecot_conf(d: Path, host: str, ports: dict[str, int], cert: Path, key: Path,
                  name: str) -> str:
    """Standalone dovecot.conf in the syntax of the release's Dovecot (2.3 or 2.4)."""
    v24 = release.current().dovecot_24_config
    addr = "listen" if v24 else "address"
    head = (
        "dovecot_config_version = 2.4.0\ndovecot_storage_version = 2.4.0\n" if v24 else ""
    )
    if v24:
        tls = (f"ssl = yes\nssl_server_cert_file = {cert}\nssl_server_key_file = {key}\n"
               "ssl_min_protocol = TLSv1.2\nauth_allow_cleartext = yes\n")
        dbs = (f"passdb passwd-file {{\n  default_password_scheme = PLAIN\n"
               f"  passwd_file_path = {d}/users\n}}\n"
               f"userdb passwd-file {{\n  passwd_file_path = {d}/users\n}}\n"
               "mail_driver = maildir\nmail_path = ~/Maildir\n"
               "namespace inbox {\n  inbox = yes\n}\n")
    else:
        tls = (f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\nssl_dh = <{DOVECOT_DH}\n"
               "ssl_min_protocol = TLSv1.2\ndisable_plaintext_auth = no\n")
        dbs = (f"passdb {{\n  driver = passwd-file\n"
               f"  args = scheme=PLAIN username_format=%u {d}/users\n}}\n"
               f"userdb {{\n  driver = passwd-file\n  args = username_format=%u {d}/users\n}}\n"
               "mail_location = maildir:~/Maildir\n"
               # no anvil auth penalty: login_trusted_networks alone does not lift it on 2.3
               "service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}\n")
    return f"""\
{head}# kolabmon lab Dovecot ({name}); standalone, no !include of /etc/dovecot
instance_name = kolabmon-{name}
base_dir = {d}/run
state_dir = {d}/state
protocols = imap lmtp
listen = {host}
log_path = {d}/dovecot.log
auth_verbose = yes
{tls}auth_mechanisms = plain login
{dbs}first_valid_uid = {MAIL_UID}
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8

service imap-login {{
  inet_listener imap {{
    {addr} = {host}
    port = {ports['imap']}
  }}
  inet_listener imaps {{
    {addr} = {host}
    port = {ports['imaps']}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    {addr} = {host}
    port = {ports['lmtp']}
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@{LAB_DOMAIN}
}}
# SASL for Postfix (smtpd_sasl_type = dovecot) over TCP
service auth {{
  inet_listener auth-inet {{
    {addr} = {host}
    port = {ports['auth']}
  }}
}}
"""


def seed_messages(server: Server, user: str, n: int) -> None:
    """Deliver ``n`` small messages to ``user`` through the Dovecot's LMTP port."""
    try:
        with smtplib.LMTP(server.host, server.ports["lmtp"], timeout=10) as lmtp:
            for i in range(1, n + 1):
                msg = EmailMessage()
                msg["From"] = f"lab@{LAB_DOMAIN}"
                msg["To"] = user
                msg["Subject"] = f"lab seed message {i}"
                msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
                msg["Message-ID"] = make_msgid(domain=LAB_DOMAIN)
                msg.set_content(f"Seed message {i} for {user}.\n")
                lmtp.sendmail(f"lab@{LAB_DOMAIN}", [user], msg.as_bytes())
    except (OSError, smtplib.SMTPException) as exc:
        raise LabError(f"{server.name}: LMTP delivery to {user} failed: {exc}"
                       f" [{_tail(server.root / 'dovecot.log')}]") from exc


def start_dovecot(root: Path, certs: Certs, cert: str = "good",
                  host: str = "127.0.0.1") -> Server:
    """Start Dovecot (imap, imaps, lmtp, auth) serving the ``cert`` variant's certificate.

    Own instance under <root>/dovecot-<cert>; mail is reset and user1's INBOX gets 3 messages.
    """
    cert_file, key_file = certs.pair(cert)
    name = "dovecot" if cert == "good" else f"dovecot-{cert}"
    d = _mkdir(Path(root) / f"dovecot-{cert}")
    _make_traversable(d)
    _claim(d, "dovecot")
    for sub in ("run", "state", "mail"):
        _fresh_dir(d / sub)
    os.chown(d / "mail", MAIL_UID, MAIL_UID)
    _write(d / "users", "".join(
        f"{user}:{{PLAIN}}{pw}:{MAIL_UID}:{MAIL_UID}::{d}/mail/{user}\n"
        for user, pw in USERS.items()), 0o640)
    shutil.chown(d / "users", "root", "dovecot")
    log, out = d / "dovecot.log", d / "dovecot.out"
    for path in (log, out):
        path.write_text("")
    conf = d / "dovecot.conf"

    def prepare(ports: dict[str, int]) -> list[str]:
        _write(conf, _dovecot_conf(d, host, ports, cert_file, key_file, name))
        _run(name, ["dovecot", "-n", "-c", str(conf)])
        return ["dovecot", "-F", "-c", str(conf)]

    return _launch(name, d, host, ["imap", "imaps", "lmtp", "auth"], prepare, [out, log],
                   banner=("imap", b"* OK"),
                   after=lambda s: seed_messages(s, "user1@example.org", 3))


# ---------------------------------------------------------------------------------------------
# slapd


def _ldap_ldif() -> str:
    entries = [
        f"dn: {LDAP_BASE}\nobjectClass: dcObject\nobjectClass: organization\n"
        "o: Example Org\ndc: example\n",
        f"dn: ou=People,{LDAP_BASE}\nobjectClass: organizationalUnit\nou: People\n",
        f"dn: ou=Special Users,{LDAP_BASE}\nobjectClass: organizationalUnit\nou: Special Users\n",
        f"dn: {LDAP_SERVICE_DN}\nobjectClass: inetOrgPerson\nuid: kolab-service\n"
        f"cn: Kolab Service\nsn: Service\nuserPassword: {_ssha(LDAP_SERVICE_PASSWORD)}\n",
    ]
    for n, (mail, password) in enumerate(USERS.items(), start=1):
        uid = mail.split("@")[0]
        entries.append(
            f"dn: uid={uid},ou=People,{LDAP_BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
            f"cn: User {n}\nsn: User{n}\ngivenName: User\nmail: {mail}\n"
            f"userPassword: {_ssha(password)}\n")
    return "\n".join(entries)


def start_slapd(root: Path, certs: Certs, cert: str = "good", host: str = "127.0.0.1") -> Server:
    """Start slapd (ldap with StartTLS, ldaps) with the lab directory loaded by slapadd.

    Anonymous users can read only the root DSE and schema; bound users (the service DN, users)
    can read the tree; passwords are only usable for binding.
    """
    cert_file, key_file = certs.pair(cert)
    name = "slapd" if cert == "good" else f"slapd-{cert}"
    d = _mkdir(Path(root) / f"slapd-{cert}")
    _make_traversable(d)
    _claim(d, "slapd")
    db = _fresh_dir(d / "db")
    db.chmod(0o700)
    out = d / "slapd.log"
    out.write_text("")
    conf = d / "slapd.conf"
    _write(conf, f"""\
include   /etc/ldap/schema/core.schema
include   /etc/ldap/schema/cosine.schema
include   /etc/ldap/schema/nis.schema
include   /etc/ldap/schema/inetorgperson.schema
pidfile   {d}/slapd.pid
argsfile  {d}/slapd.args
TLSCertificateFile {cert_file}
TLSCertificateKeyFile {key_file}
modulepath /usr/lib/ldap
moduleload back_mdb
database  mdb
maxsize   104857600
suffix    "{LDAP_BASE}"
rootdn    "{LDAP_ADMIN_DN}"
rootpw    {_ssha(LDAP_ADMIN_PASSWORD)}
directory {db}
index     objectClass eq
index     uid,mail eq
access to dn.base="" by * read
access to dn.base="cn=Subschema" by * read
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by anonymous auth
""", 0o600)
    ldif = _write(d / "base.ldif", _ldap_ldif(), 0o600)
    _run(name, ["slaptest", "-u", "-f", str(conf)], log=out)
    _run(name, ["slapadd", "-q", "-f", str(conf), "-l", str(ldif)], log=out)

    def prepare(ports: dict[str, int]) -> list[str]:
        urls = f"ldap://{host}:{ports['ldap']}/ ldaps://{host}:{ports['ldaps']}/"
        # "-d none": stay in the foreground, log only errors (to the log file)
        return ["slapd", "-d", "none", "-f", str(conf), "-h", urls]

    return _launch(name, d, host, ["ldap", "ldaps"], prepare, [out])


# ---------------------------------------------------------------------------------------------
# Postfix

_POSTFIX_MASTER_CF = """\
{host}:{smtp} inet n - n - - smtpd
{host}:{smtps} inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def start_postfix(root: Path, certs: Certs, dovecot: Server, host: str = "127.0.0.1") -> Server:
    """Start Postfix (smtp with STARTTLS, smtps) delivering example.org to ``dovecot``'s LMTP.

    AUTH (Dovecot SASL over TCP) only after TLS; outbound mail is an error (550 at RCPT).
    """
    d = _mkdir(Path(root) / "postfix")
    _make_traversable(d)
    _claim(d, "postfix")
    etc = _fresh_dir(d / "etc")
    spool = _fresh_dir(d / "spool")
    data = _fresh_dir(d / "data")
    shutil.chown(data, "postfix", "postfix")
    maillog, out = d / "maillog", d / "postfix.out"
    for path in (maillog, out):
        path.write_text("")
    _write(etc / "vmailbox", "".join(f"{user} lmtp\n" for user in USERS))
    dv_host = dovecot.host
    # 127.0.0.2.. are not interface addresses; Postfix only accepts those here
    interfaces = "loopback-only" if host.startswith("127.") else host

    def prepare(ports: dict[str, int]) -> list[str]:
        _write(etc / "master.cf", _POSTFIX_MASTER_CF.format(host=host, **ports))
        _write(etc / "main.cf", f"""\
compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {maillog}
maillog_file_prefixes = /var, /dev/stdout, {d}
myhostname = lab.{LAB_DOMAIN}
mydomain = {LAB_DOMAIN}
myorigin = $mydomain
mydestination =
inet_interfaces = {interfaces}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
biff = no
relayhost =
default_transport = error:outbound mail disabled in lab
relay_transport = error:outbound mail disabled in lab
virtual_mailbox_domains = {LAB_DOMAIN}
virtual_mailbox_maps = texthash:{etc}/vmailbox
virtual_transport = lmtp:inet:{dv_host}:{dovecot.ports['lmtp']}
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:{dv_host}:{dovecot.ports['auth']}
smtpd_tls_auth_only = yes
smtpd_tls_security_level = may
smtpd_tls_cert_file = {certs.cert}
smtpd_tls_key_file = {certs.key}
smtpd_tls_loglevel = 1
smtp_tls_security_level = none
""")
        past = time.time() - 60  # Postfix waits for a main.cf modified "now" to settle
        for path in etc.iterdir():
            os.utime(path, (past, past))
        _run_with_tty("postfix", ["postfix", "-c", str(etc), "check"], out)
        return [str(POSTFIX_MASTER), "-c", str(etc)]

    return _launch("postfix", d, host, ["smtp", "smtps"], prepare, [out, maillog],
                   banner=("smtp", b"220 "))


# ---------------------------------------------------------------------------------------------
# nginx (free/busy)


def write_freebusy(server: Server, user: str, dtstamp: dt.datetime | None = None,
                   body: str | None = None) -> Path:
    """Write <nginx root>/html/freebusy/<user>.ifb: a VFREEBUSY, or the raw ``body`` if given.

    DTSTAMP is ``dtstamp`` (default now); DTSTART/DTEND (and one busy hour tomorrow) are
    relative to it. Lines end with CRLF.
    """
    path = server.root / "html" / "freebusy" / f"{user}.ifb"
    if body is None:
        base = (dtstamp or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
        busy = (base + dt.timedelta(days=1)).replace(minute=0, second=0)

        def fmt(t: dt.datetime) -> str:
            return t.strftime("%Y%m%dT%H%M%SZ")

        lines = [
            "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//kolabmon lab//freebusy//EN",
            "METHOD:PUBLISH", "BEGIN:VFREEBUSY", f"ORGANIZER:mailto:{user}",
            f"DTSTAMP:{fmt(base)}", f"DTSTART:{fmt(base)}",
            f"DTEND:{fmt(base + dt.timedelta(days=56))}",
            f"FREEBUSY;FBTYPE=BUSY:{fmt(busy)}/{fmt(busy + dt.timedelta(hours=1))}",
            "END:VFREEBUSY", "END:VCALENDAR",
        ]
        body = "\r\n".join(lines) + "\r\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(body.encode())
    tmp.chmod(0o644)
    tmp.replace(path)
    return path


def start_nginx(root: Path, certs: Certs, host: str = "127.0.0.1") -> Server:
    """Start nginx (http, https) serving /freebusy/<user>.ifb with basic auth, and /health."""
    d = _mkdir(Path(root) / "nginx")
    _make_traversable(d)
    _claim(d, "nginx")
    conf_dir = _fresh_dir(d / "conf")
    logs = _fresh_dir(d / "logs")
    tmp = _fresh_dir(d / "tmp")
    html = _mkdir(d / "html")
    fb = _fresh_dir(html / "freebusy")
    htpasswd = conf_dir / "htpasswd"
    for i, (user, pw) in enumerate(USERS.items()):
        flags = "-bcB" if i == 0 else "-bB"
        _run("nginx", ["htpasswd", flags, str(htpasswd), user, pw], log=logs / "setup.log")
    htpasswd.chmod(0o644)
    error_log, out = logs / "error.log", logs / "nginx.out"
    conf = conf_dir / "nginx.conf"

    def prepare(ports: dict[str, int]) -> list[str]:
        _write(conf, f"""\
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {error_log} info;
events {{ worker_connections 64; }}
http {{
    access_log {logs}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ text/calendar ifb ics; text/plain txt; text/html html; }}
    default_type application/octet-stream;
    server {{
        listen {host}:{ports['http']};
        listen {host}:{ports['https']} ssl;
        server_name localhost;
        ssl_certificate {certs.cert};
        ssl_certificate_key {certs.key};
        root {html};
        location = /health {{ return 200 "ok\\n"; }}
        location /freebusy/ {{
            auth_basic "Kolab Free/Busy";
            auth_basic_user_file {htpasswd};
        }}
    }}
}}
""")
        _run("nginx", ["nginx", "-t", "-q", "-p", f"{d}/", "-c", str(conf), "-e", str(error_log)],
             log=out)
        return ["nginx", "-p", f"{d}/", "-c", str(conf), "-e", str(error_log)]

    server = _launch("nginx", d, host, ["http", "https"], prepare, [out, error_log])
    fb.chmod(0o755)
    for user in USERS:
        write_freebusy(server, user)
    return server


# ---------------------------------------------------------------------------------------------
# dnsmasq


def _dnsmasq_args(records: dict[str, list[tuple[str, ...]]]) -> list[str]:
    """dnsmasq options for ``records`` (types A, AAAA, MX, SRV, CNAME, TXT)."""
    opts = {"A": "--host-record", "AAAA": "--host-record", "MX": "--mx-host",
            "SRV": "--srv-host", "CNAME": "--cname", "TXT": "--txt-record"}
    args = []
    for rtype, entries in records.items():
        if rtype.upper() not in opts:
            raise LabError(f"dnsmasq: unsupported record type {rtype!r}")
        for entry in entries:
            args.append(f"{opts[rtype.upper()]}={','.join(str(x) for x in entry)}")
    return args


def start_dnsmasq(root: Path, records: dict[str, list[tuple[str, ...]]] | None = None,
                  host: str = "127.0.0.1") -> Server:
    """Start dnsmasq answering only ``records`` (default DEFAULT_DNS_RECORDS) on UDP+TCP "dns".

    ``records`` maps a type to tuples: A/AAAA (name, addr), MX (name, target, pref),
    SRV (name, target, port[, prio, weight]), CNAME (alias, target), TXT (name, text).
    Nothing is forwarded (--no-resolv).
    """
    d = _mkdir(Path(root) / "dnsmasq")
    _make_traversable(d)
    _claim(d, "dnsmasq")
    out = d / "dnsmasq.log"
    out.write_text("")
    extra = _dnsmasq_args(DEFAULT_DNS_RECORDS if records is None else records)

    def prepare(ports: dict[str, int]) -> list[str]:
        return ["dnsmasq", "--no-daemon", "--keep-in-foreground", f"--port={ports['dns']}",
                f"--listen-address={host}", "--bind-interfaces", "--no-resolv", "--no-hosts",
                "--conf-file=/dev/null", *extra]

    return _launch("dnsmasq", d, host, ["dns"], prepare, [out], udp=True)


# ---------------------------------------------------------------------------------------------
# packages


_PRESEED = """\
postfix postfix/main_mailer_type select Local only
postfix postfix/mailname string lab.example.org
slapd slapd/no_configuration boolean true
"""


def install_packages() -> None:
    """apt-get install the missing PACKAGES (no recommends, no daemons started); no-op if none."""
    res = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", *PACKAGES],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False)
    installed = {line.split()[0] for line in res.stdout.splitlines()
                 if len(line.split()) > 1 and line.split()[1] == "ii"}
    missing = [p for p in PACKAGES if p not in installed]
    if not missing:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run("apt", ["debconf-set-selections"], input=_PRESEED.encode(), env=env)
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:  # keep postinst scripts from starting the default daemons
        _write(policy, "#!/bin/sh\nexit 101\n", 0o755)
    try:
        _run("apt", ["apt-get", "-o", "DPkg::Lock::Timeout=900", "update"], env=env, timeout=900)
        _run("apt", ["apt-get", "install", "-y", "--no-install-recommends",
                     "-o", "DPkg::Lock::Timeout=900", *missing], env=env, timeout=1800)
    finally:
        if created:
            policy.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# CLI


def _server_from_json(name: str, entry: dict[str, Any], root: Path) -> Server:
    return Server(name=name, pid=int(entry["pid"]),
                  ports={str(k): int(v) for k, v in entry["ports"].items()},
                  host=str(entry["host"]), root=Path(entry.get("root", root)))


def _load(directory: Path) -> list[Server]:
    state = directory / "servers.json"
    if not state.exists():
        return []
    data = json.loads(state.read_text())
    return [_server_from_json(name, entry, directory) for name, entry in data.items()
            if isinstance(entry, dict) and "pid" in entry]


def _save(directory: Path, started: list[Server], certs: Certs,
          timings: dict[str, float]) -> dict[str, object]:
    """Write ``directory``/servers.json atomically and return its content."""
    state: dict[str, object] = {
        s.name: {"pid": s.pid, "host": s.host, "ports": s.ports, "root": str(s.root)}
        for s in started
    }
    state["certs"] = {k: str(v) for k, v in vars(certs).items()}
    state["startup_seconds"] = {k: round(v, 3) for k, v in timings.items()}
    tmp = directory / "servers.json.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(directory / "servers.json")
    return state


def up(directory: Path) -> dict[str, object]:
    """Start all five servers under ``directory`` and write ``directory``/servers.json.

    servers.json maps each server name to {pid, host, ports, root}; "certs" holds the
    certificate paths and "startup_seconds" the measured start times. On any failure or
    Ctrl-C the servers started so far are stopped again.
    """
    directory = _mkdir(Path(directory).resolve())
    running = [s for s in _load(directory) if _alive(s.pid) and _is_ours(s)]
    if running:
        raise LabError(f"lab: {directory} already up ({running[0].name} PID {running[0].pid});"
                       " run 'down' first")
    started: list[Server] = []
    timings: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        certs = make_certs(directory)
        timings["certs"] = time.monotonic() - t0
        steps: list[tuple[str, Callable[[], Server]]] = [
            ("dovecot", lambda: start_dovecot(directory, certs)),
            ("slapd", lambda: start_slapd(directory, certs)),
            ("postfix", lambda: start_postfix(directory, certs, started[0])),
            ("nginx", lambda: start_nginx(directory, certs)),
            ("dnsmasq", lambda: start_dnsmasq(directory)),
        ]
        for label, start in steps:
            t0 = time.monotonic()
            started.append(start())
            timings[label] = time.monotonic() - t0
            state = _save(directory, started, certs, timings)
    except BaseException:
        stop_servers(started)
        (directory / "servers.json").unlink(missing_ok=True)
        raise
    return state


def down(directory: Path) -> list[str]:
    """Stop exactly the servers recorded in ``directory``/servers.json; return their names."""
    directory = Path(directory).resolve()
    servers = _load(directory)
    stop_servers(servers)
    (directory / "servers.json").unlink(missing_ok=True)
    return [s.name for s in servers]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: ``up DIR`` or ``down DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("up", "down"):
        print("usage: servers.py up|down DIR", file=sys.stderr)
        return 2
    try:
        if args[0] == "up":
            print(json.dumps(up(Path(args[1])), indent=2))
        else:
            print("stopped:", " ".join(down(Path(args[1]))) or "nothing")
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the servers started so far were stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
