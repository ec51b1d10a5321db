"""Cyrus IMAP as Kolab runs it (saslauthd against LDAP, Postfix delivering over LMTP): its
imapd.conf and cyrus.conf, written once for the single-host lab and the cluster, mailboxes created
by Cyrus's admin through Cyrus's own admin module, and a single-host instance on loopback.

Kolab's choices (Kolab 3 and later): users log in with their mail address (``virtdomains:
userid``), "/" separates folders (``unixhierarchysep``), so user1's INBOX is the mailbox
``user/user1@example.org``; logins go to saslauthd; ``cyrus-admin`` is the admin. The lab differs
only in allowing plain LOGIN without TLS (``allowplaintext``), which its probes test.

Debian's cyrus-imapd package conflicts with dovecot-imapd, so the lab installs cyrus-common (master,
lmtpd, tools) and runs the imapd that lab/setup.sh unpacked from the cyrus-imapd .deb (IMAPD).
Every Cyrus process is given ``-C``: the master does not pass its config on. Cyrus logs only to
syslog(3); the master's own stderr (startup errors) goes to the server's log file.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from lab import release
from lab.accounts import CYRUS_ADMIN, CYRUS_ADMIN_PASSWORD, USERS
from lab.launch import Server, claim, launch
from lab.seed import seed_messages
from lab.tls import Certs
from lab.util import LabError, fresh_dir, make_traversable, mkdir, run, write

CYRUS_BIN = Path("/usr/lib/cyrus/bin")
MASTER = CYRUS_BIN / "master"
# lab/setup.sh keeps this link on the unpacked imapd of the installed cyrus-common's version
IMAPD = Path("/usr/local/lib/kolabmon-lab/cyrus-imapd/usr/lib/cyrus/bin/imapd")
OWNER = ("cyrus", "mail")  # the master drops to this user; its children own the store
# what configdirectory must hold before the first start (Debian's makedirs reads /etc/imapd.conf only)
_CONFIG_DIRS = ("db", "socket", "log", "msg", "user", "quota", "ptclient")


def cyrus_version() -> str:
    """The installed Cyrus's version (of cyrus-common, whose imapd lab/setup.sh unpacked)."""
    return run("cyrus", ["dpkg-query", "-W", "-f=${Version}", "cyrus-common"]).strip()


def mailbox(user: str) -> str:
    """The Cyrus mailbox name of ``user``'s INBOX (``user/user1@example.org``)."""
    return f"user/{user}"


def imapd_conf(d: Path, run_dir: Path, mux: Path, cert: Path, key: Path, name: str) -> str:
    """imapd.conf: config and partition under ``d``, sockets, locks and proc files under
    ``run_dir`` (node-private in the cluster), logins through the saslauthd at ``mux``."""
    starttls = "imap_allowstarttls: on\n" if release.current().cyrus_allowstarttls else ""
    return f"""\
# kolabmon lab Cyrus IMAP ({name}); Kolab's settings, plus plain LOGIN allowed without TLS
configdirectory: {d}/config
defaultpartition: default
partition-default: {d}/spool
sievedir: {d}/sieve
proc_path: {run_dir}/proc
mboxname_lockpath: {run_dir}/lock
lmtpsocket: {run_dir}/socket/lmtp
idlesocket: {run_dir}/socket/idle
notifysocket: {run_dir}/socket/notify
servername: kolab.example.org
syslog_prefix: kolabmon-{name}
admins: {CYRUS_ADMIN}
unixhierarchysep: yes
altnamespace: no
virtdomains: userid
lmtp_downcase_rcpt: yes
hashimapspool: true
umask: 077
allowplaintext: yes
sasl_pwcheck_method: saslauthd
sasl_saslauthd_path: {mux}
sasl_mech_list: PLAIN LOGIN
tls_server_cert: {cert}
tls_server_key: {key}
{starttls}"""


def cyrus_conf(conf: Path, host: str, ports: dict[str, int], lmtp_socket: Path | None = None) -> str:
    """cyrus.conf: imap (STARTTLS) and imaps on ``host``; LMTP on ``lmtp_socket`` (trusted, as Kolab
    has Postfix deliver on the same machine) or else on ``host`` at port lmtp (pre-authorised with
    -a: a TCP client is not trusted otherwise); the database checkpoint every 30 s."""
    c = f"-C {conf}"
    lmtp = (f'cmd="{CYRUS_BIN}/lmtpd {c}" listen="{lmtp_socket}"' if lmtp_socket else
            f'cmd="{CYRUS_BIN}/lmtpd -a {c}" listen="{host}:{ports["lmtp"]}"')
    return f"""\
START {{
  recover     cmd="{CYRUS_BIN}/ctl_cyrusdb {c} -r"
}}
SERVICES {{
  imap        cmd="{IMAPD} {c}" listen="{host}:{ports['imap']}" prefork=1 maxchild=50
  imaps       cmd="{IMAPD} -s {c}" listen="{host}:{ports['imaps']}" prefork=1 maxchild=50
  lmtp        {lmtp} prefork=0 maxchild=20
}}
EVENTS {{
  checkpoint  cmd="{CYRUS_BIN}/ctl_cyrusdb {c} -c" period=30
}}
"""


