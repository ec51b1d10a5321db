"""check_kolab_dns: does DNS send clients to the Kolab service name (address, MX, SRV)?

`DNS OK - kolab.example.org A 10.99.0.100, MX example.org ok, SRV _imap._tcp.example.org ok, 0.001 s`

As check_dns: -H is the name to resolve, -s/-p the server asked. Queries go straight to the
server (no search list, no cache), so a server that answers garbage is seen as such. -H's A and
AAAA are both asked; an error answer (REFUSED, SERVFAIL) for one family is shown in the line and
is CRITICAL only when -a expects an address of that family or no address came back at all.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator, Sequence

from kolabmon import runtime

TYPE_CHECKING = False  # no typing import at start-up (see runtime)
if TYPE_CHECKING:
    import ipaddress
    from typing import Any

    import dns.message
    import nagiosplugin

SERVICE = "DNS"
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_NAME = re.compile(rf"(?=.{{1,254}}$)(?:{_LABEL}\.)*{_LABEL}\.?")


# --- acquire -------------------------------------------------------------------------------


class DnsLookup:
    """Asks the server for -H's A and AAAA, the --mx domain's MX and each --srv name's SRV."""

    name = SERVICE

    def __init__(self, args: argparse.Namespace, clock: runtime.Clock) -> None:
        self.args, self.clock = args, clock
        self.found: list[str] = []  # what the summary reports, in the admin's words
        self.servers: list[str] = []

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        import nagiosplugin

        for module in ("ipaddress", "dns.message", "dns.query", "dns.rcode", "dns.rdatatype"):
            __import__(module)  # before the clock runs: `time` is the server's, not the imports'
        args, clock = self.args, self.clock
        self.found, self.servers = [], _servers(args, clock)
        clock.enter("connecting")
        problems = self.check_addresses(_plain(args.hostname))
        if args.mx:
            problems += self.check_targets("MX", [args.mx])
        if args.srv:
            problems += self.check_targets("SRV", args.srv)
        elapsed = clock.since("connecting")
        if problems:
            raise runtime.PluginError(", ".join(problems))
        yield nagiosplugin.Metric("time", round(elapsed, 6), "s", min=0)

    def check_addresses(self, name: str) -> list[str]:
        """-H's A and AAAA records; with -a they must be exactly the expected set."""
        import ipaddress

        got: dict[str, list[ipaddress.IPv4Address | ipaddress.IPv6Address]] = {}
        failed: dict[str, str] = {}
        for rdtype in ("A", "AAAA"):
            asked, rcode, records = self.ask(name, rdtype)
            if rcode == "NXDOMAIN":
                return [f"{name} does not exist (NXDOMAIN)"]
            if rcode == "NOERROR":
                got[rdtype] = sorted(ipaddress.ip_address(r.address) for r in records)
            else:
                failed[rdtype] = rcode
        addresses = {address for found in got.values() for address in found}
        expected = set(self.args.expected_address or ())
        # a family the server would not answer matters only when -a expects an address of it
        needed = {"A" if a.version == 4 else "AAAA" for a in expected} if expected else {"A", "AAAA"}
        refused = [rdtype for rdtype in failed if rdtype in needed and (expected or not addresses)]
        if refused:
            rcodes = "/".join(sorted({failed[rdtype] for rdtype in refused}))
            return [f"{asked} answered {rcodes} for {name} {' and '.join(refused)}"]
        shown = " ".join(f"{rdtype} {','.join(map(str, found))}" for rdtype, found in got.items() if found)
        shown = f"{name} {shown}" if addresses else f"{name} has no A or AAAA record"
        if expected and addresses != expected:
            return [f"{shown}, expected {','.join(map(str, sorted(expected, key=_order)))}"]
        if not addresses:
            return [shown]
        notes = " ".join(f"{rdtype} {rcode}" for rdtype, rcode in failed.items())
        self.found.append(shown + (f" ({notes})" if notes else ""))
        return []

    def check_targets(self, rdtype: str, owners: list[str]) -> list[str]:
        """Each owner's MX exchanges / SRV targets must include -H."""
        name, problems, good = _plain(self.args.hostname), [], []
        for owner in map(_plain, owners):
            asked, rcode, records = self.ask(owner, rdtype)
            targets = sorted({_plain(str(r.exchange if rdtype == "MX" else r.target)) for r in records})
            if rcode == "NXDOMAIN":
                problems.append(f"{rdtype} {owner}: {owner} does not exist (NXDOMAIN)")
            elif rcode != "NOERROR":
                problems.append(f"{rdtype} {owner}: {asked} answered {rcode}")
            elif not targets:
                problems.append(f"{owner} has no {rdtype} record")
            elif name not in targets:
                problems.append(f"{rdtype} {owner} points at {','.join(targets)}, not {name}")
            else:
                good.append(owner)
        if good:
            self.found.append(f"{rdtype} {', '.join(good)} ok")
        return problems

    def ask(self, qname: str, rdtype: str) -> tuple[str, str, list[Any]]:
        """(server, rcode, records of rdtype) from the first server that answers at all."""
        import dns.exception
        import dns.message
        import dns.rcode
        import dns.rdatatype

        query = dns.message.make_query(qname, rdtype)
        failure: BaseException = TimeoutError()
        for index, server in enumerate(self.servers):
            self.clock.enter(f"asking {server} for {qname} {rdtype}")
            share = self.clock.remaining() / (len(self.servers) - index)  # leave time for the next server
            try:
                reply = _exchange(query, server, self.args.port, share, self.args.tcp)
            except dns.exception.Timeout:
                failure = TimeoutError(f"{server} did not answer")
                continue
            except OSError as exc:  # refused (TCP), unreachable: the next server may answer
                failure = exc
                continue
            except dns.exception.DNSException as exc:
                raise runtime.PluginError(f"{server} answered garbage for {qname} {rdtype}: "
                                          f"{str(exc)[:80]}") from None
            wanted = dns.rdatatype.from_text(rdtype)  # CNAMEs on the way are followed by the server
            records = [r for rrset in reply.answer if rrset.rdtype == wanted for r in rrset]
            return server, dns.rcode.to_text(reply.rcode()), records
        raise failure


