"""The pop3 connector against a real Dovecot: actions, STLS, implicit TLS and errors."""

from __future__ import annotations

import base64
import logging
import poplib
import socket
from typing import Any

import pytest

from connectors import mailbox
from connectors.base import ConnectorCall
from connectors.imap import ImapConnector
from connectors.pop3 import Pop3Connector
from runtime.errors import FlintError
from tests.servers.dovecot import SEED, SEED_BY_KEY, DovecotServer, MailAccount

ID = {m.key: mailbox.message_id_of(m.raw) for m in SEED}
KEY = {v: k for k, v in ID.items()}
ORDERS = {
    "sent-date": ["mixed", "html", "alternative", "plain", "noid"],
    "received-date": ["noid", "alternative", "mixed", "plain", "html"],
    "size": ["noid", "plain", "html", "alternative", "mixed"],
}


def run(config: dict[str, Any], action: str = "list", **request: Any) -> Any:
    return Pop3Connector("pop3", config).run({"action": action, **request}, ConnectorCall(timeout_ms=10000))["result"]


def fails(config: dict[str, Any], action: str = "list", **request: Any) -> FlintError:
    with pytest.raises(FlintError) as caught:
        run(config, action, **request)
    return caught.value


def keys(result: list[dict[str, Any]]) -> list[str]:
    return [KEY[entry["messageId"]] for entry in result]


@pytest.fixture
def pop3(mail_account: MailAccount) -> dict[str, Any]:
    """Connector config for the seeded mailbox over POP3 with STLS."""
    return mail_account.config("pop3", "starttls")


@pytest.mark.parametrize("sort_by", sorted(ORDERS))
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_list_sorts_by_every_key_both_ways(pop3: dict[str, Any], sort_by: str, order: str) -> None:
    expected = ORDERS[sort_by] if order == "asc" else ORDERS[sort_by][::-1]
    assert keys(run(pop3, **{"sort-by": sort_by, "sort-order": order})) == expected


def test_list_shape_default_order_max_and_only_inbox(pop3: dict[str, Any]) -> None:
    result = run(pop3)
    assert keys(result) == ORDERS["received-date"][::-1]
    assert result[0] == {"messageId": "<html-2@example.org>", "fromAddress": "bob@example.org",
                         "subject": "Réunion à 10h", "size": SEED_BY_KEY["html"].size}
    assert keys(run(pop3, max=2, **{"sort-by": "size"})) == ["mixed", "alternative"]
    assert len(run(pop3, folder="INBOX")) == 5
    error = fails(pop3, folder="Archive")
    assert error.exit_code == -2 and "'folder' must be one of: INBOX" in error.message


def test_same_ids_as_imap_including_the_synthetic_one(mail_account: MailAccount, pop3: dict[str, Any]) -> None:
    imap = ImapConnector("imap", mail_account.config("imap")).run({}, ConnectorCall())["result"]
    assert run(pop3) == imap


def test_read_returns_the_whole_message(pop3: dict[str, Any]) -> None:
    message = run(pop3, "read", **{"message-id": "<mixed-4@example.net>", "attachment-content-limit": 1000})
    assert message["subject"] == "Attachments (report)" and message["fromAddress"] == "carol@example.net"
    assert message["size"] == SEED_BY_KEY["mixed"].size
    assert message["plainTextBody"] == "See the attachments.\n" and message["htmlBody"] is None
    assert message["sentDate"] == "2024-08-16T19:45:00Z"
    assert message["receivedDateTime"] == "2024-08-20T12:00:00Z"  # from the Received header
    assert message["headers"][1] == {"header": "From", "value": "Carol <carol@example.net>"}
    names = [(a["filename"], a["size"], "content" in a) for a in message["attachments"]]
    assert names == [("report.csv", 20, True), ("résumé.pdf", 112, True), ("big.bin", 4096, False)]
    assert base64.b64decode(message["attachments"][0]["content"]) == b"id,amount\n1,10\n2,20\n"
    html = run(pop3, "read", **{"message-id": "html-2@example.org"})
    assert "<b>à 10h</b>" in html["htmlBody"] and html["subject"] == "Réunion à 10h"


def test_delete_then_list(pop3: dict[str, Any]) -> None:
    assert run(pop3, "delete", **{"message-id": ID["noid"]}) == {"deleted": True, "messageId": ID["noid"]}
    assert run(pop3, "delete", **{"message-id": "<plain-1@example.org>"})["deleted"] is True
    assert keys(run(pop3)) == ["html", "mixed", "alternative"]


def test_failed_action_commits_no_deletion(pop3: dict[str, Any]) -> None:
    class Failing(Pop3Connector):
        def action_delete(self, request: Any, call: ConnectorCall) -> Any:
            with self._session(request, call) as drop:
                drop.client.dele(1)
                raise RuntimeError("crash after DELE")

    with pytest.raises(RuntimeError):
        Failing("pop3", pop3).run({"action": "delete", "message-id": "<x@y>"}, ConnectorCall())
    assert len(run(pop3)) == 5


