"""What a mail user's machine checks on the cluster IP: IMAP, SMTP, LDAP and HTTP free/busy
(``python lab/cluster.py client-check``, run in the client netns by Cluster.check_services)."""

from __future__ import annotations

import base64
import imaplib
import smtplib
import ssl
import subprocess
import urllib.request

from lab.accounts import LDAP_BASE, LDAP_SERVICE_DN, LDAP_SERVICE_PASSWORD, USERS
from lab.topology import CLUSTER_IP, PORTS, USER1


def client_check(timeout: float = 5.0) -> int:
    """IMAP login+SELECT, SMTP EHLO (STARTTLS offered), LDAP bind+search, HTTP free/busy on the
    cluster IP; one line per service; 0 if all answer. Runs in the client netns."""
    password = USERS[USER1]

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
                              f"ldap://{CLUSTER_IP}:{PORTS['ldap']}", "-D", LDAP_SERVICE_DN, "-w",
                              LDAP_SERVICE_PASSWORD, "-b", LDAP_BASE, "(uid=user1)", "mail"],
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
