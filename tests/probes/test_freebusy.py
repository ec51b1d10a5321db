"""check_kolab_freebusy against the real nginx of the lab, and against fakes for the faults.

Bad bodies go to files of their own (write_freebusy takes any name), removed afterwards, so
user1's and user2's good lists stay as the lab wrote them.
"""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest

from lab import servers
from tests.fakes.faults import GarbageBanner, ResetMidLogin, Silent
from tests.helpers import BIN, assert_plugin_output, clean_env, run_plugin

USER, PASSWORD = "user1@example.org", servers.USERS["user1@example.org"]
OTHER = "user2@example.org"


def fb(*args: str, password: str | None = PASSWORD):
    return run_plugin("check_kolab_freebusy", *args, password=password)


def url(nginx, name: str = USER, https: bool = False) -> str:
    scheme = "https" if https else "http"
    return f"{scheme}://127.0.0.1:{nginx.ports[scheme]}/freebusy/{name}.ifb"


def perf(match) -> dict[str, str]:
    return dict(item.split("=", 1) for item in match["perf"].split())


def critical(run, words: str) -> None:
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2, run.out
    assert words in run.line, run.out
    assert run.out.count("\n") == 1, run.out


@pytest.fixture
def published(nginx):
    """Publish a body (or a generated list) under a name of its own; removed after the test."""
    written = []

    def publish(name: str, **kwargs) -> str:
        written.append(servers.write_freebusy(nginx, name, **kwargs))
        return url(nginx, name)

    yield publish
    for path in written:
        path.unlink(missing_ok=True)


def calendar(*vfreebusy: str, organizer: str = USER) -> str:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//test//EN", "BEGIN:VFREEBUSY",
             f"ORGANIZER:mailto:{organizer}", *vfreebusy, "END:VFREEBUSY", "END:VCALENDAR"]
    return "\r\n".join(lines) + "\r\n"


NOW = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def test_fresh_freebusy_over_http(nginx) -> None:
    servers.write_freebusy(nginx, USER)  # the good list, fresh
    run = fb("--url", url(nginx), "-u", USER, "-w", "1", "-c", "2")
    match = assert_plugin_output(run.out, run.rc)
    assert run.rc == 0, run.out
    assert run.line.startswith(f"FREEBUSY OK - {USER} free/busy 1 busy period, updated "), run.line
    values = perf(match)
    assert int(values["age"].split("s;")[0]) < 60 and values["age"].endswith(";;86400;0")
    size = (nginx.root / "html" / "freebusy" / f"{USER}.ifb").stat().st_size
    assert values["size"] == f"{size}B;;;0" and values["busy"] == "1;;;0"
    assert values["time"].endswith("s;1;2;0") and "cert_days" not in values


def test_https_verifies_and_reports_certificate_days(nginx, certs) -> None:
    run = fb("--url", url(nginx, https=True), "-u", USER)  # system CAs only
    critical(run, "TLS certificate not trusted")
    run = fb("--url", url(nginx, https=True), "-u", USER, "--ca-file", str(certs.ca))
    match = assert_plugin_output(run.out, run.rc)
    assert run.rc == 0 and "certificate valid 3650 more days" in run.line, run.out
    assert 3640 < float(perf(match)["cert_days"].split(";")[0]) <= 3650
    run = fb("--url", url(nginx, https=True), "-u", USER, "--insecure")
    assert run.rc == 0 and run.err == "", run.out + run.err  # no library warning: --insecure was asked for


def test_ca_bundle_from_the_environment_is_not_trusted(nginx, certs) -> None:
    run = run_plugin("check_kolab_freebusy", "--url", url(nginx, https=True), "-u", USER, password=PASSWORD,
                     REQUESTS_CA_BUNDLE=str(certs.ca), CURL_CA_BUNDLE=str(certs.ca))
    critical(run, "TLS certificate not trusted")


def test_host_form_builds_the_kolab_url(nginx, certs) -> None:
    run = fb("-H", "127.0.0.1", "-p", str(nginx.ports["https"]), "--tls", "--ca-file", str(certs.ca), "-u", USER)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 0 and f"{USER} free/busy" in run.line, run.out


def test_wrong_or_missing_login_is_critical(nginx) -> None:
    critical(fb("--url", url(nginx), "-u", USER, password="wrong"),
             f"HTTP 401 Unauthorized: login failed for {USER}")
    critical(fb("--url", url(nginx), "--user-match", USER, password=None),
             "HTTP 401 Unauthorized: the server wants a login (-u USER)")


