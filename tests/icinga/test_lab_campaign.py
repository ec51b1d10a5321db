"""The fault campaign: each fault class on the lab cluster, as a new admin meets it. A fresh Icinga 2
per class (the monitor namespace, the project's icinga/ config, kolabmon-takeover as the event
handler with [notify] to the on-call mailbox, the watcher off: this is the monitoring host's path);
the cluster is shared and healed between classes. Each test asserts what kolabmon did, the states
Icinga showed (SOFT before HARD, within bounds), what users saw from the client, and the words on-call
received. Each writes its measured times and mails to var/campaign/CLASS.json for the record.

Lab timing (lab/icinga.py): check every 2 s, retry every 1 s, HARD at the 3rd failure, every
client-side plugin gives up after 4 s. A hung service is CRITICAL at the end of its first check
(up to 2 + 4 s after the fault) and HARD two retries later: 3 x (4 + 1) s, so at most ~20 s.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab import cluster as lab
from lab import icinga as lab_icinga
from lab import icinga_ha, servers
from lab import nagios as lab_nagios
from lab.client_watch import ClientWatch, imap_login
from lab.takeover_config import BIN

CLUSTER_HOST = "kolab-cluster"
HARD_WITHIN = 25.0  # seconds from the fault to a HARD state of a hung service (about 20 s, see above)
REPORT = Path(__file__).resolve().parent.parent.parent / "var" / "campaign"
SERVICES = {(CLUSTER_HOST, s) for s in ("imap", "smtp", "ldap", "freebusy", "roundtrip")} | {
    (n, s) for n in lab.NODES for s in ("heartbeat", "storage")}


class Run:
    """One fault class: the Icinga that watches it, the client that uses it, and what happened since."""

    def __init__(self, cluster: lab.Cluster, icinga: lab_icinga.LabIcinga, client: ClientWatch) -> None:
        self.cluster, self.icinga, self.client = cluster, icinga, client
        self.source = cluster.active_node() or "?"
        self.passive = next(n for n in lab.NODES if n != self.source)
        self.fault_at = time.time()

    def fault(self, what: Callable[[], object]) -> None:
        self.fault_at = time.time()
        what()

    def results(self, service: str, host: str = CLUSTER_HOST) -> list[lab_icinga.Result]:
        return [r for r in self.icinga.results() if r.host == host and r.service == service
                and r.epoch > self.fault_at]

    def first(self, service: str, state: str | None = None, state_type: str | None = None,
              host: str = CLUSTER_HOST) -> lab_icinga.Result | None:
        """The first result since the fault that is not OK (or has this state and type)."""
        return next((r for r in self.results(service, host) if (state is None and r.state != "OK") or
                     (r.state == state and (state_type is None or r.state_type == state_type))), None)

    def decisions(self) -> list[dict]:
        return [r for r in self.icinga.audit() if "event" in r and r["epoch"] >= self.fault_at - 1]

    def mails(self) -> list[dict]:
        return sorted((m for m in self.icinga.oncall_mail() if m["epoch"] > self.fault_at),
                      key=lambda m: m["epoch"])

    def mail(self, subject: str, timeout: float = 60, body: str = "") -> dict:
        """Wait for the mail whose subject starts with `subject` (after "[kolabmon] ") and whose body has `body`."""
        return lab_icinga.wait(f"the mail {subject!r}", lambda: next(
            (m for m in self.mails() if m["subject"].startswith(f"[kolabmon] {subject}") and body in m["body"]),
            None), timeout)

    def wait_back(self, service: str, timeout: float = 90) -> lab_icinga.Result:
        """Icinga shows `service` OK again after a failure."""
        def back() -> lab_icinga.Result | None:
            bad = self.first(service)
            return next((r for r in self.results(service) if bad and r.epoch > bad.epoch and r.state == "OK"), None)
        return lab_icinga.wait(f"{service} OK again in Icinga", back, timeout)

    def report(self, name: str, **extra: object) -> dict:
        """Times after the fault (s) and the mails, into var/campaign/NAME.json and the test's output."""
        def at(epoch: float | None) -> float | None:
            return None if epoch is None else round(epoch - self.fault_at, 1)
        moved = next((r for r in self.decisions() if r.get("moved")), None)
        outage = self.client.outage(self.fault_at)
        bad = self.first(self.client.what)  # Icinga's first non-OK check of what the client uses
        decided = next((r for r in self.decisions() if r["decision"] in ("act", "refuse", "wait")
                        and r["event"].get("state_type") == "HARD" and r["event"].get("state") == "CRITICAL"), None)
        found = {
            "class": name, "release": open("/etc/debian_version").read().strip(), "source": self.source,
            "first_non_ok": at(bad.epoch) if bad else None,
            "decided": at(decided.get("finished")) if decided else None,
            "client": self.client.what, "outage": outage and round(outage[1] - outage[0], 1),
            "client_back": at(outage[1]) if outage else None,
            "decisions": [{"at": at(r.get("finished")), "origin": r.get("origin"), "event": "{host}/{service} "
                           "{state_type} {state}".format(**r["event"]), "decision": r["decision"],
                           "reason": r["reason"]} for r in self.decisions() if r["event"].get("state") != "OK"],
            "fence": at(self.cluster.fenced_at(self.source)) if moved and moved.get("fenced") else None,
            "mails": [{"at": at(m["epoch"]), "subject": m["subject"], "lines": essentials(m["body"])}
                      for m in self.mails()],
            **{key: at(value) if isinstance(value, float) else value for key, value in extra.items()},
        }
        REPORT.mkdir(parents=True, exist_ok=True)
        (REPORT / f"{name}.json").write_text(json.dumps(found, indent=1) + "\n")
        print(json.dumps(found, indent=1))
        return found


