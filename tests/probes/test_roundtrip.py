"""check_kolab_roundtrip through the real lab: Postfix → LMTP → Dovecot or Cyrus, and fakes for the hangs.

The probe mailbox is user2's: the IMAP tests count user1's INBOX (3 messages), which these
tests must never change. The tests of the whole way and of what the IMAP server does run against
both back ends (`backend`); those of Postfix's refusals and of the probe's own timing against
Dovecot only (the same Postfix, and a failed IMAP login there costs no 3 s pause).
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage

import imapclient
import pytest

from lab import servers
from tests.fakes.faults import Silent
from tests.helpers import BIN, assert_plugin_output, clean_env, run_plugin

USER, PASSWORD = "user2@example.org", servers.USERS["user2@example.org"]
OTHER, OTHER_PASSWORD = "user1@example.org", servers.USERS["user1@example.org"]
PREFIX = "kolabmon-roundtrip "


def roundtrip(*args: str, password: str | None = PASSWORD):
    return run_plugin("check_kolab_roundtrip", *args, password=password)


def perf(match) -> dict[str, str]:
    return dict(item.split("=", 1) for item in match["perf"].split())


def legs(smtp: servers.Server, imap: servers.Server, certs) -> tuple[str, ...]:
    """Both legs over STARTTLS, verified with the lab CA (Postfix offers AUTH only after TLS)."""
    return ("-H", "127.0.0.1", "--smtp-port", str(smtp.ports["smtp"]), "--imap-port",
            str(imap.ports["imap"]), "--starttls", "--ca-file", str(certs.ca))


@pytest.fixture
def lab(postfix, dovecot, certs) -> tuple[str, ...]:
    return legs(postfix, dovecot, certs)


@pytest.fixture
def both(backend, certs) -> tuple[str, ...]:
    return legs(backend.smtp, backend.imap, certs)


def mailbox(server, user: str = USER) -> imapclient.IMAPClient:
    client = imapclient.IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False, timeout=10)
    client.login(user, servers.USERS[user])
    client.select_folder("INBOX")
    return client


def subjects(server, user: str = USER) -> list[str]:
    client = mailbox(server, user)
    try:
        fetched = client.fetch(client.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    finally:
        client.logout()
    return sorted(" ".join(data[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split()).removeprefix("Subject: ")
                  for data in fetched.values())


def probe_messages(server, user: str = USER) -> list[str]:
    return [subject for subject in subjects(server, user) if subject.startswith(PREFIX)]


def remove(server, user: str, wanted: set[str]) -> None:
    """Delete the messages with these subjects from the user's INBOX (these UIDs only)."""
    client = mailbox(server, user)
    try:
        fetched = client.fetch(client.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        uids = [uid for uid, data in fetched.items() if " ".join(
            data[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split()).removeprefix("Subject: ") in wanted]
        if uids:
            client.add_flags(uids, [imapclient.DELETED])
            client.uid_expunge(uids)
    finally:
        client.logout()


def plant(server, subject: str, age: dt.timedelta) -> None:
    """Put a message with this subject and an INTERNALDATE `age` ago into user2's INBOX."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = USER, USER, subject
    message.set_content("planted by the round-trip tests\n")
    client = mailbox(server)
    try:
        client.append("INBOX", message.as_bytes(), msg_time=dt.datetime.now(dt.UTC) - age)
    finally:
        client.logout()


def test_round_trip_over_starttls_is_ok_and_leaves_nothing(both, backend) -> None:
    before = subjects(backend.imap)
    run = roundtrip(*both, "-u", USER, "-w", "5", "-c", "8")
    match = assert_plugin_output(run.out, run.rc)
    assert run.rc == 0, run.out
    assert f"message from {USER} to {USER} seen in INBOX after" in run.line
    values = perf(match)
    assert values["delivery"].endswith("s;5;8;0")
    assert values["smtp_time"].endswith("s;;;0") and values["time"].endswith("s;;;0")
    delivery, smtp_time, total = (float(values[key].split("s;")[0]) for key in ("delivery", "smtp_time", "time"))
    assert 0 < smtp_time < total and 0 < delivery < total
    assert subjects(backend.imap) == before  # the probe message was deleted
    assert len(subjects(backend.imap, OTHER)) == 3


def test_round_trip_over_implicit_tls(backend, certs) -> None:
    run = roundtrip("-H", "127.0.0.1", "--smtp-port", str(backend.smtp.ports["smtps"]), "--imap-port",
                    str(backend.imap.ports["imaps"]), "--tls", "--ca-file", str(certs.ca), "-u", USER)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 0, run.out
    assert probe_messages(backend.imap) == []


def test_stale_probe_messages_are_cleaned_and_nothing_else(both, backend) -> None:
    server = backend.imap
    stale, fresh, other = (PREFIX + "stale-from-a-failed-run", PREFIX + "a-run-in-flight",
                           "kolabmon-roundtripper old mail of the user")
    plant(server, stale, dt.timedelta(hours=1))
    plant(server, fresh, dt.timedelta(minutes=2))  # another probe's message, still in flight
    plant(server, other, dt.timedelta(days=3))
    try:
        run = roundtrip(*both, "-u", USER, "-v")
        assert_plugin_output(run.out, run.rc)
        assert run.rc == 0, run.out
        assert run.line.split(" | ")[0].endswith(", 1 stale probe messages removed"), run.line
        left = subjects(server)
        assert stale not in left
        assert fresh in left and other in left
    finally:
        remove(server, USER, {stale, fresh, other})


def test_unknown_recipient_blames_smtp(lab, dovecot) -> None:
    run = roundtrip(*lab, "-u", USER, "--to", "nobody@example.org")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2, run.out
    assert "SMTP refused RCPT TO:<nobody@example.org>: 550 5.1.1" in run.line
    assert probe_messages(dovecot) == []


def test_smtp_refused_connection_blames_smtp(dovecot, certs) -> None:
    port = servers.free_port()
    run = roundtrip("-H", "127.0.0.1", "--smtp-port", str(port), "--imap-port", str(dovecot.ports["imap"]),
                    "--starttls", "--ca-file", str(certs.ca), "-u", USER)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and run.line == f"ROUNDTRIP CRITICAL - SMTP refused the connection to 127.0.0.1:{port}"


def test_smtp_without_auth_on_the_plain_port_blames_smtp(postfix, dovecot) -> None:
    run = roundtrip("-H", "127.0.0.1", "--smtp-port", str(postfix.ports["smtp"]), "--imap-port",
                    str(dovecot.ports["imap"]), "-u", USER)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and "SMTP: server offers no AUTH on the plain connection" in run.line, run.out
    run = roundtrip("-H", "127.0.0.1", "--smtp-port", str(postfix.ports["smtp"]), "--imap-port",
                    str(dovecot.ports["imap"]), "-u", USER, "--no-smtp-auth")  # inbound mail needs none
    assert run.rc == 0, run.out


def test_imap_login_failure_blames_imap(both, backend) -> None:
    run = roundtrip(*both, "-u", USER, password="wrong-password")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2, run.out
    said = {"dovecot": "[AUTHENTICATIONFAILED] Authentication failed.",
            "cyrus": "Login failed: authentication failure (no response code: a wrong password and a failing "
                     "user directory may look alike)"}[backend.name]
    assert re.fullmatch(rf"ROUNDTRIP CRITICAL - IMAP login failed for {re.escape(USER)} after \d+\.\d s: "
                        + re.escape(said), run.line), run.line
    assert probe_messages(backend.imap) == []  # nothing sent while the mailbox cannot be watched


def test_imap_refused_blames_imap(postfix) -> None:
    port = servers.free_port()
    run = roundtrip("-H", "127.0.0.1", "--smtp-port", str(postfix.ports["smtp"]), "--imap-port", str(port),
                    "-u", USER)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and run.line == f"ROUNDTRIP CRITICAL - IMAP refused the connection to 127.0.0.1:{port}"


def test_accepted_but_not_seen_blames_delivery(lab, dovecot) -> None:
    """Submitted to user2 while watching user1's INBOX: SMTP accepts, the watched box never sees it."""
    before = probe_messages(dovecot)
    run = roundtrip(*lab, "-u", OTHER, "--to", USER, "-t", "3", password=OTHER_PASSWORD)
    try:
        assert_plugin_output(run.out, run.rc)
        assert run.rc == 2, run.out
        assert "message accepted by SMTP (2.0.0 Ok: queued as " in run.line
        assert f"but not seen in INBOX of {OTHER} after 2." in run.line
        assert run.seconds < 4, run.seconds
        assert run.out.count("\n") == 1
        assert len(subjects(dovecot, OTHER)) == 3
    finally:
        arrived = set(probe_messages(dovecot)) - set(before)
        deadline = time.monotonic() + 5
        while not arrived and time.monotonic() < deadline:
            time.sleep(0.1)
            arrived = set(probe_messages(dovecot)) - set(before)
        remove(dovecot, USER, arrived)
    assert len(arrived) == 1  # it was delivered, only elsewhere


@pytest.fixture
def archive_on_cyrus(cyrus) -> Iterator[None]:
    """user2's own folder Archive, which Cyrus names INBOX/Archive."""
    client = mailbox(cyrus)
    try:
        client.create_folder("INBOX/Archive")
        yield
    finally:
        client.delete_folder("INBOX/Archive")
        client.logout()


def test_cyrus_folder_is_watched_under_its_own_name(cyrus, cyrus_postfix, certs, archive_on_cyrus) -> None:
    # Cyrus only: the folder lookup is proven on both in test_imap; only Cyrus's INBOX/ prefix
    # fails a round trip that selects the name as written. Delivery goes to the INBOX, not there
    before = probe_messages(cyrus)
    run = roundtrip(*legs(cyrus_postfix, cyrus, certs), "-u", USER, "--folder", "Archive", "-t", "3")
    try:
        assert_plugin_output(run.out, run.rc)
        assert run.rc == 2, run.out
        assert f"but not seen in INBOX/Archive of {USER} after 2." in run.line, run.line
    finally:
        arrived = set(probe_messages(cyrus)) - set(before)
        deadline = time.monotonic() + 5
        while not arrived and time.monotonic() < deadline:
            time.sleep(0.1)
            arrived = set(probe_messages(cyrus)) - set(before)
        remove(cyrus, USER, arrived)
    assert len(arrived) == 1


@pytest.mark.parametrize(("leg", "words"), [
    ("--imap-port", "no answer within 2 s (while connecting to IMAP)"),
    ("--smtp-port", "no answer within 2 s (while reading the banner on SMTP)"),
])
def test_hang_on_either_leg_is_a_timeout_naming_it(postfix, dovecot, leg, words) -> None:
    ports = {"--smtp-port": str(postfix.ports["smtp"]), "--imap-port": str(dovecot.ports["imap"])}
    with Silent() as silent:
        ports[leg] = str(silent)
        run = roundtrip("-H", "127.0.0.1", *(item for pair in ports.items() for item in pair),
                        "-u", USER, "--no-smtp-auth", "-t", "2")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and run.line == f"ROUNDTRIP CRITICAL - {words}", run.out
    assert run.seconds < 3, run.seconds


def test_delivery_threshold_warns(lab, dovecot) -> None:
    run = roundtrip(*lab, "-u", USER, "-w", "0", "-c", "30")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 1, run.out
    assert "above warning 0)" in run.line and "(delivery " in run.line
    assert probe_messages(dovecot) == []


def test_hosts_default_to_h_and_can_be_split(postfix, dovecot, certs) -> None:
    run = roundtrip("--smtp-host", "127.0.0.1", "--imap-host", "localhost", "--smtp-port",
                    str(postfix.ports["smtp"]), "--imap-port", str(dovecot.ports["imap"]), "--starttls",
                    "--ca-file", str(certs.ca), "-u", USER, "--from", "monitor@example.org")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 0, run.out
    assert f"message from monitor@example.org to {USER}" in run.line


@pytest.mark.parametrize(("args", "words"), [
    (["-H", "127.0.0.1"], "missing -u/--user"),
    (["-u", USER], "missing -H/--hostname (or both --smtp-host and --imap-host)"),
    (["-u", USER, "--smtp-host", "127.0.0.1"], "missing -H/--hostname"),
    (["-H", "127.0.0.1", "-u", USER, "-p", "25"], "use --smtp-port and --imap-port"),
    (["-H", "127.0.0.1", "-u", USER, "--poll", "0"], "invalid number of seconds"),
    (["-H", "127.0.0.1", "-u", USER, "--smtp-port", "0"], "invalid port"),
    (["-H", "127.0.0.1", "-u", USER, "-w", "x"], "invalid range"),
    (["-H", "127.0.0.1", "-u", USER, "--bogus"], "unrecognized arguments: --bogus"),
    (["-H", "127.0.0.1", "-u", USER, "--folder", ""], "--folder names no folder"),
    (["-H", "127.0.0.1", "-u", USER, "--password-file", "/nonexistent/pw"], "cannot read password file"),
])
def test_usage_errors_are_unknown(args, words) -> None:
    run = roundtrip(*args)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 3 and words in run.line, run.out


def test_help_and_version_exit_unknown_without_protocol_imports() -> None:
    probe = ("import sys; from kolabmon.probes import roundtrip; rc = roundtrip.main(sys.argv[1:]); "
             "print(rc, sorted(m for m in ('imapclient', 'smtplib', 'nagiosplugin', 'ssl', 'email')"
             " if m in sys.modules))")
    for flag in ("--help", "--version", "--bogus"):
        proc = subprocess.run([str(BIN / "python"), "-c", probe, flag], capture_output=True, text=True,
                              env=clean_env())
        assert proc.stdout.rstrip().endswith("3 []"), proc.stdout
