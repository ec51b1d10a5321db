"""Fake kolabmon-watch executables for the faults the real watcher cannot be made to show on demand:
one that dies as soon as it runs, one that runs but never writes its status file. Both pass `check`
and write to stdout and stderr, which must not reach the resource agent's pipes."""

from __future__ import annotations

from pathlib import Path

SCRIPT = """#!/bin/sh
for arg; do [ "$arg" = check ] && exit 0; done
echo "fake kolabmon-watch running"; echo "fake kolabmon-watch: {what}" >&2
{body}
"""


def _write(directory: Path, name: str, what: str, body: str) -> Path:
    path = directory / name
    path.write_text(SCRIPT.format(what=what, body=body))
    path.chmod(0o755)
    return path


def dies_at_start(directory: Path, code: int) -> Path:
    return _write(directory, "kolabmon-watch-dies", f"exiting {code}", f"exit {code}")


def never_writes_status(directory: Path) -> Path:
    # short sleeps in this shell: the shell keeps the arguments the agent knows it by, and TERM ends it at once
    return _write(directory, "kolabmon-watch-silent", "not writing", "while :; do sleep 0.2; done")
