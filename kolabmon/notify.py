"""kolabmon-notify: the on-call notification, with what the cluster says about it.

    kolabmon-notify --type PROBLEM --host kolab-cluster --service imap --state CRITICAL
                    --output 'IMAP CRITICAL - ...' [--active node2] [--audit PATH]
                    [--to ADDR ... [--smtp-host H] [--starttls|--tls] [-u USER]] [--webhook URL]

Icinga's NotificationCommand passes its macros as argv (icinga/eventcommands.conf). The message
carries the service, its state, the plugin's line, where the Kolab group runs, the last takeover
from kolabmon-takeover's audit log and what to do next. It goes out as mail over SMTP (TLS
verified by default) and/or as JSON to a webhook. Exit 0: every channel delivered; 2: a
delivery failed (the line says which and why); 3: bad usage or macros. One line on stdout,
never a secret, never past --timeout.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Sequence

from kolabmon import runtime

TYPE_CHECKING = False  # no typing import at start-up (see runtime)
if TYPE_CHECKING:
    import ssl

    from kolabmon.clients.smtp import SmtpSession

SERVICE = "NOTIFY"
PROG = "kolabmon-notify"
OK, CRITICAL = runtime.OK, runtime.CRITICAL
DEFAULT_TIMEOUT = 30.0
DEFAULT_AUDIT = "/var/lib/kolabmon/audit.jsonl"
TYPES = ("PROBLEM", "RECOVERY", "ACKNOWLEDGEMENT", "CUSTOM", "FLAPPINGSTART", "FLAPPINGEND",
         "DOWNTIMESTART", "DOWNTIMEEND", "DOWNTIMECANCELLED", "DOWNTIMEREMOVED")
HOST_STATES = ("UP", "DOWN", "UNREACHABLE")
RECENT = 3600.0  # a takeover older than this is history, not the cause of this notification
UNRESOLVED = re.compile(r"\$[A-Za-z_][\w.]*\$")


# --- the event: Icinga's macros, validated -------------------------------------------------


class Event:
    """One notification as Icinga describes it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.type = args.type
        self.host = args.host
        self.service = args.service or None
        self.state = args.state if self.service else args.host_state
        self.output = (args.output if self.service else args.host_output) or ""
        self.author, self.comment = args.author or "", args.comment or ""
        self.when = args.time or time.strftime("%Y-%m-%d %H:%M:%S %z")
        self.failover = bool(args.failover)

    @property
    def subject(self) -> str:
        what = f"{self.service} on {self.host}" if self.service else f"host {self.host}"
        return f"{self.type}: {what} is {self.state}"

    @property
    def problem(self) -> bool:
        return self.state not in ("OK", "UP")


def _check_macros(args: argparse.Namespace) -> None:
    """Refuse what Icinga would never send: one UsageError line naming the argument."""
    for name in ("type", "host", "service", "state", "host_state", "output", "host_output", "author",
                 "comment", "time", "active"):
        value = getattr(args, name)
        if value is not None and UNRESOLVED.fullmatch(value.strip()):
            raise runtime.UsageError(f"--{name.replace('_', '-')} is an unresolved Icinga macro ({value.strip()})")
    if not args.type:
        raise runtime.UsageError("missing --type ($notification.type$)")
    args.type = args.type.strip().upper()
    if args.type not in TYPES:
        raise runtime.UsageError(f"--type {args.type!r} is not an Icinga notification type "
                                 f"({', '.join(TYPES[:4])}, ...)")
    if not (args.host or "").strip():
        raise runtime.UsageError("--host is empty ($host.name$)")
    if args.service is not None and not args.service.strip():
        raise runtime.UsageError("--service is empty ($service.name$)")
    allowed: tuple[str, ...] = runtime.STATE_NAMES if args.service else HOST_STATES
    state, flag = (args.state, "--state") if args.service else (args.host_state, "--host-state")
    if not state:
        raise runtime.UsageError(f"missing {flag} ({'$service.state$' if args.service else '$host.state$'})")
    if state.strip().upper() not in allowed:
        raise runtime.UsageError(f"{flag} {state!r} is not one of {', '.join(allowed)}")
    if args.service:
        args.state = state.strip().upper()
    else:
        args.host_state = state.strip().upper()


