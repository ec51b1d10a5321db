"""check_kolab_smtp: does the mail server greet, speak ESMTP, start TLS and accept a login?

`SMTP OK - 220 lab.example.org ESMTP Postfix, STARTTLS, AUTH PLAIN as user1@example.org, certificate
valid 3650 more days, 0.010 s | cert_days=3650.0;30:;7: time=0.010418s;;;0`

The conversation itself (`clients.smtp.SmtpSession`) is shared with the round trip and kolabmon-notify.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence

from kolabmon import runtime
from kolabmon.clients import smtp as client

TYPE_CHECKING = False  # no typing import at start-up (see runtime)
if TYPE_CHECKING:
    import nagiosplugin

SERVICE = "SMTP"


# --- acquire -------------------------------------------------------------------------------


class SmtpCheck:
    """Connects (plain, STARTTLS or SMTPS), checks the extensions, optionally AUTHs, QUITs."""

    name = SERVICE

    def __init__(self, args: argparse.Namespace, clock: runtime.Clock) -> None:
        self.args, self.clock = args, clock
        self.session: client.SmtpSession | None = None

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        import nagiosplugin

        from kolabmon import tls

        args, clock = self.args, self.clock
        context = tls.context(args.ca_file, args.insecure) if args.tls or args.starttls else None
        session = self.session = client.SmtpSession(clock, context, args.tls, args.ehlo)
        try:
            session.open(args.hostname, args.port, args.starttls)
            cert_days = tls.days_left(session.smtp.sock) if context else None  # type: ignore[union-attr]
            missing = session.missing(args.expect_ext)
            if missing:
                raise runtime.PluginError(
                    f"EHLO {session.phase} does not advertise {', '.join(missing)} "
                    f"(it advertises {session.keywords() or 'nothing'}){session.hint()}")
            if args.user:
                session.login(args.user, args.password, args.auth_mech)
            elapsed = clock.since("connecting")
        except runtime.PluginError:
            session.quit()  # the server is fine to talk to; only its answer was wrong
            raise
        else:
            session.quit()
        finally:
            session.close()
        yield nagiosplugin.Metric("time", round(elapsed, 6), "s", min=0)
        if cert_days is not None:
            yield nagiosplugin.Metric("cert_days", cert_days, context="cert_days")


# --- evaluate ------------------------------------------------------------------------------


def contexts(args: argparse.Namespace) -> list[object]:
    return [runtime.threshold("time", args.warning, args.critical),
            runtime.days_left(args.cert_warning, args.cert_critical)]


# --- present -------------------------------------------------------------------------------


def present(args: argparse.Namespace, check: SmtpCheck) -> Callable[[nagiosplugin.Results], str]:
    def line(results: nagiosplugin.Results) -> str:
        session = check.session
        assert session is not None
        parts = [session.banner]
        if args.starttls:
            parts.append("STARTTLS")
        if args.tls:
            parts.append("implicit TLS")
        if args.expect_ext:
            parts.append(f"offers {'/'.join(args.expect_ext)}")
        if session.mechanism:
            parts.append(f"AUTH {session.mechanism} as {args.user}")
        return runtime.line_end(parts, results)
    return line


# --- wire ----------------------------------------------------------------------------------


def extensions(value: str) -> list[str]:
    """`--expect-ext STARTTLS,AUTH`: EHLO keywords, upper case."""
    names = [name.strip().upper() for name in value.split(",")]
    if not all(name and name.replace("-", "").isalnum() for name in names):
        raise argparse.ArgumentTypeError(f"invalid extension list {value!r} (EHLO keywords: STARTTLS,AUTH,...)")
    return names


def mechanism(value: str) -> str:
    if value.upper() not in client.MECHANISMS:
        raise argparse.ArgumentTypeError(f"invalid AUTH mechanism {value!r} (PLAIN or LOGIN)")
    return value.upper()


def make_parser() -> runtime.Parser:
    p = runtime.parser(SERVICE, "Talk to an SMTP server: banner, EHLO, STARTTLS or TLS, AUTH as a test user.",
                       port="TCP port (default 25, 465 with --tls)")
    runtime.add_auth(p, "user to authenticate as: AUTH is then required (without it: no AUTH)")
    runtime.add_tls(p)
    p.add_argument("--auth-mech", type=mechanism, metavar="PLAIN|LOGIN",
                   help="AUTH mechanism to use (default: the first the server offers of PLAIN, LOGIN)")
    p.add_argument("--expect-ext", type=extensions, default=[], metavar="EXT,...",
                   help="EHLO keywords that must be advertised, e.g. STARTTLS,AUTH,PIPELINING "
                        "(checked after STARTTLS when --starttls is given; STARTTLS itself before)")
    p.add_argument("--ehlo", metavar="NAME",
                   help=f"name to say in EHLO (default: this host's FQDN, else {client.DEFAULT_EHLO})")
    return p


def build(args: argparse.Namespace, clock: runtime.Clock) -> nagiosplugin.Check:
    if args.port is None:
        args.port = 465 if args.tls else 25
    check = SmtpCheck(args, clock)
    return runtime.check(check, contexts(args), present(args, check))


PLUGIN = runtime.Plugin(SERVICE, build, make_parser, logs_in=lambda args: bool(args.user))


def main(argv: Sequence[str] | None = None) -> int:
    return PLUGIN.main(argv)
