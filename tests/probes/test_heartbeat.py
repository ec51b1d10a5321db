"""check_kolab_heartbeat: bad tool output and split brain with fake cluster tools (tests/fakes/crm_mon);
the real two-node lab cluster in tests/probes/test_heartbeat_cluster.py."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kolabmon import pacemaker
from kolabmon.probes import heartbeat
from tests.fakes import crm_mon
from tests.helpers import Run, assert_plugin_output, run_plugin


def heartbeat_with(tmp_path: Path, *args: str, **fake) -> Run:
    fakes = crm_mon.install(tmp_path / "bin", **fake)
    return run_plugin("check_kolab_heartbeat", *args, PATH=f"{fakes}:/usr/bin:/bin")


def fenced_node1(tmp_path: Path, client: str = "stonith_admin.3114", down: tuple[str, ...] = ("node1",),
                 **fake) -> tuple[str, float]:
    """A command prefix for which node1 (and any other node in `down`) is down, and on which node2's crm_mon has
    node1 fenced by `client` a minute ago; `fake` changes that crm_mon (tests.fakes.crm_mon.install)."""
    at = float(int(time.time()) - 60)
    tools = crm_mon.install(tmp_path / "node2", **{"crm_mon": crm_mon.fenced("node1", client, at), **fake})
    return crm_mon.install_prefix(tmp_path / "prefix", tools, *down), at


def cet(epoch: float) -> str:
    """HH:MM:SS of `epoch` in CET (TZ=CET-1, the plugins' local time in these tests: not UTC, no tzdata needed)."""
    return time.strftime("%H:%M:%S", time.gmtime(epoch + 3600))


DOWN = "node1 unreachable (on: node1 is down (powered off or fenced))"


def test_split_brain_is_critical(tmp_path) -> None:
    run = heartbeat_with(tmp_path, crm_mon=crm_mon.SPLIT_BRAIN.read_text())
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and "kolab active on node1 and node2 (split brain)" in run.line, run.out


def perfdata(run: Run) -> dict[str, str]:
    match = assert_plugin_output(run.out, run.rc)
    return dict(item.split("=", 1) for item in (match["perf"] or "").split())


@pytest.mark.parametrize(("running", "node", "active"), [
    (("node1",), "node1", "1"),
    (("node1",), "node2", "0"),
    (("node1", "node2"), "node2", "1"),  # split brain: active on both
    ((), "node1", "0"),
])
def test_active_says_whether_the_group_runs_on_the_node_asked(tmp_path, running, node, active) -> None:
    """`active` is for Icinga (the storage role): 1 or 0 for the node -H names, whatever the status line says."""
    run = heartbeat_with(tmp_path, "-H", node, crm_mon=crm_mon.group_on(*running))
    assert perfdata(run)["active"] == f"{active};;;0;1", run.out
    for other in ("node1", "node2"):  # and where it runs, as this node sees every node
        assert perfdata(run)[f"active_on_{other}"] == f"{int(other in running)};;;0;1", run.out
    words = f"kolab active on {','.join(running)}" if running else "kolab not running"
    assert words in run.line, run.out


@pytest.mark.parametrize("args", [[], ["-H", "node3"]])
def test_no_active_value_without_a_node_pacemaker_knows(tmp_path, args) -> None:
    run = heartbeat_with(tmp_path, *args, crm_mon=crm_mon.group_on("node1"))
    assert "active" not in perfdata(run) and "nodes_online" in perfdata(run), run.out
    assert perfdata(run)["active_on_node1"] == "1;;;0;1", run.out  # the cluster's view needs no -H


@pytest.mark.parametrize(("output", "code", "state", "words"), [
    ("<pacemaker-result><summary>", 0, 3, "malformed XML"),
    (crm_mon.SPLIT_BRAIN.read_text()[:900], 0, 3, "malformed XML"),      # truncated mid-stream
    ("Stack: corosync\nCurrent DC: node1\n", 0, 3, "malformed XML"),        # text output, not XML
    ("<pacemaker-result api-version='2.25'><status code='0'/></pacemaker-result>", 0, 3, "no <summary>"),
    ("", 1, 3, "crm_mon exited 1 without output"),
    (crm_mon.NOT_CONNECTED, 102, 2, "cluster stack not reachable"),
])
def test_bad_crm_mon_output(tmp_path, output, code, state, words) -> None:
    run = heartbeat_with(tmp_path, crm_mon=output, exit_code=code)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == state and words in run.line, run.out


def test_crm_mon_missing_is_unknown(tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    run = run_plugin("check_kolab_heartbeat", PATH=str(empty))
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 3 and "crm_mon not found" in run.line, run.out


def test_crm_mon_hanging_hits_the_deadline(tmp_path) -> None:
    run = heartbeat_with(tmp_path, "-t", "2", crm_mon="", hang=True)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2 and "(while reading crm_mon)" in run.line, run.out
    assert run.seconds < 3
    fake = str(tmp_path / "bin" / "crm_mon")
    assert not [p for p in Path("/proc").glob("[0-9]*") if fake in _cmdline(p)], "the hung crm_mon outlived the plugin"


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_file_source(tmp_path) -> None:
    beat = tmp_path / "beat"
    beat.write_text(f"{time.time() - 5:.0f}\n")
    run = run_plugin("check_kolab_heartbeat", "--source", f"file:{beat}", "-w", "10", "-c", "20")
    match = assert_plugin_output(run.out, run.rc)
    assert run.rc == 0 and "peer heartbeat" in run.line and "heartbeat_age=" in match["perf"], run.out
    beat.write_text(f"{time.time() - 15:.0f}\n")
    run = run_plugin("check_kolab_heartbeat", "--source", f"file:{beat}", "-w", "10", "-c", "20")
    assert run.rc == 1 and "heartbeat_age 1" in run.line, run.out
    run = run_plugin("check_kolab_heartbeat", "--source", f"file:{tmp_path / 'none'}", "-w", "10", "-c", "20")
    assert run.rc == 2 and "does not exist" in run.line, run.out


@pytest.mark.parametrize(("client", "by"), [("stonith_admin.3114", "the takeover"),
                                            ("pacemaker-controld.1207", "Pacemaker")])
def test_unreachable_node_is_critical_with_the_fence_its_peer_saw(tmp_path, client, by) -> None:
    prefix, at = fenced_node1(tmp_path, client)
    run = run_plugin("check_kolab_heartbeat", "-H", "node1", "--command-prefix", prefix, "--peers", "node2",
                     TZ="CET-1")
    assert_plugin_output(run.out, run.rc)
    assert (run.rc, run.line) == (2, f"HEARTBEAT CRITICAL - {DOWN}; node1 fenced by {by} at {cet(at)}"), run.out


@pytest.mark.parametrize(("peers", "down", "fake"), [
    ([], (), {}),                                              # no peer given
    (["--peers", "node1"], (), {}),                            # only the node itself
    (["--peers", "node2"], ("node2",), {}),                    # the peer is down too
    (["--peers", "node3,node2"], ("node3",), {"crm_mon": "", "exit_code": 1}),  # its crm_mon fails
    (["--peers", "node2", "-t", "2"], (), {"crm_mon": "", "hang": True}),       # its crm_mon hangs
])
def test_a_peer_that_cannot_be_asked_adds_nothing(tmp_path, peers, down, fake) -> None:
    prefix, _ = fenced_node1(tmp_path, down=("node1", *down), **fake)
    run = run_plugin("check_kolab_heartbeat", "-H", "node1", "--command-prefix", prefix, *peers)
    assert_plugin_output(run.out, run.rc)
    assert (run.rc, run.line) == (2, f"HEARTBEAT CRITICAL - {DOWN}"), run.out
    if "-t" in peers:
        assert run.seconds < 2, run.seconds  # the hung crm_mon is given up on in time


def test_fenced_is_the_last_successful_fence_of_the_node() -> None:
    at = float(int(time.time()) - 60)
    status = pacemaker.parse(crm_mon.fenced("node1", "stonith_admin.3114", at))
    now = time.strftime("%H:%M:%S", time.localtime(at))
    assert pacemaker.fenced(status, "node1") == f"node1 fenced by the takeover at {now}"
    assert pacemaker.fenced(status, "node2") is None
    status.fence_events = status.fence_events[1:]  # a failed attempt does not count; the one before is days old
    old = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at - 3 * 86400))
    assert pacemaker.fenced(status, "node1") == f"node1 fenced by Pacemaker at {old}"


