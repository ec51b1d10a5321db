"""The shared runtime: ranges, options, secrets, exception mapping, deadline, output grammar."""

from __future__ import annotations

import argparse
import re
import socket
import ssl
import time

import nagiosplugin
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kolabmon import runtime
from tests.helpers import assert_plugin_output


@given(st.text(alphabet="0123456789.:~@-+ab", max_size=8))
def test_range_validation_agrees_with_nagiosplugin(text: str) -> None:
    try:
        nagiosplugin.Range(text)
        nagiosplugin_accepts = text != ""
    except ValueError:
        nagiosplugin_accepts = False
    try:
        runtime.nagios_range(text)
        ours = True
    except argparse.ArgumentTypeError:
        ours = False
    if ours:  # whatever we accept, nagiosplugin must be able to evaluate
        assert nagiosplugin_accepts, text
    if nagiosplugin_accepts and not ours:  # we are only stricter about odd numerals like "1.2.3"
        assert re.search(r"\d\.\d*\.|[-+]{2}|^@?\.?$|[-+]$|:[-+]?$", text) or text.count(":") > 1, text


@pytest.mark.parametrize("text", ["10", "10:", "~:10", "@10:20", "0.5", "1.5:3", "-5:5", ":3"])
def test_valid_ranges(text: str) -> None:
    assert runtime.nagios_range(text) == text
    nagiosplugin.Range(text)


@pytest.mark.parametrize("text", ["abc", "", "20:10", "1:2:3", "@", "1,2"])
def test_invalid_ranges(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        runtime.nagios_range(text)


def test_password_from_file_and_env(tmp_path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    args = argparse.Namespace(password_file=str(secret))
    assert runtime.password(args, {}) == "s3cret"
    args = argparse.Namespace(password_file=None)
    assert runtime.password(args, {"KOLABMON_PASSWORD": "fromenv"}) == "fromenv"
    with pytest.raises(runtime.UsageError, match="no password"):
        runtime.password(args, {})


def test_password_file_errors(tmp_path) -> None:
    missing = argparse.Namespace(password_file=str(tmp_path / "nope"))
    with pytest.raises(runtime.UsageError, match="cannot read password file .*No such file"):
        runtime.password(missing, {})
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(runtime.UsageError, match="is empty"):
        runtime.password(argparse.Namespace(password_file=str(empty)), {})


@pytest.mark.parametrize(("exc", "state", "words"), [
    (ConnectionRefusedError(111, "Connection refused"), runtime.CRITICAL, "connection refused"),
    (ConnectionResetError(104, "reset"), runtime.CRITICAL, "connection reset"),
    (TimeoutError("timed out"), runtime.WARNING, "no answer within 5 s"),
    (TimeoutError(), runtime.WARNING, "no answer within 5 s"),
    (ssl.SSLError(1, "[SSL] bad"), runtime.CRITICAL, "TLS failed"),
    (socket.gaierror(-2, "Name or service not known"), runtime.UNKNOWN, "cannot resolve"),
    (runtime.UsageError("bad flag"), runtime.UNKNOWN, "bad flag"),
    (KeyError("boom"), runtime.UNKNOWN, "internal error: KeyError"),
])
def test_every_exception_maps_to_a_state(exc: BaseException, state: int, words: str) -> None:
    clock = runtime.Clock(timeout=5)
    clock.enter("logging in")
    got_state, line = runtime.classify(exc, clock, timeout_state=runtime.WARNING)
    assert got_state == state
    assert words in line
    assert "\n" not in line


def test_clean_strips_pipes_newlines_and_secrets() -> None:
    assert runtime.clean("a|b\nc pw=hunter2", ["hunter2"]) == "a/b c pw=****"


def test_clock_steps_and_deadline() -> None:
    clock = runtime.Clock(timeout=0.05)
    assert 0 < clock.enter("connecting") <= 0.05
    time.sleep(0.06)
    with pytest.raises(TimeoutError, match="while connecting"):
        clock.remaining()


class _Hanging:
    name = "FAKE"

    def probe(self):
        raise TimeoutError("timed out")


def test_run_in_process_returns_outcome_without_exiting() -> None:
    clock = runtime.Clock(timeout=3)
    check = runtime.check(_Hanging(), [runtime.plain("time")], lambda results: "never")
    outcome = runtime.run("FAKE", check, clock, timeout_state=runtime.UNKNOWN)
    assert outcome.state == runtime.UNKNOWN
    assert outcome.line == "FAKE UNKNOWN - no answer within 3 s (while starting)"


class _Fast:
    name = "FAKE"

    def probe(self):
        yield nagiosplugin.Metric("time", 2.5, "s", min=0)


def test_thresholds_and_perfdata_grammar() -> None:
    check = runtime.check(_Fast(), [runtime.threshold("time", "1", "3")], lambda results: "fast")
    outcome = runtime.run("FAKE", check, runtime.Clock())
    assert outcome.state == runtime.WARNING
    match = assert_plugin_output(outcome.text, outcome.state)
    assert match["perf"] == "time=2.5s;1;3;0"
    assert "(time 2.5s above warning 1)" in outcome.line
