"""The takeover's TOML config, validated up front: any mistake is one line and exit 3."""

from __future__ import annotations

import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kolabmon import runtime
from kolabmon.takeover.policy import Rules

DEFAULT_STATE_DIR = Path("/var/lib/kolabmon")
# Icinga's EventCommand "kolabmon-takeover" has `timeout = 300`: a takeover ends this much earlier
# (interpreter start, the audit record), so Icinga never kills one mid-move.
DEFAULT_BUDGET = 290.0
BUDGET_MARGIN = 10.0


class ConfigError(Exception):
    """The config file is missing, unreadable or wrong."""


@dataclass(frozen=True)
class Probe:
    """How to re-probe a failover-relevant service: argv (no shell), run here or on the active node."""

    argv: tuple[str, ...]
    on_active_node: bool = False
    fence_first: str = "hang"  # with fence = true: fence the node first on a "hang", "always" or "never"

    def fences_first(self, kind: str) -> bool:
        """Is a failure of this `kind` (runtime.failure_kind) answered by fencing the node first?"""
        return self.fence_first == "always" or (self.fence_first == "hang" and kind == runtime.HUNG)


@dataclass(frozen=True)
class Watch:
    """kolabmon-watch, the resident watcher on each node: how often it probes, how long a probe may
    take, and how many failures in a row (ending within `window` seconds) confirm a fault. With the
    defaults a hang is confirmed 2.75-3 s after it starts (two 1.25 s timeouts and the pause between);
    a 2 s blip fails one probe at most: only a probe that starts in its first 0.75 s gets no answer
    within 1.25 s, and the next one starts 1.5 s after that one, so the server answers it in time."""

    interval: float = 0.25
    timeout: float = 1.25
    failures: int = 2
    window: float = 10.0
    services: tuple[str, ...] = ()              # the services it probes (default: all of [services])
    retry: float = 30.0                         # after a refused or failed takeover, act again at most this often
    fault_attribute: str = "kolabmon-fault"     # the node attribute that says what failed on a node
    health_attribute: str = "#health-kolabmon"  # Pacemaker's node health: green or yellow, never red


@dataclass(frozen=True)
class Config:
    cluster: str
    nodes: dict[str, str]                     # node name → command prefix ('' = local)
    group: str
    rules: Rules
    probes: dict[str, Probe]                  # service name → re-probe
    backend: str = "pacemaker"
    move: str = "attribute"                   # pacemaker: attribute | crm_resource
    attribute: str = "kolab-degraded"
    fence: bool = False                       # may ask Pacemaker to fence a blocked degraded node
    transition_timeout: float = 120.0
    probe_timeout: float = 15.0
    hang_probe_timeout: float = 3.0           # second opinion on a hang: a healthy server answers well within it
    budget: float = DEFAULT_BUDGET            # every takeover ends within this many seconds
    lock: Path = DEFAULT_STATE_DIR / "takeover.lock"
    audit: Path = DEFAULT_STATE_DIR / "audit.jsonl"
    commands: dict[str, tuple[str, ...]] = field(default_factory=dict)  # the command backend's argv
    watch: Watch = field(default_factory=Watch)
    notify: tuple[str, ...] = ()              # kolabmon-notify's argv (where to): the takeover's own messages
    notify_timeout: float = 30.0

    def move_needs(self) -> float:
        """The longest one takeover can take once it holds the lock: second opinion (with Pacemaker's
        restart in place first), the transition, the verification. The budget must hold it."""
        return (self.probe_timeout + self.rules.restart_grace + self.transition_timeout
                + runtime.REPROBE_WINDOWS * self.probe_timeout)


def _get(table: dict, key: str, kind: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}: missing '{key}'")
        return default
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # TOML's true is a Python int too: a flag where a number belongs is a typo, not 1
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in kinds):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}: '{key}' must be {names}, not {type(value).__name__}")
    return value


def _positive(table: dict, key: str, default: float, where: str = "config") -> float:
    value = float(_get(table, key, (int, float), where, default))
    if not value > 0:  # also refuses nan
        raise ConfigError(f"{where}: '{key}' must be a positive number of seconds, not {value:g}")
    return value


