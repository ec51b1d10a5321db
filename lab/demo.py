"""The failover demo (the README's main job): the two-node Kolab cluster with kolabmon's watcher on
each node (ocf:kolabmon:watcher), Icinga 2 checking it with kolabmon, a fault Pacemaker alone does
not notice (every Cyrus imapd hangs on the active node), and the rest left to kolabmon. Both paths run: the
watcher in the cluster detects and takes over within seconds; Icinga sees the fault, runs its event
handler, and that call finds the work done. Prints one timeline of both paths and the client-visible
outage, draws it as an SVG, and tears everything down. `--probes` runs the single-host probe tour
instead (lab/probe_tour.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab import cluster as lab  # noqa: E402
from lab import icinga as lab_icinga  # noqa: E402
from lab import release, servers, takeover_config, timeline, watcher  # noqa: E402
from lab.client_watch import ClientWatch, imap_login  # noqa: E402

BIN = ROOT / ".venv" / "bin"
SVG = ROOT / "var" / "failover-timeline.svg"
START = time.time()


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} +{time.time() - START:6.1f}s  {text}", flush=True)


class Step:
    """A named step: a failure says which step failed."""

    current = "starting"

    def __init__(self, name: str) -> None:
        Step.current = name
        say(f"== {name}")


def healthy_table(icinga: lab_icinga.LabIcinga) -> dict[tuple[str, str], lab_icinga.Result]:
    latest: dict[tuple[str, str], lab_icinga.Result] = {}
    for result in icinga.results():
        latest[(result.host, result.service)] = result
    return latest


def run_demo(workdir: Path) -> int:
    say(f"release: {release.describe()}: {release.current().verified}")
    Step("bringing up the two-node cluster (clean start)")
    lab.down()
    cluster = lab.up()
    say(f"group {lab.GROUP} on {cluster.active_node()}, cluster IP {lab.CLUSTER_IP}")
    icinga = lab_icinga.LabIcinga(workdir / "icinga")
    try:
        Step("starting Icinga 2 (monitor namespace) with the project's icinga/ config")
        icinga.start()
        expected = {("kolab-cluster", s) for s in ("imap", "smtp", "ldap", "freebusy", "roundtrip")} | {
            (n, s) for n in lab.NODES for s in ("heartbeat", "storage")
        }
        Step("waiting for every service to be OK in Icinga")
        lab_icinga.wait(
            "all services OK",
            lambda: all((r := healthy_table(icinga).get(key)) and r.state == "OK" for key in expected),
            90,
        )
        for (host, service), result in sorted(healthy_table(icinga).items()):
            if (host, service) in expected:
                say(f"   {host:13} {service:9} {result.output.split(' | ')[0][:110]}")
        Step("starting kolabmon's watcher on both nodes (a Pacemaker clone of ocf:kolabmon:watcher)")
        # Icinga's takeover config without [notify]: the on-call mailbox is on the monitoring host's
        # loopback, which the nodes cannot reach (a site's [notify] names its mail relay)
        config = takeover_config.write(icinga.dir / "takeover", cooldown=300, fence=True, name="watcher.toml")
        say(f"   started in {watcher.enable(cluster, config):.1f} s, with Icinga's takeover settings (no [notify])")
        watch = ClientWatch(cluster, imap_login(icinga.dir / "takeover" / "imap.pw"))
        watch.start()
        time.sleep(2)
        source = cluster.active_node()
        assert source
        Step(f"fault: Cyrus IMAP hangs on {source} (SIGSTOP on every imapd; the master runs, so "
             "Pacemaker's monitor of it passes)")
        fault_at = time.time()
        cluster.hang(source, "imapd")
        moved = lab_icinga.wait(
            "the takeover",
            lambda: next((r for r in icinga.audit() if r.get("decision") == "act" and "moved" in r), None),
            180,
        )
        say(f"{moved['origin']}: {moved['reason']}")
        if not moved.get("moved"):
            raise servers.LabError(f"the takeover failed: {moved['reason']}")
        target = cluster.wait_group(timeout=60, not_on=source)
        Step(f"waiting for IMAP OK in Icinga (served by {target}) and the on-call mail")
        lab_icinga.wait(
            "IMAP OK again",
            lambda: any(
                r.service == "imap" and r.state == "OK" and r.epoch > fault_at + 1 and r.host == "kolab-cluster"
                for r in icinga.results()
            ),
            90,
        )
        # Icinga's own path: its handler ran on each CRITICAL event; the last one says what it found
        late = next((r for r in reversed(icinga.audit()) if r.get("origin", "").startswith("icinga")
                     and r.get("decision") != "acting"
                     and r["event"]["service"] == "imap" and r["event"]["state"] == "CRITICAL"), None)
        if late:
            say(f"{late['origin']} on the {late['event']['state_type']} event: {late['decision']}: {late['reason']}")
        # the fenced node's own checks turn HARD a little later: their mails are part of the story
        lab_icinga.wait("the on-call mail about the fault",
                        lambda: any(m["epoch"] >= fault_at - 1 for m in icinga.oncall_mail()), 60)
        time.sleep(5)
        watch.stopping.set()
        report(cluster, icinga, watch, fault_at, source, target or "?", moved, late)
        return 0
    finally:
        say("== tearing down (Icinga, mail, cluster)")
        icinga.stop()
        lab.down()


def report(
    cluster: lab.Cluster,
    icinga: lab_icinga.LabIcinga,
    watch: ClientWatch,
    fault_at: float,
    source: str,
    target: str,
    moved: dict,
    late: dict | None,
) -> None:
    results = [r for r in icinga.results() if r.epoch >= fault_at - 20]
    imap = [r for r in results if r.host == "kolab-cluster" and r.service == "imap"]
    first_bad = next((r.epoch for r in imap if r.epoch > fault_at and r.state != "OK"), None)
    hard = next(
        (r.epoch for r in imap if r.epoch > fault_at and r.state == "CRITICAL" and r.state_type == "HARD"), None
    )
    durations = moved["durations"]
    handed_over = moved["epoch"]  # the takeover starts when the watcher hands the fault over
    first_probe = moved["epoch"] - durations["detect"] if "detect" in durations else None
    decided = moved["epoch"] + durations["decide"] + durations.get("reprobe", 0)
    moved_at = decided + durations.get("move", 0)
    verified = moved_at + durations.get("verify", 0)
    ok_again = next((r.epoch for r in imap if hard and r.epoch > hard and r.state == "OK"), None)
    mails = [m for m in sorted(icinga.oncall_mail(), key=lambda m: m["epoch"]) if m["epoch"] >= fault_at - 1]
    fenced = cluster.fenced_at(source)
    who = moved["origin"]
    events = [
        (fault_at, f"fault injected: Cyrus IMAP hangs on {source}"),
        (first_probe, "watcher: first failed in-process IMAP probe"),
        (handed_over, f"{who}: fault confirmed and handed over, takeover starts"),
        (decided, f"{who}: decided ({'fence first' if moved.get('fence_first') == 'done' else 'move'})"),
        (fenced, f"{source} fenced"),
        (moved_at, f"cluster moved: whole group started on {target}"),
        (verified, f"{who}: IMAP verified on {target}"),
        (first_bad, "Icinga: first non-OK IMAP check"),
        (hard, "Icinga: IMAP HARD CRITICAL (event handler runs)"),
        (late and late.get("finished"), f"Icinga's handler ({late['event']['state_type']}): {late['decision']}"
         if late else ""),
        (ok_again, f"Icinga: IMAP OK, served by {target}"),
        *((mail["epoch"], f"mail: {lab_icinga.said(mail)[:110]}") for mail in mails),
    ]
    events = sorted((t, label) for t, label in events if t)
    print("\nTimeline (seconds after the fault):")
    for at, label in events:
        print(f"  {dt.datetime.fromtimestamp(at).strftime('%H:%M:%S.%f')[:-3]}  +{at - fault_at:6.1f}s  {label}")
    outage = watch.outage(fault_at)
    if outage:
        print(
            f"\nClient-visible IMAP outage (login on {lab.CLUSTER_IP} from the client every 0.5 s): "
            f"{outage[1] - outage[0]:.1f} s (first failure +{outage[0] - fault_at:.1f} s, "
            f"back +{outage[1] - fault_at:.1f} s) on {release.describe()}"
        )
    print(
        f"detected and moved by {who}: detection {durations.get('detect', 0):.1f} s (first failed probe -> "
        f"handed over), decide {durations['decide']:.1f} s, fence {durations.get('fence', 0):.1f} s, move incl. "
        f"fencing {durations.get('move', 0):.1f} s, verify {durations.get('verify', 0):.1f} s\n"
        + (f"Icinga's path: HARD at +{hard - fault_at:.1f} s" if hard else
           "Icinga's path: the service was back before the check turned HARD (no notification, as designed)")
        + (f"; its handler on the {late['event']['state_type']} event ({late['origin']}): {late['reason']}"
           if late else "")
    )
    lanes: dict[str, list[tuple[float, str]]] = {}
    for r in results:
        name = f"{r.service} ({'cluster IP' if r.host == 'kolab-cluster' else r.host})"
        lanes.setdefault(name, [])
        if not lanes[name] or lanes[name][-1][1] != r.state:
            lanes[name].append((r.epoch - fault_at, r.state))
    lanes["users: IMAP from the client"] = []
    for at, ok in watch.samples:
        state = "OK" if ok else "CRITICAL"
        if not lanes["users: IMAP from the client"] or lanes["users: IMAP from the client"][-1][1] != state:
            lanes["users: IMAP from the client"].append((at - fault_at, state))
    start = -10.0
    shifted = {
        name: [(max(t, start) - start, s) for t, s in samples if t < 200] for name, samples in sorted(lanes.items())
    }
    end = max((s[-1][0] for s in shifted.values() if s), default=60) + 5
    SVG.parent.mkdir(exist_ok=True)
    timeline.render(
        SVG,
        f"kolabmon failover: Cyrus IMAP hangs on {source}; {who} fences it and the group runs on {target}",
        shifted,
        [(t - fault_at - start, label) for t, label in events],
        end,
        origin=-start,
    )
    print(f"\nTimeline picture: {SVG}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", action="store_true", help="run the single-host probe tour instead")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (Icinga logs, audit)")
    options = parser.parse_args()
    if options.probes:
        from lab import probe_tour

        return probe_tour.main()
    workdir = Path(tempfile.mkdtemp(prefix="kolabmon-demo-"))
    try:
        return run_demo(workdir)
    except (servers.LabError, AssertionError, OSError) as exc:
        say(f"FAILED in step '{Step.current}': {exc}")
        return 1
    finally:
        if options.keep:
            say(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