def essentials(body: str) -> list[str]:
    """The lines on-call reads first: the check's line, the decision and the next step."""
    return [" ".join(line.split()) for line in body.splitlines()
            if line.startswith(("Check:", "Trigger:", "Decision:", "Next:"))]


def client_check(service: str, secret: Path) -> list[str]:
    """What a user's client does for `service`, on the cluster IP from the client machine, 1 s timeout."""
    ca, ip = str(lab.make_certs().ca), lab.CLUSTER_IP
    return {
        "imap": imap_login(secret),
        "smtp": [str(BIN / "check_kolab_smtp"), "-H", ip, "--starttls", "--ca-file", ca, "-t", "1"],
        "ldap": [str(BIN / "check_kolab_ldap"), "-H", ip, "-b", servers.LDAP_BASE, "-f", "(uid=user1)", "-D",
                 servers.LDAP_SERVICE_DN, "--password-file", str(secret.parent / "ldap.pw"), "-t", "1"],
        "freebusy": [str(BIN / "check_kolab_freebusy"), "--url", f"http://{ip}/freebusy/{lab_icinga.USER}.ifb",
                     "-u", lab_icinga.USER, "--password-file", str(secret), "-t", "1"],
    }[service]


@pytest.fixture
def campaign(cluster: lab.Cluster, tmp_path: Path) -> Iterator[Callable[[str], Run]]:
    """start(client_service) → a Run: the cluster healed, a fresh Icinga (or `monitor`: LabNagios) with
    every service OK, the client using `client_service` every 0.5 s."""
    started: list[Run] = []

    def start(service: str, monitor: type[lab_icinga.LabIcinga] = lab_icinga.LabIcinga) -> Run:
        lab.heal(cluster)
        icinga = monitor(tmp_path / "mon")  # short: the mail servers put sockets under it (108 bytes)
        icinga.start()
        lab_icinga.wait("every service OK", lambda: all(
            (r := latest(icinga).get(key)) and r.state == "OK" for key in SERVICES), 90)
        client = ClientWatch(cluster, client_check(service, icinga.dir / "takeover" / "imap.pw"), service)
        client.start()
        run = Run(cluster, icinga, client)
        started.append(run)
        lab_icinga.wait(f"the client's first {service} OK", lambda: any(ok for _, ok in client.samples), 20)
        return run

    try:
        yield start
    finally:
        for run in started:
            run.client.stopping.set()
            run.icinga.stop()
        lab.heal(cluster)


def latest(icinga: lab_icinga.LabIcinga) -> dict[tuple[str, str], lab_icinga.Result]:
    return {(r.host, r.service): r for r in icinga.results()}