def test_duplicates_read_first_delete_all(mail_account: MailAccount, pop3: dict[str, Any]) -> None:
    copy = SEED_BY_KEY["plain"].raw.replace(b"Quarterly report", b"Quarterly report (copy)")
    mail_account.append("INBOX", copy, SEED_BY_KEY["plain"].received)
    assert [e["messageId"] for e in run(pop3)].count("<plain-1@example.org>") == 2
    assert run(pop3, "read", **{"message-id": "<plain-1@example.org>"})["subject"] == "Quarterly report"
    run(pop3, "delete", **{"message-id": "<plain-1@example.org>"})
    assert "plain" not in keys(run(pop3))


def test_unknown_message_id_is_not_found(pop3: dict[str, Any]) -> None:
    for action in ("read", "delete"):
        error = fails(pop3, action, **{"message-id": "<nope@example.org>"})
        assert error.exit_code == -3 and error.message == "message <nope@example.org> not found in INBOX"


NESTED = {"operator": "AND", "criteria": [
    {"operator": "OR", "criteria": [
        {"operator": "AND", "criteria": [{"field": "FROM", "value": "alice"}, {"field": "BODY", "value": "quarterly"}]},
        {"field": "SUBJECT", "value": "réunion"},
        {"field": "FROM", "value": "carol"},
    ]},
    {"field": "SUBJECT", "value": "R"},
]}


def test_search_nested_criteria(mail_account: MailAccount, pop3: dict[str, Any]) -> None:
    result = run(pop3, "search", criteria=NESTED, **{"sort-by": "sent-date", "sort-order": "asc"})
    assert keys(result) == ["mixed", "html", "plain"]
    assert result[1] == {"messageId": "<html-2@example.org>", "subject": "Réunion à 10h"}
    imap = ImapConnector("imap", mail_account.config("imap"))
    for criterion in (NESTED, {"field": "BODY", "value": "RÉUNION EST"}, {"field": "FROM", "value": "Müller"}):
        expected = imap.run({"action": "search", "criteria": criterion}, ConnectorCall())["result"]
        assert run(pop3, "search", criteria=criterion) == expected


def test_malformed_criteria_and_move_are_refused(pop3: dict[str, Any]) -> None:
    error = fails(pop3, "search", criteria={"operator": "AND", "criteria": [{"field": "FROM"}]})
    assert error.exit_code == -2 and "'value' is required in criteria.criteria.0" in error.message
    move = fails(pop3, "move", **{"message-id": "<plain-1@example.org>", "to-folder": "Archive"})
    assert move.exit_code == -2 and "unknown action 'move' (actions: delete, list, read, search)" in move.message


@pytest.mark.parametrize("security", ["starttls", "tls", "none"])
def test_each_security_mode_reaches_the_maildrop(mail_account: MailAccount, security: str) -> None:
    assert len(run(mail_account.config("pop3", security))) == 5


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_untrusted_certificate_is_minus_4(mail_account: MailAccount, security: str) -> None:
    config = mail_account.config("pop3", security)
    del config["ca-file"]
    error = fails(config)
    assert error.exit_code == -4 and "not trusted" in error.message


def test_stls_not_offered_is_minus_4(dovecot_plain: DovecotServer) -> None:
    config = dovecot_plain.add_user().config("pop3", "starttls")
    error = fails(config)
    assert error.exit_code == -4 and error.message == f"STARTTLS not offered by 127.0.0.1:{config['port']}"


def test_wrong_password_closed_port_and_timeout(mail_account: MailAccount, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = fails(mail_account.config("pop3", "tls", password="wrong-password"))
    assert wrong.exit_code == -5
    assert wrong.message.startswith(f"POP3 authentication failed for user {mail_account.username}")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        closed = fails(mail_account.config("pop3", "tls", port=port))
        sock.listen(1)
        silent = fails(mail_account.config("pop3", "none", port=port, timeout=300))
    assert closed.exit_code == -4 and closed.message == f"connection refused: 127.0.0.1:{port}"
    assert silent.exit_code == -6 and "timed out after 300 ms" in silent.message
    texts = [e.message for e in (wrong, closed, silent)] + [str(wrong.__cause__)]
    texts += [repr(run(mail_account.config("pop3", "tls"), "read", **{"message-id": "<plain-1@example.org>"}))]
    texts += [r.getMessage() for r in caplog.records]
    assert not [t for t in texts if mail_account.password in t or "wrong-password" in t]
    assert isinstance(wrong.__cause__, poplib.error_proto)


def test_unseen_is_refused_on_pop3_which_has_no_flags(mail_account: MailAccount) -> None:
    error = fails(mail_account.config("pop3"), "list", unseen=True)
    assert (error.exit_code, error.message) == (-2, "unknown key: 'unseen'")
