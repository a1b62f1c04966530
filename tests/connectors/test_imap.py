"""The imap connector's actions against a real Dovecot, one fresh seeded mailbox per test."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from imapclient import IMAPClient

from connectors import mailbox
from connectors.base import ConnectorCall
from connectors.imap import ImapConnector, search_key
from runtime.errors import FlintError
from tests.servers.dovecot import SEED, SEED_BY_KEY, MailAccount

ID = {m.key: mailbox.message_id_of(m.raw) for m in SEED}
KEY = {v: k for k, v in ID.items()}


def run(account: MailAccount, action: str, connector: type[ImapConnector] = ImapConnector, **request: Any) -> Any:
    config = account.config("imap", "starttls")
    return connector("imap", config).run({"action": action, **request}, ConnectorCall(timeout_ms=10000))["result"]


def fails(account: MailAccount, action: str, **request: Any) -> FlintError:
    with pytest.raises(FlintError) as caught:
        run(account, action, **request)
    return caught.value


def keys(result: list[dict[str, Any]]) -> list[str]:
    return [KEY[entry["messageId"]] for entry in result]


class RecordingClient(IMAPClient):
    """Records what is fetched and can hide capabilities, to exercise the fallbacks."""

    hidden: tuple[bytes, ...] = ()
    fetched: list[list[bytes]] = []

    def capabilities(self) -> tuple[bytes, ...]:
        return tuple(c for c in super().capabilities() if c not in self.hidden)

    def fetch(self, messages: Any, data: Any, modifiers: Any = None) -> Any:
        self.fetched.append(list(data))
        return super().fetch(messages, data, modifiers)


class PlainImap(ImapConnector):
    """An IMAP connector on a server without SORT, MOVE and UIDPLUS (capabilities hidden)."""

    def connect(self, host: str, port: int, *, tls: bool, context: Any, timeout_s: float) -> IMAPClient:
        client = RecordingClient(host, port, ssl=tls, ssl_context=context, timeout=timeout_s)
        client.hidden = (b"SORT", b"MOVE", b"UIDPLUS")
        client.fetched = []
        PlainImap.last = client
        return client


class RecordingImap(ImapConnector):
    def connect(self, host: str, port: int, *, tls: bool, context: Any, timeout_s: float) -> IMAPClient:
        client = RecordingClient(host, port, ssl=tls, ssl_context=context, timeout=timeout_s)
        client.fetched = []
        RecordingImap.last = client
        return client


ORDERS = {
    "sent-date": ["mixed", "html", "alternative", "plain", "noid"],
    "received-date": ["noid", "alternative", "mixed", "plain", "html"],
    "size": ["noid", "plain", "html", "alternative", "mixed"],
}


@pytest.mark.parametrize("connector", [ImapConnector, PlainImap], ids=["sort", "no-sort"])
@pytest.mark.parametrize("sort_by", sorted(ORDERS))
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_list_sorts_by_every_key_both_ways(mail_account: MailAccount, connector: type, sort_by: str,
                                           order: str) -> None:
    result = run(mail_account, "list", connector, **{"sort-by": sort_by, "sort-order": order})
    expected = ORDERS[sort_by] if order == "asc" else ORDERS[sort_by][::-1]
    assert keys(result) == expected


def test_list_shape_default_order_and_max(mail_account: MailAccount) -> None:
    result = run(mail_account, "list")
    assert keys(result) == ORDERS["received-date"][::-1]  # newest first by default
    assert result[0] == {"messageId": "<html-2@example.org>", "fromAddress": "bob@example.org",
                         "subject": "Réunion à 10h", "size": SEED_BY_KEY["html"].size}
    assert keys(run(mail_account, "list", max=2, **{"sort-by": "size", "sort-order": "asc"})) == ["noid", "plain"]


@pytest.mark.parametrize("connector", [RecordingImap, PlainImap], ids=["sort", "no-sort"])
def test_list_never_fetches_bodies_and_only_the_chosen_headers(mail_account: MailAccount, connector: type) -> None:
    run(mail_account, "list", connector, max=2, **{"sort-by": "sent-date"})
    fetched = connector.last.fetched
    assert all(b"BODY.PEEK[]" not in items and b"RFC822" not in items for items in fetched)
    assert fetched[-1] == [b"RFC822.SIZE", b"BODY.PEEK[HEADER]"]


def test_list_other_folders_by_dot_path_including_non_ascii(mail_account: MailAccount) -> None:
    assert keys(run(mail_account, "list", folder="Archive.2024")) == ["archived"]
    assert keys(run(mail_account, "list", folder="Entwürfe")) == ["draft"]
    assert run(mail_account, "list", folder="Archive") == []
    missing = fails(mail_account, "list", folder="Nowhere.Else")
    assert missing.exit_code == -3 and "folder Nowhere.Else not found" in missing.message


def test_read_returns_the_whole_message(mail_account: MailAccount) -> None:
    message = run(mail_account, "read", **{"message-id": "<mixed-4@example.net>", "attachment-content-limit": 1000})
    assert message["messageId"] == "<mixed-4@example.net>"
    assert message["fromAddress"] == "carol@example.net"
    assert message["subject"] == "Attachments (report)"
    assert message["size"] == SEED_BY_KEY["mixed"].size
    assert message["plainTextBody"] == "See the attachments.\n" and message["htmlBody"] is None
    assert message["sentDate"] == "2024-08-16T19:45:00Z"
    assert message["receivedDateTime"] == "2024-08-20T12:00:00Z"
    assert [h["header"] for h in message["headers"]] == [
        "Received", "From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"]
    csv, pdf, big = message["attachments"]
    assert csv == {"filename": "report.csv", "content-type": "text/csv", "size": 20,
                   "content": base64.b64encode(b"id,amount\n1,10\n2,20\n").decode()}
    assert pdf["filename"] == "résumé.pdf" and base64.b64decode(pdf["content"]) == b"%PDF-1.4 fake " * 8
    assert big == {"filename": "big.bin", "content-type": "application/octet-stream", "size": 4096}


def test_read_html_alternative_and_dates(mail_account: MailAccount) -> None:
    html = run(mail_account, "read", **{"message-id": "html-2@example.org"})
    assert html["plainTextBody"] is None and "<b>à 10h</b>" in html["htmlBody"]
    alternative = run(mail_account, "read", **{"message-id": "<alt-3@example.com>"})
    assert alternative["plainTextBody"].startswith("Newsletter in plain text.")
    assert "<h1>Newsletter</h1>" in alternative["htmlBody"] and alternative["attachments"] == []
    assert alternative["subject"] == "Newsletter: ünïcode ☃ edition"
    plain = run(mail_account, "read", **{"message-id": "<plain-1@example.org>"})
    assert plain["sentDate"] == "2024-08-19T06:54:28Z" and plain["receivedDateTime"] == "2024-08-21T10:00:00Z"


def test_read_does_not_mark_seen(mail_account: MailAccount) -> None:
    run(mail_account, "read", **{"message-id": "<plain-1@example.org>"})
    with mail_account.imap() as client:
        client.select_folder("INBOX")
        assert client.search(["SEEN"]) == []


def test_unknown_message_id_is_not_found(mail_account: MailAccount) -> None:
    for action in ("read", "delete"):
        error = fails(mail_account, action, **{"message-id": "<nope@example.org>"})
        assert error.exit_code == -3 and "message <nope@example.org> not found in folder INBOX" in error.message
    # a substring of a real id is not that message
    assert fails(mail_account, "read", **{"message-id": "<lain-1@example.org>"}).exit_code == -3
    moved = fails(mail_account, "move", **{"message-id": "<nope@example.org>", "to-folder": "Archive"})
    assert moved.exit_code == -3


def test_message_without_message_id_gets_a_stable_synthetic_one(mail_account: MailAccount) -> None:
    listed = {e["subject"]: e["messageId"] for e in run(mail_account, "list")}
    synthetic = listed["No id here"]
    assert synthetic == ID["noid"] and mailbox.is_synthetic(synthetic)
    assert run(mail_account, "read", **{"message-id": synthetic})["plainTextBody"].startswith("This message has no")
    assert run(mail_account, "delete", **{"message-id": synthetic}) == {"deleted": True, "messageId": synthetic}
    assert "noid" not in keys(run(mail_account, "list"))


def test_delete_expunges_the_message(mail_account: MailAccount) -> None:
    result = run(mail_account, "delete", **{"message-id": "<plain-1@example.org>"})
    assert result == {"deleted": True, "messageId": "<plain-1@example.org>"}
    assert "plain" not in keys(run(mail_account, "list"))
    with mail_account.imap() as client:
        assert client.select_folder("INBOX")[b"EXISTS"] == 4


def test_delete_without_uidplus_still_expunges(mail_account: MailAccount) -> None:
    run(mail_account, "delete", PlainImap, **{"message-id": "<html-2@example.org>"})
    assert keys(run(mail_account, "list", **{"sort-by": "size", "sort-order": "asc"})) == [
        "noid", "plain", "alternative", "mixed"]


def test_duplicates_list_each_read_first_delete_all(mail_account: MailAccount) -> None:
    copy = SEED_BY_KEY["plain"].raw.replace(b"Quarterly report", b"Quarterly report (copy)")
    mail_account.append("INBOX", copy, SEED_BY_KEY["plain"].received.replace(year=2025))
    listed = [e for e in run(mail_account, "list") if e["messageId"] == "<plain-1@example.org>"]
    assert [e["subject"] for e in listed] == ["Quarterly report (copy)", "Quarterly report"]
    assert run(mail_account, "read", **{"message-id": "<plain-1@example.org>"})["subject"] == "Quarterly report"
    run(mail_account, "delete", **{"message-id": "<plain-1@example.org>"})
    assert "plain" not in keys(run(mail_account, "list"))


@pytest.mark.parametrize("connector", [ImapConnector, PlainImap], ids=["move", "copy-expunge"])
def test_move_into_a_new_nested_folder(mail_account: MailAccount, connector: type) -> None:
    result = run(mail_account, "move", connector, **{"message-id": "<plain-1@example.org>",
                                                     "to-folder": "Projects.2024.Käse"})
    assert result == {"messageId": "<plain-1@example.org>", "from": "INBOX", "to": "Projects.2024.Käse"}
    assert keys(run(mail_account, "list", folder="Projects.2024.Käse")) == ["plain"]
    assert "plain" not in keys(run(mail_account, "list"))
    with mail_account.imap() as client:
        names = [name for _, _, name in client.list_folders()]
        assert {"Projects", "Projects/2024", "Projects/2024/Käse"} <= set(names)  # server delimiter "/"
        assert "Projects/2024/Käse" in [name for _, _, name in client.list_sub_folders()]


def test_move_between_existing_folders_and_back(mail_account: MailAccount) -> None:
    run(mail_account, "move", **{"message-id": "<draft-6@example.test>", "from-folder": "Entwürfe",
                                 "to-folder": "Archive.2024"})
    assert sorted(keys(run(mail_account, "list", folder="Archive.2024"))) == ["archived", "draft"]
    assert run(mail_account, "list", folder="Entwürfe") == []
    same = fails(mail_account, "move", **{"message-id": "<draft-6@example.test>", "from-folder": "Archive.2024",
                                          "to-folder": "Archive.2024"})
    assert same.exit_code == -2


def test_server_refusal_is_minus_one(mail_account: MailAccount) -> None:
    error = fails(mail_account, "move", **{"message-id": "<plain-1@example.org>", "to-folder": "x" * 300})
    assert error.exit_code == -1 and "refused" in error.message


NESTED = {"operator": "AND", "criteria": [
    {"operator": "OR", "criteria": [
        {"operator": "AND", "criteria": [{"field": "FROM", "value": "alice"}, {"field": "BODY", "value": "quarterly"}]},
        {"field": "SUBJECT", "value": "réunion"},
        {"field": "FROM", "value": "carol"},
    ]},
    {"field": "SUBJECT", "value": "R"},
]}


def test_search_nested_criteria_server_side(mail_account: MailAccount) -> None:
    result = run(mail_account, "search", criteria=NESTED, **{"sort-by": "sent-date", "sort-order": "asc"})
    assert result == [{"messageId": "<mixed-4@example.net>", "subject": "Attachments (report)"},
                      {"messageId": "<html-2@example.org>", "subject": "Réunion à 10h"},
                      {"messageId": "<plain-1@example.org>", "subject": "Quarterly report"}]
    assert keys(run(mail_account, "search", PlainImap, criteria=NESTED, max=1)) == ["html"]


@pytest.mark.parametrize("criterion, expected", [
    ({"field": "SUBJECT", "value": "(report)"}, ["mixed"]),
    ({"field": "SUBJECT", "value": "ünïcode ☃"}, ["alternative"]),
    ({"field": "BODY", "value": "réunion est"}, ["html"]),
    ({"field": "FROM", "value": "Müller"}, ["html"]),
    ({"operator": "AND", "criteria": [{"field": "FROM", "value": "example.org"},
                                      {"field": "BODY", "value": "no Message-ID"}]}, ["noid"]),
    ({"field": "SUBJECT", "value": 'say "hi" \\ there'}, []),
])
def test_search_values_with_specials_and_non_ascii(mail_account: MailAccount, criterion: dict,
                                                   expected: list[str]) -> None:
    assert keys(run(mail_account, "search", criteria=criterion)) == expected


def test_search_key_needs_no_parentheses() -> None:
    key = search_key(NESTED)
    assert "(" not in [k for k in key if isinstance(k, str)]
    assert key[:4] == ["NOT", "OR", "NOT", "OR"]


def test_malformed_criteria_is_refused_before_connecting(mail_account: MailAccount) -> None:
    error = fails(mail_account, "search", criteria={"operator": "OR", "criteria": [{"field": "TO", "value": "x"}]})
    assert error.exit_code == -2 and "'criteria.criteria.0.field' must be one of" in error.message
    assert fails(mail_account, "search").exit_code == -2
    assert "unknown key" in fails(mail_account, "list", bogus=1).message


def test_unseen_limits_list_and_search_to_messages_not_yet_read(mail_account: MailAccount) -> None:
    with mail_account.imap() as client:
        client.select_folder("INBOX")
        plain = client.search(["SUBJECT", "Quarterly"])
        client.add_flags(plain, [b"\\Seen"])
    listed = {m["subject"] for m in run(mail_account, "list", unseen=True)}
    everything = {m["subject"] for m in run(mail_account, "list")}
    assert "Quarterly report" in everything and "Quarterly report" not in listed
    assert listed == everything - {"Quarterly report"}
    hits = run(mail_account, "search", unseen=True, criteria={"field": "SUBJECT", "value": "report"})
    assert [h["subject"] for h in hits] == ["Attachments (report)"]  # not the read "Quarterly report"
    assert [h["subject"] for h in run(mail_account, "search", criteria={"field": "SUBJECT", "value": "Quarterly"})] \
        == ["Quarterly report"]
