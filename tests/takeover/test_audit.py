"""The audit log: records written by the takeover read back by the same rule the takeover and the
notification use; torn and garbage lines skipped; the read bounded to the log's tail."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from kolabmon.takeover import audit
from kolabmon.takeover.policy import Event

EVENT = Event("kolab-cluster", "imap", "CRITICAL", "HARD", 1, 3)


def a_move(moved: bool = True, dry_run: bool = False) -> audit.Record:
    record = audit.event_record("kolab-cluster", EVENT, dry_run)
    record["cluster_state"] = {"active": "node1", "passive": "node2"}
    return audit.decided(record, "act", "moved kolab node1 -> node2", 0 if moved else 2, {"total": 1.5}, moved=moved)


def test_append_and_tail_round_trip(tmp_path: Path) -> None:
    log = tmp_path / "state" / "audit.jsonl"
    records = [a_move(), audit.recovered(audit.recover_record("node1", False), "recovered", "node1: recovered"),
               audit.error_record("RuntimeError: boom")]
    for record in records:
        audit.append(log, record)
    assert audit.tail(log) == records
    assert log.read_text().count("\n") == 3 and stat.S_IMODE(log.stat().st_mode) == 0o640
    move = audit.tail(log)[0]
    assert move["decision"] == "act" and move["exit"] == 0 and move["durations"] == {"total": 1.5}
    assert move["event"] == {"host": "kolab-cluster", "service": "imap", "state": "CRITICAL", "state_type": "HARD",
                             "attempt": 1, "max_attempts": 3, "flapping": False, "changed": ""}
    assert isinstance(move["epoch"], float) and isinstance(move["time"], str) and move["finished"] >= move["epoch"]


def test_torn_last_line_and_garbage_are_skipped(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    whole = json.dumps(a_move())
    log.write_text(f"not json\n[1, 2]\n{whole}\n\n" + whole[:40])  # a crash in the middle of a write
    assert audit.tail(log) == [json.loads(whole)]
    log.write_text(f"{whole}\n{whole}")  # still being written: not a whole line until its newline
    assert len(audit.tail(log)) == 1


def test_the_read_is_bounded_to_whole_lines_of_the_tail(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    lines = [json.dumps({"epoch": n, "pad": "x" * (9 - len(str(n)))}) + "\n" for n in range(100)]
    size = len(lines[0])
    assert {len(line) for line in lines} == {size}  # every line as long as the others
    log.write_text("".join(lines))
    assert [r["epoch"] for r in audit.tail(log, limit=size * 3)] == [97, 98, 99]  # exactly on a line start
    assert [r["epoch"] for r in audit.tail(log, limit=size * 3 + 5)] == [97, 98, 99]  # the cut line is dropped
    assert [r["epoch"] for r in audit.tail(log, limit=size * 3 - 1)] == [98, 99]
    assert len(audit.tail(log)) == 100  # the default window holds all of this small log
    log.write_text("x" * (audit.TAIL_BYTES * 2) + "\n" + lines[0])  # one huge broken line, then a record
    assert audit.tail(log) == [json.loads(lines[0])]


def test_readers_agree_on_the_last_takeover_decision_and_recovery(tmp_path: Path) -> None:
    failed, moved = a_move(moved=False), a_move()
    recover = audit.recovered(audit.recover_record("node1", False), "recovered", "node1: recovered")
    soft = audit.decided(audit.event_record("kolab-cluster", Event("kolab-cluster", "imap", "CRITICAL", "SOFT", 1, 3),
                                            False), "wait", "SOFT 1/3", 1, {})
    records = [failed, recover, moved, soft, a_move(dry_run=True)]
    assert audit.last_takeover(records) is moved  # waiting out a SOFT state and dry runs are not takeovers
    assert audit.recovered_since(records, moved) == set() and audit.recovered_since(records, failed) == {"node1"}
    assert audit.recovered_since(records, None) == {"node1"}
