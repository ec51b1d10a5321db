"""A real Nagios Core 4 daemon running the shipped nagios/ config: what an operator or a plugin writes
reaches kolabmon-takeover and kolabmon-notify verbatim, and never a shell.

One nagios4 per module, started by the test (its own nagios.cfg in tmp, enable_environment_macros=1,
as this user) with one host and one failover service fed through the external command file: a passive
CRITICAL whose line, and a custom notification and an acknowledgement whose author and comment hold
quotes, ';', "$(touch ...)" and backticks. The event handler runs with --dry-run against a takeover
config of the command backend (its audit log shows the line it got); the contact's mail goes through
the lab Postfix to the on-call mailbox (user2's) and is read back over IMAP.

Verbatim is the point: on a command line Nagios strips illegal_macro_output_chars from the plugin's line
(and Debian 12's 4.4.6-4+deb12u2 from the notification comment and author too), and upstream 4.4.6 hands
that comment unquoted to /bin/sh. Through NAGIOS_* it arrives as written.
"""

from __future__ import annotations

import errno
import grp
import json
import os
import pwd
import subprocess
import time
import uuid
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from lab import nagios as lab_nagios
from lab import servers
from tests.helpers import BIN, clean_env
from tests.nagios.test_config import NAGIOS, NAGIOS4, needs_nagios

pytestmark = needs_nagios
HOST, SERVICE = "kolab-cluster", "imap"
ONCALL = "user2@example.org"  # user1's INBOX is the IMAP tests'
PASSWORD = servers.USERS[ONCALL]


def objects(tmp: Path, postfix, certs) -> str:  # noqa: ANN001
    """The cluster host, its failover service (passive only: one result is HARD) and the on-call contact."""
    password = tmp / "oncall.pw"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    takeover = tmp / "takeover.toml"
    takeover.write_text(f"""
cluster = "{HOST}"
backend = "command"
state_dir = "{tmp}"
probe_timeout = 5
transition_timeout = 10
[nodes.node1]
[nodes.node2]
[services.{SERVICE}]
reprobe = ["sh", "-c", "echo 'IMAP CRITICAL - still no answer'; exit 2"]
[commands]
active = ["echo", "node1"]
move = ["false"]
""")
    mail = (f"--from nagios@example.org --smtp-host 127.0.0.1 --smtp-port {postfix.ports['smtp']} --starttls "
            f"--ca-file {certs.ca} -u {ONCALL} --password-file {password}")
    return f"""
define host {{
    use                     kolab-cluster-host
    host_name               {HOST}
    address                 127.0.0.1
    active_checks_enabled   0
    passive_checks_enabled  1
    contacts                oncall
    _KOLAB_TAKEOVER_CONFIG  {takeover}
    _KOLAB_TAKEOVER_OPTS    --dry-run
    _KOLAB_NOTIFY_OPTS      {mail}
}}
define service {{
    use                     kolab-failover,kolab-probe
    host_name               {HOST}
    service_description     {SERVICE}
    check_command           kolab-imap
    active_checks_enabled   0
    passive_checks_enabled  1
    max_check_attempts      1
    contacts                oncall
}}
define contact {{
    use                     kolab-contact
    contact_name            oncall
    email                   {ONCALL}
}}
"""


def main_config(tmp: Path, objects_file: Path) -> Path:
    """nagios.cfg with every file in tmp and the settings nagios/README.md asks for."""
    state = tmp / "state"
    resource = tmp / "resource.cfg"
    resource.write_text(f"$USER1$=/usr/lib/nagios/plugins\n$USER3$={BIN}\n")
    main = tmp / "nagios.cfg"
    main.write_text("\n".join([
        f"cfg_dir={NAGIOS}", f"cfg_file={objects_file}", f"resource_file={resource}",
        *lab_nagios.state_files(state), f"debug_file={state}/nagios.debug",
        # nagios4 refuses no user, but drops to nagios_user: stay who we are
        f"nagios_user={pwd.getpwuid(os.getuid()).pw_name}", f"nagios_group={grp.getgrgid(os.getgid()).gr_name}",
        *lab_nagios.README_SETTINGS, "interval_length=60",
        "accept_passive_service_checks=1", "accept_passive_host_checks=1", "check_result_reaper_frequency=1",
        "log_external_commands=1", "log_passive_checks=1",
        "",
    ]))
    return main


