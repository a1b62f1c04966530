"""Address parsing shared by the mail connectors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.addresses import ascii_domain, parse_address, parse_address_list, refuse_line_breaks
from runtime.errors import InvalidRequest


@pytest.mark.parametrize("text,display,spec", [
    ("a@example.org", "", "a@example.org"),
    ("  Jane Doe <jane@example.org> ", "Jane Doe", "jane@example.org"),
    ('"Doe, Jane" <jane@example.org>', "Doe, Jane", "jane@example.org"),
    ('"Say \\"hi\\"" <x@example.org>', 'Say "hi"', "x@example.org"),
    ("<bare@example.org>", "", "bare@example.org"),
    ("first.last+tag@sub.example.co.uk", "", "first.last+tag@sub.example.co.uk"),
    ('"with space"@example.org', "", '"with space"@example.org'),
    ("ops@localhost", "", "ops@localhost"),
    ("x@[192.0.2.1]", "", "x@[192.0.2.1]"),
    ("x@[IPv6:2001:db8::1]", "", "x@[IPv6:2001:db8::1]"),
    ("Zoë <zoe@bücher.example>", "Zoë", "zoe@xn--bcher-kva.example"),
])
def test_valid_addresses(text: str, display: str, spec: str) -> None:
    address = parse_address(text, "to")
    assert (address.display_name, address.addr_spec) == (display, spec)


@pytest.mark.parametrize("text", [
    "a@", "@example.org", "plain", "a@b@c.org", "a@-x.org", "a@x..org", "a@x.org.", "ä@example.org",
    "a b@example.org", "<>", "Name <a@x.org", "Name a@x.org>", "a@[999.1.1.1]", "a@" + "x" * 64 + ".org",
    "x" * 65 + "@example.org", 'Na"me <a@x.org>', "a@exa mple.org", "tab\t<a@x.org>",
    "=?utf-8?q?bob?=@example.org",
])
def test_invalid_addresses_name_field_and_text(text: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_address(text, "cc")
    assert str(caught.value) == f"invalid address in cc: {text.strip()!r}"
    assert caught.value.exit_code == -2


def test_lists_and_comma_strings() -> None:
    parsed = parse_address_list(['"Doe, J" <j@x.org>, k@y.org', "l@z.org"], "to")
    assert [a.addr_spec for a in parsed] == ["j@x.org", "k@y.org", "l@z.org"]
    assert parse_address_list("a@x.org, ,b@x.org,", "to")[1].addr_spec == "b@x.org"
    assert parse_address_list(None, "to") == [] and parse_address_list("", "to") == []
    with pytest.raises(InvalidRequest, match="invalid address in bcc: 5"):
        parse_address_list([5], "bcc")


@pytest.mark.parametrize("value", ["a@x.org\r\nBcc: v@x.org", "a@x.org\n", "\ra@x.org"])
def test_line_breaks_are_refused(value: str) -> None:
    with pytest.raises(InvalidRequest, match="^line break in reply-to$"):
        parse_address_list(value, "reply-to")
    with pytest.raises(InvalidRequest, match="^line break in from$"):
        parse_address(value, "from")
    with pytest.raises(InvalidRequest, match="^line break in subject$"):
        refuse_line_breaks(value, "subject")


def test_ascii_domain() -> None:
    assert ascii_domain("Example.ORG") == "Example.ORG"
    assert ascii_domain("münchen.de") == "xn--mnchen-3ya.de"
    for bad in ("", "a..b", "-a.b", "a.b.", "x" * 64 + ".org", "[1.2.3]"):
        with pytest.raises(ValueError):
            ascii_domain(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_parses_to_clean_ascii_addresses_or_is_refused(text: str) -> None:
    try:
        addresses = parse_address_list(text, "to")
    except InvalidRequest as exc:
        assert str(exc).startswith(("invalid address in to: ", "line break in to"))
        return
    for address in addresses:
        assert address.addr_spec.isascii()
        assert "\r" not in str(address) and "\n" not in str(address)
        assert "@" in address.addr_spec
