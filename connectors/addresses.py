"""Mail addresses as users write them: parsing, checking and IDNA, shared by the mail connectors.

A field (``to``, ``cc``, ...) holds a list of addresses or one string of comma-separated
addresses; each address may carry a display name (``"Doe, Jane" <jane@example.org>``).
Parsing is a small, strict splitter rather than :func:`email.utils.getaddresses`, which quietly
accepts or mangles malformed input: every address must be a plain ``local@domain`` after the
display name is taken off, or the whole request is refused naming the field and the address.

Non-ASCII domains are converted to their punycode (IDNA) form, so the SMTP envelope and the
headers carry ASCII only; non-ASCII display names are left to the ``email`` package, which
encodes them per RFC 2047.

>>> a = parse_address('Jöhn Doe <john@bücher.example>', "from")
>>> a.addr_spec
'john@xn--bcher-kva.example'
>>> [x.addr_spec for x in parse_address_list('"Doe, Jane" <jane@x.org>, bob@y.org', "to")]
['jane@x.org', 'bob@y.org']
"""

from __future__ import annotations

import email._encoded_words as _encoded_words
import ipaddress
import re
from email.headerregistry import Address
from typing import Iterable

from runtime.errors import InvalidRequest

__all__ = ["Address", "parse_address", "parse_address_list", "ascii_domain", "refuse_line_breaks"]

