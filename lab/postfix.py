"""Postfix (smtp with STARTTLS, smtps, and submission in the cluster) delivering example.org to
Dovecot's LMTP: main.cf and master.cf, written once for the single-host lab and the cluster, and a
single-host instance on loopback."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from lab.accounts import LAB_DOMAIN, USERS
from lab.launch import Server, claim, launch
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


def main_cf(d: Path, host: str, dovecot: tuple[str, dict[str, int]], cert: Path, key: Path, maillog: Path,
            myhostname: str, peername_lookup: bool = True) -> str:
    """main.cf for a Postfix whose etc/, spool/ and data/ are under ``d``, listening on ``host`` and
    delivering to (and authenticating through) the Dovecot at ``dovecot`` = (host, ports lmtp/auth).

    AUTH (Dovecot SASL over TCP) only after TLS; outbound mail is an error (550 at RCPT).
    """
    dv_host, dv_ports = dovecot
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
virtual_transport = lmtp:inet:{dv_host}:{dv_ports['lmtp']}
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:{dv_host}:{dv_ports['auth']}
smtpd_tls_auth_only = yes
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_loglevel = 1
smtp_tls_security_level = none
{lookups}"""


def write_config(etc: Path, main: str, master: str) -> None:
    """Write main.cf, master.cf and vmailbox (the lab's USERS) into ``etc``, dated a minute back:
    Postfix waits for a main.cf modified "now" to settle."""
    write(etc / "main.cf", main)
    write(etc / "master.cf", master)
    write(etc / "vmailbox", "".join(f"{user} lmtp\n" for user in USERS))
    past = time.time() - 60
    for path in etc.iterdir():
        os.utime(path, (past, past))


def start_postfix(root: Path, certs: Certs, dovecot: Server, host: str = "127.0.0.1") -> Server:
    """Start Postfix (smtp with STARTTLS, smtps) delivering example.org to ``dovecot``'s LMTP."""
    d = mkdir(Path(root) / "postfix")
    make_traversable(d)
    claim(d, "postfix")
    etc = fresh_dir(d / "etc")
    fresh_dir(d / "spool")
    data = fresh_dir(d / "data")
    shutil.chown(data, "postfix", "postfix")
    maillog, out = d / "maillog", d / "postfix.out"
    for path in (maillog, out):
        path.write_text("")

    def prepare(ports: dict[str, int]) -> list[str]:
        main = main_cf(d, host, (dovecot.host, dovecot.ports), certs.cert, certs.key, maillog, f"lab.{LAB_DOMAIN}")
        write_config(etc, main, master_cf(host, ports))
        run_with_tty("postfix", ["postfix", "-c", str(etc), "check"], out)
        return [str(POSTFIX_MASTER), "-c", str(etc)]

    return launch("postfix", d, host, ["smtp", "smtps"], prepare, [out, maillog],
                  banner=("smtp", b"220 "))
