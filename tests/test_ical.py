"""The iCalendar reader (kolabmon/ical.py), in-process: folding, parameters, times, the VFREEBUSY."""

from __future__ import annotations

import datetime as dt

import pytest

from kolabmon import ical, runtime

USER = "user1@example.org"


def calendar(*vfreebusy: str, organizer: str = USER) -> str:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//test//EN", "BEGIN:VFREEBUSY",
             f"ORGANIZER:mailto:{organizer}", *vfreebusy, "END:VFREEBUSY", "END:VCALENDAR"]
    return "\r\n".join(lines) + "\r\n"


def test_reader_unfolds_lines_and_reads_quoted_parameters() -> None:
    text = ("BEGIN:VCALENDAR\r\nBEGIN:VFREEBUSY\r\nORGANIZER;CN=\"Doe; Jane: Ops\":mailto:jane\r\n"
            " @example.org\r\nDTSTAMP:20240102T030405Z\r\nDTSTART:20240102T000000Z\r\n"
            "DTEND;TZID=Europe/Berlin:20240301T000000\r\n"
            "FREEBUSY;FBTYPE=BUSY:20240103T100000Z/20240103T110000Z,20240104T100000Z/PT1H\r\n"
            "FREEBUSY;FBTYPE=FREE:20240105T100000Z/20240105T110000Z\r\n\tEND:VFREEBUSY\r\nEND:VCALENDAR\r\n")
    text = text.replace("\r\n\tEND:VFREEBUSY", "\r\nEND:VFREEBUSY")
    calendars = ical.parse_calendar(text)
    component = calendars[0].components[0]
    assert component.first("ORGANIZER") == ({"CN": "Doe; Jane: Ops"}, "mailto:jane@example.org")
    busy, stamp = ical.freebusy_of(calendars, "JANE@example.org")
    assert busy == 2  # the FREE period does not count
    assert stamp == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    end = ical.parse_time("20240301T000000", {"TZID": "Europe/Berlin"})
    assert end == dt.datetime(2024, 2, 29, 23, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("text", "words"), [
    ("", "the answer is empty"),
    ("BEGIN:VCALENDAR\r\nBEGIN:VFREEBUSY\r\nEND:VCALENDAR\r\n", "line 3: END:VCALENDAR closes BEGIN:VFREEBUSY"),
    ("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\nDTSTAMP:20240101T000000Z\r\n", "line 3: DTSTAMP outside a VCALENDAR"),
    ("BEGIN:VCALENDAR\r\nX-BAD;NOVALUE\r\nEND:VCALENDAR\r\n", "line 2: bad parameter"),
])
def test_reader_refuses_what_is_not_icalendar(text, words) -> None:
    with pytest.raises(ValueError, match=words):
        ical.parse_calendar(text)


def test_reader_refuses_bad_times_and_periods() -> None:
    for value in ("20241301T000000Z", "2024-01-01", "20240101T0000Z"):
        with pytest.raises(ValueError, match="is not a date-time"):
            ical.parse_time(value, {})
    with pytest.raises(ValueError, match="unknown TZID 'Mars/Olympus'"):
        ical.parse_time("20240101T000000", {"TZID": "Mars/Olympus"})
    body = calendar("DTSTAMP:20240101T000000Z", "DTSTART:20240101T000000Z", "DTEND:20240201T000000Z",
                    "FREEBUSY:20240102T000000Z")
    with pytest.raises(runtime.PluginError, match="bad FREEBUSY period '20240102T000000Z'"):
        ical.freebusy_of(ical.parse_calendar(body), USER)
    body = calendar("DTSTAMP:20240101T000000Z", "DTSTART:20240201T000000Z", "DTEND:20240101T000000Z")
    with pytest.raises(runtime.PluginError, match="ends .DTEND. before it starts"):
        ical.freebusy_of(ical.parse_calendar(body), USER)
