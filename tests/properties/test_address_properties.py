"""Property tests of recipients: arbitrary strings in from/to/cc/bcc, sent to a real aiosmtpd server.

Either the send is accepted and the SMTP envelope names exactly the addresses the fields parse
to (to, cc, bcc, each once, in order), and the To/Cc headers as a mail reader parses them name
the same mailboxes as the envelope, with no Bcc anywhere in the message; or it fails with -2
naming the field, and the server saw no transaction.
"""

from __future__ import annotations

import base64
import re

from hypothesis import HealthCheck, example, given, settings, strategies as st

from connectors.addresses import parse_address_list, refuse_line_breaks
from runtime.errors import InvalidRequest
from tests.properties.delivery import parse, send_or_refuse

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                             HealthCheck.too_slow])

# Pieces of address syntax and the characters that break parsers.
SYNTAX = ["@", "<", ">", ",", ";", ":", '"', "\\", "(", ")", "[", "]", ".", " ", "\t", "\r\n", "\n", "\x00",
          "=?utf-8?q?", "?=", "=0A", "Bcc: ", "example.org", "xn--bcher-kva.example", "bücher.example",
          "[127.0.0.1]", "[IPv6:::1]", "a", "bob", "b.o.b", "+tag", "undisclosed-recipients:;", "\u2028", "é"]
# (no "=?" in a local part: it would read as an encoded word in the header, so it is refused)
LOCAL = st.from_regex(r"\A[a-z0-9!#$%&'*+/=?^_`{|}~-]{1,12}(\.[a-z0-9_+-]{1,8}){0,2}\Z").filter(
    lambda local: "=?" not in local)
DOMAIN = st.one_of(st.from_regex(r"\A([a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?\.){1,3}[a-z]{2,6}\Z"),
                   st.sampled_from(["bücher.example", "例え.テスト", "[192.0.2.1]", "[IPv6:2001:db8::1]"]))
NAME = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=12).filter(
    lambda name: "=?" not in name)  # (line breaks and encoded words in names are the messy cases)


@st.composite
def valid_address(draw) -> str:
    """A well-formed address, with or without a display name."""
    spec = f"{draw(LOCAL)}@{draw(DOMAIN)}"
    form = draw(st.sampled_from(["bare", "angle", "quoted"]))
    if form == "bare":
        return spec
    if form == "angle":
        return f"<{spec}>"
    name = draw(NAME)
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + f'" <{spec}>'


MESSY = st.lists(st.one_of(st.sampled_from(SYNTAX), st.text(max_size=6), valid_address()), max_size=8).map("".join)
FIELD = st.one_of(st.none(), MESSY, st.lists(st.one_of(MESSY, valid_address()), max_size=3),
                  st.lists(valid_address(), min_size=1, max_size=3).map(", ".join))


def expected_envelope(fields: dict) -> tuple[list[str], list[str]] | str:
    """(envelope recipients, header mailboxes) the fields parse to, or the field that is refused."""
    parsed = {}
    for name in ("from", "to", "cc", "bcc"):
        try:
            parsed[name] = [a.addr_spec for a in parse_address_list(fields.get(name), name)]
        except InvalidRequest:
            return name
    envelope = list(dict.fromkeys(parsed["to"] + parsed["cc"] + parsed["bcc"]))
    return envelope, parsed["to"] + parsed["cc"]


def check(mail_server, fields: dict) -> None:
    request = {k: v for k, v in fields.items() if v is not None}
    expected = expected_envelope(fields)
    got = send_or_refuse(mail_server, request, recipients=None)
    if got is None:
        return  # send_or_refuse checked: -2 and no transaction
    assert not isinstance(expected, str), f"accepted although {expected} does not parse"
    envelope, in_headers = expected
    assert envelope, "accepted with no recipient"
    assert got.rcpt_tos == envelope
    assert all(addr.isascii() and addr.count("@") >= 1 for addr in got.rcpt_tos)
    message = parse(got.raw)
    shown = [a.addr_spec for name in ("To", "Cc") if message[name] is not None for a in message[name].addresses]
    assert shown == in_headers, (shown, in_headers, got.raw[:1500])
    assert message["Bcc"] is None
    hidden = set(got.rcpt_tos) - set(in_headers)
    header_block = got.raw.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace").lower()
    for address in hidden:
        whole = re.compile(r"(?<![\w.+=-])" + re.escape(address.lower()) + r"(?![\w.-])")
        assert not whole.search(header_block), f"bcc {address} leaked into the headers"