class Nagios:
    """The running daemon: its files, and the external command file to write to."""

    def __init__(self, tmp: Path, process: subprocess.Popen[bytes]) -> None:
        self.tmp, self.process = tmp, process
        self.log = tmp / "state" / "nagios.log"
        self.audit = tmp / "audit.jsonl"
        self.marks = tmp / "marks"  # a shell that ran the free text would touch files here
        self.marks.mkdir()

    def command(self, *lines: str, wait: float = 10) -> None:
        """Write external commands ([time] NAME;args) once Nagios reads its command file."""
        data = "".join(f"[{int(time.time())}] {line}\n" for line in lines).encode()
        deadline = time.monotonic() + wait
        while True:
            try:
                fd = os.open(self.tmp / "state" / "nagios.cmd", os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:  # not created yet, or no reader on the FIFO yet
                if (exc.errno not in (errno.ENOENT, errno.ENXIO) or time.monotonic() > deadline
                        or self.process.poll() is not None):
                    raise AssertionError(f"nagios4 does not read its command file: {exc}\n{self.tail()}") from None
                time.sleep(0.05)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def tail(self) -> str:
        """The end of nagios.log, or what nagios4 printed when it did not get that far."""
        path = self.log if self.log.exists() else self.tmp / "nagios.out"
        return path.read_text()[-3000:]


@pytest.fixture(scope="module")
def nagios(tmp_path_factory: pytest.TempPathFactory, postfix, dovecot, certs) -> Iterator[Nagios]:  # noqa: ANN001
    tmp = tmp_path_factory.mktemp("nagios")
    objects_file = tmp / "kolab.cfg"
    objects_file.write_text(objects(tmp, postfix, certs))
    with open(tmp / "nagios.out", "wb") as out:
        process = subprocess.Popen([NAGIOS4, str(main_config(tmp, objects_file))], cwd=tmp, env=clean_env(),
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield Nagios(tmp, process)
    finally:
        process.terminate()  # only the daemon this module started, by its PID; it stops its workers
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def mails(dovecot, tag: str, count: int, wait: float = 15) -> list[EmailMessage]:  # noqa: ANN001
    """The `count` messages in the on-call INBOX that carry `tag`, read over IMAP and then deleted."""
    import imapclient

    deadline = time.monotonic() + wait
    with imapclient.IMAPClient("127.0.0.1", port=dovecot.ports["imap"], ssl=False, timeout=10) as client:
        client.login(ONCALL, PASSWORD)
        while True:
            client.select_folder("INBOX")
            found = client.search(["TEXT", tag])
            if len(found) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        raw = client.fetch(found, ["RFC822"]) if found else {}
        if found:
            client.delete_messages(found)
            client.expunge()
    return [message_from_bytes(raw[n][b"RFC822"], policy=policy.default) for n in found]


def audited(nagios: Nagios, wait: float = 15) -> dict:
    """kolabmon-takeover's record of its decision on the HARD CRITICAL."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if nagios.audit.exists():
            for line in nagios.audit.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:  # a line still being written
                    continue
                if record.get("event", {}).get("state") == "CRITICAL" and "decision" in record:
                    return record
        time.sleep(0.1)
    raise AssertionError(f"no decision in {nagios.audit}\n{nagios.tail()}")


def row(name: str, value: str) -> str:
    """One line of the mail's body, as kolabmon-notify lays it out."""
    return f"{name + ':':<16} {value}\n"


def test_free_text_reaches_kolabmon_verbatim_and_never_a_shell(nagios: Nagios, dovecot) -> None:  # noqa: ANN001
    tag = uuid.uuid4().hex
    marks = nagios.marks

    def nasty(name: str) -> str:  # two apostrophes: quoting a shell would keep parsing, and run $(...)
        return f"it's \"{name}\" $(touch {marks}/{name}-dollar) `touch {marks}/{name}-tick` that's it a=b"

    output = f"IMAP CRITICAL - no answer {tag}; {nasty('output')}"
    line = output.replace(";", ":")  # Nagios's own doing: a plugin's ';' becomes ':' (checks.c)
    # a custom notification's author and comment end at the next ';' (Nagios splits its fields there);
    # an acknowledgement's comment is the rest of the line, ';' included
    custom_author, custom_comment = nasty("custom-author"), nasty("custom-comment")
    ack_author, ack_comment = nasty("ack-author"), f"on it; {nasty('ack-comment')}"
    nagios.command(f"PROCESS_HOST_CHECK_RESULT;{HOST};0;PING OK",
                   f"PROCESS_SERVICE_CHECK_RESULT;{HOST};{SERVICE};2;{output}",
                   f"SEND_CUSTOM_SVC_NOTIFICATION;{HOST};{SERVICE};2;{custom_author};{custom_comment}",
                   f"ACKNOWLEDGE_SVC_PROBLEM;{HOST};{SERVICE};1;1;0;{ack_author};{ack_comment}")

    record = audited(nagios)  # the event handler, with the plugin's line from NAGIOS_SERVICEOUTPUT
    got = {m["Subject"].split(":")[0].removeprefix("[kolabmon] "): m.get_content().replace("\r\n", "\n")
           for m in mails(dovecot, tag, 3)}
    assert sorted(os.listdir(marks)) == []  # no shell ever ran any of it
    assert sorted(got) == ["ACKNOWLEDGEMENT", "CUSTOM", "PROBLEM"], f"{sorted(got)}\n{nagios.tail()}"
    assert "exited with return code" not in nagios.log.read_text(), nagios.tail()  # handler and mails: exit 0

    assert record["output"] == line and record["dry_run"], record
    assert record["reason"].startswith("dry run: would move kolab node1 -> node2"), record
    for body in got.values():  # the plugin's line as the plugin wrote it (on argv Nagios would strip ' " $ `)
        assert row("Check", line) in body, body
    assert row("Comment", f"{custom_comment} ({custom_author})") in got["CUSTOM"], got["CUSTOM"]
    assert row("Comment", f"{ack_comment} ({ack_author})") in got["ACKNOWLEDGEMENT"], got["ACKNOWLEDGEMENT"]
    assert row("Next", f"{ack_author} is on it ({ack_comment}); nothing else to do.") in got["ACKNOWLEDGEMENT"]
    assert PASSWORD not in nagios.log.read_text() + "".join(got.values())
