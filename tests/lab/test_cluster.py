"""The two-node Kolab cluster lab (lab/cluster.py, lab/on) against the real cluster.

One bring-up for the session (the ``cluster`` fixture of tests/conftest.py). Every test starts
from a healthy cluster (both nodes online, no kolab-degraded mark, services answering) and may
leave the group on either node. Mail clients run in the client namespace (stdlib imaplib/smtplib
through ``cluster.client``): nothing here talks to a 10.99.x address from the root namespace.
Timings are printed (pytest -s shows them).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kolabmon.pacemaker import Status, fence_completed  # noqa: E402
from lab import cluster as lab_cluster  # noqa: E402
from lab import nodes, servers  # noqa: E402

USER, PASSWORD = "user1@example.org", servers.USERS["user1@example.org"]
PY = sys.executable  # the project's venv python; it runs inside the client namespace too

# SMTP with STARTTLS + AUTH to ourselves, then wait until IMAPS shows the message (certs verified)
DELIVER = """
import imaplib, smtplib, ssl, sys, time
from email.message import EmailMessage
ip, user, password, ca, subject = sys.argv[1:]
ctx = ssl.create_default_context(cafile=ca)
msg = EmailMessage()
msg["From"], msg["To"], msg["Subject"] = user, user, subject
msg.set_content("kolabmon cluster lab test\\n")
with smtplib.SMTP(ip, 25, timeout=10) as smtp:
    smtp.starttls(context=ctx)
    smtp.login(user, password)
    smtp.send_message(msg)
t0 = time.monotonic()
while time.monotonic() - t0 < 15:
    with imaplib.IMAP4_SSL(ip, 993, ssl_context=ctx, timeout=10) as imap:
        imap.login(user, password)
        imap.select("INBOX", readonly=True)
        if imap.search(None, "SUBJECT", '"%s"' % subject)[1][0].split():
            print("delivered %.2f" % (time.monotonic() - t0))
            sys.exit(0)
    time.sleep(0.1)
print("not delivered within 15 s")
sys.exit(1)
"""

# IMAP (STARTTLS) login; print how many messages carry the subject
FIND = """
import imaplib, ssl, sys
ip, user, password, ca, subject = sys.argv[1:]
with imaplib.IMAP4(ip, 143, timeout=10) as imap:
    imap.starttls(ssl.create_default_context(cafile=ca))
    imap.login(user, password)
    imap.select("INBOX", readonly=True)
    print(len(imap.search(None, "SUBJECT", '"%s"' % subject)[1][0].split()))
"""


def run_client(cluster: lab_cluster.Cluster, script: str, subject: str) -> subprocess.CompletedProcess[str]:
    return cluster.client(PY, "-c", script, lab_cluster.CLUSTER_IP, USER, PASSWORD,
                          str(cluster.certs.ca), subject, timeout=40)


def deliver(cluster: lab_cluster.Cluster) -> str:
    """Send a message with a unique subject to user1 and wait until IMAP shows it; return the subject."""
    subject = f"cluster-lab {uuid.uuid4().hex[:12]}"
    res = run_client(cluster, DELIVER, subject)
    assert res.returncode == 0, res.stdout + res.stderr
    return subject


def found(cluster: lab_cluster.Cluster, subject: str) -> int:
    res = run_client(cluster, FIND, subject)
    assert res.returncode == 0, res.stdout + res.stderr
    return int(res.stdout.strip())


def other(node: str) -> str:
    return next(n for n in lab_cluster.NODES if n != node)


def fence_events(status: Status, target: str, state: str = "success") -> list[dict[str, str]]:
    """``target``'s fencing events in ``state`` (crm_mon lists the newest first)."""
    return [e for e in status.fence_events if e.get("target") == target and e.get("status") == state]


@pytest.fixture(autouse=True)
def healthy(cluster: lab_cluster.Cluster) -> Iterator[None]:
    """Start every test from a healthy cluster: both nodes on, no degraded mark, services up."""
    for node in lab_cluster.NODES:
        if not lab_cluster.node_pid1(node):
            cluster.restore(node)
    for node in lab_cluster.NODES:
        cluster.crm("crm_attribute", "-N", node, "-n", lab_cluster.DEGRADED_ATTRIBUTE, "-D", "-l", "reboot")
    cluster.wait_ready(60, nodes=2)
    yield


