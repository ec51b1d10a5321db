"""One deadline for the whole check, the margins every part keeps to it, and the one place where
exceptions become states."""

from __future__ import annotations

import re
import time

from kolabmon.runtime.base import CRITICAL, DEFAULT_TIMEOUT, UNKNOWN, PluginError

# --- deadline margins: who gives up how long before --timeout, and why -----------------------
WATCHDOG_GRACE = 0.3  # the watchdog prints its line this long before --timeout, before Icinga kills the plugin
CHILD_KILL_MARGIN = 0.2  # a child process is killed this long before the watchdog fires: it never outlives us
HANG_MARGIN = 0.5  # a hang is reported in the plugin's own words this long before --timeout, ahead of the watchdog
TOOL_TIMEOUT_MARGIN = 0.5  # a tool's own timeout (crmadmin -t) ends this long before we kill it: it says why
RELAY_MARGIN = 1.0  # a check run on its node through a command prefix ends this long before we stop: ssh's start-up
GOODBYE_MARGIN = 0.5  # LOGOUT/QUIT stop this long before --timeout: the result is known, only the goodbye is left
GOODBYE_LIMIT = 1.0  # and they take at most this long: a slow goodbye is not the service's problem
REPORT_SHARE = 0.1  # polling stops this share of --timeout early (HANG_MARGIN to half of it), to report in time
SHORTEST_WAIT = 0.1  # the least any wait gets, so that a step late in the budget still looks once
REPROBE_WINDOWS = 2  # after a move the takeover re-probes the new node for this many probe timeouts
REPROBE_MIN = 1.0  # each such re-probe gets at least this long, even at the end of that window


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
        return max(self.remaining() - WATCHDOG_GRACE - CHILD_KILL_MARGIN, SHORTEST_WAIT)

    def for_waiting(self) -> float:
        """Seconds to wait on something that may hang before reporting the hang in our own words."""
        return max(self.remaining() - HANG_MARGIN, SHORTEST_WAIT)

    def for_goodbye(self) -> float:
        """Seconds for LOGOUT/QUIT, clear of the watchdog (may be <= 0: then skip the goodbye)."""
        return min(self.remaining() - GOODBYE_MARGIN, GOODBYE_LIMIT)

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


# What a failed check's line says about the service, for whoever must decide what to do about it
# (the takeover): the words come from classify() above, the watchdog and the storage probe's hang.
HUNG, GONE, WRONG = "hung", "gone", "wrong"
HUNG_WORDS = ("no answer within", " hung (while ")
GONE_WORDS = ("connection refused", "connection reset by the server")


def failure_kind(line: str) -> str:
    """HUNG: no answer at all (its stop will likely hang too); GONE: refused or reset (the process is
    not there: the cluster manager restarts it in place); WRONG: it answered, wrongly."""
    if any(words in line for words in HUNG_WORDS):
        return HUNG
    if any(words in line for words in GONE_WORDS):
        return GONE
    return WRONG


def safe_classify(exc: BaseException, clock: Clock, timeout_state: int = CRITICAL) -> tuple[int, str]:
    """`classify`, and should an odd exception break it, still one UNKNOWN line."""
    try:
        return classify(exc, clock, timeout_state)
    except Exception:
        return UNKNOWN, f"internal error: {type(exc).__name__} (while {clock.step})"
