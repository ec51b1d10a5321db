"""check_kolab_ldap: does the directory answer a bind and a search the way Kolab needs?

`LDAP OK - bound as uid=kolab-service,..., 1 entry under dc=example,dc=org, 0.004 s | time=...`
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator, Sequence

from kolabmon import runtime

TYPE_CHECKING = False  # no typing import at start-up (see runtime)
if TYPE_CHECKING:
    import nagiosplugin

SERVICE = "LDAP"
SCOPES = ("base", "one", "sub")


# --- acquire -------------------------------------------------------------------------------


class LdapSearch:
    """Connects (ldap, StartTLS or ldaps), binds simply (or anonymously), searches, counts."""

    name = SERVICE

    def __init__(self, args: argparse.Namespace, clock: runtime.Clock) -> None:
        self.args, self.clock = args, clock

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        import socket
        import threading

        import ldap3
        import nagiosplugin
        from ldap3.core import exceptions

        from kolabmon import tls

        args, clock = self.args, self.clock
        ssl_context = tls.context(args.ca_file, args.insecure) if args.tls or args.starttls else None
        server = ldap3.Server(args.hostname, port=args.port, use_ssl=args.tls,
                              tls=_Tls(ssl_context, args.hostname) if ssl_context else None,
                              connect_timeout=math.ceil(clock.remaining()), get_info=ldap3.NONE)
        conn = ldap3.Connection(server, user=args.bind_dn, password=args.password,
                                receive_timeout=math.ceil(clock.remaining()), raise_exceptions=True,
                                auto_referrals=False)
        scope = {"base": ldap3.BASE, "one": ldap3.LEVEL, "sub": ldap3.SUBTREE}[args.scope]
        expired = threading.Event()

        def expire() -> None:  # ldap3 takes whole seconds on Linux (SO_RCVTIMEO): the deadline is ours
            expired.set()
            try:
                conn.socket.shutdown(socket.SHUT_RDWR)
            except (OSError, AttributeError):
                pass
        deadline = threading.Timer(clock.remaining(), expire)
        deadline.daemon = True
        try:
            clock.enter("connecting")
            conn.open()
            deadline.start()
            # small requests on a fresh connection: without this, Nagle holds the bind ~40 ms over TLS
            conn.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if args.starttls:
                clock.enter("starting TLS")
                conn.start_tls()
            cert_days = tls.days_left(conn.socket) if ssl_context else None
            clock.enter(f"binding as {args.bind_dn}" if args.bind_dn else "binding anonymously")
            conn.bind()
            clock.enter(f"searching {args.base}")
            conn.search(args.base, args.filter, scope, attributes=["1.1"],
                        time_limit=max(int(clock.remaining()), 1))
            entries = len(conn.entries)
            elapsed = clock.since("connecting")
        except exceptions.LDAPInvalidFilterError:
            raise runtime.UsageError(f"invalid LDAP filter {args.filter}") from None
        except exceptions.LDAPNoSuchObjectResult:
            raise runtime.PluginError(f"search base {args.base} does not exist") from None
        except exceptions.LDAPInvalidCredentialsResult:
            raise runtime.PluginError(f"bind failed for {args.bind_dn}: invalid credentials") from None
        except exceptions.LDAPOperationResult as exc:
            raise runtime.PluginError(
                f"LDAP error while {clock.step}: {exc.result} {exc.description} {exc.message}") from None
        except exceptions.LDAPException as exc:
            if expired.is_set():
                raise TimeoutError(f"deadline reached while {clock.step}") from None
            raise _cause(exc, clock) from None
        finally:
            deadline.cancel()
            try:
                conn.unbind()
            except Exception:  # already gone: nothing left to release
                pass
        yield nagiosplugin.Metric("time", round(elapsed, 6), "s", min=0)
        yield nagiosplugin.Metric("entries", entries, min=0)
        if cert_days is not None:
            yield nagiosplugin.Metric("cert_days", cert_days, context="cert_days")


def _cause(exc: BaseException, clock: runtime.Clock) -> BaseException:
    """ldap3 wraps socket and TLS errors; hand the original to the runtime to classify."""
    from kolabmon.clients import errors

    found = errors.underlying(exc)
    if found is not None:
        return found
    text = str(exc)
    if "timed out" in text or "timeout" in text:
        return TimeoutError(text)
    if "reset" in text:
        return ConnectionResetError(text)
    if "refused" in text:
        return ConnectionRefusedError(text)
    return runtime.PluginError(f"LDAP protocol error while {clock.step}: {text[:200]}")


def _Tls(context: object, hostname: str) -> object:
    """ldap3's Tls, made to use kolabmon's verifying context (with host name checks)."""
    import ldap3

    class Tls(ldap3.Tls):  # type: ignore[misc]
        def wrap_socket(self, connection: object, do_handshake: bool = False) -> None:
            connection.socket = context.wrap_socket(  # type: ignore[attr-defined]
                connection.socket, server_side=False,  # type: ignore[attr-defined]
                do_handshake_on_connect=do_handshake, server_hostname=hostname)

    return Tls()


# --- evaluate ------------------------------------------------------------------------------


def contexts(args: argparse.Namespace) -> list[object]:
    return [runtime.threshold("time", args.warning, args.critical),
            runtime.threshold("entries", args.entries_warning, args.entries_critical),
            runtime.days_left(args.cert_warning, args.cert_critical)]


# --- present -------------------------------------------------------------------------------


def present(args: argparse.Namespace) -> object:
    def line(results: nagiosplugin.Results) -> str:
        who = f"bound as {args.bind_dn}" if args.bind_dn else "anonymous bind"
        count = results["entries"].metric.value
        noun = "entry" if count == 1 else "entries"
        parts = [who, f"{count} {noun} for {args.filter} under {args.base or 'the root DSE'}"]
        return runtime.line_end(parts, results)
    return line


# --- wire ----------------------------------------------------------------------------------


def make_parser() -> runtime.Parser:
    p = runtime.parser(SERVICE, "Bind to an LDAP server and search a base with a filter.",
                       port="TCP port (default 389)")
    p.add_argument("-D", "--bind-dn", help="DN to bind as (without it: anonymous bind)")
    p.add_argument("--password-file", metavar="PATH",
                   help=f"file holding the bind password (else ${runtime.PASSWORD_ENV})")
    runtime.add_tls(p)
    p.add_argument("-b", "--base", help="search base, e.g. dc=example,dc=org")
    p.add_argument("-f", "--filter", default="(objectClass=*)",
                   help="search filter (default (objectClass=*))")
    p.add_argument("--scope", choices=SCOPES, default="sub", help="search scope (default sub)")
    p.add_argument("-W", "--entries-warning", type=runtime.nagios_range, metavar="RANGE",
                   help="warning range for the number of entries found")
    p.add_argument("-C", "--entries-critical", type=runtime.nagios_range, metavar="RANGE", default="1:",
                   help="critical range for the number of entries found (default 1: = at least one)")
    return p


def build(args: argparse.Namespace, clock: runtime.Clock) -> nagiosplugin.Check:
    if args.port is None:
        args.port = 636 if args.tls else 389
    return runtime.check(LdapSearch(args, clock), contexts(args), present(args))  # type: ignore[arg-type]


PLUGIN = runtime.Plugin(SERVICE, build, make_parser, required=("hostname", "base"),
                        logs_in=lambda args: bool(args.bind_dn))


def main(argv: Sequence[str] | None = None) -> int:
    return PLUGIN.main(argv)