def assert_soft_then_hard(run: Run, service: str, host: str = CLUSTER_HOST, within: float = HARD_WITHIN) -> float:
    """SOFT CRITICAL first, then HARD CRITICAL within `within` s of the fault; the HARD epoch."""
    hard = lab_icinga.wait(f"{service} on {host} HARD CRITICAL", lambda: run.first(service, "CRITICAL", "HARD", host),
                           max(run.fault_at + within + 10 - time.time(), 1))
    soft = run.first(service, "CRITICAL", "SOFT", host)
    assert soft and hard and soft.epoch < hard.epoch, [(r.state, r.state_type) for r in run.results(service, host)]
    assert hard.epoch - run.fault_at < within, f"HARD after {hard.epoch - run.fault_at:.1f} s"
    return hard.epoch


def assert_problem_then_decision(run: Run, service: str, host: str, decision: str, words: str) -> list[dict]:
    """The first mail about the HARD CRITICAL carries kolabmon's decision on that event, or says it is
    pending and the takeover's own TAKEOVER mail with the decision follows. Returns the mails."""
    what = f"{service} on {host}"
    problem = run.mail(f"PROBLEM: {what} is CRITICAL")
    told = re.search(r"^Decision:\s+(.*)$", problem["body"], re.M)
    assert told, problem["body"]
    if told[1].startswith("pending"):
        assert "its decision follows in a TAKEOVER message" in problem["body"], problem["body"]
    else:
        assert told[1].startswith(decision) and words in problem["body"], problem["body"]
    takeover = run.mail(f"TAKEOVER {decision}: {what}", body=words)
    return [problem, takeover]


# --- the classes ---------------------------------------------------------------------------------


def test_hung_cyrus_is_fenced_moved_and_told(campaign) -> None:
    run = campaign("imap")
    run.fault(lambda: run.cluster.hang(run.source, "imapd"))
    moved = lab_icinga.wait("the move", lambda: next((r for r in run.decisions() if r.get("moved")), None), 90)
    assert moved["event"]["service"] in ("imap", "smtp") and moved["fenced"] and moved["fence_first"] == "done"
    assert moved["event"]["changed"], moved["event"]  # the event is named, so its mails find the decision
    back = run.wait_back("imap")
    hard = assert_soft_then_hard(run, "imap")
    assert len([r for r in run.decisions() if r.get("moved")]) == 1
    service = moved["event"]["service"]
    problem, takeover = assert_problem_then_decision(run, service, CLUSTER_HOST, "MOVED",
                                                     f"kolabmon-takeover recover {run.source}")
    assert takeover["subject"].endswith(f"group {run.source} -> {run.passive}, {run.source} fenced")
    recovery = run.mail(f"RECOVERY: {service} on {CLUSTER_HOST} is OK")
    assert f"moved the group away from {run.source}" in recovery["body"]
    assert f"then run: kolabmon-takeover recover {run.source}" in recovery["body"]
    outage = run.client.outage(run.fault_at)
    assert outage and outage[1] - outage[0] < 45, outage
    assert len([m for m in run.mails() if m["subject"].startswith("[kolabmon] TAKEOVER")]) == 1
    # the fenced node, told one way by every check that runs on it
    fenced = f"{run.source} fenced by the takeover at "
    for service in ("heartbeat", "storage"):
        mail = run.mail(f"PROBLEM: {service} on {run.source} is CRITICAL", body=fenced)
        assert f"Next:            {run.source} was fenced by the takeover: power it on" in mail["body"], mail["body"]
    run.report("hung-cyrus", hard=hard, back_in_icinga=back.epoch)


def test_readonly_spool_is_fenced_first_and_moved(campaign) -> None:
    run = campaign("imap")
    run.fault(lambda: run.cluster.readonly_spool(run.source))
    moved = lab_icinga.wait("the move", lambda: next((r for r in run.decisions() if r.get("moved")), None), 90)
    assert moved["fenced"], moved  # first (storage's HARD came first) or by Pacemaker when a stop failed (imap's)
    host, service = moved["event"]["host"], moved["event"]["service"]
    hard = assert_soft_then_hard(run, service, host)
    problem, takeover = assert_problem_then_decision(run, service, host, "MOVED",
                                                     f"kolabmon-takeover recover {run.source}")
    if host != CLUSTER_HOST:  # a node-local check: the message says which node, and Next is about it
        assert f"Node:            {host}" in problem["body"]
    assert all("none recorded" not in m["body"] for m in run.mails() if m["epoch"] > moved["finished"])
    assert run.cluster.active_node() == run.passive
    run.report("readonly-spool", hard=hard)


