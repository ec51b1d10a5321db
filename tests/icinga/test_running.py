"""The shipped commands, run by a real Icinga 2 against the lab servers (one short-lived daemon,
as root like the lab's, intervals shortened in a copy of the config so it takes seconds).

What only a running Icinga proves: passwords reach the plugins in their environment and never
on argv; the storage check gets the node's command prefix and its peers (the cluster's other
nodes); the storage expectation follows the heartbeat line (not the host's static role); the
event handler's macros (--flapping included) parse; the notification goes out with the active
node read from the heartbeat checks."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from lab import icinga as lab_icinga
from lab import servers
from tests.fakes import crm_mon
from tests.helpers import BIN, clean_env

ROOT = Path(__file__).resolve().parents[2]
ONCALL, ONCALL_PASSWORD = "user2@example.org", servers.USERS["user2@example.org"]
USER, PASSWORD = "user1@example.org", servers.USERS["user1@example.org"]

pytestmark = pytest.mark.skipif(shutil.which("icinga2") is None, reason="icinga2 is not installed (lab/setup.sh)")


def active_on_node2() -> str:
    """crm_mon XML of a healthy cluster whose Kolab group runs on node2 (from the split-brain capture)."""
    xml = crm_mon.SPLIT_BRAIN.read_text()
    group = xml[xml.index("<group "):xml.index("</group>")]
    healthy = group.replace('<node name="node1" id="1" cached="true"/>', "").replace('nodes_running_on="2"',
                                                                                     'nodes_running_on="1"')
    return xml.replace(group, healthy)


def config(tmp_path: Path, dovecot, postfix, certs, cluster: str, refused_port: int) -> Path:
    """A copy of icinga/ with 2 s / 1 s intervals, one cluster (prefix mode: `env` as the prefix)."""
    conf = tmp_path / "kolabmon"
    shutil.copytree(ROOT / "icinga", conf)
    for name in ("templates.conf", "services.conf"):
        text = (conf / name).read_text()
        text = re.sub(r"check_interval = \d+s", "check_interval = 2s", text)
        (conf / name).write_text(re.sub(r"retry_interval = \d+s", "retry_interval = 1s", text))
    takeover = tmp_path / "takeover.toml"
    takeover.write_text(f"""cluster = "{cluster}"
backend = "command"
state_dir = "{tmp_path / 'state'}"
[nodes.node1]
[nodes.node2]
[services.smtp]
reprobe = ["true"]
[commands]
active = ["echo", "node2"]
move = ["false"]
""")
    (tmp_path / "storage").mkdir()
    notify = f"""  vars.kolab_notify_users = [ "oncall" ]
  vars.kolab_notify_smtp_host = "127.0.0.1"
  vars.kolab_notify_smtp_port = {postfix.ports["smtp"]}
  vars.kolab_notify_starttls = true
  vars.kolab_notify_ca_file = "{certs.ca}"
  vars.kolab_notify_user = "{ONCALL}"
  vars.kolab_notify_password = "{ONCALL_PASSWORD}"
  vars.kolab_takeover_config = "{takeover}"
"""
    spool = tmp_path / "spool" / "perfdata"
    main = tmp_path / "icinga2.conf"
    main.write_text(f"""const PluginDir = "/usr/lib/nagios/plugins"
