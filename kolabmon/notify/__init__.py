"""kolabmon-notify: the on-call notification, with what the cluster says about it.

    kolabmon-notify --type PROBLEM --host kolab-cluster --service imap --state CRITICAL
                    --output 'IMAP CRITICAL - ...' [--active node2] [--audit PATH]
                    [--to ADDR ... [--smtp-host H] [--starttls|--tls] [-u USER]] [--webhook URL]

Icinga's NotificationCommand passes its macros as argv (icinga/eventcommands.conf); Nagios Core's
command line passes the same, but its free text (the plugin's line, the author and comment an
operator types) through the environment, with --nagios-env (nagios/commands.cfg). The message
carries the service, its state, the plugin's line, where the Kolab group runs, the last takeover
from kolabmon-takeover's audit log and what to do next. It goes out as mail over SMTP (TLS
verified by default) and/or as JSON to a webhook. Exit 0: every channel delivered; 2: a
delivery failed (the line says which and why); 3: bad usage or macros. One line on stdout,
never a secret, never past --timeout.

Here: the macros, validated, and the executable. `message.py` reads the audit log and writes
the message; `delivery.py` sends it.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Sequence

from kolabmon import runtime

SERVICE = "NOTIFY"
PROG = "kolabmon-notify"
OK, CRITICAL = runtime.OK, runtime.CRITICAL
DEFAULT_TIMEOUT = 30.0
TYPES = ("PROBLEM", "RECOVERY", "ACKNOWLEDGEMENT", "CUSTOM", "FLAPPINGSTART", "FLAPPINGEND",
         "DOWNTIMESTART", "DOWNTIMEEND", "DOWNTIMECANCELLED", "DOWNTIMEREMOVED",
         "FLAPPINGSTOP", "FLAPPINGDISABLED",  # Nagios's words: FLAPPINGEND, and flap detection switched off
         "TAKEOVER")  # the last is kolabmon-takeover's own message about its decision (--record)
HOST_STATES = ("UP", "DOWN", "UNREACHABLE")
UNRESOLVED = re.compile(r"\$[A-Za-z_][\w.]*\$")

# --- the event: the macros, validated -------------------------------------------------------


class Event:
    """One notification as Icinga or Nagios describes it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.type = args.type
        self.host = args.host
        self.service = args.service or None
        self.state = args.state if self.service else args.host_state
        self.output = (args.output if self.service else args.host_output) or ""
        self.author, self.comment = args.author or "", args.comment or ""
        self.when = args.time or time.strftime("%Y-%m-%d %H:%M:%S %z")
        self.failover = bool(args.failover)
        self.node = (args.node or "").strip()  # the node a node-local check runs on ("" on the cluster host)
        self.changed = (args.changed or "").strip()
        self.record: dict | None = args.record
        self.nagios = bool(args.nagios_env)  # Nagios tells kolabmon-takeover nothing about flapping

    @property
    def subject(self) -> str:
        what = f"{self.service} on {self.host}" if self.service else f"host {self.host}"
        if self.record is not None:
            from kolabmon.notify.message import takeover_subject

            return takeover_subject(self.record, what)
        return f"{self.type}: {what} is {self.state}"

    @property
    def problem(self) -> bool:
        return self.state not in ("OK", "UP")