@pytest.mark.parametrize(("seen", "words"), [
    ({"online": "true"}, "node2 says node1 is online"),  # fenced once, back since: the fence is not the story
    ({"unclean": "true"}, "node2 says node1 is unclean (fencing pending or failed)"),
    ({"name": "node9"}, ""),  # node2 does not know node1: nothing to say
])
def test_what_the_peer_says_of_a_node_that_is_not_fenced_now(tmp_path, seen, words) -> None:
    prefix, at = fenced_node1(tmp_path)
    root = ET.fromstring(crm_mon.fenced("node1", "stonith_admin.3114", at))
    for name, value in seen.items():
        root.find("nodes/node[@name='node1']").set(name, value)  # type: ignore[union-attr]
    (tmp_path / "node2" / "crm_mon.out").write_text(ET.tostring(root, encoding="unicode"))
    run = run_plugin("check_kolab_heartbeat", "-H", "node1", "--command-prefix", prefix, "--peers", "node2")
    assert (run.rc, run.line) == (2, f"HEARTBEAT CRITICAL - {DOWN}" + (f"; {words}" if words else "")), run.out


def test_a_peer_that_saw_no_fence_says_the_node_is_offline(tmp_path) -> None:
    prefix, at = fenced_node1(tmp_path)
    (tmp_path / "node2" / "crm_mon.out").write_text(
        crm_mon.fenced("node1", "stonith_admin.3114", at).replace('target="node1"', 'target="node9"'))
    run = run_plugin("check_kolab_heartbeat", "-H", "node1", "--command-prefix", prefix, "--peers", "node2")
    assert (run.rc, run.line) == (2, f"HEARTBEAT CRITICAL - {DOWN}; node2 says node1 is offline"), run.out


