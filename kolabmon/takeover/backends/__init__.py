"""The small interface every cluster manager fits behind: read, lock, move or fence, settle, recover.

The lock and the record of the last move belong to the cluster where it can keep them (Pacemaker:
the CIB), so that every trigger — Icinga's handler on a master or an agent, the watcher on either
node — sees the same ones: one fault, one move, one cool-down."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kolabmon.takeover import policy
from kolabmon.takeover.config import Config

MOVED, BLOCKED, TIMEOUT = "moved", "blocked", "timeout"


class BackendError(Exception):
    """The cluster manager could not be read or refused a command (one line for the admin)."""


@dataclass
class Settled:
    """How a move ended: moved, blocked (what the admin must do is in `detail`), or timeout."""

    outcome: str
    detail: str
    fenced: bool = False


class Backend(Protocol):
    def cluster(self) -> policy.Cluster:
        """The cluster now, as the policy needs it."""

    def setup_problem(self) -> str | None:
        """What in the admin's one-time setup is missing for a move (None: all there)."""

    def acquire(self, holder: str, until: float) -> str | None:
        """Take the takeover lock for `holder` until the epoch `until` (a holder past its `until` was
        killed: its lock is broken); None once held, else the current holder's words."""

    def release(self) -> None:
        """Give the lock back (only the one this backend took)."""

    def last_move(self) -> policy.LastMove | None:
        """The last move kolabmon made in this cluster, for the cool-down."""

    def note_move(self, move: policy.LastMove) -> None:
        """Record a move as it starts: from then on every trigger sees the cool-down."""

    def move(self, source: str, target: str) -> None:
        """Ask the cluster manager to move the group away from `source`."""

    def local_node(self) -> str | None:
        """The cluster node this process runs on, if any (a handler on an Icinga agent, the watcher)."""

    def fence(self, source: str, target: str, timeout: float) -> str | None:
        """Power `source` off at once, asked from `target` (a hung service's stop would hang too);
        None once the cluster confirms it, else why it was not done."""

    def settle(self, source: str, target: str, timeout: float) -> Settled:
        """Follow the move (fencing included) until the group runs on `target`, blocks, or time is up."""

    def recover(self, node: str) -> str:
        """Clear the marks kolabmon set on `node` so it may host again; returns what was done."""


def make(config: Config) -> Backend:
    if config.backend == "command":
        from kolabmon.takeover.backends.command import CommandBackend

        return CommandBackend(config)
    from kolabmon.takeover.backends.pacemaker import PacemakerBackend

    return PacemakerBackend(config)


def other(config: Config, node: str | None) -> str | None:
    """The node that is not `node` (two-node clusters)."""
    rest = [n for n in config.nodes if n != node]
    return rest[0] if node in config.nodes and rest else None
