"""The shipped Icinga 2 config (icinga/) as `icinga2 daemon -C` sees it, with the sample hosts.

Validation writes every object Icinga built to cache/icinga2.debug (2.14: only when asked, see
lab/release.py); the tests read that, so they check what Icinga made of the config (apply rules
applied, templates merged), not the text. Mutated copies prove that a broken name or a missing
command fails the validation.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from lab import release
from tests.fakes import crm_mon
from tests.helpers import BIN, clean_env, run_plugin

ROOT = Path(__file__).resolve().parents[2]
ICINGA = ROOT / "icinga"
SHIPPED = ["functions.conf", "commands.conf", "eventcommands.conf", "templates.conf", "services.conf",
           "notifications.conf"]
SAMPLES = ["zones.conf.sample", "hosts.conf.sample"]
MAIN = """/* minimal standalone Icinga 2 for validating kolabmon's config */
const PluginDir = "/usr/lib/nagios/plugins"
const NodeName = "monitor"
const ZoneName = "master"
include <itl>
include <plugins>
object CheckerComponent "checker" { }
object Endpoint NodeName { }
object Zone ZoneName { endpoints = [ NodeName ] }
"""
# what Icinga runs: every executable but kolabmon-watch, which Pacemaker runs (ocf:kolabmon:watcher)
EXECUTABLES = [f for f in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["script-files"]
               if not f.endswith("/kolabmon-watch")]

pytestmark = pytest.mark.skipif(shutil.which("icinga2") is None, reason="icinga2 is not installed (lab/setup.sh)")


class Validation:
    """One `icinga2 daemon -C` run: exit code, log, and the objects it built (by type, then name)."""

    def __init__(self, proc: subprocess.CompletedProcess[str], cache: Path) -> None:
        self.rc, self.log = proc.returncode, proc.stdout + proc.stderr
        self.objects: dict[str, dict[str, dict]] = {}
        debug = cache / "icinga2.debug"
        if self.rc == 0:
            for record in _netstrings(debug.read_bytes()):
                props = record["properties"]  # "__name" is the full name: host!service
                self.objects.setdefault(record["type"], {})[props["__name"]] = props

    def of(self, kind: str) -> dict[str, dict]:
        return self.objects.get(kind, {})


def _netstrings(data: bytes) -> list[dict]:
    records, position = [], 0
    while position < len(data):
        colon = data.index(b":", position)
        length = int(data[position:colon])
        records.append(json.loads(data[colon + 1:colon + 1 + length]))
        position = colon + 1 + length + 1  # the trailing ","
    return records


def validate(where: Path, mutate: dict[str, Callable[[str], str]] | None = None, files: list[str] | None = None,
             defines: tuple[str, ...] = ()) -> Validation:
    """Copy icinga/ to `where`, change it, validate it as root with every state path under `where`."""
    conf_dir = where / "kolabmon"
    shutil.copytree(ICINGA, conf_dir)
    for name, change in (mutate or {}).items():
        path = conf_dir / name
        changed = change(path.read_text())
        assert changed != path.read_text(), f"the mutation of {name} changed nothing"
        path.write_text(changed)
    main = where / "icinga2.conf"
    main.write_text(MAIN + "".join(f'include "kolabmon/{name}"\n' for name in files or SHIPPED + SAMPLES))
    paths = {name: where / name.lower() for name in ("Data", "Log", "Cache", "Spool", "InitRun")}
    for path in paths.values():
        path.mkdir()
    for parent in where.resolve().parents:  # pytest's tmp dirs are 0700: nagios must get through
        parent.chmod(parent.stat().st_mode | stat.S_IXOTH)
    shutil.chown(where, "nagios", "nagios")
    for path in where.rglob("*"):
        shutil.chown(path, "nagios", "nagios")  # the daemon drops to nagios even for -C
    argv = ["icinga2", "daemon", "-C", *release.current().icinga_validate_args, "-c", str(main),
            *(f"-D{name}Dir={path}" for name, path in paths.items()), *(f"-D{d}" for d in defines)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=clean_env())
    return Validation(proc, paths["Cache"])


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Validation:
    """The config as shipped, with the sample hosts, and the executables of this venv."""
    return validate(tmp_path_factory.mktemp("icinga"), defines=(f"KolabmonBinDir={BIN}",))


def errors(run: Validation) -> str:
    return "\n".join(line for line in run.log.splitlines() if "critical/" in line or "Error:" in line)


# --- it validates, and builds what the sample hosts ask for ------------------------------------


def test_shipped_config_with_the_sample_hosts_validates(shipped: Validation) -> None:
    assert shipped.rc == 0, errors(shipped) or shipped.log[-3000:]
    assert "Finished validating the configuration file(s)." in shipped.log
    assert not [line for line in shipped.log.splitlines() if "warning/" in line], shipped.log


def test_validates_with_the_default_bin_dir_too(tmp_path: Path) -> None:
    run = validate(tmp_path)
    assert run.rc == 0, errors(run)
    assert run.of("CheckCommand")["kolab-imap"]["command"] == ["/opt/kolabmon/bin/check_kolab_imap"]


EXPECTED = {  # host → its services (client-side on cluster hosts, node-local on nodes)
    "kolab-cluster": {"imap", "smtp", "ldap", "freebusy", "dns", "roundtrip"},
    "node1": {"heartbeat", "storage"},
    "node2": {"heartbeat", "storage"},
    "kolab-b": {"imap", "smtp", "freebusy", "roundtrip"},  # no LDAP base, no DNS name set
    "kolab-b1": {"heartbeat", "storage"},
    "kolab-b2": {"heartbeat", "storage"},
}
HANDLED = {("kolab-cluster", s) for s in ("imap", "smtp", "roundtrip")} | {
    ("kolab-b", "imap"), ("kolab-b", "smtp"), *((n, "storage") for n in ("node1", "node2", "kolab-b1", "kolab-b2"))}


def services_of(run: Validation) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for service in run.of("Service").values():
        found.setdefault(service["host_name"], set()).add(service["name"])
    return found


def test_sample_hosts_get_their_probes_event_handlers_and_agents(shipped: Validation) -> None:
    assert services_of(shipped) == EXPECTED
    for name, service in shipped.of("Service").items():
        host, short = service["host_name"], service["name"]
        handled = (host, short) in HANDLED
        assert service["event_command"] == ("kolabmon-takeover" if handled else ""), name
        assert service["enable_flapping"] is handled, name  # kolabmon never moves a flapping service
        assert service["check_command"] == f"kolab-{short}", name
        agent = host in ("node1", "node2")  # kolab-b's nodes run their probes through the ssh prefix
        assert service["command_endpoint"] == (host if agent else ""), name
    assert shipped.of("Service")["kolab-b!roundtrip"]["check_timeout"] == 45  # kolab_roundtrip_timeout 40 + 5


def test_notifications_go_to_the_oncall_user_of_clusters_that_name_one(shipped: Validation) -> None:
    notifications = shipped.of("Notification")
    assert {n["host_name"] for n in notifications.values()} == {"kolab-cluster", "node1", "node2"}
    assert len(notifications) == 6 + 2 * 2 + 3  # services of kolab-cluster, node1, node2 + the three hosts
    for notification in notifications.values():
        assert notification["command"] == "kolabmon-notify" and notification["users"] == ["oncall"]


def test_a_misspelled_host_var_in_an_apply_rule_is_caught(tmp_path: Path) -> None:
    """Icinga takes an unknown host var for null (the rule just matches nothing): the service map catches it."""
    run = validate(tmp_path, {"services.conf": lambda t: t.replace(
        'check_command = "kolab-imap"', 'check_command = "kolab-imap"\n  assign where host.vars.kolab_nodez', 1)
        .replace("assign where host.vars.kolab_nodes\n}", "}", 1)})
    assert run.rc == 0, errors(run)
    assert "imap" not in services_of(run)["kolab-cluster"]
    assert services_of(run) != EXPECTED


# --- broken names and missing commands fail the validation -----------------------------------


@pytest.mark.parametrize("mutate, words", [
    ({"services.conf": lambda t: t.replace("where host.vars.kolab_nodes\n", "where hots.vars.kolab_nodes\n", 1)},
     "Tried to access undefined script variable 'hots'"),
    ({"services.conf": lambda t: t.replace("host.vars.kolab_failover_services", "host.var.kolab_failover_services", 1)},
     "syntax error"),
    ({"services.conf": lambda t: t.replace('check_command = "kolab-imap"', 'check_command = "kolab-imapp"')},
     "Attribute 'check_command': Object 'kolab-imapp' of type 'CheckCommand' does not exist."),
    ({"templates.conf": lambda t: t.replace('= "kolabmon-takeover"', '= "kolabmon-takeovr"')},
     "Attribute 'event_command': Object 'kolabmon-takeovr' of type 'EventCommand' does not exist."),
    ({"notifications.conf": lambda t: t.replace('command = "kolabmon-notify"', 'command = "kolabmon-notfy"', 1)},
     "Object 'kolabmon-notfy' of type 'NotificationCommand' does not exist."),
    ({"hosts.conf.sample": lambda t: t.replace('import "kolab-node-host"', 'import "kolab-nod-host"', 1)},
     "Import references unknown template: 'kolab-nod-host'"),
    ({"commands.conf": lambda t: t.replace('KolabmonBinDir + "/check_kolab_imap"', 'KolabmonBin + "/x"')},
     "Tried to access undefined script variable 'KolabmonBin'"),
])
def test_a_broken_name_fails_validation(tmp_path: Path, mutate: dict, words: str) -> None:
    run = validate(tmp_path, mutate)
    assert run.rc != 0
    assert words in errors(run), errors(run)


def test_a_missing_command_file_fails_validation(tmp_path: Path) -> None:
    run = validate(tmp_path, files=[f for f in SHIPPED + SAMPLES if f != "eventcommands.conf"])
    assert run.rc != 0
    assert "Object 'kolabmon-takeover' of type 'EventCommand' does not exist." in errors(run), errors(run)


def test_agent_mode_needs_the_agent_endpoints(tmp_path: Path) -> None:
    run = validate(tmp_path, files=[f for f in SHIPPED + SAMPLES if f != "zones.conf.sample"])
    assert run.rc != 0
    assert "Attribute 'command_endpoint': Object 'node1' of type 'Endpoint' does not exist." in errors(run)


# --- every executable has its command, every argument is a real option -----------------------


COMMANDS = {"kolabmon-takeover": ("EventCommand", "kolabmon-takeover"),
            "kolabmon-notify": ("NotificationCommand", "kolabmon-notify")}


def command_of(run: Validation, executable: str) -> dict:
    kind, name = COMMANDS.get(executable, ("CheckCommand", executable.replace("check_kolab_", "kolab-")))
    assert name in run.of(kind), f"no {kind} {name} for {executable}"
    return run.of(kind)[name]


def help_options(executable: str) -> dict[str, bool]:
    """Every option the executable's --help prints → whether it takes a value."""
    proc = subprocess.run([str(BIN / executable), "--help"], capture_output=True, text=True, env=clean_env(),
                          timeout=30)
    assert "usage:" in proc.stdout, proc.stdout + proc.stderr
    options: dict[str, bool] = {}
    for line in proc.stdout.splitlines():
        match = re.match(r"^  (-\S.*?)(?: {2,}\S.*)?$", line)
        if match:
            # one action's aliases share a line; Python 3.13 prints the value name once, after the last
            specs = match[1].split(", ")
            takes_value = any(" " in spec for spec in specs)
            for spec in specs:
                options[spec.partition(" ")[0]] = takes_value
    assert "--help" in options or "-h" in options
    return options


