"""clients.errors: the socket error a library wrapped, found once for every client."""

from __future__ import annotations

import smtplib

from kolabmon.clients import errors


def wrapped(inner: BaseException, outer: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as exc:
        return exc


def test_finds_the_socket_error_under_a_library_error_that_is_an_oserror_itself() -> None:
    reset = ConnectionResetError(104, "Connection reset by peer")
    exc = wrapped(reset, smtplib.SMTPServerDisconnected("Connection unexpectedly closed"))
    assert errors.underlying(exc, outside=("smtplib",)) is reset
    assert errors.underlying(exc) is exc  # without `outside`, smtplib's own OSError counts


def test_looks_into_reasons_and_args_breadth_first() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")

    class Wrapper(Exception):
        def __init__(self, reason: BaseException) -> None:
            super().__init__("wrapped")
            self.reason = reason

    assert errors.underlying(Wrapper(refused)) is refused
    assert errors.underlying(ValueError("no socket here", refused)) is refused
    assert errors.underlying(ValueError("nothing underneath")) is None


def test_a_cycle_of_contexts_ends() -> None:
    first, second = ValueError("a"), ValueError("b")
    first.__context__, second.__context__ = second, first
    assert errors.underlying(first) is None
    assert errors.made_by(smtplib.SMTPException()) is False
    assert errors.made_by(smtplib.SMTPException(), "smtplib") is True
