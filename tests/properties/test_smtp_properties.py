"""Property tests of the smtp connector on a real aiosmtpd server: arbitrary text in every field.

For any subject, display name, extra header value, inline attachment file name and body, a send
either delivers one message with exactly the requested recipients, only the headers it sets, and
the text back as it was given (decoded), or it fails with -2 and the server saw no transaction.
Never another exception type (see :mod:`tests.properties.delivery`).
"""

from __future__ import annotations

import email.header
import re

import base64
import email.policy

import pytest

from hypothesis import HealthCheck, example, given, settings, strategies as st

from tests.properties.delivery import body_as_sent, parse, received_text, send_or_refuse

# Text that has broken mail libraries: line breaks and their Unicode cousins, SMTP's end of data,
# mbox's "From ", dot-stuffing, encoded-word look-alikes, header look-alikes, NUL, long lines.
FRAGMENTS = [
    "\r\n", "\r", "\n", "\x00", "\t", " ", "  ", "\r\n.\r\n", ".\r\n", "\n.\n", ".", "..", "From ",
    "\nFrom x", ">From ", "=?utf-8?q?=41?=", "=?", "?=", "=", "=0D=0A", "\r\nBcc: evil@attacker.example",
    "\nX-Injected: yes", "Bcc:", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\ufeff", "é", "ß",
    "東京", "😀", "\u200b", ";", ",", '"', "\\", "<", ">", "(", ")", "@", ":",
]
LONG = st.integers(min_value=70, max_value=2500).map(lambda n: "x" * n)
LONG_WORDS = st.integers(min_value=20, max_value=400).map(lambda n: " ".join(["word"] * n))
ARBITRARY = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)




def _encoded_word(text: str, q: bool) -> str:
    data = text.encode("utf-8")
    if q:
        return "=?utf-8?q?" + "".join(f"={b:02X}" for b in data) + "?="
    return "=?utf-8?b?" + base64.b64encode(data).decode() + "?="


# RFC 2047 encoded words of arbitrary text: the email package decodes them in header values.
ENCODED = st.builds(_encoded_word, st.lists(st.one_of(ARBITRARY, st.sampled_from(FRAGMENTS)), max_size=4)
                    .map("".join), st.booleans())


def texts(max_pieces: int = 12) -> st.SearchStrategy[str]:
    """Arbitrary text mixed with the fragments above (no lone surrogates: see the last test)."""
    piece = st.one_of(ARBITRARY, st.sampled_from(FRAGMENTS), LONG, LONG_WORDS, ENCODED)
    return st.lists(piece, max_size=max_pieces).map("".join)


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                             HealthCheck.too_slow])

TO = ["alice@example.org", "bob@example.net"]
BCC = ["hidden@example.com"]


def has_line_break(text: str) -> bool:
    """True when ``text`` (or an encoded word in it) holds anything Python ends a line at, as the
    modern header parser or the legacy ``email.header.decode_header`` (which finds encoded words
    inside other tokens, e.g. ``=?=?utf-8?b?DQo=?=``) reads it."""
    return any(len(f"x{t}x".splitlines()) > 1 for t in (text, decoded(text), legacy_decoded(text)))


_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def legacy_decoded(value: str) -> str:
    """``value`` as a lenient reader sees it: every piece shaped like an encoded word, wherever it
    stands (even inside another token), decoded as ``email.header.decode_header`` would, in turn."""
    def one(match: re.Match[str]) -> str:
        try:
            return str(email.header.make_header(email.header.decode_header(match.group(0))))
        except Exception:  # not decodable: it stays as written
            return match.group(0)

    for _ in range(4):
        value, count = _ENCODED_WORD.subn(one, value)
        if not count:
            break
    return value


def same_text(received: str, sent: str) -> bool:
    """Equal but for whitespace, which header folding may move, double, or (between two encoded
    words the email package writes for a long header) drop."""
    return "".join(received.split()) == "".join(sent.split())


def decoded(value: str) -> str:
    """``value`` as the email package reads it: RFC 2047 encoded words in it are decoded."""
    for _ in range(4):  # an encoded word may hold another, decoded in turn by a reader
        if "=?" not in value:
            break
        value = str(email.policy.default.header_factory("X-Value", value))
    return value


@PROPERTY
@given(subject=texts())
@example(subject="=?utf-8?q?Hello=0D=0ABcc:_evil@attacker.example?=")
@example(subject="Hi =?utf-8?b?DQpYLUluamVjdGVkOiB5ZXMNCg0KYm9keQ==?= there")
@example(subject="x" * 2000)
@example(subject="a\x0bb")
def test_any_subject_round_trips_or_is_refused(mail_server, subject):
    got = send_or_refuse(mail_server, {"to": TO, "bcc": BCC, "subject": subject, "body": "x"},
                         recipients=TO + BCC)
    if got is None:
        assert has_line_break(subject), f"refused a subject with no line break: {subject!r}"
        return
    assert not has_line_break(subject)
    if "=?" not in subject:  # (how much of a text full of encoded-word look-alikes a reader decodes varies)
        assert same_text(parse(got.raw)["Subject"], subject)


