"""The shared plugin runtime: standard options, secrets, deadline, exception → state, output.

Every probe module builds a `nagiosplugin.Check` and hands it to `run()` (in-process: returns
an `Outcome`, never exits) or to `main()` (the executable: parse argv, arm the watchdog, print
one line, return the exit code). Only argparse and the standard library are imported here at
module level, so `--help` and usage errors cost no protocol library (bench/bench_checks.py).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Sequence

TYPE_CHECKING = False  # typing, dataclasses and threading cost start-up time that --help must not pay
if TYPE_CHECKING:
    from typing import NoReturn

    import nagiosplugin

__version__ = "0.1.0"

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
PASSWORD_ENV = "KOLABMON_PASSWORD"
DEFAULT_TIMEOUT = 10.0
WATCHDOG_GRACE = 0.3  # the watchdog answers this long before --timeout


class PluginError(Exception):
    """A failure whose state is known, with one line for the admin."""

    def __init__(self, message: str, state: int = CRITICAL) -> None:
        super().__init__(message)
        self.state = state


class UsageError(PluginError):
    """Bad flags or bad configuration: always UNKNOWN."""

    def __init__(self, message: str) -> None:
        super().__init__(message, UNKNOWN)


# --- options -----------------------------------------------------------------------------

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


def days(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"invalid number of days {text!r}")
    return int(text)


class Parser(argparse.ArgumentParser):
    """argparse that turns every usage error into one `SERVICE UNKNOWN - ...` line."""

    def __init__(self, service: str, description: str) -> None:
        super().__init__(prog=f"check_kolab_{service.lower()}", description=description, add_help=False)
        self.service = service

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parser(service: str, description: str, default_port: int | None = None) -> Parser:
    """The standard Monitoring Plugins options every probe has."""
    p = Parser(service, description)
    p.add_argument("-h", "--help", action="store_true", help="show this help and exit (state UNKNOWN)")
    p.add_argument("-V", "--version", action="store_true", help="show the version and exit (state UNKNOWN)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more output, repeatable (-v -v -v)")
    p.add_argument("-H", "--hostname", help="host name or address of the server")
    port_help = f"TCP port (default {default_port})" if default_port else "TCP port"
    p.add_argument("-p", "--port", type=port_number, help=port_help)
    p.add_argument("-t", "--timeout", type=positive_seconds, default=DEFAULT_TIMEOUT,
                   help="seconds before the check gives up (default 10)")
    p.add_argument("--timeout-state", type=state_name, default=CRITICAL,
                   help="state to report when --timeout is hit (default CRITICAL)")
    p.add_argument("-w", "--warning", type=nagios_range, metavar="RANGE",
                   help="warning range for the response time in seconds")
    p.add_argument("-c", "--critical", type=nagios_range, metavar="RANGE",
                   help="critical range for the response time in seconds")
    return p


def add_auth(p: Parser, user_help: str = "user to log in as") -> None:
    p.add_argument("-u", "--user", help=user_help)
    p.add_argument("--password-file", metavar="PATH",
                   help=f"file holding the password (else the environment variable {PASSWORD_ENV})")


def add_tls(p: Parser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--tls", action="store_true", help="implicit TLS from the first byte")
    mode.add_argument("--starttls", action="store_true", help="upgrade the plain connection with STARTTLS")
    p.add_argument("--ca-file", metavar="PATH", help="trust the CA certificates in this PEM file")
    p.add_argument("--insecure", action="store_true",
                   help="do not verify the server certificate (explicit opt-out)")
    p.add_argument("--cert-warning", type=days, default=30, metavar="DAYS",
                   help="WARNING when the certificate expires within DAYS (default 30)")
    p.add_argument("--cert-critical", type=days, default=7, metavar="DAYS",
                   help="CRITICAL when the certificate expires within DAYS (default 7)")


def parse(p: Parser, argv: Sequence[str] | None,
          required: Sequence[str] = ("hostname",)) -> argparse.Namespace:
    """Parse argv; raise UsageError for anything wrong. -h/-V are handled by `main()`."""
    args = p.parse_args(argv)
    if args.help or args.version:
        return args
    for name in required:
        if getattr(args, name) is None:
            flag = next(a.option_strings for a in p._actions if a.dest == name)
            raise UsageError(f"missing {'/'.join(flag)}")
    if getattr(args, "ca_file", None) and not os.access(args.ca_file, os.R_OK):
        raise UsageError(f"cannot read CA file {args.ca_file}")
    return args


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


# --- the clock: one deadline for the whole check ------------------------------------------


class Clock:
    """The check's deadline, and the step it is in (named in timeout messages)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self.start = time.monotonic()
        self.step = "starting"
        self.steps: list[tuple[str, float]] = []

    def remaining(self) -> float:
        """Seconds left; raises the timeout when none are."""
        left = self.timeout - (time.monotonic() - self.start)
        if left <= 0:
            raise TimeoutError(f"deadline reached while {self.step}")
        return left

    def for_child(self) -> float:
        """Seconds a child process may run: it must be killed before the watchdog fires and exits,
        or it would outlive the plugin."""
        return max(self.remaining() - WATCHDOG_GRACE - 0.2, 0.1)

    def enter(self, step: str) -> float:
        """Mark the start of a step; returns the seconds left for it."""
        self.steps.append((step, self.elapsed()))
        self.step = step
        return self.remaining()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def since(self, step: str) -> float:
        """Seconds since `step` was entered: response times start at the connect, not at import."""
        began = next(at for name, at in self.steps if name == step)
        return self.elapsed() - began


