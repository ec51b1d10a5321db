"""The plugin grammar: the four states, the errors that carry one, and the one status line."""

from __future__ import annotations

from collections.abc import Sequence

__version__ = "0.1.0"

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
PASSWORD_ENV = "KOLABMON_PASSWORD"
DEFAULT_TIMEOUT = 10.0


class PluginError(Exception):
    """A failure whose state is known, with one line for the admin."""

    def __init__(self, message: str, state: int = CRITICAL) -> None:
        super().__init__(message)
        self.state = state


class UsageError(PluginError):
    """Bad flags or bad configuration: always UNKNOWN."""

    def __init__(self, message: str) -> None:
        super().__init__(message, UNKNOWN)


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


