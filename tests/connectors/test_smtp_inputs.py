"""Bad requests are refused with their SPEC exit-code and message, and nothing is delivered."""

from __future__ import annotations

import pytest

from runtime.errors import FlintError, RemoteRefused, TransientFailure
from tests.servers.smtp import SmtpServer, send

MAIL = {"from": "ops@example.org", "to": "a@example.org", "subject": "s", "body": "x"}


def refused(server: SmtpServer, code: int, message: str | None = None, *, match: str | None = None,
            config: dict | None = None, **request) -> FlintError:
    """Send ``MAIL`` updated with ``request``; assert the error and that nothing was sent."""
    with pytest.raises(FlintError) as caught:
        send({**server.config(), **(config or {})}, **{**MAIL, **request})
    error = caught.value
    assert error.exit_code == code, str(error)
    if message is not None:
        assert str(error) == message
    if match is not None:
        assert match in str(error)
    assert server.received == []
    if code not in (-1,):
        assert server.handler.transactions == 0
    return error


@pytest.mark.parametrize("key", ["subject", "from", "to", "cc", "bcc", "reply-to"])
@pytest.mark.parametrize("brk", ["\r", "\n", "\r\n"])
def test_line_breaks_in_header_fields_are_refused(smtp_server: SmtpServer, key: str, brk: str) -> None:
    value = f"a@example.org{brk}Bcc: victim@example.org" if key != "subject" else f"hi{brk}Bcc: v@example.org"
    refused(smtp_server, -2, f"line break in {key}", **{key.replace("-", "_"): value})


@pytest.mark.parametrize("key", ["to", "cc", "bcc", "reply-to"])
def test_line_breaks_in_address_lists_are_refused(smtp_server: SmtpServer, key: str) -> None:
    refused(smtp_server, -2, f"line break in {key}", **{key.replace("-", "_"): ["b@example.org", "c@x.org\nX: y"]})


def test_line_breaks_in_custom_headers_are_refused(smtp_server: SmtpServer) -> None:
    refused(smtp_server, -2, "line break in header X-Ticket", headers={"X-Ticket": "1\r\nBcc: v@example.org"})
    refused(smtp_server, -2, "line break in header name", headers={"X-A\nBcc": "v"})
    refused(smtp_server, -2, "invalid header name 'X Bad'", headers={"X Bad": "v"})


def test_a_header_word_too_long_to_fold_is_refused_before_sending(smtp_server: SmtpServer) -> None:
    refused(smtp_server, -2, "header Resent-Bcc has a word too long to fit a line of 998 octets",
            headers={"Resent-Bcc": "x" * 1000})


def test_line_breaks_in_attachment_names_are_refused(smtp_server: SmtpServer) -> None:
    inline = {"filename": "a\r\n.txt", "content": "eA=="}
    refused(smtp_server, -2, "line break in attachments[0].filename", attachments=[inline])
    inline = {"filename": "a.txt", "content": "eA==", "content-type": "text/plain\nX-Evil: 1"}
    refused(smtp_server, -2, "line break in attachments[0].content-type", attachments=[inline])


@pytest.mark.parametrize("key,value,shown", [
    ("cc", "a@", "a@"),
    ("to", ["ok@example.org", "no-at-sign"], "no-at-sign"),
    ("bcc", "x@-bad-.org", "x@-bad-.org"),
    ("reply-to", "Name <a@b@c.org>", "Name <a@b@c.org>"),
    ("from", "ops@", "ops@"),
    ("to", "Müller, Hans <h@x.de>", "Müller"),
])
def test_invalid_addresses_name_field_and_address(smtp_server: SmtpServer, key: str, value, shown: str) -> None:
    refused(smtp_server, -2, f"invalid address in {key}: {shown!r}", **{key.replace("-", "_"): value})


def test_no_recipients(smtp_server: SmtpServer) -> None:
    error = refused(smtp_server, -2, to=None, match="'to' is required")
    assert str(error).startswith("'to' is required")
    refused(smtp_server, -2, to=[], cc="", match="'to' is required")


def test_no_sender(smtp_server: SmtpServer) -> None:
    request = {k: v for k, v in MAIL.items() if k != "from"}
    with pytest.raises(FlintError, match="'from' is required"):
        send(smtp_server.config(), **request)


