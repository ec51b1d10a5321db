"""check_kolab_dns against the real dnsmasq of the lab, and against fakes for the faults.

Every run names the server (-s 127.0.0.1 -p PORT): nothing is asked off this machine.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from lab import servers
from tests.fakes.dns_faults import GarbageDns, MissingRecords, NxDomain
from tests.helpers import BIN, assert_plugin_output, clean_env, run_plugin

NAME = "kolab.example.org"


def dns(port: int, *args: str, name: str = NAME):
    return run_plugin("check_kolab_dns", "-H", name, "-s", "127.0.0.1", "-p", str(port), *args)


def critical(run, words: str) -> None:
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2, run.out
    assert words in run.line, run.out
    assert run.out.count("\n") == 1, run.out


@pytest.fixture(scope="module")
def moved_dns(request, tmp_path_factory):
    """A real dnsmasq whose MX and IMAP SRV still point at the old mail host."""
    server = servers.start_dnsmasq(tmp_path_factory.mktemp("moved-dns"), {
        "A": [(NAME, "10.99.0.100"), ("mail.example.org", "10.99.0.25")],
        "MX": [("example.org", "mail.example.org", "10")],
        "SRV": [("_imap._tcp.example.org", "mail.example.org", "143"),
                ("_ldap._tcp.example.org", NAME, "389")],
    })
    request.addfinalizer(server.stop)
    return server.ports["dns"]


def test_address_mx_and_srv_ok(dnsmasq) -> None:
    run = dns(dnsmasq.ports["dns"], "-a", "10.99.0.100", "--mx", "example.org",
              "--srv", "_imap._tcp.example.org,_submission._tcp.example.org", "--srv", "_ldap._tcp.example.org",
              "-w", "1", "-c", "2")
    match = assert_plugin_output(run.out, run.rc)
    assert run.rc == 0, run.out
    # dnsmasq without upstream REFUSEs the AAAA query: said, but not an alert unless -a expects IPv6
    assert run.line.startswith(f"DNS OK - {NAME} A 10.99.0.100 (AAAA REFUSED), MX example.org ok, "
                               "SRV _imap._tcp.example.org, _submission._tcp.example.org, "
                               "_ldap._tcp.example.org ok, "), run.line
    assert match["perf"].startswith("time=") and match["perf"].endswith("s;1;2;0")


def test_names_compare_without_case_or_root_dot(dnsmasq) -> None:
    run = dns(dnsmasq.ports["dns"], "--mx", "Example.ORG.", "--srv", "_IMAP._tcp.example.org",
              name="KOLAB.Example.Org.")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 0 and "MX example.org ok, SRV _imap._tcp.example.org ok" in run.line, run.out


def test_tcp_asks_over_tcp(dnsmasq) -> None:
    run = dns(dnsmasq.ports["dns"], "--tcp", "-a", "10.99.0.100", "--mx", "example.org")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 0, run.out
    run = dns(servers.free_port(udp=True), "--tcp", "-t", "2")  # UDP would time out; TCP is refused at once
    critical(run, f"connection refused (while asking 127.0.0.1 for {NAME} A)")
    assert run.seconds < 1.5, run.seconds


def test_wrong_address_is_critical_naming_got_and_expected(dnsmasq) -> None:
    run = dns(dnsmasq.ports["dns"], "-a", "10.99.0.7")
    critical(run, f"{NAME} A 10.99.0.100, expected 10.99.0.7")
    run = dns(dnsmasq.ports["dns"], "-a", "10.99.0.100,10.99.0.7")  # a missing one counts too
    critical(run, f"{NAME} A 10.99.0.100, expected 10.99.0.7,10.99.0.100")


def test_expected_ipv6_needs_an_aaaa_answer(dnsmasq) -> None:
    run = dns(dnsmasq.ports["dns"], "-a", "10.99.0.100", "-a", "2001:db8::100")
    critical(run, f"127.0.0.1 answered REFUSED for {NAME} AAAA")


def test_unknown_name_is_refused_by_dnsmasq(dnsmasq) -> None:
    run = dns(dnsmasq.ports["dns"], name="nope.example.org")
    critical(run, "127.0.0.1 answered REFUSED for nope.example.org A and AAAA")


def test_nxdomain_is_critical() -> None:
    with NxDomain() as port:
        run = dns(port, "-a", "10.99.0.100")
    critical(run, f"{NAME} does not exist (NXDOMAIN)")


def test_mx_and_srv_pointing_elsewhere_are_critical(moved_dns) -> None:
    run = dns(moved_dns, "--mx", "example.org", "--srv", "_imap._tcp.example.org,_ldap._tcp.example.org")
    critical(run, f"MX example.org points at mail.example.org, not {NAME}, "
                  f"SRV _imap._tcp.example.org points at mail.example.org, not {NAME}")
    assert "_ldap" not in run.line  # the good one is not listed among the problems


def test_no_mx_and_no_srv_records_are_critical() -> None:
    with MissingRecords() as port:
        run = dns(port, "--mx", "example.org", "--srv", "_imap._tcp.example.org")
    critical(run, "example.org has no MX record, _imap._tcp.example.org has no SRV record")
    with MissingRecords() as port:  # the address alone is fine: no AAAA is no problem
        run = dns(port, "-a", "10.99.0.100")
    assert run.rc == 0 and f"{NAME} A 10.99.0.100, " in run.line, run.out


def test_missing_srv_and_mx_on_dnsmasq_are_critical(dnsmasq) -> None:
    run = dns(dnsmasq.ports["dns"], "--mx", NAME, "--srv", "_imap._tcp.example.org,_pop3._tcp.example.org")
    critical(run, f"MX {NAME}: 127.0.0.1 answered REFUSED, SRV _pop3._tcp.example.org: 127.0.0.1 answered REFUSED")


def test_no_server_listening_times_out() -> None:
    port = servers.free_port(udp=True)
    run = dns(port, "-t", "2")
    critical(run, f"no answer within 2 s (while asking 127.0.0.1 for {NAME} A)")
    assert run.seconds < 3, run.seconds
    run = dns(port, "-t", "1", "--timeout-state", "UNKNOWN")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 3 and run.line == f"DNS UNKNOWN - no answer within 1 s (while asking 127.0.0.1 for {NAME} A)"
    assert run.seconds < 2, run.seconds


def test_garbage_answer_is_critical() -> None:
    with GarbageDns() as port:
        run = dns(port, "-t", "2")
    critical(run, f"127.0.0.1 answered garbage for {NAME} A")
    assert run.seconds < 1.5, run.seconds


@pytest.mark.parametrize(("args", "words"), [
    (["-s", "127.0.0.1"], "missing -H/--hostname"),
    (["-H", "10.99.0.100", "-s", "127.0.0.1"], "'10.99.0.100' is an address: give the name to resolve"),
    (["-H", "kolab..example.org", "-s", "127.0.0.1"], "invalid DNS name 'kolab..example.org'"),
    (["-H", NAME, "-s", "127.0.0.1", "-a", "10.99.0.300"], "invalid address in '10.99.0.300'"),
    (["-H", NAME, "-s", "not a server"], "invalid server 'not a server'"),
    (["-H", NAME, "-s", "127.0.0.1", "-p", "0"], "invalid port '0'"),
    (["-H", NAME, "-s", "127.0.0.1", "--srv", "_imap._tcp.example.org,"], "invalid DNS name ''"),
    (["-H", NAME, "-s", "127.0.0.1", "--mx", "-"], "invalid DNS name '-'"),
    (["-H", NAME, "--bogus"], "unrecognized arguments: --bogus"),
])
def test_usage_errors_are_unknown(args, words) -> None:
    run = run_plugin("check_kolab_dns", *args)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 3 and words in run.line, run.out


def test_help_and_version_exit_unknown_without_protocol_imports() -> None:
    probe = ("import sys; from kolabmon.probes import dns; rc = dns.main(sys.argv[1:]); "
             "print(rc, sorted(m for m in ('dns', 'nagiosplugin', 'ssl') if m in sys.modules))")
    for flag in ("--help", "--version", "--bogus"):
        proc = subprocess.run([str(BIN / "python"), "-c", probe, flag], capture_output=True, text=True,
                              env=clean_env())
        assert proc.stdout.rstrip().endswith("3 []"), proc.stdout
    help_text = subprocess.run([str(BIN / "check_kolab_dns"), "--help"], capture_output=True, text=True).stdout
    # Python 3.11 prints "-H HOSTNAME, --hostname HOSTNAME", 3.13 "-H, --hostname HOSTNAME"
    assert re.search(r"^  -H( HOSTNAME)?, --hostname HOSTNAME$", help_text, re.M), help_text
    assert "the name to resolve" in help_text
    assert "port of the DNS server (default 53)" in help_text
