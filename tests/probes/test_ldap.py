"""check_kolab_ldap against the real slapd of the lab, and against fakes for the faults."""

from __future__ import annotations

import subprocess

import pytest

from lab import servers
from tests.fakes.faults import GarbageBanner, ResetMidLogin, Silent
from tests.helpers import BIN, assert_plugin_output, clean_env, run_plugin

DN, PASSWORD, BASE = servers.LDAP_SERVICE_DN, servers.LDAP_SERVICE_PASSWORD, servers.LDAP_BASE
USER_FILTER = "(&(objectClass=inetOrgPerson)(mail=user1@example.org))"


def ldap(*args: str, password: str | None = PASSWORD):
    return run_plugin("check_kolab_ldap", *args, password=password)


def perf(match) -> dict[str, str]:
    return dict(item.split("=", 1) for item in match["perf"].split())


def test_bind_and_search_for_the_kolab_user(slapd) -> None:
    run = ldap("-H", "127.0.0.1", "-p", str(slapd.ports["ldap"]), "-D", DN, "-b", BASE, "-f", USER_FILTER,
               "-w", "1", "-c", "3")
    match = assert_plugin_output(run.out, run.rc)
    assert run.rc == 0, run.out
    assert f"bound as {DN}, 1 entry for {USER_FILTER} under {BASE}" in run.line
    assert perf(match)["entries"] == "1;;1:;0"
    assert perf(match)["time"].endswith("s;1;3;0")


def test_entry_count_thresholds(slapd) -> None:
    args = ("-H", "127.0.0.1", "-p", str(slapd.ports["ldap"]), "-D", DN, "-b", BASE,
            "-f", "(objectClass=inetOrgPerson)")
    run = ldap(*args)
    count = int(perf(assert_plugin_output(run.out, run.rc))["entries"].split(";")[0])
    assert run.rc == 0 and count >= 2, run.out
    run = ldap(*args, "-W", f"{count - 1}", "-C", f"{count + 5}")
    assert run.rc == 1 and "entries" in run.line, run.out
    run = ldap(*args, "-C", f"{count + 1}:")
    assert run.rc == 2, run.out


def test_no_match_is_critical_by_default(slapd) -> None:
    run = ldap("-H", "127.0.0.1", "-p", str(slapd.ports["ldap"]), "-D", DN, "-b", BASE,
               "-f", "(uid=nobody)")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and "0 entries" in run.line, run.out


def test_unknown_base_and_wrong_password_are_critical(slapd) -> None:
    port = str(slapd.ports["ldap"])
    run = ldap("-H", "127.0.0.1", "-p", port, "-D", DN, "-b", "dc=nowhere,dc=org")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and "search base dc=nowhere,dc=org does not exist" in run.line, run.out
    run = ldap("-H", "127.0.0.1", "-p", port, "-D", DN, "-b", BASE, password="wrong")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and f"bind failed for {DN}: invalid credentials" in run.line, run.out


def test_anonymous_bind(slapd) -> None:
    port = str(slapd.ports["ldap"])
    run = ldap("-H", "127.0.0.1", "-p", port, "-b", "", "--scope", "base", password=None)  # the root DSE
    assert run.rc == 0 and "anonymous bind, 1 entry for (objectClass=*) under the root DSE," in run.line, run.out
    run = ldap("-H", "127.0.0.1", "-p", port, "-b", BASE, "-f", "(uid=user1)", password=None)
    assert_plugin_output(run.out, run.rc)  # the lab's ACL lets anonymous users only bind
    assert run.rc == 2 and "insufficientAccessRights" in run.line, run.out


def test_starttls_and_ldaps_verify(slapd, certs) -> None:
    for mode, port in (("--starttls", slapd.ports["ldap"]), ("--tls", slapd.ports["ldaps"])):
        base = ("-H", "127.0.0.1", "-p", str(port), mode, "-D", DN, "-b", BASE, "-f", USER_FILTER)
        run = ldap(*base, "--ca-file", str(certs.ca))
        match = assert_plugin_output(run.out, run.rc)
        assert run.rc == 0 and "cert_days" in match["perf"], run.out
        run = ldap(*base)
        assert run.rc == 2 and "certificate not trusted" in run.line, run.out


@pytest.fixture(scope="module")
def expiring_slapd(request, lab_root, certs):
    server = servers.start_slapd(lab_root, certs, cert="expiring")
    request.addfinalizer(server.stop)
    return server


def test_expiring_certificate_by_days(expiring_slapd, certs) -> None:
    base = ("-H", "127.0.0.1", "-p", str(expiring_slapd.ports["ldaps"]), "--tls", "--ca-file", str(certs.ca),
            "-D", DN, "-b", BASE, "-f", USER_FILTER)
    run = ldap(*base)  # 5 days left: below the default critical 7
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and "(cert_days 5 below critical 7)" in run.line, run.out
    run = ldap(*base, "--cert-critical", "4")
    assert run.rc == 1 and "(cert_days 5 below warning 30)" in run.line, run.out


def test_refused_is_critical() -> None:
    run = ldap("-H", "127.0.0.1", "-p", str(servers.free_port()), "-b", BASE)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and "connection refused" in run.line, run.out


@pytest.mark.parametrize("fault", [Silent, GarbageBanner, ResetMidLogin])
def test_faults_are_critical_within_the_timeout(fault) -> None:
    with fault() as port:
        run = ldap("-H", "127.0.0.1", "-p", str(port), "-D", DN, "-b", BASE, "-t", "2")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2, run.out
    assert run.seconds < 3, run.seconds


@pytest.mark.parametrize(("args", "words"), [
    (["-H", "127.0.0.1"], "missing -b/--base"),
    (["-H", "127.0.0.1", "-b", BASE, "-W", "x"], "invalid range 'x'"),
    (["-H", "127.0.0.1", "-b", BASE, "--scope", "deep"], "invalid choice"),
    (["-H", "127.0.0.1", "-b", BASE, "-D", DN, "--password-file", "/nonexistent/pw"], "No such file"),
])
def test_usage_errors_are_unknown(args, words) -> None:
    run = ldap(*args, password=None)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 3 and words in run.line, run.out


def test_bad_filter_is_unknown(slapd) -> None:
    run = ldap("-H", "127.0.0.1", "-p", str(slapd.ports["ldap"]), "-b", BASE, "-f", "uid=user1)(", password=None)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 3 and "invalid LDAP filter" in run.line, run.out


def test_help_imports_no_protocol_library() -> None:
    probe = ("import sys; from kolabmon.probes import ldap; rc = ldap.main(['--help']); "
             "print(rc, sorted(m for m in ('ldap3', 'nagiosplugin') if m in sys.modules))")
    proc = subprocess.run([str(BIN / "python"), "-c", probe], capture_output=True, text=True, env=clean_env())
    assert proc.stdout.rstrip().endswith("3 []"), proc.stdout