def _check_delivery(args: argparse.Namespace) -> None:
    if not args.to and not args.webhook:
        raise runtime.UsageError("nowhere to deliver: give --to ADDRESS (mail) and/or --webhook URL")
    for address in args.to:
        if not re.fullmatch(r"[^@\s<>,]+@[^@\s<>,]+", address):
            raise runtime.UsageError(f"--to {address!r} is not a mail address")
    if args.sender and not re.fullmatch(r"[^@\s<>,]+@[^@\s<>,]+", args.sender):
        raise runtime.UsageError(f"--from {args.sender!r} is not a mail address")
    if args.webhook and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", args.webhook):
        raise runtime.UsageError(f"--webhook {args.webhook!r} is not an http(s) URL")
    if (args.tls or args.starttls or args.webhook) and args.ca_file and not os.access(args.ca_file, os.R_OK):
        raise runtime.UsageError(f"cannot read CA file {args.ca_file}")


def _token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.readline().strip()
    except OSError as exc:
        raise runtime.UsageError(f"cannot read webhook token file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise runtime.UsageError(f"webhook token file {path} is not UTF-8 text") from None
    if not token:
        raise runtime.UsageError(f"webhook token file {path} is empty")
    return token


# --- the cluster's context: the last takeover, and what to do next ---------------------------


class Takeover:
    """What kolabmon-takeover's audit log says: the last move it tried and its latest decision."""

    def __init__(self, last_move: dict | None, latest: dict | None, recovered: set[str], note: str = "") -> None:
        self.last_move, self.latest, self.recovered, self.note = last_move, latest, recovered, note

    @property
    def moved_from(self) -> str | None:
        """The node the group left in the last move (if it moved and that node is not recovered yet)."""
        move = self.last_move
        if not move or not move.get("moved"):
            return None
        source = (move.get("cluster_state") or {}).get("active")
        return source if source and source not in self.recovered else None

    def recent(self, record: dict | None, now: float) -> bool:
        return bool(record) and now - float(record.get("epoch", 0)) < RECENT  # type: ignore[union-attr]

    def line(self) -> str:
        if self.note:
            return self.note
        if not self.last_move:
            return "none recorded"
        return f"{_when(self.last_move)} {self.last_move.get('reason', '(no reason recorded)')}"


def read_audit(path: str | None) -> Takeover:
    """The audit log's tail, as kolabmon-takeover reads it: a broken line is skipped, a missing log is said so."""
    from kolabmon.takeover import audit  # late: --help and usage errors do not load it

    if not path:
        return Takeover(None, None, set(), "unknown (no --audit log given)")
    try:
        records = audit.tail(path)
    except FileNotFoundError:
        return Takeover(None, None, set(), f"none recorded ({path} does not exist yet)")
    except OSError as exc:
        return Takeover(None, None, set(), f"unknown (cannot read {path}: {exc.strerror})")
    last_move = audit.last_takeover(records)
    return Takeover(last_move, audit.last_decision(records), audit.recovered_since(records, last_move))


def _when(record: dict) -> str:
    if record.get("time"):
        return str(record["time"])
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(float(record["epoch"])))
    except (KeyError, TypeError, ValueError):
        return "(time unknown)"


def next_step(event: Event, takeover: Takeover, active: str, now: float | None = None) -> str:
    """One line: what the person on call does now. `active` is the node name(s), "none" or ""."""
    now = time.time() if now is None else now
    what = event.service or f"host {event.host}"
    where = f" on {active}" if active and active != "none" else ""
    source = takeover.moved_from
    if event.type == "ACKNOWLEDGEMENT":
        return f"{event.author or 'someone'} is on it ({event.comment or 'no comment'}); nothing else to do."
    if event.type.startswith("DOWNTIME"):
        return f"Downtime by {event.author or 'someone'}: {event.comment or 'no comment'}."
    if event.type == "FLAPPINGSTART":
        return (f"{what} is flapping: kolabmon will not move the group while it flaps. "
                f"Look for an intermittent cause{where}.")
    if not event.problem:
        if source:
            return (f"{what} is back. The group left {source} in the last takeover: check {source}, "
                    f"then run: kolabmon-takeover recover {source}")
        return "Nothing to do."
    move = takeover.last_move
    if move and takeover.recent(move, now):
        if source:
            return (f"kolabmon moved the group away from {source}: check {source} (why it failed there), "
                    f"then run: kolabmon-takeover recover {source}")
        return ("The takeover failed or left the cluster blocked: look at crm_mon -1 on the nodes, "
                "clean up, move by hand if needed.")
    latest = takeover.latest
    if latest and takeover.recent(latest, now):
        reason = latest.get("reason", "no reason recorded")
        if latest.get("decision") == "error":
            return f"kolabmon-takeover failed ({reason}): check {what}{where} by hand."
        return f"kolabmon did not move ({reason}): check {what}{where} by hand."
    if event.state == "UNKNOWN":
        return f"The check itself failed (configuration, tool, permissions): read its line, then check {what}{where}."
    if event.state == "WARNING":
        return f"Look at {what}{where} in working hours."
    if not event.service:
        return f"{event.host} does not answer: check its power and network (Pacemaker fences and moves a dead node)."
    if event.failover:
        return (f"kolabmon-takeover is deciding on this HARD CRITICAL now (second opinion, then a move if its "
                f"policy allows): a RECOVERY should follow within minutes; if not, check {what}{where}.")
    return f"Check {what}{where}."


