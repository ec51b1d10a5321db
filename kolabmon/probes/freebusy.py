"""check_kolab_freebusy: does the free/busy URL serve a fresh VFREEBUSY for the expected user?

`FREEBUSY OK - user1@example.org free/busy 1 busy period, updated 35 s ago, 0.004 s | time=...`

Beyond the status code the answer must be an iCalendar (RFC 5545, read by the small parser
below: no extra dependency) holding a VFREEBUSY whose ORGANIZER or ATTENDEE is the expected
user, with DTSTART and DTEND, and a DTSTAMP no older than --max-age.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator, Sequence

from kolabmon import runtime

TYPE_CHECKING = False  # no typing import at start-up (see runtime)
if TYPE_CHECKING:
    import datetime

    import nagiosplugin
    import requests

SERVICE = "FREEBUSY"
DEFAULT_MAX_AGE = 86400
MAX_BODY = 4 * 1024 * 1024  # a free/busy list is kilobytes: stop reading a runaway answer here


# --- acquire -------------------------------------------------------------------------------


class FreeBusyFetch:
    """GETs the free/busy URL (basic auth, verified TLS, no redirects) and checks the VFREEBUSY."""

    name = SERVICE

    def __init__(self, args: argparse.Namespace, clock: runtime.Clock) -> None:
        self.args, self.clock = args, clock

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        import datetime as dt
        import warnings

        import nagiosplugin
        import requests
        import urllib3

        from kolabmon import tls

        args, clock = self.args, self.clock
        https = args.url.lower().startswith("https:")
        session = requests.Session()
        session.trust_env = False  # no proxies, netrc or CA bundle from the environment
        session.mount("http://", _adapter(None, clock))
        session.mount("https://", _adapter(tls.context(args.ca_file, args.insecure), clock))
        verify = False if args.insecure else (args.ca_file or True)
        auth = (args.user, args.password) if args.user else None
        response = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)  # --insecure said so
            try:
                clock.enter("connecting")
                response = session.get(args.url, auth=auth, verify=verify, allow_redirects=False, stream=True,
                                       timeout=clock.remaining(), headers={"Accept": "text/calendar"})
                cert_days = _cert_days(response) if https else None
                _expect_ok(response, args)
                clock.enter("reading the answer")
                body = _read(response, clock)
                elapsed = clock.since("connecting")
            except requests.RequestException as exc:
                raise _cause(exc, clock) from None
            finally:
                if response is not None:
                    response.close()
                session.close()
        clock.enter("checking the free/busy list")
        kind = response.headers.get("Content-Type", "no Content-Type").split(";")[0]
        try:
            calendars = parse_calendar(body.decode("utf-8", "replace"))
        except ValueError as exc:
            raise runtime.PluginError(f"the answer is not an iCalendar ({kind}): {exc}") from None
        busy, stamp = freebusy_of(calendars, args.user_match)
        age = max((dt.datetime.now(dt.UTC) - stamp).total_seconds(), 0.0)  # a DTSTAMP a little ahead is skew
        yield nagiosplugin.Metric("time", round(elapsed, 6), "s", min=0)
        yield nagiosplugin.Metric("age", round(age), "s", min=0, context="age")
        yield nagiosplugin.Metric("size", len(body), "B", min=0, context="size")
        yield nagiosplugin.Metric("busy", busy, min=0, context="busy")
        if cert_days is not None:
            yield nagiosplugin.Metric("cert_days", cert_days, context="cert_days")


def _adapter(ssl_context: object, clock: runtime.Clock) -> requests.adapters.HTTPAdapter:
    """requests' adapter on kolabmon's TLS context, naming the step once the connection is up."""
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def connected() -> None:
        try:
            clock.enter("waiting for the answer")  # a hang from here on is the server's, not the network's
        except TimeoutError:
            pass  # the request's own timeout reports it

    class Plain(HTTPConnection):
        def connect(self) -> None:
            super().connect()
            connected()

    class Tls(HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            connected()

    pools = {"http": type("PlainPool", (HTTPConnectionPool,), {"ConnectionCls": Plain}),
             "https": type("TlsPool", (HTTPSConnectionPool,), {"ConnectionCls": Tls})}

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                             **pool_kwargs: object) -> None:
            if ssl_context is not None:
                pool_kwargs["ssl_context"] = ssl_context
            super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

    return Adapter()


def _cert_days(response: requests.Response) -> float | None:
    from kolabmon import tls

    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    return tls.days_left(sock) if sock is not None else None


def _expect_ok(response: requests.Response, args: argparse.Namespace) -> None:
    """Anything but 200 is CRITICAL, in words that say where to look."""
    code = response.status_code
    if code == 200:
        return
    what = f"HTTP {code} {response.reason or ''}".strip()
    if 300 <= code < 400:
        where = response.headers.get("Location", "nowhere")
        raise runtime.PluginError(f"{what}: redirected to {where} (not followed: check --url)")
    if code == 401:
        raise runtime.PluginError(f"{what}: login failed for {args.user}" if args.user
                                  else f"{what}: the server wants a login (-u USER)")
    if code == 404:
        raise runtime.PluginError(f"{what}: no free/busy list at {response.url}")
    if code >= 500:
        raise runtime.PluginError(f"{what}: the web server failed to serve {response.url}")
    raise runtime.PluginError(f"{what} for {response.url}")


def _read(response: requests.Response, clock: runtime.Clock) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_content(65536):
        size += len(chunk)
        if size > MAX_BODY:
            raise runtime.PluginError(f"the answer is larger than {MAX_BODY} bytes: not a free/busy list")
        chunks.append(chunk)
        clock.remaining()  # a server trickling bytes still hits the deadline
    return b"".join(chunks)


def _cause(exc: BaseException, clock: runtime.Clock) -> BaseException:
    """requests wraps urllib3 wraps the socket error: hand the original to the runtime."""
    import http.client

    import requests

    from kolabmon.clients import errors

    if isinstance(exc, requests.Timeout):
        return TimeoutError(str(exc))
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return runtime.UsageError(f"invalid URL: {exc}")
    cause = errors.underlying(exc, (OSError, http.client.HTTPException), outside=("requests", "urllib3"))
    if isinstance(cause, http.client.HTTPException):  # e.g. BadStatusLine: the bytes it got instead
        got = ascii(_short(cause))
        return runtime.PluginError(f"the server does not answer HTTP: got {got} (while {clock.step})")
    if cause is not None:
        return cause
    return runtime.PluginError(f"HTTP failed while {clock.step}: {_short(exc)}")


def _short(exc: BaseException) -> str:
    text = str(exc.args[0] if exc.args else exc) or type(exc).__name__
    return text[:80]


# --- the iCalendar reader (RFC 5545): just enough to trust a VFREEBUSY ---------------------


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


# --- evaluate ------------------------------------------------------------------------------


def contexts(args: argparse.Namespace) -> list[object]:
    warn_age = str(args.max_age_warning) if args.max_age_warning else None
    return [runtime.threshold("time", args.warning, args.critical),
            runtime.threshold("age", warn_age, str(args.max_age)),
            runtime.plain("size"),
            runtime.plain("busy"),
            runtime.days_left(args.cert_warning, args.cert_critical)]


# --- present -------------------------------------------------------------------------------


def present(args: argparse.Namespace) -> object:
    def line(results: nagiosplugin.Results) -> str:
        busy = results["busy"].metric.value
        parts = [f"{args.user_match} free/busy {busy} busy period{'' if busy == 1 else 's'}",
                 f"updated {ago(results['age'].metric.value)} ago"]
        if "cert_days" in results:
            parts.append(f"certificate valid {results['cert_days'].metric.value:.0f} more days")
        parts.append(f"{results['time'].metric.value:.3f} s")
        return ", ".join(parts)
    return line


def ago(seconds: float) -> str:
    """`35 s`, `12 min`, `5 h`, `3 d`: the unit an admin reads at a glance."""
    for unit, size, up_to in (("s", 1, 120), ("min", 60, 7200), ("h", 3600, 172800)):
        if seconds < up_to:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds / 86400:.0f} d"


# --- wire ----------------------------------------------------------------------------------


def http_url(text: str) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid URL {text!r}: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise argparse.ArgumentTypeError(f"invalid URL {text!r}: the scheme must be http or https")
    if not parts.hostname:
        raise argparse.ArgumentTypeError(f"invalid URL {text!r}: no host")
    if parts.password is not None:
        raise argparse.ArgumentTypeError("no password in the URL: use -u and --password-file")
    return text


def whole_seconds(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r} (a whole number above 0)")
    return int(text)


def make_parser() -> runtime.Parser:
    p = runtime.parser(SERVICE, "Fetch a user's free/busy list over HTTP(S) and check that it is a fresh "
                       "VFREEBUSY for that user. Give --url, or -H (with -p, --tls) for "
                       "http(s)://HOST[:PORT]/freebusy/USER.ifb.",
                       hostname="host of the free/busy server (instead of --url)",
                       port="TCP port with -H (default 80, 443 with --tls)")
    p.add_argument("--url", type=http_url, help="full free/busy URL, e.g. "
                   "https://kolab.example.org/freebusy/user1@example.org.ifb (instead of -H)")
    runtime.add_auth(p, "user for HTTP basic auth (without it: no login); also the expected owner")
    runtime.add_tls(p, tls="https with -H", starttls=runtime.HIDDEN)  # no STARTTLS in HTTP: refused in settle()
    p.add_argument("--user-match", metavar="ADDR",
                   help="the VFREEBUSY's ORGANIZER or ATTENDEE must be mailto:ADDR (default: the -u user)")
    p.add_argument("--max-age", type=whole_seconds, default=DEFAULT_MAX_AGE, metavar="SECONDS",
                   help=f"CRITICAL when DTSTAMP is older than SECONDS (default {DEFAULT_MAX_AGE}, one day)")
    p.add_argument("--max-age-warning", type=whole_seconds, metavar="SECONDS",
                   help="WARNING when DTSTAMP is older than SECONDS (default: no warning)")
    return p


def settle(args: argparse.Namespace) -> None:
    """Check the options together and fill in the URL and the expected user; UsageError if they clash."""
    if args.starttls:
        raise runtime.UsageError("--starttls does not apply to HTTP (use --tls or an https URL)")
    if args.url and (args.hostname or args.port or args.tls):
        raise runtime.UsageError("--url already names host, port and scheme: drop -H/-p/--tls")
    if not args.url:
        if not args.hostname:
            raise runtime.UsageError("missing --url (or -H/--hostname)")
        if not args.user:
            raise runtime.UsageError("-H needs -u/--user to build the URL /freebusy/USER.ifb")
        from urllib.parse import quote

        host = f"[{args.hostname}]" if ":" in args.hostname else args.hostname
        port = f":{args.port}" if args.port else ""
        scheme = "https" if args.tls else "http"
        try:
            args.url = http_url(f"{scheme}://{host}{port}/freebusy/{quote(args.user, '@')}.ifb")
        except argparse.ArgumentTypeError as exc:
            raise runtime.UsageError(str(exc)) from None
    args.user_match = args.user_match or args.user
    if not args.user_match:
        raise runtime.UsageError("whose free/busy? give -u USER or --user-match ADDR")
    if args.max_age_warning and args.max_age_warning >= args.max_age:
        raise runtime.UsageError("--max-age-warning must be below --max-age")


def build(args: argparse.Namespace, clock: runtime.Clock) -> nagiosplugin.Check:
    return runtime.check(FreeBusyFetch(args, clock), contexts(args), present(args))  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    return runtime.main(SERVICE, build, make_parser, argv, required=(), validate=settle,
                        logs_in=lambda args: bool(args.user))
