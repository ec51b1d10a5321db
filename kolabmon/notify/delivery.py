"""kolabmon-notify's delivery: mail (through the SMTP client) and the webhook, each in its own
thread, one deadline for both."""

from __future__ import annotations

import argparse
import time

from kolabmon import runtime

TYPE_CHECKING = False  # no typing import at start-up (see runtime)
if TYPE_CHECKING:
    import ssl

    from kolabmon.clients.smtp import SmtpSession


class Channel:
    """One delivery: its clock (the step it is in), and its outcome."""

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.clock = runtime.Clock(timeout)
        self.ok: bool | None = None
        self.text = ""


def send_mail(args: argparse.Namespace, subject: str, body: str, channel: Channel) -> None:
    from email import policy
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    from kolabmon.clients import smtp

    clock = channel.clock
    sender = args.sender or f"kolabmon@{_hostname()}"
    # one header line up to SMTP's limit: the default 78 folds a long Subject before its first word
    message = EmailMessage(policy=policy.default.clone(max_line_length=998))
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = ", ".join(args.to)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid("kolabmon", domain=sender.rsplit("@", 1)[-1])
    message["Auto-Submitted"] = "auto-generated"
    # plain 7bit when it can be (readable in any mail client's source view), else quoted-printable
    message.set_content(body, cte="7bit" if body.isascii() and len(max(body.splitlines(), key=len)) < 990
                        else "quoted-printable")
    where = f"{args.smtp_host}:{args.smtp_port}"
    context = None
    if args.tls or args.starttls:
        from kolabmon import tls

        context = tls.context(args.ca_file, args.insecure)
    session = _mail_session(clock, context, args, where)
    try:
        session.open(args.smtp_host, args.smtp_port)
        if args.starttls:
            _require(session, "starttls", where)
            session.starttls()
        if args.user:
            _require(session, "auth", where)
            session.login(args.user, args.password)
        session.send(sender, args.to, message.as_bytes())
    except runtime.PluginError as exc:
        failure = exc
        if isinstance(exc, smtp.Refused) and exc.what.startswith("AUTH "):
            failure = runtime.PluginError(f"login failed for {args.user} at {where}: {exc.reply}")
        elif isinstance(exc, smtp.Refused) and exc.what.startswith("RCPT TO:"):
            failure = runtime.PluginError(f"{where} refused every recipient: {_listed(session.refused)}")
        elif isinstance(exc, smtp.Refused):
            failure = runtime.PluginError(f"{where} said {exc.reply} (while {clock.step})")
        session.quit()  # the server is fine to talk to; only its answer was wrong
        raise failure from None
    else:
        session.quit()
    finally:
        session.close()  # a socket error is the runtime's to classify, with the step it happened in
    if session.refused:
        raise runtime.PluginError(f"{where} refused {_listed(session.refused)}; the others got it")
    channel.text = f"mailed {', '.join(args.to)} via {where}"


def _listed(refused: dict[str, str]) -> str:
    return ", ".join(f"{recipient} ({reply})" for recipient, reply in refused.items())


def _mail_session(clock: runtime.Clock, context: ssl.SSLContext | None, args: argparse.Namespace,
                  where: str) -> SmtpSession:
    """The SMTP client, its steps named as kolabmon-notify names them: by what the mail needs done."""
    from kolabmon.clients import smtp

    class Session(smtp.SmtpSession):
        def named(self, what: str) -> str:
            if what.startswith("saying EHLO"):  # part of the command that needs it
                what = ("starting TLS" if args.starttls and not self.upgraded
                        else "authenticating" if args.user else "sending")
            for start, name in (("connecting", "connecting to"), ("reading", "connecting to"),
                                ("starting", "starting TLS with"), ("authenticating", "logging in to"),
                                ("sending", "sending to")):
                if what.startswith(start):
                    return f"{name} {where}"
            return what

    return Session(clock, context, args.tls, _hostname())


def _require(session: SmtpSession, extension: str, where: str) -> None:
    """A missing STARTTLS or AUTH, in the words kolabmon-notify has always used."""
    if extension not in session.features:
        session.step("starting TLS" if extension == "starttls" else "authenticating")
        name = "STARTTLS" if extension == "starttls" else "SMTP AUTH"
        raise runtime.PluginError(f"{where} does not support it: {name} extension not supported by server. "
                                  f"(while {session.clock.step})")


def _hostname() -> str:
    import socket

    return socket.gethostname() or "localhost"  # not getfqdn(): no DNS lookup that could hang


def post_webhook(args: argparse.Namespace, document: dict[str, object], channel: Channel) -> None:
    import requests

    from kolabmon.clients import http

    clock = channel.clock
    headers = {"User-Agent": f"kolabmon-notify/{runtime.__version__}"}
    if args.webhook_token:
        headers["Authorization"] = f"Bearer {args.webhook_token}"
    verify: bool | str = False if args.insecure else (args.ca_file or True)
    host = http.host_of(args.webhook)
    with requests.Session() as session:
        session.trust_env = False  # no proxy, netrc or CA bundle from the environment
        clock.enter(f"posting to {host}")
        left = clock.remaining()
        try:
            response = session.post(args.webhook, json=document, headers=headers, verify=verify,
                                    timeout=(left, left), allow_redirects=False)
        except requests.exceptions.RequestException as exc:
            if not isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
                raise runtime.PluginError(f"webhook request failed: {type(exc).__name__}") from None
            raise http.failure(exc, clock, ConnectionError) or runtime.PluginError(
                f"cannot reach the webhook: {http.one_line(exc)}") from None
    if not 200 <= response.status_code < 300:
        raise runtime.PluginError(f"webhook {host} answered {response.status_code} {response.reason}")
    channel.text = f"webhook {host} {response.status_code}"


def deliver(args: argparse.Namespace, subject: str, body: str, document: dict[str, object],
            deadline: float) -> list[Channel]:
    """Run every channel at once; a channel still busy at the deadline is reported as hung."""
    import threading

    jobs: list[tuple[Channel, threading.Thread]] = []
    budget = max(deadline - time.monotonic(), 0.1)

    def run(channel: Channel, work: object) -> None:
        try:
            work()  # type: ignore[operator]
            channel.ok = True
        except Exception as exc:  # every failure becomes one line here, and only here
            channel.ok = False
            channel.text = runtime.safe_classify(exc, channel.clock)[1]

    if args.to:
        mail = Channel("mail", budget)
        jobs.append((mail, threading.Thread(target=run, args=(mail, lambda: send_mail(args, subject, body, mail)),
                                            daemon=True)))
    if args.webhook:
        hook = Channel("webhook", budget)
        jobs.append((hook, threading.Thread(target=run, args=(hook, lambda: post_webhook(args, document, hook)),
                                            daemon=True)))
    for _, thread in jobs:
        thread.start()
    for channel, thread in jobs:
        thread.join(max(deadline - time.monotonic(), 0))
        if channel.ok is None:  # still hanging: abandoned (a daemon thread), reported now
            channel.ok = False
            channel.text = f"no answer within {args.timeout:g} s (while {channel.clock.step})"
    return [channel for channel, _ in jobs]