@PROPERTY
@given(to=FIELD, cc=FIELD, bcc=FIELD)
@example(to='"a@b.org, c@d.org" <e@f.org>', cc=None, bcc=None)
@example(to="a@b.org\r\nBcc: evil@attacker.example", cc=None, bcc=None)
@example(to='=?utf-8?q?a=0D=0ABcc:_x@y.org?= <a@b.org>', cc=None, bcc=None)
@example(to='"=?utf-8?q?x=0D=0AX-Injected:_1?=" <a@b.org>', cc=None, bcc=None)
@example(to="=?utf-8?q?evil?=@b.org", cc=None, bcc=None)
@example(to='"=?utf-8?q?boss=40corp.example=2C?=" <a@b.org>', cc="=?utf-8?b?Ow==?= <c@d.org>, e@f.org", bcc=None)
@example(to=None, cc=None, bcc="secret@example.org, Secret Name <s2@example.org>")
@example(to="a@b.org", cc="a@b.org", bcc="A <a@b.org>")
@example(to="undisclosed-recipients:;", cc=None, bcc=None)
@example(to="a@b.org (comment, with comma)", cc=None, bcc=None)
@example(to=None, cc='"Zoë\xa0Ørsted" <zoe.oersted.long.local.part@example.org>, bob@example.org', bcc=None)
def test_any_recipients_are_delivered_exactly_or_refused(mail_server, to, cc, bcc):
    check(mail_server, {"to": to, "cc": cc, "bcc": bcc})


@PROPERTY
@given(sender=MESSY, to=st.lists(valid_address(), min_size=1, max_size=3))
@example(sender='"x\r\nBcc: y@z.org" <a@b.org>', to=["c@d.org"])
@example(sender='"@@@@@example.org' + "x" * 56 + '" <z@example.org>', to=["c@d.org"])
def test_any_sender_is_used_as_given_or_refused(mail_server, sender, to):
    fields = {"from": sender, "to": to}
    expected = expected_envelope(fields)
    got = send_or_refuse(mail_server, fields, recipients=None)
    if got is None:
        return
    assert not isinstance(expected, str), f"accepted although {expected} does not parse"
    [address] = parse_address_list(sender, "from")
    assert got.mail_from == address.addr_spec
    [shown] = parse(got.raw)["From"].addresses
    assert shown.addr_spec == address.addr_spec


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(to=st.lists(valid_address(), min_size=1, max_size=4), bcc=st.lists(valid_address(), max_size=3))
def test_well_formed_recipients_are_always_accepted(mail_server, to, bcc):
    expected = expected_envelope({"to": to, "bcc": bcc})
    assert not isinstance(expected, str), f"a well-formed address in {expected} was refused"
    got = send_or_refuse(mail_server, {"to": to, "bcc": bcc}, recipients=expected[0])
    assert got is not None


LINE_BREAKS = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=30), q=st.booleans(),
       around=st.tuples(st.text(max_size=5), st.text(max_size=5)))
@example(text="\r\nBcc: x@y.org", q=True, around=("", ""))
def test_a_line_break_in_an_encoded_word_is_a_line_break(text, q, around):
    """refuse_line_breaks sees through RFC 2047, which the email package decodes when it writes."""
    data = text.encode("utf-8")
    word = ("=?utf-8?q?" + "".join(f"={b:02X}" for b in data) if q else
            "=?utf-8?b?" + base64.b64encode(data).decode()) + "?="
    value = f"{around[0]} {word} {around[1]}"
    breaks = any(c in LINE_BREAKS for c in text + value)
    try:
        refuse_line_breaks(value, "subject")
    except InvalidRequest as exc:
        assert breaks and exc.message == "line break in subject"
    else:
        assert not breaks
