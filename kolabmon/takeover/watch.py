"""kolabmon-watch: the resident watcher, one on each node, run by Pacemaker itself (the cloned OCF
resource ocf:kolabmon:watcher), so failover keeps working when the monitoring host is down.

    kolabmon-watch [--config FILE] [--node NAME] [--status-file FILE]   # until SIGTERM
    kolabmon-watch [--config FILE] check                                # the config: exit 0, or one line and 3
    kolabmon-watch install-agent [--directory DIR]                      # the OCF agents, for this kolabmon

While its node runs the whole group, the watcher runs the probes of `[watch] services` in-process
(the same checks Icinga runs, from `[services.X] reprobe`, with `[watch] timeout`), one thread per
service, every `[watch] interval`. `failures` failed probes in a row confirm a fault
(`policy.confirmed`); a refused or reset service waits `restart_grace` for Pacemaker's own restart
in place first. A confirmed fault is published on the node as the transient attribute
`kolabmon-fault`, and `#health-kolabmon` turns yellow (never red: red on both nodes would stop the
group everywhere, and it cannot get a hung service off a node anyway).

The other node's watcher, which reads crm_mon every `POLL` seconds, sees the attribute and calls the
takeover (kolabmon/takeover/action.py) as the healthy survivor: it fences a hung node at once or
moves the group, follows the transition, verifies and writes the audit record. When the peer is not
online the watcher of the degraded node calls it itself, after HANDOFF seconds, and the policy says
why it cannot move. Cluster tools run locally: every node prefix of the config is ignored here.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from kolabmon import pacemaker, runtime
from kolabmon.takeover import policy
from kolabmon.takeover.action import Result, Trigger, announce, take_over
from kolabmon.takeover.config import Config, ConfigError, load

DEFAULT_CONFIG = "/etc/kolabmon/takeover.toml"
POLL = 0.25       # seconds between two looks at the cluster (crm_mon): the hand-off to the survivor
HANDOFF = 3.0     # the degraded node acts itself if the survivor has not taken the lock by then
FRESH = 5.0       # a published fault older than this (its watcher stopped refreshing it) is ignored
SETTLE = 0.5      # a fault answered by a move waits this long for one answered by fencing
TOOL_TIMEOUT = 10.0
STOP_WAIT = 7.0   # on SIGTERM, how long a takeover in progress may go on (the agent kills after 10 s)


def log(text: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} kolabmon-watch: {text}\n")
    sys.stderr.flush()


# --- one service, probed in-process ------------------------------------------------------------


class ServiceWatch:
    """One service's probe loop (its own thread) and its failure streak."""

    def __init__(self, name: str, argv: Sequence[str], config: Config) -> None:
        module = Path(argv[0]).name.removeprefix("check_kolab_")
        if not Path(argv[0]).name.startswith("check_kolab_"):
            raise ConfigError(f"[watch]: {name}'s reprobe {argv[0]} is not a kolabmon check (they run in-process)")
        try:
            self.plugin: runtime.Plugin = importlib.import_module(f"kolabmon.probes.{module}").PLUGIN
        except (ImportError, AttributeError):
            raise ConfigError(f"[watch]: {name}'s reprobe {argv[0]}: no such kolabmon check") from None
        try:
            self.args = self.plugin.prepare(list(argv[1:]))
        except runtime.UsageError as exc:
            raise ConfigError(f"[watch]: {name}'s reprobe: {exc}") from None
        self.name, self.watch, self.rules = name, config.watch, config.rules
        self.active = threading.Event()
        self.lock = threading.Lock()
        self.streak: list[policy.Failure] = []
        self.first_epoch = 0.0          # wall clock of the streak's first failure (published with the fault)
        self.line = "not probed yet"
        self.fault: policy.Failure | None = None  # set once confirmed

    def loop(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            if not self.active.is_set():
                self.reset("not the active node")
                self.active.wait(POLL)
                continue
            began = time.monotonic()
            try:
                outcome = self.plugin.run(self.args, self.watch.timeout)
                self.record(outcome, began, time.monotonic())
            except Exception as exc:  # Plugin.run never raises; should anything else, the thread lives on
                log(f"{self.name}: internal error: {type(exc).__name__}: {exc}")
            stopping.wait(self.watch.interval)

    def record(self, outcome: runtime.Outcome, began: float, ended: float) -> None:
        line = outcome.line.split(" | ", 1)[0]
        with self.lock:
            self.line = line
            if outcome.state in (runtime.OK, runtime.WARNING):
                if self.fault:
                    log(f"{self.name}: passes again ({line})")
                self.streak, self.fault = [], None
                return
            if outcome.state == runtime.UNKNOWN:  # the check cannot tell: never evidence for a move
                return
            if not self.streak:
                self.first_epoch = time.time()
            failure = policy.Failure(began, ended, runtime.failure_kind(line), line)
            self.streak = (self.streak[:1] + self.streak[1:][-self.watch.failures:]) + [failure]
            if self.fault is None and policy.confirmed(self.streak, self.watch.failures, self.watch.window,
                                                       self.rules):
                self.fault = failure
                log(f"{self.name}: {failure.kind}, confirmed after {len(self.streak)} failures: {line}")

    def reset(self, why: str) -> None:
        with self.lock:
            self.streak, self.fault, self.line = [], None, why

    def snapshot(self) -> tuple[str, float, policy.Failure] | None:
        """(service, wall clock of the streak's first failure, the confirming failure), or None."""
        with self.lock:
            return (self.name, self.first_epoch, self.fault) if self.fault is not None else None


# --- the node's watcher ------------------------------------------------------------------------


class Watcher:
    def __init__(self, config: Config, node: str, status_file: Path | None) -> None:
        if node not in config.nodes:
            raise ConfigError(f"node {node!r} is not in [nodes] ({', '.join(config.nodes)})")
        # in the cluster every tool runs here: the prefixes are for a monitoring host
        self.config = dataclasses.replace(config, nodes=dict.fromkeys(config.nodes, ""))
        self.node, self.peer = node, next(n for n in config.nodes if n != node)
        self.status_file = status_file
        self.services = [ServiceWatch(name, config.probes[name].argv, config) for name in config.watch.services]
        self.stopping = threading.Event()
        self.published: dict[str, str] = {}
        self.worker: threading.Thread | None = None
        self.acted: dict[str, float] = {}  # per node whose fault it acted on: when (monotonic)
        self.told: dict[str, str] = {}     # per node: the last decision sent to on-call (digits masked)
        self.role, self.last_result = "starting", ""

    def run(self) -> int:
        threads = [threading.Thread(target=s.loop, args=(self.stopping,), name=s.name, daemon=True)
                   for s in self.services]
        for thread in threads:
            thread.start()
        log(f"watching {', '.join(s.name for s in self.services)} on {self.node} (peer {self.peer})")
        while not self.stopping.is_set():
            try:
                self.cycle()
            except Exception as exc:  # the watcher outlives any one look at the cluster
                log(f"internal error: {type(exc).__name__}: {exc}")
            self.stopping.wait(POLL)
        if self.worker is not None and self.worker.is_alive():
            log("waiting for the takeover in progress")
            self.worker.join(STOP_WAIT)  # the agent's stop sends KILL after half its 20 s timeout
        self.attribute(self.config.watch.fault_attribute, None)
        self.attribute(self.config.watch.health_attribute, None)
        log("stopped")
        return 0

    def cycle(self) -> None:
        try:
            status = pacemaker.status("", None, TOOL_TIMEOUT)
        except (pacemaker.ToolError, pacemaker.StackDown, TimeoutError) as exc:
            self.role = f"cluster unreadable: {exc}"
            for service in self.services:
                service.active.clear()
            self.write_status()
            return
        group = self.config.group
        active = status.group_nodes(group) == {self.node} and status.group_started(group)
        self.role = "active" if active else "passive"
        for service in self.services:
            (service.active.set if active else service.active.clear)()
        # a snapshot: the probe threads go on changing their faults meanwhile
        faults = sorted((f for s in self.services if active and (f := s.snapshot()) is not None), key=self.urgency)
        if faults and self.urgency(faults[0]) and time.monotonic() - faults[0][2].ended < SETTLE:
            faults = []  # give a fault that calls for fencing (a hang, a failing spool) its chance to show
        self.publish(faults[0] if faults else None)
        if active and faults:
            self.act_myself(status, *faults[0])
        elif not active:
            self.act_for_peer(status)
        self.write_status()

    def urgency(self, fault: tuple[str, float, policy.Failure]) -> int:
        """0 for a fault the takeover answers by fencing first, 1 for one it answers with a move: when
        one fault brings others (a read-only spool fails IMAP logins too), the survivor sees the cause."""
        return 0 if self.config.probes[fault[0]].fences_first(fault[2].kind) else 1

    # --- publishing -------------------------------------------------------------------------

    def publish(self, fault: tuple[str, float, policy.Failure] | None) -> None:
        watch = self.config.watch
        self.attribute(watch.health_attribute, "yellow" if fault else "green")
        if fault is None:
            self.attribute(watch.fault_attribute, None)
            return
        name, first, failure = fault
        value = f"{time.time():.1f} {first:.1f} {name} {failure.kind} {failure.line}"
        previous = self.published.get(watch.fault_attribute) or ""
        refreshed = float(previous.split(" ", 1)[0]) if previous else 0.0
        if previous.split(" ", 2)[2:] != value.split(" ", 2)[2:] or time.time() - refreshed > 1:
            self.attribute(watch.fault_attribute, value, force=True)  # refreshed: FRESH tells a live fault

    def attribute(self, name: str, value: str | None, force: bool = False) -> None:
        """Set (or with None delete) a transient attribute of this node, only when it changes."""
        if not force and self.published.get(name) == value:
            return
        argv = ["attrd_updater", "-n", name, "-N", self.node] + (["-D"] if value is None else ["-U", value])
        try:
            done = pacemaker.run("", None, argv, TOOL_TIMEOUT)
        except (pacemaker.ToolError, TimeoutError) as exc:
            log(f"attrd_updater {name}: {exc}")
            return
        if done.returncode == 0:
            self.published[name] = value  # type: ignore[assignment]
        else:
            log(f"attrd_updater {name}: {done.stderr.strip() or done.returncode}")

    # --- acting -----------------------------------------------------------------------------

    def act_for_peer(self, status: pacemaker.Status) -> None:
        """The survivor's part: the active peer published a fresh fault."""
        value = status.attributes.get(self.peer, {}).get(self.config.watch.fault_attribute, "")
        words = value.split(" ", 4)
        try:
            published, first, service, kind, line = float(words[0]), float(words[1]), words[2], words[3], words[4]
        except (ValueError, IndexError):
            return
        if time.time() - published > FRESH or service not in self.config.probes:
            return
        self.trigger(self.peer, service, kind, line, time.time() - first)

    def act_myself(self, status: pacemaker.Status, name: str, first: float, fault: policy.Failure) -> None:
        """The degraded node's part: only when nobody else will (the peer is not online), or the
        survivor's watcher did not take over within HANDOFF seconds."""
        peer = status.node(self.peer)
        if peer is not None and peer.online and time.monotonic() - fault.ended < HANDOFF:
            return
        self.trigger(self.node, name, fault.kind, fault.line, time.time() - first)

    def trigger(self, node: str, service: str, kind: str, line: str, detection: float) -> None:
        if self.worker is not None and self.worker.is_alive():
            return
        if time.monotonic() - self.acted.get(node, -1e9) < self.config.watch.retry:
            return
        self.acted[node] = time.monotonic()
        failures = self.config.watch.failures
        event = policy.Event(node, service, "CRITICAL", "HARD", failures, failures)

        def work() -> None:
            log(f"{node}: {service} {kind} ({line}): calling the takeover")
            try:
                result = take_over(self.config, Trigger(event, f"watcher on {self.node}", line, confirmed=True,
                                                        detection=detection))
            except Exception as exc:  # the watcher outlives any single takeover
                self.last_result = f"takeover broke: {type(exc).__name__}: {exc}"
            else:
                self.last_result = result.line
                news = re.sub(r"\d+(\.\d+)?", "#", result.line)  # a retry that refuses the same is not news
                if result.label in ("ACTED", "FAILED") or self.told.get(node) != news:
                    self.told[node] = news
                    threading.Thread(target=self.tell, args=(result,), name="tell", daemon=True).start()
            log(self.last_result)

        self.worker = threading.Thread(target=work, name="takeover", daemon=True)
        self.worker.start()

    def tell(self, result: Result) -> None:
        """On-call's TAKEOVER message, off the takeover's thread (a slow mail server delays nothing)."""
        untold = announce(self.config, result, time.monotonic() + self.config.notify_timeout)
        if untold:
            log(untold)

    def write_status(self) -> None:
        if self.status_file is None:
            return
        state = {"node": self.node, "pid": os.getpid(), "role": self.role, "updated": time.time(),
                 "acting": bool(self.worker and self.worker.is_alive()), "last_takeover": self.last_result,
                 "services": {s.name: {"line": s.line, "failures": len(s.streak), "fault": s.fault is not None}
                              for s in self.services}}
        temporary = self.status_file.with_name(self.status_file.name + ".new")
        temporary.write_text(json.dumps(state) + "\n")
        temporary.replace(self.status_file)


# --- the executable ----------------------------------------------------------------------------


def this_node() -> str:
    try:
        return pacemaker.local_node(TOOL_TIMEOUT)
    except pacemaker.ToolError as exc:
        raise ConfigError(f"--node not given and {exc}") from None


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = runtime.Parser("WATCH", prog="kolabmon-watch", add_help=True,
                       description="The in-cluster watcher: probe this node's services, confirm a fault, "
                       "and have the healthy node take over.")
    p.add_argument("--config", default=os.environ.get("KOLABMON_TAKEOVER_CONFIG", DEFAULT_CONFIG))
    p.add_argument("--node", help="this node's name in [nodes] (default: crm_node -n)")
    p.add_argument("--status-file", type=Path, help="rewritten every cycle: the OCF agent's monitor reads it")
    p.add_argument("--directory", type=Path, default=Path("/usr/lib/ocf/resource.d/kolabmon"),
                   help="install-agent: where the OCF agents go")
    p.add_argument("command", nargs="?", choices=["run", "check", "install-agent"], default="run")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse(list(sys.argv[1:] if argv is None else argv))
        if args.command == "install-agent":
            from kolabmon import ocf

            where = [ocf.install(args.directory, str(Path(sys.argv[0]).resolve())),
                     *(ocf.install_service_agent(name, args.directory) for name in ocf.SERVICE_AGENTS)]
            sys.stdout.write(f"WATCH OK - installed {', '.join(map(str, where))}\n")
            return 0
        config = load(args.config)
        node = args.node or (this_node() if args.command == "run" else next(iter(config.nodes)))
        watcher = Watcher(config, node, args.status_file)
    except (runtime.UsageError, ConfigError, OSError, ValueError) as exc:
        sys.stdout.write(f"WATCH ERROR - {' '.join(str(exc).split())}\n")
        return 3
    if args.command == "check":
        sys.stdout.write(f"WATCH OK - {args.config}: watching {', '.join(s.name for s in watcher.services)}\n")
        return 0
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: watcher.stopping.set())
    return watcher.run()