def test_hung_slapd_is_fenced_and_moved_as_fast_as_imap(campaign) -> None:
    run = campaign("ldap")
    run.fault(lambda: run.cluster.hang(run.source, "slapd"))
    moved = lab_icinga.wait("the move", lambda: next((r for r in run.decisions() if r.get("moved")), None), 90)
    # Kolab's chain: IMAP and SMTP logins go through saslauthd to LDAP, so they hang with it
    service = moved["event"]["service"]
    assert service in ("ldap", "imap", "smtp") and moved["fenced"], moved
    hard = assert_soft_then_hard(run, service)  # the same plugin timeout for all: HARD as fast
    assert_problem_then_decision(run, service, CLUSTER_HOST, "MOVED", f"kolabmon-takeover recover {run.source}")
    back = run.wait_back("ldap")
    outage = run.client.outage(run.fault_at)
    assert outage and outage[1] - outage[0] < 45, outage
    run.report("hung-slapd", hard=hard, back_in_icinga=back.epoch)


def test_a_held_mailbox_lock_is_fenced_and_moved(campaign) -> None:
    """Cyrus with its mailbox list locked (a stuck Cyrus process would hold it): LOGIN works, SELECT
    waits; Pacemaker's monitor sees the master run. The fence ends the holder with its node."""
    run = campaign("imap")
    run.fault(lambda: run.cluster.lock_mailboxes(run.source))
    moved = lab_icinga.wait("the move", lambda: next((r for r in run.decisions() if r.get("moved")), None), 90)
    service = moved["event"]["service"]
    assert service in ("imap", "roundtrip") and moved["fenced"], moved
    hard = assert_soft_then_hard(run, service)
    assert "while selecting INBOX" in run.first("imap", "CRITICAL").output
    back = run.wait_back("imap")
    outage = run.client.outage(run.fault_at)
    assert outage and outage[1] - outage[0] < 45, outage
    run.report("held-lock", hard=hard, back_in_icinga=back.epoch)


def test_a_hung_saslauthd_is_fenced_and_moved(campaign) -> None:
    """saslauthd stopped: the IMAP greeting still answers, LOGIN and SMTP AUTH hang."""
    run = campaign("imap")
    run.fault(lambda: run.cluster.hang(run.source, "saslauthd"))
    moved = lab_icinga.wait("the move", lambda: next((r for r in run.decisions() if r.get("moved")), None), 90)
    service = moved["event"]["service"]
    assert service in ("imap", "smtp", "roundtrip") and moved["fenced"], moved
    hard = assert_soft_then_hard(run, service)
    assert "while logging in" in run.first("imap", "CRITICAL").output
    assert_problem_then_decision(run, service, CLUSTER_HOST, "MOVED", f"kolabmon-takeover recover {run.source}")
    back = run.wait_back("imap")
    outage = run.client.outage(run.fault_at)
    assert outage and outage[1] - outage[0] < 45, outage
    run.report("hung-saslauthd", hard=hard, back_in_icinga=back.epoch)


def test_a_hung_cyrus_master_alone_moves_nothing(campaign) -> None:
    """Cyrus's master stopped, its idle imapd children keep accepting: users are served, so nothing
    may turn CRITICAL or move."""
    run = campaign("imap")
    run.fault(lambda: run.cluster.hang(run.source, "cyrus-master"))
    try:
        time.sleep(HARD_WITHIN)
        assert run.first("imap") is None, [(r.state, r.output) for r in run.results("imap")]
        assert not any(r.get("moved") for r in run.decisions()) and run.cluster.active_node() == run.source
        assert not run.client.failed_since(run.fault_at)
    finally:
        run.cluster.unhang(run.source, "cyrus-master")
    run.report("hung-cyrus-master")


