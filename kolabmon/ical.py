"""The iCalendar reader (RFC 5545): just enough to trust a VFREEBUSY, with no extra dependency.

`parse_calendar` reads the stream into components, `parse_time` reads DATE and DATE-TIME values,
`freebusy_of` finds a user's VFREEBUSY and says what is missing or wrong in it.
"""

from __future__ import annotations

import re

from kolabmon import runtime

TYPE_CHECKING = False  # no typing import at start-up (see runtime)
if TYPE_CHECKING:
    import datetime


class Component:
    """One BEGIN:NAME ... END:NAME block: its properties in order and its sub-components."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.properties: list[tuple[str, dict[str, str], str]] = []
        self.components: list[Component] = []

    def values(self, name: str) -> list[tuple[dict[str, str], str]]:
        return [(params, value) for prop, params, value in self.properties if prop == name]

    def first(self, name: str) -> tuple[dict[str, str], str] | None:
        found = self.values(name)
        return found[0] if found else None


_NAME = re.compile(r"[A-Za-z0-9-]+")
_PARAM_VALUE = re.compile(r'"[^"]*"|[^";:,]*(?:,(?:"[^"]*"|[^";:,]*))*')  # also matches the empty value


def unfold(text: str) -> list[str]:
    """Content lines: CRLF (or bare LF) breaks, a leading space or tab continues the line before."""
    lines: list[str] = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        if raw[:1] in (" ", "\t") and lines:
            lines[-1] += raw[1:]
        else:
            lines.append(raw)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def content_line(line: str) -> tuple[str, dict[str, str], str]:
    """`NAME;PARAM=a;PARAM="b:c":value` → (NAME, {PARAM: ...}, value); ValueError if it is none."""
    match = _NAME.match(line)
    if not match or len(line) == match.end() or line[match.end()] not in ";:":
        raise ValueError(f"not a content line: {line[:40]!r}")
    name, position = match[0].upper(), match.end()
    params: dict[str, str] = {}
    while line[position] == ";":
        param = _NAME.match(line, position + 1)
        if not param or line[param.end():param.end() + 1] != "=":
            raise ValueError(f"bad parameter in {line[:40]!r}")
        position = param.end() + 1
        value = _PARAM_VALUE.match(line, position)
        assert value is not None
        params[param[0].upper()] = value[0].strip('"')
        position = value.end()
        if position >= len(line):
            raise ValueError(f"no value in {line[:40]!r}")
    return name, params, line[position + 1:]


def parse_calendar(text: str) -> list[Component]:
    """The VCALENDAR objects of an iCalendar stream; ValueError says what is wrong."""
    lines = unfold(text)
    if not lines or lines[0].strip().upper() != "BEGIN:VCALENDAR":
        start = lines[0].strip()[:40] if lines else ""
        raise ValueError(f"it starts with {start!r}, not BEGIN:VCALENDAR" if start else "the answer is empty")
    calendars: list[Component] = []
    stack: list[Component] = []
    for number, line in enumerate(lines, 1):
        try:
            name, params, value = content_line(line)
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
        if name == "BEGIN":
            component = Component(value.strip().upper())
            if stack:
                stack[-1].components.append(component)
            elif component.name != "VCALENDAR":
                raise ValueError(f"line {number}: BEGIN:{component.name} outside a VCALENDAR")
            else:
                calendars.append(component)
            stack.append(component)
        elif name == "END":
            if not stack or stack[-1].name != value.strip().upper():
                open_ = f"BEGIN:{stack[-1].name}" if stack else "nothing"
                raise ValueError(f"line {number}: END:{value.strip()} closes {open_}")
            stack.pop()
        elif stack:
            stack[-1].properties.append((name, params, value))
        else:
            raise ValueError(f"line {number}: {name} outside a VCALENDAR")
    if stack:
        raise ValueError(f"BEGIN:{stack[-1].name} is never closed (END:VCALENDAR missing)")
    return calendars


def parse_time(value: str, params: dict[str, str]) -> datetime.datetime:
    """DATE-TIME (UTC `…Z`, with TZID, or floating = this machine's time) or DATE (midnight UTC)."""
    import datetime as dt

    match = re.fullmatch(r"(\d{4})(\d\d)(\d\d)(?:T(\d\d)(\d\d)(\d\d)(Z?))?", value.strip())
    if not match:
        raise ValueError(f"{value.strip()[:30]!r} is not a date-time")
    year, month, day, hour, minute, second = (int(part or 0) for part in match.groups()[:6])
    try:
        when = dt.datetime(year, month, day, hour, minute, min(second, 59))  # 60: a leap second
    except ValueError:
        raise ValueError(f"{value.strip()!r} is not a date-time") from None
    if match[7] or match[4] is None:
        return when.replace(tzinfo=dt.UTC)
    if "TZID" in params:
        import zoneinfo

        try:
            return when.replace(tzinfo=zoneinfo.ZoneInfo(params["TZID"]))
        except (ValueError, zoneinfo.ZoneInfoNotFoundError):
            raise ValueError(f"unknown TZID {params['TZID'][:40]!r}") from None
    return when.astimezone()


def addresses(component: Component) -> list[str]:
    """The ORGANIZER and ATTENDEE addresses, `mailto:` stripped, lower case."""
    found = []
    for name in ("ORGANIZER", "ATTENDEE"):
        for _, value in component.values(name):
            value = value.strip()
            found.append((value[7:] if value.lower().startswith("mailto:") else value).lower())
    return found


def freebusy_of(calendars: list[Component], user: str) -> tuple[int, datetime.datetime]:
    """The user's VFREEBUSY: (busy periods, DTSTAMP); PluginError says what is missing or wrong."""
    lists = [c for calendar in calendars for c in calendar.components if c.name == "VFREEBUSY"]
    if not lists:
        raise runtime.PluginError("the iCalendar holds no VFREEBUSY")
    mine = [c for c in lists if user.lower() in addresses(c)]
    if not mine:
        others = sorted({a for c in lists for a in addresses(c)})
        whose = ", ".join(others[:3]) if others else "nobody (no ORGANIZER or ATTENDEE)"
        raise runtime.PluginError(f"the VFREEBUSY is for {whose}, not {user}")
    component = mine[0]

    def time_of(name: str) -> datetime.datetime:
        prop = component.first(name)
        if prop is None:
            raise runtime.PluginError(f"the VFREEBUSY for {user} has no {name}")
        try:
            return parse_time(prop[1], prop[0])
        except ValueError as exc:
            raise runtime.PluginError(f"the VFREEBUSY for {user} has a bad {name}: {exc}") from None

    start, end = time_of("DTSTART"), time_of("DTEND")
    if end < start:
        raise runtime.PluginError(f"the VFREEBUSY for {user} ends (DTEND) before it starts (DTSTART)")
    stamp = time_of("DTSTAMP")
    busy = 0
    for params, value in component.values("FREEBUSY"):
        for period in value.split(","):
            begin, _, finish = period.partition("/")
            try:
                parse_time(begin, {})
                if not re.fullmatch(r"[+-]?P[0-9WDTHMS]+", finish.strip()):
                    parse_time(finish, {})
            except ValueError:
                raise runtime.PluginError(f"the VFREEBUSY for {user} has a bad FREEBUSY period "
                                          f"{period.strip()[:40]!r}") from None
            busy += params.get("FBTYPE", "BUSY").upper() != "FREE"
    return busy, stamp
