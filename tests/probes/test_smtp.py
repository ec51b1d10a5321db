"""check_kolab_smtp against the real Postfix of the lab, and against fakes for the faults.

The tests that authenticate run against both back ends (`backend`): Postfix asking Dovecot's SASL,
and Postfix asking saslauthd (LDAP) through Cyrus SASL, as Kolab runs it. The rest is Postfix's own
behaviour, the same whichever SASL it asks, and runs against the Dovecot one only.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from lab import servers
from tests.fakes.faults import GarbageBanner, Silent
from tests.fakes.smtp_faults import RejectingBanner, ResetMidSession
from tests.helpers import BIN, assert_plugin_output, clean_env, run_plugin

USER, PASSWORD = "user1@example.org", servers.USERS["user1@example.org"]


def smtp(*args: str, password: str | None = PASSWORD):
    return run_plugin("check_kolab_smtp", *args, password=password)


def perf(match) -> dict[str, str]:
    return dict(item.split("=", 1) for item in match["perf"].split())


def logged(postfix, *args: str):
    """Run the plugin; return the run and what Postfix logged meanwhile (written asynchronously)."""
    log = postfix.root / "maillog"
    size = log.stat().st_size
    run = smtp(*args)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        with log.open("rb") as handle:
            handle.seek(size)
            text = handle.read().decode(errors="replace")
        if "disconnect from" in text:
            break
        time.sleep(0.05)
    return run, text


def test_plain_banner_and_ehlo_and_polite_quit(postfix) -> None:
    run, log = logged(postfix, "-H", "127.0.0.1", "-p", str(postfix.ports["smtp"]), "-w", "2", "-c", "5")
    match = assert_plugin_output(run.out, run.rc)
    assert run.rc == 0, run.out
    assert run.line.startswith("SMTP OK - 220 lab.example.org ESMTP"), run.line
    assert perf(match)["time"].endswith("s;2;5;0")
    assert "cert_days" not in match["perf"]
    assert "ehlo=1 quit=1 commands=2" in log, log


def test_starttls_and_auth_plain_with_the_lab_ca(backend, certs) -> None:
    run = smtp("-H", "127.0.0.1", "-p", str(backend.smtp.ports["smtp"]), "--starttls", "--ca-file", str(certs.ca),
               "-u", USER)
    match = assert_plugin_output(run.out, run.rc)
    assert run.rc == 0, run.out
    assert f"STARTTLS, AUTH PLAIN as {USER}, certificate valid" in run.line
    days = float(perf(match)["cert_days"].split(";")[0])
    assert 3640 < days <= 3650
    assert perf(match)["cert_days"].endswith(";30:;7:")


def test_implicit_tls_with_auth_login(backend, certs) -> None:
    run = smtp("-H", "127.0.0.1", "-p", str(backend.smtp.ports["smtps"]), "--tls", "--ca-file", str(certs.ca),
               "-u", USER, "--auth-mech", "login")
    match = assert_plugin_output(run.out, run.rc)
    assert run.rc == 0, run.out
    assert f"implicit TLS, AUTH LOGIN as {USER}" in run.line
    assert 3640 < float(perf(match)["cert_days"].split(";")[0]) <= 3650


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_wrong_password_is_critical_and_quick(backend, certs, mech) -> None:
    # Postfix has no failure pause of its own, in front of saslauthd either
    run = smtp("-H", "127.0.0.1", "-p", str(backend.smtp.ports["smtp"]), "--starttls", "--ca-file", str(certs.ca),
               "-u", USER, "--auth-mech", mech, password="wrong-password")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2, run.out
    said = {"dovecot": "535 5.7.8 Error: authentication failed: ",  # then the reason Dovecot gave Postfix
            "cyrus": "535 5.7.8 Error: authentication failed: authentication failure"}[backend.name]
    assert run.line.startswith(f"SMTP CRITICAL - server refused AUTH {mech} as {USER}: {said}"), run.line
    assert run.seconds < 3, run.seconds
    assert "wrong-password" not in run.out


def test_user_without_auth_offered_is_critical(postfix) -> None:
    run, log = logged(postfix, "-H", "127.0.0.1", "-p", str(postfix.ports["smtp"]), "-u", USER)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2, run.out
    assert "server offers no AUTH on the plain connection" in run.line
    assert "try --starttls" in run.line
    assert "quit=1" in log, log  # a refusal of ours is still a polite goodbye


def test_expected_extensions_by_phase(postfix, certs) -> None:
    port = str(postfix.ports["smtp"])
    run = smtp("-H", "127.0.0.1", "-p", port, "--expect-ext", "STARTTLS,AUTH")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2, run.out
    assert "EHLO on the plain connection does not advertise AUTH (it advertises" in run.line
    assert "STARTTLS" in run.line.split("(it advertises", 1)[1]
    tls = ("--starttls", "--ca-file", str(certs.ca))
    run = smtp("-H", "127.0.0.1", "-p", port, *tls, "--expect-ext", "starttls,auth,pipelining")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 0, run.out
    assert "STARTTLS, offers STARTTLS/AUTH/PIPELINING, certificate valid" in run.line
    run = smtp("-H", "127.0.0.1", "-p", port, *tls, "--expect-ext", "AUTH,X-NOSUCH,ETRN,X-OTHER")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2, run.out
    assert "EHLO after STARTTLS does not advertise X-NOSUCH, X-OTHER" in run.line


def test_untrusted_certificate_is_critical_unless_trusted(postfix, certs) -> None:
    starttls = ("-H", "127.0.0.1", "-p", str(postfix.ports["smtp"]), "--starttls", "-u", USER)
    run = smtp(*starttls)  # system CAs only
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and "TLS certificate not trusted" in run.line and "(while starting TLS)" in run.line, run.out
    implicit = ("-H", "127.0.0.1", "-p", str(postfix.ports["smtps"]), "--tls", "-u", USER)
    run = smtp(*implicit)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and "TLS certificate not trusted" in run.line and "(while connecting)" in run.line, run.out
    for args in (starttls, implicit):
        assert smtp(*args, "--ca-file", str(certs.ca)).rc == 0
        run = smtp(*args, "--insecure")
        assert run.rc == 0, run.out


def test_refused_is_critical() -> None:
    run = smtp("-H", "127.0.0.1", "-p", str(servers.free_port()))
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and run.line == "SMTP CRITICAL - connection refused (while connecting)", run.out


@pytest.mark.parametrize(("fault", "words"), [
    (Silent, "no answer within 2 s (while reading the banner)"),
    (GarbageBanner, "unexpected banner (not SMTP): '?\ufffdHELLO? this is not a mail server ?[31m'"),
    (RejectingBanner, "server refused the session: 554 5.3.2 fake.example.org closed for maintenance"),
    (lambda: RejectingBanner(b"421 4.3.2 fake.example.org Service shutting down"),
     "server refused the session: 421 4.3.2 fake.example.org Service shutting down"),
    (ResetMidSession, f"connection reset by the server (while authenticating as {USER})"),
])
def test_faults_are_critical_within_the_timeout(fault, words) -> None:
    with fault() as port:
        run = smtp("-H", "127.0.0.1", "-p", str(port), "-u", USER, "-t", "2")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2, run.out
    assert words in run.line, run.line
    assert run.seconds < 3, run.seconds
    assert run.out.count("\n") == 1


def test_hang_reports_the_step_and_the_timeout_state() -> None:
    with Silent() as port:
        run = smtp("-H", "127.0.0.1", "-p", str(port), "-t", "1", "--timeout-state", "UNKNOWN")
    assert run.rc == 3
    assert run.line == "SMTP UNKNOWN - no answer within 1 s (while reading the banner)"


def test_ehlo_name_default_and_chosen() -> None:
    fake = ResetMidSession()
    with fake as port:
        smtp("-H", "127.0.0.1", "-p", str(port))
        smtp("-H", "127.0.0.1", "-p", str(port), "--ehlo", "monitor.example.net")
    default, chosen = fake.ehlo
    assert "." in default and not default.startswith("localhost"), default
    assert chosen == "monitor.example.net"


def test_password_file(postfix, certs, tmp_path) -> None:
    secret = tmp_path / "smtp.pw"
    secret.write_text(PASSWORD + "\n")
    args = ("-H", "127.0.0.1", "-p", str(postfix.ports["smtp"]), "--starttls", "--ca-file", str(certs.ca),
            "-u", USER)
    run = smtp(*args, "--password-file", str(secret), password=None)
    assert run.rc == 0, run.out
    run = smtp(*args, "--password-file", str(tmp_path / "missing"), password=None)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 3 and "cannot read password file" in run.line and "No such file" in run.line, run.out
    run = smtp(*args, password=None)
    assert run.rc == 3 and "no password" in run.line, run.out


@pytest.mark.parametrize(("args", "words"), [
    (["-H", "127.0.0.1", "--bogus"], "unrecognized arguments: --bogus"),
    (["-H", "127.0.0.1", "-w", "abc"], "invalid range 'abc'"),
    (["-H", "127.0.0.1", "-c", "5:1"], "start is greater than end"),
    (["-H", "127.0.0.1", "-u", USER, "--auth-mech", "CRAM-MD5"], "invalid AUTH mechanism 'CRAM-MD5'"),
    (["-H", "127.0.0.1", "--expect-ext", "STARTTLS,,AUTH"], "invalid extension list"),
    (["-H", "127.0.0.1", "-p", "70000"], "invalid port"),
    (["-H", "127.0.0.1", "--tls", "--starttls"], "not allowed with"),
    (["-u", USER], "missing -H/--hostname"),
    (["-H", "127.0.0.1", "--starttls", "--ca-file", "/nonexistent/ca.pem"], "cannot read CA file"),
])
def test_usage_errors_are_unknown(args, words) -> None:
    run = smtp(*args)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 3 and words in run.line, run.out


def test_help_and_version_exit_unknown_without_protocol_imports() -> None:
    probe = ("import sys; from kolabmon.probes import smtp; rc = smtp.main(sys.argv[1:]); "
             "print(rc, sorted(m for m in ('smtplib', 'nagiosplugin', 'ssl', 'email') if m in sys.modules))")
    for flag in ("--help", "--version", "--bogus"):
        proc = subprocess.run([str(BIN / "python"), "-c", probe, flag], capture_output=True, text=True,
                              env=clean_env())
        assert proc.stdout.rstrip().endswith("3 []"), proc.stdout
    help_text = subprocess.run([str(BIN / "check_kolab_smtp"), "--help"], capture_output=True, text=True,
                               env=clean_env()).stdout
    for option in ("--starttls", "--tls", "--expect-ext", "--auth-mech", "--ehlo", "--password-file"):
        assert option in help_text


def test_password_never_printed_nor_on_argv(postfix, certs) -> None:
    args = ("-H", "127.0.0.1", "-p", str(postfix.ports["smtp"]), "--starttls", "--ca-file", str(certs.ca),
            "-u", USER, "-v", "-v", "-v")
    for password in (PASSWORD, "wrong-" + PASSWORD):
        run = smtp(*args, password=password)
        assert password not in run.out + run.err
    with Silent() as silent:
        proc = subprocess.Popen([str(BIN / "check_kolab_smtp"), "-H", "127.0.0.1", "-p", str(silent),
                                 "-u", USER, "-t", "2"], env=clean_env(KOLABMON_PASSWORD=PASSWORD),
                                stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        with open(f"/proc/{proc.pid}/cmdline", "rb") as cmdline:
            assert PASSWORD.encode() not in cmdline.read()
        out, _ = proc.communicate(timeout=5)
    assert PASSWORD not in out