def test_group_runs_on_exactly_one_node(cluster: lab_cluster.Cluster) -> None:
    status = cluster.status()
    assert status.dc is not None and status.quorate
    assert sorted(lab_cluster.online_nodes(status)) == list(lab_cluster.NODES)
    members = status.group(lab_cluster.GROUP)
    assert [m.id for m in members] == list(lab_cluster.GROUP_MEMBERS)
    active = cluster.active_node()
    assert active in lab_cluster.NODES
    assert all(m.role == "Started" and m.nodes == [active] and not m.failed for m in members)
    fence = next((r for r in status.fence_devices() if r.id == lab_cluster.FENCE_DEVICE), None)
    assert fence is not None and fence.role == "Started"
    passive = other(active)
    # the cluster IP and the shared disk exist only on the active node
    assert lab_cluster.CLUSTER_IP in cluster.on(active, "ip", "-o", "addr", "show", "dev", "eth0").stdout
    assert lab_cluster.CLUSTER_IP not in cluster.on(passive, "ip", "-o", "addr", "show", "dev", "eth0").stdout
    assert cluster.on(active, "findmnt", str(lab_cluster.SHARED)).returncode == 0
    assert cluster.on(passive, "findmnt", str(lab_cluster.SHARED)).returncode != 0
    assert str(lab_cluster.SHARED) not in Path("/proc/mounts").read_text()
    # corosync: both knet links up, link 0 on the interconnect
    links = cluster.on(active, "corosync-cfgtool", "-s").stdout
    assert f"addr\t= {lab_cluster.INTERCONNECT_IPS[active]}" in links and "disconnected" not in links
    # the admin's one-time setup for kolabmon's takeover
    cib = cluster.crm("cibadmin", "--query", "--scope", "constraints").stdout
    assert 'id="kolab-avoid-degraded"' in cib and 'attribute="kolab-degraded"' in cib


def test_lab_on_passes_argv_stdin_and_exit_code(cluster: lab_cluster.Cluster) -> None:
    on = str(lab_cluster.ON)
    res = subprocess.run([on, "node1", "printf", "%s|", "a b", "$HOME", "*"], capture_output=True, text=True)
    assert (res.returncode, res.stdout) == (0, "a b|$HOME|*|")  # no shell in between
    assert subprocess.run([on, "node2", "sh", "-c", "exit 7"]).returncode == 7
    res = subprocess.run([on, "client", "cat"], input="stdin\n", capture_output=True, text=True)
    assert res.stdout == "stdin\n"
    assert cluster.on("node2", "hostname").stdout.strip() == "node2"
    assert cluster.on("monitor", "ip", "-o", "addr").stdout.count(lab_cluster.MONITOR_IP) == 1
    for argv in (["crm_attribute", "-t", "crm_config", "-n", "stonith-enabled", "-G", "-q"],
                 ["crm_resource", "--locate", "-r", lab_cluster.GROUP], ["corosync-quorumtool", "-s"]):
        res = cluster.on("node2", *argv)
        assert res.returncode == 0, f"{argv}: {res.stderr}"
    res = subprocess.run([on, "node7", "true"], capture_output=True, text=True)
    assert res.returncode == 255 and len(res.stderr.splitlines()) == 1


def test_imap_login_and_delivery_from_the_client(cluster: lab_cluster.Cluster) -> None:
    subject = deliver(cluster)
    assert found(cluster, subject) == 1
    check = cluster.check_services()
    assert check.returncode == 0, check.stdout
    assert "messages=" in check.stdout  # user1's seeded INBOX


def test_degraded_attribute_moves_the_group_with_the_mail(cluster: lab_cluster.Cluster) -> None:
    subject = deliver(cluster)
    source = cluster.active_node()
    assert source is not None
    t0 = time.monotonic()
    res = cluster.on(other(source), "crm_attribute", "-N", source, "-n", lab_cluster.DEGRADED_ATTRIBUTE,
                     "-v", "true", "-l", "reboot")
    assert res.returncode == 0, res.stderr
    target = cluster.wait_group(60, not_on=source)
    started = time.monotonic() - t0
    assert target == other(source)
    assert found(cluster, subject) == 1  # the mail moved with the shared disk
    print(f"\nmove {source}->{target} via {lab_cluster.DEGRADED_ATTRIBUTE}: group started after {started:.1f} s")
    cluster.on(target, "crm_attribute", "-N", source, "-n", lab_cluster.DEGRADED_ATTRIBUTE, "-D", "-l", "reboot")
    cluster.wait_idle(30)
    assert cluster.active_node() == target  # stickiness: no fail-back once the mark is gone


def test_killed_passive_node_is_fenced_and_restored(cluster: lab_cluster.Cluster) -> None:
    active = cluster.active_node()
    assert active is not None
    passive = other(active)
    before = len(fence_events(cluster.status(node=active), passive))  # the survivor has the whole history
    t0 = time.monotonic()
    cluster.kill_node(passive)
    res = cluster.on(passive, "crm_mon", "-1")
    assert res.returncode == 255 and "down" in res.stderr  # lab/on finds no node to enter

    def fenced(status: Status) -> list[dict[str, str]] | None:
        events = fence_events(status, passive)
        offline = (node := status.node(passive)) is not None and not node.online
        return events if offline and len(events) > before else None

    events = cluster.wait_for(f"{passive} offline and fenced", fenced, 30, node=active)
    fenced_after = time.monotonic() - t0
    assert events[0].get("action") == "off"
    assert events[0].get("delegate") == active
    assert cluster.active_node() == active  # losing the passive node moves nothing
    took = cluster.restore(passive)
    status = cluster.status(node=passive)  # lab/on finds the node's new PID 1
    assert (node := status.node(passive)) is not None and node.online
    assert lab_cluster.group_node(status) == active  # back as the passive node
    print(f"\nkill {passive}: fenced (fence_history) after {fenced_after:.1f} s; restore {took:.1f} s")