def test_unknown_keys_are_refused_by_name(smtp_server: SmtpServer) -> None:
    refused(smtp_server, -2, "unknown key: 'tos'", tos="a@example.org")
    refused(smtp_server, -2, match="'priority'", config={"priority": 1})
    refused(smtp_server, -2, match="'size'", attachments=[{"filename": "a", "content": "eA==", "size": 1}])


def test_wrong_types_and_values_name_the_key(smtp_server: SmtpServer) -> None:
    refused(smtp_server, -2, "'content-type' must be one of: text/html, text/plain, multipart/alternative",
            content_type="application/json")
    refused(smtp_server, -2, match="'importance'", importance="urgent")
    refused(smtp_server, -2, match="'to'", to=5)


@pytest.mark.parametrize("key", ["attachment-roots", "attachment_size", "capture-dir", "tls-verify", "ca-file",
                                 "allow-plaintext-auth"])
def test_keys_guarding_the_host_come_only_from_config(smtp_server: SmtpServer, key: str) -> None:
    value = {"attachment-roots": ["/"], "attachment_size": 1000, "capture-dir": "x", "ca-file": "x"}.get(key, True)
    refused(smtp_server, -9, f"{key!r} can be set only in the connector config, not in a request",
            **{key if key == "attachment_size" else key.replace("-", "_"): value})


def test_structural_headers_cannot_be_set_through_headers(smtp_server: SmtpServer) -> None:
    refused(smtp_server, -2, "header Bcc cannot be set in 'headers'; use the 'bcc' key", headers={"Bcc": "v@x.org"})
    refused(smtp_server, -2, match="header content-type cannot be set", headers={"content-type": "text/plain"})
    refused(smtp_server, -2, match="header Message-ID cannot be set", headers={"Message-ID": "<a@b>"})


def test_body_and_body_file_together(smtp_server: SmtpServer, attachments_dir) -> None:
    (attachments_dir / "b.txt").write_text("x")
    refused(smtp_server, -2, "give 'body' or 'body-file', not both", body_file="var/attachments/b.txt")


def test_all_recipients_refused_is_remote_refused(smtp_server: SmtpServer) -> None:
    smtp_server.handler.refuse_rcpt = {"a@example.org": "550 5.1.1 <a@example.org>: mailbox unavailable"}
    error = refused(smtp_server, -1, "SMTP 550 5.1.1 <a@example.org>: mailbox unavailable")
    assert type(error) is RemoteRefused


def test_several_refused_recipients_are_counted(smtp_server: SmtpServer) -> None:
    smtp_server.handler.refuse_rcpt = {"a@example.org": "550 5.1.1 no such user", "b@example.org": "550 5.1.1 no"}
    refused(smtp_server, -1, "SMTP 550 5.1.1 no such user (recipient <a@example.org>) "
                             "(and 1 more recipients refused)", to="a@example.org, b@example.org")


def test_partial_refusal_is_success_with_refused(smtp_server: SmtpServer) -> None:
    smtp_server.handler.refuse_rcpt = {"gone@example.org": "550 5.1.1 <gone@example.org>: user unknown"}
    out = send(smtp_server.config(), **{**MAIL, "to": ["a@example.org", "gone@example.org"], "bcc": "b@example.org"})

    assert out["accepted"] == ["a@example.org", "b@example.org"]
    assert out["refused"] == {"gone@example.org": "550 5.1.1 <gone@example.org>: user unknown"}
    assert smtp_server.received[0].rcpt_tos == ["a@example.org", "b@example.org"]


def test_temporary_refusal_is_transient_failure(smtp_server: SmtpServer) -> None:
    smtp_server.handler.refuse_rcpt = {"a@example.org": "451 4.3.0 try again later"}
    error = refused(smtp_server, -1)
    assert isinstance(error, TransientFailure) and str(error).startswith("SMTP 451 4.3.0 try again later")


def test_mail_from_refused(smtp_server: SmtpServer) -> None:
    smtp_server.handler.refuse_mail = "553 5.7.1 sender not allowed"
    refused(smtp_server, -1, "SMTP 553 5.7.1 sender not allowed (sender <ops@example.org>)")


def test_data_refused(smtp_server: SmtpServer) -> None:
    smtp_server.handler.refuse_data = "554 5.6.0 message content rejected"
    error = refused(smtp_server, -1, match="SMTP 554 5.6.0 message content rejected")
    assert type(error) is RemoteRefused
    smtp_server.handler.refuse_data = "452 4.3.1 insufficient storage"
    assert isinstance(refused(smtp_server, -1), TransientFailure)
