"""Real Kolab-like servers on loopback for the test suite and the demo, without systemd.

Cyrus IMAP with saslauthd (Kolab's IMAP stack), Dovecot (IMAP/IMAPS/LMTP/SASL), OpenLDAP slapd,
Postfix, nginx (free/busy) and dnsmasq are
started from the Debian packages with private configs under a caller-given root directory,
on free loopback ports, each in its own session.  Stdlib only; certificates come from the
``openssl`` CLI.

The servers run partly as unprivileged users (dovenull, postfix, nobody, mail uid 5000), so
the root directory and all its ancestors get the "x" (search) permission for others.

The parts: lab/accounts.py (domain, users, LDAP accounts), lab/tls.py (the lab CA and
certificates), lab/launch.py (ports, sessions, readiness, stopping), one module per server
(lab/cyrus.py, saslauthd.py, dovecot.py, slapd.py, postfix.py, nginx.py, dnsmasq.py: the config writer, shared with the
cluster lab, and ``start_*``). This module keeps their public names, the package list and the CLI.

CLI::

    python lab/servers.py up DIR     # start them all, write and print DIR/servers.json
    python lab/servers.py down DIR   # stop exactly the PIDs recorded in DIR/servers.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent.parent) not in sys.path:  # run as a script (lab/icinga.py)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# the servers' public names, importable from here as before the split
from lab.accounts import (  # noqa: E402, F401
    CYRUS_ADMIN,
    CYRUS_ADMIN_PASSWORD,
    LAB_DOMAIN,
    LDAP_ADMIN_DN,
    LDAP_ADMIN_PASSWORD,
    LDAP_BASE,
    LDAP_SERVICE_DN,
    LDAP_SERVICE_PASSWORD,
    MAIL_UID,
    USERS,
)
from lab.cyrus import start_cyrus  # noqa: E402, F401
from lab.dnsmasq import DEFAULT_DNS_RECORDS, start_dnsmasq  # noqa: E402, F401
from lab.dovecot import dovecot_version, start_dovecot  # noqa: E402, F401
from lab.launch import READY_TIMEOUT, STOP_TIMEOUT, Server, free_port, running, stop_servers, wait_port  # noqa: E402, F401
from lab.nginx import start_nginx, write_freebusy  # noqa: E402, F401
from lab.postfix import start_postfix  # noqa: E402, F401
from lab.saslauthd import mux, start_saslauthd  # noqa: E402, F401
from lab.seed import seed_messages  # noqa: E402, F401
from lab.slapd import start_slapd  # noqa: E402, F401
from lab.tls import CERT_VARIANTS, SAN, Certs, make_certs  # noqa: E402, F401
from lab.util import LabError, mkdir, run, write  # noqa: E402, F401

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
    run("apt", ["debconf-set-selections"], input=_PRESEED.encode(), env=env)
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:  # keep postinst scripts from starting the default daemons
        write(policy, "#!/bin/sh\nexit 101\n", 0o755)
    try:
        run("apt", ["apt-get", "-o", "DPkg::Lock::Timeout=900", "update"], env=env, timeout=900)
        run("apt", ["apt-get", "install", "-y", "--no-install-recommends",
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
    """Start every server under ``directory`` (Kolab's stack: slapd, saslauthd, Cyrus, Postfix into
    Cyrus; Dovecot with its own Postfix; nginx, dnsmasq) and write ``directory``/servers.json.

    servers.json maps each server name to {pid, host, ports, root}; "certs" holds the
    certificate paths and "startup_seconds" the measured start times. On any failure or
    Ctrl-C the servers started so far are stopped again.
    """
    directory = mkdir(Path(directory).resolve())
    running = [s for s in _load(directory) if running(s)]
    if running:
        raise LabError(f"lab: {directory} already up ({running[0].name} PID {running[0].pid});"
                       " run 'down' first")
    started: list[Server] = []
    timings: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        certs = make_certs(directory)
        timings["certs"] = time.monotonic() - t0
        by: dict[str, Server] = {}
        steps: list[tuple[str, Callable[[], Server]]] = [
            ("slapd", lambda: start_slapd(directory, certs)),
            ("saslauthd", lambda: start_saslauthd(directory, by["slapd"])),
            ("cyrus", lambda: start_cyrus(directory, certs, mux(by["saslauthd"]))),
            ("postfix-cyrus", lambda: start_postfix(directory, certs, by["cyrus"], mux=mux(by["saslauthd"]))),
            ("dovecot", lambda: start_dovecot(directory, certs)),
            ("postfix", lambda: start_postfix(directory, certs, by["dovecot"])),
            ("nginx", lambda: start_nginx(directory, certs)),
            ("dnsmasq", lambda: start_dnsmasq(directory)),
        ]
        for label, start in steps:
            t0 = time.monotonic()
            started.append(start())
            by[label] = started[-1]
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
