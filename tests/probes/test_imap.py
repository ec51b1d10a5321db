"""check_kolab_imap against the real Dovecot and Cyrus of the lab, and against fakes for the faults.

The tests of what the server does run against both back ends (`imap_server`); those of what the
probe does alone (TLS verification, passwords, usage) run against Dovecot only, whose failed login
is quick: Cyrus pauses 3 s after each.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import imapclient
import pytest

from lab import servers
from lab.accounts import CYRUS_ADMIN, CYRUS_ADMIN_PASSWORD
from tests.fakes.faults import GarbageBanner, ResetMidLogin, Silent
from tests.helpers import BIN, assert_plugin_output, clean_env, run_plugin

USER, PASSWORD = "user1@example.org", servers.USERS["user1@example.org"]


def imap(*args: str, password: str | None = PASSWORD, **env: str):
    return run_plugin("check_kolab_imap", *args, password=password, **env)


def login(server: servers.Server, user: str = USER) -> imapclient.IMAPClient:
    client = imapclient.IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False, timeout=10)
    client.login(user, CYRUS_ADMIN_PASSWORD if user == CYRUS_ADMIN else servers.USERS[user])
    return client


def test_plain_login_reports_messages_and_time(imap_server) -> None:
    run = imap("-H", "127.0.0.1", "-p", str(imap_server.ports["imap"]), "-u", USER, "-w", "2", "-c", "5")
    match = assert_plugin_output(run.out, run.rc)
    assert run.rc == 0, run.out
    assert f"{USER} logged in, INBOX 3 messages" in run.line
    perf = dict(item.split("=", 1) for item in match["perf"].split())
    assert perf["messages"] == "3;;;0"
    assert perf["time"].endswith("s;2;5;0")


def test_starttls_and_imaps_verify_with_the_lab_ca(imap_server, certs) -> None:
    for mode, port in (("--starttls", imap_server.ports["imap"]), ("--tls", imap_server.ports["imaps"])):
        run = imap("-H", "127.0.0.1", "-p", str(port), mode, "--ca-file", str(certs.ca), "-u", USER)
        match = assert_plugin_output(run.out, run.rc)
        assert run.rc == 0, run.out
        assert "cert_days=" in match["perf"]
        days = float(match["perf"].split("cert_days=")[1].split(";")[0])
        assert 3640 < days <= 3650


# what each server answers a wrong password: Dovecot with an RFC 5530 code, at once (the lab lifts
# its auth penalty); Cyrus with none, after its failedloginpause (3 s)
REFUSED = {"dovecot": ("[AUTHENTICATIONFAILED] Authentication failed.", 0.0, 1.0),
           "cyrus": ("Login failed: authentication failure (no response code: a wrong password and a "
                     "failing user directory may look alike)", 2.9, 4.0)}


def login_failed(line: str) -> tuple[float, str]:
    """(seconds, the rest) of `IMAP CRITICAL - login failed for USER after N s: ...`."""
    found = re.fullmatch(rf"IMAP CRITICAL - login failed for {re.escape(USER)} after (\d+\.\d) s: (.*)", line)
    assert found, line
    return float(found[1]), found[2]


def test_wrong_password_is_critical_and_says_what_the_server_said(imap_server) -> None:
    run = imap("-H", "127.0.0.1", "-p", str(imap_server.ports["imap"]), "-u", USER, password="wrong-password")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2
    seconds, said = login_failed(run.line)
    expected, least, most = REFUSED[imap_server.kind]
    assert said == expected
    assert least <= seconds < most, seconds


def test_unknown_user_is_critical(dovecot) -> None:
    # Dovecot only: on Cyrus an unknown user is saslauthd's same refusal as the wrong password above
    run = imap("-H", "127.0.0.1", "-p", str(dovecot.ports["imap"]), "-u", "nobody@example.org")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and "login failed for nobody@example.org" in run.line, run.out


def test_unknown_folder_is_critical_naming_it(imap_server) -> None:
    run = imap("-H", "127.0.0.1", "-p", str(imap_server.ports["imap"]), "-u", USER, "--folder", "NoSuchFolder")
    assert_plugin_output(run.out, run.rc)
    own = {"dovecot": "NoSuchFolder", "cyrus": "INBOX/NoSuchFolder"}[imap_server.kind]
    assert run.rc == 2 and run.line.startswith(f"IMAP CRITICAL - IMAP error while selecting {own}: "), run.out


# user1's Archive/2024 in each server's own names: Dovecot's separator is ".", Cyrus's (Kolab's
# unixhierarchysep) "/" under the personal namespace INBOX/
ARCHIVE = {"dovecot": "Archive.2024", "cyrus": "INBOX/Archive/2024"}


@pytest.fixture
def archive(imap_server) -> Iterator[str]:
    """user1's folder Archive/2024 holding one message; its server's name."""
    name = ARCHIVE[imap_server.kind]
    client = login(imap_server)
    try:
        client.create_folder(name)
        client.append(name, b"From: user1@example.org\r\nSubject: archived\r\n\r\nold mail\r\n")
        yield name
    finally:
        client.delete_folder(name)
        if imap_server.kind == "dovecot" and client.folder_exists("Archive"):
            client.delete_folder("Archive")
        client.logout()


def test_folder_path_with_slashes_is_found_in_the_servers_dialect(imap_server, archive) -> None:
    port = str(imap_server.ports["imap"])
    for folder in ("Archive/2024", archive):  # the same folder, as the admin and as the server writes it
        run = imap("-H", "127.0.0.1", "-p", port, "-u", USER, "--folder", folder)
        assert_plugin_output(run.out, run.rc)
        assert run.rc == 0, run.out
        assert f"{USER} logged in, {archive} 1 messages" in run.line, run.line


@pytest.fixture
def shared_on_cyrus(cyrus) -> Iterator[None]:
    """user2's INBOX/Shared readable by user1, and Kolab's shared/probe (made by the admin), readable by all."""
    owner, admin = login(cyrus, "user2@example.org"), login(cyrus, CYRUS_ADMIN)
    try:
        owner.create_folder("INBOX/Shared")
        owner.setacl("INBOX/Shared", USER, "lrs")
        admin.create_folder("shared/probe@example.org")  # Cyrus gives it "anyone lrs"
        yield
    finally:
        owner.delete_folder("INBOX/Shared")
        admin.setacl("shared/probe@example.org", CYRUS_ADMIN, "lrswipkxtecda")  # the admin may only list
        admin.delete_folder("shared/probe@example.org")
        owner.logout()
        admin.logout()


def test_cyrus_other_users_and_shared_folders_keep_their_names(cyrus, shared_on_cyrus) -> None:
    # Cyrus only: the lab's Dovecot has no other namespace. With virtdomains a user sees another user
    # of the domain as user/NAME, a shared folder at the top level beside the personal INBOX/
    for folder in ("user/user2/Shared", "shared/probe"):
        run = imap("-H", "127.0.0.1", "-p", str(cyrus.ports["imap"]), "-u", USER, "--folder", folder)
        assert_plugin_output(run.out, run.rc)
        assert run.rc == 0 and f"{USER} logged in, {folder} 0 messages" in run.line, run.out


def test_cyrus_bare_uid_and_the_admin_log_in_but_have_no_inbox(cyrus) -> None:
    # Cyrus only: with virtdomains the bare uid authenticates (saslauthd finds uid=user1) but names no
    # mailbox; the admin has none either and may not read the users'. Probe users log in with their address
    port = str(cyrus.ports["imap"])
    run = imap("-H", "127.0.0.1", "-p", port, "-u", "user1")
    assert_plugin_output(run.out, run.rc)
    assert run.line == "IMAP CRITICAL - IMAP error while selecting INBOX: select failed: Mailbox does not exist"
    run = imap("-H", "127.0.0.1", "-p", port, "-u", CYRUS_ADMIN, password=CYRUS_ADMIN_PASSWORD)
    assert run.line == "IMAP CRITICAL - IMAP error while selecting INBOX: select failed: Mailbox does not exist"
    run = imap("-H", "127.0.0.1", "-p", port, "-u", CYRUS_ADMIN, "--folder", "user/user1@example.org",
               password=CYRUS_ADMIN_PASSWORD)
    assert run.line == ("IMAP CRITICAL - IMAP error while selecting user/user1@example.org: "
                        "select failed: Permission denied"), run.out


def test_untrusted_certificate_is_critical_unless_trusted(dovecot, certs) -> None:
    port = str(dovecot.ports["imaps"])
    run = imap("-H", "127.0.0.1", "-p", port, "--tls", "-u", USER)  # system CAs only
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and "certificate not trusted" in run.line, run.out
    run = imap("-H", "127.0.0.1", "-p", port, "--tls", "-u", USER, "--ca-file", str(certs.ca))
    assert run.rc == 0, run.out


@pytest.fixture(scope="module")
def odd_certs(request, lab_root, certs):
    """Dovecots serving a certificate from an untrusted CA, one expiring soon, one expired."""
    started = {kind: servers.start_dovecot(lab_root, certs, cert=kind) for kind in ("rogue", "expiring", "expired")}
    for server in started.values():
        request.addfinalizer(server.stop)
    return started


def test_rogue_ca_is_critical_and_insecure_opts_out(odd_certs, certs) -> None:
    port = str(odd_certs["rogue"].ports["imaps"])
    run = imap("-H", "127.0.0.1", "-p", port, "--tls", "--ca-file", str(certs.ca), "-u", USER)
    assert run.rc == 2 and "certificate not trusted" in run.line, run.out
    run = imap("-H", "127.0.0.1", "-p", port, "--tls", "--insecure", "-u", USER)
    assert run.rc == 0, run.out


def test_expiring_certificate_warns_then_crits_by_days(odd_certs, certs) -> None:
    port = str(odd_certs["expiring"].ports["imaps"])
    base = ("-H", "127.0.0.1", "-p", port, "--tls", "--ca-file", str(certs.ca), "-u", USER)
    run = imap(*base)  # 5 days left: below the default critical 7
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and "(cert_days 5 below critical 7)" in run.line, run.out
    run = imap(*base, "--cert-warning", "20", "--cert-critical", "3")
    assert run.rc == 1 and "(cert_days 5 below warning 20)" in run.line, run.out
    run = imap(*base, "--cert-warning", "3", "--cert-critical", "1")
    assert run.rc == 0, run.out


def test_expired_certificate_is_critical(odd_certs, certs) -> None:
    port = str(odd_certs["expired"].ports["imaps"])
    run = imap("-H", "127.0.0.1", "-p", port, "--tls", "--ca-file", str(certs.ca), "-u", USER)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and "expired" in run.line, run.out


def test_refused_is_critical() -> None:
    port = str(servers.free_port())
    run = imap("-H", "127.0.0.1", "-p", port, "-u", USER)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and "connection refused" in run.line


@pytest.mark.parametrize("fault", [Silent, GarbageBanner,
                                   lambda: ResetMidLogin(b"* OK IMAP4rev1 fake ready\r\n")])
def test_faults_are_critical_within_the_timeout(fault) -> None:
    with fault() as port:
        run = imap("-H", "127.0.0.1", "-p", str(port), "-u", USER, "-t", "2")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2, run.out
    assert run.seconds < 3, run.seconds
    assert run.out.count("\n") == 1


def test_hang_reports_the_step_and_the_timeout_state() -> None:
    with Silent() as port:
        run = imap("-H", "127.0.0.1", "-p", str(port), "-u", USER, "-t", "1", "--timeout-state", "UNKNOWN")
    assert run.rc == 3
    assert run.line == "IMAP UNKNOWN - no answer within 1 s (while connecting)"


def test_reset_mid_login_names_the_step() -> None:
    with ResetMidLogin(b"* OK IMAP4rev1 fake ready\r\n") as port:
        run = imap("-H", "127.0.0.1", "-p", str(port), "-u", USER)
    assert run.rc == 2 and "(while logging in)" in run.line, run.out


def test_password_file(dovecot, tmp_path) -> None:
    secret = tmp_path / "imap.pw"
    secret.write_text(PASSWORD + "\n")
    port = str(dovecot.ports["imap"])
    run = imap("-H", "127.0.0.1", "-p", port, "-u", USER, "--password-file", str(secret), password=None)
    assert run.rc == 0, run.out
    for bad, words in ((tmp_path / "missing", "No such file"), (tmp_path, "Is a directory")):
        run = imap("-H", "127.0.0.1", "-p", port, "-u", USER, "--password-file", str(bad), password=None)
        assert_plugin_output(run.out, run.rc)
        assert run.rc == 3 and words in run.line, run.out
    run = imap("-H", "127.0.0.1", "-p", port, "-u", USER, password=None)
    assert run.rc == 3 and "no password" in run.line


@pytest.mark.parametrize(("args", "words"), [
    (["-H", "127.0.0.1", "--bogus"], "unrecognized arguments: --bogus"),
    (["-H", "127.0.0.1", "-w", "abc"], "invalid range 'abc'"),
    (["-u", USER], "missing -H/--hostname"),
    (["-H", "127.0.0.1", "-t", "0"], "invalid number of seconds"),
    (["-H", "127.0.0.1", "--tls", "--starttls"], "not allowed with"),
    (["-H", "127.0.0.1", "-u", USER, "--folder", "/"], "--folder names no folder"),
])
def test_usage_errors_are_unknown(args, words) -> None:
    run = imap(*args)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 3 and words in run.line, run.out


def test_help_and_version_exit_unknown_without_protocol_imports() -> None:
    probe = ("import sys; from kolabmon.probes import imap; rc = imap.main(sys.argv[1:]); "
             "print(rc, sorted(m for m in ('imapclient', 'nagiosplugin', 'ssl') if m in sys.modules))")
    for flag in ("--help", "--version", "--bogus"):
        proc = subprocess.run([str(BIN / "python"), "-c", probe, flag], capture_output=True, text=True,
                              env=clean_env())
        assert proc.stdout.rstrip().endswith("3 []"), proc.stdout


def test_password_never_printed_nor_on_argv(dovecot) -> None:
    port = str(dovecot.ports["imap"])
    for password in (PASSWORD, "wrong-" + PASSWORD):
        run = imap("-H", "127.0.0.1", "-p", port, "-u", USER, "-v", "-v", "-v", password=password)
        assert password not in run.out + run.err
    with Silent() as silent:
        env = clean_env(KOLABMON_PASSWORD=PASSWORD)
        proc = subprocess.Popen([str(BIN / "check_kolab_imap"), "-H", "127.0.0.1", "-p", str(silent),
                                 "-u", USER, "-t", "2"], env=env, stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        with open(f"/proc/{proc.pid}/cmdline", "rb") as cmdline:
            assert PASSWORD.encode() not in cmdline.read()
        out, _ = proc.communicate(timeout=5)
    assert PASSWORD not in out


@pytest.fixture
def own_cyrus(tmp_path: Path, certs) -> Iterator[tuple[servers.Server, servers.Server]]:
    """(slapd, Cyrus) of this test alone, logins through a saslauthd of its own: its slapd may be
    stopped or killed, the session's never."""
    started: list[servers.Server] = []
    try:
        started.append(servers.start_slapd(tmp_path, certs))
        started.append(servers.start_saslauthd(tmp_path, started[0]))
        started.append(servers.start_cyrus(tmp_path, certs, servers.mux(started[1])))
        yield started[0], started[2]
    finally:
        if started and servers.running(started[0]):
            os.kill(started[0].pid, signal.SIGCONT)  # a stopped slapd would not hear its stop
        servers.stop_servers(reversed(started))


def test_cyrus_hung_ldap_is_a_login_that_never_answers(own_cyrus) -> None:
    # saslauthd waits out ldap_timeout (5 s) twice, then Cyrus its pause: 13 s to the same refusal
    slapd, cyrus = own_cyrus
    os.kill(slapd.pid, signal.SIGSTOP)
    run = imap("-H", "127.0.0.1", "-p", str(cyrus.ports["imap"]), "-u", USER, "-t", "4")
    assert_plugin_output(run.out, run.rc)
    assert run.line == "IMAP CRITICAL - no answer within 4 s (while logging in)"


def test_cyrus_killed_ldap_reads_exactly_like_a_wrong_password(own_cyrus) -> None:
    # the same words in the same pause as the wrong password of the session's Cyrus (REFUSED)
    slapd, cyrus = own_cyrus
    os.kill(slapd.pid, signal.SIGKILL)
    run = imap("-H", "127.0.0.1", "-p", str(cyrus.ports["imap"]), "-u", USER)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2, run.out
    seconds, said = login_failed(run.line)
    expected, least, most = REFUSED["cyrus"]
    assert said == expected
    assert least <= seconds < most, seconds
