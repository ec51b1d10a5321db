"""A plain-command backend (keepalived or any home-made cluster): the admin gives argv templates.

[commands]
active  = ["lab/on", "node1", "cat", "/run/keepalived.state"]   # prints the active node's name
move    = ["lab/on", "{from}", "pkill", "-USR1", "keepalived"]  # {from} {to} are filled in
peer_ok = ["lab/on", "{node}", "true"]                           # optional: exit 0 = node healthy
recover = ["lab/on", "{node}", "rm", "-f", "/run/kolab-degraded"]  # optional

Such a cluster has no shared store kolabmon could use: the lock is an flock on `lock` and the last
move a line in the state directory, so triggers on one host see each other, and only those.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time

from kolabmon.takeover import policy
from kolabmon.takeover.backends import MOVED, TIMEOUT, BackendError, Settled, other
from kolabmon.takeover.config import Config

TOOL_TIMEOUT = 15.0


class CommandBackend:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.fd: int | None = None
        self.moves = config.lock.parent / "last-move"

    def run(self, key: str, **fill: str) -> subprocess.CompletedProcess[str]:
        argv = [word.replace("{from}", fill.get("source", "")).replace("{to}", fill.get("target", ""))
                .replace("{node}", fill.get("node", "")) for word in self.config.commands[key]]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT,
                                  stdin=subprocess.DEVNULL, errors="replace")
        except FileNotFoundError:
            raise BackendError(f"[commands] {key}: {argv[0]} not found") from None
        except subprocess.TimeoutExpired:
            raise BackendError(f"[commands] {key} did not finish in {TOOL_TIMEOUT:.0f} s") from None

    def active(self) -> str | None:
        proc = self.run("active")
        name = proc.stdout.strip()
        return name if proc.returncode == 0 and name in self.config.nodes else None

    def cluster(self) -> policy.Cluster:
        active = self.active()
        passive = other(self.config, active)
        healthy = passive is not None and ("peer_ok" not in self.config.commands
                                           or self.run("peer_ok", node=passive).returncode == 0)
        return policy.Cluster(quorate=True, active=active, passive=passive, passive_online=healthy,
                              passive_member=healthy, passive_degraded=False)

    def setup_problem(self) -> str | None:
        return None

    def acquire(self, holder: str, until: float) -> str | None:
        self.config.lock.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(self.config.lock, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return "another kolabmon-takeover on this host"
        self.fd = fd
        return None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def last_move(self) -> policy.LastMove | None:
        try:
            words = self.moves.read_text().split(" ", 3)
            return policy.LastMove(float(words[0]), words[1], words[2], words[3].strip())
        except (OSError, ValueError, IndexError):
            return None

    def note_move(self, move: policy.LastMove) -> None:
        temporary = self.moves.with_suffix(".new")
        temporary.write_text(f"{move.epoch:.0f} {move.source} {move.target} {move.origin}\n")
        temporary.replace(self.moves)

    def fence(self, source: str, target: str, timeout: float) -> str | None:
        return "the command backend cannot fence"

    def local_node(self) -> str | None:
        return None

    def move(self, source: str, target: str) -> None:
        proc = self.run("move", source=source, target=target)
        if proc.returncode != 0:
            raise BackendError(f"[commands] move failed: {proc.stderr.strip() or f'exit {proc.returncode}'}")

    def settle(self, source: str, target: str, timeout: float) -> Settled:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.active() == target:
                return Settled(MOVED, f"{target} is active")
            time.sleep(0.5)
        return Settled(TIMEOUT, f"{target} not active after {timeout:.0f} s")

    def recover(self, node: str) -> str:
        if node not in self.config.nodes:
            raise BackendError(f"unknown node {node} (known: {', '.join(self.config.nodes)})")
        if "recover" not in self.config.commands:
            return f"{node}: nothing to clear (no [commands] recover)"
        proc = self.run("recover", node=node)
        if proc.returncode != 0:
            raise BackendError(f"[commands] recover failed: {proc.stderr.strip() or f'exit {proc.returncode}'}")
        return f"{node}: recovered"