@pytest.mark.parametrize("executable", [Path(f).name for f in EXECUTABLES])
def test_every_executable_has_a_command_whose_arguments_it_prints_in_help(shipped: Validation,
                                                                          executable: str) -> None:
    command = command_of(shipped, executable)
    assert command["command"] == [str(BIN / executable)]
    options = help_options(executable)
    for key, spec in command["arguments"].items():
        if not key.startswith("-"):
            assert spec.get("skip_key"), f"{executable}: argument {key!r} is neither an option nor skip_key"
            continue
        assert key in options, f"{executable} --help prints no {key}"
        takes_value = "value" in spec if isinstance(spec, dict) else True
        assert options[key] == takes_value, f"{executable} {key}: takes a value here {takes_value}, in --help not"


def long_name(executable: str, short: str) -> str:
    """-H → --hostname, as the plugin's --help pairs them."""
    proc = subprocess.run([str(BIN / executable), "--help"], capture_output=True, text=True, env=clean_env())
    found = re.search(rf"^  {re.escape(short)}(?: \S+)?, (--[\w-]+)", proc.stdout, re.M)
    return found[1] if found else short


def test_check_arguments_are_named_like_the_itl(shipped: Validation) -> None:
    """kolab_<plugin>_<option>: the host address is `address` (dns: `lookup`, heartbeat and storage: `node`)."""
    for executable in (Path(f).name for f in EXECUTABLES if "check_kolab_" in f):
        plugin = executable.removeprefix("check_kolab_")
        for key, spec in command_of(shipped, executable)["arguments"].items():
            if not key.startswith("-"):
                continue
            option = long_name(executable, key) if not key.startswith("--") else key
            name = option.lstrip("-").replace("-", "_")
            host = {"dns": "lookup", "heartbeat": "node", "storage": "node"}.get(plugin, "address")
            name = {"hostname": host}.get(name, name)
            wanted = f"$kolab_{plugin}_{name}$"
            actual = spec.get("value", spec.get("set_if")) if isinstance(spec, dict) else spec
            if isinstance(actual, str):
                assert actual == wanted, f"{executable} {key}: {actual} (want {wanted})"
            else:  # a lambda (freebusy's -H/--tls, that give way to --url): its var is still documented
                assert wanted.strip("$") in (ICINGA / "commands.conf").read_text(), f"{executable} {key}"


