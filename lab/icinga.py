"""A real Icinga 2 against the lab cluster, from the monitoring host (the `monitor` namespace).

It runs the project's `icinga/` config unchanged, with a lab hosts file: the cluster host on the
cluster IP, the two nodes with the `lab/on {node}` command prefix, timing in seconds instead of
minutes (the templates' per-host timing vars), kolabmon-takeover as the event handler, and on-call
mail through a Postfix/Dovecot pair on the monitoring side (not the cluster's, which is down during
a takeover). Icinga runs as root in the lab (entering the node namespaces
needs it). Every check result is one line in a PerfdataWriter file: the timeline is read from there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from kolabmon.takeover import audit
from lab import cluster as lab
from lab import servers, takeover_config

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
ONCALL = "user2@example.org"
USER = "user1@example.org"
# the lab's timing: check every 2 s, retry every 1 s, HARD at the 3rd failure; IMAP gives up on a
# hung server after 4 s, so a hung Cyrus turns HARD about 3 x (4 + 1) = 15 s after the fault
CHECK, RETRY, ATTEMPTS, PLUGIN_TIMEOUT = 2, 1, 3, 4
NODE_RETRY = 3  # the nodes' storage retries span 6 s, more than a heartbeat check (every 2 s) takes
FORMAT = "\\t".join(f"${m}$" for m in ("service.last_check", "host.name", "service.name", "service.state",
                                       "service.state_type", "service.check_attempt", "service.output"))
# where each daemon keeps its state: -D<Name>Dir=WORKDIR/<sub> (nothing under /var/lib/icinga2, /run/icinga2, ...)
DIRS = (("Data", "data"), ("Log", "log"), ("Cache", "cache"), ("Spool", "spool"), ("InitRun", "run"))


def wait(what: str, done: Callable[[], T | None], timeout: float) -> T:
    """Poll `done` until it returns something true; LabError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = done()
        if value:
            return value
        time.sleep(0.5)
    raise servers.LabError(f"{what}: not within {timeout:.0f} s")


@dataclass
class Result:
    """One check result as Icinga recorded it."""

    epoch: float
    host: str
    service: str
    state: str
    state_type: str
    attempt: int
    output: str
    # the endpoint that ran the check and the one that scheduled it (a spool written with SOURCES)
    check_source: str = ""
    scheduling_source: str = ""


# a FORMAT with the endpoints of each result: for a distributed Icinga (lab/icinga_ha.py)
SOURCES = FORMAT + "\\t$service.check_source$\\t$service.scheduling_source$"


def defines(workdir: Path) -> list[str]:
    """icinga2's -D options that keep one daemon's state under `workdir`."""
    return [f"-D{name}Dir={workdir / sub}" for name, sub in DIRS]


def daemon_env(**extra: str) -> dict[str, str]:
    """The environment of a lab icinga2: as root (the lab enters namespaces), no CA-bundle overrides."""
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    return env | {"ICINGA2_USER": "root", "ICINGA2_GROUP": "root"} | extra


def read_results(spool: Path) -> list[Result]:
    """Every check result in a PerfdataWriter spool written with FORMAT (or SOURCES), in time order."""
    found = []
    for fields in spool_lines(spool):
        if len(fields) in (7, 9) and fields[0].replace(".", "").isdigit():
            found.append(Result(float(fields[0]), fields[1], fields[2], fields[3], fields[4],
                                int(fields[5]) if fields[5].isdigit() else 0, fields[6], *fields[7:]))
    return sorted(found, key=lambda r: r.epoch)


