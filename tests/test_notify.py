"""kolabmon-notify: real delivery through the lab Postfix to the on-call mailbox (user2's, read
back over IMAP and deleted; user1's INBOX is the IMAP tests' and stays untouched), a local
webhook receiver, and the faults: refused, hung, untrusted, failing receivers, bad macros."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from kolabmon import notify
from kolabmon.notify import message
from kolabmon.takeover import audit
from lab import servers
from tests.fakes.faults import Silent
from tests.fakes.webhook import WebhookReceiver
from tests.helpers import BIN, assert_plugin_output, clean_env, run_plugin

ONCALL, PASSWORD = "user2@example.org", servers.USERS["user2@example.org"]
PROBLEM = ["--type", "PROBLEM", "--host", "kolab-cluster", "--service", "imap", "--state", "CRITICAL"]
CHANGED = "1764500000.25"  # $service.last_hard_state_change$ of the HARD CRITICAL the fixture's takeover acted on


def notify_run(*args: str, password: str | None = None, timeout: float = 40):
    return run_plugin("kolabmon-notify", *args, password=password, timeout=timeout)


def mail_args(postfix, certs, *extra: str) -> list[str]:
    """Submission as the on-call user over STARTTLS, verified against the lab CA."""
    return ["--to", ONCALL, "--from", "icinga@example.org", "--smtp-host", "127.0.0.1",
            "--smtp-port", str(postfix.ports["smtp"]), "--starttls", "--ca-file", str(certs.ca),
            "-u", ONCALL, *extra]


def fetch_and_delete(dovecot, tag: str, wait: float = 15) -> EmailMessage:
    """The one message in user2's INBOX that carries `tag`, read over IMAP and then deleted."""
    import imapclient

    deadline = time.monotonic() + wait
    with imapclient.IMAPClient("127.0.0.1", port=dovecot.ports["imap"], ssl=False, timeout=10) as client:
        client.login(ONCALL, PASSWORD)
        while True:
            client.select_folder("INBOX")
            found = client.search(["TEXT", tag])
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(found) == 1, f"expected one message tagged {tag} in {ONCALL}'s INBOX, found {len(found)}"
        raw = client.fetch(found, ["RFC822"])[found[0]][b"RFC822"]
        client.delete_messages(found)
        client.expunge()
    return message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]


def takeover_config(tmp_path: Path, notify: list[str] | None = None, peer_ok: bool = True) -> Path:
    """kolabmon-takeover with the command backend: imap fails on node1 and passes on node2."""
    tmp_path.mkdir(exist_ok=True)
    active = tmp_path / "active"
    active.write_text("node1\n")
    probe = (f"import sys; a=open({str(active)!r}).read().strip();"
             "print(f'IMAP CRITICAL - hung on {a}' if a == 'node1' else f'IMAP OK - served by {a}');"
             "sys.exit(2 if a == 'node1' else 0)")
    move = f"import sys; open({str(active)!r}, 'w').write(sys.argv[2])"
    config = tmp_path / "takeover.toml"
    config.write_text(f"""
cluster = "kolab-cluster"
backend = "command"
state_dir = "{tmp_path}"
transition_timeout = 10
probe_timeout = 5
[nodes.node1]
[nodes.node2]
[services.imap]
reprobe = {json.dumps([sys.executable, "-c", probe])}
[commands]
active = ["cat", "{active}"]
move = {json.dumps([sys.executable, "-c", move, "{from}", "{to}"])}
peer_ok = ["{'true' if peer_ok else 'false'}"]
""" + (f"[notify]\ncommand = {json.dumps(notify)}\n" if notify else ""))
    return config


