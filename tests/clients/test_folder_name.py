"""kolabmon.clients.imap.folder_name where a real server cannot be made to fail: NAMESPACE refused or
unreadable, LIST without a separator. (Dovecot's and Cyrus's real answers: tests/probes/test_imap.py.)"""

from __future__ import annotations

import imaplib

import pytest

from kolabmon.clients.imap import folder_name


class Refusing:
    """A logged-in client whose server advertises NAMESPACE but fails it with `error`."""

    def __init__(self, error: Exception, listed: list[tuple[object, object, str]] | None = None) -> None:
        self.error, self.listed = error, listed or []

    def has_capability(self, name: str) -> bool:
        return name == "NAMESPACE"

    def namespace(self) -> object:
        raise self.error

    def list_folders(self, directory: str, pattern: str) -> list[tuple[object, object, str]]:
        return self.listed


@pytest.mark.parametrize("error", [imaplib.IMAP4.error("NAMESPACE failed: BAD"), ValueError("extension data")])
def test_a_refused_or_unreadable_namespace_keeps_the_name_as_written(error: Exception) -> None:
    assert folder_name(Refusing(error), "Archive/2024") == "Archive/2024"


def test_inbox_and_stray_slashes_cost_no_round_trip() -> None:
    client = Refusing(AssertionError("no NAMESPACE for INBOX"))
    assert folder_name(client, "/INBOX/") == "INBOX"
    assert folder_name(Refusing(imaplib.IMAP4.error("no")), "/Archive/") == "Archive"


class WithoutNamespace(Refusing):
    def has_capability(self, name: str) -> bool:
        return False


def test_without_namespace_the_separator_comes_from_list() -> None:
    assert folder_name(WithoutNamespace(AssertionError(), [((), b".", "")]), "Archive/2024") == "Archive.2024"
    assert folder_name(WithoutNamespace(AssertionError(), [((), None, "")]), "Archive/2024") == "Archive/2024"