def test_passwords_go_in_the_environment_never_on_argv(shipped: Validation) -> None:
    commands = {**shipped.of("CheckCommand"), **shipped.of("EventCommand"), **shipped.of("NotificationCommand")}
    ours = {n: c for n, c in commands.items() if n.startswith(("kolab-", "kolabmon-"))}
    assert len(ours) == len(EXECUTABLES)
    for name, command in ours.items():
        values = [spec.get(k) if isinstance(spec, dict) else spec for spec in command["arguments"].values()
                  for k in ("value", "set_if")] + command["command"]
        on_argv = [v for v in values if isinstance(v, str) and re.search(r"\$[^$]*password(?!_file\$)[^$]*\$", v)]
        assert not on_argv, f"{name} puts a password on argv: {on_argv}"
        takes_one = any(k in command["arguments"] for k in ("-u", "-D", "--password-file"))
        if takes_one:
            plugin = name.removeprefix("kolab-").removeprefix("kolabmon-")
            assert command["env"] == {"KOLABMON_PASSWORD": f"$kolab_{plugin}_password$"}, name
        else:
            assert not command["env"], name


def test_check_timeouts_leave_the_plugin_time_to_report_its_hang(shipped: Validation) -> None:
    for name, command in shipped.of("CheckCommand").items():
        if name.startswith("kolab-"):
            plugin = name.removeprefix("kolab-")
            assert command["timeout"] == command["vars"][f"kolab_{plugin}_timeout"] + 5, name
    assert shipped.of("NotificationCommand")["kolabmon-notify"]["timeout"] > 30  # kolabmon-notify -t 30



