"""check_kolab_freebusy: does the free/busy URL serve a fresh VFREEBUSY for the expected user?

`FREEBUSY OK - user1@example.org free/busy 1 busy period, updated 35 s ago, 0.004 s | time=...`

Beyond the status code the answer must be an iCalendar (RFC 5545, read by `kolabmon.ical`: no
extra dependency) holding a VFREEBUSY whose ORGANIZER or ATTENDEE is the expected
user, with DTSTART and DTEND, and a DTSTAMP no older than --max-age.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence

from kolabmon import runtime

TYPE_CHECKING = False  # no typing import at start-up (see runtime)
if TYPE_CHECKING:

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

        from kolabmon import ical, tls
        from kolabmon.clients import http

        args, clock = self.args, self.clock
        https = args.url.lower().startswith("https:")
        session = http.session(clock, tls.context(args.ca_file, args.insecure))
        verify = False if args.insecure else (args.ca_file or True)
        auth = (args.user, args.password) if args.user else None
        response = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)  # --insecure said so
            try:
                clock.enter("connecting")
                response = session.get(args.url, auth=auth, verify=verify, allow_redirects=False, stream=True,
                                       timeout=clock.remaining(), headers={"Accept": "text/calendar"})
                cert_days = http.cert_days(response) if https else None
                _expect_ok(response, args)
                clock.enter("reading the answer")
                body = http.read(response, clock, MAX_BODY, "a free/busy list")
                elapsed = clock.since("connecting")
            except requests.RequestException as exc:
                raise http.failure(exc, clock) or runtime.PluginError(
                    f"HTTP failed while {clock.step}: {http.short(exc)}") from None
            finally:
                if response is not None:
                    response.close()
                session.close()
        clock.enter("checking the free/busy list")
        kind = response.headers.get("Content-Type", "no Content-Type").split(";")[0]
        try:
            calendars = ical.parse_calendar(body.decode("utf-8", "replace"))
        except ValueError as exc:
            raise runtime.PluginError(f"the answer is not an iCalendar ({kind}): {exc}") from None
        busy, stamp = ical.freebusy_of(calendars, args.user_match)
        age = max((dt.datetime.now(dt.UTC) - stamp).total_seconds(), 0.0)  # a DTSTAMP a little ahead is skew
        yield nagiosplugin.Metric("time", round(elapsed, 6), "s", min=0)
        yield nagiosplugin.Metric("age", round(age), "s", min=0, context="age")
        yield nagiosplugin.Metric("size", len(body), "B", min=0, context="size")
        yield nagiosplugin.Metric("busy", busy, min=0, context="busy")
        if cert_days is not None:
            yield nagiosplugin.Metric("cert_days", cert_days, context="cert_days")


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
        return runtime.line_end(parts, results)
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


PLUGIN = runtime.Plugin(SERVICE, build, make_parser, required=(), validate=settle, logs_in=lambda args: bool(args.user))


def main(argv: Sequence[str] | None = None) -> int:
    return PLUGIN.main(argv)