# --- the message ------------------------------------------------------------------------------


def compose(event: Event, takeover: Takeover, active: str) -> tuple[str, str, dict[str, object]]:
    """Subject, plain-text body and the webhook's JSON document. `active` as for next_step."""
    step = next_step(event, takeover, active)
    rows = [("When", event.when), ("Check", event.output or "(no output)"), ("Active node", active_text(active)),
            ("Last takeover", takeover.line())]
    if takeover.latest and takeover.latest is not takeover.last_move:
        decision = str(takeover.latest.get("decision", "?")).upper()
        rows.append(("Latest decision", f"{_when(takeover.latest)} {decision}: {takeover.latest.get('reason', '')}"))
    if event.author or event.comment:
        rows.append(("Comment", f"{event.comment} ({event.author})" if event.author else event.comment))
    rows.append(("Next", step))
    body = "\n".join([event.subject, ""] + [f"{name + ':':<16} {_one_line(value)}" for name, value in rows]) + "\n"
    document: dict[str, object] = {
        "type": event.type, "host": event.host, "service": event.service, "state": event.state,
        "output": event.output, "time": event.when, "author": event.author, "comment": event.comment,
        "active_node": active or None, "last_takeover": takeover.line(), "next_step": step, "summary": event.subject,
    }
    return f"[kolabmon] {_one_line(event.subject)}", body, document


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def active_text(active: str) -> str:
    if active == "none":
        return "none: the Kolab group runs on no node (heartbeat)"
    if active:
        return f"{active} (from the nodes' heartbeat checks)"
    return "unknown (no fresh heartbeat result said where the group runs)"


# --- delivery: mail and webhook, each in its own thread, one deadline for both -----------------


class Channel:
    """One delivery: its clock (the step it is in), and its outcome."""

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.clock = runtime.Clock(timeout)
        self.ok: bool | None = None
        self.text = ""


def send_mail(args: argparse.Namespace, subject: str, body: str, channel: Channel) -> None:
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    from kolabmon.clients import smtp

    clock = channel.clock
    sender = args.sender or f"kolabmon@{_hostname()}"
    message = EmailMessage()
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


# --- wire ------------------------------------------------------------------------------------


