"""The shipped Nagios Core 4 config (nagios/) as `nagios4 -v` sees it, with the sample cluster.

The test writes a main nagios.cfg into tmp_path (every state file there, cfg_dir = nagios/, the
sample as cfg_file, $USER3$ = this venv's bin/); mutated copies prove that a broken definition
fails the validation. The command lines are expanded with the sample's values and parsed by
kolabmon-takeover and kolabmon-notify themselves (the free text from the environment, as Nagios exports
it), no free text an operator or a plugin writes is on a command line, and no secret reaches argv.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from kolabmon import notify
from kolabmon.takeover import cli
from tests.helpers import BIN

ROOT = Path(__file__).resolve().parents[2]
NAGIOS = ROOT / "nagios"
SAMPLE = NAGIOS / "cluster.cfg.sample"
NAGIOS4 = shutil.which("nagios4") or "/usr/sbin/nagios4"

needs_nagios = pytest.mark.skipif(not Path(NAGIOS4).exists(), reason="nagios4 is not installed (lab/setup.sh)")


def validate(tmp_path: Path, config: Path = NAGIOS, sample: Path = SAMPLE,
             *options: str) -> subprocess.CompletedProcess[str]:
    """`nagios4 -v` on a main config of our own: nothing outside tmp_path is read but `config`."""
    state = tmp_path / "state"
    (state / "checkresults").mkdir(parents=True, exist_ok=True)
    resource = tmp_path / "resource.cfg"
    resource.write_text(f"$USER1$=/usr/lib/nagios/plugins\n$USER3$={BIN}\n")
    main = tmp_path / "nagios.cfg"
    main.write_text("\n".join([
        f"cfg_dir={config}",
        f"cfg_file={sample}",
        f"resource_file={resource}",
        f"log_file={state}/nagios.log",
        f"object_cache_file={state}/objects.cache",
        f"precached_object_file={state}/objects.precache",
        f"status_file={state}/status.dat",
        f"state_retention_file={state}/retention.dat",
        f"command_file={state}/nagios.cmd",
        f"lock_file={state}/nagios.pid",
        f"temp_file={state}/nagios.tmp",
        f"temp_path={state}",
        f"check_result_path={state}/checkresults",
        # nagios4 reads the config again after dropping to nagios_user: stay who we are (tmp_path is 0700)
        f"nagios_user={pwd.getpwuid(os.getuid()).pw_name}",
        f"nagios_group={grp.getgrgid(os.getgid()).gr_name}",
        "interval_length=60",
        "service_check_timeout=60",
        "event_handler_timeout=300",  # = kolabmon-takeover's --timeout (README.md)
        "notification_timeout=40",
        "illegal_macro_output_chars=`~$&|'\"<>",
        "illegal_object_name_chars=`~!$%^&*|'\"<>?,()=",
        "enable_environment_macros=1",  # the free text reaches kolabmon through it (README.md)
        "",
    ]))
    return subprocess.run([NAGIOS4, "-v", *options, str(main)], capture_output=True, text=True, timeout=60)


def counts(output: str) -> dict[str, int]:
    """'Checked 10 services.' -> {'services': 10}, and the totals of warnings and errors."""
    found = {m[1]: int(m[0]) for m in re.findall(r"Checked (\d+) ([\w ]+?)\.", output)}
    found.update({m[0].lower(): int(m[1]) for m in re.findall(r"Total (Warnings|Errors):\s+(\d+)", output)})
    return found


def mutated(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """A copy of nagios/ with `old` replaced by `new` once in `name`."""
    copy = tmp_path / "nagios-mutated"
    shutil.copytree(NAGIOS, copy)
    text = (copy / name).read_text()
    assert old in text, f"{old!r} not in {name}"
    (copy / name).write_text(text.replace(old, new, 1))
    return copy


# --- nagios4 -v -------------------------------------------------------------------------------

@needs_nagios
def test_shipped_config_with_the_sample_cluster_validates_cleanly(tmp_path: Path) -> None:
    proc = validate(tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    found = counts(out)
    assert found["warnings"] == 0 and found["errors"] == 0, out
    assert found["hosts"] == 3 and found["services"] == 10, out
    assert found["contacts"] == 1 and found["time periods"] == 1, out
    assert found["commands"] == len(re.findall(r"^\s*command_name\s", (NAGIOS / "commands.cfg").read_text(), re.M))


@needs_nagios
@pytest.mark.parametrize(("name", "old", "new", "says"), [
    # a command renamed: the services using it point at nothing
    ("commands.cfg", "command_name    kolab-imap\n", "command_name    kolab-imapd\n", "kolab-imap"),
    # the event handler renamed
    ("commands.cfg", "command_name    kolabmon-takeover\n", "command_name    kolabmon-takeover2\n",
     "kolabmon-takeover"),
    # a misspelt directive
    ("commands.cfg", "    command_line    $USER3$/check_kolab_smtp", "    command_lin     $USER3$/check_kolab_smtp",
     "command_lin"),
    # the notification command a contact uses
    ("templates.cfg", "service_notification_commands   kolabmon-notify-service",
     "service_notification_commands   kolabmon-notify-svc", "kolabmon-notify-svc"),
])
def test_a_broken_definition_fails_validation(tmp_path: Path, name: str, old: str, new: str, says: str) -> None:
    proc = validate(tmp_path, config=mutated(tmp_path, name, old, new))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Error" in out and says in out, out


def resolved(tmp_path: Path) -> dict[str, list[dict[str, str]]]:
    """Every object as Nagios resolved it from its templates (the precache `nagios4 -v -p` writes), by type."""
    proc = validate(tmp_path, NAGIOS, SAMPLE, "-p")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found: dict[str, list[dict[str, str]]] = {}
    precache = (tmp_path / "state" / "objects.precache").read_text()
    for kind, body in re.findall(r"define (\w+) \{\n(.*?)\n\s*\}", precache, re.S):
        found.setdefault(kind, []).append(dict(line.strip().split("\t", 1) for line in body.splitlines()))
    return found


@needs_nagios
def test_every_custom_variable_a_command_uses_is_defined_for_its_object(tmp_path: Path) -> None:
    """Nagios leaves an undefined $_HOSTX$ on the line as it is (kolabmon refuses it: exit 3); an empty
    one (the name alone in a template) is an empty word, and an unquoted *_OPTS vanishes."""
    objects, lines = resolved(tmp_path), commands()
    hosts = {host["host_name"]: host for host in objects["host"]}
    notify = {kind: {c[f"{kind}_notification_commands"] for c in objects["contact"]} for kind in ("host", "service")}
    runs = [(host, host, {host["check_command"], *notify["host"]}) for host in hosts.values()]
    runs += [(hosts[svc["host_name"]], svc, {svc["check_command"], *notify["service"]}
              | ({svc["event_handler"]} if svc.get("event_handler_enabled") == "1" else set()))
             for svc in objects["service"]]
    undefined = {(about.get("service_description") or about["host_name"], name, var)
                 for host, about, names in runs for name in names
                 for kind, var in re.findall(r"\$_(HOST|SERVICE)(\w+)\$", lines[name.split("!")[0]])
                 if "_" + var not in (host if kind == "HOST" else about)}
    assert len(runs) == 13 and undefined == set()


# --- the commands against the plugins -----------------------------------------------------------

def commands() -> dict[str, str]:
    """command_name -> command_line, as nagios/commands.cfg defines them."""
    text = (NAGIOS / "commands.cfg").read_text()
    return dict(re.findall(r"command_name\s+(\S+)\s*\n\s*command_line\s+(.+)", text))


def icinga_plugins() -> set[str]:
    """Every plugin icinga/ has a CheckCommand for."""
    return set(re.findall(r'KolabmonBinDir \+ "/(check_kolab_\w+)"', (ROOT / "icinga" / "commands.conf").read_text()))


def test_every_plugin_icinga_runs_has_a_nagios_command() -> None:
    used = {m for line in commands().values() for m in re.findall(r"\$USER3\$/(check_kolab_\w+)", line)}
    assert icinga_plugins() and icinga_plugins() <= used
    assert all((BIN / plugin).exists() for plugin in used)


def expand(line: str, macros: dict[str, str]) -> list[str]:
    """A command line as Nagios runs it: macros replaced (one nothing defines stays as written, as
    Nagios leaves it), then split as /bin/sh would."""
    return shlex.split(re.sub(r"\$(\w+)\$", lambda m: macros.get(m[1], m[0]), line))


def host_defaults() -> dict[str, str]:
    """The custom macros every host gets from kolab-cluster-host (templates.cfg), empty ones included."""
    text = (NAGIOS / "templates.cfg").read_text()
    block = text[text.index("name                    kolab-cluster-host"):]
    block = block[:block.index("}")]
    return {f"_HOST{m[1]}": m[2].strip() for m in re.finditer(r"^\s*_(\w+)[ \t]*(.*)$", block, re.M)
            if m[1].startswith("KOLAB")}


HARD_EVENT = host_defaults() | {
    "USER3": str(BIN), "HOSTNAME": "kolab-cluster", "SERVICEDESC": "imap", "SERVICESTATE": "CRITICAL",
    "SERVICESTATETYPE": "HARD", "SERVICEATTEMPT": "3", "MAXSERVICEATTEMPTS": "3",
    "SERVICEOUTPUT": "IMAP CRITICAL - no answer within 10s; it's \"$(id)\" `id`",
    "LASTSERVICESTATECHANGE": "1700000000",
    "_HOSTKOLAB_TAKEOVER_CONFIG": "/etc/kolabmon/kolab-cluster.toml", "NOTIFICATIONTYPE": "PROBLEM",
    "LONGDATETIME": "Tue Nov 14 22:13:20 UTC 2023", "_SERVICEKOLAB_FAILOVER": "1", "CONTACTEMAIL": "oncall@example.org",
    "HOSTSTATE": "DOWN", "HOSTOUTPUT": "PING CRITICAL - Packet loss = 100%; it's $(id)",
    "NOTIFICATIONAUTHOR": "o'brien `id`", "NOTIFICATIONCOMMENT": "it's; \"$(touch /tmp/pwned)\" a=b",
    "_HOSTKOLAB_NOTIFY_OPTS": "--from nagios@example.org --smtp-host localhost",
}


def nagios_environment(monkeypatch: pytest.MonkeyPatch, macros: dict[str, str]) -> None:
    """The environment Nagios gives a command with enable_environment_macros=1: NAGIOS_<MACRO> for each."""
    for name, value in macros.items():
        monkeypatch.setenv(f"NAGIOS_{name}", value)


def test_the_event_handler_passes_what_kolabmon_takeover_decides_on(monkeypatch: pytest.MonkeyPatch) -> None:
    nagios_environment(monkeypatch, HARD_EVENT)
    argv = expand(commands()["kolabmon-takeover"], HARD_EVENT)
    assert argv[0] == f"{BIN}/kolabmon-takeover"
    args = cli.parse(argv[1:])
    assert (args.host, args.service, args.state, args.state_type) == ("kolab-cluster", "imap", "CRITICAL", "HARD")
    assert (args.attempt, args.max_attempts, args.changed, args.timeout) == (3, 3, "1700000000", 300)
    assert args.output == HARD_EVENT["SERVICEOUTPUT"] and args.config == "/etc/kolabmon/kolab-cluster.toml"


@pytest.mark.parametrize(("command", "service"), [("kolabmon-notify-service", "imap"), ("kolabmon-notify-host", None)])
def test_the_notifications_pass_what_kolabmon_notify_reads(command: str, service: str | None,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    nagios_environment(monkeypatch, HARD_EVENT)
    argv = expand(commands()[command], HARD_EVENT)
    args = notify.parse(argv[1:])
    assert (args.type, args.host, args.service) == ("PROBLEM", "kolab-cluster", service)
    assert args.to == ["oncall@example.org"]
    assert args.sender == "nagios@example.org" and args.takeover_config == "/etc/kolabmon/kolab-cluster.toml"
    assert (args.author, args.comment) == (HARD_EVENT["NOTIFICATIONAUTHOR"], HARD_EVENT["NOTIFICATIONCOMMENT"])
    if service:  # the same event name as the handler's: the mail finds its decision
        assert (args.state, args.changed, args.failover) == ("CRITICAL", "1700000000", True)
    else:
        assert (args.host_state, args.host_output) == ("DOWN", HARD_EVENT["HOSTOUTPUT"])


# Nagios macros whose text an operator (CGI, external command) or a plugin writes. Nagios runs a command line
# with a quote or a shell character through /bin/sh; illegal_macro_output_chars cleans only the output,
# perfdata and ack macros, never the NOTIFICATION* ones. They reach kolabmon through NAGIOS_* instead.
FREE_TEXT = re.compile(r"\$(LONG)?(HOST|SERVICE)(OUTPUT|PERFDATA)\$"
                       r"|\$(HOST|SERVICE)ACK(AUTHOR|AUTHORNAME|AUTHORALIAS|COMMENT)\$"
                       r"|\$NOTIFICATION(AUTHOR|AUTHORNAME|AUTHORALIAS|COMMENT)\$")


def test_no_free_text_is_on_a_command_line() -> None:
    lines = commands()
    assert [name for name, line in lines.items() if FREE_TEXT.search(line)] == []
    for name in ("kolabmon-takeover", "kolabmon-notify-service", "kolabmon-notify-host"):
        assert " --nagios-env " in lines[name], name
    assert FREE_TEXT.search("--comment '$NOTIFICATIONCOMMENT$' --output '$SERVICEOUTPUT$'")  # the scan sees one


# --- no secret on argv --------------------------------------------------------------------------

SECRET_ON_ARGV = [
    re.compile(r"--password(?!-file)\b"),            # --password VALUE, --password=VALUE
    re.compile(r"(?<![\w-])-[pPwW]\s+'?\$USER\d+\$"),  # -p $USER2$: a secret kept in resource.cfg
    re.compile(r"--password-file\s+(?!'?\$(?:_HOSTKOLAB_\w*PASSWORD_FILE|USER\d+)\$)"),  # only a path var
    re.compile(r"^\s*_\w*(PASSWORD|SECRET|TOKEN)(?!_FILE)\w*\s", re.M),  # a custom variable holding one
    re.compile(r"KOLABMON_PASSWORD"),                  # Nagios 4 passes no per-command environment
]


def secrets_on_argv(text: str) -> list[str]:
    """Every line of a Nagios object file that puts a secret, not a path to one, where ps sees it."""
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return [m.group(0) for pattern in SECRET_ON_ARGV for m in pattern.finditer(code)]


def test_no_secret_reaches_argv() -> None:
    files = sorted(NAGIOS.glob("*.cfg")) + [SAMPLE]
    assert len(files) >= 3
    for path in files:
        assert secrets_on_argv(path.read_text()) == [], path.name
    # and every plugin that logs in reads its password from a file
    for name, line in commands().items():
        if re.search(r"\s-(u|D)\s", line) and "kolab-dns" not in name:
            assert "--password-file" in line, name


@pytest.mark.parametrize("line", [
    "    command_line    $USER3$/check_kolab_imap -u x --password '$_HOSTKOLAB_PASSWORD$'",
    "    command_line    $USER3$/check_kolab_imap -u x --password=$USER2$",
    "    command_line    $USER3$/check_kolab_ldap -D x -w $USER2$",
    "    command_line    $USER3$/check_kolab_imap --password-file /etc/secret $ARG1$",
    "    _KOLAB_PASSWORD     change-me",
    "    _KOLAB_WEBHOOK_TOKEN s3cret",
])
def test_the_secret_scan_finds_a_secret_on_argv(line: str) -> None:
    assert secrets_on_argv(f"define command {{\n{line}\n}}\n")


def test_the_handler_and_notifications_run_on_any_host_with_the_templates_alone() -> None:
    """They run for every host: each custom macro they use is defined by kolab-cluster-host (an *_OPTS
    one empty), so a host that does not set it passes no stray '$' word to the shell."""
    for name in ("kolabmon-takeover", "kolabmon-notify-service", "kolabmon-notify-host"):
        used = set(re.findall(r"\$(_HOST\w+)\$", commands()[name]))
        assert used and used <= set(host_defaults()), (name, used - set(host_defaults()))
    assert host_defaults()["_HOSTKOLAB_TAKEOVER_OPTS"] == "" and host_defaults()["_HOSTKOLAB_NODE_NAME"] == ""