@pytest.mark.parametrize(("args", "words"), [
    (["--source", "carrier-pigeon"], "invalid --source"),
    (["--source", "file:"], "invalid --source"),
    (["--command-prefix", "ssh -o BatchMode=yes {node}"], "give the node with -H"),
    (["-w", "x"], "invalid range"),
])
def test_usage_errors(args, words) -> None:
    run = run_plugin("check_kolab_heartbeat", *args)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 3 and words in run.line, run.out


def test_assess_names_every_problem() -> None:
    status = pacemaker.parse(crm_mon.SPLIT_BRAIN.read_text())
    status.stonith_enabled = False
    status.bans.append("cli-prefer-kolab")
    status.failures.append("imap_monitor_10000 on node1: not running")
    status.nodes[1].online = False
    found = dict((text, state) for state, text in heartbeat.assess(status, "kolab", 2))
    assert found["node2 offline"] == 2
    assert found["kolab active on node1 and node2 (split brain)"] == 2
    assert found["fencing disabled: a takeover from a hung node will block"] == 1
    assert any("leftover move constraints cli-prefer-kolab" in t for t in found)
    assert any(t.startswith("failed actions: imap_monitor_10000") for t in found)


def test_link_state() -> None:
    up, total, found = heartbeat.link_state(crm_mon.CMAP_STATS, crm_mon.CMAP)
    assert (up, total, found) == (2, 2, [])
    one_down = crm_mon.CMAP_STATS.replace("node2.link0.connected (u8) = 1", "node2.link0.connected (u8) = 0")
    up, total, found = heartbeat.link_state(one_down, crm_mon.CMAP)
    assert (up, total) == (1, 2) and found == [(1, "link 0 to node2 down (1 of 2 up)")]
    both_down = one_down.replace("node2.link1.connected (u8) = 1", "node2.link1.connected (u8) = 0")
    assert heartbeat.link_state(both_down, crm_mon.CMAP)[2] == [(2, "all links to node2 down")]


@pytest.mark.parametrize("completed", [
    "2026-11-25 19:50:12Z",            # Pacemaker 2.1, UTC
    "2026-11-25 19:50:12.088147Z",     # later releases add microseconds
    "2026-11-25 20:50:12+01:00",       # a node whose local time is not UTC
])
def test_fence_completed_reads_every_release(completed) -> None:
    assert pacemaker.fence_completed({"completed": completed}) == pytest.approx(1795636212, abs=0.1)


@pytest.mark.parametrize("event", [{}, {"completed": ""}, {"completed": "Wed Nov 25 19:50:12 2026"}])
def test_fence_completed_without_a_time_is_none(event) -> None:
    assert pacemaker.fence_completed(event) is None
