"""The lab demo: start the real servers on loopback (Kolab's stack: Cyrus IMAP with saslauthd against
slapd, Postfix delivering into it, nginx, dnsmasq) and run every kolabmon probe against them.

Prints each plugin's command line (passwords come from the environment, never argv), its output
line and its exit code, as Icinga would see them; then stops exactly the servers it started.
"""

from __future__ import annotations

import datetime
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


def probes(certs: servers.Certs, lab: dict[str, servers.Server], spool: Path) -> list[tuple[list[str], str]]:
    """(argv, password) for every probe, healthy and failing cases both."""
    user, user_pw = "user1@example.org", servers.USERS["user1@example.org"]
    user2, user2_pw = "user2@example.org", servers.USERS["user2@example.org"]
    ca = str(certs.ca)
    cyrus, slapd, postfix, nginx, dns = (lab[n] for n in ("cyrus", "slapd", "postfix-cyrus", "nginx", "dnsmasq"))
    imap, imaps = str(cyrus.ports["imap"]), str(cyrus.ports["imaps"])
    ldap, ldaps = str(slapd.ports["ldap"]), str(slapd.ports["ldaps"])
    smtp, smtps = str(postfix.ports["smtp"]), str(postfix.ports["smtps"])
    https = nginx.ports["https"]
    dn, base, ldap_pw = servers.LDAP_SERVICE_DN, servers.LDAP_BASE, servers.LDAP_SERVICE_PASSWORD
    local = "127.0.0.1"
    return [
        (["check_kolab_imap", "-H", local, "-p", imap, "-u", user], user_pw),
        (["check_kolab_imap", "-H", local, "-p", imap, "--starttls", "--ca-file", ca, "-u", user], user_pw),
        (["check_kolab_imap", "-H", local, "-p", imaps, "--tls", "--ca-file", ca, "-u", user], user_pw),
        (["check_kolab_imap", "-H", local, "-p", imaps, "--tls", "-u", user], user_pw),
        (["check_kolab_imap", "-H", local, "-p", imap, "-u", user], "wrong-password"),
        (["check_kolab_ldap", "-H", local, "-p", ldap, "-D", dn, "-b", base, "-f", "(uid=user1)"], ldap_pw),
        (["check_kolab_ldap", "-H", local, "-p", ldap, "--starttls", "--ca-file", ca, "-D", dn,
          "-b", base, "-f", "(objectClass=inetOrgPerson)", "-W", "1"], ldap_pw),
        (["check_kolab_ldap", "-H", local, "-p", ldaps, "--tls", "--ca-file", ca, "-D", dn,
          "-b", "dc=nowhere,dc=org"], ldap_pw),
        (["check_kolab_smtp", "-H", local, "-p", smtp, "--starttls", "--ca-file", ca, "-u", user,
          "--expect-ext", "STARTTLS,AUTH"], user_pw),
        (["check_kolab_smtp", "-H", local, "-p", smtps, "--tls", "--ca-file", ca, "-u", user], "wrong-password"),
        (["check_kolab_freebusy", "--url", f"https://{local}:{https}/freebusy/{user}.ifb", "-u", user,
          "--ca-file", ca], user_pw),
        (["check_kolab_freebusy", "--url", f"https://{local}:{https}/freebusy/{user2}.ifb", "-u", user2,
          "--ca-file", ca, "--max-age", "86400"], user2_pw),
        (["check_kolab_dns", "-H", "kolab.example.org", "-s", local, "-p", str(dns.ports["dns"]),
          "-a", "10.99.0.100", "--mx", "example.org", "--srv", "_imap._tcp.example.org"], ""),
        (["check_kolab_dns", "-H", "kolab.example.org", "-s", local, "-p", str(dns.ports["dns"]),
          "-a", "10.99.0.200"], ""),
        (["check_kolab_storage", "--path", str(spool), "--fstype", "ext4", "-w", "20:", "-c", "10:"], ""),
        (["check_kolab_storage", "--path", str(spool), "--expect", "unmounted"], ""),
        (["check_kolab_roundtrip", "-H", local, "--smtp-port", smtp, "--imap-port", imap, "--starttls",
          "--ca-file", ca, "-u", user2, "-w", "5", "-c", "20"], user2_pw),
    ]


class LoopSpool:
    """A small loop-device ext4, mounted: the "shared storage" seen from one node."""

    def __init__(self, root: Path) -> None:
        self.image, self.mount = root / "spool.img", root / "spool"
        self.device = ""

    def __enter__(self) -> Path:
        self.mount.mkdir()
        subprocess.run(["truncate", "-s", "64M", str(self.image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], check=True)
        self.device = subprocess.run(["losetup", "-f", "--show", str(self.image)], check=True,
                                     capture_output=True, text=True).stdout.strip()
        subprocess.run(["mount", self.device, str(self.mount)], check=True)
        return self.mount

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["umount", str(self.mount)], check=False)
        if self.device:
            subprocess.run(["losetup", "-d", self.device], check=False)


def main() -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    failures = 0
    with tempfile.TemporaryDirectory(prefix="kolabmon-demo-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # the servers' own users must reach their directories
        started: list[servers.Server] = []
        try:
            print("== starting the lab servers on loopback", flush=True)
            begin = time.monotonic()
            certs = servers.make_certs(root)
            slapd = servers.start_slapd(root, certs)
            started.append(slapd)
            sasl = servers.start_saslauthd(root, slapd)
            started.append(sasl)
            cyrus = servers.start_cyrus(root, certs, servers.mux(sasl))
            started.append(cyrus)
            started.append(servers.start_nginx(root, certs))
            started.append(servers.start_postfix(root, certs, cyrus, mux=servers.mux(sasl)))
            started.append(servers.start_dnsmasq(root))
            lab = {server.name: server for server in started}
            servers.write_freebusy(lab["nginx"], "user1@example.org")
            stale = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)  # not republished for 2 days
            servers.write_freebusy(lab["nginx"], "user2@example.org", dtstamp=stale)
            for server in started:
                print(f"   {server.name:13} pid {server.pid:<7} {server.host} {server.ports}")
            print(f"   ready in {time.monotonic() - begin:.1f} s\n", flush=True)
            with LoopSpool(root) as spool:
                for argv, password in probes(certs, lab, spool):
                    proc = subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True,
                                          env=dict(env, KOLABMON_PASSWORD=password), timeout=60)
                    failures += "Traceback" in proc.stdout + proc.stderr
                    print(f"$ {shlex.join(argv)}\n{proc.stdout.rstrip()}\n[exit {proc.returncode}]\n", flush=True)
        except (servers.LabError, subprocess.CalledProcessError) as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            return 1
        finally:
            servers.stop_servers(reversed(started))
            print("== lab servers stopped")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
