"""Running a built check: in-process (`run`) or as the executable (`Plugin.main`: parse, watchdog, one line)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence

from kolabmon.runtime.base import CRITICAL, Outcome, UsageError, clean, status_line
from kolabmon.runtime.clock import WATCHDOG_GRACE, Clock, safe_classify
from kolabmon.runtime.options import Parser, command_line, parse, password, readable_ca

TYPE_CHECKING = False  # see kolabmon.runtime
if TYPE_CHECKING:
    import nagiosplugin


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


def execute(service: str, clock: Clock, timeout_state: int, secrets: Sequence[str],
            work: Callable[[], Outcome]) -> int:
    """Arm the watchdog, do the work, print its one line (or the watchdog's), return the state."""
    watchdog = Watchdog(service, clock, timeout_state)
    watchdog.timer.start()
    try:
        outcome = work()
    except Exception as exc:
        state, message = safe_classify(exc, clock, timeout_state)
        outcome = Outcome(state, status_line(service, state, message, secrets))
    watchdog.timer.cancel()
    if not watchdog.emit(outcome.text + "\n"):
        time.sleep(5)  # the watchdog is printing and exiting; do not race it
    return outcome.state


class Plugin:
    """A probe as its callers see it: the executable (`main`) and a resident process that runs it
    in-process, again and again (`prepare` once, then `run`: no interpreter start per check).

    `validate(args)` checks options against each other (UsageError → one UNKNOWN line, before any
    library is imported). When `logs_in(args)` is true the password is looked up once, kept in
    `args.password` for `build`, and redacted from everything printed. `relay(args, argv, clock)`
    may run the executable elsewhere instead (the storage check on its node, through
    --command-prefix) and return that run's Outcome; None runs the check here. In-process runs
    always run here.
    """

    def __init__(self, service: str, build: Callable[[argparse.Namespace, Clock], nagiosplugin.Check],
                 make_parser: Callable[[], Parser], *, required: Sequence[str] = ("hostname",),
                 logs_in: Callable[[argparse.Namespace], bool] = lambda args: False,
                 validate: Callable[[argparse.Namespace], None] | None = None,
                 relay: Callable[[argparse.Namespace, Sequence[str], Clock], Outcome | None] | None = None) -> None:
        self.service, self.build, self.make_parser = service, build, make_parser
        self.required, self.logs_in, self.validate, self.relay = required, logs_in, validate, relay

    def settle(self, args: argparse.Namespace) -> None:
        readable_ca(args)
        if self.validate:
            self.validate(args)
        args.password = password(args) if self.logs_in(args) else None

    def main(self, argv: Sequence[str] | None = None) -> int:
        clock = Clock()
        argv = sys.argv[1:] if argv is None else argv
        args = command_line(self.make_parser(), argv, self.required, self.settle)
        if isinstance(args, int):
            return args
        clock.timeout = args.timeout
        secrets = [args.password] if args.password else []

        def work() -> Outcome:
            relayed = self.relay(args, argv, clock) if self.relay else None
            if relayed is not None:
                return relayed
            return run(self.service, self.build(args, clock), clock, timeout_state=args.timeout_state,
                       verbose=args.verbose, secrets=secrets)
        return execute(self.service, clock, args.timeout_state, secrets, work)

    def prepare(self, argv: Sequence[str]) -> argparse.Namespace:
        """The options for in-process runs, checked once; UsageError in one line."""
        args = parse(self.make_parser(), argv, self.required)
        if args.help or args.version:
            raise UsageError("--help/--version is not a check")
        self.settle(args)
        return args

    def run(self, args: argparse.Namespace, timeout: float) -> Outcome:
        """One check in-process within `timeout` seconds (no watchdog: the caller keeps running)."""
        import copy

        clock = Clock(timeout)
        args = copy.copy(args)  # build() may fill in defaults (the port): each run starts from the same options
        args.timeout = timeout
        secrets = [args.password] if args.password else []
        try:
            check = self.build(args, clock)
        except Exception as exc:
            state, message = safe_classify(exc, clock, args.timeout_state)
            return Outcome(state, status_line(self.service, state, message, secrets))
        return run(self.service, check, clock, timeout_state=args.timeout_state, secrets=secrets)