const NodeName = "monitor"
const ZoneName = "master"
const KolabmonBinDir = "{BIN}"
include <itl>
include <plugins>
object CheckerComponent "checker" {{ }}
object NotificationComponent "notification" {{ }}
object Endpoint NodeName {{ }}
object Zone ZoneName {{ endpoints = [ NodeName ] }}
object FileLogger "commands" {{
  path = "{tmp_path / 'log' / 'commands.log'}"
  severity = "notice"
}}
object PerfdataWriter "results" {{
  service_perfdata_path = "{spool}/results"
  service_temp_path = "{spool}/results.tmp"
  host_perfdata_path = "{spool}/hosts"
  host_temp_path = "{spool}/hosts.tmp"
  service_format_template = "$host.name$\\t$service.name$\\t$service.state$\\t$service.state_type$\\t$service.output$"
  rotation_interval = 1s
}}
include "kolabmon/functions.conf"
include "kolabmon/commands.conf"
include "kolabmon/eventcommands.conf"
include "kolabmon/templates.conf"
include "kolabmon/services.conf"
include "kolabmon/notifications.conf"
object User "oncall" {{ email = "{ONCALL}" }}
object Host "{cluster}" {{
  import "kolab-cluster-host"
  check_command = "dummy"
  address = "127.0.0.1"
  vars.kolab_cluster = "{cluster}"
  vars.kolab_nodes = [ "node1", "node2" ]   /* node2 has no host here: only node1's --peers name it */
  vars.kolab_imap_port = {dovecot.ports["imap"]}
  vars.kolab_imap_user = "{USER}"
  vars.kolab_imap_password = "{PASSWORD}"
  vars.kolab_smtp_port = {refused_port}
  vars.kolab_failover_services = [ "imap", "smtp" ]
{notify}}}
object Host "node1" {{
  import "kolab-node-host"
  check_command = "dummy"
  address = "127.0.0.1"
  vars.kolab_cluster = "{cluster}"
  vars.kolab_role = "active"   /* stale on purpose: the heartbeat says node2 */
  vars.kolab_command_prefix = "env KOLABMON_NODE={{node}}"
  vars.kolab_storage_path = "{tmp_path / 'storage'}"
{notify}}}
""")
    for sub in ("data", "log", "cache", "spool/perfdata", "run", "state"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
    return main


class Icinga:
    """A foreground icinga2 daemon this test started (and stops, by its own PID)."""

    def __init__(self, tmp_path: Path, main: Path, path_first: Path) -> None:
        self.tmp = tmp_path
        defines = [f"-D{name}Dir={tmp_path / sub}" for name, sub in
                   (("Data", "data"), ("Log", "log"), ("Cache", "cache"), ("Spool", "spool"), ("InitRun", "run"))]
        env = clean_env(ICINGA2_USER="root", ICINGA2_GROUP="root", PATH=f"{path_first}:{os.environ['PATH']}")
        check = subprocess.run(["icinga2", "daemon", "-C", "-c", str(main), *defines], capture_output=True, text=True,
                               env=env, timeout=60)
        assert check.returncode == 0, check.stdout[-3000:]
        self.proc = subprocess.Popen(["icinga2", "daemon", "-c", str(main), *defines], env=env,
                                     stdout=open(tmp_path / "icinga2.out", "w"), stderr=subprocess.STDOUT)

    def results(self) -> dict[tuple[str, str], list[str]]:
        """The latest result per (host, service): [state, state type, output]."""
        latest: dict[tuple[str, str], list[str]] = {}
        for fields in lab_icinga.spool_lines(self.tmp / "spool" / "perfdata"):
            if len(fields) == 5:
                latest[(fields[0], fields[1])] = fields[2:]
        return latest

    def commands(self) -> str:
        log = self.tmp / "log" / "commands.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def wait(self, what: str, ready: Callable[[], object], timeout: float = 90) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.tmp / "icinga2.out").read_text()[-3000:]
            value = ready()
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"Icinga: {what} did not happen within {timeout} s; results: {self.results()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def oncall_mail(dovecot, subject: str) -> str | None:
    """The body of the message with this subject in user2's INBOX, deleted once read."""
    import imapclient

    with imapclient.IMAPClient("127.0.0.1", port=dovecot.ports["imap"], ssl=False, timeout=10) as client:
        client.login(ONCALL, ONCALL_PASSWORD)
        client.select_folder("INBOX")
        found = client.search(["SUBJECT", subject])
        if not found:
            return None
        body = b"".join(v[b"BODY[TEXT]"] for v in client.fetch(found, ["BODY[TEXT]"]).values())
        client.delete_messages(found)
        client.expunge()
    return body.decode("utf-8", "replace")