def hard_critical(config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The event handler on the HARD CRITICAL of imap whose hard state changed at CHANGED."""
    return subprocess.run([str(BIN / "kolabmon-takeover"), "--config", str(config), *PROBLEM[2:],
                           "--state-type", "HARD", "--attempt", "1", "--max-attempts", "3", "--changed", CHANGED],
                          capture_output=True, text=True, env=clean_env(**env), timeout=60)


@pytest.fixture
def audit_of_a_move(tmp_path: Path) -> Path:
    """A real audit log: kolabmon-takeover (command backend) moved the group node1 -> node2."""
    proc = hard_critical(takeover_config(tmp_path))
    assert proc.returncode == 0 and "TAKEOVER ACTED" in proc.stdout, proc.stdout + proc.stderr
    return tmp_path / "audit.jsonl"


# --- real delivery ---------------------------------------------------------------------------


def test_problem_mail_reaches_the_oncall_mailbox_with_the_cluster_context(postfix, dovecot, certs,
                                                                          audit_of_a_move) -> None:
    tag = uuid.uuid4().hex
    output = f"IMAP CRITICAL - no answer within 10 s (while logging in) {tag}"
    run = notify_run(*PROBLEM, "--output", output, "--active", "node2", "--audit", str(audit_of_a_move),
                     "--changed", CHANGED, "--failover", "1", "--time", "2026-11-25 12:00:00 +0000",
                     *mail_args(postfix, certs), password=PASSWORD)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 0, run.out
    assert run.out.count("\n") == 1 and f"mailed {ONCALL} via 127.0.0.1:{postfix.ports['smtp']}" in run.line
    mail = fetch_and_delete(dovecot, tag)
    assert mail["Subject"] == "[kolabmon] PROBLEM: imap on kolab-cluster is CRITICAL"
    assert mail["From"] == "icinga@example.org" and mail["To"] == ONCALL
    body = mail.get_content()
    assert output in body
    assert "node2 (from the nodes' heartbeat checks)" in body
    assert "Decision:        MOVED at " in body  # the decision on this very event, from the audit log
    assert "moved kolab node1 -> node2" in body  # the takeover's own words
    assert "fix it, then run: kolabmon-takeover recover node1" in body
    assert PASSWORD not in body + run.out + run.err


def test_the_takeover_mails_its_own_decision_moved_or_refused(postfix, dovecot, certs, tmp_path: Path) -> None:
    secret = tmp_path / "oncall.pw"
    secret.write_text(PASSWORD + "\n")
    command = ["kolabmon-notify", *mail_args(postfix, certs), "--password-file", str(secret)]
    moved = hard_critical(takeover_config(tmp_path / "a", notify=command))
    assert moved.returncode == 0, moved.stdout
    assert moved.stdout.startswith("TAKEOVER ACTED - moved kolab node1 -> node2"), moved.stdout
    mail = fetch_and_delete(dovecot, "TAKEOVER MOVED")
    assert mail["Subject"] == "[kolabmon] TAKEOVER MOVED: imap on kolab-cluster: group node1 -> node2"
    body = mail.get_content()
    assert "Decision:        MOVED at " in body and "imap verified: IMAP OK - served by node2" in body
    assert "then run: kolabmon-takeover recover node1" in body
    assert "Last takeover:   " in body and "node1 is not recovered yet" in body  # its own audit log, read
    refused = hard_critical(takeover_config(tmp_path / "b", notify=command, peer_ok=False))
    assert refused.returncode == 1 and refused.stdout.startswith("TAKEOVER REFUSED - "), refused.stdout
    mail = fetch_and_delete(dovecot, "TAKEOVER REFUSED")
    assert mail["Subject"] == "[kolabmon] TAKEOVER REFUSED: imap on kolab-cluster: group stays on node1"
    assert "kolabmon did not move: passive node node2" in mail.get_content()
    assert PASSWORD not in moved.stdout + refused.stdout + body


def test_host_recovery_over_implicit_tls_says_nothing_to_do(postfix, dovecot, certs, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    run = notify_run("--type", "RECOVERY", "--host", "node1", "--host-state", "UP", "--host-output",
                     f"PING OK - Packet loss = 0% {tag}", "--audit", str(tmp_path / "none.jsonl"),
                     "--to", ONCALL, "--smtp-host", "127.0.0.1", "--smtp-port", str(postfix.ports["smtps"]),
                     "--tls", "--ca-file", str(certs.ca), "-u", ONCALL, password=PASSWORD)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 0, run.out
    body = fetch_and_delete(dovecot, tag).get_content()
    assert "RECOVERY: host node1 is UP" in body
    assert "Active node:" in body and "unknown (no fresh heartbeat result" in body
    assert "Last takeover:" in body and "none recorded" in body and "Nothing to do." in body


def test_webhook_gets_the_json_document_with_the_bearer_token(tmp_path: Path, audit_of_a_move) -> None:
    token = "tok-" + uuid.uuid4().hex
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    with WebhookReceiver() as hook:
        run = notify_run(*PROBLEM, "--output", "IMAP CRITICAL - connection refused", "--active", "node2",
                         "--audit", str(audit_of_a_move), "--changed", CHANGED, "--webhook", hook.url,
                         "--webhook-token-file", str(token_file), "--comment", f"see {token}")
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 0 and f"webhook 127.0.0.1:{hook.port} 200" in run.line, run.out
    assert token not in run.out
    (request,) = hook.requests
    assert request.path == "/hooks/kolabmon"
    assert request.headers["Authorization"] == f"Bearer {token}"
    assert request.headers["Content-Type"] == "application/json"
    doc = request.json
    assert doc["type"] == "PROBLEM" and doc["host"] == "kolab-cluster" and doc["service"] == "imap"
    assert doc["state"] == "CRITICAL" and doc["output"] == "IMAP CRITICAL - connection refused"
    assert doc["active_node"].startswith("node2") and "moved kolab node1 -> node2" in doc["last_takeover"]
    assert doc["decision"].startswith("MOVED at ")
    assert "kolabmon-takeover recover node1" in doc["next_step"]
    assert token not in json.dumps(doc)  # a secret that came in through a macro is redacted


# --- failed deliveries: non-zero, one line, within --timeout --------------------------------


def assert_failed(run, words: str, timeout: float) -> None:
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 2, run.out
    assert run.out.count("\n") == 1 and not run.err, run.out + run.err
    assert words in run.line, run.line
    assert run.seconds < timeout + 1, f"{run.seconds:.1f} s"


def test_refused_smtp_fails_at_once() -> None:
    port = servers.free_port()
    run = notify_run(*PROBLEM, "--to", ONCALL, "--smtp-host", "127.0.0.1", "--smtp-port", str(port), "-t", "5")
    assert_failed(run, f"mail failed: connection refused (while connecting to 127.0.0.1:{port})", 5)


def test_hung_smtp_fails_within_the_timeout() -> None:
    with Silent() as port:
        run = notify_run(*PROBLEM, "--to", ONCALL, "--smtp-host", "127.0.0.1", "--smtp-port", str(port), "-t", "3")
    assert_failed(run, f"mail failed: no answer within 3 s (while connecting to 127.0.0.1:{port})", 3)


def test_untrusted_smtp_certificate_fails_by_default(postfix) -> None:
    run = notify_run(*PROBLEM, "--to", ONCALL, "--smtp-host", "127.0.0.1", "--smtp-port",
                     str(postfix.ports["smtps"]), "--tls", "-t", "5")
    assert_failed(run, "mail failed: TLS certificate not trusted", 5)


def test_wrong_smtp_password_fails_without_printing_it(postfix, certs) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    run = notify_run(*PROBLEM, *mail_args(postfix, certs), "-t", "10", password=wrong)
    assert_failed(run, f"mail failed: login failed for {ONCALL}", 10)
    assert wrong not in run.out


def test_webhook_500_fails() -> None:
    with WebhookReceiver(status=500) as hook:
        run = notify_run(*PROBLEM, "--webhook", hook.url, "-t", "5")
    assert_failed(run, f"webhook failed: webhook 127.0.0.1:{hook.port} answered 500", 5)


def test_hung_webhook_fails_within_the_timeout() -> None:
    with WebhookReceiver(hang=True) as hook:
        run = notify_run(*PROBLEM, "--webhook", hook.url, "-t", "3")
    assert_failed(run, "webhook failed: no answer within 3 s (while posting to 127.0.0.1", 3)


def test_one_failed_channel_fails_the_notification_but_not_the_other(postfix, dovecot, certs) -> None:
    tag = uuid.uuid4().hex
    with WebhookReceiver(status=503) as hook:
        run = notify_run(*PROBLEM, "--output", f"IMAP CRITICAL - {tag}", *mail_args(postfix, certs),
                         "--webhook", hook.url, "-t", "10", password=PASSWORD)
    assert_failed(run, "webhook failed: webhook", 10)
    assert f"mailed {ONCALL}" in run.line
    fetch_and_delete(dovecot, tag)


# --- bad macros and usage: UNKNOWN, one line ------------------------------------------------


@pytest.mark.parametrize("args, words", [
    (["--type", "PROBLEM", "--host", "h", "--service", "imap", "--state", "BROKEN", "--to", ONCALL],
     "--state 'BROKEN' is not one of OK, WARNING, CRITICAL, UNKNOWN"),
    (["--type", "NOPE", "--host", "h", "--service", "imap", "--state", "OK", "--to", ONCALL],
     "--type 'NOPE' is not an Icinga or Nagios notification type"),
    (["--type", "PROBLEM", "--host", "", "--service", "imap", "--state", "OK", "--to", ONCALL],
     "--host is empty"),
    (["--type", "PROBLEM", "--host", "h", "--host-state", "SIDEWAYS", "--to", ONCALL],
     "--host-state 'SIDEWAYS' is not one of UP, DOWN, UNREACHABLE"),
    (["--type", "PROBLEM", "--host", "$host.name$", "--service", "imap", "--state", "OK", "--to", ONCALL],
     "--host is an unresolved Icinga macro ($host.name$)"),
    (["--host", "h", "--service", "imap", "--state", "OK", "--to", ONCALL], "missing --type"),
    ([*PROBLEM], "nowhere to deliver"),
    ([*PROBLEM, "--to", "not an address"], "--to 'not an address' is not a mail address"),
    ([*PROBLEM, "--webhook", "ftp://x/y"], "is not an http(s) URL"),
    ([*PROBLEM, "--to", ONCALL, "-u", ONCALL], "no password: use --password-file PATH or set KOLABMON_PASSWORD"),
    ([*PROBLEM, "--webhook", "http://127.0.0.1:1/", "--webhook-token-file", "/nonexistent/token"],
     "cannot read webhook token file /nonexistent/token"),
    ([*PROBLEM, "--to", ONCALL, "--tls", "--starttls"], "not allowed with argument"),
    ([*PROBLEM, "--to", ONCALL, "--bogus"], "unrecognized arguments: --bogus"),
    ([*PROBLEM, "--to", ONCALL, "--failover", "yes"], "argument --failover: must be 0 or 1, not 'yes'"),
    ([*PROBLEM, "--to", ONCALL, "--changed", "$service.last_hard_state_change$"],
     "--changed is an unresolved Icinga macro"),
    (["--type", "TAKEOVER", *PROBLEM[2:], "--to", ONCALL], "--type TAKEOVER goes with --record"),
    ([*PROBLEM, "--to", ONCALL, "--record", "/nonexistent/record.json"], "--type TAKEOVER goes with --record"),
    (["--type", "TAKEOVER", *PROBLEM[2:], "--to", ONCALL, "--record", "/nonexistent/record.json"],
     "cannot read --record /nonexistent/record.json"),
    ([*PROBLEM, "--to", ONCALL, "--nagios-env"],  # enable_environment_macros=0
     "--nagios-env: NAGIOS_SERVICEOUTPUT is not in the environment (set enable_environment_macros=1 in nagios.cfg)"),
    ([*PROBLEM, "--to", ONCALL, "--nagios-env", "--comment", "x", "--author", "y"],
     "--author, --comment with --nagios-env: free text comes from Nagios's environment, not argv"),
    ([*PROBLEM, "--to", ONCALL, "--nagios-env", "--host-output", "x"],  # a service's: no host output on argv
     "--host-output with --nagios-env: free text comes from Nagios's environment, not argv"),
])
def test_bad_macros_and_usage_are_unknown_in_one_line(args: list[str], words: str) -> None:
    run = notify_run(*args)
    assert_plugin_output(run.out, run.rc)
    assert run.rc == 3 and run.out.count("\n") == 1, run.out
    assert words in run.line


@pytest.mark.parametrize(("record", "words"), [
    ("not json", "is not one JSON object"),
    ('{"decision": "act"}', "is not a takeover decision (no event or decision)"),
    ("[1, 2]", "is not a takeover decision"),
])
def test_a_bad_takeover_record_on_stdin_is_unknown_in_one_line(record: str, words: str) -> None:
    proc = subprocess.run([str(BIN / "kolabmon-notify"), "--type", "TAKEOVER", *PROBLEM[2:], "--to", ONCALL,
                           "--record", "-"], input=record, capture_output=True, text=True, env=clean_env(), timeout=30)
    assert_plugin_output(proc.stdout, proc.returncode)
    assert proc.returncode == 3 and proc.stdout.count("\n") == 1 and words in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_help_and_version_exit_unknown_without_mail_or_http_imports() -> None:
    code = ("import sys; from kolabmon import notify; rc = notify.main(sys.argv[1:]); "
            "print(rc, sorted(m for m in ('smtplib', 'requests', 'ssl', 'nagiosplugin') if m in sys.modules))")
    for flag in ("--help", "--version", "--bogus"):
        proc = subprocess.run([str(BIN / "python"), "-c", code, flag], capture_output=True, text=True,
                              env=clean_env())
        assert proc.stdout.rstrip().endswith("3 []"), proc.stdout


NASTY = "it's; \"$(touch /tmp/kolabmon-pwned)\" `touch /tmp/kolabmon-pwned` a=b"


def test_nagios_env_gives_the_free_text_verbatim_and_never_takes_it_from_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAGIOS_SERVICEOUTPUT", f"IMAP CRITICAL - {NASTY}")
    monkeypatch.setenv("NAGIOS_HOSTOUTPUT", "PING CRITICAL - Packet loss = 100%")
    monkeypatch.setenv("NAGIOS_NOTIFICATIONAUTHOR", "o'brien")
    monkeypatch.setitem(os.environb, b"NAGIOS_NOTIFICATIONCOMMENT", NASTY.encode() + b" caf\xe9")  # Latin-1
    args = notify.parse([*PROBLEM, "--nagios-env", "--to", ONCALL])
    assert (args.output, args.author) == (f"IMAP CRITICAL - {NASTY}", "o'brien")
    assert args.comment == f"{NASTY} caf\ufffd"  # an undecodable byte is replaced, not a traceback
    host = notify.parse(["--type", "CUSTOM", "--host", "node1", "--host-state", "DOWN", "--nagios-env", "--to", ONCALL])
    assert host.host_output == "PING CRITICAL - Packet loss = 100%" and host.output is None
    without = notify.parse([*PROBLEM, "--output", "IMAP CRITICAL - hung", "--to", ONCALL])  # Icinga: argv only
    assert (without.output, without.comment) == ("IMAP CRITICAL - hung", None)


@pytest.mark.parametrize("kind", ["ACKNOWLEDGEMENT", "CUSTOM", "FLAPPINGSTART", "FLAPPINGSTOP", "FLAPPINGDISABLED",
                                  "DOWNTIMESTART", "DOWNTIMEEND", "DOWNTIMECANCELLED"])
def test_every_nagios_notification_type_is_taken(kind: str) -> None:
    about = event("--type", kind, "--host", "kolab-cluster", "--service", "imap", "--state", "OK")
    subject, _, document = message.compose(about, message.Takeover(None, None, set()), "node1")
    assert subject == f"[kolabmon] {kind}: imap on kolab-cluster is OK" and document["next_step"]


# --- the audit log and the next step (pure) ---------------------------------------------------


def write_audit(path: Path, *records: dict) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def decided(epoch: float, changed: str, decision: str = "act", moved: bool = True, service: str = "imap",
            state: str = "CRITICAL", **extra: object) -> dict:
    """A decision record as kolabmon-takeover writes it, on the HARD event whose state changed at `changed`."""
    reasons = {"act": "moved kolab node1 -> node2 in 14.2 s" if moved else "move node1 -> node2 failed: blocked",
               "refuse": "passive node node2 is offline", "nothing": f"{service} is {state}: nothing to do"}
    return {"epoch": epoch, "time": "2026-11-25T12:00:00+0000", "cluster": "kolab-cluster", "dry_run": False,
            "event": {"host": "kolab-cluster", "service": service, "state": state, "state_type": "HARD",
                      "changed": changed},
            "decision": decision, "moved": moved and decision == "act", "exit": 0 if moved else 2,
            "origin": "icinga on monitor", "cluster_state": {"active": "node1", "passive": "node2"},
            "reason": reasons[decision], **extra}


def event(*argv: str) -> notify.Event:
    return notify.Event(notify.parse([*argv, "--to", ONCALL]))


def told(log: Path, *argv: str, active: str = "node1") -> tuple[str, str]:
    """(the Decision row or "", the next step) of a notification about `argv`, given the audit log."""
    about = event(*argv)
    _, body, document = message.compose(about, message.read_audit(str(log), about), active)
    return str(document["decision"] or ""), str(document["next_step"])


def test_audit_log_missing_unreadable_or_garbled(tmp_path: Path) -> None:
    problem = event(*PROBLEM)
    assert message.read_audit(str(tmp_path / "none"), problem).line().startswith("none recorded")
    assert message.read_audit(str(tmp_path), problem).line().startswith("unknown (cannot read")
    log = tmp_path / "audit.jsonl"
    log.write_text("not json\n" + json.dumps(decided(time.time(), "100")) + "\n{\"half\": \n[1, 2]\n")
    assert "moved kolab node1 -> node2" in message.read_audit(str(log), problem).line()


def test_a_problem_carries_the_decision_on_its_own_event_or_says_it_is_pending(tmp_path: Path) -> None:
    now = time.time()
    log = write_audit(tmp_path / "a", decided(now - 3600, "100", "refuse"), decided(now - 5, "200", "refuse"))
    failover = [*PROBLEM, "--failover", "1"]
    decision, step = told(log, *failover, "--changed", "200")
    assert decision.startswith("REFUSED at ") and "passive node node2 is offline" in decision
    assert step == ("kolabmon did not move: passive node node2 is offline. Users are not served: fix imap on "
                    "node1 by hand.")
    decision, step = told(log, *failover, "--changed", "300")  # not decided yet: pending, never an older one
    assert decision == "pending (kolabmon-takeover runs now)"
    assert step.startswith("kolabmon-takeover is deciding on this event now") and "audit" in step
    config = takeover_config(tmp_path, notify=["kolabmon-notify", "--to", ONCALL])
    about = event(*failover, "--changed", "300", "--takeover-config", str(config))
    takeover = message.read_audit(None, about, str(config))
    assert takeover.followup and takeover.audit == str(tmp_path / "audit.jsonl")
    assert "its decision follows in a TAKEOVER message" in message.next_step(about, takeover, "node1")
    decision, step = told(log, "--type", "PROBLEM", "--host", "kolab-cluster", "--service", "ldap", "--state",
                          "CRITICAL", "--changed", "200")  # not failover-relevant, no decision on it
    assert decision == "" and step == "Check ldap on node1."


def test_a_recovery_says_what_the_takeover_did_for_the_problem_it_ends(tmp_path: Path) -> None:
    now = time.time()
    recovery = ["--type", "RECOVERY", "--host", "kolab-cluster", "--service", "imap", "--state", "OK"]
    log = write_audit(tmp_path / "a", decided(now - 60, "200", fenced=True),
                      decided(now - 20, "260", "nothing", moved=False, state="OK"))
    decision, step = told(log, *recovery, "--changed", "260", active="node2")
    assert decision.startswith("MOVED at ")
    assert step.startswith("imap is back since the takeover moved the group away from node1")
    assert step.endswith("then run: kolabmon-takeover recover node1")
    smtp = ["--type", "RECOVERY", "--host", "kolab-cluster", "--service", "smtp", "--state", "OK"]
    decision, step = told(log, *smtp, "--changed", "261", active="node2")  # another service, same takeover
    assert decision == "" and "still runs without node1" in step and "recover node1" in step
    recovered = write_audit(tmp_path / "b", decided(now - 60, "200"), {
        "epoch": now - 30, "command": "recover", "node": "node1", "result": "recovered", "dry_run": False})
    assert told(recovered, *smtp, "--changed", "261")[1] == "Nothing to do."
    older = write_audit(tmp_path / "c", decided(now - 900, "100"), decided(now - 800, "150", "nothing", moved=False,
                                                                            state="OK"))
    assert told(older, *recovery, "--changed", "500")[0] == ""  # a problem before the last recovery is not this one


def test_a_recovery_before_the_decision_is_written_waits_for_it(tmp_path: Path) -> None:
    now = time.time()
    soft = decided(now - 20, "150", "nothing", moved=False) | {"decision": "wait", "reason": "SOFT 2/3"}
    soft["event"]["state_type"] = "SOFT"
    itself = decided(now - 1, "260", "nothing", moved=False, state="OK")  # the handler's record of this OK
    log = write_audit(tmp_path / "a", soft, itself)
    recovery = event("--type", "RECOVERY", "--host", "kolab-cluster", "--service", "imap", "--state", "OK",
                     "--changed", "260")
    late = threading.Timer(1.0, lambda: audit.append(log, decided(now, "200", fenced=True)))
    late.start()  # the takeover still verifies on the new node when Icinga sees imap OK there
    takeover = message.read_audit(str(log), recovery, wait=10)
    assert takeover.decision is not None and message.label(takeover.decision) == "MOVED"
    assert message.next_step(recovery, takeover, "node2").endswith("then run: kolabmon-takeover recover node1")
    gave_up = message.read_audit(str(write_audit(tmp_path / "b", soft)), recovery, wait=0.5)
    assert gave_up.decision is None and gave_up.deciding
    assert message.decision_text(recovery, gave_up).startswith("not written yet: kolabmon-takeover is still at work")


def test_a_message_sent_while_a_takeover_moves_says_so(tmp_path: Path) -> None:
    now = time.time()
    started = audit.acting(decided(now - 3, "200", moved=False), reason="fencing node1 and moving kolab node1 -> node2")
    for key in ("moved", "exit"):
        started.pop(key)
    log = write_audit(tmp_path / "a", started)
    roundtrip = ["--type", "RECOVERY", "--host", "kolab-cluster", "--service", "roundtrip", "--state", "OK"]
    about = event(*roundtrip)
    takeover = message.read_audit(str(log), about)
    assert takeover.line().startswith("in progress since ") and "fencing node1 and moving kolab" in takeover.line()
    assert message.next_step(about, takeover, "node2") == ("roundtrip is back while kolabmon (icinga on monitor) is "
                                                           "fencing node1 and moving kolab node1 -> node2 now: wait "
                                                           "for its outcome (the next messages).")
    storage = event("--type", "PROBLEM", "--host", "node1", "--node", "node1", "--service", "storage", "--state",
                    "CRITICAL", "--failover", "1", "--changed", "210", "--output", "STORAGE CRITICAL - node1 "
                    "unreachable (on: node1 is down); node1 fenced by the takeover at 12:00:01")
    assert message.next_step(storage, message.read_audit(str(log), storage), "") == (
        "node1 was fenced by the takeover: power it on, find out why it failed, then run: kolabmon-takeover "
        "recover node1.")  # the node's own words come first, even while its own handler still decides
    finished = write_audit(tmp_path / "b", started, decided(started["epoch"], "200", fenced=True))
    assert message.read_audit(str(finished), about).acting is None  # its final record ends it


def test_a_hard_wait_is_a_final_decision_and_an_old_start_is_no_move_in_progress(tmp_path: Path) -> None:
    now = time.time()
    busy = decided(now - 10, "200", "nothing", moved=False) | {"decision": "wait",
                                                               "reason": "the cluster is already busy (smtp starting)"}
    log = write_audit(tmp_path / "a", busy)
    recovery = event("--type", "RECOVERY", "--host", "kolab-cluster", "--service", "imap", "--state", "OK",
                     "--changed", "260")
    started = time.monotonic()
    takeover = message.read_audit(str(log), recovery, wait=10)
    assert time.monotonic() - started < 2 and not takeover.deciding  # nothing more is coming: no wait
    assert message.decision_text(recovery, takeover).startswith("WAITED at ")
    problem = event(*PROBLEM, "--failover", "1", "--changed", "200")
    assert message.next_step(problem, message.read_audit(str(log), problem), "node1").startswith(
        "kolabmon left it to Pacemaker (the cluster is already busy (smtp starting)) and will not act on this event")
    killed = audit.acting(decided(now - 3600, "100", moved=False), reason="moving kolab node1 -> node2")
    old = message.read_audit(str(write_audit(tmp_path / "b", killed)), recovery)
    assert old.acting is None and not old.line().startswith("in progress")  # killed mid-move an hour ago
    downtime = event("--type", "DOWNTIMEEND", "--host", "kolab-cluster", "--service", "imap", "--state", "OK",
                     "--changed", "260")
    assert message.read_audit(str(log), downtime).decision is None  # only a RECOVERY ends a problem


def test_next_step_is_about_the_node_a_node_local_check_runs_on(tmp_path: Path) -> None:
    log = write_audit(tmp_path / "a")
    heartbeat = ["--type", "PROBLEM", "--host", "node2", "--node", "node2", "--service", "heartbeat"]
    assert told(log, *heartbeat, "--state", "WARNING")[1] == "Look at heartbeat on node2 in working hours."
    assert told(log, *heartbeat, "--state", "UNKNOWN")[1].endswith("then check heartbeat on node2.")
    fenced = ["--output", "STORAGE CRITICAL - node1 unreachable (lab/on: node1 is down); node1 fenced by the "
              "takeover at 12:00:00"]
    moved = write_audit(tmp_path / "b", decided(time.time() - 60, "200", fenced=True))
    step = told(moved, "--type", "PROBLEM", "--host", "node1", "--node", "node1", "--service", "storage",
                "--state", "CRITICAL", *fenced, active="node2")[1]
    assert step == "node1 was fenced by the takeover: power it on, find out why it failed, then run: " \
                   "kolabmon-takeover recover node1."
    dead = ["--type", "PROBLEM", "--host", "node2", "--node", "node2", "--service", "storage", "--state", "CRITICAL",
            "--failover", "1", "--changed", "300", "--output", "STORAGE CRITICAL - node2 unreachable (on: node2 is "
            "down); node1 says node2 is offline"]
    assert told(log, *dead) == ("", "node2 does not answer: check its power and network (Pacemaker fences and "
                                    "moves a dead node).")  # the passive node: no decision is coming
    survivor = ["--type", "PROBLEM", "--host", "node1", "--node", "node1", "--service", "heartbeat", "--state",
                "CRITICAL", "--output", "HEARTBEAT CRITICAL - kolab active on node1, 1/2 nodes online, quorate "
                "(node2 offline, all links to node2 down)"]
    assert told(log, *survivor)[1] == ("node2 is out of the cluster: bring it back (power, network, cluster "
                                       "stack); until it is back nothing can take over if node1 fails.")


def takeover_mail(tmp_path: Path, record: dict, active: str) -> tuple[str, str]:
    """Subject and body of the TAKEOVER message kolabmon-takeover sends for `record`."""
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record))
    about = event("--type", "TAKEOVER", "--host", "kolab-cluster", "--service", "imap", "--state", "CRITICAL",
                  "--record", str(path))
    subject, body, _ = message.compose(about, message.read_audit(str(tmp_path / "none"), about), active)
    return subject, body


def test_a_takeover_message_says_what_was_decided(tmp_path: Path) -> None:
    record = decided(time.time(), "200", fenced=True, second_opinion={"exit": 2, "line": "IMAP CRITICAL - hung"})
    subject, body = takeover_mail(tmp_path, record, "node2")
    assert subject == "[kolabmon] TAKEOVER MOVED: imap on kolab-cluster: group node1 -> node2, node1 fenced"
    assert "Trigger:         icinga on monitor: imap on kolab-cluster HARD CRITICAL: IMAP CRITICAL - hung" in body
    assert "(node1 was fenced: power it on)" in body and "kolabmon-takeover recover node1" in body
    subject, body = takeover_mail(tmp_path, decided(time.time(), "200", "refuse"), "node1")
    assert subject == "[kolabmon] TAKEOVER REFUSED: imap on kolab-cluster: group stays on node1"
    assert "passive node node2 is offline" in body


def test_next_step_for_flapping_acknowledgement_and_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    nothing = message.Takeover(None, None, set())
    flapping = ["--type", "FLAPPINGSTART", "--host", "kolab-cluster", "--service", "smtp", "--state", "CRITICAL",
                "--failover", "1"]
    assert "will not move the group while it flaps" in message.next_step(event(*flapping), nothing, "node1")
    for name in ("SERVICEOUTPUT", "NOTIFICATIONAUTHOR", "NOTIFICATIONCOMMENT"):
        monkeypatch.setenv(f"NAGIOS_{name}", "")
    nagios = message.next_step(event(*flapping, "--nagios-env"), nothing, "node1")  # no macro tells the handler
    assert nagios.startswith("smtp is flapping, and Nagios cannot tell kolabmon-takeover so: it still moves")
    disabled = event("--type", "FLAPPINGDISABLED", "--host", "kolab-cluster", "--service", "smtp", "--state", "OK")
    assert message.next_step(disabled, nothing, "node1") == ("Flap detection for smtp was switched off while it "
                                                             "flapped: its state is notified again.")
    ack = event(*PROBLEM[:-2], "--state", "CRITICAL", "--type", "ACKNOWLEDGEMENT", "--author", "anna",
                "--comment", "rebooting node1")
    assert message.next_step(ack, nothing, "node1") == "anna is on it (rebooting node1); nothing else to do."
    unknown = event("--type", "PROBLEM", "--host", "node1", "--service", "heartbeat", "--state", "UNKNOWN")
    assert message.next_step(unknown, nothing, "").startswith("The check itself failed")
