"""kolabmon-takeover in the real two-node lab cluster (Pacemaker, fencing on): the handler is run as
Icinga would run it, from the monitoring host, with the macros as argv."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kolabmon.takeover import audit as audit_log
from lab import cluster as lab
from lab import takeover_config
from tests.helpers import BIN

CA = str(lab.make_certs().ca)
IMAP = takeover_config.imap_check()
SMTP = [str(BIN / "check_kolab_smtp"), "-H", lab.CLUSTER_IP, "--starttls", "--ca-file", CA, "-t", "5"]


def event(service: str, state: str = "CRITICAL", state_type: str = "HARD", attempt: int = 1) -> list[str]:
    return ["--host", "kolab-cluster", "--service", service, "--state", state, "--state-type", state_type,
            "--attempt", str(attempt), "--max-attempts", "3"]


def handler(cluster, config: Path, *args: str, timeout: float = 200) -> subprocess.CompletedProcess[str]:
    return cluster.monitor(str(BIN / "kolabmon-takeover"), "--config", str(config), *args, timeout=timeout)


def imap_from_client(cluster, config: Path) -> subprocess.CompletedProcess[str]:
    return cluster.client(*IMAP, "--password-file", str(config.parent / "imap.pw"), timeout=20)


def audit(config: Path) -> list[dict]:
    path = config.parent / "audit.jsonl"
    return audit_log.tail(path) if path.exists() else []


@pytest.fixture
def config(cluster, tmp_path: Path) -> Path:
    lab.heal(cluster)
    return takeover_config.write(tmp_path / "takeover")


def test_hung_cyrus_soft_then_hard_moves_without_a_fence(cluster, config) -> None:
    """Without fence-first (the config's default), the move asks Pacemaker to stop the hung Cyrus:
    ocf:kolabmon:cyrus-imapd's stop ends it (CONT, TERM, then KILL), so nothing is fenced."""
    source = cluster.active_node()
    target = next(n for n in lab.NODES if n != source)
    cluster.hang(source, "imapd")
    probe = imap_from_client(cluster, config)
    assert probe.returncode == 2, probe.stdout  # the user-side probe sees the hang
    for attempt in (1, 2):  # SOFT: Icinga retries; kolabmon waits
        soft = handler(cluster, config, *event("imap", state_type="SOFT", attempt=attempt))
        assert soft.returncode == 1 and soft.stdout.startswith("TAKEOVER WAIT"), soft.stdout
        assert cluster.active_node() == source
    hard = handler(cluster, config, *event("imap"))
    assert hard.returncode == 0, hard.stdout + hard.stderr
    assert f"moved kolab {source} -> {target}" in hard.stdout and "fenced" not in hard.stdout, hard.stdout
    assert cluster.active_node() == target and lab.node_pid1(source)
    probe = imap_from_client(cluster, config)
    assert probe.returncode == 0 and "INBOX" in probe.stdout, probe.stdout  # served by the survivor
    messages = int(probe.stdout.split("messages=")[1].split(";")[0])
    assert messages >= 3  # the user's mail moved with the storage
    record = audit(config)[-1]
    assert record["moved"] and not record["fenced"] and record["verify"]["exit"] == 0
    # right after: a late HARD event of the same fault finds imap served where the group runs now
    again = handler(cluster, config, *event("imap"))
    assert again.returncode == 0 and again.stdout.startswith(f"TAKEOVER NOTHING - imap passes on {target} since "), \
        again.stdout
    assert f"moved the group {source} -> {target}" in again.stdout
    cluster.restore(source, timeout=90)
    recovered = handler(cluster, config, "recover", source)
    assert recovered.returncode == 0 and f"{source}: kolab-degraded cleared" in recovered.stdout, recovered.stdout


def test_read_only_spool_moves(cluster, config) -> None:
    source = cluster.active_node()
    target = next(n for n in lab.NODES if n != source)
    cluster.readonly_spool(source)
    storage = cluster.on(source, str(BIN / "check_kolab_storage"), "--path", str(lab.SHARED), "-t", "5")
    assert storage.returncode == 2 and "read-only" in storage.stdout, storage.stdout
    hard = handler(cluster, config, *event("storage"))
    assert hard.returncode == 0 and f"-> {target}" in hard.stdout, hard.stdout
    assert cluster.active_node() == target
    smtp = cluster.client(*SMTP)
    assert smtp.returncode == 0, smtp.stdout
    assert imap_from_client(cluster, config).returncode == 0


def test_hung_slapd_never_fights_pacemaker(cluster, config) -> None:
    source = cluster.active_node()
    cluster.hang(source, "slapd")
    started = time.monotonic()
    moves = 0
    while time.monotonic() - started < 150:
        result = handler(cluster, config, *event("ldap"))
        assert result.returncode in (0, 1), result.stdout  # acted, or waited for Pacemaker's own transition
        moves += result.stdout.startswith("TAKEOVER ACTED")
        ldap = cluster.client(*takeover_config.reprobes(config)["ldap"])
        if ldap.returncode == 0:
            break
        time.sleep(2)
    assert ldap.returncode == 0, ldap.stdout
    assert moves <= 1
    assert [r for r in audit(config) if r.get("moved")] == [r for r in audit(config) if r.get("moved")][:1]


def test_transient_fault_never_moves(cluster, config) -> None:
    source = cluster.active_node()
    cluster.hang(source, "imapd")
    soft = handler(cluster, config, *event("imap", state_type="SOFT"))
    cluster.unhang(source, "imapd")
    ok = handler(cluster, config, *event("imap", state="OK"))
    assert soft.returncode == 1 and ok.returncode == 0 and "nothing to do" in ok.stdout
    assert cluster.active_node() == source
    assert not [r for r in audit(config) if r.get("moved")]


def test_passive_node_down_refuses(cluster, config) -> None:
    source = cluster.active_node()
    passive = next(n for n in lab.NODES if n != source)
    cluster.kill_node(passive)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        result = handler(cluster, config, *event("imap"))
        if "offline" in result.stdout:
            break
        time.sleep(1)
    assert result.returncode == 1 and f"passive node {passive} is offline" in result.stdout, result.stdout
    assert cluster.active_node() == source


def test_dry_run_and_bad_macros_change_nothing(cluster, config) -> None:
    source = cluster.active_node()
    cluster.hang(source, "imapd")
    try:
        dry = handler(cluster, config, "--dry-run", *event("imap"))
        assert dry.returncode == 0 and "dry run: would move kolab" in dry.stdout, dry.stdout
        bad = handler(cluster, config, *[a if a != "HARD" else "HRAD" for a in event("imap")])
        assert bad.returncode == 3 and bad.stdout.startswith("TAKEOVER ERROR"), bad.stdout
        attrs = cluster.crm("crm_attribute", "-N", source, "-n", lab.DEGRADED_ATTRIBUTE, "-G", "-l", "reboot")
        assert attrs.returncode != 0  # no mark was set
        assert cluster.active_node() == source
    finally:
        cluster.unhang(source, "imapd")


def test_ten_concurrent_calls_move_exactly_once(cluster, config) -> None:
    source = cluster.active_node()
    cluster.hang(source, "imapd")
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: handler(cluster, config, *event("imap")), range(10)))
    acted = [r for r in results if r.stdout.startswith("TAKEOVER ACTED")]
    assert len(acted) == 1, [r.stdout for r in results]
    assert len([r for r in audit(config) if r.get("moved")]) == 1
    assert all(r.returncode in (0, 1) for r in results), [r.stdout for r in results]
    assert imap_from_client(cluster, config).returncode == 0


