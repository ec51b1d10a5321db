"""Client-visible outage of each fault class in the lab cluster, for three set-ups side by side:

    watcher    kolabmon-watch in the cluster (ocf:kolabmon:watcher clone), fence = true
    icinga     Icinga's path: the lab's check timings (a check every --interval s, HARD after
               --attempts failures, plugin timeout 4 s), kolabmon-takeover from the monitoring host
               on the SOFT and HARD events with $service.output$, fence = true; no watcher
    pacemaker  Pacemaker alone with the stock agents, no kolabmon (bounded at --bound s)

Fault classes: hung-cyrus (SIGSTOP of every imapd; Cyrus's master runs), held-lock (a POSIX lock held
on Cyrus's mailboxes.db: LOGIN works, SELECT waits), hung-saslauthd (SIGSTOP: IMAP LOGIN and SMTP AUTH
wait), readonly-spool, hung-slapd, crashed-postfix (SIGKILL of the master), node-off (the active node
powered off). The client checks the affected service on the
cluster IP every 0.2 s (1 s timeout; the mail round trip for the spool, 3 s): the outage is the
fault -> the first check that passes again. From the audit record: detection (fault -> the
takeover starts), decision (lock, cluster state, second opinion), fence, start (-> the group runs
on the other node), verify. Moves and fences are counted from crm_mon.

    .venv/bin/python bench/bench_takeover.py [--setups watcher,icinga,pacemaker] [--classes ...]
        [--runs 3] [--runs-hung-watcher 10] [--blips 30] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kolabmon import pacemaker  # noqa: E402
from kolabmon.takeover import audit  # noqa: E402
from lab import cluster as lab  # noqa: E402
from lab import release, servers, takeover_config, watcher  # noqa: E402

BIN = ROOT / ".venv" / "bin"
SETUPS = ("watcher", "icinga", "pacemaker")
CLASSES = ("hung-cyrus", "held-lock", "hung-saslauthd", "readonly-spool", "hung-slapd", "crashed-postfix",
           "node-off")
PHASES = ("detection", "decision", "fence", "start", "verify")


@dataclass(frozen=True)
class Fault:
    inject: Callable[[lab.Cluster, str], object]
    client: str       # which client check shows users the fault
    service: str      # the Icinga service that sees it (and the takeover's [services] name)


FAULTS = {
    "hung-cyrus": Fault(lambda c, n: c.hang(n, "imapd"), "imap", "imap"),
    "held-lock": Fault(lambda c, n: c.lock_mailboxes(n), "imap", "imap"),
    "hung-saslauthd": Fault(lambda c, n: c.hang(n, "saslauthd"), "imap", "imap"),
    "readonly-spool": Fault(lambda c, n: c.readonly_spool(n), "roundtrip", "storage"),
    "hung-slapd": Fault(lambda c, n: c.hang(n, "slapd"), "ldap", "ldap"),
    "crashed-postfix": Fault(lambda c, n: c.crash(n, "postfix"), "smtp", "smtp"),
    "node-off": Fault(lambda c, n: c.kill_node(n), "imap", "imap"),
}


def client_check(kind: str, workdir: Path) -> list[str]:
    """What a user's client does, on the cluster IP, with a short timeout."""
    ca, ip, pw = str(lab.make_certs().ca), lab.CLUSTER_IP, str(workdir / "imap.pw")
    if kind == "imap":
        return [*takeover_config.imap_check("1"), "--password-file", pw]
    if kind == "smtp":
        return [str(BIN / "check_kolab_smtp"), "-H", ip, "--starttls", "--ca-file", ca, "-t", "1"]
    if kind == "ldap":
        return [str(BIN / "check_kolab_ldap"), "-H", ip, "-b", servers.LDAP_BASE, "-f", "(uid=user1)", "-D",
                servers.LDAP_SERVICE_DN, "--password-file", str(workdir / "ldap.pw"), "-t", "1"]
    return [str(BIN / "check_kolab_roundtrip"), "-H", ip, "--starttls", "--ca-file", ca, "-u", takeover_config.USER,
            "--password-file", pw, "-t", "3", "--poll", "0.2"]


class Client(threading.Thread):
    """The users' view: the affected service checked every 0.2 s; when it failed and came back."""

    def __init__(self, cluster: lab.Cluster, argv: list[str], t0: float, bound: float) -> None:
        super().__init__(daemon=True)
        self.cluster, self.argv, self.t0, self.bound = cluster, argv, t0, bound
        self.first_fail: float | None = None
        self.back: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and time.monotonic() - self.t0 < self.bound:
            ok = self.cluster.client(*self.argv, timeout=15).returncode == 0
            now = time.monotonic() - self.t0
            if not ok and self.first_fail is None:
                self.first_fail = now
            if ok and self.first_fail is not None:
                self.back = now
                return
            if ok and now > 8 and self.first_fail is None:  # never failed: nothing for users to see
                self.back = 0.0
                return
            self.stop.wait(0.2)


