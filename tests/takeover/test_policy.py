"""The takeover policy: every rule, plus properties over all inputs."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kolabmon.takeover.policy import (
    ACT,
    NOTHING,
    REFUSE,
    STATE_TYPES,
    STATES,
    WAIT,
    Cluster,
    Event,
    Failure,
    LastMove,
    Rules,
    confirmed,
    decide,
)

RULES = Rules(hosts=frozenset({"kolab-cluster", "node1", "node2"}),
              services=frozenset({"imap", "smtp", "roundtrip", "storage"}), cooldown=600)
HEALTHY = Cluster(quorate=True, active="node1", passive="node2", passive_online=True, passive_member=True,
                  passive_degraded=False)
NOW = 1_000_000.0


def event(**changes) -> Event:
    base = Event(host="kolab-cluster", service="imap", state="CRITICAL", state_type="HARD", attempt=1,
                 max_attempts=3)
    return dataclasses.replace(base, **changes)


def test_hard_critical_of_a_relevant_service_acts_even_with_attempt_1() -> None:
    decision = decide(event(), RULES, HEALTHY, NOW, None)
    assert decision.action == ACT and decision.exit_code == 0
    assert decision.reason == "imap HARD CRITICAL: move node1 -> node2"


@pytest.mark.parametrize("state", ["OK", "WARNING", "UNKNOWN"])
def test_never_on_anything_but_critical(state: str) -> None:
    decision = decide(event(state=state), RULES, HEALTHY, NOW, None)
    assert decision.action == NOTHING and decision.exit_code == 0 and state in decision.reason


def test_soft_waits_unless_the_admin_set_an_attempt() -> None:
    assert decide(event(state_type="SOFT", attempt=2), RULES, HEALTHY, NOW, None).action == WAIT
    eager = dataclasses.replace(RULES, soft_attempt=2)
    assert decide(event(state_type="SOFT", attempt=1), eager, HEALTHY, NOW, None).action == WAIT
    decision = decide(event(state_type="SOFT", attempt=2), eager, HEALTHY, NOW, None)
    assert decision.action == ACT and "SOFT attempt 2" in decision.reason


def test_flapping_irrelevant_and_foreign_hosts() -> None:
    assert decide(event(flapping=True), RULES, HEALTHY, NOW, None).action == REFUSE
    assert decide(event(service="ldap-anon"), RULES, HEALTHY, NOW, None).action == NOTHING
    decision = decide(event(host="other-cluster"), RULES, HEALTHY, NOW, None)
    assert decision.action == REFUSE and "not part of this cluster" in decision.reason


@pytest.mark.parametrize(("change", "words"), [
    ({"passive_online": False}, "passive node node2 is offline"),
    ({"passive_member": False}, "not a cluster member"),
    ({"passive_degraded": True}, "degraded itself"),
    ({"quorate": False}, "no quorum"),
    ({"active": None}, "runs nowhere"),
    ({"passive": None}, "no passive node"),
    ({"split": True}, "more than one node"),
])
def test_refusals_about_the_cluster(change: dict, words: str) -> None:
    decision = decide(event(), RULES, dataclasses.replace(HEALTHY, **change), NOW, None)
    assert decision.action == REFUSE and decision.exit_code == 1 and words in decision.reason


def test_transition_in_flight_waits() -> None:
    decision = decide(event(), RULES, dataclasses.replace(HEALTHY, transition="fencing node1"), NOW, None)
    assert decision.action == WAIT and "fencing node1" in decision.reason


def test_cooldown() -> None:
    assert decide(event(), RULES, HEALTHY, NOW, moved(NOW - 599)).action == REFUSE
    reason = decide(event(), RULES, HEALTHY, NOW, moved(NOW - 10)).reason
    assert reason == "cool-down: watcher on node2 moved the group node1 -> node2 10 s ago (< 600 s)"
    assert decide(event(), RULES, HEALTHY, NOW, moved(NOW - 601)).action == ACT
    # a group that runs nowhere within the cool-down (its start failed after the move): both facts
    stopped = dataclasses.replace(HEALTHY, active=None)
    reason = decide(event(), RULES, stopped, NOW, moved(NOW - 10)).reason
    assert reason.startswith("the group runs nowhere") and "; cool-down: watcher on node2 moved" in reason
    assert "cool-down" not in decide(event(), RULES, stopped, NOW, moved(NOW - 601)).reason


clusters = st.builds(Cluster, quorate=st.booleans(), active=st.sampled_from([None, "node1", "node2"]),
                     passive=st.sampled_from([None, "node1", "node2"]), passive_online=st.booleans(),
                     passive_member=st.booleans(), passive_degraded=st.booleans(),
                     transition=st.sampled_from([None, "fencing node1"]), split=st.booleans())
events = st.builds(Event, host=st.sampled_from(["kolab-cluster", "node1", "elsewhere"]),
                   service=st.sampled_from(["imap", "smtp", "ldap-anon"]), state=st.sampled_from(STATES),
                   state_type=st.sampled_from(STATE_TYPES), attempt=st.integers(1, 5),
                   max_attempts=st.integers(1, 5), flapping=st.booleans())


def moved(epoch: float) -> LastMove:
    return LastMove(epoch, "node1", "node2", "watcher on node2")


@given(events, clusters, st.sampled_from([None, 0.0, NOW - 10, NOW - 10_000]))
def test_acts_only_when_every_rule_allows(ev: Event, cluster: Cluster, last_move: float | None) -> None:
    decision = decide(ev, RULES, cluster, NOW, None if last_move is None else moved(last_move))
    assert decision.reason
    if decision.action == ACT:
        assert ev.state == "CRITICAL" and ev.state_type == "HARD" and not ev.flapping
        assert ev.service in RULES.services and ev.host in RULES.hosts
        assert cluster.quorate and cluster.passive_online and cluster.passive_member and not cluster.split
        assert not cluster.passive_degraded and cluster.transition is None and cluster.active
        assert last_move is None or NOW - last_move >= RULES.cooldown


# --- the watcher's confirmation ---------------------------------------------------------------

GRACE = Rules(hosts=frozenset({"node1"}), services=frozenset({"imap"}), restart_grace=20)


def streak(*spans: tuple[float, float], kind: str = "hung") -> list[Failure]:
    return [Failure(start, end, kind, "IMAP CRITICAL - no answer") for start, end in spans]


def test_confirmed_after_n_failures_in_a_row_within_the_window() -> None:
    assert not confirmed(streak((0, 1.25)), 2, 10, GRACE)  # one failure is a blip
    assert confirmed(streak((0, 1.25), (1.75, 3.0)), 2, 10, GRACE)
    assert not confirmed(streak((0, 1.25), (30, 31.25)), 2, 10, GRACE)  # too far apart: not one fault


def test_a_gone_service_waits_for_pacemakers_restart_in_place() -> None:
    refused = [(t, t + 0.01) for t in range(0, 25)]
    assert not confirmed(streak(*refused[:19], kind="gone"), 2, 10, GRACE)  # 18 s gone: Pacemaker's turn
    assert confirmed(streak(*refused[:21], kind="gone"), 2, 10, GRACE)       # 20 s: its restart did not help
    assert confirmed(streak(*refused[:2], kind="wrong"), 2, 10, GRACE)       # answering wrongly: no restart helps


def test_a_node_local_failure_on_the_passive_node_moves_nothing() -> None:
    # storage down on node2 (powered off, or split brain there): moving the group to node2 cannot help
    for cluster in (HEALTHY, dataclasses.replace(HEALTHY, passive_online=False)):
        decision = decide(event(host="node2", service="storage"), RULES, cluster, NOW, None)
        assert decision.action == NOTHING and decision.exit_code == 0
        assert decision.reason == "storage fails on node2, which does not run the group: nothing to move away from"
    assert decide(event(host="node1", service="storage"), RULES, HEALTHY, NOW, None).action == ACT
