"""check_kolab_roundtrip: does a message submitted over SMTP arrive in the user's mailbox?

`ROUNDTRIP OK - message from user2@example.org to user2@example.org seen in INBOX after 0.215 s
(SMTP 0.021 s, total 0.262 s) | delivery=0.215s;5;20;0 smtp_time=0.021s;;;0 time=0.262s;;;0`

The user-level proof: log in over IMAP, submit a uniquely tagged message over SMTP, poll the
folder until it is there, measure how long that took, delete it (that UID only) and any probe
message that earlier failed runs left behind. A failure names the hop that failed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence

from kolabmon import runtime
from kolabmon.clients import imap as imap_client

TYPE_CHECKING = False  # no typing import at start-up (see runtime)
if TYPE_CHECKING:
    import ssl
    from datetime import datetime

    import nagiosplugin
    from imapclient import IMAPClient

SERVICE = "ROUNDTRIP"
SUBJECT_PREFIX = "kolabmon-roundtrip "
PROBE_HEADER = "X-Kolabmon-Probe"
STALE_AFTER = 600.0  # seconds: older probe messages are leftovers of failed runs, not a run in flight


# --- acquire -------------------------------------------------------------------------------


class RoundTrip:
    """IMAP login and select, SMTP submission, IMAP poll until seen, clean up."""

    name = SERVICE

    def __init__(self, args: argparse.Namespace, clock: runtime.Clock) -> None:
        self.args, self.clock = args, clock
        self.stale_removed = 0
        self.queued = ""
        self.folder = args.folder  # the server's own name for it, once logged in

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        import imaplib

        import nagiosplugin

        from kolabmon import tls

        args, clock = self.args, self.clock
        context = tls.context(args.ca_file, args.insecure) if args.tls or args.starttls else None
        imap = self.imap_login(context)  # first: with IMAP down there is no point in sending mail
        try:
            self.stale_removed = self.remove_stale(imap)
            tag, message = self.message()
            smtp_time = self.submit(context, message)
            accepted = clock.elapsed()
            uids = self.wait_for(imap, tag, accepted)
            delivery = clock.elapsed() - accepted
            clock.enter(f"deleting the probe message from {self.folder}")
            self.delete(imap, uids)
            total = clock.since("connecting to IMAP")
            imap_client.logout(imap, clock, " of IMAP")
        except imaplib.IMAP4.error as exc:
            raise runtime.PluginError(f"IMAP error while {clock.step}: {imap_client.text(exc)}") from None
        except runtime.PluginError:
            imap_client.logout(imap, clock, " of IMAP")  # the failure was elsewhere: IMAP still gets a goodbye
            raise
        finally:
            imap_client.close(imap)
        yield nagiosplugin.Metric("delivery", round(delivery, 6), "s", min=0)
        yield nagiosplugin.Metric("smtp_time", round(smtp_time, 6), "s", min=0, context="smtp_time")
        yield nagiosplugin.Metric("time", round(total, 6), "s", min=0, context="time")

    # IMAP, first half: log in, select, tidy up -------------------------------------------------

    def imap_login(self, context: ssl.SSLContext | None) -> IMAPClient:
        import imaplib

        import imapclient

        args, clock = self.args, self.clock
        clock.enter("connecting to IMAP")
        try:
            client = imapclient.IMAPClient(args.imap_host, port=args.imap_port, ssl=args.tls,
                                           ssl_context=context, timeout=clock.remaining())
        except ConnectionRefusedError:
            raise runtime.PluginError(f"IMAP refused the connection to {args.imap_host}:{args.imap_port}") from None
        except imaplib.IMAP4.error as exc:
            raise runtime.PluginError(f"IMAP: unexpected greeting from the server: {imap_client.text(exc)}") from None
        client.normalise_times = False  # INTERNALDATE with its time zone, to age stale messages
        try:
            if args.starttls:
                step(client, clock, "starting TLS on IMAP")
                client.starttls(context)
            step(client, clock, f"logging in to IMAP as {args.user}")
            client.login(args.user, args.password)
            step(client, clock, f"looking up the folder {args.folder} on IMAP")
            self.folder = imap_client.folder_name(client, args.folder)
            step(client, clock, f"selecting {self.folder} on IMAP")
            client.select_folder(self.folder)
        except imapclient.exceptions.LoginError as exc:
            imap_client.close(client)
            failure = imap_client.login_failure(args.user, exc, clock.since(f"logging in to IMAP as {args.user}"))
            raise runtime.PluginError(f"IMAP {failure}") from None
        except imaplib.IMAP4.error as exc:
            imap_client.close(client)
            raise runtime.PluginError(f"IMAP error while {clock.step}: {imap_client.text(exc)}") from None
        except BaseException:
            imap_client.close(client)
            raise
        return client

    def remove_stale(self, client: IMAPClient) -> int:
        """Delete probe messages older than STALE_AFTER that failed runs left; returns how many."""
        from datetime import UTC, datetime

        step(client, self.clock, f"looking for stale probe messages in {self.folder}")
        found = client.search(["SUBJECT", SUBJECT_PREFIX.strip()])
        if not found:
            return 0
        header = b"BODY[HEADER.FIELDS (SUBJECT)]"
        fetched = client.fetch(found, ["INTERNALDATE", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        now = datetime.now(UTC)
        stale = [uid for uid, data in fetched.items()
                 if subject(data.get(header, b"")).startswith(SUBJECT_PREFIX)
                 and (now - aware(data[b"INTERNALDATE"])).total_seconds() > STALE_AFTER]
        if stale:
            self.clock.enter(f"deleting {len(stale)} stale probe messages")
            self.delete(client, stale)
        return len(stale)

    # SMTP: submit the tagged message -----------------------------------------------------------

    def message(self) -> tuple[str, bytes]:
        """A uniquely tagged message: its tag is in the subject and in a header of its own."""
        import uuid
        from email.message import EmailMessage
        from email.utils import formatdate, make_msgid

        args = self.args
        tag = str(uuid.uuid4())
        message = EmailMessage()
        message["From"] = args.sender
        message["To"] = args.to
        message["Subject"] = SUBJECT_PREFIX + tag
        message["Date"] = formatdate(localtime=True)
        message["Message-ID"] = make_msgid("kolabmon", domain=args.sender.rpartition("@")[2] or None)
        message[PROBE_HEADER] = tag
        message.set_content("A kolabmon round-trip probe. The probe deletes it when it arrives;\n"
                            "one left behind is removed by a later run after 10 minutes.\n")
        return tag, message.as_bytes()

    def submit(self, context: ssl.SSLContext | None, message: bytes) -> float:
        """Send over SMTP; returns the SMTP time (connect → message accepted)."""
        from kolabmon.clients import smtp

        args, clock = self.args, self.clock
        session = smtp.SmtpSession(clock, context, args.tls, args.ehlo, leg="SMTP")
        try:
            session.open(args.smtp_host, args.smtp_port, args.starttls)
            if not args.no_smtp_auth:
                session.login(args.user, args.password)
            self.queued = session.send(args.sender, args.to, message)
            elapsed = clock.since("connecting to SMTP")
        except ConnectionRefusedError:
            raise runtime.PluginError(f"SMTP refused the connection to {args.smtp_host}:{args.smtp_port}") from None
        except smtp.Refused as exc:
            session.quit()
            raise runtime.PluginError(f"SMTP refused {exc.what}: {exc.reply}") from None
        except runtime.PluginError as exc:
            session.quit()
            raise runtime.PluginError(f"SMTP: {exc}") from None
        else:
            session.quit()
        finally:
            session.close()
        return elapsed

    # IMAP, second half: wait for it, delete it -------------------------------------------------

    def wait_for(self, client: IMAPClient, tag: str, accepted: float) -> list[int]:
        """Poll the folder until the tagged message is there; stop in time to say so."""
        import time

        args, clock = self.args, self.clock
        # leave time to report (and the watchdog its margin) rather than be cut off mid-poll
        early = min(max(runtime.HANG_MARGIN, clock.timeout * runtime.REPORT_SHARE), clock.timeout / 2)
        poll_until = clock.timeout - early
        clock.enter(f"waiting for the message in {self.folder}")
        while True:
            client.socket().settimeout(clock.remaining())
            client.noop()
            uids = client.search(["HEADER", PROBE_HEADER, tag])
            if uids:
                return list(uids)
            if clock.elapsed() >= poll_until:
                queued = f" ({self.queued})" if self.queued else ""
                raise runtime.PluginError(
                    f"message accepted by SMTP{queued} but not seen in {self.folder} of {args.user} "
                    f"after {clock.elapsed() - accepted:.1f} s")
            time.sleep(max(min(args.poll, poll_until - clock.elapsed()), 0))

    def delete(self, client: IMAPClient, uids: list[int]) -> None:
        """Flag these UIDs \\Deleted and expunge exactly them (never the user's own deletions)."""
        import imapclient

        client.socket().settimeout(self.clock.remaining())
        client.add_flags(uids, [imapclient.DELETED], silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)


def step(client: IMAPClient, clock: runtime.Clock, name: str) -> None:
    client.socket().settimeout(clock.enter(name))


def subject(header: bytes) -> str:
    """`Subject: x` (unfolded) from a fetched header block; "" when there is none."""
    lines = " ".join(header.decode("utf-8", "replace").split())
    name, _, value = lines.partition(":")
    return value.strip() if name.lower() == "subject" else ""


def aware(when: datetime) -> datetime:
    """INTERNALDATE as an aware datetime (a server that sends no zone is taken as UTC)."""
    from datetime import UTC

    return when if when.tzinfo else when.replace(tzinfo=UTC)


# --- evaluate ------------------------------------------------------------------------------


def contexts(args: argparse.Namespace) -> list[object]:
    return [runtime.threshold("delivery", args.warning, args.critical),
            runtime.plain("smtp_time"),
            runtime.plain("time")]


# --- present -------------------------------------------------------------------------------


def present(args: argparse.Namespace, check: RoundTrip) -> Callable[[nagiosplugin.Results], str]:
    def line(results: nagiosplugin.Results) -> str:
        text = (f"message from {args.sender} to {args.to} seen in {check.folder} after "
                f"{results['delivery'].metric.value:.3f} s (SMTP {results['smtp_time'].metric.value:.3f} s, "
                f"total {results['time'].metric.value:.3f} s)")
        if args.verbose:
            text += f", {check.stale_removed} stale probe messages removed"
        return text
    return line


# --- wire ----------------------------------------------------------------------------------


def make_parser() -> runtime.Parser:
    delivery = "range for the delivery time in seconds (SMTP accepted → seen over IMAP)"
    p = runtime.parser(SERVICE, "Send a tagged message over SMTP and wait until it shows up over IMAP.",
                       hostname="host of both SMTP and IMAP (unless --smtp-host and --imap-host are given)",
                       port="not used here: see --smtp-port and --imap-port",
                       warning="warning " + delivery, critical="critical " + delivery)
    p.add_argument("--smtp-host", metavar="HOST", help="SMTP server (default -H)")
    p.add_argument("--smtp-port", type=runtime.port_number, metavar="PORT",
                   help="SMTP port (default 25, 465 with --tls)")
    p.add_argument("--imap-host", metavar="HOST", help="IMAP server (default -H)")
    p.add_argument("--imap-port", type=runtime.port_number, metavar="PORT",
                   help="IMAP port (default 143, 993 with --tls)")
    runtime.add_auth(p, "user whose mailbox is watched over IMAP; also the SMTP AUTH user (required)")
    runtime.add_tls(p)
    p.add_argument("--to", metavar="ADDRESS", help="recipient (default: the -u user)")
    p.add_argument("--from", dest="sender", metavar="ADDRESS", help="envelope and header sender (default: -u)")
    p.add_argument("--no-smtp-auth", action="store_true",
                   help="submit without SMTP AUTH (inbound mail, as from outside); -u still logs in to IMAP")
    p.add_argument("--folder", default="INBOX",
                   help="folder the message is delivered to, levels separated by / (default INBOX); "
                        "a name outside the server's namespaces is one of the user's own folders")
    p.add_argument("--poll", type=runtime.positive_seconds, default=0.2, metavar="SECONDS",
                   help="seconds between looks into the folder (default 0.2)")
    p.add_argument("--ehlo", metavar="NAME", help="name to say in EHLO (default: this host's FQDN)")
    return p


def build(args: argparse.Namespace, clock: runtime.Clock) -> nagiosplugin.Check:
    if args.port is not None:
        raise runtime.UsageError("-p/--port is ambiguous here: use --smtp-port and --imap-port")
    args.smtp_host = args.smtp_host or args.hostname
    args.imap_host = args.imap_host or args.hostname
    if not (args.smtp_host and args.imap_host):
        raise runtime.UsageError("missing -H/--hostname (or both --smtp-host and --imap-host)")
    if not args.folder.strip("/ "):
        raise runtime.UsageError("--folder names no folder")
    args.smtp_port = args.smtp_port or (465 if args.tls else 25)
    args.imap_port = args.imap_port or (993 if args.tls else 143)
    args.to = args.to or args.user
    args.sender = args.sender or args.user
    check = RoundTrip(args, clock)
    return runtime.check(check, contexts(args), present(args, check))


PLUGIN = runtime.Plugin(SERVICE, build, make_parser, required=("user",), logs_in=lambda args: True)


def main(argv: Sequence[str] | None = None) -> int:
    return PLUGIN.main(argv)
