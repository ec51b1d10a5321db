"""lab/release.py: the release differences are chosen by /etc/debian_version, and only for 12 and 13."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab import release

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("text", "number"), [("12.11\n", 12), ("13.8\n", 13), ("bookworm/sid\n", 12),
                                              ("trixie/sid\n", 13)])
def test_a_supported_release_is_chosen_by_its_number_or_codename(text: str, number: int) -> None:
    assert release.parse(text).number == number


@pytest.mark.parametrize("text", ["14.1\n", "forky/sid\n", "", "11.9\n"])
def test_any_other_release_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(release.UnsupportedRelease) as refused:
        release.parse(text)
    assert "is not a supported release (supported: 12, 13)" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_the_other_release_is_the_one_this_machine_does_not_run() -> None:
    mine = subprocess.run([sys.executable, str(ROOT / "lab" / "release.py")], capture_output=True, text=True)
    other = subprocess.run([sys.executable, str(ROOT / "lab" / "release.py"), "--other"], capture_output=True,
                           text=True)
    assert mine.returncode == other.returncode == 0, mine.stderr + other.stderr
    assert {mine.stdout.split()[0], other.stdout.split()[0]} == {"12", "13"}
    assert mine.stdout.split()[0] == str(release.current().number)
