"""The lab servers (lab/servers.py) against stdlib clients and the Debian CLI tools.

Each server is started once for this module, in its own root (not the suite's shared lab).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import imaplib
import json
import os
import smtplib
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lab import servers  # noqa: E402

USER, PASSWORD = "user1@example.org", servers.USERS["user1@example.org"]


def tls_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def gone(pid: int) -> bool:
    """True if ``pid`` no longer exists (or is a zombie waiting for init)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] in ("Z", "X")


def session_members(sid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and not gone(int(entry.name)):
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[3] == str(sid):
                members.append(int(entry.name))
    return members


def ldap_env(ca: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LDAP")}
    if ca is not None:
        env["LDAPTLS_CACERT"] = str(ca)
    return env


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=30,
                          check=False)


# --- fixtures: one instance of each server for the module --------------------------------------


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lab-servers")


@pytest.fixture(scope="module")
def certs(root: Path) -> servers.Certs:
    return servers.make_certs(root)


@pytest.fixture(scope="module")
def dovecot(root: Path, certs: servers.Certs) -> Iterator[servers.Server]:
    server = servers.start_dovecot(root, certs)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dovecot_variants(root: Path, certs: servers.Certs) -> Iterator[dict[str, servers.Server]]:
    started: dict[str, servers.Server] = {}
    try:
        for variant in ("expiring", "expired", "rogue"):
            started[variant] = servers.start_dovecot(root, certs, cert=variant)
        yield started
    finally:
        servers.stop_servers(started.values())


@pytest.fixture(scope="module")
def slapd(root: Path, certs: servers.Certs) -> Iterator[servers.Server]:
    server = servers.start_slapd(root, certs)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postfix(root: Path, certs: servers.Certs,
            dovecot: servers.Server) -> Iterator[servers.Server]:
    server = servers.start_postfix(root, certs, dovecot)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def saslauthd(root: Path, slapd: servers.Server) -> Iterator[servers.Server]:
    server = servers.start_saslauthd(root, slapd)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cyrus(root: Path, certs: servers.Certs, saslauthd: servers.Server) -> Iterator[servers.Server]:
    server = servers.start_cyrus(root, certs, servers.mux(saslauthd))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cyrus_postfix(root: Path, certs: servers.Certs, cyrus: servers.Server,
                  saslauthd: servers.Server) -> Iterator[servers.Server]:
    server = servers.start_postfix(root, certs, cyrus, mux=servers.mux(saslauthd))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nginx(root: Path, certs: servers.Certs) -> Iterator[servers.Server]:
    server = servers.start_nginx(root, certs)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dnsmasq(root: Path) -> Iterator[servers.Server]:
    server = servers.start_dnsmasq(root)
    yield server
    server.stop()


# --- helpers -----------------------------------------------------------------------------------


def test_free_port_and_wait_port_timeout_names_the_server() -> None:
    port = servers.free_port()
    assert 1024 < port < 65536
    start = time.monotonic()
    with pytest.raises(servers.LabError, match="^imaginary: 127.0.0.1:"):
        servers.wait_port("127.0.0.1", port, timeout=0.3, name="imaginary")
    assert time.monotonic() - start < 2


def test_make_certs_is_idempotent(root: Path, certs: servers.Certs) -> None:
    mtimes = {name: path.stat().st_mtime for name, path in vars(certs).items()}
    again = servers.make_certs(root)
    assert again == certs
    assert {name: path.stat().st_mtime for name, path in vars(again).items()} == mtimes
    assert certs.key.stat().st_mode & 0o077 == 0


# --- Dovecot -----------------------------------------------------------------------------------


def test_imap_plain_login_shows_three_seeded_messages(dovecot: servers.Server) -> None:
    with imaplib.IMAP4(dovecot.host, dovecot.ports["imap"], timeout=10) as imap:
        assert imap.welcome.startswith(b"* OK")
        imap.login(USER, PASSWORD)
        assert imap.select("INBOX") == ("OK", [b"3"])


def test_imap_starttls_verified_with_lab_ca(dovecot: servers.Server,
                                            certs: servers.Certs) -> None:
    with imaplib.IMAP4(dovecot.host, dovecot.ports["imap"], timeout=10) as imap:
        imap.starttls(ssl_context=tls_context(certs.ca))
        imap.login(USER, PASSWORD)
        assert imap.select("INBOX") == ("OK", [b"3"])


def test_imaps_verified_with_lab_ca(dovecot: servers.Server, certs: servers.Certs) -> None:
    with imaplib.IMAP4_SSL(dovecot.host, dovecot.ports["imaps"],
                           ssl_context=tls_context(certs.ca), timeout=10) as imap:
        imap.login(USER, PASSWORD)
        assert imap.select("INBOX") == ("OK", [b"3"])


def test_imap_wrong_password_costs_no_penalty(dovecot: servers.Server) -> None:
    start = time.monotonic()
    for _ in range(3):
        with imaplib.IMAP4(dovecot.host, dovecot.ports["imap"], timeout=10) as imap:
            with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                imap.login(USER, "wrong")
    with imaplib.IMAP4(dovecot.host, dovecot.ports["imap"], timeout=10) as imap:
        imap.login(USER, PASSWORD)
    assert time.monotonic() - start < 2.5


def test_dovecot_expiring_cert_verifies_and_expires_within_five_days(
        dovecot_variants: dict[str, servers.Server], certs: servers.Certs) -> None:
    server = dovecot_variants["expiring"]
    with imaplib.IMAP4_SSL(server.host, server.ports["imaps"],
                           ssl_context=tls_context(certs.ca), timeout=10) as imap:
        assert isinstance(imap.sock, ssl.SSLSocket)
        peer = imap.sock.getpeercert()
        assert peer is not None
        not_after = ssl.cert_time_to_seconds(str(peer["notAfter"]))
        imap.login(USER, PASSWORD)
        assert imap.select("INBOX") == ("OK", [b"3"])
    assert 4 * 86400 < not_after - time.time() <= 5 * 86400


@pytest.mark.parametrize(("variant", "reason"), [("expired", "expired"),
                                                 ("rogue", "unable to get local issuer")])
def test_dovecot_bad_certs_fail_verification(dovecot_variants: dict[str, servers.Server],
                                             certs: servers.Certs, variant: str,
                                             reason: str) -> None:
    server = dovecot_variants[variant]
    with pytest.raises(ssl.SSLCertVerificationError, match=reason):
        imaplib.IMAP4_SSL(server.host, server.ports["imaps"], ssl_context=tls_context(certs.ca),
                          timeout=10)
    imap = imaplib.IMAP4(server.host, server.ports["imap"], timeout=10)
    try:
        with pytest.raises(ssl.SSLCertVerificationError, match=reason):
            imap.starttls(ssl_context=tls_context(certs.ca))
    finally:
        with contextlib.suppress(OSError):
            imap.shutdown()


def test_second_instance_on_same_root_is_refused(root: Path, certs: servers.Certs,
                                                 dovecot: servers.Server) -> None:
    with pytest.raises(servers.LabError, match=r"^dovecot: .* in use by running PID"):
        servers.start_dovecot(root, certs)


# --- slapd -------------------------------------------------------------------------------------


def test_ldap_service_bind_plain_starttls_and_ldaps(slapd: servers.Server,
                                                    certs: servers.Certs) -> None:
    plain = f"ldap://{slapd.host}:{slapd.ports['ldap']}"
    ldaps = f"ldaps://{slapd.host}:{slapd.ports['ldaps']}"
    auth = ["-x", "-D", servers.LDAP_SERVICE_DN, "-w", servers.LDAP_SERVICE_PASSWORD]
    for argv, env in [(["-H", plain], ldap_env()),
                      (["-ZZ", "-H", plain], ldap_env(certs.ca)),
                      (["-H", ldaps], ldap_env(certs.ca))]:
        res = run("ldapwhoami", *argv, *auth, env=env)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == f"dn:{servers.LDAP_SERVICE_DN}"


def test_ldap_users_readable_by_service_not_anonymous(slapd: servers.Server) -> None:
    url = f"ldap://{slapd.host}:{slapd.ports['ldap']}"
    search = ["ldapsearch", "-x", "-LLL", "-H", url, "-b", servers.LDAP_BASE, "(uid=user1)", "mail"]
    res = run(*search, "-D", servers.LDAP_SERVICE_DN, "-w", servers.LDAP_SERVICE_PASSWORD,
              env=ldap_env())
    assert res.returncode == 0, res.stderr
    assert f"dn: uid=user1,ou=People,{servers.LDAP_BASE}" in res.stdout
    assert "mail: user1@example.org" in res.stdout
    anonymous = run(*search, env=ldap_env())
    assert "user1@example.org" not in anonymous.stdout


def test_ldap_user_passwords_match_users_and_bad_password_fails(slapd: servers.Server) -> None:
    url = f"ldap://{slapd.host}:{slapd.ports['ldap']}"
    dn = f"uid=user2,ou=People,{servers.LDAP_BASE}"
    good = run("ldapwhoami", "-x", "-H", url, "-D", dn, "-w", servers.USERS["user2@example.org"],
               env=ldap_env())
    assert good.returncode == 0, good.stderr
    bad = run("ldapwhoami", "-x", "-H", url, "-D", dn, "-w", "wrong", env=ldap_env())
    assert bad.returncode == 49


def test_ldaps_rejects_untrusted_ca(slapd: servers.Server, certs: servers.Certs) -> None:
    res = run("ldapwhoami", "-x", "-H", f"ldaps://{slapd.host}:{slapd.ports['ldaps']}",
              env=ldap_env(certs.rogue_cert))
    assert res.returncode != 0


# --- Postfix -----------------------------------------------------------------------------------


def test_smtp_starttls_auth_and_delivery_to_imap(postfix: servers.Server, dovecot: servers.Server,
                                                 certs: servers.Certs) -> None:
    subject = f"lab round trip {uuid.uuid4().hex}"
    with smtplib.SMTP(postfix.host, postfix.ports["smtp"], timeout=10) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("auth"), "AUTH must need TLS"
        smtp.starttls(context=tls_context(certs.ca))
        smtp.ehlo()
        assert "PLAIN" in smtp.esmtp_features["auth"]
        smtp.login(USER, PASSWORD)
        refused = smtp.sendmail("monitor@example.org", [USER],
                                f"From: monitor@example.org\r\nTo: {USER}\r\n"
                                f"Subject: {subject}\r\n\r\nhello\r\n")
        assert refused == {}
    deadline = time.monotonic() + 10
    with imaplib.IMAP4(dovecot.host, dovecot.ports["imap"], timeout=10) as imap:
        imap.login(USER, PASSWORD)
        while True:
            imap.select("INBOX")
            _, data = imap.search(None, "SUBJECT", f'"{subject}"')
            if data[0]:
                break
            assert time.monotonic() < deadline, "message not delivered within 10 s"
            time.sleep(0.1)


def test_smtps_implicit_tls_auth(postfix: servers.Server, certs: servers.Certs) -> None:
    with smtplib.SMTP_SSL(postfix.host, postfix.ports["smtps"], context=tls_context(certs.ca),
                          timeout=10) as smtp:
        assert smtp.login("user2@example.org", servers.USERS["user2@example.org"])[0] == 235


def test_smtp_outbound_and_unknown_users_are_refused(postfix: servers.Server) -> None:
    with smtplib.SMTP(postfix.host, postfix.ports["smtp"], timeout=10) as smtp:
        for rcpt in ("someone@elsewhere.test", "nobody@example.org"):
            with pytest.raises(smtplib.SMTPRecipientsRefused) as err:
                smtp.sendmail("monitor@example.org", [rcpt], "Subject: x\r\n\r\nx\r\n")
            assert err.value.recipients[rcpt][0] == 550


# --- nginx -------------------------------------------------------------------------------------


def http_get(url: str, ca: Path, auth: tuple[str, str] | None = None) -> tuple[int, str, bytes]:
    """GET without proxies (ignores *_proxy and REQUESTS_CA_BUNDLE), verified with ``ca``."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=tls_context(ca)))
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def test_freebusy_needs_basic_auth(nginx: servers.Server, certs: servers.Certs) -> None:
    path = f"/freebusy/{USER}.ifb"
    for url in (f"https://{nginx.host}:{nginx.ports['https']}{path}",
                f"http://{nginx.host}:{nginx.ports['http']}{path}"):
        status, ctype, body = http_get(url, certs.ca, (USER, PASSWORD))
        assert (status, ctype) == (200, "text/calendar")
        text = body.decode()
        assert text.startswith("BEGIN:VCALENDAR\r\n") and text.endswith("END:VCALENDAR\r\n")
        assert f"ORGANIZER:mailto:{USER}\r\n" in text
        assert http_get(url, certs.ca)[0] == 401
        assert http_get(url, certs.ca, (USER, "wrong"))[0] == 401


def test_write_freebusy_dtstamp_and_raw_body(nginx: servers.Server, certs: servers.Certs) -> None:
    user = "user2@example.org"
    url = f"https://{nginx.host}:{nginx.ports['https']}/freebusy/{user}.ifb"
    auth = (user, servers.USERS[user])
    servers.write_freebusy(nginx, user, dtstamp=dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    body = http_get(url, certs.ca, auth)[2].decode()
    assert "DTSTAMP:20240102T030405Z\r\n" in body and "DTSTART:20240102T030405Z\r\n" in body
    servers.write_freebusy(nginx, user, body="not a calendar")
    assert http_get(url, certs.ca, auth)[2] == b"not a calendar"
    servers.write_freebusy(nginx, user)
    stamp = dt.datetime.now(dt.UTC).strftime("DTSTAMP:%Y%m%d")
    assert stamp in http_get(url, certs.ca, auth)[2].decode()


# --- dnsmasq -----------------------------------------------------------------------------------


def dig(server: servers.Server, *query: str) -> str:
    res = run("dig", "+short", "+time=2", "+tries=1", "-p", str(server.ports["dns"]),
              f"@{server.host}", *query)
    return res.stdout.strip()


def test_dnsmasq_default_records_udp_and_tcp(dnsmasq: servers.Server) -> None:
    assert dig(dnsmasq, "kolab.example.org") == "10.99.0.100"
    assert dig(dnsmasq, "+tcp", "kolab.example.org") == "10.99.0.100"
    assert dig(dnsmasq, "MX", "example.org") == "10 kolab.example.org."
    assert dig(dnsmasq, "SRV", "_imap._tcp.example.org") == "0 0 143 kolab.example.org."
    assert dig(dnsmasq, "SRV", "_submission._tcp.example.org") == "0 0 587 kolab.example.org."
    assert dig(dnsmasq, "SRV", "_ldap._tcp.example.org") == "0 0 389 kolab.example.org."
    assert dig(dnsmasq, "www.debian.org") == ""  # nothing is forwarded


def test_dnsmasq_custom_records(tmp_path: Path) -> None:
    server = servers.start_dnsmasq(tmp_path, {"A": [("kolab.example.org", "10.99.0.7")]})
    try:
        assert dig(server, "kolab.example.org") == "10.99.0.7"
        assert dig(server, "MX", "example.org") == ""
    finally:
        server.stop()
    assert gone(server.pid)


# --- stopping and the CLI ----------------------------------------------------------------------


def test_cyrus_as_kolab_runs_it_logins_by_address_and_mailboxes_by_admin(cyrus: servers.Server,
                                                                         certs: servers.Certs) -> None:
    with imaplib.IMAP4(cyrus.host, cyrus.ports["imap"], timeout=10) as client:
        client.starttls(tls_context(certs.ca))
        client.login(USER, PASSWORD)
        typ, data = client.select("INBOX", readonly=True)
        assert typ == "OK" and data[0] == b"3"  # the seed, delivered over LMTP
        typ, listing = client.list('""', '""')
        assert typ == "OK" and b'"/"' in listing[0], listing  # unixhierarchysep, as Kolab
    with imaplib.IMAP4(cyrus.host, cyrus.ports["imap"], timeout=10) as admin:
        admin.login(servers.CYRUS_ADMIN, servers.CYRUS_ADMIN_PASSWORD)
        typ, listing = admin.list('""', "user/*")
        names = b" ".join(listing)
        assert typ == "OK" and all(f"user/{user}".encode() in names for user in servers.USERS), listing


def test_cyrus_checks_the_domain_and_the_password_through_saslauthd(cyrus: servers.Server) -> None:
    for user, password in (("user1@other.org", PASSWORD), (USER, "wrong")):
        with imaplib.IMAP4(cyrus.host, cyrus.ports["imap"], timeout=15) as client:
            with pytest.raises(imaplib.IMAP4.error, match="authentication failure"):
                client.login(user, password)


def test_smtp_auth_through_saslauthd_and_delivery_into_cyrus(cyrus_postfix: servers.Server, cyrus: servers.Server,
                                                             certs: servers.Certs) -> None:
    user, password = "user2@example.org", servers.USERS["user2@example.org"]
    subject = f"lab test {uuid.uuid4()}"
    with smtplib.SMTP(cyrus_postfix.host, cyrus_postfix.ports["smtp"], timeout=10) as smtp:
        smtp.starttls(context=tls_context(certs.ca))
        smtp.login(user, password)
        smtp.sendmail(user, [user], f"Subject: {subject}\r\n\r\nbody\r\n".encode())
    deadline = time.monotonic() + 15
    with imaplib.IMAP4(cyrus.host, cyrus.ports["imap"], timeout=10) as client:
        client.login(user, password)
        while True:
            client.select("INBOX", readonly=True)
            if client.search(None, "SUBJECT", f'"{subject}"')[1][0].split():
                break
            assert time.monotonic() < deadline, "not delivered into Cyrus within 15 s"
            time.sleep(0.2)


def test_stop_leaves_no_process(dovecot: servers.Server, slapd: servers.Server,
                                postfix: servers.Server, nginx: servers.Server,
                                dnsmasq: servers.Server, cyrus: servers.Server,
                                saslauthd: servers.Server, cyrus_postfix: servers.Server,
                                dovecot_variants: dict[str, servers.Server]) -> None:
    everything = [cyrus_postfix, cyrus, saslauthd, dovecot, slapd, postfix, nginx, dnsmasq,
                  *dovecot_variants.values()]
    assert all(len(session_members(s.pid)) >= 1 for s in everything)
    servers.stop_servers(everything)
    for server in everything:
        assert gone(server.pid), server.name
        assert session_members(server.pid) == [], server.name
        server.stop()  # idempotent


def test_cli_up_writes_servers_json_and_down_stops_them(tmp_path: Path) -> None:
    script = str(REPO / "lab" / "servers.py")
    up = subprocess.run([sys.executable, script, "up", str(tmp_path)], capture_output=True,
                        text=True, timeout=60, check=False)
    state = json.loads((tmp_path / "servers.json").read_text()) if up.returncode == 0 else {}
    try:
        assert up.returncode == 0, up.stderr
        assert json.loads(up.stdout) == state
        assert set(state) >= {"cyrus", "saslauthd", "postfix-cyrus", "dovecot", "slapd", "postfix", "nginx",
                              "dnsmasq", "certs"}
        assert Path(state["certs"]["ca"]).exists()
        for name in ("cyrus", "dovecot"):
            imap = state[name]
            with imaplib.IMAP4(imap["host"], imap["ports"]["imap"], timeout=10) as client:
                client.login(USER, PASSWORD)
    finally:
        down = subprocess.run([sys.executable, script, "down", str(tmp_path)],
                              capture_output=True, text=True, timeout=60, check=False)
    assert down.returncode == 0, down.stderr
    for name in ("cyrus", "saslauthd", "postfix-cyrus", "dovecot", "slapd", "postfix", "nginx", "dnsmasq"):
        assert gone(state[name]["pid"]), name
        assert session_members(state[name]["pid"]) == [], name