# --- exception → state: the one place ------------------------------------------------------


def classify(exc: BaseException, clock: Clock, timeout_state: int = CRITICAL) -> tuple[int, str]:
    """Map any exception to a state and one line in the admin's words."""
    import socket
    import ssl

    step = clock.step
    if isinstance(exc, PluginError):
        return exc.state, str(exc)
    if isinstance(exc, TimeoutError | socket.timeout):
        return timeout_state, f"no answer within {clock.timeout:g} s (while {step})"
    if isinstance(exc, ConnectionRefusedError):
        return CRITICAL, f"connection refused (while {step})"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError | EOFError):
        return CRITICAL, f"connection reset by the server (while {step})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        found = re.search(r"certificate verify failed: ([^(')]+)", str(exc))  # libraries that re-wrap it
        reason = getattr(exc, "verify_message", None) or (found[1].strip() if found else str(exc))
        return CRITICAL, f"TLS certificate not trusted: {reason} (while {step})"
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or str(exc)
        return CRITICAL, f"TLS failed: {reason} (while {step})"
    if isinstance(exc, socket.gaierror):
        return UNKNOWN, f"cannot resolve host name: {exc.strerror}"
    if isinstance(exc, OSError):
        return CRITICAL, f"network error: {exc.strerror or exc} (while {step})"
    return UNKNOWN, f"internal error: {type(exc).__name__}: {exc} (while {step})"


def safe_classify(exc: BaseException, clock: Clock, timeout_state: int = CRITICAL) -> tuple[int, str]:
    """`classify`, and should an odd exception break it, still one UNKNOWN line."""
    try:
        return classify(exc, clock, timeout_state)
    except Exception:
        return UNKNOWN, f"internal error: {type(exc).__name__} (while {clock.step})"


# --- evaluate and present: shared pieces built on nagiosplugin (imported only here) ---------


def check(resource: object, contexts: Sequence[object],
          present: Callable[[nagiosplugin.Results], str]) -> nagiosplugin.Check:
    """Wrap a probe's resource (anything with `name` and `probe()`) into a nagiosplugin Check.

    Probe modules keep nagiosplugin out of their import path (so `--help` stays cheap); the
    classes nagiosplugin wants are made here, once the check really runs.
    """
    import nagiosplugin

    class Probe(nagiosplugin.Resource):
        name = resource.name  # type: ignore[attr-defined]

        def probe(self) -> object:
            return resource.probe()  # type: ignore[attr-defined]

    class Line(nagiosplugin.Summary):
        def ok(self, results: nagiosplugin.Results) -> str:
            return present(results)

        def problem(self, results: nagiosplugin.Results) -> str:
            alerts = sorted((r for r in results if r.state != nagiosplugin.Ok), key=lambda r: -int(r.state))
            reasons = ", ".join(explain(r) for r in alerts)
            return f"{present(results)} ({reasons})" if reasons else present(results)

    return nagiosplugin.Check(Probe(), *contexts, Line())


def explain(result: nagiosplugin.Result) -> str:
    """`time 2.5s above warning 2` rather than nagiosplugin's `outside range`."""
    metric = result.metric
    if metric is None or result.hint is None or not isinstance(metric.value, int | float):
        return result.hint or str(result.state)
    level = "critical" if int(result.state) == CRITICAL else "warning"
    limit = result.hint.rsplit("range ", 1)[-1].rstrip(")")
    value = f"{metric.name} {metric.value:g}{metric.uom or ''}"
    bounds = re.fullmatch(r"(?:0?:)?([^:@~]+)|([^:@~]+):", limit)
    if bounds and bounds[1]:
        return f"{value} above {level} {bounds[1]}"
    if bounds and bounds[2]:
        return f"{value} below {level} {bounds[2]}"
    return f"{value} outside {level} range {limit}"


def threshold(name: str, warning: str | None, critical: str | None, fmt: str = "{value}") -> object:
    """A ScalarContext on one metric."""
    import nagiosplugin

    return nagiosplugin.ScalarContext(name, warning, critical, fmt_metric=fmt)


def days_left(warning_days: int, critical_days: int) -> object:
    """Certificate days: alert when fewer than N days are left (`30:`)."""
    return threshold("cert_days", f"{warning_days}:", f"{critical_days}:")


def findings() -> object:
    """A context for yes/no findings: the metric's name is the admin's text, its value the state."""
    import nagiosplugin

    states = (nagiosplugin.Ok, nagiosplugin.Warn, nagiosplugin.Critical, nagiosplugin.Unknown)

    class Findings(nagiosplugin.Context):
        def evaluate(self, metric: nagiosplugin.Metric, resource: object) -> nagiosplugin.Result:
            return nagiosplugin.Result(states[metric.value], metric.name)

        def performance(self, metric: nagiosplugin.Metric, resource: object) -> None:
            return None

    return Findings("findings")


def plain(name: str) -> object:
    """A context that only records perfdata (no thresholds)."""
    return threshold(name, None, None)


# --- output --------------------------------------------------------------------------------


class Outcome:
    """What a check run produced: the exit code and the text Icinga reads."""

    def __init__(self, state: int, text: str) -> None:
        self.state, self.text = state, text

    @property
    def line(self) -> str:
        return self.text.split("\n", 1)[0]


def clean(text: str, secrets: Sequence[str] = ()) -> str:
    """One line, no `|` (it starts perfdata), no secret."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "****")
    return " ".join(text.replace("|", "/").split())


def status_line(service: str, state: int, text: str, secrets: Sequence[str] = ()) -> str:
    return f"{service} {STATE_NAMES[state]} - {clean(text, secrets)}"


def run(service: str, check: nagiosplugin.Check, clock: Clock, *, timeout_state: int = CRITICAL,
        verbose: int = 0, secrets: Sequence[str] = ()) -> Outcome:
    """Run a built check in-process: never raises, never exits, never prints."""
    try:
        check()
        state = check.exitcode
        text = status_line(service, state, check.summary_str, secrets)
        perfdata = " ".join(check.perfdata)
        if perfdata:
            text += " | " + perfdata
    except Exception as exc:  # every failure becomes a state here, and only here
        state, message = safe_classify(exc, clock, timeout_state)
        text = status_line(service, state, message, secrets)
    if verbose:
        steps = ", ".join(f"{name} at {at:.3f} s" for name, at in clock.steps)
        text += "\n" + clean(f"steps: {steps}; total {clock.elapsed():.3f} s", secrets)
    return Outcome(state, text)


class Watchdog:
    """Hard deadline for the executable: prints the timeout line and exits, whatever hangs."""

    def __init__(self, service: str, clock: Clock, state: int, grace: float = WATCHDOG_GRACE) -> None:
        import threading

        self.lock = threading.Lock()
        self.done = False
        self.service, self.clock, self.state = service, clock, state
        self.timer = threading.Timer(max(clock.timeout - grace, 0.05), self.fire)
        self.timer.daemon = True

    def fire(self) -> None:
        line = status_line(self.service, self.state,
                           f"no answer within {self.clock.timeout:g} s (while {self.clock.step})")
        if self.emit(line + "\n"):
            os._exit(self.state)

    def emit(self, text: str) -> bool:
        """Write once (either the result or the timeout line, never both)."""
        with self.lock:
            if self.done:
                return False
            self.done = True
            data = text.encode("utf-8", "replace")
            while data:
                data = data[os.write(1, data):]
            return True


def main(service: str, build: Callable[[argparse.Namespace, Clock], nagiosplugin.Check],
         make_parser: Callable[[], Parser], argv: Sequence[str] | None = None,
         required: Sequence[str] = ("hostname",),
         logs_in: Callable[[argparse.Namespace], bool] = lambda args: False,
         validate: Callable[[argparse.Namespace], None] | None = None) -> int:
    """The executable: parse, arm the watchdog, run, print one line, return the exit code.

    `validate(args)` checks options against each other (UsageError → one UNKNOWN line, before any
    library is imported). When `logs_in(args)` is true the password is looked up once, kept in
    `args.password` for `build`, and redacted from everything printed.
    """
    clock = Clock()
    p = make_parser()
    try:
        args = parse(p, argv, required)
        if not (args.help or args.version):
            if validate:
                validate(args)
            args.password = password(args) if logs_in(args) else None
    except UsageError as exc:
        sys.stdout.write(status_line(service, UNKNOWN, str(exc)) + f"\nUsage: {p.prog} --help\n")
        return UNKNOWN
    if args.help:
        sys.stdout.write(p.format_help())
        return UNKNOWN
    if args.version:
        sys.stdout.write(f"{p.prog} (kolabmon) {__version__}\n")
        return UNKNOWN
    clock.timeout = args.timeout
    watchdog = Watchdog(service, clock, args.timeout_state)
    watchdog.timer.start()
    secrets = [args.password] if args.password else []
    try:
        check = build(args, clock)
    except Exception as exc:
        state, message = safe_classify(exc, clock, args.timeout_state)
        outcome = Outcome(state, status_line(service, state, message, secrets))
    else:
        outcome = run(service, check, clock, timeout_state=args.timeout_state, verbose=args.verbose,
                      secrets=secrets)
    watchdog.timer.cancel()
    if not watchdog.emit(outcome.text + "\n"):
        time.sleep(5)  # the watchdog is printing and exiting; do not race it
    return outcome.state
