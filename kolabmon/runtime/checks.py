"""Evaluate and present: the shared pieces built on nagiosplugin, which is imported only here,
once a check really runs."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from kolabmon.runtime.base import CRITICAL

TYPE_CHECKING = False  # see kolabmon.runtime
if TYPE_CHECKING:
    import nagiosplugin


def check(resource: object, contexts: Sequence[object],
          present: Callable[[nagiosplugin.Results], str]) -> nagiosplugin.Check:
    """Wrap a probe's resource (anything with `name` and `probe()`) into a nagiosplugin Check.

    Probe modules keep nagiosplugin out of their import path (so `--help` stays cheap); the
    classes nagiosplugin wants are made here, once the check really runs.
    """
    import nagiosplugin

    class Probe(nagiosplugin.Resource):
        name = resource.name  # type: ignore[attr-defined]

        def probe(self) -> object:
            return resource.probe()  # type: ignore[attr-defined]

    class Line(nagiosplugin.Summary):
        def ok(self, results: nagiosplugin.Results) -> str:
            return present(results)

        def problem(self, results: nagiosplugin.Results) -> str:
            alerts = sorted((r for r in results if r.state != nagiosplugin.Ok), key=lambda r: -int(r.state))
            reasons = ", ".join(explain(r) for r in alerts)
            return f"{present(results)} ({reasons})" if reasons else present(results)

    return nagiosplugin.Check(Probe(), *contexts, Line())


def explain(result: nagiosplugin.Result) -> str:
    """`time 2.5s above warning 2` rather than nagiosplugin's `outside range`."""
    metric = result.metric
    if metric is None or result.hint is None or not isinstance(metric.value, int | float):
        return result.hint or str(result.state)
    level = "critical" if int(result.state) == CRITICAL else "warning"
    limit = result.hint.rsplit("range ", 1)[-1].rstrip(")")
    value = f"{metric.name} {metric.value:g}{metric.uom or ''}"
    bounds = re.fullmatch(r"(?:0?:)?([^:@~]+)|([^:@~]+):", limit)
    if bounds and bounds[1]:
        return f"{value} above {level} {bounds[1]}"
    if bounds and bounds[2]:
        return f"{value} below {level} {bounds[2]}"
    return f"{value} outside {level} range {limit}"


def threshold(name: str, warning: str | None, critical: str | None, fmt: str = "{value}") -> object:
    """A ScalarContext on one metric."""
    import nagiosplugin

    return nagiosplugin.ScalarContext(name, warning, critical, fmt_metric=fmt)


def line_end(parts: list[str], results: nagiosplugin.Results) -> str:
    """A probe's status line: its parts, then the certificate's days left (if measured) and the time."""
    if "cert_days" in results:
        parts.append(f"certificate valid {results['cert_days'].metric.value:.0f} more days")
    parts.append(f"{results['time'].metric.value:.3f} s")
    return ", ".join(parts)


def days_left(warning_days: int, critical_days: int) -> object:
    """Certificate days: alert when fewer than N days are left (`30:`)."""
    return threshold("cert_days", f"{warning_days}:", f"{critical_days}:")


def findings() -> object:
    """A context for yes/no findings: the metric's name is the admin's text, its value the state."""
    import nagiosplugin

    states = (nagiosplugin.Ok, nagiosplugin.Warn, nagiosplugin.Critical, nagiosplugin.Unknown)

    class Findings(nagiosplugin.Context):
        def evaluate(self, metric: nagiosplugin.Metric, resource: object) -> nagiosplugin.Result:
            return nagiosplugin.Result(states[metric.value], metric.name)

        def performance(self, metric: nagiosplugin.Metric, resource: object) -> None:
            return None

    return Findings("findings")


def plain(name: str) -> object:
    """A context that only records perfdata (no thresholds)."""
    return threshold(name, None, None)