def test_not_found_is_critical(nginx) -> None:
    critical(fb("--url", url(nginx, "nobody@example.org"), "-u", USER),
             f"HTTP 404 Not Found: no free/busy list at {url(nginx, 'nobody@example.org')}")


def test_server_error_is_critical(nginx) -> None:
    htpasswd = nginx.root / "conf" / "htpasswd"  # unreadable for nginx's worker: a real 500
    htpasswd.chmod(0o000)
    try:
        run = fb("--url", url(nginx), "-u", USER)
    finally:
        htpasswd.chmod(0o644)
    critical(run, "HTTP 500 Internal Server Error: the web server failed to serve")
    assert fb("--url", url(nginx), "-u", USER).rc == 0


def test_redirect_is_reported_not_followed(nginx) -> None:
    moved = nginx.root / "html" / "freebusy" / "moved.ifb"
    moved.mkdir()  # nginx redirects a directory to its slash form
    try:
        run = fb("--url", url(nginx, "moved"), "-u", USER)
    finally:
        moved.rmdir()
    critical(run, f"HTTP 301 Moved Permanently: redirected to {url(nginx, 'moved')}/ (not followed: check --url)")


def test_html_instead_of_icalendar_is_critical(published) -> None:
    page = published("html-page", body="<!DOCTYPE html>\n<html><body>Kolab login</body></html>\n")
    critical(fb("--url", page, "-u", USER),
             "the answer is not an iCalendar (text/calendar): it starts with '<!DOCTYPE html>', not BEGIN:VCALENDAR")


def test_broken_icalendar_is_critical(published) -> None:
    unclosed = published("unclosed", body=calendar(f"DTSTAMP:{NOW}").replace("END:VCALENDAR\r\n", ""))
    critical(fb("--url", unclosed, "-u", USER), "BEGIN:VCALENDAR is never closed")
    garbled = published("garbled", body=calendar(f"DTSTAMP:{NOW}", "this is no content line"))
    critical(fb("--url", garbled, "-u", USER), "line 7: not a content line: 'this is no content line'")


def test_icalendar_without_vfreebusy_is_critical(published) -> None:
    event = published("event-only", body=calendar(f"DTSTAMP:{NOW}").replace("VFREEBUSY", "VEVENT"))
    critical(fb("--url", event, "-u", USER), "the iCalendar holds no VFREEBUSY")


def test_vfreebusy_of_another_user_is_critical(nginx) -> None:
    critical(fb("--url", url(nginx, OTHER), "-u", USER), f"the VFREEBUSY is for {OTHER}, not {USER}")
    run = fb("--url", url(nginx, OTHER), "-u", USER, "--user-match", "User2@Example.ORG")  # case-insensitive
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 0 and "User2@Example.ORG free/busy 1 busy period" in run.line, run.out


@pytest.mark.parametrize("missing", ["DTSTART", "DTEND", "DTSTAMP"])
def test_missing_times_are_critical(published, missing) -> None:
    times = {"DTSTAMP": NOW, "DTSTART": NOW, "DTEND": "20990101T000000Z"}
    body = calendar(*(f"{name}:{value}" for name, value in times.items() if name != missing))
    critical(fb("--url", published(f"no-{missing.lower()}", body=body), "-u", USER),
             f"the VFREEBUSY for {USER} has no {missing}")


def test_unparseable_dtend_is_critical(published) -> None:
    body = calendar(f"DTSTAMP:{NOW}", f"DTSTART:{NOW}", "DTEND:next tuesday")
    critical(fb("--url", published("bad-dtend", body=body), "-u", USER),
             f"the VFREEBUSY for {USER} has a bad DTEND: 'next tuesday' is not a date-time")


def test_stale_dtstamp_is_critical_or_warning(published) -> None:
    stale = "stale@example.org"
    page = published(stale, dtstamp=dt.datetime.now(dt.UTC) - dt.timedelta(days=2, minutes=5))
    base = ("--url", page, "-u", USER, "--user-match", stale)
    run = fb(*base)
    critical(run, f"{stale} free/busy 1 busy period, updated 2 d ago")
    assert run.line.split(" | ")[0].endswith("above critical 86400)"), run.line
    run = fb(*base, "--max-age", str(3 * 86400), "--max-age-warning", "3600")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 1 and "above warning 3600)" in run.line, run.out
    run = fb(*base, "--max-age", str(3 * 86400))
    assert run.rc == 0, run.out


