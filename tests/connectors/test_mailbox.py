"""The shared mailbox rules: criteria schema and evaluation, Message-IDs, message shapes, sorting."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.policy import SMTP

import pytest

from connectors import mailbox
from connectors.base import validate
from runtime.errors import InvalidRequest

SCHEMA = {"type": "object", "properties": {"criteria": {"$ref": "#/$defs/criterion"}},
          "$defs": mailbox.CRITERIA_DEFS}

NESTED = {"operator": "AND", "criteria": [
    {"operator": "OR", "criteria": [
        {"operator": "AND", "criteria": [{"field": "FROM", "value": "alice"}, {"field": "BODY", "value": "report"}]},
        {"field": "SUBJECT", "value": "Réunion"},
    ]},
    {"field": "SUBJECT", "value": "R"},
]}


def test_nested_criteria_are_valid_to_any_depth() -> None:
    deep: dict = {"field": "FROM", "value": "x"}
    for _ in range(30):
        deep = {"operator": "OR", "criteria": [deep]}
    validate({"criteria": NESTED}, SCHEMA)
    validate({"criteria": deep}, SCHEMA)


@pytest.mark.parametrize("criteria, fragment", [
    ({"field": "TO", "value": "x"}, "'criteria.field' must be one of: FROM, SUBJECT, BODY"),
    ({"field": "FROM"}, "'value' is required in criteria"),
    ({"operator": "NOT", "criteria": [{"field": "FROM", "value": "x"}]}, "'criteria.operator' must be one of: AND, OR"),
    ({"operator": "AND", "criteria": []}, "'criteria.criteria': minItems is 1"),
    ({"operator": "OR", "criteria": [{"field": "BODY", "value": "a"}, {"field": "SUBJECT", "value": 3}]},
     "'criteria.criteria.1.value' must be of type string"),
    ({"field": "SUBJECT", "value": "a\r\nb"}, "'criteria.value' is not valid"),
    ({"field": "SUBJECT", "value": "a", "extra": 1}, "unknown key in criteria: 'extra'"),
    ({"operator": "AND", "criteria": [{"operator": "OR", "criteria": [{"value": "x"}]}]},
     "'field' is required in criteria.criteria.0.criteria.0"),
    ("FROM alice", "'criteria' must be of type object"),
])
def test_malformed_criteria_are_refused_naming_the_place(criteria: object, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate({"criteria": criteria}, SCHEMA)
    assert caught.value.exit_code == -2
    assert fragment in caught.value.message


def test_criteria_match_nested_groups_ignoring_case() -> None:
    fields = {"FROM": "Alice <alice@example.org>", "SUBJECT": "Quarterly", "BODY": "the REPORT is here"}
    assert mailbox.criteria_match(NESTED, fields)
    assert not mailbox.criteria_match(NESTED, {**fields, "BODY": "nothing"})
    assert mailbox.criteria_match(NESTED, {"FROM": "bob", "SUBJECT": "réunion à 10h", "BODY": ""})
    assert mailbox.criteria_use_body(NESTED)
    assert not mailbox.criteria_use_body({"field": "FROM", "value": "x"})


def _raw(message_id: str | None = "<a@example.org>", **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "=?utf-8?q?J=C3=BCrgen?= <juergen@example.org>"
    msg["Subject"] = "=?utf-8?b?R3LDvMOfZQ==?="
    msg["Date"] = "Mon, 19 Aug 2024 08:54:28 +0200"
    for name, value in headers.items():
        msg[name] = value
    if message_id:
        msg["Message-ID"] = message_id
    msg.set_content("body\n")
    return msg.as_bytes(policy=SMTP)


def test_summary_decodes_subject_and_takes_the_address() -> None:
    assert mailbox.summary(_raw(), 42) == {"messageId": "<a@example.org>", "fromAddress": "juergen@example.org",
                                           "subject": "Grüße", "size": 42}


def test_synthetic_id_is_stable_and_ignores_the_body_and_line_ends() -> None:
    raw = _raw(None)
    header_only = mailbox.header_block(raw)
    assert mailbox.message_id_of(raw) == mailbox.message_id_of(header_only.replace(b"\r\n", b"\n"))
    synthetic = mailbox.message_id_of(raw)
    assert synthetic.startswith("<sha256-") and synthetic.endswith("@flint.invalid>")
    assert mailbox.is_synthetic(synthetic) and not mailbox.is_synthetic("<a@example.org>")
    assert mailbox.message_id_of(_raw(None, **{"X-Mailer": "other"})) != synthetic


def test_message_ids_compare_without_brackets() -> None:
    assert mailbox.same_message_id("<a@b>", " a@b ")
    assert not mailbox.same_message_id("<a@b>", "<xa@b>")


def test_iso_utc() -> None:
    moment = datetime(2024, 8, 19, 8, 54, 28, tzinfo=timezone(timedelta(hours=2)))
    assert mailbox.iso_utc(moment) == "2024-08-19T06:54:28Z"
    assert mailbox.iso_utc(None) is None


def test_details_limit_attachment_content_and_decode_names() -> None:
    msg = EmailMessage()
    msg["Subject"] = "files"
    msg["Received"] = "from x by y; Wed, 21 Aug 2024 10:00:00 +0000"
    msg.set_content("text\n")
    msg.add_alternative("<p>html</p>", subtype="html")
    msg.add_attachment(b"12345", maintype="application", subtype="octet-stream", filename="small.bin")
    msg.add_attachment(b"x" * 100, maintype="application", subtype="octet-stream", filename="Grüße.bin")
    raw = msg.as_bytes(policy=SMTP)
    details = mailbox.message_details(raw, size=len(raw), received=None, content_limit=10)
    assert details["plainTextBody"] == "text\n" and details["htmlBody"] == "<p>html</p>\n"
    assert details["receivedDateTime"] == "2024-08-21T10:00:00Z" and details["sentDate"] is None
    assert details["attachments"] == [
        {"filename": "small.bin", "content-type": "application/octet-stream", "size": 5,
         "content": base64.b64encode(b"12345").decode()},
        {"filename": "Grüße.bin", "content-type": "application/octet-stream", "size": 100},
    ]
    assert [h["header"] for h in details["headers"]][:2] == ["Subject", "Received"]


def test_sort_keeps_mailbox_order_for_ties_both_ways() -> None:
    items = [(1, 5), (2, 3), (3, 5), (4, None)]
    assert [i for i, _ in mailbox.sort_in_order(items, lambda t: t[1], "asc")] == [4, 2, 1, 3]
    assert [i for i, _ in mailbox.sort_in_order(items, lambda t: t[1], "desc")] == [1, 3, 2, 4]


def test_malformed_headers_never_break_a_message() -> None:
    raw = (b"From: \"unterminated <alice@example.org\r\nSubject: =?utf-8?q?broken\r\n"
           b"Date: yesterday-ish\r\nTo: ,,,@,\r\nX-Folded: one\r\n two\r\n\r\nbody\r\n")
    details = mailbox.message_details(raw, size=len(raw), received=None)
    assert details["sentDate"] is None and details["receivedDateTime"] is None
    assert details["plainTextBody"] == "body\n"
    assert {"header": "X-Folded", "value": "one two"} in details["headers"]
    assert mailbox.summary(raw, 1)["subject"] == "=?utf-8?q?broken"


def test_forwarded_message_is_one_attachment() -> None:
    inner = EmailMessage()
    inner["Subject"] = "fwd"
    inner.set_content("inner body\n")
    outer = EmailMessage()
    outer["Subject"] = "outer"
    outer.set_content("outer body\n")
    outer.add_attachment(inner)
    raw = outer.as_bytes(policy=SMTP)
    details = mailbox.message_details(raw, size=len(raw), received=None)
    assert details["plainTextBody"] == "outer body\n"
    [attachment] = details["attachments"]
    assert attachment["content-type"] == "message/rfc822"
    assert base64.b64decode(attachment["content"]).startswith(b"Subject: fwd\r\n")