def make_parser() -> runtime.Parser:
    p = runtime.Parser(SERVICE, "Send an Icinga notification for a Kolab cluster by mail and/or to a JSON "
                                "webhook, with the active node, the last takeover and the next step.")
    p.prog = PROG
    p.add_argument("-h", "--help", action="store_true", help="show this help and exit (state UNKNOWN)")
    p.add_argument("-V", "--version", action="store_true", help="show the version and exit (state UNKNOWN)")
    p.add_argument("-t", "--timeout", type=runtime.positive_seconds, default=DEFAULT_TIMEOUT,
                   help="seconds before delivery gives up, all channels together (default 30)")
    macros = p.add_argument_group("Icinga macros")
    macros.add_argument("--type", help="$notification.type$: PROBLEM, RECOVERY, ACKNOWLEDGEMENT, ...")
    macros.add_argument("--host", help="$host.name$")
    macros.add_argument("--host-state", help="$host.state$ (UP, DOWN): used when there is no --service")
    macros.add_argument("--host-output", help="$host.output$")
    macros.add_argument("--service", help="$service.name$ (without it: a host notification)")
    macros.add_argument("--state", help="$service.state$ (OK, WARNING, CRITICAL, UNKNOWN)")
    macros.add_argument("--output", help="$service.output$: the plugin's line")
    macros.add_argument("--author", help="$notification.author$")
    macros.add_argument("--comment", help="$notification.comment$")
    macros.add_argument("--time", help="$icinga.long_date_time$")
    context = p.add_argument_group("cluster context")
    context.add_argument("--active", metavar="NODE",
                         help="where the Kolab group runs (the NotificationCommand reads it from the heartbeat checks)")
    context.add_argument("--failover", type=runtime.zero_or_one, default=False, metavar="0|1",
                         help="1: the service is failover-relevant (kolabmon-takeover is its event handler)")
    context.add_argument("--audit", metavar="PATH", default=DEFAULT_AUDIT,
                         help=f"kolabmon-takeover's audit log, for the last takeover (default {DEFAULT_AUDIT})")
    mail = p.add_argument_group("mail")
    mail.add_argument("--to", action="append", default=[], metavar="ADDRESS",
                      help="recipient, repeatable or comma-separated (mail is sent when given)")
    mail.add_argument("--from", dest="sender", metavar="ADDRESS", help="sender (default kolabmon@HOSTNAME)")
    mail.add_argument("--smtp-host", default="localhost", metavar="HOST", help="SMTP server (default localhost)")
    mail.add_argument("--smtp-port", type=runtime.port_number, metavar="PORT",
                      help="SMTP port (default 25, 465 with --tls)")
    mode = mail.add_mutually_exclusive_group()
    mode.add_argument("--tls", action="store_true", help="implicit TLS from the first byte")
    mode.add_argument("--starttls", action="store_true", help="upgrade the plain connection with STARTTLS")
    mail.add_argument("-u", "--user", help="SMTP AUTH user (password from --password-file or KOLABMON_PASSWORD)")
    mail.add_argument("--password-file", metavar="PATH",
                      help=f"file holding the SMTP password (else the environment variable {runtime.PASSWORD_ENV})")
    tls = p.add_argument_group("TLS (mail and webhook)")
    tls.add_argument("--ca-file", metavar="PATH", help="trust the CA certificates in this PEM file")
    tls.add_argument("--insecure", action="store_true",
                     help="do not verify server certificates (explicit opt-out)")
    hook = p.add_argument_group("webhook")
    hook.add_argument("--webhook", metavar="URL", help="also POST the notification as JSON to this URL")
    hook.add_argument("--webhook-token-file", metavar="PATH", help="file holding a bearer token for the webhook")
    return p


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The settled options (UsageError for bad macros); -h/-V are answered by `main()`."""
    args = runtime.parse(make_parser(), argv, required=())
    if not (args.help or args.version):
        settle(args)
    return args


def settle(args: argparse.Namespace) -> None:
    """Check the macros and delivery options together; fill in the defaults, the password, the token."""
    _check_macros(args)
    args.to = [a.strip() for value in args.to for a in value.split(",") if a.strip()]
    _check_delivery(args)
    if args.smtp_port is None:
        args.smtp_port = 465 if args.tls else 25
    args.password = runtime.password(args) if args.user and args.to else None
    args.webhook_token = _token(args.webhook_token_file) if args.webhook and args.webhook_token_file else None


def main(argv: Sequence[str] | None = None) -> int:
    """The executable: parse, compose, deliver, print one line, return the exit code."""
    clock = runtime.Clock(DEFAULT_TIMEOUT)
    args = runtime.command_line(make_parser(), argv, required=(), settle=settle, usage_hint=False)
    if isinstance(args, int):
        return args
    clock.timeout = args.timeout
    secrets = [s for s in (args.password, args.webhook_token) if s]
    # the watchdog is the backstop, e.g. for an audit log on a dead mount
    return runtime.execute(SERVICE, clock, CRITICAL, secrets, lambda: notify(args, clock, secrets))


def notify(args: argparse.Namespace, clock: runtime.Clock, secrets: list[str]) -> runtime.Outcome:
    """Read the audit log, compose, deliver on every channel: the outcome, with the channels' lines."""
    clock.enter("reading the audit log")
    takeover = read_audit(args.audit)
    clock.enter("composing")
    subject, body, document = compose(Event(args), takeover, (args.active or "").strip())
    for secret in secrets:  # the message never carries one, whatever the macros held
        subject, body = subject.replace(secret, "****"), body.replace(secret, "****")
        document = {k: v.replace(secret, "****") if isinstance(v, str) else v for k, v in document.items()}
    clock.enter("delivering")
    channels = deliver(args, subject, body, document, time.monotonic() + clock.for_waiting())  # hung: reported
    failed = [c for c in channels if not c.ok]
    parts = [f"{c.name} failed: {c.text}" for c in failed] + [c.text for c in channels if c.ok]
    state = CRITICAL if failed else OK
    return runtime.Outcome(state, runtime.status_line(SERVICE, state, "; ".join(parts), secrets))
