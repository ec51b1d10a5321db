"""check_kolab_imap: can a user log in over IMAP and open a folder?

`IMAP OK - user1@example.org logged in, INBOX 3 messages, 0.012 s | time=0.012s;1;2;0 ...`
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence

from kolabmon import runtime

TYPE_CHECKING = False  # no typing import at start-up (see runtime)
if TYPE_CHECKING:
    import nagiosplugin

SERVICE = "IMAP"


# --- acquire -------------------------------------------------------------------------------


class ImapLogin:
    """Connects (plain, STARTTLS or IMAPS), logs in, selects a folder read-only."""

    name = SERVICE

    def __init__(self, args: argparse.Namespace, clock: runtime.Clock) -> None:
        self.args, self.clock = args, clock
        self.messages: int | None = None
        self.folder = args.folder  # the server's own name for it, once logged in

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        import imaplib

        import imapclient
        import nagiosplugin

        from kolabmon import tls
        from kolabmon.clients.imap import close, folder_name, login_failure, logout, text

        args, clock = self.args, self.clock
        ssl_context = tls.context(args.ca_file, args.insecure) if args.tls or args.starttls else None
        try:
            clock.enter("connecting")
            client = imapclient.IMAPClient(args.hostname, port=args.port, ssl=args.tls,
                                           ssl_context=ssl_context, timeout=clock.remaining())
        except imaplib.IMAP4.error as exc:
            raise runtime.PluginError(f"unexpected greeting from the server: {text(exc)}") from None
        try:
            if args.starttls:
                clock.enter("starting TLS")
                client.starttls(ssl_context)
            cert_days = _cert_days(client) if ssl_context else None
            if args.user:
                clock.enter("logging in")
                client.socket().settimeout(clock.remaining())
                client.login(args.user, args.password)
                clock.enter(f"looking up the folder {args.folder}")
                client.socket().settimeout(clock.remaining())
                self.folder = folder_name(client, args.folder)
                clock.enter(f"selecting {self.folder}")
                client.socket().settimeout(clock.remaining())
                self.messages = int(client.select_folder(self.folder, readonly=True)[b"EXISTS"])
            elapsed = clock.since("connecting")
            logout(client, clock)
        except imapclient.exceptions.LoginError as exc:
            raise runtime.PluginError(login_failure(args.user, exc, clock.since("logging in"))) from None
        except imaplib.IMAP4.error as exc:
            raise runtime.PluginError(f"IMAP error while {clock.step}: {text(exc)}") from None
        finally:
            close(client)
        yield nagiosplugin.Metric("time", round(elapsed, 6), "s", min=0)
        if self.messages is not None:
            yield nagiosplugin.Metric("messages", self.messages, min=0, context="messages")
        if cert_days is not None:
            yield nagiosplugin.Metric("cert_days", cert_days, min=None, context="cert_days")


def _cert_days(client: object) -> float:
    from kolabmon import tls

    return tls.days_left(client.socket())  # type: ignore[attr-defined]


# --- evaluate ------------------------------------------------------------------------------


def contexts(args: argparse.Namespace) -> list[object]:
    return [runtime.threshold("time", args.warning, args.critical),
            runtime.plain("messages"),
            runtime.days_left(args.cert_warning, args.cert_critical)]


# --- present -------------------------------------------------------------------------------


def present(args: argparse.Namespace, check: ImapLogin) -> object:
    def line(results: nagiosplugin.Results) -> str:
        parts = [f"{args.user} logged in" if args.user else f"{args.hostname} answered"]
        if "messages" in results:
            parts.append(f"{check.folder} {results['messages'].metric.value} messages")
        return runtime.line_end(parts, results)
    return line


# --- wire ----------------------------------------------------------------------------------


def make_parser() -> runtime.Parser:
    p = runtime.parser(SERVICE, "Log in to an IMAP server as a test user and select a folder.",
                       port="TCP port (default 143)")
    runtime.add_auth(p, "user to log in as (without it: connect and read the greeting only)")
    runtime.add_tls(p)
    p.add_argument("--folder", default="INBOX",
                   help="folder to select, levels separated by / (default INBOX); a name outside the "
                        "server's namespaces is one of the user's own folders (Cyrus: Sent is INBOX/Sent)")
    return p


def build(args: argparse.Namespace, clock: runtime.Clock) -> nagiosplugin.Check:
    if args.port is None:
        args.port = 993 if args.tls else 143
    if not args.folder.strip("/ "):
        raise runtime.UsageError("--folder names no folder")
    check = ImapLogin(args, clock)
    return runtime.check(check, contexts(args), present(args, check))  # type: ignore[arg-type]


PLUGIN = runtime.Plugin(SERVICE, build, make_parser, logs_in=lambda args: bool(args.user))


def main(argv: Sequence[str] | None = None) -> int:
    return PLUGIN.main(argv)
