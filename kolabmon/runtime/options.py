"""Option parsing for every executable: the standard Monitoring Plugins options, their value types,
usage errors as one UNKNOWN line, and the password (never from argv)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence

from kolabmon.runtime.base import (
    CRITICAL,
    DEFAULT_TIMEOUT,
    PASSWORD_ENV,
    STATE_NAMES,
    UNKNOWN,
    WARNING,
    UsageError,
    __version__,
    status_line,
)

TYPE_CHECKING = False  # see kolabmon.runtime
if TYPE_CHECKING:
    from typing import Any, NoReturn

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_RANGE = rf"@?(?:(~|{_NUMBER})?:)?({_NUMBER})?"  # compiled on first use: re caches it


def nagios_range(text: str) -> str:
    """Validate a Nagios range (`10`, `10:`, `~:10`, `@10:20`) and return it unchanged."""
    match = re.fullmatch(_RANGE, text)
    if not match or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"invalid range {text!r} (Nagios syntax: 10, 10:, ~:10, @10:20)")
    start, end = match.groups()
    if start != "~" and end is not None and float(start or 0) > float(end):
        raise argparse.ArgumentTypeError(f"invalid range {text!r}: start is greater than end")
    return text


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}")
    return value


def port_number(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}")
    return int(text)


def state_name(text: str) -> int:
    names = {name: index for index, name in enumerate(STATE_NAMES)} | {"WARN": WARNING, "CRIT": CRITICAL}
    if text.upper() not in names:
        raise argparse.ArgumentTypeError(f"invalid state {text!r} (OK, WARNING, CRITICAL, UNKNOWN)")
    return names[text.upper()]


def zero_or_one(text: str) -> bool:
    """An Icinga boolean macro as the Event- and NotificationCommands pass it: 0|1 (or true|false)."""
    if text.strip().lower() not in ("0", "1", "true", "false"):
        raise argparse.ArgumentTypeError(f"must be 0 or 1, not {text!r}")
    return text.strip().lower() in ("1", "true")


def days(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"invalid number of days {text!r}")
    return int(text)


HIDDEN = argparse.SUPPRESS  # as an option's help: accepted, but not listed in --help
RESPONSE_TIME = "range for the response time in seconds"


class Formatter(argparse.HelpFormatter):
    """argparse's help layout, as wide as shutil.get_terminal_size() says, without importing shutil:
    argparse makes a formatter for every add_argument, and shutil (with bz2 and lzma) costs ms per start."""

    def __init__(self, prog: str) -> None:
        try:
            columns = int(os.environ["COLUMNS"])
        except (KeyError, ValueError):
            columns = 0
        if columns <= 0:
            try:
                columns = os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
            except (AttributeError, ValueError, OSError):
                columns = 80
        super().__init__(prog, width=columns - 2)


class Parser(argparse.ArgumentParser):
    """argparse that turns every usage error into one `SERVICE UNKNOWN - ...` line, and knows each
    option's flags by its name (`missing -H/--hostname`)."""

    def __init__(self, service: str, description: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("prog", f"check_kolab_{service.lower()}")
        kwargs.setdefault("add_help", False)  # -h exits 3 here, as the C plugins do (see parser())
        kwargs.setdefault("formatter_class", Formatter)
        self.service = service
        self.flags: dict[str, str] = {}  # before argparse's own add_argument("-h") in __init__
        super().__init__(description=description, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.flags[action.dest] = "/".join(action.option_strings)
        return action

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parser(service: str, description: str, *, hostname: str | None = "host name or address of the server",
           hostname_type: Callable[[str], object] = str, port: str | None = "TCP port",
           warning: str | None = "warning " + RESPONSE_TIME,
           critical: str | None = "critical " + RESPONSE_TIME) -> Parser:
    """The standard Monitoring Plugins options. -h -V -v -t --timeout-state are always there; each of
    -H -p -w -c takes its help text in the plugin's words, HIDDEN, or None to leave it out."""
    p = Parser(service, description)
    p.add_argument("-h", "--help", action="store_true", help="show this help and exit (state UNKNOWN)")
    p.add_argument("-V", "--version", action="store_true", help="show the version and exit (state UNKNOWN)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more output, repeatable (-v -v -v)")
    if hostname is not None:
        p.add_argument("-H", "--hostname", type=hostname_type, help=hostname)
    if port is not None:
        p.add_argument("-p", "--port", type=port_number, help=port)
    p.add_argument("-t", "--timeout", type=positive_seconds, default=DEFAULT_TIMEOUT,
                   help="seconds before the check gives up (default 10)")
    p.add_argument("--timeout-state", type=state_name, default=CRITICAL,
                   help="state to report when --timeout is hit (default CRITICAL)")
    if warning is not None:
        p.add_argument("-w", "--warning", type=nagios_range, metavar="RANGE", help=warning)
    if critical is not None:
        p.add_argument("-c", "--critical", type=nagios_range, metavar="RANGE", help=critical)
    return p


def add_auth(p: Parser, user_help: str = "user to log in as") -> None:
    p.add_argument("-u", "--user", help=user_help)
    p.add_argument("--password-file", metavar="PATH",
                   help=f"file holding the password (else the environment variable {PASSWORD_ENV})")


def add_tls(p: Parser, *, tls: str = "implicit TLS from the first byte",
            starttls: str = "upgrade the plain connection with STARTTLS") -> None:
    """--tls/--starttls (help in the plugin's words, or HIDDEN), --ca-file, --insecure, certificate days."""
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--tls", action="store_true", help=tls)
    mode.add_argument("--starttls", action="store_true", help=starttls)
    p.add_argument("--ca-file", metavar="PATH", help="trust the CA certificates in this PEM file")
    p.add_argument("--insecure", action="store_true",
                   help="do not verify the server certificate (explicit opt-out)")
    p.add_argument("--cert-warning", type=days, default=30, metavar="DAYS",
                   help="WARNING when the certificate expires within DAYS (default 30)")
    p.add_argument("--cert-critical", type=days, default=7, metavar="DAYS",
                   help="CRITICAL when the certificate expires within DAYS (default 7)")


def node_list(text: str) -> list[str]:
    """`node2` or `node2,node3` (empty: none)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def add_node_access(p: Parser, prefix: str) -> None:
    """The node-local checks' way in from elsewhere: --command-prefix (help in the plugin's words) and
    --peers, the nodes asked about -H when the prefix cannot reach it (pacemaker.unreachable)."""
    p.add_argument("--command-prefix", default="", metavar="PREFIX", help=prefix)
    p.add_argument("--peers", type=node_list, default=[], metavar="NODE[,NODE]",
                   help="the cluster's other nodes: when the prefix cannot reach -H, their crm_mon (through the "
                        "prefix) says whether it was fenced")


def node_access(args: argparse.Namespace) -> None:
    """A command prefix needs the node it reaches (UsageError)."""
    if args.command_prefix and not args.hostname:
        raise UsageError("--command-prefix: give the node with -H")


def parse(p: Parser, argv: Sequence[str] | None,
          required: Sequence[str] = ("hostname",)) -> argparse.Namespace:
    """Parse argv; raise UsageError for anything wrong. -h/-V are answered by `command_line()`."""
    args = p.parse_args(argv)
    if args.help or args.version:
        return args
    for name in required:
        if getattr(args, name) is None:
            raise UsageError(f"missing {p.flags[name]}")
    return args


def command_line(p: Parser, argv: Sequence[str] | None, required: Sequence[str] = ("hostname",),
                 settle: Callable[[argparse.Namespace], None] | None = None,
                 usage_hint: bool = True) -> argparse.Namespace | int:
    """The executable's options, or its exit code when argv needs no work: -h and -V print and give
    UNKNOWN, as the C plugins do; a usage error (from argparse, `required` or `settle(args)`, which
    checks options against each other) gives one UNKNOWN line, plus a `Usage:` hint."""
    try:
        args = parse(p, argv, required)
        if settle and not (args.help or args.version):
            settle(args)
    except UsageError as exc:
        hint = f"\nUsage: {p.prog} --help" if usage_hint else ""
        sys.stdout.write(status_line(p.service, UNKNOWN, str(exc)) + hint + "\n")
        return UNKNOWN
    if args.help:
        sys.stdout.write(p.format_help())
        return UNKNOWN
    if args.version:
        sys.stdout.write(f"{p.prog} (kolabmon) {__version__}\n")
        return UNKNOWN
    return args


def nagios_env(args: argparse.Namespace, macros: dict[str, str]) -> None:
    """--nagios-env: set each option in `macros` (dest -> Nagios macro name) from NAGIOS_<MACRO> in the
    environment, as Nagios Core exports it, undecodable bytes replaced. UsageError when such an option is
    also on argv, or when a macro is not in the environment (enable_environment_macros=0)."""
    if not args.nagios_env:
        return
    given = [f"--{name.replace('_', '-')}" for name in macros if getattr(args, name) is not None]
    if given:
        raise UsageError(f"{', '.join(given)} with --nagios-env: free text comes from Nagios's environment, not argv")
    for name, macro in macros.items():
        value = os.environb.get(b"NAGIOS_" + macro.encode())
        if value is None:
            raise UsageError(f"--nagios-env: NAGIOS_{macro} is not in the environment "
                             "(set enable_environment_macros=1 in nagios.cfg)")
        setattr(args, name, value.decode("utf-8", "replace"))


def readable_ca(args: argparse.Namespace) -> None:
    if getattr(args, "ca_file", None) and not os.access(args.ca_file, os.R_OK):
        raise UsageError(f"cannot read CA file {args.ca_file}")


def password(args: argparse.Namespace, environ: dict[str, str] | None = None) -> str:
    """The secret from --password-file or the environment; never from argv."""
    environ = os.environ if environ is None else environ  # type: ignore[assignment]
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as handle:
                secret = handle.readline().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read password file {args.password_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"password file {args.password_file} is not UTF-8 text") from None
        if not secret:
            raise UsageError(f"password file {args.password_file} is empty")
        return secret
    secret = environ.get(PASSWORD_ENV, "")  # type: ignore[union-attr]
    if not secret:
        raise UsageError(f"no password: use --password-file PATH or set {PASSWORD_ENV}")
    return secret