def _check_macros(args: argparse.Namespace) -> None:
    """Refuse what Icinga would never send: one UsageError line naming the argument."""
    for name in ("type", "host", "service", "state", "host_state", "output", "host_output", "author",
                 "comment", "time", "active", "node", "changed"):
        value = getattr(args, name)
        if value is not None and UNRESOLVED.fullmatch(value.strip()):
            raise runtime.UsageError(f"--{name.replace('_', '-')} is an unresolved Icinga macro ({value.strip()})")
    if not args.type:
        raise runtime.UsageError("missing --type ($notification.type$)")
    args.type = args.type.strip().upper()
    if args.type not in TYPES:
        raise runtime.UsageError(f"--type {args.type!r} is not an Icinga or Nagios notification type "
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


def _record(args: argparse.Namespace) -> None:
    """--record: kolabmon-takeover's audit record of its decision (JSON, from stdin or a file), the
    whole content of a TAKEOVER message; only with --type TAKEOVER, and required there."""
    if (args.type == "TAKEOVER") != (args.record is not None):
        raise runtime.UsageError("--type TAKEOVER goes with --record (kolabmon-takeover's decision), and only it")
    if args.record is None:
        return
    import json
    import sys

    try:
        if args.record == "-":
            text = sys.stdin.read(1 << 20)
        else:
            with open(args.record, encoding="utf-8") as handle:
                text = handle.read(1 << 20)
        record = json.loads(text)
    except OSError as exc:
        raise runtime.UsageError(f"cannot read --record {args.record}: {exc.strerror}") from None
    except ValueError:
        raise runtime.UsageError(f"--record {args.record} is not one JSON object (an audit record)") from None
    if not isinstance(record, dict) or not isinstance(record.get("event"), dict) or "decision" not in record:
        raise runtime.UsageError(f"--record {args.record} is not a takeover decision (no event or decision)")
    args.record = record


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

# --- wire ------------------------------------------------------------------------------------


def make_parser() -> runtime.Parser:
    p = runtime.Parser(SERVICE, "Send an Icinga or Nagios notification for a Kolab cluster by mail and/or to a "
                                "JSON webhook, with the active node, the last takeover and the next step.")
    p.prog = PROG
    p.add_argument("-h", "--help", action="store_true", help="show this help and exit (state UNKNOWN)")
    p.add_argument("-V", "--version", action="store_true", help="show the version and exit (state UNKNOWN)")
    p.add_argument("-t", "--timeout", type=runtime.positive_seconds, default=DEFAULT_TIMEOUT,
                   help="seconds before delivery gives up, all channels together (default 30)")
    macros = p.add_argument_group("Icinga macros (Nagios: the same, see --nagios-env)")
    macros.add_argument("--type", help="$notification.type$: PROBLEM, RECOVERY, ACKNOWLEDGEMENT, CUSTOM, "
                                       "FLAPPING..., DOWNTIME... (Icinga's and Nagios's words)")
    macros.add_argument("--host", help="$host.name$")
    macros.add_argument("--host-state", help="$host.state$ (UP, DOWN): used when there is no --service")
    macros.add_argument("--host-output", help="$host.output$")
    macros.add_argument("--service", help="$service.name$ (without it: a host notification)")
    macros.add_argument("--state", help="$service.state$ (OK, WARNING, CRITICAL, UNKNOWN)")
    macros.add_argument("--output", help="$service.output$: the plugin's line")
    macros.add_argument("--author", help="$notification.author$")
    macros.add_argument("--comment", help="$notification.comment$")
    macros.add_argument("--time", help="$icinga.long_date_time$")
    macros.add_argument("--nagios-env", action="store_true",
                        help="Nagios Core: take --output (or --host-output without --service), --author and "
                             "--comment from Nagios's environment macros NAGIOS_SERVICEOUTPUT (NAGIOS_HOSTOUTPUT), "
                             "NAGIOS_NOTIFICATIONAUTHOR and NAGIOS_NOTIFICATIONCOMMENT (nagios.cfg: "
                             "enable_environment_macros=1), never from argv: text an operator or a plugin writes "
                             "then never passes Nagios's /bin/sh. Those options are refused with it")
    context = p.add_argument_group("cluster context")
    context.add_argument("--active", metavar="NODE",
                         help="where the Kolab group runs (the NotificationCommand reads it from the heartbeat checks)")
    context.add_argument("--failover", type=runtime.zero_or_one, default=False, metavar="0|1",
                         help="1: the service is failover-relevant (kolabmon-takeover is its event handler)")
    context.add_argument("--audit", metavar="PATH",
                         help="kolabmon-takeover's audit log, for its decisions (default: the one --takeover-config "
                              "names, else /var/lib/kolabmon/audit.jsonl)")
    context.add_argument("--changed", metavar="EPOCH",
                         help="$service.last_hard_state_change$: finds kolabmon-takeover's decision on this event "
                              "(a PROBLEM) or on the problem it ends (a RECOVERY)")
    context.add_argument("--node", metavar="NODE",
                         help="the cluster node a node-local check runs on (the host's kolab_node_name)")
    context.add_argument("--takeover-config", metavar="PATH",
                         help="kolabmon-takeover's config: its audit log (unless --audit), and whether it sends "
                              "its decisions itself ([notify])")
    context.add_argument("--record", metavar="-|PATH",
                         help="with --type TAKEOVER: kolabmon-takeover's decision record (JSON; '-' = stdin)")
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
    if args.nagios_env and (args.output is not None or args.host_output is not None):
        runtime.nagios_env(args, {"output": "SERVICEOUTPUT", "host_output": "HOSTOUTPUT"})  # refuses both
    output = {"output": "SERVICEOUTPUT"} if args.service else {"host_output": "HOSTOUTPUT"}
    runtime.nagios_env(args, output | {"author": "NOTIFICATIONAUTHOR", "comment": "NOTIFICATIONCOMMENT"})
    _record(args)
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
    from kolabmon.notify.delivery import deliver
    from kolabmon.notify.message import compose, read_audit

    clock.enter("reading the audit log")
    event = Event(args)
    takeover = read_audit(args.audit, event, args.takeover_config, wait=args.timeout / 2)
    clock.enter("composing")
    subject, body, document = compose(event, takeover, (args.active or "").strip())
    for secret in secrets:  # the message never carries one, whatever the macros held
        subject, body = subject.replace(secret, "****"), body.replace(secret, "****")
        document = {k: v.replace(secret, "****") if isinstance(v, str) else v for k, v in document.items()}
    clock.enter("delivering")
    channels = deliver(args, subject, body, document, time.monotonic() + clock.for_waiting())  # hung: reported
    failed = [c for c in channels if not c.ok]
    parts = [f"{c.name} failed: {c.text}" for c in failed] + [c.text for c in channels if c.ok]
    state = CRITICAL if failed else OK
    return runtime.Outcome(state, runtime.status_line(SERVICE, state, "; ".join(parts), secrets))

