"""check_kolab_imap against the real Dovecot of the lab, and against fakes for the faults."""

from __future__ import annotations

import subprocess
import time

import pytest

from lab import servers
from tests.fakes.faults import GarbageBanner, ResetMidLogin, Silent
from tests.helpers import BIN, assert_plugin_output, clean_env, run_plugin

USER, PASSWORD = "user1@example.org", servers.USERS["user1@example.org"]


def imap(*args: str, password: str | None = PASSWORD, **env: str):
    return run_plugin("check_kolab_imap", *args, password=password, **env)


def test_plain_login_reports_messages_and_time(dovecot) -> None:
    run = imap("-H", "127.0.0.1", "-p", str(dovecot.ports["imap"]), "-u", USER, "-w", "2", "-c", "5")
    match = assert_plugin_output(run.out, run.rc)
    assert run.rc == 0, run.out
    assert f"{USER} logged in, INBOX 3 messages" in run.line
    perf = dict(item.split("=", 1) for item in match["perf"].split())
    assert perf["messages"] == "3;;;0"
    assert perf["time"].endswith("s;2;5;0")


def test_starttls_and_imaps_verify_with_the_lab_ca(dovecot, certs) -> None:
    for mode, port in (("--starttls", dovecot.ports["imap"]), ("--tls", dovecot.ports["imaps"])):
        run = imap("-H", "127.0.0.1", "-p", str(port), mode, "--ca-file", str(certs.ca), "-u", USER)
        match = assert_plugin_output(run.out, run.rc)
        assert run.rc == 0, run.out
        assert "cert_days=" in match["perf"]
        days = float(match["perf"].split("cert_days=")[1].split(";")[0])
        assert 3640 < days <= 3650


def test_wrong_password_is_critical(dovecot) -> None:
    run = imap("-H", "127.0.0.1", "-p", str(dovecot.ports["imap"]), "-u", USER, password="wrong")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2
    assert f"login failed for {USER}" in run.line


def test_unknown_user_and_folder_are_critical(dovecot) -> None:
    port = str(dovecot.ports["imap"])
    run = imap("-H", "127.0.0.1", "-p", port, "-u", "nobody@example.org")
    assert run.rc == 2 and "login failed for nobody@example.org" in run.line, run.out
    run = imap("-H", "127.0.0.1", "-p", port, "-u", USER, "--folder", "NoSuchFolder")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and "NoSuchFolder" in run.line, run.out


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