def test_hung_cyrus_is_stopped_and_taken_over_with_the_mail(cluster: lab_cluster.Cluster) -> None:
    """Every Cyrus process SIGSTOPped, then the attribute: ocf:kolabmon:cyrus-imapd's stop gets the
    hung processes to end (CONT, TERM, then KILL), so the group moves without a fence, and mail
    written before the move is read on the other node."""
    subject = deliver(cluster)
    source = cluster.active_node()
    assert source is not None
    pids = cluster.hang(source, "cyrus")
    assert len(pids) > 1
    since = time.time()
    t0 = time.monotonic()
    cluster.on(other(source), "crm_attribute", "-N", source, "-n", lab_cluster.DEGRADED_ATTRIBUTE,
               "-v", "true", "-l", "reboot")
    target = cluster.wait_group(90, not_on=source)
    took = time.monotonic() - t0
    assert lab_cluster.node_pid1(source), "the agent's stop ends a hung Cyrus: no fence needed"
    assert not [event for event in fenced_since(cluster.status(), since) if source in event]
    assert found(cluster, subject) == 1
    print(f"\nhung cyrus on {source}: group started on {target} {took:.1f} s after the attribute")


def fenced_since(status: Status, since: float) -> list[str]:
    """Fence events completed after `since` (a restored node syncs older history later, so counting
    all events would race with that sync)."""
    return [f"{event.get('action')} {event.get('target')} {event.get('completed')}" for event in status.fence_events
            if (fence_completed(event) or 0) >= since - 1]


def test_cut_interconnect_falls_back_to_the_lan_link(cluster: lab_cluster.Cluster) -> None:
    cut_at = time.time()
    cluster.cut_interconnect()
    try:
        deadline = time.monotonic() + 10
        while "disconnected" not in cluster.on("node1", "corosync-cfgtool", "-s").stdout:
            assert time.monotonic() < deadline, "link 0 not seen down"
            time.sleep(0.2)
        time.sleep(3)  # longer than token + consensus: a membership loss would show by now
        status = cluster.status()
        assert sorted(lab_cluster.online_nodes(status)) == list(lab_cluster.NODES)
        assert fenced_since(status, cut_at) == []
        assert cluster.check_services().returncode == 0
    finally:
        cluster.heal_interconnect()
    deadline = time.monotonic() + 10
    while "disconnected" in cluster.on("node1", "corosync-cfgtool", "-s").stdout:
        assert time.monotonic() < deadline, "link 0 not back"
        time.sleep(0.2)


def test_readonly_spool_is_forced_by_the_kernel(cluster: lab_cluster.Cluster) -> None:
    active = cluster.active_node()
    assert active is not None
    cluster.readonly_spool(active)
    mounts = cluster.on(active, "cat", "/proc/mounts").stdout
    assert any(str(lab_cluster.SHARED) in line and "emergency_ro" in line for line in mounts.splitlines())
    res = cluster.on(active, "touch", f"{lab_cluster.SHARED}/postfix/spool/probe")
    assert res.returncode != 0 and "Read-only file system" in res.stderr
    # recovery as a failing disk would get it: the node is powered off, the group moves
    cluster.kill_node(active)
    assert cluster.wait_group(60, not_on=active) == other(active)
    assert cluster.check_services().returncode == 0


def test_full_partition_has_one_winner(cluster: lab_cluster.Cluster) -> None:
    t0 = time.monotonic()
    cluster.cut_all()
    try:
        while len(cluster.running_nodes()) == 2:
            assert time.monotonic() - t0 < 30, "nobody fenced within 30 s of the partition"
            time.sleep(0.1)
        fenced = time.monotonic() - t0
        time.sleep(3)  # the loser's own fencing request died with it
        assert cluster.running_nodes() == ["node1"]  # the fencing delay favours node1
    finally:
        cluster.heal_all()
    assert cluster.wait_group(60) == "node1"
    print(f"\nfull partition: node2 fenced after {fenced:.1f} s")


def test_down_leaves_nothing_behind(cluster: lab_cluster.Cluster) -> None:
    """Last: down with a node just killed, check the host, bring the cluster back for later modules."""
    if not lab_cluster.sole_holder():
        pytest.skip("another test session uses the cluster")
    pids = [p for p in [nodes.recorded(n) for n in ("pdu", *lab_cluster.NODES)]
            + [lab_cluster.node_pid1(n) for n in lab_cluster.NODES] if p]
    assert len(pids) == 5
    cluster.kill_node("node2")  # down must cope with a fenced node
    took = lab_cluster.down()
    assert lab_cluster.leftovers() == []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert not set(netns) & set(lab_cluster.NAMESPACES)
    assert str(lab_cluster.IMAGE) not in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert str(lab_cluster.LAB_DIR) not in Path("/proc/mounts").read_text()
    assert not [p for p in pids if nodes.alive(p)]
    assert not lab_cluster.FENCE_AGENT.exists()
    again = lab_cluster.up()
    print(f"\ndown {took:.1f} s, up again {again.bringup_seconds:.1f} s")
