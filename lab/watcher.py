"""kolabmon's in-cluster watcher in the lab cluster: the admin's one-time setup (a clone of
ocf:kolabmon:watcher, the agent lab/build.py installs into the host's /usr/lib/ocf, which the nodes
share), taking it out again, and clearing what kolabmon keeps in the CIB between tests.

In crm shell terms the clone is::

    crm configure primitive kolabmon-watcher ocf:kolabmon:watcher params config=/etc/kolabmon/takeover.toml \\
        op monitor interval=10s timeout=20s
    crm configure clone kolabmon-watcher-clone kolabmon-watcher meta interleave=true allow-unhealthy-nodes=true
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from lab import pcmk
from lab.topology import NODELOG, NODES
from lab.util import LabError

if TYPE_CHECKING:
    from lab.cluster import Cluster

RESOURCE, CLONE = "kolabmon-watcher", "kolabmon-watcher-clone"
LOG = NODELOG / "kolabmon-watch.log"  # each node's own log directory


def clone_xml(config: Path) -> str:
    meta = pcmk.nvpairs(CLONE + "-meta", {"interleave": "true", "allow-unhealthy-nodes": "true"})
    watch = pcmk.primitive(RESOURCE, "ocf:kolabmon:watcher", {"config": str(config), "log": str(LOG)},
                           ("20s", "20s", "20s"))
    return f'<clone id="{CLONE}"><meta_attributes id="{CLONE}-meta">{meta}</meta_attributes>{watch}</clone>'


def running_on(cluster: Cluster) -> set[str]:
    """The nodes where Pacemaker reports the watcher started."""
    return {node for r in cluster.status().resources if r.id == RESOURCE and r.active for node in r.nodes}


def enable(cluster: Cluster, config: Path, timeout: float = 40.0) -> float:
    """Run the watcher on every running node with `config`; seconds until Pacemaker had it started."""
    disable(cluster)
    started = time.monotonic()
    res = cluster.crm("cibadmin", "-o", "resources", "-C", "-X", clone_xml(config))
    if res.returncode != 0:
        raise LabError(f"cibadmin: cannot add {CLONE}: {res.stderr.strip()[-300:]}")
    want = set(cluster.running_nodes())
    cluster.wait_for(f"{RESOURCE} started on {' '.join(sorted(want))}",
                     lambda status: want <= {n for r in status.resources if r.id == RESOURCE and r.active
                                             for n in r.nodes} or None, timeout=timeout)
    return time.monotonic() - started


def disable(cluster: Cluster, timeout: float = 40.0) -> None:
    """Take the clone out (Pacemaker stops the watchers as orphans) and wait until none runs."""
    res = cluster.crm("cibadmin", "-Q", "--xpath", f"//clone[@id='{CLONE}']")
    if res.returncode != 0:
        return
    cluster.crm("cibadmin", "-o", "resources", "-D", "-X", f'<clone id="{CLONE}"/>')
    cluster.wait_for(f"{RESOURCE} stopped", lambda status: not any(
        r.id == RESOURCE and r.active for r in status.resources) or None, timeout=timeout)


def forget_takeovers(cluster: Cluster) -> None:
    """kolabmon's lock and last move out of the CIB, and the watchers' node attributes: the next test
    starts without a cool-down or a stale fault."""
    for set_id in ("kolabmon-lock", "kolabmon-state"):
        cluster.crm("cibadmin", "-o", "crm_config", "-D", "-X", f'<cluster_property_set id="{set_id}"/>')
    for node in NODES:
        for name in ("kolabmon-fault", "#health-kolabmon"):
            cluster.crm("attrd_updater", "-n", name, "-N", node, "-D")
