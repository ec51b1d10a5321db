"""kolabmon-watch in the real two-node lab cluster, run by Pacemaker through ocf:kolabmon:watcher:
detection inside the cluster, fence-first on a hang, exactly one move whoever triggers, and no move
where Pacemaker's restart in place serves users."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kolabmon.takeover import audit as audit_log
from lab import cluster as lab
from lab import takeover_config, watcher
from tests.helpers import BIN

HARD = ["--host", "kolab-cluster", "--service", "imap", "--state", "CRITICAL", "--state-type", "HARD",
        "--attempt", "1", "--max-attempts", "3"]


@pytest.fixture
def config(cluster, tmp_path: Path):
    lab.heal(cluster)
    path = takeover_config.write(tmp_path / "takeover", fence=True, cooldown=600)
    yield path
    watcher.disable(cluster)


def records(config: Path) -> list[dict]:
    path = config.parent / "audit.jsonl"
    return audit_log.tail(path) if path.exists() else []


def imap_ok(cluster, config: Path, timeout: str = "1") -> bool:
    argv = [*takeover_config.imap_check(timeout), "--password-file", str(config.parent / "imap.pw")]
    return cluster.client(*argv, timeout=10).returncode == 0


def wait_until(what: str, check, timeout: float, step: float = 0.25) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def test_watcher_fences_a_hung_cyrus_with_the_monitoring_host_cut_off(cluster, config) -> None:
    watcher.enable(cluster, config)
    source = cluster.active_node()
    target = next(n for n in lab.NODES if n != source)
    cluster.cut_monitor()  # no Icinga, no monitoring host: the cluster is on its own
    try:
        cluster.hang(source, "imapd")
        back = wait_until("IMAP served again", lambda: imap_ok(cluster, config), timeout=30)
    finally:
        cluster.heal_monitor()
    assert back < 15, f"users waited {back:.1f} s"  # the bench measures it; this only bounds it
    assert cluster.wait_group(timeout=30, not_on=source) == target
    wait_until("the takeover's record", lambda: any("moved" in r for r in records(config)), timeout=30)
    moves = [r for r in records(config) if r.get("moved")]
    assert len(moves) == 1, moves
    move = moves[0]
    assert move["origin"] == f"watcher on {target}" and move["fence_first"] == "done" and move["fenced"]
    assert move["second_opinion"]["kind"] == "hung" and move["verify"]["exit"] == 0
    assert "detect" in move["durations"]
    # Icinga's late trigger for the same fault moves nothing and says who moved
    again = cluster.monitor(str(BIN / "kolabmon-takeover"), "--config", str(config), *HARD, timeout=60)
    assert again.returncode == 0, again.stdout
    assert f"imap passes on {target} since watcher on {target} moved the group {source} -> {target}" in again.stdout
    cluster.restore(source, timeout=90)


def test_two_second_blips_never_move(cluster, config) -> None:
    watcher.enable(cluster, config)
    source = cluster.active_node()
    for _ in range(5):
        cluster.hang(source, "imapd")
        time.sleep(2)
        cluster.unhang(source, "imapd")
        time.sleep(2)
    time.sleep(3)
    assert cluster.active_node() == source
    assert [r for r in records(config) if "event" in r] == []  # not even a decision was asked for


def test_killed_postfix_master_is_restarted_in_place_not_moved(cluster, config) -> None:
    watcher.enable(cluster, config)
    source = cluster.active_node()
    smtp = [str(BIN / "check_kolab_smtp"), "-H", lab.CLUSTER_IP, "--starttls", "--ca-file",
            str(lab.make_certs().ca), "-t", "3"]
    cluster.crash(source, "postfix")
    down = wait_until("SMTP refused", lambda: cluster.client(*smtp).returncode != 0, timeout=10)
    back = wait_until("SMTP restarted", lambda: cluster.client(*smtp).returncode == 0, timeout=60, step=1)
    assert down < 10 and back < 40
    time.sleep(5)
    assert cluster.active_node() == source  # Pacemaker restarted it where it was
    assert [r for r in records(config) if r.get("moved")] == []


def test_passive_node_down_then_a_hang_is_refused_and_recorded(cluster, config) -> None:
    source = cluster.active_node()
    target = next(n for n in lab.NODES if n != source)
    cluster.kill_node(target)
    cluster.wait_for(f"{target} fenced", lambda s: (n := s.node(target)) is not None and not n.online or None,
                     timeout=30)
    watcher.enable(cluster, config)
    cluster.hang(source, "imapd")
    wait_until("a refusal", lambda: any(r.get("decision") == "refuse" for r in records(config)), timeout=30)
    refusal = next(r for r in records(config) if r.get("decision") == "refuse")
    assert refusal["origin"] == f"watcher on {source}"
    assert refusal["reason"] == f"passive node {target} is offline"
    assert cluster.active_node() in (source, None)
    cluster.unhang(source, "imapd")
    cluster.restore(target, timeout=90)


def test_ten_concurrent_triggers_from_three_places_move_once(cluster, config) -> None:
    """Icinga's handler on the monitoring host and on each node's agent, and the watchers: one move."""
    local = takeover_config.write(config.parent, fence=True, on_node=True, name="takeover-on-node.toml")
    watcher.enable(cluster, config)
    source = cluster.active_node()
    target = next(n for n in lab.NODES if n != source)
    places = ["monitor"] * 4 + ["node1"] * 3 + ["node2"] * 3
    cluster.hang(source, "imapd")

    def trigger(place: str) -> subprocess.CompletedProcess[str]:
        path = config if place == "monitor" else local
        return cluster.on(place, str(BIN / "kolabmon-takeover"), "--config", str(path), *HARD,
                          "--output", "IMAP CRITICAL - no answer within 4 s (while LOGIN)", timeout=200)

    with ThreadPoolExecutor(len(places)) as pool:
        results = list(pool.map(trigger, places))
    wait_until("IMAP served again", lambda: imap_ok(cluster, config), timeout=60)
    assert cluster.wait_group(timeout=30, not_on=source) == target
    wait_until("the takeover's record", lambda: any("moved" in r for r in records(config)), timeout=30)
    moves = [r for r in records(config) if r.get("moved")]  # a handler on the fenced node records it first
    assert len(moves) == 1, [r.get("reason") for r in records(config)]
    # every call that outlived the fence ended in words: acted, found the work done or in progress,
    # or the cool-down (a call on the fenced node dies with it)
    for place, result in zip(places, results, strict=True):
        if place != source:
            assert result.returncode in (0, 1) and result.stdout.startswith("TAKEOVER "), result.stdout
    cluster.restore(source, timeout=90)
