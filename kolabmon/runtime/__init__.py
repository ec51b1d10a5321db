"""The shared plugin runtime: standard options, secrets, deadline, exception → state, output.

Every probe module describes itself as a `Plugin`: `Plugin.main()` is the executable (parse argv,
arm the watchdog, print one line, return the exit code), `Plugin.run()` an in-process check (returns
an `Outcome`, never exits) for a resident caller. Only argparse and the standard library are imported at module
level, so `--help` and usage errors cost no protocol library (bench/bench_checks.py); typing,
dataclasses and threading cost start-up time that --help must not pay, so type-only imports sit
under `TYPE_CHECKING = False`.

    base        the four states, PluginError/UsageError, the status line
    options     the standard options, value types, the password
    clock       the deadline, exception → state
    checks      evaluate and present on nagiosplugin (imported only when a check runs)
    executable  run() in-process, the watchdog, Plugin (main() and in-process runs)
"""

from kolabmon.runtime.base import (
    CRITICAL,
    DEFAULT_TIMEOUT,
    OK,
    PASSWORD_ENV,
    STATE_NAMES,
    UNKNOWN,
    WARNING,
    Outcome,
    PluginError,
    UsageError,
    __version__,
    clean,
    status_line,
)
from kolabmon.runtime.checks import check, days_left, explain, findings, line_end, plain, threshold
from kolabmon.runtime.clock import (
    CHILD_KILL_MARGIN,
    GONE,
    GOODBYE_LIMIT,
    GOODBYE_MARGIN,
    HANG_MARGIN,
    HUNG,
    RELAY_MARGIN,
    REPORT_SHARE,
    REPROBE_MIN,
    REPROBE_WINDOWS,
    SHORTEST_WAIT,
    TOOL_TIMEOUT_MARGIN,
    WATCHDOG_GRACE,
    WRONG,
    Clock,
    classify,
    failure_kind,
    safe_classify,
)
from kolabmon.runtime.executable import Plugin, Watchdog, execute, run
from kolabmon.runtime.options import (
    HIDDEN,
    Parser,
    add_auth,
    add_node_access,
    add_tls,
    command_line,
    days,
    nagios_env,
    nagios_range,
    node_access,
    node_list,
    parse,
    parser,
    password,
    port_number,
    positive_seconds,
    readable_ca,
    state_name,
    zero_or_one,
)

__all__ = [
    "CRITICAL", "DEFAULT_TIMEOUT", "OK", "PASSWORD_ENV", "STATE_NAMES", "UNKNOWN", "WARNING", "WATCHDOG_GRACE",
    "Outcome", "PluginError", "UsageError", "__version__", "clean", "status_line",
    "check", "days_left", "explain", "findings", "line_end", "plain", "threshold",
    "CHILD_KILL_MARGIN", "GOODBYE_LIMIT", "GOODBYE_MARGIN", "HANG_MARGIN", "RELAY_MARGIN", "REPORT_SHARE",
    "REPROBE_MIN", "REPROBE_WINDOWS", "SHORTEST_WAIT", "TOOL_TIMEOUT_MARGIN", "Clock", "classify", "safe_classify",
    "failure_kind", "HUNG", "GONE", "WRONG",
    "Plugin", "Watchdog", "execute", "run",
    "HIDDEN", "Parser", "add_auth", "add_node_access", "add_tls", "command_line", "days",
    "nagios_env", "nagios_range", "node_access",
    "node_list", "parse", "parser", "password",
    "port_number", "positive_seconds", "readable_ca", "state_name", "zero_or_one",
]
