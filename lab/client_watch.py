"""What users see during a fault: one check from the client machine against the cluster IP, every
0.5 s, each sample kept; the outage is read from the samples. Used by the demo and the fault campaign."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lab.topology import CLUSTER_IP

if TYPE_CHECKING:
    from lab.cluster import Cluster

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
USER = "user1@example.org"


def imap_login(secret: Path) -> list[str]:
    """A mail user's IMAP login on the cluster IP (STARTTLS, the lab CA); the password from `secret`."""
    from lab.cluster import make_certs

    return [str(BIN / "check_kolab_imap"), "-H", CLUSTER_IP, "--starttls", "--ca-file", str(make_certs().ca),
            "-u", USER, "--password-file", str(secret), "-t", "1"]


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
