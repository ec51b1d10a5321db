"""The small interface every cluster manager fits behind: read, move, settle, fence, recover."""

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

    def move(self, source: str, target: str) -> None:
        """Ask the cluster manager to move the group away from `source`."""

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
