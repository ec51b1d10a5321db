"""Postfix (smtp with STARTTLS, smtps, and submission in the cluster) delivering example.org over
LMTP to Cyrus (SMTP AUTH through Cyrus SASL and saslauthd, as Kolab runs it) or to Dovecot (its
SASL): main.cf and master.cf, written once for the single-host lab and the cluster, and a
single-host instance on loopback."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from lab.accounts import LAB_DOMAIN, USERS
from lab.launch import Server, claim, launch
from lab.saslauthd import smtpd_conf
from lab.tls import Certs
from lab.util import fresh_dir, make_traversable, mkdir, run_with_tty, write

POSTFIX_MASTER = Path("/usr/lib/postfix/sbin/master")

_SERVICES = """\
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


def master_cf(host: str, ports: dict[str, int]) -> str:
    """master.cf: smtpd on ``host`` at ports smtp and smtps (wrapper mode), and at submission
    (TLS required, AUTH only) when ``ports`` has one."""
    listeners = f"""\
{host}:{ports['smtp']} inet n - n - - smtpd
{host}:{ports['smtps']} inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
"""
    submission = f"""\
{host}:{ports['submission']} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
""" if "submission" in ports else ""
    return listeners + _SERVICES + submission


def dovecot_sasl(host: str, port: int) -> str:
    """main.cf's SASL lines for Dovecot's auth service over TCP."""
    return f"smtpd_sasl_type = dovecot\nsmtpd_sasl_path = inet:{host}:{port}\n"


def cyrus_sasl(etc: Path) -> str:
    """main.cf's SASL lines for Cyrus SASL, whose smtpd.conf (lab/saslauthd.py) is ``etc``/sasl/:
    Debian 12's Postfix looks there and ignores cyrus_sasl_config_path, 13's honours only that."""
    return f"smtpd_sasl_type = cyrus\nsmtpd_sasl_path = smtpd\ncyrus_sasl_config_path = {etc}/sasl\n"


def main_cf(d: Path, host: str, lmtp: str, sasl: str, cert: Path, key: Path, maillog: Path,
            myhostname: str, peername_lookup: bool = True) -> str:
    """main.cf for a Postfix whose etc/, spool/ and data/ are under ``d``, listening on ``host``,
    delivering to the LMTP server at ``lmtp`` (``inet:HOST:PORT`` or ``unix:PATH``) and authenticating through ``sasl``
    (dovecot_sasl or cyrus_sasl).

    AUTH only after TLS; outbound mail is an error (550 at RCPT).
    """
    # 127.0.0.2.. are not interface addresses; Postfix only accepts those here
    interfaces = "loopback-only" if host.startswith("127.") else host
    # no resolver in the cluster lab: a reverse lookup of each client would only time out
    lookups = "" if peername_lookup else "smtpd_peername_lookup = no\n"
    return f"""\
compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = {maillog}
maillog_file_prefixes = /var, /dev/stdout, {maillog.parent}
myhostname = {myhostname}
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
virtual_mailbox_maps = texthash:{d}/etc/vmailbox
virtual_transport = lmtp:{lmtp}
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_sasl_auth_enable = yes
{sasl}smtpd_tls_auth_only = yes
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_loglevel = 1
smtp_tls_security_level = none
{lookups}"""


def write_config(etc: Path, main: str, master: str, smtpd_conf: str | None = None) -> None:
    """Write main.cf, master.cf, vmailbox (the lab's USERS) and, for Cyrus SASL, sasl/smtpd.conf
    into ``etc``, dated a minute back: Postfix waits for a main.cf modified "now" to settle."""
    write(etc / "main.cf", main)
    write(etc / "master.cf", master)
    write(etc / "vmailbox", "".join(f"{user} lmtp\n" for user in USERS))
    if smtpd_conf is not None:
        write(mkdir(etc / "sasl") / "smtpd.conf", smtpd_conf)
    past = time.time() - 60
    for path in etc.iterdir():
        os.utime(path, (past, past))


def start_postfix(root: Path, certs: Certs, imap: Server, host: str = "127.0.0.1",
                  mux: Path | None = None) -> Server:
    """Start Postfix (smtp with STARTTLS, smtps) delivering example.org to ``imap``'s LMTP port,
    with SMTP AUTH through the saslauthd at ``mux`` (Cyrus, as Kolab) or else Dovecot's SASL."""
    name = "postfix" if imap.kind == "dovecot" else f"postfix-{imap.kind}"
    d = mkdir(Path(root) / name)
    make_traversable(d)
    claim(d, "postfix")
    etc = fresh_dir(d / "etc")
    fresh_dir(d / "spool")
    data = fresh_dir(d / "data")
    shutil.chown(data, "postfix", "postfix")
    maillog, out = d / "maillog", d / "postfix.out"
    for path in (maillog, out):
        path.write_text("")
    sasl = cyrus_sasl(etc) if mux else dovecot_sasl(imap.host, imap.ports["auth"])

    def prepare(ports: dict[str, int]) -> list[str]:
        main = main_cf(d, host, f"inet:{imap.host}:{imap.ports['lmtp']}", sasl, certs.cert, certs.key, maillog,
                       f"lab.{LAB_DOMAIN}")
        write_config(etc, main, master_cf(host, ports), smtpd_conf(mux) if mux else None)
        run_with_tty(name, ["postfix", "-c", str(etc), "check"], out)
        return [str(POSTFIX_MASTER), "-c", str(etc)]

    return launch(name, d, host, ["smtp", "smtps"], prepare, [out, maillog],
                  banner=("smtp", b"220 "))