SHARED = {  # CheckCommand template → the options it owns
    "kolab-timing": ("-t", "--timeout-state", "-w", "-c"),
    "kolab-tls-verify": ("--ca-file", "--insecure", "--cert-warning", "--cert-critical"),
    "kolab-tls": ("--tls", "--starttls"),
    "kolab-password": ("--password-file",),
}


def generic(command: dict, spec: object) -> object:
    """An argument (or var) with the command's own name replaced by <plugin>, so commands compare."""
    plugin = command["name"].removeprefix("kolab-")
    return json.loads(json.dumps(spec).replace(f"kolab_{plugin}_", "kolab_<plugin>_"))


def test_shared_argument_blocks_are_one_block(shipped: Validation) -> None:
    """Timing, TLS and password options are imported from one template each: every command that takes
    one of them takes the whole block, with the same macros; each is written once in commands.conf."""
    ours = {n: c for n, c in shipped.of("CheckCommand").items() if n.startswith("kolab-")}
    text = (ICINGA / "commands.conf").read_text()
    for template, options in SHARED.items():
        users = {n: c for n, c in ours.items() if set(options) & set(c["arguments"]) and template in c["templates"]}
        assert users, template
        for option in options:
            own = sorted(n for n, c in ours.items() if option in c["arguments"] and template not in c["templates"])
            assert own == (["kolab-freebusy"] if option == "--tls" else []), (option, own)  # gives way to --url
            assert len(re.findall(rf'^ *"{re.escape(option)}" = \{{', text, re.M)) == 1 + len(own), option
            macros = {n: generic(c, {k: v for k, v in c["arguments"][option].items() if k in ("value", "set_if")})
                      for n, c in users.items()}
            assert len({json.dumps(m, sort_keys=True) for m in macros.values()}) == 1, (option, macros)
    # the cluster-wide defaults come with the block
    tls = [c for c in ours.values() if "--ca-file" in c["arguments"]]
    assert {c["name"] for c in tls} == {"kolab-imap", "kolab-smtp", "kolab-ldap", "kolab-freebusy", "kolab-roundtrip"}
    for command in tls:
        plugin = command["name"].removeprefix("kolab-")
        assert command["vars"][f"kolab_{plugin}_ca_file"] == "$kolab_ca_file$"
        assert command["vars"][f"kolab_{plugin}_insecure"] == "$kolab_insecure$"
        assert command["vars"][f"kolab_{plugin}_tls"] == "$kolab_tls$"
    # every command that has --tls from "kolab-tls" has the same TLS option set; free/busy has its own --tls
    sets = {n: sorted(k for k in c["arguments"] if k in SHARED["kolab-tls"] + SHARED["kolab-tls-verify"])
            for n, c in ours.items() if "kolab-tls" in c["templates"]}
    assert len(sets) == 4 and all(s == sorted(SHARED["kolab-tls"] + SHARED["kolab-tls-verify"]) for s in sets.values())


