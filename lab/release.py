"""What differs between the Debian releases the project supports, in one place, chosen by the
machine's /etc/debian_version. Everything else in lab/, tests/ and bench/ asks ``current()``.

Stdlib only and runnable without the venv: ``python3 lab/release.py [--other]`` prints
"NUMBER CODENAME" of this machine's release (or of the other supported one, for
lab/other-release.sh).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

DEBIAN_VERSION = Path("/etc/debian_version")


class Release(NamedTuple):
    number: int
    codename: str
    # Dovecot 2.4 (13) rejects the 2.3 configuration (12) from its first line on
    dovecot_24_config: bool
    # `icinga2 daemon -C` writes icinga2.debug only when asked (2.14, on 13); 2.13 has no such option
    icinga_validate_args: tuple[str, ...]
    # Cyrus 3.10 (13) offers STARTTLS on the imap port only with `imap_allowstarttls: on`; 3.6 (12)
    # always offers it and lints the option as unknown
    cyrus_allowstarttls: bool
    # the versions the project was verified with on this release (README, demo header)
    verified: str


RELEASES = {
    12: Release(12, "bookworm", dovecot_24_config=False, icinga_validate_args=(),
                cyrus_allowstarttls=False,
                verified="Cyrus IMAP 3.6.1, Dovecot 2.3.19, Pacemaker 2.1.5, Icinga 2.13.6, Python 3.11"),
    13: Release(13, "trixie", dovecot_24_config=True, icinga_validate_args=("--dump-objects",),
                cyrus_allowstarttls=True,
                verified="Cyrus IMAP 3.10.2, Dovecot 2.4.1, Pacemaker 3.0.0, Icinga 2.14.6, Python 3.13"),
}


class UnsupportedRelease(RuntimeError):
    pass


def parse(text: str) -> Release:
    """The Release for the text of /etc/debian_version ("12.11", "13.2", "trixie/sid")."""
    word = text.strip()
    major = word.split(".")[0]
    for release in RELEASES.values():
        if major == str(release.number) or word.startswith(release.codename + "/"):
            return release
    raise UnsupportedRelease(f"Debian {word or '(empty /etc/debian_version)'} is not a supported release "
                             f"(supported: {', '.join(str(n) for n in RELEASES)})")


def current() -> Release:
    """This machine's release."""
    try:
        return parse(DEBIAN_VERSION.read_text())
    except OSError as exc:
        raise UnsupportedRelease(f"not a Debian machine ({DEBIAN_VERSION}: {exc.strerror})") from None


def other() -> Release:
    """The supported release this machine does not run (the one lab/other-release.sh proves)."""
    mine = current()
    return next(r for r in RELEASES.values() if r != mine)


def describe() -> str:
    """One line for logs and the demo: the release and its point version."""
    return f"Debian {DEBIAN_VERSION.read_text().strip()} ({current().codename})"


if __name__ == "__main__":
    try:
        chosen = other() if sys.argv[1:] == ["--other"] else current()
    except UnsupportedRelease as exc:
        print(f"release: {exc}", file=sys.stderr)
        sys.exit(2)
    print(chosen.number, chosen.codename)
