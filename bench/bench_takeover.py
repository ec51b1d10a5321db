"""Client-visible outage of a takeover in the lab cluster, split into detection, decision, move
(fencing included) and verification; median and max over several runs.

Each run: heal the cluster, SIGSTOP Dovecot on the active node (the fault Pacemaker does not see),
check IMAP on the cluster IP from the client the way Icinga would (every --interval seconds; HARD
after --attempts failed checks in a row), call kolabmon-takeover from the monitoring host on the
SOFT and HARD events, and, in parallel, probe IMAP from the client every 0.25 s to see when users
are served again.

    .venv/bin/python bench/bench_takeover.py [--runs 3] [--interval 1] [--attempts 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kolabmon.takeover import audit  # noqa: E402
from lab import cluster as lab  # noqa: E402
from lab import release, takeover_config  # noqa: E402

BIN = ROOT / ".venv" / "bin"


def imap_ok(cluster: lab.Cluster, secret: Path, timeout: str) -> bool:
    argv = takeover_config.imap_check(timeout)
    return cluster.client(*argv, "--password-file", str(secret), timeout=15).returncode == 0


def one_run(cluster: lab.Cluster, workdir: Path, interval: float, attempts: int) -> dict[str, float]:
    lab.heal(cluster)
    config = takeover_config.write(workdir, cooldown=0)
    secret = workdir / "imap.pw"
    source = cluster.active_node()
    assert source, "group not running"
    back: dict[str, float] = {}
    stop = threading.Event()

    def watch(t0: float) -> None:  # the users' view: when does IMAP answer again?
        while not stop.is_set():
            if imap_ok(cluster, secret, "1") and "first_ok" not in back and time.monotonic() > t0 + 0.5:
                back["first_ok"] = time.monotonic() - t0
                return
            time.sleep(0.25)

    t0 = time.monotonic()
    cluster.hang(source, "dovecot")
    watcher = threading.Thread(target=watch, args=(t0,), daemon=True)
    watcher.start()
    failures, hard_at, first_bad = 0, None, None
    while hard_at is None:
        checked = time.monotonic()
        if imap_ok(cluster, secret, "2"):
            failures = 0
        else:
            failures += 1
            first_bad = first_bad or time.monotonic() - t0
            state_type = "HARD" if failures >= attempts else "SOFT"
            if state_type == "HARD":
                hard_at = time.monotonic() - t0
            result = cluster.monitor(str(BIN / "kolabmon-takeover"), "--config", str(config), "--host",
                                     "kolab-cluster", "--service", "imap", "--state", "CRITICAL", "--state-type",
                                     state_type, "--attempt", str(min(failures, attempts) if state_type == "SOFT"
                                                                  else 1), "--max-attempts", str(attempts),
                                     timeout=240)
        time.sleep(max(interval - (time.monotonic() - checked), 0))
    handler_done = time.monotonic() - t0
    watcher.join(timeout=60)
    stop.set()
    record = audit.tail(workdir / "audit.jsonl")[-1]
    if not record.get("moved"):
        raise SystemExit(f"run failed: {result.stdout.strip()}")
    durations = record["durations"]
    cluster.restore(source, timeout=90)
    cluster.monitor(str(BIN / "kolabmon-takeover"), "--config", str(config), "recover", source)
    return {"first failed check": first_bad or 0.0, "detection (HARD)": hard_at,
            "decision (decide + second opinion)": durations["decide"] + durations["reprobe"],
            "move (incl. fencing)": durations["move"], "verification": durations["verify"],
            "handler done": handler_done, "outage (fault -> IMAP OK at client)": back.get("first_ok", float("nan"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--interval", type=float, default=1.0, help="check and retry interval (s)")
    parser.add_argument("--attempts", type=int, default=3, help="max_check_attempts")
    options = parser.parse_args()
    cluster = lab.up()
    results = []
    with tempfile.TemporaryDirectory(prefix="kolabmon-bench-takeover-") as tmp:
        for index in range(options.runs):
            run = one_run(cluster, Path(tmp) / f"run{index}", options.interval, options.attempts)
            results.append(run)
            print(f"run {index + 1}: " + ", ".join(f"{k} {v:.1f}s" for k, v in run.items()), flush=True)
    print(f"\n{release.describe()} ({release.current().verified})")
    print(f"hung Dovecot on the active node; checks every {options.interval:g} s, HARD after "
          f"{options.attempts}; {options.runs} runs")
    print(f"{'phase':40} {'median':>8} {'max':>8}")
    for key in results[0]:
        values = [r[key] for r in results]
        print(f"{key:40} {statistics.median(values):7.1f}s {max(values):7.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