def test_the_timeout_rule_has_one_owner(shipped: Validation) -> None:
    """Plugin timeout + 5 s: every command's timeout and every raised check_timeout, from one function."""
    for name, command in shipped.of("CheckCommand").items():
        if name.startswith("kolab-"):
            assert "kolab-timing" in command["templates"], name
            assert command["timeout"] == command["vars"][f"kolab_{name.removeprefix('kolab-')}_timeout"] + 5, name
    hosts = shipped.of("Host")
    for name, service in shipped.of("Service").items():
        raised = hosts[service["host_name"]]["vars"].get(f"kolab_{service['name']}_timeout")
        assert service["check_timeout"] == (raised + 5 if raised else None), name
    assert console("[kolab_check_timeout(10), kolab_check_timeout(40)]") == [15, 45]
    rules = [(f.name, line) for f in ICINGA.glob("*.conf") for line in f.read_text().splitlines()
             if re.search(r"\+ *5\b", line) and not line.lstrip().startswith(("/*", "*"))]
    assert rules == [("functions.conf", "  return plugin_timeout + 5")], rules

# --- detection times: the comments tell the truth ---------------------------------------------


def blocks(text: str) -> list[str]:
    """Each template/apply block with the comment lines right above it."""
    return re.findall(r"((?:/\*(?:[^*]|\*(?!/))*\*/\s*)?(?:template|apply) [^{]*\{.*?\n\})", text, re.S)


def test_detection_times_in_the_comments_match_the_intervals() -> None:
    checked = 0
    for name in ("templates.conf", "services.conf"):
        for block in blocks((ICINGA / name).read_text()):
            timing = r"(check_interval|retry_interval|max_check_attempts) = (?:host\.vars\.kolab_\w+ \|\| )?(\d+)"
            numbers = {k: int(v) for k, v in re.findall(timing, block)}
            claim = re.search(r"(\d+)-(\d+) s\b", block)
            if len(numbers) < 3:
                continue
            assert claim, f"no detection time next to:\n{block}"
            first = (numbers["max_check_attempts"] - 1) * numbers["retry_interval"]
            assert (int(claim[1]), int(claim[2])) == (first, first + numbers["check_interval"]), block
            checked += 1
    assert checked >= 6


def test_storage_rereads_the_role_before_a_wrong_expectation_turns_hard(shipped: Validation) -> None:
    services = shipped.of("Service")
    for node in ("node1", "node2", "kolab-b1", "kolab-b2"):
        heartbeat, storage = services[f"{node}!heartbeat"], services[f"{node}!storage"]
        assert heartbeat["check_interval"] < (storage["max_check_attempts"] - 1) * storage["retry_interval"]


# --- the DSL functions, run by Icinga's own interpreter ----------------------------------------


