"""The baselines' job functions (imported by rq workers by dotted path) and the message they send.

Every email path in the bench sends the same message: one recipient, a subject, a short HTML body,
the headers the smtp connector sets (From, To, Subject, Date, Message-ID). ``local_hostname`` is
fixed so that no baseline pays a DNS look-up per connection (the smtp connector caches its own).
"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

__all__ = ["SENDER", "RECIPIENT", "BODY", "noop", "build_message", "send_email", "send_loop"]

SENDER = "bench@localhost"
RECIPIENT = "sink@example.org"
BODY = "<p>Disk usage on db-1 is at 95%.</p>"


def noop() -> None:
    """A job that does nothing."""


def build_message(index: int) -> EmailMessage:
    """Message ``index``: what a hand-written job would build with the standard library."""
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = RECIPIENT
    message["Subject"] = f"bench message {index}"
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain="localhost")
    message.set_content(BODY, subtype="html")
    return message


def send_email(host: str, port: int, index: int) -> None:
    """Build message ``index`` and send it over a new SMTP connection (the usual rq + smtplib job)."""
    with smtplib.SMTP(host, port, local_hostname="localhost", timeout=30) as smtp:
        smtp.send_message(build_message(index))


def send_loop(host: str, port: int, count: int) -> None:
    """Build and send ``count`` messages over one reused connection (the limit for one process)."""
    with smtplib.SMTP(host, port, local_hostname="localhost", timeout=30) as smtp:
        for index in range(count):
            smtp.send_message(build_message(index))