class LabIcinga:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.mail: dict = {}

    # --- start / stop ------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        self.prepare("data", "log", "cache", "spool/perfdata", "run", "etc")
        main = self.write_config()
        check = subprocess.run(self.icinga2("daemon", "-C", "-c", str(main)), capture_output=True, text=True,
                               env=self.env(), timeout=60)
        if check.returncode != 0:
            raise servers.LabError(f"icinga2 daemon -C failed: {check.stdout.strip().splitlines()[-1:]}")
        with open(self.dir / "icinga2.out", "wb") as out:
            self.proc = subprocess.Popen(self.icinga2("daemon", "-c", str(main)), env=self.env(), stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_first_check("Icinga", self.dir / "icinga2.out", timeout)

    def prepare(self, *subdirs: str) -> None:
        """What every lab monitor starts with: its directories, the on-call mail servers, and the
        monitoring host's takeover config (fence first, a 300 s cool-down, its own TAKEOVER mails)."""
        for sub in (*subdirs, "mail"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.start_mail()
        self.takeover = takeover_config.write(self.dir / "takeover", cooldown=300, fence=True,
                                              notify=self.notify_command())

    def wait_first_check(self, name: str, log: Path, timeout: float) -> None:
        """Until the daemon in self.proc has recorded an imap result; LabError with its log's tail when
        it exits or `timeout` s pass first."""
        deadline = time.monotonic() + timeout
        while not any(r.service == "imap" for r in self.results()):
            if (self.proc is not None and self.proc.poll() is not None) or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                raise servers.LabError(f"{name} did not check imap within {timeout:.0f} s: {tail}")
            time.sleep(0.5)

    def notify_command(self) -> list[str]:
        """kolabmon-notify as the takeover's [notify] sends its decisions: to the same on-call mailbox,
        through the same server, as Icinga's NotificationCommand (the password from a file)."""
        secret = self.dir / "oncall.pw"
        secret.write_text(servers.USERS[ONCALL] + "\n")
        secret.chmod(0o600)
        return [str(BIN / "kolabmon-notify"), "--to", ONCALL, "--from", "kolabmon@example.org", "--smtp-host",
                "127.0.0.1", "--smtp-port", str(self.mail["postfix"]["ports"]["smtp"]), "--starttls", "--ca-file",
                str(self.mail["certs"]["ca"]), "-u", ONCALL, "--password-file", str(secret)]

    def icinga2(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", "monitor", "icinga2", *argv, *defines(self.dir)]

    def env(self) -> dict[str, str]:
        return daemon_env()

    def start_mail(self) -> None:
        """Postfix + Dovecot on the monitoring host's loopback, for the on-call mailbox."""
        up = subprocess.run(["ip", "netns", "exec", "monitor", sys.executable, str(ROOT / "lab" / "servers.py"),
                             "up", str(self.dir / "mail")], capture_output=True, text=True, timeout=120)
        if up.returncode != 0:
            raise servers.LabError(f"monitoring-side mail servers: {(up.stderr or up.stdout).strip()[-500:]}")
        self.mail = json.loads((self.dir / "mail" / "servers.json").read_text())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if (self.dir / "mail" / "servers.json").exists():
            subprocess.run([sys.executable, str(ROOT / "lab" / "servers.py"), "down", str(self.dir / "mail")],
                           capture_output=True, timeout=60)

    # --- config --------------------------------------------------------------------------------

    def write_config(self) -> Path:
        shutil.copytree(ROOT / "icinga", self.dir / "etc" / "kolabmon", dirs_exist_ok=True)
        spool = self.dir / "spool" / "perfdata"
        main = self.dir / "icinga2.conf"
        main.write_text(f"""/* the lab's Icinga 2: the shipped icinga/ config + the lab cluster's hosts */
const PluginDir = "/usr/lib/nagios/plugins"
const NodeName = "monitor"
const ZoneName = "master"
const KolabmonBinDir = "{BIN}"
include <itl>
include <plugins>
object CheckerComponent "checker" {{ }}
object NotificationComponent "notification" {{ }}
object Endpoint NodeName {{ }}
object Zone ZoneName {{ endpoints = [ NodeName ] }}
object FileLogger "main" {{
  path = "{self.dir / 'log' / 'icinga2.log'}"
  severity = "information"
}}
/* every check result, one line: the demo's timeline and the tests read it */
object PerfdataWriter "results" {{
  service_perfdata_path = "{spool}/results"
  service_temp_path = "{spool}/results.tmp"
  host_perfdata_path = "{spool}/hosts"
  host_temp_path = "{spool}/hosts.tmp"
  service_format_template = "{FORMAT}"
  rotation_interval = 1s
}}
include "etc/kolabmon/functions.conf"
include "etc/kolabmon/commands.conf"
include "etc/kolabmon/eventcommands.conf"
include "etc/kolabmon/templates.conf"
include "etc/kolabmon/services.conf"
include "etc/kolabmon/notifications.conf"
""" + self.hosts_conf())
        return main

    def hosts_conf(self, agents: dict[str, Path] | None = None) -> str:
        """The on-call user and the lab cluster's hosts. The nodes' probes run through the `lab/on`
        prefix, or with `agents` (node -> its takeover config, whose prefix is empty) on each node's
        Icinga agent (command_endpoint, the handler there too)."""
        ca = lab.make_certs().ca
        secret = self.dir / "takeover" / "imap.pw"
        ldap_secret = self.dir / "takeover" / "ldap.pw"
        oncall_secret = self.dir / "oncall.pw"
        timing = (f"  vars.kolab_check_interval = {CHECK}s\n  vars.kolab_retry_interval = {RETRY}s\n"
                  f"  vars.kolab_max_check_attempts = {ATTEMPTS}\n")

        def notify(takeover: Path) -> str:
            return f"""  vars.kolab_notify_users = [ "oncall" ]
  vars.kolab_notify_smtp_host = "127.0.0.1"
  vars.kolab_notify_smtp_port = {self.mail["postfix"]["ports"]["smtp"]}
  vars.kolab_notify_starttls = true
  vars.kolab_notify_ca_file = "{self.mail["certs"]["ca"]}"
  vars.kolab_notify_user = "{ONCALL}"
  vars.kolab_notify_password_file = "{oncall_secret}"
  vars.kolab_notify_from = "icinga@example.org"
  vars.kolab_takeover_config = "{takeover}"
"""
        # storage reads its node's role from the heartbeat, so the heartbeat must run again within
        # storage's retries (templates.conf): a role that changed with a takeover is read before HARD
        node_timing = timing.replace(f"kolab_retry_interval = {RETRY}s", f"kolab_retry_interval = {NODE_RETRY}s")
        # every service gives up on a hung server after the same time, so each turns HARD as fast
        plugin_timeouts = "".join(f"  vars.kolab_{name}_timeout = {PLUGIN_TIMEOUT}\n"
                                  for name in ("imap", "smtp", "ldap", "freebusy", "roundtrip"))
        active = active_at_install()
        nl = "\n"
        return f"""object User "oncall" {{ email = "{ONCALL}" }}

object Host "kolab-cluster" {{
  import "kolab-cluster-host"
  address = "{lab.CLUSTER_IP}"
  vars.kolab_cluster = "kolab-cluster"
  vars.kolab_nodes = [ "node1", "node2" ]
  vars.kolab_user = "{USER}"
  vars.kolab_password_file = "{secret}"
  vars.kolab_starttls = true
  vars.kolab_ca_file = "{ca}"
{plugin_timeouts}  vars.kolab_ldap_base = "{servers.LDAP_BASE}"
  vars.kolab_ldap_bind_dn = "{servers.LDAP_SERVICE_DN}"
  vars.kolab_ldap_password_file = "{ldap_secret}"
  vars.kolab_ldap_filter = "(uid=user1)"
  vars.kolab_freebusy_url = "http://{lab.CLUSTER_IP}/freebusy/{USER}.ifb"
  vars.kolab_failover_services = [ "imap", "smtp", "ldap" ]
{timing}{notify(self.takeover)}}}
""" + "".join(f"""
object Host "{node}" {{
  import "kolab-node-host"
  address = "{lab.ADMIN_IPS[node]}"
  vars.kolab_cluster = "kolab-cluster"
  vars.kolab_role = "{'active' if node == active else 'passive'}"
{f'  vars.agent_endpoint = "{node}"{nl}' if agents else
 f'  vars.kolab_command_prefix = "{lab.ON} {{node}}"{nl}'}  vars.kolab_storage_path = "{lab.SHARED}"
  vars.kolab_storage_fstype = "ext4"
  vars.kolab_storage_timeout = {PLUGIN_TIMEOUT}
  vars.kolab_heartbeat_timeout = {PLUGIN_TIMEOUT + 4}
{node_timing}{notify(agents[node] if agents else self.takeover)}}}
""" for node in lab.NODES)

    # --- reading Icinga's own records -------------------------------------------------------------

    def results(self) -> list[Result]:
        """Every check result so far, in time order."""
        return read_results(self.dir / "spool" / "perfdata")

    def audit(self) -> list[dict]:
        path = self.dir / "takeover" / "audit.jsonl"
        return audit.tail(path) if path.exists() else []

    def oncall_mail(self) -> list[dict]:
        """Subject and arrival time of every message in the on-call mailbox (read over IMAP)."""
        script = (
            "import imapclient, json, sys\n"
            f"c = imapclient.IMAPClient('127.0.0.1', port={self.mail['dovecot']['ports']['imap']}, ssl=False)\n"
            f"c.login({ONCALL!r}, sys.stdin.readline().strip())\n"
            "c.select_folder('INBOX', readonly=True)\n"
            "data = c.fetch(c.search(['ALL']), ['ENVELOPE', 'INTERNALDATE', 'BODY.PEEK[TEXT]'])\n"
            "print(json.dumps([{'subject': (v[b'ENVELOPE'].subject or b'').decode(), "
            "'epoch': v[b'INTERNALDATE'].timestamp(), 'body': v[b'BODY[TEXT]'].decode('utf-8', 'replace')} "
            "for v in data.values()]))\n")
        proc = subprocess.run(["ip", "netns", "exec", "monitor", str(BIN / "python"), "-c", script],
                              input=servers.USERS[ONCALL] + "\n", capture_output=True, text=True, timeout=30)
        return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else []


def active_at_install() -> str:
    """The node role a lab host is configured with (Icinga's fallback until the first heartbeat result,
    Nagios's storage expectation), as an admin writes it: where the group runs now."""
    return lab.Cluster().active_node() or "node1"


def said(mail: dict) -> str:
    """A mail from oncall_mail in one line: its subject and what it tells on-call (the decision if it
    has one, else the next step), for the demo's timeline and the fault campaign's record."""
    rows = {line.split(":", 1)[0]: " ".join(line.split(":", 1)[1].split())
            for line in mail["body"].splitlines() if ":" in line and not line.startswith(" ")}
    told = rows.get("Decision") or rows.get("Next") or ""
    return f"{mail['subject'].removeprefix('[kolabmon] ')} | {told}"


def spool_lines(spool: Path) -> list[list[str]]:
    """The tab-separated lines of a PerfdataWriter spool ("results*" files), oldest file first.
    Icinga renames results.tmp away every rotation_interval: a file gone between listing and
    reading is skipped (its lines are in the renamed file the next call reads)."""
    files = []
    for path in spool.glob("results*"):
        try:
            files.append((path.stat().st_mtime, path.read_text(errors="replace")))
        except FileNotFoundError:
            continue
    return [line.split("\t") for _, text in sorted(files, key=lambda f: f[0]) for line in text.splitlines()]
