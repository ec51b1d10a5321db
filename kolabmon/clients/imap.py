"""IMAP client pieces the IMAP probe and the round trip share: the server's error text, a refused
login in the admin's words, the server's name for a folder, and a bounded goodbye (LOGOUT within
the goodbye margin, then close).
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


def login_failure(user: str, exc: Exception, seconds: float) -> str:
    """A refused LOGIN as the server said it, and how long it took to say it.

    Without an RFC 5530 response code the reply cannot tell a wrong password from a failing user
    directory: Cyrus behind saslauthd answers both alike, in its usual failure pause (3 s by default).
    """
    said = text(exc)
    line = f"login failed for {user} after {seconds:.1f} s: {said}"
    if not said.startswith("["):
        line += " (no response code: a wrong password and a failing user directory may look alike)"
    return line


def folder_name(client: object, folder: str) -> str:
    """The server's own name for `folder`, written with "/" between levels and relative to the user's
    own folders: `Archive/2024` is `Archive.2024` on Dovecot and `INBOX/Archive/2024` on Cyrus.

    The separator and the personal prefix come from NAMESPACE (else LIST "" ""). A name inside a
    namespace (`INBOX/...`, Cyrus's `user/...`) is kept; so is a name that exists only as written
    (a shared folder at the top level, beside Cyrus's personal `INBOX/`).
    """
    import imaplib

    folder = folder.strip("/")
    if folder.upper() == "INBOX":
        return folder
    try:
        return _server_name(client, folder)
    except (imaplib.IMAP4.error, ValueError):  # NAMESPACE or LIST refused or unreadable: as written
        return folder


def _server_name(client: object, folder: str) -> str:
    own, prefixes, separator = "", [], None
    if client.has_capability("NAMESPACE"):  # type: ignore[attr-defined]
        spaces = client.namespace()  # type: ignore[attr-defined]
        pairs = [pair for space in spaces for pair in space or ()]
        prefixes = [prefix for prefix, _ in pairs if prefix]
        if spaces.personal:
            own, separator = spaces.personal[0]
        separator = separator or next((sep for _, sep in pairs if sep), None)
    if separator is None:
        listed = client.list_folders("", "")  # type: ignore[attr-defined]
        separator = _decoded(listed[0][1]) if listed and listed[0][1] else None
    name = folder.replace("/", separator) if separator and separator != "/" else folder
    if not own or any(name.casefold().startswith(prefix.casefold()) for prefix in prefixes):
        return name
    mine = own + name
    if "*" in name or "%" in name or client.list_folders("", mine):  # type: ignore[attr-defined]
        return mine
    return name if client.list_folders("", name) else mine  # type: ignore[attr-defined]


def _decoded(separator: bytes | str) -> str:
    return separator.decode() if isinstance(separator, bytes) else separator
