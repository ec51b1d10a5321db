"""The lab demo: start the real servers on loopback and run every kolabmon probe against them.

Prints each plugin's command line (passwords come from the environment, never argv), its output
line and its exit code, as Icinga would see them; then stops exactly the servers it started.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab import servers  # noqa: E402

BIN = ROOT / ".venv" / "bin"


def probes(certs: servers.Certs, dovecot: servers.Server, slapd: servers.Server) -> list[tuple[list[str], str]]:
    """(argv, password) for every probe, healthy and failing cases both."""
    user, user_pw = "user1@example.org", servers.USERS["user1@example.org"]
    ca = str(certs.ca)
    imap, imaps = str(dovecot.ports["imap"]), str(dovecot.ports["imaps"])
    ldap, ldaps = str(slapd.ports["ldap"]), str(slapd.ports["ldaps"])
    dn, base, ldap_pw = servers.LDAP_SERVICE_DN, servers.LDAP_BASE, servers.LDAP_SERVICE_PASSWORD
    return [
        (["check_kolab_imap", "-H", "127.0.0.1", "-p", imap, "-u", user], user_pw),
        (["check_kolab_imap", "-H", "127.0.0.1", "-p", imap, "--starttls", "--ca-file", ca, "-u", user], user_pw),
        (["check_kolab_imap", "-H", "127.0.0.1", "-p", imaps, "--tls", "--ca-file", ca, "-u", user], user_pw),
        (["check_kolab_imap", "-H", "127.0.0.1", "-p", imaps, "--tls", "-u", user], user_pw),
        (["check_kolab_imap", "-H", "127.0.0.1", "-p", imap, "-u", user], "wrong-password"),
        (["check_kolab_ldap", "-H", "127.0.0.1", "-p", ldap, "-D", dn, "-b", base, "-f", "(uid=user1)"], ldap_pw),
        (["check_kolab_ldap", "-H", "127.0.0.1", "-p", ldap, "--starttls", "--ca-file", ca, "-D", dn,
          "-b", base, "-f", "(objectClass=inetOrgPerson)", "-W", "1"], ldap_pw),
        (["check_kolab_ldap", "-H", "127.0.0.1", "-p", ldaps, "--tls", "--ca-file", ca, "-D", dn,
          "-b", "dc=nowhere,dc=org"], ldap_pw),
    ]


def main() -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    with tempfile.TemporaryDirectory(prefix="kolabmon-demo-") as tmp:
        root = Path(tmp)
        started: list[servers.Server] = []
        try:
            print("== starting the lab servers on loopback", flush=True)
            begin = time.monotonic()
            certs = servers.make_certs(root)
            dovecot = servers.start_dovecot(root, certs)
            started.append(dovecot)
            slapd = servers.start_slapd(root, certs)
            started.append(slapd)
            for server in started:
                print(f"   {server.name:8} pid {server.pid:<7} {server.host} {server.ports}")
            print(f"   ready in {time.monotonic() - begin:.1f} s\n", flush=True)
            failures = 0
            for argv, password in probes(certs, dovecot, slapd):
                proc = subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True,
                                      env=dict(env, KOLABMON_PASSWORD=password), timeout=60)
                failures += "Traceback" in proc.stdout + proc.stderr
                print(f"$ {shlex.join(argv)}\n{proc.stdout.rstrip()}\n[exit {proc.returncode}]\n", flush=True)
        except servers.LabError as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            return 1
        finally:
            for server in reversed(started):
                server.stop()
            print("== lab servers stopped")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