@PROPERTY
@given(sender_name=texts(6), to_name=texts(6))
@example(sender_name="=?utf-8?q?=0D=0AX-Injected:_yes?=", to_name="Ann")
@example(sender_name="Ann", to_name="x" * 1000)
def test_any_display_name_round_trips_or_is_refused(mail_server, sender_name, to_name):
    def quoted(name: str) -> str:
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'

    got = send_or_refuse(mail_server, {"from": f"{quoted(sender_name)} <ops@example.org>",
                                       "to": [f"{quoted(to_name)} <alice@example.org>", "bob@example.net"],
                                       "body": "x"}, recipients=["alice@example.org", "bob@example.net"])
    if got is None:
        return
    assert got.mail_from == "ops@example.org"
    message = parse(got.raw)
    [sender] = message["From"].addresses
    alice, bob = message["To"].addresses
    assert (sender.addr_spec, alice.addr_spec, bob.addr_spec) == ("ops@example.org", "alice@example.org",
                                                                  "bob@example.net")
    for shown, sent in ((sender.display_name, sender_name), (alice.display_name, to_name)):
        if "=?" not in sent:  # (an address header decodes encoded words only where they stand alone)
            assert same_text(shown, sent), (shown, sent)


HEADER_NAMES = st.one_of(
    st.sampled_from(["X-Custom", "X-Ticket", "Keywords", "Comments", "X-Mailer", "Bcc", "To", "Subject",
                     "Content-Type", "X-A:B", "X A", "X-Ä", "", "X-\x00", "Resent-Bcc"]),
    st.from_regex(r"\AX-[A-Za-z0-9-]{1,20}\Z"),
    ARBITRARY,
)


@PROPERTY
@example(headers={"X-Note": "=?utf-8?q?a=0D=0ABcc:_evil@attacker.example?="})
@example(headers={"Resent-Bcc": "=?utf-8?q?=0D=0AX-Injected:_yes?= <a@b.example>"})
@example(headers={"X-Note": "a\u2028b"})
@given(headers=st.dictionaries(HEADER_NAMES, st.one_of(texts(8), st.integers(), st.floats(allow_nan=False)),
                               max_size=3))
def test_any_extra_header_is_sent_as_one_header_or_refused(mail_server, headers):
    got = send_or_refuse(mail_server, {"to": TO, "bcc": BCC, "headers": headers, "body": "x"},
                         recipients=TO + BCC, extra_headers=headers)
    if got is None:
        return
    message = parse(got.raw)
    for name, value in headers.items():
        assert name.lower() not in ("bcc", "to", "subject", "content-type")
        if name.lower() == "resent-bcc":  # an address header: parsed, not kept as text
            continue
        if "=?" not in str(value):
            assert same_text(message[name], str(value)), (name, value, got.raw[:3000])


@PROPERTY
@given(filename=texts(6), content=st.binary(max_size=300))
@example(filename="report\x0b.pdf", content=b"x")
@example(filename="=?utf-8?q?a=0D=0AX-Injected:_yes?=.pdf", content=b"x")
def test_any_inline_attachment_file_name_round_trips_or_is_refused(mail_server, filename, content):
    attachment = {"filename": filename, "content": base64.b64encode(content).decode(),
                  "content-type": "application/octet-stream"}
    got = send_or_refuse(mail_server, {"to": TO, "body": "x", "attachments": [attachment]}, recipients=TO)
    if got is None:
        return
    parts = list(parse(got.raw).iter_attachments())
    assert len(parts) == 1
    if "=?" not in filename:  # encoded-word look-alikes in a parameter are decoded in part, as readers do
        assert same_text(parts[0].get_filename(), filename)
    assert parts[0].get_content() == content


@PROPERTY
@given(body=texts(16), content_type=st.sampled_from(["text/plain", "text/html"]))
def test_any_body_round_trips(mail_server, body, content_type):
    got = send_or_refuse(mail_server, {"to": TO, "bcc": BCC, "subject": "body", "body": body,
                                       "content-type": content_type}, recipients=TO + BCC)
    assert got is not None, "a body is never refused"
    message = parse(got.raw)
    assert message.get_content_type() == content_type
    assert received_text(message) == body_as_sent(body)
    assert all(len(line) <= 998 for line in got.raw.split(b"\r\n"))


@PROPERTY
@given(body=texts(10), text_body=texts(6))
def test_any_multipart_alternative_round_trips(mail_server, body, text_body):
    got = send_or_refuse(mail_server, {"to": TO, "body": body, "text-body": text_body,
                                       "content-type": "multipart/alternative"}, recipients=TO)
    assert got is not None
    plain, html = parse(got.raw).iter_parts()
    assert received_text(plain) == body_as_sent(text_body)
    assert received_text(html) == body_as_sent(body)


SURROGATE_TEXT = st.lists(st.one_of(ARBITRARY, st.sampled_from(["\ud800", "\udfff", "\udc80abc"])),
                          max_size=5).map("".join)


@pytest.mark.parametrize("field", ["subject", "body", "header", "filename", "display-name"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=SURROGATE_TEXT)
@example(text="\ud800")
def test_lone_surrogates_anywhere_are_refused_or_sent_never_a_crash(mail_server, field, text):
    """JSON can carry lone surrogates ("\\ud800"); they cannot be encoded, so -2, never a crash."""
    request = {"to": TO, "body": "x"}
    extra = ()
    if field == "subject":
        request["subject"] = text
    elif field == "body":
        request["body"] = text
    elif field == "header":
        request["headers"] = {"X-Note": text}
        extra = ("X-Note",)
    elif field == "filename":
        request["attachments"] = [{"filename": text or "x", "content": "eA=="}]
    else:
        request["to"] = ['"' + text.replace("\\", "\\\\").replace('"', '\\"') + '" <alice@example.org>']
    send_or_refuse(mail_server, request, recipients=None, extra_headers=extra)
