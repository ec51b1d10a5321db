"""The seed mail every lab IMAP server starts with (user1's INBOX holds a few messages), delivered
over LMTP: to a single-host server's port, or in the cluster over Cyrus's socket (lab/disk.py)."""

from __future__ import annotations

import datetime as dt
import smtplib
from collections.abc import Iterable
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from lab.accounts import LAB_DOMAIN
from lab.launch import Server
from lab.util import LabError, tail

SEED_MESSAGES = 3  # in user1's INBOX when a lab IMAP server starts


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


def deliver(lmtp: tuple[str, int] | Path, user: str, numbers: Iterable[int]) -> None:
    """Deliver the seed messages ``numbers`` to ``user`` over LMTP at ``lmtp`` (host and port, or a
    unix socket); OSError or SMTPException when that fails."""
    host, port = (str(lmtp), 0) if isinstance(lmtp, Path) else lmtp
    with smtplib.LMTP(host, port, timeout=10) as conn:
        for i in numbers:
            conn.sendmail(f"lab@{LAB_DOMAIN}", [user], seed_message(user, i).as_bytes())


def seed_messages(server: Server, user: str, n: int = SEED_MESSAGES) -> None:
    """Deliver ``n`` small messages to ``user`` through ``server``'s LMTP port."""
    try:
        deliver((server.host, server.ports["lmtp"]), user, range(1, n + 1))
    except (OSError, smtplib.SMTPException) as exc:
        raise LabError(f"{server.name}: LMTP delivery to {user} failed: {exc}"
                       f" [{tail(*server.root.glob('*.log'), *server.root.glob('*.out'))}]") from exc