def lock_held_by(cluster, value: str) -> None:
    cluster.crm("cibadmin", "-o", "crm_config", "-C", "-X",
                '<cluster_property_set id="kolabmon-lock"><nvpair id="kolabmon-lock-holder" '
                f'name="kolabmon-lock-holder" value="{value}"/></cluster_property_set>')


def test_the_cluster_wide_lock_waits_for_a_live_holder_and_breaks_a_dead_ones(cluster, config) -> None:
    source = cluster.active_node()
    cluster.hang(source, "imapd")
    # a holder whose budget has not ended: the call waits what its own budget allows (here nothing)
    lock_held_by(cluster, f"watcher on node9 node=- until {int(time.time()) + 600}")
    busy = handler(cluster, config, *event("imap"), "--timeout", "190")
    assert busy.returncode == 0, busy.stdout
    assert "another takeover is still in progress (watcher on node9" in busy.stdout, busy.stdout
    assert cluster.active_node() == source
    # a holder past its budget was killed: its lock is removed (exactly that one) and the move goes on
    cluster.crm("cibadmin", "-o", "crm_config", "-D", "-X", '<cluster_property_set id="kolabmon-lock"/>')
    lock_held_by(cluster, "icinga on gone node=- until 1")
    moved = handler(cluster, config, *event("imap"))
    assert moved.returncode == 0 and moved.stdout.startswith("TAKEOVER ACTED - moved kolab"), moved.stdout
    left = cluster.crm("cibadmin", "-Q", "--xpath", "//nvpair[@id='kolabmon-lock-holder']")
    assert left.returncode != 0, left.stdout  # released after the move
    cluster.restore(source, timeout=90)