def test_icinga_runs_the_shipped_commands_against_the_lab(tmp_path: Path, dovecot, postfix, certs) -> None:
    cluster = f"lab-{uuid.uuid4().hex[:8]}"
    tools = crm_mon.install(tmp_path / "fake-cluster", active_on_node2())
    main = config(tmp_path, dovecot, postfix, certs, cluster, servers.free_port())
    icinga = Icinga(tmp_path, main, tools)
    try:
        icinga.wait("the first results", lambda: {("node1", "heartbeat"), (cluster, "imap")} <= set(icinga.results()))
        # the IMAP password went through the environment: the login works ...
        state, _, output = icinga.results()[(cluster, "imap")]
        assert state == "OK" and f"{USER} logged in" in output, output
        # ... and it is on no command line Icinga ran
        assert "check_kolab_imap" in icinga.commands() and PASSWORD not in icinga.commands()
        heartbeat = icinga.results()[("node1", "heartbeat")]
        assert heartbeat[0] == "OK" and "kolab active on node2" in heartbeat[2], heartbeat

        # storage: run through the prefix, expecting what the heartbeat says (node2 active), not the stale role
        def storage_passive() -> object:
            result = icinga.results().get(("node1", "storage"))
            return result and result[0] == "OK" and "as it should be on the passive node" in result[2]
        icinga.wait("storage OK as the passive node", storage_passive)
        run = re.findall(r"Running command (.*check_kolab_storage.*): PID", icinga.commands())[-1]
        assert run.startswith(f"'{BIN}/check_kolab_storage'"), run  # it runs itself through the prefix
        assert "'--command-prefix' 'env KOLABMON_NODE={node}'" in run and "'-H' 'node1'" in run, run
        assert "'--peers' 'node2'" in run and "'--expect' 'unmounted'" in run, run

        # smtp refused: HARD CRITICAL → the takeover handler decides (and logs), the on-call gets mail
        results = icinga.wait("smtp HARD CRITICAL", lambda: icinga.results().get((cluster, "smtp"), [""])[:2]
                              == ["CRITICAL", "HARD"] and icinga.results())
        assert "connection refused" in results[(cluster, "smtp")][2]  # type: ignore[index]
        audit = tmp_path / "state" / "audit.jsonl"

        def hard_decision() -> object:
            records = [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() else []
            return next((r for r in records if r["event"]["service"] == "smtp"
                         and r["event"]["state_type"] == "HARD" and r["event"]["state"] == "CRITICAL"), None)
        record = icinga.wait("the takeover's decision on the HARD CRITICAL", hard_decision)
        changed = record["event"].pop("changed")  # type: ignore[index]
        assert record["event"] == {"host": cluster, "service": "smtp", "state": "CRITICAL", "state_type": "HARD",  # type: ignore[index]
                                   "attempt": 1, "max_attempts": 3, "flapping": False}
        assert re.fullmatch(r"\d{10}(\.\d+)?", changed), changed  # $service.last_hard_state_change$
        assert record["decision"] == "refuse" and "second opinion" in record["reason"]  # type: ignore[index]
        subject = f"PROBLEM: smtp on {cluster} is CRITICAL"
        body = icinga.wait("the notification mail", lambda: oncall_mail(dovecot, subject), timeout=60)
        assert "connection refused" in body  # type: ignore[operator]
        assert "node2 (from the nodes' heartbeat checks)" in body  # type: ignore[operator]
        assert ONCALL_PASSWORD not in body and ONCALL_PASSWORD not in icinga.commands()  # type: ignore[operator]
        assert "'--failover' '1'" in icinga.commands()
        # the notification names the same event: it finds the decision on it, or says it is still pending
        notify_run = next(line for line in icinga.commands().splitlines() if "kolabmon-notify" in line
                          and "'smtp'" in line)
        assert f"'--changed' '{changed}'" in notify_run, notify_run
        assert "Decision:        REFUSED at " in body or "Decision:        pending" in body, body  # type: ignore[operator]
    finally:
        icinga.stop()