def test_killed_postfix_is_restarted_in_place_not_moved(campaign) -> None:
    run = campaign("smtp")
    run.fault(lambda: run.cluster.crash(run.source, "postfix"))
    back = run.wait_back("smtp")
    hard = run.first("smtp", "CRITICAL", "HARD")
    time.sleep(2)
    assert not any(r.get("moved") for r in run.decisions()) and run.cluster.active_node() == run.source
    if hard:  # Pacemaker's restart took longer than three refused checks: kolabmon left it to Pacemaker
        decision = lab_icinga.wait("the decision on the HARD CRITICAL", lambda: next(
            (r for r in run.decisions() if r["event"]["service"] == "smtp" and r["event"]["state_type"] == "HARD"
             and r["event"]["state"] == "CRITICAL" and r["decision"] != "acting"), None), 60)
        if decision["decision"] == "wait":  # Pacemaker was still restarting it when the handler looked
            assert "the cluster is already busy" in decision["reason"], decision
            assert_problem_then_decision(run, "smtp", CLUSTER_HOST, "WAITED", "will not act on this event again")
        else:  # it had restarted it by the second opinion
            assert decision["decision"] == "refuse" and "Pacemaker restarted it in place" in decision["reason"]
            assert_problem_then_decision(run, "smtp", CLUSTER_HOST, "REFUSED", "Pacemaker restarted it in place")
    outage = run.client.outage(run.fault_at)
    assert outage and outage[1] - outage[0] < 30, outage
    run.report("killed-postfix", hard=hard and hard.epoch, back_in_icinga=back.epoch)


def test_two_second_blips_are_neither_hard_nor_moved(campaign) -> None:
    run = campaign("imap")
    run.fault(lambda: None)
    for _ in range(3):
        run.cluster.hang(run.source, "imapd")
        time.sleep(2)
        run.cluster.unhang(run.source, "imapd")
        time.sleep(8)
    for service in ("imap", "smtp", "ldap"):
        assert run.first(service, "CRITICAL", "HARD") is None, [(r.state, r.state_type) for r in run.results(service)]
    assert not any(r.get("moved") for r in run.decisions()) and run.cluster.active_node() == run.source
    assert not [m["subject"] for m in run.mails() if "PROBLEM" in m["subject"] or "TAKEOVER" in m["subject"]]
    run.report("blips", blips=3)


def test_a_hang_with_the_passive_node_down_is_refused_and_the_mail_says_why(campaign) -> None:
    run = campaign("imap")
    passive = run.passive
    run.cluster.kill_node(passive)
    lab_icinga.wait(f"{passive} offline", lambda: (n := run.cluster.status().node(passive)) and not n.online, 60)
    try:
        run.fault(lambda: run.cluster.hang(run.source, "imapd"))
        hard = assert_soft_then_hard(run, "imap")
        refused = lab_icinga.wait("the refusal", lambda: next(
            (r for r in run.decisions() if r["event"]["service"] == "imap" and r["event"]["state_type"] == "HARD"
             and r["event"]["state"] == "CRITICAL"), None), 60)
        assert refused["decision"] == "refuse" and refused["reason"] == f"passive node {passive} is offline"
        problem, takeover = assert_problem_then_decision(run, "imap", CLUSTER_HOST, "REFUSED",
                                                         f"passive node {passive} is offline")
        assert takeover["subject"].endswith(f"group stays on {run.source}")
        assert f"fix imap on {run.source} by hand" in takeover["body"]
        assert run.cluster.active_node() == run.source
        run.report("passive-down-then-hang", hard=hard)
    finally:
        run.cluster.unhang(run.source, "imapd")


def test_a_cut_interconnect_warns_and_heals_without_a_move(campaign) -> None:
    run = campaign("imap")
    run.fault(run.cluster.cut_interconnect)
    try:
        warned = {node: lab_icinga.wait(f"heartbeat on {node} HARD WARNING", lambda node=node: run.first(
            "heartbeat", "WARNING", "HARD", node), 60) for node in lab.NODES}
        for node in lab.NODES:
            mail = run.mail(f"PROBLEM: heartbeat on {node} is WARNING")
            assert f"Next:            Look at heartbeat on {node} in working hours." in mail["body"], mail["body"]
    finally:
        run.cluster.heal_interconnect()
    healed_at = time.time()
    for node in lab.NODES:
        mail = run.mail(f"RECOVERY: heartbeat on {node} is OK")
        assert "Next:            Nothing to do." in mail["body"], mail["body"]
    assert not run.decisions() and run.cluster.active_node() == run.source
    assert not run.client.failed_since(run.fault_at)
    run.report("interconnect-cut", hard={n: round(r.epoch - run.fault_at, 1) for n, r in warned.items()},
               healed=healed_at)


