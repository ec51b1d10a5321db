"""check_kolab_heartbeat against the real two-node lab cluster, and the client-side probes on the
cluster IP from the client namespace, whichever node is active."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pytest

from lab import cluster as lab
from lab import servers
from tests.helpers import BIN, assert_plugin_output

CA = str(lab.make_certs().ca)


def heartbeat(node: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "check_kolab_heartbeat"), "-H", node, "--command-prefix", lab.NODE_COMMAND_PREFIX,
                           *args], capture_output=True, text=True, timeout=30)


Result = subprocess.CompletedProcess[str]


def until(check: Callable[[], Result], done: Callable[[Result], bool], timeout: float = 30) -> Result:
    """Poll a plugin until its answer satisfies `done` (the cluster needs a moment to notice)."""
    deadline = time.monotonic() + timeout
    result = check()
    while not done(result) and time.monotonic() < deadline:
        time.sleep(0.5)
        result = check()
    return result


@pytest.fixture
def healthy(cluster):
    lab.heal(cluster)
    yield cluster
    lab.heal(cluster)


def test_healthy_is_ok_naming_the_active_node(healthy) -> None:
    active = healthy.active_node()
    for node in lab.NODES:
        run = heartbeat(node)
        match = assert_plugin_output(run.stdout, run.returncode)
        assert run.returncode == 0, run.stdout
        assert f"kolab active on {active}, 2/2 nodes online, quorate, 2/2 links up" in run.stdout
        assert "nodes_online=2" in match["perf"] and "heartbeat_age=" in match["perf"]


def test_interconnect_cut_warns_and_both_links_cut_is_critical(healthy) -> None:
    active = healthy.active_node()
    healthy.cut_interconnect()
    try:
        run = until(lambda: heartbeat(active), lambda r: r.returncode != 0)
        assert_plugin_output(run.stdout, run.returncode)
        assert run.returncode == 1 and "link 0 to" in run.stdout and "(1 of 2 up)" in run.stdout, run.stdout
    finally:
        healthy.heal_interconnect()
    assert until(lambda: heartbeat(active), lambda r: r.returncode == 0).returncode == 0
    healthy.cut_all()  # a full partition: fencing leaves one winner, the other node is fenced
    try:
        survivor = None
        deadline = time.monotonic() + 40
        while survivor is None and time.monotonic() < deadline:
            survivor = next((n for n in lab.NODES if lab.node_pid1(n) and len(healthy.running_nodes()) == 1), None)
            time.sleep(0.5)
        assert survivor, "no node was fenced in a full partition"
        run = until(lambda: heartbeat(survivor), lambda r: r.returncode == 2)
        assert_plugin_output(run.stdout, run.returncode)
        assert run.returncode == 2 and "offline" in run.stdout, run.stdout
    finally:
        healthy.heal_all()


def test_peer_killed_is_critical(healthy) -> None:
    active = healthy.active_node()
    passive = next(n for n in lab.NODES if n != active)
    healthy.kill_node(passive)
    run = until(lambda: heartbeat(active), lambda r: f"{passive} offline" in r.stdout)
    assert_plugin_output(run.stdout, run.returncode)
    assert run.returncode == 2 and f"{passive} offline" in run.stdout and "1/2 nodes online" in run.stdout


def test_leftover_move_constraint_warns(healthy) -> None:
    active = healthy.active_node()
    passive = next(n for n in lab.NODES if n != active)
    healthy.crm("crm_resource", "--ban", "-r", lab.GROUP, "-N", passive)  # pins the group: blocks the next takeover
    try:
        run = heartbeat(active)
        assert_plugin_output(run.stdout, run.returncode)
        assert run.returncode == 1 and f"leftover move constraints cli-ban-{lab.GROUP}-on-{passive}" in run.stdout
    finally:
        healthy.crm("crm_resource", "--clear", "-r", lab.GROUP)


def test_failed_action_warns(healthy) -> None:
    active = healthy.active_node()
    healthy.on(active, "pkill", "-KILL", "-x", "nginx")  # Pacemaker's monitor sees it and restarts it in place
    run = until(lambda: heartbeat(active), lambda r: "failed actions" in r.stdout and r.returncode == 1, timeout=40)
    assert_plugin_output(run.stdout, run.returncode)
    assert run.returncode == 1 and "failed actions: web_monitor" in run.stdout and "fail-counts: web" in run.stdout


def test_fencing_disabled_warns(healthy) -> None:
    active = healthy.active_node()
    healthy.crm("crm_attribute", "--type", "crm_config", "-n", "stonith-enabled", "-v", "false")
    try:
        run = heartbeat(active)
        assert_plugin_output(run.stdout, run.returncode)
        assert run.returncode == 1 and "fencing disabled: a takeover from a hung node will block" in run.stdout
    finally:
        healthy.crm("crm_attribute", "--type", "crm_config", "-n", "stonith-enabled", "-v", "true")


def test_client_probes_on_the_cluster_ip_whichever_node_is_active(healthy, tmp_path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(servers.USERS["user1@example.org"])
    ldap_secret = tmp_path / "ldap.pw"
    ldap_secret.write_text(servers.LDAP_SERVICE_PASSWORD)
    ip = lab.CLUSTER_IP
    login = ["-u", "user1@example.org", "--password-file", str(secret)]
    probes = [
        ["check_kolab_imap", "-H", ip, "--starttls", "--ca-file", CA, *login],
        ["check_kolab_imap", "-H", ip, "--tls", "--ca-file", CA, *login],
        ["check_kolab_smtp", "-H", ip, "--starttls", "--ca-file", CA, *login, "--expect-ext", "STARTTLS,AUTH"],
        ["check_kolab_ldap", "-H", ip, "-D", servers.LDAP_SERVICE_DN, "--password-file", str(ldap_secret),
         "-b", servers.LDAP_BASE, "-f", "(uid=user1)"],
        ["check_kolab_freebusy", "--url", f"http://{ip}/freebusy/user1@example.org.ifb", *login],
        ["check_kolab_roundtrip", "-H", ip, "--starttls", "--ca-file", CA, *login],
    ]
    for round_ in range(2):
        active = healthy.active_node()
        for argv in probes:
            run = healthy.client(str(BIN / argv[0]), *argv[1:])
            assert_plugin_output(run.stdout, run.returncode)
            assert run.returncode == 0, f"on {active}: {run.stdout}"
        if round_ == 0:  # move the group (as the takeover's mark does) and probe again
            healthy.crm("crm_attribute", "-N", active, "-n", lab.DEGRADED_ATTRIBUTE, "-v", "true", "-l", "reboot")
            assert healthy.wait_group(timeout=60, not_on=active) != active
            healthy.wait_ready(timeout=60)