def fences(cluster: lab.Cluster, since: float) -> int:
    """Successful fencing completed since the epoch `since` (crm_mon's history, UTC to the second)."""
    return sum(1 for e in cluster.status().fence_events
               if e.get("status") == "success" and (pacemaker.fence_completed(e) or 0) >= int(since))


def icinga(cluster: lab.Cluster, config: Path, fault: Fault, source: str, t0: float, interval: float,
           attempts: int) -> float | None:
    """Icinga's checks and handler calls, as the lab's timings make them; the HARD time (or None)."""
    argv = list(takeover_config.reprobes(config)[fault.service])
    argv[argv.index("-t") + 1] = "4"  # the lab's plugin timeout (icinga/templates.conf)
    where = source if fault.service == "storage" else "monitor"  # node-local checks run on the node
    failures = 0
    while time.monotonic() - t0 < 60:
        began = time.monotonic()
        done = cluster.on(where, *argv, timeout=15)
        if done.returncode == 0:
            failures = 0
        else:
            failures += 1
            hard = failures >= attempts
            args = ["--host", source if fault.service == "storage" else "kolab-cluster", "--service",
                    fault.service, "--state", "CRITICAL", "--state-type", "HARD" if hard else "SOFT", "--attempt",
                    "1" if hard else str(failures), "--max-attempts", str(attempts), "--output",
                    done.stdout.strip().splitlines()[0] if done.stdout.strip() else "", "--timeout", "300"]
            handler = [str(BIN / "kolabmon-takeover"), "--config", str(config), *args]
            if hard:
                at = time.monotonic() - t0
                cluster.monitor(*handler, timeout=320)
                return at
            cluster.monitor(*handler, timeout=60)
        time.sleep(max(interval - (time.monotonic() - began), 0))
    return None


def one_run(cluster: lab.Cluster, setup: str, kind: str, workdir: Path, options: argparse.Namespace
            ) -> dict[str, object]:
    fault = FAULTS[kind]
    lab.heal(cluster, keep_watcher=setup == "watcher")
    config = takeover_config.write(workdir, fence=True, cooldown=600)  # one per set-up: the watcher keeps it
    if setup == "watcher" and not watcher.running_on(cluster) >= set(lab.NODES):
        watcher.enable(cluster, config)
    source = cluster.active_node()
    assert source, "the group is not running"
    start_epoch, t0 = time.time(), time.monotonic()
    client = Client(cluster, client_check(fault.client, workdir), t0, options.bound)
    fault.inject(cluster, source)
    client.start()
    hard = None
    if setup == "icinga":
        hard = icinga(cluster, config, fault, source, t0, options.interval, options.attempts)
    client.join(options.bound + 20)
    client.stop.set()

    def runs_records() -> list[dict]:
        log = workdir / "audit.jsonl"
        return [r for r in (audit.tail(log) if log.exists() else []) if "event" in r and r["epoch"] >= start_epoch - 1]
    deadline = time.monotonic() + 30  # a takeover writes its record after verifying
    while setup == "watcher" and not any("moved" in r for r in runs_records()) and time.monotonic() < deadline:
        if cluster.active_node() == source:  # nothing moved: no takeover to wait for
            break
        time.sleep(0.5)
    records = runs_records()
    try:  # where the group runs once Pacemaker is done (a restart in place passes through "nowhere")
        where = cluster.wait_group(timeout=60)
    except lab.LabError:
        where = "?"
    if kind in ("hung-cyrus", "held-lock", "hung-saslauthd", "hung-slapd", "readonly-spool") \
            and lab.node_pid1(source) and where == source:
        cluster.kill_node(source)  # nothing recovered it (Pacemaker alone): the next run starts clean
    acted = [r for r in records if r.get("moved") is not None]
    result: dict[str, object] = {
        "setup": setup, "class": kind, "outage": None if client.back is None else round(client.back, 2),
        "moved": where != source, "fences": fences(cluster, start_epoch),
        "kolabmon_moves": sum(1 for r in records if r.get("moved")), "decisions": [r.get("reason") for r in records]}
    if acted:
        record, d = acted[0], acted[0]["durations"]
        result |= {"detection": round(float(record["epoch"]) - start_epoch, 2) if hard is None else round(hard, 2),
                   "decision": round(d.get("decide", 0) + d.get("reprobe", 0), 2), "fence": d.get("fence", 0.0),
                   "start": round(d.get("move", 0) - d.get("fence", 0), 2), "verify": d.get("verify", 0.0)}
    return result


