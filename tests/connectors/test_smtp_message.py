"""The smtp connector builds the right message: asserted on what a real aiosmtpd server received."""

from __future__ import annotations

import base64
import re
from email.utils import parsedate_to_datetime

from tests.servers.smtp import SmtpServer, send

SENDER = "Flint Ops <ops@example.org>"


def only(server: SmtpServer):
    assert len(server.received) == 1, server.received
    return server.received[0]


def text(part) -> str:
    """A text part's content in Python's line ends (on the wire, text is canonical CRLF)."""
    return part.get_content().replace("\r\n", "\n")


def test_plain_send_reports_success_and_envelope(smtp_server: SmtpServer) -> None:
    out = send(smtp_server.config(), **{"from": SENDER}, to="alice@example.org", subject="Hello", body="<p>Hi</p>")

    got = only(smtp_server)
    assert got.mail_from == "ops@example.org"
    assert got.rcpt_tos == ["alice@example.org"]
    assert out["result"] == "success"
    assert out["accepted"] == ["alice@example.org"] and out["refused"] == {}
    assert re.fullmatch(r"<[^<>@\s]+@example\.org>", out["message-id"])
    message = got.message
    assert message["Message-ID"] == out["message-id"]
    assert message["Date"] and message["Subject"] == "Hello"
    assert message.get_content_type() == "text/html"  # Flint's default content-type
    assert b"\r\n" in got.raw and b"\n" not in got.raw.replace(b"\r\n", b"")


def test_bcc_only_in_envelope_cc_and_reply_to_in_headers(smtp_server: SmtpServer) -> None:
    send(smtp_server.config(), **{"from": SENDER}, to=["a@example.org"], cc="c@example.org",
         bcc=["hidden@example.org", "Secret Person <hidden2@example.org>"], reply_to="Desk <desk@example.org>",
         body="x")

    got = only(smtp_server)
    assert got.rcpt_tos == ["a@example.org", "c@example.org", "hidden@example.org", "hidden2@example.org"]
    assert b"hidden" not in got.raw and b"Bcc" not in got.raw and b"Secret Person" not in got.raw
    assert got.message["Cc"] == "c@example.org"
    assert got.message["Reply-To"] == "Desk <desk@example.org>"


def test_bcc_only_gets_undisclosed_recipients(smtp_server: SmtpServer) -> None:
    send(smtp_server.config(), **{"from": SENDER}, bcc="b@example.org", body="x")

    got = only(smtp_server)
    assert got.rcpt_tos == ["b@example.org"]
    assert got.message["To"] == "undisclosed-recipients:;"
    assert b"b@example.org" not in got.raw


def test_comma_string_recipients_with_quoted_display_names(smtp_server: SmtpServer) -> None:
    out = send(smtp_server.config(), **{"from": SENDER},
               to='"Doe, Jane" <jane@example.org>, bob@example.org , carol@example.net', body="x")

    got = only(smtp_server)
    assert got.rcpt_tos == ["jane@example.org", "bob@example.org", "carol@example.net"]
    assert out["accepted"] == got.rcpt_tos
    to = got.message["To"]
    assert [a.addr_spec for a in to.addresses] == got.rcpt_tos
    assert to.addresses[0].display_name == "Doe, Jane"


def test_non_ascii_subject_and_display_names_use_rfc2047(smtp_server: SmtpServer) -> None:
    send(smtp_server.config(), **{"from": "Jürgen Groß <jg@example.org>"}, to="Zoë Ørsted <zoe@example.org>",
         subject="Grüße aus Köln — 東京", body="x")

    got = only(smtp_server)
    assert got.raw.isascii()
    header_block = got.raw.split(b"\r\n\r\n", 1)[0]
    assert b"=?utf-8?" in header_block
    message = got.message
    assert message["Subject"] == "Grüße aus Köln — 東京"
    assert message["From"].addresses[0].display_name == "Jürgen Groß"
    assert message["To"].addresses[0].display_name == "Zoë Ørsted"


def test_idna_domains_become_punycode_in_envelope_and_headers(smtp_server: SmtpServer) -> None:
    out = send(smtp_server.config(), **{"from": "ops@bücher.example"}, to="Ana <ana@exämple.org>",
               cc="bob@ÉCOLE.fr", body="x")

    got = only(smtp_server)
    assert got.mail_from == "ops@xn--bcher-kva.example"
    assert got.rcpt_tos == ["ana@xn--exmple-cua.org", "bob@xn--cole-9oa.fr"]
    assert out["accepted"] == got.rcpt_tos
    assert got.message["To"].addresses[0].domain == "xn--exmple-cua.org"
    assert got.raw.isascii()
    assert got.message["Message-ID"].endswith("@xn--bcher-kva.example>")


def test_plain_text_content_type(smtp_server: SmtpServer) -> None:
    send(smtp_server.config(), **{"from": SENDER}, to="a@example.org", content_type="text/plain", body="héllo\n")

    message = only(smtp_server).message
    assert message.get_content_type() == "text/plain"
    assert text(message) == "héllo\n"


def test_multipart_alternative_with_generated_text_part(smtp_server: SmtpServer) -> None:
    html = "<html><head><style>p {color: red}</style></head><body><h1>Report</h1>" \
           "<p>Total: 5 &amp; counting</p><ul><li>one</li><li>two</li></ul>" \
           '<p>See <a href="https://example.org/r">the report</a></p></body></html>'
    send(smtp_server.config(), **{"from": SENDER}, to="a@example.org", content_type="multipart/alternative",
         body=html)

    message = only(smtp_server).message
    assert message.get_content_type() == "multipart/alternative"
    plain, rich = list(message.iter_parts())
    assert plain.get_content_type() == "text/plain" and rich.get_content_type() == "text/html"
    text_part = text(plain)
    assert "Report\nTotal: 5 & counting\n- one\n- two\n" in text_part
    assert "https://example.org/r" in text_part
    assert "color" not in text_part and "<" not in text_part.replace("<https://example.org/r>", "")
    assert text(rich) == html + "\n"


