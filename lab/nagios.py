"""A real Nagios Core 4 against the lab cluster, from the monitoring host (the `monitor` namespace).

It is lab/icinga.py's twin for Nagios: the project's `nagios/` objects unchanged (commands.cfg,
templates.cfg), a lab cluster file beside them (the cluster host on the cluster IP, the two nodes
with the `lab/on {node}` command prefix, intervals in seconds: interval_length=1), kolabmon-takeover
as the event handler, and on-call mail to the same monitoring-side Postfix/Dovecot pair. Nagios runs
as root in the lab (entering the node namespaces needs it). Every service check is one line of its
service perfdata file, in the PerfdataWriter's format, so LabIcinga's readers serve both.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from lab import cluster as lab
from lab import icinga, servers
from lab.icinga import ATTEMPTS, BIN, CHECK, ONCALL, PLUGIN_TIMEOUT, RETRY, ROOT, USER

NAGIOS4 = shutil.which("nagios4") or "/usr/sbin/nagios4"
# LabIcinga's result line (icinga.FORMAT) in Nagios's macros
FORMAT = "\\t".join(f"${m}$" for m in ("LASTSERVICECHECK", "HOSTNAME", "SERVICEDESC", "SERVICESTATE",
                                       "SERVICESTATETYPE", "SERVICEATTEMPT", "SERVICEOUTPUT"))


# nagios.cfg as nagios/README.md asks for it, and what kolabmon's handler and mails need switched on
# (the lab's Nagios and tests/nagios/test_daemon.py both run with these)
README_SETTINGS = (
    "event_handler_timeout=300", "notification_timeout=40", "service_check_timeout=60",
    "enable_environment_macros=1", "illegal_macro_output_chars=`~$&|'\"<>",
    "illegal_object_name_chars=`~!$%^&*|'\"<>?,()=",
    "check_external_commands=1", "enable_event_handlers=1", "enable_notifications=1",
    "log_event_handlers=1", "log_notifications=1",
)


def state_files(d: Path) -> list[str]:
    """nagios.cfg lines that put every file Nagios writes under `d` (made here), nothing kept across runs."""
    for sub in ("checkresults", "tmp"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    return [f"log_file={d / 'nagios.log'}", f"object_cache_file={d / 'objects.cache'}",
            f"precached_object_file={d / 'objects.precache'}", f"status_file={d / 'status.dat'}",
            f"temp_file={d / 'nagios.tmp'}", f"temp_path={d / 'tmp'}", f"lock_file={d / 'nagios.pid'}",
            f"check_result_path={d / 'checkresults'}", f"command_file={d / 'nagios.cmd'}",
            f"query_socket={d / 'nagios.qh'}", f"state_retention_file={d / 'retention.dat'}",
            "retain_state_information=0", "use_syslog=0"]


class LabNagios(icinga.LabIcinga):
    """LabIcinga's mail, audit and result readers; Nagios's daemon and objects."""

    def start(self, timeout: float = 60) -> None:
        self.prepare("spool/perfdata", "etc")
        main = self.write_config()
        check = subprocess.run(["ip", "netns", "exec", "monitor", NAGIOS4, "-v", str(main)], capture_output=True,
                               text=True, timeout=60)
        if check.returncode != 0:
            raise servers.LabError(f"nagios4 -v failed: {check.stdout.strip().splitlines()[-3:]}")
        with open(self.dir / "nagios.out", "wb") as out:
            self.proc = subprocess.Popen(["ip", "netns", "exec", "monitor", NAGIOS4, str(main)], stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True, env=self.env())
        self.wait_first_check("Nagios", self.dir / "nagios.log", timeout)

    def write_config(self) -> Path:
        etc = self.dir / "etc"
        for name in ("commands.cfg", "templates.cfg"):
            shutil.copy(ROOT / "nagios" / name, etc / name)
        (etc / "resource.cfg").write_text(f"$USER1$=/usr/lib/nagios/plugins\n$USER3$={BIN}\n")
        (etc / "lab-cluster.cfg").write_text(self.objects())
        main = self.dir / "nagios.cfg"
        main.write_text("\n".join([
            "# the lab's Nagios: the shipped nagios/ objects + the lab cluster's hosts",
            f"cfg_file={etc / 'commands.cfg'}", f"cfg_file={etc / 'templates.cfg'}",
            f"cfg_file={etc / 'lab-cluster.cfg'}", f"resource_file={etc / 'resource.cfg'}",
            *state_files(self.dir), "nagios_user=root", "nagios_group=root",
            # seconds, not minutes, and every check scheduled at once: the lab's timing (lab/icinga.py)
            "interval_length=1", "service_inter_check_delay_method=n", "host_inter_check_delay_method=n",
            "max_service_check_spread=1", "max_host_check_spread=1", "status_update_interval=1",
            *README_SETTINGS, "enable_flap_detection=1",
            # every check result, one line: the tests read it as they read Icinga's
            "process_performance_data=1", f"service_perfdata_file={self.dir / 'spool' / 'perfdata' / 'results'}",
            f"service_perfdata_file_template={FORMAT}", "service_perfdata_file_mode=a",
            "service_perfdata_file_processing_interval=0",
            "",
        ]))
        return main

    def objects(self) -> str:
        """The lab cluster as an admin writes cluster.cfg.sample, with the lab's timing in seconds."""
        ca = lab.make_certs().ca
        takeover = self.dir / "takeover"
        mail = self.mail
        notify = (f"--from nagios@example.org --smtp-host 127.0.0.1 --smtp-port {mail['postfix']['ports']['smtp']}"
                  f" --starttls --ca-file {mail['certs']['ca']} -u {ONCALL} --password-file {self.dir / 'oncall.pw'}")
        timing = f"check_interval {CHECK}\n    retry_interval {RETRY}\n    max_check_attempts {ATTEMPTS}"
        active = icinga.active_at_install()
        hosts = f"""define contact {{
    contact_name    oncall
    use             kolab-contact
    email           {ONCALL}
}}

define host {{
    host_name               kolab-cluster
    use                     kolab-cluster-host
    address                 {lab.CLUSTER_IP}
    contacts                oncall
    check_interval          5
    retry_interval          1
    _KOLAB_USER             {USER}
    _KOLAB_PASSWORD_FILE    {takeover / 'imap.pw'}
    _KOLAB_TLS_OPTS         --starttls
    _KOLAB_CA_OPTS          --ca-file {ca}
    _KOLAB_LDAP_BASE        {servers.LDAP_BASE}
    _KOLAB_LDAP_BIND_DN     {servers.LDAP_SERVICE_DN}
    _KOLAB_LDAP_PASSWORD_FILE   {takeover / 'ldap.pw'}
    _KOLAB_LDAP_FILTER      (uid=user1)
    _KOLAB_FREEBUSY_URL     http://{lab.CLUSTER_IP}/freebusy/{USER}.ifb
    _KOLAB_TAKEOVER_CONFIG  {self.takeover}
    _KOLAB_NOTIFY_OPTS      {notify}
}}
""" + "".join(f"""
define host {{
    host_name               {node}
    use                     kolab-node-host
    address                 {lab.ADMIN_IPS[node]}
    contacts                oncall
    check_interval          5
    retry_interval          1
    _KOLAB_NODE_NAME        {node}
    _KOLAB_PEERS            {','.join(n for n in lab.NODES if n != node)}
    _KOLAB_COMMAND_PREFIX   {lab.ON} {{node}}
    _KOLAB_STORAGE_PATH     {lab.SHARED}
    _KOLAB_STORAGE_EXPECT   {'mounted' if node == active else 'unmounted'}
    _KOLAB_STORAGE_OPTS     --fstype ext4
    _KOLAB_TAKEOVER_CONFIG  {self.takeover}
    _KOLAB_NOTIFY_OPTS      {notify}
}}
""" for node in lab.NODES)
        # the services of cluster.cfg.sample; -t as lab/icinga.py's plugin timeout, the heartbeat's 4 s more
        services = [("kolab-cluster", "imap", "kolab-failover,kolab-probe", f"kolab-imap!-t {PLUGIN_TIMEOUT}"),
                    ("kolab-cluster", "smtp", "kolab-failover,kolab-probe", f"kolab-smtp!-t {PLUGIN_TIMEOUT}"),
                    ("kolab-cluster", "ldap", "kolab-failover,kolab-probe", f"kolab-ldap-bind!-t {PLUGIN_TIMEOUT}"),
                    ("kolab-cluster", "freebusy", "kolab-probe", f"kolab-freebusy!-t {PLUGIN_TIMEOUT}"),
                    ("kolab-cluster", "roundtrip", "kolab-probe", f"kolab-roundtrip!-t {PLUGIN_TIMEOUT}"),
                    ("node1,node2", "heartbeat", "kolab-probe", f"kolab-heartbeat!-t {PLUGIN_TIMEOUT + 4}"),
                    ("node1,node2", "storage", "kolab-failover,kolab-probe", f"kolab-storage!-t {PLUGIN_TIMEOUT}")]
        return hosts + "".join(f"""
define service {{
    host_name               {host}
    service_description     {name}
    use                     {use}
    check_command           {command}
    contacts                oncall
    {timing}
}}
""" for host, name, use, command in services)
