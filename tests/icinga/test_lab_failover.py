"""End to end: a real Icinga 2 (monitor namespace, the shipped icinga/ config) checks the real lab
cluster; Dovecot hangs on the active node; Icinga's own records must show SOFT then HARD CRITICAL,
the event handler moving the group exactly once, IMAP OK again, and the on-call mail delivered."""

from __future__ import annotations

import time
from pathlib import Path

from lab import icinga as lab_icinga
from lab.cluster import heal


def test_icinga_detects_hands_over_to_kolabmon_and_notifies(cluster, tmp_path: Path) -> None:
    heal(cluster)
    icinga = lab_icinga.LabIcinga(tmp_path / "icinga")
    try:
        icinga.start()
        lab_icinga.wait(
            "IMAP OK in Icinga", lambda: any(r.service == "imap" and r.state == "OK" for r in icinga.results()), 60
        )
        source = cluster.active_node()
        fault_at = time.time()
        cluster.hang(source, "dovecot")
        moved = lab_icinga.wait("the takeover", lambda: next((r for r in icinga.audit() if r.get("moved")), None), 180)
        target = cluster.active_node()
        assert target and target != source and moved["fenced"]
        lab_icinga.wait(
            "IMAP OK again",
            lambda: any(r.service == "imap" and r.state == "OK" and r.epoch > fault_at + 1 for r in icinga.results()),
            90,
        )
        imap = [
            r for r in icinga.results() if r.service == "imap" and r.host == "kolab-cluster" and r.epoch > fault_at - 1
        ]
        states = [(r.state, r.state_type, r.attempt) for r in imap]
        soft = [s for s in states if s[:2] == ("CRITICAL", "SOFT")]
        hard = [s for s in states if s[:2] == ("CRITICAL", "HARD")]
        assert soft and hard and states.index(soft[0]) < states.index(hard[0]), states
        assert states[-1][0] == "OK", states
        imap_events = [r for r in icinga.audit() if r["event"]["service"] == "imap"]
        assert [r["decision"] for r in imap_events if r["event"]["state_type"] == "SOFT"] == ["wait"] * len(soft)
        assert len([r for r in icinga.audit() if r.get("moved")]) == 1  # fired once, moved once
        mails = lab_icinga.wait(
            "on-call mails (problem and recovery)",
            lambda: (
                (m := icinga.oncall_mail())
                and any("imap" in x["subject"].lower() and "recovery" in (x["subject"] + x["body"]).lower() for x in m)
                and m
            ),
            90,
        )
        problem = [
            m for m in mails if "imap" in m["subject"].lower() and "problem" in (m["subject"] + m["body"]).lower()
        ]
        assert problem, [m["subject"] for m in mails]
        assert "kolab-cluster" in problem[0]["body"]
    finally:
        icinga.stop()
        heal(cluster)
