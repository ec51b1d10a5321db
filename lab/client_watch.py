"""What users see during a fault: one check from the client machine against the cluster IP, every
0.5 s, each sample kept; the outage is read from the samples. Used by the demo and the fault campaign."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lab import takeover_config

if TYPE_CHECKING:
    from lab.cluster import Cluster


def imap_login(secret: Path) -> list[str]:
    """A mail user's IMAP login on the cluster IP (the takeover's own IMAP check), 1 s timeout; the
    password from `secret`."""
    return [*takeover_config.imap_check("1"), "--password-file", str(secret)]


class ClientWatch(threading.Thread):
    """Runs `argv` (a check, exit 0 = served) in the client namespace every 0.5 s until stopped."""

    def __init__(self, cluster: Cluster, argv: Sequence[str], name: str = "IMAP") -> None:
        super().__init__(daemon=True)
        self.cluster, self.argv, self.what = cluster, list(argv), name
        self.samples: list[tuple[float, bool]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            proc = self.cluster.client(*self.argv, timeout=10)
            self.samples.append((time.time(), proc.returncode == 0))
            time.sleep(0.5)

    def outage(self, since: float) -> tuple[float, float] | None:
        """(first failed, first OK again) after `since`; None if nothing failed or it is not back."""
        failed = next((t for t, ok in self.samples if t >= since and not ok), None)
        if failed is None:
            return None
        back = next((t for t, ok in self.samples if t > failed and ok), None)
        return (failed, back) if back else None

    def failed_since(self, since: float) -> bool:
        return any(not ok for t, ok in self.samples if t >= since)
