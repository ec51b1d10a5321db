"""Run plugins as Icinga does, and check what they print."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from kolabmon import runtime

BIN = Path(sys.executable).parent


@dataclass
class Run:
    """One plugin execution as Icinga sees it."""

    rc: int
    out: str
    err: str
    seconds: float

    @property
    def line(self) -> str:
        return self.out.split("\n", 1)[0]


def clean_env(**extra: str) -> dict[str, str]:
    """The plugin environment: none of this machine's CA-bundle overrides."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "KOLABMON_PASSWORD")}
    env.update(extra)
    return env


def run_plugin(name: str, *args: str, password: str | None = None, timeout: float = 30, **env: str) -> Run:
    environ = clean_env(**env)
    if password is not None:
        environ["KOLABMON_PASSWORD"] = password
    start = time.monotonic()
    proc = subprocess.run([str(BIN / name), *args], capture_output=True, text=True, env=environ,
                          timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


# Monitoring Plugins output: `SERVICE STATE - text | 'label'=value[UOM];[warn];[crit];[min];[max] ...`
PERF_VALUE = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
PERF_RANGE = r"@?(?:(?:~|" + PERF_VALUE + r")?:)?(?:" + PERF_VALUE + r")?"
PERF_ITEM = (r"(?:'[^'=]+'|[^' =]+)=" + PERF_VALUE + r"(?:s|ms|us|%|B|KB|MB|TB|c)?"
             r"(?:;" + PERF_RANGE + r"(?:;" + PERF_RANGE + r"(?:;" + PERF_VALUE + r"?(?:;" + PERF_VALUE
             + r"?)?)?)?)?")
STATUS_LINE = re.compile(r"(?P<service>[A-Z][A-Z/]*) (?P<state>OK|WARNING|CRITICAL|UNKNOWN)"
                         r" - (?P<text>[^|\n]+?)"
                         r"(?: \| (?P<perf>" + PERF_ITEM + r"(?: " + PERF_ITEM + r")*))?")


def assert_plugin_output(out: str, rc: int) -> re.Match[str]:
    """One status line in the Monitoring Plugins grammar whose state matches the exit code."""
    line = out.split("\n", 1)[0]
    match = STATUS_LINE.fullmatch(line)
    assert match, f"not valid plugin output: {line!r}"
    assert runtime.STATE_NAMES.index(match["state"]) == rc, line
    assert "Traceback" not in out
    return match




# --- OCF resource agents ---------------------------------------------------------------------
OCF_DTD_DIR = Path("/usr/share/resource-agents")  # ra-api-1.dtd, which the meta-data's DOCTYPE names


def valid_meta_data(agent: Path) -> ET.Element:
    """The agent's meta-data, checked as ocf-tester checks it (valid against ra-api-1.dtd)."""
    meta = subprocess.run([str(agent), "meta-data"], capture_output=True, text=True, timeout=10,
                          env={"PATH": os.environ["PATH"]})
    assert meta.returncode == 0, meta.stderr
    lint = subprocess.run(["xmllint", "--noout", "--valid", "-"], input=meta.stdout, cwd=OCF_DTD_DIR,
                          capture_output=True, text=True, timeout=10)
    assert lint.returncode == 0, lint.stderr
    return ET.fromstring(meta.stdout)


def exit_reason(result: subprocess.CompletedProcess[str]) -> str:
    """The agent's last ocf-exit-reason line."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("ocf-exit-reason:")]
    assert lines, f"no ocf-exit-reason in {result.stderr!r}"
    return lines[-1].removeprefix("ocf-exit-reason:")