def _exchange(query: dns.message.Message, server: str, port: int, timeout: float,
              tcp: bool) -> dns.message.Message:
    import dns.message
    import dns.query

    if not tcp:
        try:
            return dns.query.udp(query, server, timeout=timeout, port=port, raise_on_truncation=True)
        except dns.message.Truncated:
            pass  # too big for UDP: ask again over TCP, as resolvers do
    return dns.query.tcp(query, server, timeout=timeout, port=port)


def _servers(args: argparse.Namespace, clock: runtime.Clock) -> list[str]:
    """-s as an address, else the nameservers of /etc/resolv.conf (the system resolver's)."""
    if args.server:
        if _address(args.server):
            return [args.server]
        import socket

        clock.enter(f"looking up the server {args.server}")
        return [str(socket.getaddrinfo(args.server, args.port, type=socket.SOCK_DGRAM)[0][4][0])]
    import dns.resolver

    try:
        servers = [str(server) for server in dns.resolver.Resolver().nameservers]
    except dns.resolver.NoResolverConfiguration:
        servers = []
    if not servers:
        raise runtime.UsageError("no -s/--server and no nameserver in /etc/resolv.conf")
    return servers


def _plain(name: str) -> str:
    """Names compare case-insensitively and without the root dot."""
    return name.rstrip(".").lower() or "."


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    import ipaddress

    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _order(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[int, int]:
    return address.version, int(address)


# --- evaluate ------------------------------------------------------------------------------


def contexts(args: argparse.Namespace) -> list[object]:
    return [runtime.threshold("time", args.warning, args.critical)]


# --- present -------------------------------------------------------------------------------


def present(lookup: DnsLookup) -> object:
    def line(results: nagiosplugin.Results) -> str:
        return ", ".join([*lookup.found, f"{results['time'].metric.value:.3f} s"])
    return line


# --- wire ----------------------------------------------------------------------------------


def dns_name(text: str) -> str:
    if _address(text):
        raise argparse.ArgumentTypeError(f"{text!r} is an address: give the name to resolve")
    if not _NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"invalid DNS name {text!r}")
    return text


def dns_names(text: str) -> list[str]:
    return [dns_name(name.strip()) for name in text.split(",")]


def server(text: str) -> str:
    if _address(text) or _NAME.fullmatch(text):
        return text
    raise argparse.ArgumentTypeError(f"invalid server {text!r} (an address or a host name)")


def addresses(text: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    found = [_address(part.strip()) for part in text.split(",")]
    if None in found:
        raise argparse.ArgumentTypeError(f"invalid address in {text!r}")
    return found  # type: ignore[return-value]


class _Extend(argparse.Action):
    """`-a A,B -a C` → [A, B, C]."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), *values])  # type: ignore[misc]


def make_parser() -> runtime.Parser:
    p = runtime.parser(SERVICE, "Resolve a name like check_dns and check that the domain's MX and "
                       "SRV records point at it.", hostname="the name to resolve, e.g. kolab.example.org",
                       hostname_type=dns_name, port="port of the DNS server (default 53)")
    p.add_argument("-s", "--server", type=server,
                   help="DNS server to ask (default: the nameservers in /etc/resolv.conf, in order)")
    p.add_argument("-a", "--expected-address", type=addresses, action=_Extend, metavar="ADDR[,ADDR]",
                   help="the A and AAAA answer must be exactly these addresses (repeatable)")
    p.add_argument("--mx", type=dns_name, metavar="DOMAIN", help="DOMAIN's MX must include the -H name")
    p.add_argument("--srv", type=dns_names, action=_Extend, metavar="NAME[,NAME]",
                   help="each SRV record set (e.g. _imap._tcp.example.org) must include the -H name "
                        "as a target (repeatable)")
    p.add_argument("--tcp", action="store_true", help="ask over TCP (default UDP, TCP when truncated)")
    return p


def build(args: argparse.Namespace, clock: runtime.Clock) -> nagiosplugin.Check:
    if args.port is None:
        args.port = 53
    lookup = DnsLookup(args, clock)
    return runtime.check(lookup, contexts(args), present(lookup))  # type: ignore[arg-type]


PLUGIN = runtime.Plugin(SERVICE, build, make_parser)


def main(argv: Sequence[str] | None = None) -> int:
    return PLUGIN.main(argv)