def blips(cluster: lab.Cluster, workdir: Path, count: int) -> dict[str, object]:
    """Two-second hangs of every imapd with the watcher running: how many moves (the answer must be 0)."""
    lab.heal(cluster, keep_watcher=True)
    config = takeover_config.write(workdir, fence=True, cooldown=600)
    watcher.enable(cluster, config)
    source = cluster.active_node()
    for _ in range(count):
        cluster.hang(source, "imapd")
        time.sleep(2)
        cluster.unhang(source, "imapd")
        time.sleep(3)
    time.sleep(3)
    records = audit.tail(workdir / "audit.jsonl") if (workdir / "audit.jsonl").exists() else []
    return {"setup": "watcher", "class": f"{count} two-second Cyrus imapd blips",
            "moved": cluster.active_node() != source,
            "decisions": len([r for r in records if "event" in r]), "fences": 0}


def table(results: list[dict[str, object]]) -> str:
    rows = ["| set-up | fault | runs | outage median | outage max | " + " | ".join(PHASES)
            + " (medians) | group moved | fences | kolabmon moves |", "|" + "---|" * (9 + len(PHASES) - 1)]
    keys = sorted({(str(r["setup"]), str(r["class"])) for r in results if "outage" in r},
                  key=lambda k: (SETUPS.index(k[0]), CLASSES.index(k[1])))
    for setup, kind in keys:
        runs = [r for r in results if r["setup"] == setup and r["class"] == kind]
        outages = [r["outage"] for r in runs]
        known = [float(o) for o in outages if isinstance(o, int | float)]
        unbounded = len(outages) - len(known)

        def show(values: list[float], pick: Callable[[list[float]], float]) -> str:
            return f"{pick(values):.1f} s" if values else "-"
        median = show(known, statistics.median) if not unbounded else f"> {runs[0].get('bound', 120)} s"
        worst = show(known, max) if not unbounded else f"> bound ({unbounded} runs)"
        phases = [show([float(r[p]) for r in runs if p in r], statistics.median) for p in PHASES]  # type: ignore[arg-type]
        rows.append(f"| {setup} | {kind} | {len(runs)} | {median} | {worst} | " + " | ".join(phases)
                    + f" | {sum(bool(r['moved']) for r in runs)}/{len(runs)} | {sum(int(r['fences']) for r in runs)}"
                    f" | {sum(int(r.get('kolabmon_moves', 0)) for r in runs)} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", default=",".join(SETUPS))
    parser.add_argument("--classes", default=",".join(CLASSES))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--runs-hung-watcher", type=int, default=10, help="runs of hung-cyrus on the watcher path")
    parser.add_argument("--blips", type=int, default=30, help="two-second blips on the watcher path (0: none)")
    parser.add_argument("--interval", type=float, default=1.0, help="Icinga path: check and retry interval (s)")
    parser.add_argument("--attempts", type=int, default=3, help="Icinga path: max_check_attempts")
    parser.add_argument("--bound", type=float, default=120.0, help="give up on an outage after this long (s)")
    parser.add_argument("--json", type=Path, help="append every run as a JSON line")
    options = parser.parse_args()
    cluster = lab.up()
    results: list[dict[str, object]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kolabmon-bench-takeover-") as tmp:
        for setup in options.setups.split(","):
            for kind in options.classes.split(","):
                runs = options.runs_hung_watcher if (setup, kind) == ("watcher", "hung-cyrus") else options.runs
                for _ in range(runs):
                    result = one_run(cluster, setup, kind, Path(tmp) / setup, options)
                    result["bound"] = options.bound
                    results.append(result)
                    print(json.dumps(result), flush=True)
                    if options.json:
                        with options.json.open("a") as handle:
                            handle.write(json.dumps(result) + "\n")
        if options.blips:
            result = blips(cluster, Path(tmp) / "blips", options.blips)
            print(json.dumps(result), flush=True)
            results.append(result)
        lab.heal(cluster)
    print(f"\n{release.describe()} ({release.current().verified}); {time.monotonic() - started:.0f} s in all")
    print(table(results))
    for r in results:
        if "outage" not in r:
            print(f"{r['class']}: group moved {r['moved']}, takeover decisions {r['decisions']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