def console(expression: str) -> object:
    proc = subprocess.run(["icinga2", "console", "-e", f'include "{ICINGA / "functions.conf"}"; {expression}'],
                          capture_output=True, text=True, timeout=30, env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def heartbeat_perfdata(where: Path, node: str, cluster: str | None = None, *args: str) -> list[str] | None:
    """check_kolab_heartbeat -H node run against the fake crm_mon printing `cluster`: its perfdata as Icinga
    keeps it in last_check_result.performance_data (one string per value; None when it wrote none)."""
    fakes = crm_mon.install(where / node, crm_mon=cluster or crm_mon.NOT_CONNECTED, exit_code=0 if cluster else 102)
    run = run_plugin("check_kolab_heartbeat", "-H", node, *args, PATH=f"{fakes}:/usr/bin:/bin")
    _, bar, perfdata = run.line.partition(" | ")
    return perfdata.split() if bar else None


@pytest.mark.parametrize("case, running, node1, node2, active", [
    ("group on node1", ("node1",), "mounted", "unmounted", "node1"),
    ("group on node2", ("node2",), "unmounted", "mounted", "node2"),
    ("split brain", ("node1", "node2"), "mounted", "mounted", "node1,node2"),
    ("group stopped", (), "unmounted", "unmounted", "none"),
    ("stack down", None, "unmounted", "mounted", ""),  # no perfdata: the fallback, the roles
    ("file heartbeat", "file", "unmounted", "mounted", ""),
    ("no result yet", "none", "unmounted", "mounted", ""),
])
def test_storage_expectation_follows_the_heartbeat(tmp_path: Path, case: str, running: object, node1: str,
                                                   node2: str, active: str) -> None:
    """The role comes from each node's own heartbeat perfdata (active=1|0), where the group runs from
    any heartbeat's active_on_NODE values; never from the status line."""
    found = {}
    for node in ("node1", "node2"):
        if running == "file":
            beat = tmp_path / "beat"
            beat.write_text("1\n")
            found[node] = heartbeat_perfdata(tmp_path, node, None, "--source", f"file:{beat}")
            assert found[node] and not any(v.startswith("active=") for v in found[node]), found
        elif running == "none":
            found[node] = None
        else:
            cluster = crm_mon.group_on(*running) if isinstance(running, tuple) else None
            found[node] = heartbeat_perfdata(tmp_path, node, cluster)
    pd1, pd2 = (json.dumps(found[n]) for n in ("node1", "node2"))
    assert console(f'[kolab_storage_expect({pd1}, "passive"), kolab_storage_expect({pd2}, "active"), '
                   f'kolab_active_text(kolab_group_nodes(kolab_group_nodes({{}}, {pd1}), {pd2}))]'
                   ) == [node1, node2, active], (case, found)
    # one node's heartbeat is enough to tell where the group runs (the other's may be stale or absent)
    assert console(f'kolab_active_text(kolab_group_nodes({{}}, {pd1}))') == active, (case, found)


def test_the_active_node_needs_every_node_to_say_none() -> None:
    """A node without a fresh `active` leaves "where" unknown; perfdata may be strings or parsed values (API)."""
    assert console('[kolab_active_text({ node1 = false, node2 = null }), kolab_active_text({ node1 = null }), '
                   'kolab_active_text({ node1 = false, node2 = true }), kolab_node_active(["active=0;;;0;1"]), '
                   'kolab_perfdata_value([ "links_up=2;;;0;2", "\'active\'=1;;;0;1" ], "active"), '
                   'kolab_perfdata_value([ { label = "active", value = 0 } ], "active")]'
                   ) == ["", "", "node2", False, 1, 0]


def test_node_local_checks_take_the_node_its_prefix_and_its_peers_alike(shipped: Validation) -> None:
    """Both run here and reach the node through its prefix themselves (no prefix in `command`); the
    peers are the cluster host's other nodes (kolab_peers)."""
    for plugin in ("heartbeat", "storage"):
        command = shipped.of("CheckCommand")[f"kolab-{plugin}"]
        assert command["command"] == [str(BIN / f"check_kolab_{plugin}")]
        assert {option: command["arguments"][option]["value"] for option in ("-H", "--command-prefix", "--peers")} == {
            "-H": f"$kolab_{plugin}_node$", "--command-prefix": f"$kolab_{plugin}_command_prefix$",
            "--peers": f"$kolab_{plugin}_peers$"}
        assert {name: command["vars"][f"kolab_{plugin}_{name}"] for name in ("node", "command_prefix", "peers")} == {
            "node": "$kolab_node_name$", "command_prefix": "$kolab_command_prefix$", "peers": "$kolab_peers$"}
    assert "kolab_peers" in shipped.of("Host")["kolab-b1"]["vars"]


def test_peers_are_the_clusters_other_nodes() -> None:
    assert console('[kolab_peers(["node1", "node2"], "node1"), kolab_peers(["node1", "node2"], "node2"), '
                   'kolab_peers(["a", "b", "c"], "b"), kolab_peers(["node1"], "node1"), kolab_peers(null, "node1")]'
                   ) == ["node2", "node1", "a,c", None, None]