# RFC 5322 atext, for the dot-atom form of a local part.
_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What str.splitlines() ends a line at: CR and LF, and VT, FF, FS, GS, RS, NEL, U+2028, U+2029.
# The email package refuses header values holding any of them with a bare ValueError.
_LINE_BREAK = re.compile("[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# An encoded word (charset, q or b, text), found at every "=?" by the lookahead, overlaps included.
_ENCODED_WORD = re.compile(r"(?==\?([^?]*)\?([bBqQ])\?([^?]*)\?=)")


def _encoded_words_text(value: str) -> str:
    """The decoded text of every RFC 2047 encoded word that ``value`` may hold, joined.

    The email package decodes ``=?charset?q|b?...?=`` in any header value it is given as text
    (even in a quoted display name) and writes the decoded text back out when it folds the
    header; a CR or LF hidden in an encoded word would then reach the wire raw (CVE-2024-6923 on
    Pythons before 3.11.10/3.12.5). Every ``=?`` is tried, overlapping ones too, so this finds
    at least what the parser decodes.
    """
    found: list[str] = []
    for match in _ENCODED_WORD.finditer(value):
        try:
            found.append(_encoded_words.decode("=?{}?{}?{}?=".format(*match.groups()))[0])
        except Exception:  # not an encoded word after all: the parser leaves it as text
            pass
    return "".join(found)


def _decode_display_name(name: str, field: str) -> str:
    """``name`` with its RFC 2047 encoded words decoded, as a reader would show it.

    The email package decodes an encoded word in a display name it is given and writes the
    decoded text out unquoted, so ``=?utf-8?q?a=2C_b?=`` became the two mailboxes ``a, b`` in
    the header. Decoded here, the name is quoted or re-encoded as its text needs.
    """
    for _ in range(4):
        decoded = _ENCODED_WORD_RUN.sub(_decode_run, name)
        if decoded == name:
            return name
        name = decoded
    raise InvalidRequest(f"invalid display name in {field}: encoded words nested too deep")


def _decode_run(match: re.Match[str]) -> str:
    words = re.findall(r"=\?[^?]*\?[bBqQ]\?[^?]*\?=", match.group())
    try:
        return "".join(_encoded_words.decode(word)[0] for word in words)  # spaces between words drop
    except Exception:  # not encoded words after all: the parser leaves them as text
        return match.group()


# One encoded word, or several separated by whitespace only (RFC 2047: that whitespace is dropped).
_ENCODED_WORD_RUN = re.compile(r"=\?[^?]*\?[bBqQ]\?[^?]*\?=(?:\s+=\?[^?]*\?[bBqQ]\?[^?]*\?=)*")


def refuse_line_breaks(value: str, field: str) -> None:
    """Raise InvalidRequest (-2) ``line break in <field>`` when ``value`` holds a line break.

    A CR or LF in a header value would let a caller inject headers or a whole second message,
    so it is refused outright rather than folded or stripped; so are the other characters that
    end a line for Python (VT, FF, NEL, U+2028, ...), and line breaks inside RFC 2047 encoded
    words, which the email package would decode and write out raw.

    >>> refuse_line_breaks("=?utf-8?q?Hi=0D=0ABcc:_x@y.org?=", "subject")
    Traceback (most recent call last):
    ...
    runtime.errors.InvalidRequest: line break in subject
    """
    text = value
    for _ in range(4):  # an encoded word may hold another, which a reader decodes in turn
        if _LINE_BREAK.search(text):
            raise InvalidRequest(f"line break in {field}")
        if "=?" not in text:
            return
        text = _encoded_words_text(text)


def ascii_domain(domain: str) -> str:
    """Return ``domain`` in ASCII (punycode for internationalized labels); ValueError if invalid.

    Domain literals (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``) are kept as they are once checked.
    """
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        if literal.lower().startswith("ipv6:"):
            ipaddress.IPv6Address(literal[5:])
        else:
            ipaddress.IPv4Address(literal)
        return domain
    if not domain or domain.endswith(".") or len(domain) > 253:
        raise ValueError(domain)
    try:
        encoded = domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(domain) from exc
    if not all(_LABEL.match(label) for label in encoded.split(".")):
        raise ValueError(domain)
    return encoded


def _split(text: str) -> list[str]:
    """Split on commas that are outside quoted strings, angle brackets and comments."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    angle = comment = 0
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and (quoted or comment):
            escaped = True
        elif char == '"' and not comment:
            quoted = not quoted
        elif not quoted:
            if char == "(":
                comment += 1
            elif char == ")" and comment:
                comment -= 1
            elif char == "<":
                angle += 1
            elif char == ">" and angle:
                angle -= 1
            elif char == "," and not angle and not comment:
                parts.append("".join(current))
                current = []
                continue
        current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _unquote(name: str) -> str:
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return re.sub(r"\\(.)", r"\1", name[1:-1])
    if '"' in name:
        raise ValueError(name)
    return name


def _local_part(local: str) -> str:
    # "=?...?=" would be decoded as an RFC 2047 word when the header is written, so the header
    # would name another mailbox than the envelope.
    if "=?" in local:
        raise ValueError(local)
    if len(local) >= 2 and local[0] == local[-1] == '"':
        inner = re.sub(r"\\(.)", r"\1", local[1:-1])
        if not inner or not inner.isascii():
            raise ValueError(local)
        return inner
    if not _ATOM.match(local):
        raise ValueError(local)
    return local


def parse_address(text: str, field: str) -> Address:
    """Parse one address (display name allowed); InvalidRequest naming ``field`` if it is not one."""
    if not isinstance(text, str):
        raise InvalidRequest(f"invalid address in {field}: {text!r}")
    refuse_line_breaks(text, field)
    candidate = text.strip()
    try:
        if _CONTROL.search(candidate):
            raise ValueError(candidate)
        display, spec = "", candidate
        if candidate.endswith(">") and "<" in candidate:
            start = candidate.rindex("<")
            display, spec = _unquote(candidate[:start]), candidate[start + 1:-1].strip()
        if "<" in spec or ">" in spec:
            raise ValueError(spec)
        local, at, domain = spec.rpartition("@")
        if not at or len(local) > 64:
            raise ValueError(spec)
        if "=?" in display:
            display = _decode_display_name(display, field)
            refuse_line_breaks(display, field)
        return Address(display_name=display, username=_local_part(local), domain=ascii_domain(domain))
    except ValueError:
        raise InvalidRequest(f"invalid address in {field}: {candidate!r}") from None


def parse_address_list(value: str | Iterable[str] | None, field: str) -> list[Address]:
    """Parse a list of addresses, or one string of comma-separated addresses.

    Each list item may itself hold several comma-separated addresses. ``None`` or an empty
    value gives an empty list. Errors name ``field`` and the offending address.
    """
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    addresses: list[Address] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidRequest(f"invalid address in {field}: {item!r}")
        refuse_line_breaks(item, field)
        addresses.extend(parse_address(part, field) for part in _split(item))
    return addresses
