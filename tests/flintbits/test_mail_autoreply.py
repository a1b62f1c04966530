"""examples:mail:autoreply.py end to end: a real Dovecot, a real SMTP server, the job runtime."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REF = "examples:mail:autoreply.py"


def help_request(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Eve {n} <eve{n}@example.org>"
    msg["To"] = "support@example.test"
    msg["Subject"] = f"Help: printer {n} is broken"
    msg["Message-ID"] = f"<help-{n}@example.org>"
    msg["Date"] = "Tue, 19 Nov 2024 08:00:00 +0000"
    msg.set_content("It prints nothing.\n")
    return bytes(msg)


def setup(project, mail_account, smtp_server):
    for n in (1, 2):
        mail_account.append("INBOX", help_request(n), datetime(2024, 11, 19, 8, n, tzinfo=timezone.utc))
    with mail_account.imap() as client:  # one matching message already read: it must be left alone
        client.append("INBOX", help_request(3), flags=[b"\\Seen"])
    project.connectors({"connectors": {
        "imap": {"type": "imap", "config": mail_account.config("imap")},
        "smtp": {"type": "smtp", "config": smtp_server.config(**{"from": "support@example.test"})},
    }})
    target = project.bits_dir / "examples/mail"
    target.mkdir(parents=True)
    shutil.copy(REPO / "flintbits/examples/mail/autoreply.py", target / "autoreply.py")


def test_replies_to_unseen_matches_and_files_them(project, mail_account, smtp_server):
    setup(project, mail_account, smtp_server)
    client = project.client()
    body = {"criteria": {"operator": "AND", "criteria": [{"field": "SUBJECT", "value": "help"},
                                                         {"field": "BODY", "value": "prints nothing"}]},
            "to-folder": "Handled.Support"}
    env = client.run_bit(REF, body, timeout_ms=30000)
    assert env["meta"]["exit-code"] == 0, env["meta"]
    assert sorted(h["messageId"] for h in env["output"]["handled"]) == ["<help-1@example.org>", "<help-2@example.org>"]
    replies = {r.rcpt_tos[0]: r.message for r in smtp_server.received}
    assert sorted(replies) == ["eve1@example.org", "eve2@example.org"]
    assert replies["eve1@example.org"]["Subject"] == "Re: Help: printer 1 is broken"
    assert replies["eve1@example.org"]["In-Reply-To"] == "<help-1@example.org>"
    with mail_account.imap() as imap:
        delimiter = imap.list_folders()[0][1].decode()
        imap.select_folder(f"Handled{delimiter}Support")
        assert len(imap.search(["SUBJECT", "Help"])) == 2
        imap.select_folder("INBOX")
        assert len(imap.search(["SUBJECT", "Help"])) == 1  # the one already seen stays

    again = client.run_bit(REF, body, timeout_ms=30000)
    assert (again["meta"]["exit-code"], again["output"]["count"]) == (0, 0)
    assert len(smtp_server.received) == 2  # nobody answered twice


def test_a_failing_step_stops_with_its_exit_code(project, mail_account, smtp_server):
    setup(project, mail_account, smtp_server)
    smtp_server.handler.refuse_rcpt = {"eve1@example.org": "550 5.1.1 <eve1@example.org>: no such user",
                                       "eve2@example.org": "550 5.1.1 <eve2@example.org>: no such user"}
    env = project.client().run_bit(REF, {"criteria": {"field": "SUBJECT", "value": "help"}}, timeout_ms=30000)
    assert env["meta"]["exit-code"] == -1 and "reply to" in env["meta"]["message"]
    assert mail_account.password not in json.dumps(env)
    with mail_account.imap() as imap:  # nothing was filed without an answer
        imap.select_folder("INBOX")
        assert len(imap.search(["SUBJECT", "Help"])) == 3