def test_hung_nginx_is_told_and_not_moved(campaign) -> None:
    run = campaign("freebusy")
    run.fault(lambda: run.cluster.hang(run.source, "nginx"))
    try:
        hard = assert_soft_then_hard(run, "freebusy")
        mail = run.mail(f"PROBLEM: freebusy on {CLUSTER_HOST} is CRITICAL")
        assert "Decision:" not in mail["body"]  # free/busy is not failover-relevant here: nothing to decide
        assert f"Next:            Check freebusy on {run.source}." in mail["body"], mail["body"]
        assert not any(r.get("moved") for r in run.decisions()) and run.cluster.active_node() == run.source
        assert run.client.failed_since(run.fault_at)
    finally:
        run.cluster.unhang(run.source, "nginx")
    run.wait_back("freebusy")
    run.mail(f"RECOVERY: freebusy on {CLUSTER_HOST} is OK")
    run.report("hung-nginx", hard=hard)


# --- the same path under Nagios Core 4 (nagios/, lab/nagios.py) ----------------------------------


def test_under_nagios_a_hung_cyrus_is_fenced_moved_and_told(campaign) -> None:
    """Nagios's path end to end: the fault, SOFT then HARD, kolabmon-takeover as Nagios's event handler
    moving the group once, Nagios seeing IMAP back, and on-call told by Nagios's notification command."""
    run = campaign("imap", lab_nagios.LabNagios)
    run.fault(lambda: run.cluster.hang(run.source, "imapd"))
    moved = lab_icinga.wait("the move", lambda: next((r for r in run.decisions() if r.get("moved")), None), 90)
    assert moved["event"]["service"] in ("imap", "smtp") and moved["fenced"] and moved["fence_first"] == "done"
    assert moved["event"]["changed"], moved["event"]  # $LASTSERVICESTATECHANGE$ names the event
    assert moved["origin"].startswith("nagios on "), moved
    back = run.wait_back("imap")
    hard = assert_soft_then_hard(run, "imap")
    assert run.cluster.active_node() == run.passive
    assert len([r for r in run.decisions() if r.get("moved")]) == 1
    # every state change ran the handler: the SOFT ones were logged, not acted on
    assert any(r["event"].get("state_type") == "SOFT" and r["decision"] != "act" for r in run.decisions())
    service = moved["event"]["service"]
    assert_problem_then_decision(run, service, CLUSTER_HOST, "MOVED", f"kolabmon-takeover recover {run.source}")
    recovery = run.mail(f"RECOVERY: {service} on {CLUSTER_HOST} is OK")
    assert f"moved the group away from {run.source}" in recovery["body"]
    assert len([m for m in run.mails() if m["subject"].startswith("[kolabmon] TAKEOVER")]) == 1
    mail = run.mail(f"PROBLEM: heartbeat on {run.source} is CRITICAL", body=f"{run.source} fenced by the takeover at ")
    assert f"Node:            {run.source}" in mail["body"]
    outage = run.client.outage(run.fault_at)
    assert outage and outage[1] - outage[0] < 45, outage
    run.report("nagios-hung-cyrus", hard=hard, back_in_icinga=back.epoch)


# --- the same path under a distributed Icinga (lab/icinga_ha.py) ----------------------------------
# Two masters in one HA zone split the cluster host's checks between them (and so its event handlers);
# each node's agent runs its heartbeat and storage checks and storage's kolabmon-takeover. Whoever runs a
# handler, the lock and the last move are the cluster's (CIB): one fault, one move.


def moves(run: Run) -> list[dict]:
    return [r for r in run.decisions() if r.get("moved")]


