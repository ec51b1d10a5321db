"""Cost per check: kolabmon's plugins side by side with the monitoring-plugins C binaries.

Starts the lab's Dovecot and slapd, then runs every case round-robin (so machine noise hits all
cases alike) and reports, per check, median and p90 wall time, median CPU time (user+sys) and peak
RSS, read from the kernel's rusage of each child (os.wait4), and the ratio to the C plugin.

    .venv/bin/python bench/bench_checks.py [--runs 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab import release, servers  # noqa: E402

PLUGINS = Path("/usr/lib/nagios/plugins")
BIN = ROOT / ".venv" / "bin"
TARGETS_MS = {"kolab imap login+select": 80, "kolab imap --help": 30, "kolab imap usage error": 45}


def build_launcher(directory: Path) -> Path:
    """Compile bench/spawn.c: it forks the measured command from a tiny process."""
    launcher = directory / "spawn"
    subprocess.run(["gcc", "-O2", "-o", str(launcher), str(ROOT / "bench" / "spawn.c")], check=True)
    return launcher


def measure(launcher: Path, argv: list[str], env: dict[str, str]) -> tuple[float, float, int, int]:
    """Run once: wall seconds, CPU seconds, peak RSS in KiB, exit code."""
    proc = subprocess.run([str(launcher), *argv], env=env, capture_output=True, text=True, check=True)
    wall, cpu, rss, code = proc.stdout.split()
    return float(wall), float(cpu), int(rss), int(code)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    options = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    user, password = "user1@example.org", servers.USERS["user1@example.org"]
    env["KOLABMON_PASSWORD"] = password
    with tempfile.TemporaryDirectory(prefix="kolabmon-bench-") as tmp:
        root = Path(tmp)
        launcher = build_launcher(root)
        certs = servers.make_certs(root)
        dovecot = servers.start_dovecot(root, certs)
        slapd = servers.start_slapd(root, certs)
        try:
            imap, ldap = str(dovecot.ports["imap"]), str(slapd.ports["ldap"])
            dn, base = servers.LDAP_SERVICE_DN, servers.LDAP_BASE
            ldap_filter = "(uid=user1)"
            cases = {
                "C check_imap (banner)": ([str(PLUGINS / "check_imap"), "-H", "127.0.0.1", "-p", imap], None),
                "kolab imap banner": ([str(BIN / "check_kolab_imap"), "-H", "127.0.0.1", "-p", imap],
                                      "C check_imap (banner)"),
                "kolab imap login+select": ([str(BIN / "check_kolab_imap"), "-H", "127.0.0.1", "-p", imap,
                                             "-u", user], "C check_imap (banner)"),
                "C check_ldap (bind+search)": ([str(PLUGINS / "check_ldap"), "-H", "127.0.0.1", "-p", ldap,
                                                "-3", "-D", dn, "-P", servers.LDAP_SERVICE_PASSWORD,
                                                "-b", base, "-a", ldap_filter], None),
                "kolab ldap bind+search": ([str(BIN / "check_kolab_ldap"), "-H", "127.0.0.1", "-p", ldap,
                                            "-D", dn, "-b", base, "-f", ldap_filter],
                                           "C check_ldap (bind+search)"),
                "python -c pass (interpreter)": ([str(BIN / "python"), "-c", "pass"], None),
                "python -c 'import nagiosplugin, imapclient'": ([str(BIN / "python"), "-c",
                                                                 "import nagiosplugin, imapclient"], None),
                "kolab imap --help": ([str(BIN / "check_kolab_imap"), "--help"], None),
                "kolab imap usage error": ([str(BIN / "check_kolab_imap"), "-H", "x", "-w", "abc"], None),
            }
            ldap_env = dict(env, KOLABMON_PASSWORD=servers.LDAP_SERVICE_PASSWORD)
            samples: dict[str, list[tuple[float, float, int, int]]] = {name: [] for name in cases}
            for _ in range(options.runs):
                for name, (argv, _) in cases.items():
                    samples[name].append(measure(launcher, argv, ldap_env if "ldap" in name else env))
        finally:
            dovecot.stop()
            slapd.stop()
    print(f"{'check':44} {'exit':>4} {'wall med':>9} {'wall p90':>9} {'cpu med':>8} {'rss max':>8} "
          f"{'x C wall':>8} {'x C cpu':>8} {'x C rss':>8}  target")
    medians = {}
    for name, (_, baseline) in cases.items():
        walls = sorted(s[0] for s in samples[name])
        cpu = statistics.median(s[1] for s in samples[name])
        rss = max(s[2] for s in samples[name])
        codes = sorted({s[3] for s in samples[name]})
        medians[name] = (statistics.median(walls), cpu, rss)
        ratio = ""
        if baseline:
            base_wall, base_cpu, base_rss = medians[baseline]
            ratio = f"{medians[name][0] / base_wall:8.1f} {cpu / max(base_cpu, 1e-6):8.1f} {rss / base_rss:8.1f}"
        target = TARGETS_MS.get(name)
        verdict = ""
        if target:
            verdict = f"<= {target} ms: {'met' if medians[name][0] * 1000 <= target else 'MISSED'}"
        print(f"{name:44} {','.join(map(str, codes)):>4} {medians[name][0] * 1000:7.1f}ms "
              f"{walls[int(len(walls) * 0.9) - 1] * 1000:7.1f}ms {cpu * 1000:6.1f}ms {rss / 1024:6.1f}Mi "
              f"{ratio:26}  {verdict}")
    print(f"runs per case: {options.runs}; python: {os.path.realpath(BIN / 'python')}; {release.describe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
