"""IMAP client pieces the IMAP probe and the round trip share: the server's error text, and a
bounded goodbye (LOGOUT within the goodbye margin, then close).
"""

from __future__ import annotations

TYPE_CHECKING = False  # no typing import at start-up (see runtime)
if TYPE_CHECKING:
    from kolabmon import runtime


def text(exc: Exception) -> str:
    """An imaplib/imapclient error as the server said it (no b'...' wrapping), at most 200 chars."""
    said = str(exc.args[0] if exc.args else exc)
    if said.startswith(("b'", 'b"')):
        said = said[2:-1]
    return said[:200]


def logout(client: object, clock: runtime.Clock, where: str = "") -> None:
    """LOGOUT politely, briefly: the result is known, only the goodbye is left (clear of the watchdog)."""
    try:
        clock.enter(f"logging out{where}")
        client.socket().settimeout(clock.for_goodbye())  # type: ignore[attr-defined]
        client.logout()  # type: ignore[attr-defined]
    except Exception:  # a slow or rude BYE is not the user's problem
        pass


def close(client: object) -> None:
    try:
        client.shutdown()  # type: ignore[attr-defined]
    except Exception:  # already closed by logout
        pass