def test_refused_is_critical() -> None:
    critical(fb("--url", f"http://127.0.0.1:{servers.free_port()}/freebusy/{USER}.ifb", "-u", USER),
             "connection refused (while connecting)")


@pytest.mark.parametrize(("fault", "words"), [
    (Silent, "no answer within 2 s (while waiting for the answer)"),
    (GarbageBanner, "the server does not answer HTTP: got '\\x00\\xffHELLO? this is not a mail server"),
    (ResetMidLogin, "connection reset by the server (while waiting for the answer)"),
])
def test_faults_are_critical_within_the_timeout(fault, words) -> None:
    with fault() as port:
        run = fb("--url", f"http://127.0.0.1:{port}/freebusy/{USER}.ifb", "-u", USER, "-t", "2")
    critical(run, words)
    assert run.seconds < 3, run.seconds


def test_hang_in_tls_names_the_step_and_timeout_state() -> None:
    with Silent() as port:
        run = fb("--url", f"https://127.0.0.1:{port}/freebusy/{USER}.ifb", "-u", USER, "-t", "1",
                 "--timeout-state", "UNKNOWN")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 3 and run.line == "FREEBUSY UNKNOWN - no answer within 1 s (while connecting)", run.out
    assert run.seconds < 2, run.seconds


def test_password_file(nginx, tmp_path) -> None:
    secret = tmp_path / "fb.pw"
    secret.write_text(PASSWORD + "\n")
    run = fb("--url", url(nginx), "-u", USER, "--password-file", str(secret), password=None)
    assert run.rc == 0, run.out
    run = fb("--url", url(nginx), "-u", USER, "--password-file", str(tmp_path / "missing"), password=None)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 3 and "cannot read password file" in run.line, run.out


def test_password_never_printed(nginx) -> None:
    for password in (PASSWORD, "wrong-" + PASSWORD):
        run = fb("--url", url(nginx), "-u", USER, "-v", "-v", password=password)
        assert password not in run.out + run.err


@pytest.mark.parametrize(("args", "words"), [
    (["--url", "ftp://127.0.0.1/freebusy/x.ifb", "-u", USER], "the scheme must be http or https"),
    (["--url", "http:///freebusy/x.ifb", "-u", USER], "no host"),
    (["--url", "http://u:pw@127.0.0.1/x.ifb", "-u", USER], "no password in the URL"),
    (["--url", "http://127.0.0.1/x.ifb", "-u", USER, "--max-age", "0"], "invalid number of seconds '0'"),
    (["--url", "http://127.0.0.1/x.ifb", "-u", USER, "--max-age", "1h"], "invalid number of seconds '1h'"),
    (["--url", "http://127.0.0.1/x.ifb", "-u", USER, "--max-age", "60", "--max-age-warning", "90"],
     "--max-age-warning must be below --max-age"),
    (["--url", "http://127.0.0.1/x.ifb", "-H", "127.0.0.1", "-u", USER], "drop -H/-p/--tls"),
    (["--url", "http://127.0.0.1/x.ifb", "-u", USER, "--starttls"], "--starttls does not apply to HTTP"),
    (["--url", "http://127.0.0.1/x.ifb"], "whose free/busy? give -u USER or --user-match ADDR"),
    (["-u", USER], "missing --url (or -H/--hostname)"),
    (["-H", "127.0.0.1", "--user-match", USER], "-H needs -u/--user"),
    (["--url", "http://127.0.0.1/x.ifb", "-u", USER, "--password-file", "/nonexistent/pw"],
     "cannot read password file /nonexistent/pw"),
])
def test_usage_errors_are_unknown(args, words) -> None:
    run = fb(*args)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 3 and words in run.line, run.out


def test_help_and_version_exit_unknown_without_protocol_imports() -> None:
    probe = ("import sys; from kolabmon.probes import freebusy; rc = freebusy.main(sys.argv[1:]); "
             "print(rc, sorted(m for m in ('requests', 'urllib3', 'nagiosplugin', 'ssl') if m in sys.modules))")
    for args in (["--help"], ["--version"], ["--bogus"], ["--url", "ftp://x/y"], ["--url", "http://x/y"]):
        proc = subprocess.run([str(BIN / "python"), "-c", probe, *args], capture_output=True, text=True,
                              env=clean_env())
        assert proc.stdout.rstrip().endswith("3 []"), proc.stdout