def _watch(table: dict, services: dict[str, Probe]) -> Watch:
    _only(table, WATCH, "in [watch]")
    names = _get(table, "services", list, "[watch]", list(services))
    unknown = [name for name in names if not isinstance(name, str) or name not in services]
    if unknown or not names:
        raise ConfigError(f"[watch]: 'services' must name services of [services] ({', '.join(services)}), "
                          f"not {', '.join(map(str, unknown)) or 'none'}")
    failures = _get(table, "failures", int, "[watch]", Watch.failures)
    if failures < 1:
        raise ConfigError("[watch]: 'failures' must be 1 or more")
    watch = Watch(interval=_positive(table, "interval", Watch.interval, "[watch]"),
                  timeout=_positive(table, "timeout", Watch.timeout, "[watch]"), failures=failures,
                  window=_positive(table, "window", Watch.window, "[watch]"), services=tuple(names),
                  retry=_positive(table, "retry", Watch.retry, "[watch]"),
                  fault_attribute=str(_get(table, "fault_attribute", str, "[watch]", Watch.fault_attribute)),
                  health_attribute=str(_get(table, "health_attribute", str, "[watch]", Watch.health_attribute)))
    shortest = watch.failures * watch.timeout + (watch.failures - 1) * watch.interval
    if watch.window < shortest:
        raise ConfigError(f"[watch]: 'window' {watch.window:g} s is shorter than {watch.failures} hung probes take "
                          f"({shortest:g} s): a hang could never be confirmed")
    if not watch.fault_attribute.strip() or " " in watch.fault_attribute or watch.fault_attribute.startswith("#"):
        raise ConfigError("[watch]: 'fault_attribute' must be one word, not a #health- attribute")
    if not watch.health_attribute.startswith("#health-") or " " in watch.health_attribute:
        raise ConfigError("[watch]: 'health_attribute' must start with #health- (Pacemaker's node health)")
    return watch


def _notify(table: dict) -> dict[str, Any]:
    """[notify]: the kolabmon-notify command (argv without the message's own arguments) that tells
    on-call what a takeover decided; the takeover adds --type TAKEOVER, the event and its record."""
    _only(table, NOTIFY, "in [notify]")
    if not table:
        return {}
    return {"notify": _argv(_get(table, "command", (list, str), "[notify]"), "[notify] command"),
            "notify_timeout": _positive(table, "timeout", 30, "[notify]")}