def lint(conf: Path) -> None:
    """LabError unless Cyrus's own `cyr_info conf-lint` finds nothing to say about ``conf``."""
    said = run("cyrus", [str(CYRUS_BIN / "cyr_info"), "-C", str(conf), "conf-lint"]).strip()
    if said:
        raise LabError(f"cyrus: cyr_info conf-lint {conf}: {said}")


def make_store(d: Path, cert: Path, key: Path) -> tuple[Path, Path]:
    """Create Cyrus's config, partition and sieve dirs under ``d`` and a copy of the TLS pair its
    children (user cyrus) can read; return that (cert, key)."""
    for sub in _CONFIG_DIRS:
        mkdir(d / "config" / sub)
    for sub in ("spool", "sieve", "tls"):
        mkdir(d / sub)
    write(d / "tls" / "cert.pem", cert.read_text())
    write(d / "tls" / "key.pem", key.read_text(), 0o600)
    chown_tree(d)
    return d / "tls" / "cert.pem", d / "tls" / "key.pem"


def make_run_dir(run_dir: Path) -> None:
    """The private runtime dirs (proc, lock, socket), owned by cyrus."""
    for sub in ("proc", "lock", "socket"):
        mkdir(run_dir / sub)
    chown_tree(run_dir)


def chown_tree(d: Path) -> None:
    for path in [d, *d.rglob("*")]:
        shutil.chown(path, *OWNER)


def master_argv(conf: Path, cyrus_conf_path: Path, pidfile: Path) -> list[str]:
    """The master in the foreground (-D keeps its stderr for startup errors)."""
    return [str(MASTER), "-C", str(conf), "-M", str(cyrus_conf_path), "-p", str(pidfile), "-D"]


# Cyrus's admin module (cyradm's own), password on stdin; CREATE of an existing mailbox is fine
_CREATE = r"""
use strict; use Cyrus::IMAP::Admin;
my ($host, $port, $admin, @boxes) = @ARGV;
my $password = <STDIN>; chomp $password;
my $c = Cyrus::IMAP::Admin->new($host, $port) or die "cannot connect to $host:$port\n";
$c->authenticate(-user => $admin, -password => $password, -mechanism => 'PLAIN')
  or die "admin login failed: " . ($c->error // 'no reason') . "\n";
for my $box (@boxes) {
  next if $c->list($box);
  $c->create($box) or die "create $box: " . $c->error . "\n";
}
"""


def create_mailboxes(host: str, port: int, users: list[str], timeout: float = 30.0) -> None:
    """Create each user's INBOX as Cyrus's admin over IMAP (what Kolab's pykolab does too)."""
    argv = ["perl", "-e", _CREATE, host, str(port), CYRUS_ADMIN,
            *(mailbox(u) for u in users)]
    try:
        res = subprocess.run(argv, input=CYRUS_ADMIN_PASSWORD + "\n", capture_output=True, text=True,
                             timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"cyrus: creating mailboxes: {exc}") from exc
    if res.returncode != 0:
        raise LabError(f"cyrus: creating mailboxes: {(res.stderr or res.stdout).strip()[-300:]}")


def start_cyrus(root: Path, certs: Certs, mux: Path, host: str = "127.0.0.1") -> Server:
    """Start Cyrus (imap with STARTTLS, imaps, LMTP) authenticating through the saslauthd at
    ``mux``; the users' mailboxes are created and user1's INBOX gets the seed messages."""
    d = mkdir(Path(root) / "cyrus")
    make_traversable(d)
    claim(d, "cyrus")
    for sub in ("config", "spool", "sieve", "run"):
        fresh_dir(d / sub)
    cert, key = make_store(d, certs.cert, certs.key)
    make_run_dir(d / "run")
    out = d / "cyrus.out"
    out.write_text("")
    conf, services = d / "imapd.conf", d / "cyrus.conf"
    write(conf, imapd_conf(d, d / "run", mux, cert, key, "cyrus"))

    def prepare(ports: dict[str, int]) -> list[str]:
        write(services, cyrus_conf(conf, host, ports))
        lint(conf)
        return master_argv(conf, services, d / "run" / "master.pid")

    def after(server: Server) -> None:
        create_mailboxes(host, server.ports["imap"], list(USERS))
        seed_messages(server, next(iter(USERS)))

    return launch("cyrus", d, host, ["imap", "imaps", "lmtp"], prepare, [out],
                  banner=("imap", b"* OK"), after=after)
