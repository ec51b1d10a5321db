"""saslauthd against the lab's LDAP directory, as Kolab authenticates IMAP and SMTP logins: its
config, written once for the single-host lab and the cluster, and a single-host instance.

Traps (measured on Debian 12 and 13): ``-r`` hands the realm on, so that ``user1@example.org``
matches the ``mail`` attribute and ``user1@other.org`` does not log in as user1; ``-d`` (foreground)
kills its whole process group on SIGTERM, so it runs in a session of its own; no credential cache
(``-c``), so an LDAP fault shows at every login; ``ldap_timeout`` bounds each bind (a hung slapd
fails a login after two of them)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from lab.accounts import LDAP_BASE, LDAP_SERVICE_DN, LDAP_SERVICE_PASSWORD
from lab.launch import Server, claim, launch
from lab.util import LabError, fresh_dir, make_traversable, mkdir, tail, write

LDAP_TIMEOUT = 5
WORKERS = 2
SOCKET_GROUP = "sasl"


def saslauthd_conf(ldap_url: str) -> str:
    """saslauthd.conf (``-a ldap``): search the user by uid or mail as the service DN, then bind as it."""
    return f"""\
ldap_servers: {ldap_url}
ldap_search_base: {LDAP_BASE}
ldap_filter: (|(uid=%u)(mail=%u))
ldap_bind_dn: {LDAP_SERVICE_DN}
ldap_password: {LDAP_SERVICE_PASSWORD}
ldap_version: 3
ldap_auth_method: bind
ldap_timeout: {LDAP_TIMEOUT}
"""


def saslauthd_argv(conf: Path, run_dir: Path) -> list[str]:
    """saslauthd's command line: in the foreground, LDAP, realms passed on, its socket ``run_dir``/mux."""
    return ["/usr/sbin/saslauthd", "-d", "-r", "-a", "ldap", "-O", str(conf),
            "-m", str(run_dir), "-n", str(WORKERS)]


def smtpd_conf(mux: Path) -> str:
    """Cyrus SASL's application config for Postfix's smtpd: plain logins checked by saslauthd."""
    return f"pwcheck_method: saslauthd\nsaslauthd_path: {mux}\nmech_list: PLAIN LOGIN\n"


def wait_socket(path: Path, what: str, logs: list[Path], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_socket():
        if time.monotonic() > deadline:
            raise LabError(f"{what}: {path} not there after {timeout} s [{tail(*logs)}]")
        time.sleep(0.03)


def start_saslauthd(root: Path, slapd: Server) -> Server:
    """Start saslauthd (foreground, own session) against ``slapd``; its socket is ``root``/saslauthd/run/mux."""
    d = mkdir(Path(root) / "saslauthd")
    make_traversable(d)
    claim(d, "saslauthd")
    run_dir = fresh_dir(d / "run")
    # as Debian keeps /run/saslauthd: only group sasl (cyrus; postfix, which lab/setup.sh adds) gets in
    shutil.chown(run_dir, "root", SOCKET_GROUP)
    run_dir.chmod(0o710)
    out = d / "saslauthd.out"
    out.write_text("")
    conf = write(d / "saslauthd.conf", saslauthd_conf(f"ldap://{slapd.host}:{slapd.ports['ldap']}/"), 0o600)
    return launch("saslauthd", d, slapd.host, [], lambda ports: saslauthd_argv(conf, run_dir), [out],
                  after=lambda s: wait_socket(run_dir / "mux", "saslauthd", [out]))


def mux(server: Server) -> Path:
    """The socket of a single-host saslauthd."""
    return server.root / "run" / "mux"
