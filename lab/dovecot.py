"""Dovecot (IMAP, IMAPS, LMTP, SASL for Postfix): its config, written once for the single-host lab
and the cluster, and a single-host instance on loopback."""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

from lab import release
from lab.accounts import LAB_DOMAIN, MAIL_UID, USERS
from lab.launch import Server, claim, launch
from lab.seed import seed_messages
from lab.tls import Certs
from lab.util import fresh_dir, make_traversable, mkdir, run, write

DOVECOT_DH = Path("/usr/share/dovecot/dh.pem")


@functools.lru_cache(maxsize=1)
def dovecot_version() -> tuple[int, int]:
    """(major, minor) of the installed Dovecot."""
    out = run("dovecot", ["dovecot", "--version"])
    major, minor = out.split()[0].split(".")[:2]
    return int(major), int(minor)


def dovecot_conf(d: Path, host: str, ports: dict[str, int], cert: Path, key: Path, name: str, *,
                 base_dir: Path | None = None, log_path: Path | None = None) -> str:
    """Standalone dovecot.conf in the syntax of the release's Dovecot (2.3 or 2.4): users and state
    under ``d``, listening on ``host`` (ports imap, imaps, lmtp, auth); base_dir and log_path
    default to ``d``/run and ``d``/dovecot.log."""
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
base_dir = {base_dir or d / 'run'}
state_dir = {d}/state
protocols = imap lmtp
listen = {host}
log_path = {log_path or d / 'dovecot.log'}
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


def write_users(path: Path, homes: Path) -> Path:
    """The passwd-file of the lab's USERS (plain passwords, uid MAIL_UID, homes under ``homes``)."""
    write(path, "".join(f"{user}:{{PLAIN}}{pw}:{MAIL_UID}:{MAIL_UID}::{homes}/{user}\n"
                        for user, pw in USERS.items()), 0o640)
    shutil.chown(path, "root", "dovecot")
    return path


def start_dovecot(root: Path, certs: Certs, cert: str = "good",
                  host: str = "127.0.0.1") -> Server:
    """Start Dovecot (imap, imaps, lmtp, auth) serving the ``cert`` variant's certificate.

    Own instance under <root>/dovecot-<cert>; mail is reset and user1's INBOX gets 3 messages.
    """
    cert_file, key_file = certs.pair(cert)
    name = "dovecot" if cert == "good" else f"dovecot-{cert}"
    d = mkdir(Path(root) / f"dovecot-{cert}")
    make_traversable(d)
    claim(d, "dovecot")
    for sub in ("run", "state", "mail"):
        fresh_dir(d / sub)
    os.chown(d / "mail", MAIL_UID, MAIL_UID)
    write_users(d / "users", d / "mail")
    log, out = d / "dovecot.log", d / "dovecot.out"
    for path in (log, out):
        path.write_text("")
    conf = d / "dovecot.conf"

    def prepare(ports: dict[str, int]) -> list[str]:
        write(conf, dovecot_conf(d, host, ports, cert_file, key_file, name))
        run(name, ["dovecot", "-n", "-c", str(conf)])
        return ["dovecot", "-F", "-c", str(conf)]

    return launch(name, d, host, ["imap", "imaps", "lmtp", "auth"], prepare, [out, log],
                  banner=("imap", b"* OK"),
                  after=lambda s: seed_messages(s, "user1@example.org"))