def test_multipart_alternative_with_given_text_body(smtp_server: SmtpServer) -> None:
    send(smtp_server.config(), **{"from": SENDER}, to="a@example.org", content_type="multipart/alternative",
         body="<b>bold</b>", text_body="plain words")

    plain, rich = list(only(smtp_server).message.iter_parts())
    assert text(plain) == "plain words\n"
    assert text(rich) == "<b>bold</b>\n"


def test_multipart_mixed_tree_with_alternative_and_attachments(smtp_server: SmtpServer, attachments_dir) -> None:
    (attachments_dir / "Bericht über Q3 €.pdf").write_bytes(b"%PDF-1.4 fake")
    inline = {"filename": "données.csv", "content": base64.b64encode(b"a,b\n1,2\n").decode(),
              "content-type": "text/csv"}
    send(smtp_server.config(), **{"from": SENDER}, to="a@example.org", content_type="multipart/alternative",
         body="<p>see attached</p>", attachments=["var/attachments/Bericht über Q3 €.pdf", inline])

    got = only(smtp_server)
    message = got.message
    assert message.get_content_type() == "multipart/mixed"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["multipart/alternative", "application/pdf", "text/csv"]
    assert [p.get_content_type() for p in parts[0].iter_parts()] == ["text/plain", "text/html"]
    assert parts[1].get_filename() == "Bericht über Q3 €.pdf"
    assert parts[1].get_content() == b"%PDF-1.4 fake"
    assert parts[2].get_filename() == "données.csv"
    assert parts[2].get_payload(decode=True) == b"a,b\n1,2\n"
    # RFC 2231 parameters on the wire, not raw UTF-8
    assert b"filename*=utf-8''Bericht%20%C3%BCber%20Q3%20%E2%82%AC.pdf" in got.raw
    assert got.raw.isascii()
    assert got.raw.count(b"MIME-Version") == 1


def test_lines_over_998_octets_are_encoded_and_from_lines_kept(smtp_server: SmtpServer) -> None:
    long_line = "x" * 5000
    body = f"first\nFrom the start of a line\n{long_line}\n.\n..leading dots\n"
    send(smtp_server.config(), **{"from": SENDER}, to="a@example.org", content_type="text/plain", body=body)

    got = only(smtp_server)
    assert max(len(line) for line in got.raw.split(b"\r\n")) <= 998
    assert b"\r\n>From" not in got.raw
    assert got.message["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert text(got.message) == body


def test_from_line_unchanged_in_7bit_body(smtp_server: SmtpServer) -> None:
    send(smtp_server.config(), **{"from": SENDER}, to="a@example.org", content_type="text/plain",
         body="Hello\nFrom here on, all good\n")

    got = only(smtp_server)
    assert b"\r\nFrom here on, all good\r\n" in got.raw
    assert got.message["Content-Transfer-Encoding"] == "7bit"


def test_importance_sensitivity_read_receipt_follow_up_and_custom_headers(smtp_server: SmtpServer) -> None:
    send(smtp_server.config(), **{"from": SENDER}, to="a@example.org", body="x", importance=True,
         sensitivity="confidential", read_receipt=True, follow_up="tomorrow",
         headers={"X-Ticket": "INC-42", "In-Reply-To": "<abc@example.org>", "X-Count": 3, "X-Note": "naïve"})

    message = only(smtp_server).message
    assert message["Importance"] == "High"
    assert message["X-Priority"].startswith("1")
    assert message["X-MSMail-Priority"] == "High"
    assert message["Sensitivity"] == "Company-Confidential"
    assert message["Disposition-Notification-To"] == "ops@example.org"
    assert message["X-Message-Flag"] == "Follow up"
    assert parsedate_to_datetime(message["Reply-By"]).date() > message["Date"].datetime.date()
    assert message["X-Ticket"] == "INC-42"
    assert message["In-Reply-To"] == "<abc@example.org>"
    assert message["X-Count"] == "3"
    assert message["X-Note"] == "naïve"


def test_low_importance_private_and_follow_up_today(smtp_server: SmtpServer) -> None:
    send(smtp_server.config(), **{"from": SENDER}, to="a@example.org", body="x", importance="low",
         sensitivity="private", follow_up="today")

    message = only(smtp_server).message
    assert (message["Importance"], message["X-Priority"][0], message["X-MSMail-Priority"]) == ("Low", "5", "Low")
    assert message["Sensitivity"] == "Private"
    assert parsedate_to_datetime(message["Reply-By"]).date() == message["Date"].datetime.date()


def test_default_from_comes_from_config_and_request_overrides(smtp_server: SmtpServer) -> None:
    send(smtp_server.config(**{"from": "default@example.org"}), to="a@example.org", body="x")
    send(smtp_server.config(**{"from": "default@example.org"}), **{"from": "other@example.org"},
         to="a@example.org", body="x")

    assert [r.mail_from for r in smtp_server.received] == ["default@example.org", "other@example.org"]


def test_body_file_under_attachment_roots(smtp_server: SmtpServer, attachments_dir) -> None:
    (attachments_dir / "body.html").write_text("<p>from a file — ü</p>", encoding="utf-8")
    send(smtp_server.config(), **{"from": SENDER}, to="a@example.org", body_file="var/attachments/body.html")

    assert text(only(smtp_server).message) == "<p>from a file — ü</p>\n"
