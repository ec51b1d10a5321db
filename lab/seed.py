"""The seed mail every lab IMAP server starts with (user1's INBOX holds a few messages), delivered
over LMTP: to a single-host server's port, or in the cluster over Cyrus's socket (lab/disk.py)."""

from __future__ import annotations

import datetime as dt
import smtplib
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from lab.accounts import LAB_DOMAIN
from lab.launch import Server
from lab.util import LabError, tail


def seed_message(user: str, i: int) -> EmailMessage:
    """The ``i``-th seed message for ``user``."""
    msg = EmailMessage()
    msg["From"] = f"lab@{LAB_DOMAIN}"
    msg["To"] = user
    msg["Subject"] = f"lab seed message {i}"
    msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    msg["Message-ID"] = make_msgid(domain=LAB_DOMAIN)
    msg.set_content(f"Seed message {i} for {user}.\n")
    return msg


def seed_messages(server: Server, user: str, n: int) -> None:
    """Deliver ``n`` small messages to ``user`` through ``server``'s LMTP port."""
    try:
        with smtplib.LMTP(server.host, server.ports["lmtp"], timeout=10) as lmtp:
            for i in range(1, n + 1):
                lmtp.sendmail(f"lab@{LAB_DOMAIN}", [user], seed_message(user, i).as_bytes())
    except (OSError, smtplib.SMTPException) as exc:
        raise LabError(f"{server.name}: LMTP delivery to {user} failed: {exc}"
                       f" [{tail(*server.root.glob('*.log'), *server.root.glob('*.out'))}]") from exc