def _argv(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = shlex.split(value)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be a non-empty list of strings (argv, no shell)")
    return tuple(value)


# The keys each table may hold. A misspelt key is refused, never ignored: a 'prefx' would leave a node
# local, an 'onn' would re-probe on the wrong node, and neither would say so until a takeover.
TOP_LEVEL = frozenset({"cluster", "group", "hosts", "cooldown", "soft_attempt", "backend", "move", "attribute",
                       "fence", "transition_timeout", "probe_timeout", "hang_probe_timeout", "restart_grace",
                       "budget", "state_dir", "lock", "audit", "nodes", "services", "commands", "watch",
                       "notify"})
NODE = frozenset({"prefix"})                                   # [nodes.NODE]
SERVICE = frozenset({"reprobe", "on", "fence_first"})          # [services.SERVICE]
COMMANDS = frozenset({"active", "move", "peer_ok", "recover"})  # [commands], the command backend's argv
WATCH = frozenset({"interval", "timeout", "failures", "window", "services", "retry", "fault_attribute",
                   "health_attribute"})                       # [watch]
NOTIFY = frozenset({"command", "timeout"})                     # [notify]


def _only(table: dict, known: frozenset[str], where: str) -> None:
    """Refuse any key `table` may not hold; `where` names the table ('in [nodes.node1]')."""
    unknown = sorted(set(table) - known)
    if not unknown:
        return
    import difflib  # only on this error path: a good config does not pay for it

    close = difflib.get_close_matches(unknown[0], known, 1) if len(unknown) == 1 else []
    keys = ", ".join(repr(key) for key in unknown)
    raise ConfigError(f"config error: unknown key{'s' if len(unknown) > 1 else ''} {keys} {where}"
                      + (f" (did you mean {close[0]!r}?)" if close else ""))


def load(path: str | Path) -> Config:
    """Read and validate the config; ConfigError with one line on any problem."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not UTF-8 text") from None
    _only(data, TOP_LEVEL, "at the top level")
    nodes_table = _get(data, "nodes", dict, "config")
    nodes: dict[str, str] = {}
    for name, node in nodes_table.items():
        if not isinstance(node, dict):
            raise ConfigError(f"[nodes.{name}] must be a table")
        _only(node, NODE, f"in [nodes.{name}]")
        nodes[name] = str(_get(node, "prefix", str, f"[nodes.{name}]", ""))
    if len(nodes) != 2:
        raise ConfigError(f"config: [nodes] must name exactly two nodes, not {len(nodes)}")
    probes: dict[str, Probe] = {}
    for name, service in _get(data, "services", dict, "config").items():
        if not isinstance(service, dict):
            raise ConfigError(f"[services.{name}] must be a table")
        where = f"[services.{name}]"
        _only(service, SERVICE, f"in {where}")
        on = _get(service, "on", str, where, "here")
        if on not in ("here", "active"):
            raise ConfigError(f"{where}: 'on' must be \"here\" or \"active\"")
        fence_first = _get(service, "fence_first", str, where, "hang")
        if fence_first not in ("hang", "always", "never"):
            raise ConfigError(f"{where}: 'fence_first' must be \"hang\", \"always\" or \"never\"")
        probes[name] = Probe(_argv(_get(service, "reprobe", (list, str), where), f"{where} reprobe"),
                             on_active_node=on == "active", fence_first=fence_first)
    if not probes:
        raise ConfigError("config: [services] names no failover-relevant service")
    cluster = str(_get(data, "cluster", str, "config"))
    hosts = _get(data, "hosts", list, "config", [cluster, *nodes])
    if not all(isinstance(h, str) for h in hosts):
        raise ConfigError("config: 'hosts' must be a list of Icinga host names")
    soft = _get(data, "soft_attempt", int, "config", 0)
    cooldown = _get(data, "cooldown", (int, float), "config", 600)
    grace = _get(data, "restart_grace", (int, float), "config", Rules.restart_grace)
    for key, value in (("soft_attempt", soft), ("cooldown", cooldown), ("restart_grace", grace)):
        if value < 0:
            raise ConfigError(f"config: '{key}' must not be negative")
    backend = _get(data, "backend", str, "config", "pacemaker")
    if backend not in ("pacemaker", "command"):
        raise ConfigError(f"config: unknown backend {backend!r} (pacemaker, command)")
    move = _get(data, "move", str, "config", "attribute")
    if move not in ("attribute", "crm_resource"):
        raise ConfigError(f"config: unknown move {move!r} (attribute, crm_resource)")
    commands_table = _get(data, "commands", dict, "config", {})
    _only(commands_table, COMMANDS, "in [commands]")
    commands = {key: _argv(value, f"[commands] {key}") for key, value in commands_table.items()}
    if backend == "command":
        missing = {"active", "move"} - set(commands)
        if missing:
            raise ConfigError(f"config: backend command needs [commands] {', '.join(sorted(missing))}")
    state_dir = Path(str(_get(data, "state_dir", str, "config", str(DEFAULT_STATE_DIR))))
    config = Config(
        cluster=cluster, nodes=nodes, group=str(_get(data, "group", str, "config", "kolab")),
        rules=Rules(hosts=frozenset(hosts), services=frozenset(probes),
                    soft_attempt=soft or None, cooldown=float(cooldown), restart_grace=float(grace)),
        probes=probes, backend=str(backend), move=str(move),
        attribute=str(_get(data, "attribute", str, "config", "kolab-degraded")),
        fence=bool(_get(data, "fence", bool, "config", False)),
        transition_timeout=_positive(data, "transition_timeout", 120),
        probe_timeout=_positive(data, "probe_timeout", 15),
        hang_probe_timeout=_positive(data, "hang_probe_timeout", 3),
        budget=_positive(data, "budget", DEFAULT_BUDGET),
        lock=Path(str(_get(data, "lock", str, "config", str(state_dir / "takeover.lock")))),
        audit=Path(str(_get(data, "audit", str, "config", str(state_dir / "audit.jsonl")))),
        commands=commands, watch=_watch(_get(data, "watch", dict, "config", {}), probes),
        **_notify(_get(data, "notify", dict, "config", {})))
    if config.budget < config.move_needs():
        raise ConfigError(f"config: 'budget' {config.budget:g} s cannot hold one takeover: probe_timeout, "
                          f"restart_grace, transition_timeout and the verification need {config.move_needs():g} s "
                          "(raise the budget and the EventCommand's timeout, or lower those)")
    return config