def test_distributed_icinga_moves_once_whoever_runs_the_handler(campaign) -> None:
    """A read-only spool: storage on the active node's agent and IMAP/SMTP on the masters all turn
    CRITICAL; the first HARD one acts (the agent fences its own node, or a master fences it), every
    later one finds the cool-down: one move, one TAKEOVER mail."""
    run = campaign("imap", icinga_ha.LabDistributedIcinga)
    run.fault(lambda: run.cluster.readonly_spool(run.source))
    moved = lab_icinga.wait("the move", lambda: next(iter(moves(run)), None), 90)
    assert moved["fenced"], moved
    back = run.wait_back("imap")
    lab_icinga.wait("the group on the other node", lambda: run.cluster.active_node() == run.passive, 30)
    time.sleep(5)  # the HARD states that follow the move have their handlers run by now
    assert len(moves(run)) == 1, moves(run)
    # the handler ran where Icinga runs it: storage on the node's agent, the cluster host's on a master
    by = {(r["event"]["host"], r["event"]["service"]): r["origin"] for r in run.decisions()}
    assert all(origin.endswith(f"on {host}") for (host, _), origin in by.items() if host in lab.NODES), by
    assert all(not origin.endswith(tuple(f"on {n}" for n in lab.NODES))
               for (host, _), origin in by.items() if host == CLUSTER_HOST), by
    def refused_after(epoch: float) -> list[dict]:
        return [r for r in run.decisions() if r["event"].get("state_type") == "HARD" and r["event"].get("state") ==
                "CRITICAL" and r.get("epoch", 0) > epoch and r["decision"] in ("refuse", "act", "wait")]
    assert all(r["decision"] == "refuse" for r in refused_after(moved["epoch"])), refused_after(moved["epoch"])
    # the cool-down holds across them: IMAP fails on the new node too (its mailbox list locked; heal()
    # unlocks it), and whichever master checks IMAP finds the move the other handler made
    again = time.time()
    run.cluster.lock_mailboxes(run.passive)
    refused = lab_icinga.wait("a refusal on the new node", lambda: next(
        (r for r in refused_after(again) if r["event"]["host"] == CLUSTER_HOST), None), 60)
    assert refused["decision"] == "refuse" and f"cool-down: {moved['origin']} moved the group" in refused["reason"]
    assert len(moves(run)) == 1 and run.cluster.active_node() == run.passive
    if moved["event"]["host"] == CLUSTER_HOST:  # a master acted: its TAKEOVER mail, once
        assert len([m for m in run.mails() if m["subject"].startswith("[kolabmon] TAKEOVER")]) == 1
    run.report("distributed-readonly-spool", mover=moved["origin"], back_in_icinga=back.epoch)


def test_distributed_icinga_with_a_master_and_the_passive_agent_stopped_moves_the_same(campaign) -> None:
    """master2 and the passive node's agent stopped before the fault: master1 takes all of the masters'
    checks, and a hung Cyrus is fenced, moved and told exactly as with everything running."""
    run = campaign("imap", icinga_ha.LabDistributedIcinga)
    ha = run.icinga.ha
    ha.stop("master2", run.passive)
    lab_icinga.wait("master1 authoritative for every service", lambda: all(ha.authority("master1").values()), 60)
    run.fault(lambda: run.cluster.hang(run.source, "imapd"))
    moved = lab_icinga.wait("the move", lambda: next(iter(moves(run)), None), 90)
    assert moved["event"]["service"] in ("imap", "smtp", "ldap") and moved["fenced"], moved
    assert all(r.check_source == "master1" for r in run.results("imap"))
    back = run.wait_back("imap")
    hard = assert_soft_then_hard(run, "imap")
    lab_icinga.wait("the group on the other node", lambda: run.cluster.active_node() == run.passive, 30)
    time.sleep(5)
    assert len(moves(run)) == 1, moves(run)
    service = moved["event"]["service"]
    assert_problem_then_decision(run, service, CLUSTER_HOST, "MOVED", f"kolabmon-takeover recover {run.source}")
    assert len([m for m in run.mails() if m["subject"].startswith("[kolabmon] TAKEOVER")]) == 1
    outage = run.client.outage(run.fault_at)
    assert outage and outage[1] - outage[0] < 45, outage
    run.report("distributed-one-master-hung-cyrus", hard=hard, back_in_icinga=back.epoch)
