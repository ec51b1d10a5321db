"""kolabmon-takeover: the Icinga event handler. Parse the macros and hand them to the takeover
(kolabmon/takeover/action.py: lock, decide, act, verify, log), which the watcher shares.

    kolabmon-takeover [--config FILE] [--dry-run] --host H --service S --state STATE
                      --state-type SOFT|HARD --attempt N --max-attempts N [--flapping 0|1]
                      [--output TEXT | --nagios-env] [--changed EPOCH] [--timeout SECONDS]
    kolabmon-takeover [--config FILE] recover NODE

Exit 0: acted and verified, or nothing to do; 1: refused or deferred by policy; 2: acted and
failed, or left the cluster blocked; 3: bad input or config. One line on stdout, always; one
JSON line per decision in the audit log, fsync'ed. With `[notify]` in the config, a decision on a
HARD CRITICAL (moved, refused, failed) is also sent to on-call as its own message.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import time
from collections.abc import Sequence

from kolabmon import runtime
from kolabmon.takeover import audit, policy
from kolabmon.takeover.config import BUDGET_MARGIN, Config, ConfigError, load

DEFAULT_CONFIG = "/etc/kolabmon/takeover.toml"
EXIT_FAILED, EXIT_USAGE = 2, 3


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return int(text)


def _choice(options: Sequence[str]):  # noqa: ANN202
    def check(text: str) -> str:
        if text.upper() not in options:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(options)}, not {text!r}")
        return text.upper()
    return check


def _shared() -> runtime.Parser:
    """The options of every form: --config and --dry-run."""
    p = runtime.Parser("TAKEOVER", prog="kolabmon-takeover")
    p.add_argument("--config", default=os.environ.get("KOLABMON_TAKEOVER_CONFIG", DEFAULT_CONFIG))
    p.add_argument("--dry-run", action="store_true", help="say what would happen, change nothing")
    return p


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The event's macros, or `recover NODE`: the first word argparse leaves over after the shared
    options names the subcommand (a stray word after the macros stays "unrecognized arguments")."""
    shared = _shared()
    rest = shared.parse_known_args(argv)[1]
    p = runtime.Parser("TAKEOVER", prog="kolabmon-takeover", add_help=True, parents=[shared],
                       description="Icinga or Nagios event handler: move the Kolab group off a degraded active node "
                       "when the policy allows, and prove the service is back.")
    if rest[:1] == ["recover"]:
        p.add_argument("command", choices=["recover"])
        p.add_argument("node")
        return p.parse_args(argv)
    p.add_argument("--host", required=True, help="$host.name$")
    p.add_argument("--service", required=True, help="$service.name$")
    p.add_argument("--state", required=True, type=_choice(policy.STATES), help="$service.state$")
    p.add_argument("--state-type", required=True, type=_choice(policy.STATE_TYPES), help="$service.state_type$")
    p.add_argument("--attempt", required=True, type=_positive, help="$service.check_attempt$")
    p.add_argument("--max-attempts", required=True, type=_positive, help="$service.max_check_attempts$")
    p.add_argument("--flapping", type=runtime.zero_or_one, default=False,
                   help="$service.flapping$ as 0|1 (the EventCommand converts true/false)")
    p.add_argument("--output", help="$service.output$: a hang is re-probed with hang_probe_timeout")
    p.add_argument("--nagios-env", action="store_true",
                   help="Nagios Core: take --output from the environment macro NAGIOS_SERVICEOUTPUT (nagios.cfg: "
                   "enable_environment_macros=1), never from argv: a plugin's line then never passes Nagios's "
                   "/bin/sh; the audit log and the mails say 'nagios on HOST'. --output is refused with it")
    p.add_argument("--changed", default="", metavar="EPOCH",
                   help="$service.last_hard_state_change$: names the event, so that its notifications find "
                   "this decision")
    p.add_argument("--timeout", type=runtime.positive_seconds,
                   help=f"the EventCommand's timeout: the takeover ends {BUDGET_MARGIN:g} s before it "
                   "(default: 'budget' from the config)")
    args = p.parse_args(argv)
    runtime.nagios_env(args, {"output": "SERVICEOUTPUT"})
    for name in ("host", "service"):
        if not getattr(args, name).strip():
            raise runtime.UsageError(f"--{name} is empty (undefined Icinga macro?)")
    args.changed = args.changed.strip()
    if args.changed and not re.fullmatch(r"\d+(\.\d+)?", args.changed):
        raise runtime.UsageError(f"--changed {args.changed!r} is not an epoch ($service.last_hard_state_change$)")
    args.command = None
    return args


# --- main -----------------------------------------------------------------------------------


def say(label: str, text: str) -> None:
    sys.stdout.write(f"TAKEOVER {label} - {' '.join(text.split())}\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse(argv)
        config = load(args.config)
    except (runtime.UsageError, ConfigError) as exc:
        say("ERROR", str(exc))
        return EXIT_USAGE
    try:
        if args.command == "recover":
            return recover(config, args)
        return takeover(config, args)
    except runtime.UsageError as exc:
        say("ERROR", str(exc))
        return EXIT_USAGE
    except OSError as exc:  # the lock or the audit log cannot be written: the state dir is wrong
        say("ERROR", f"cannot write {exc.filename or 'the state directory'}: {exc.strerror} "
            f"(state_dir, lock and audit in {args.config})")
        return EXIT_USAGE
    except Exception as exc:  # one line and a record, whatever broke
        say("FAILED", f"internal error: {type(exc).__name__}: {exc}")
        try:
            audit.append(config.audit, audit.error_record(f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
        return EXIT_FAILED


def recover(config: Config, args: argparse.Namespace) -> int:
    from kolabmon.takeover.backends import BackendError, make

    record = audit.recover_record(args.node, args.dry_run)
    if args.dry_run:
        say("NOTHING", f"dry run: would clear kolabmon's marks and fail-counts on {args.node}")
        return 0
    try:
        done = make(config).recover(args.node)
    except BackendError as exc:
        audit.append(config.audit, audit.recovered(record, "failed", str(exc)))
        say("FAILED", str(exc))
        return EXIT_FAILED
    audit.append(config.audit, audit.recovered(record, "recovered", done))
    say("ACTED", f"recovered {done}")
    return 0


def takeover(config: Config, args: argparse.Namespace) -> int:
    from kolabmon.takeover.action import Trigger, announce, take_over

    event = policy.Event(args.host, args.service, args.state, args.state_type, args.attempt, args.max_attempts,
                         args.flapping, args.changed)
    budget = config.budget if args.timeout is None else args.timeout - BUDGET_MARGIN
    if budget < config.move_needs():
        raise runtime.UsageError(f"--timeout {args.timeout:g} s cannot hold one takeover ({config.move_needs():g} s "
                                 f"+ {BUDGET_MARGIN:g} s, see 'budget' in {args.config})")
    deadline = time.monotonic() + budget
    monitor = "nagios" if args.nagios_env else "icinga"
    result = take_over(config, Trigger(event, f"{monitor} on {socket.gethostname()}", args.output or "",
                                       dry_run=args.dry_run), budget)
    untold = announce(config, result, deadline + BUDGET_MARGIN - 2)  # a FAILED move ends at its deadline
    say(result.label, result.reason + (f" ({untold})" if untold else ""))
    return result.code


if __name__ == "__main__":
    raise SystemExit(main())
