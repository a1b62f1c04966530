"""What the imap and pop3 connectors share: request schemas, criteria, message shapes, sorting.

Both connectors answer in the Camunda Email connector's shapes (SPEC section 4): a list entry is
``{"messageId", "fromAddress", "subject", "size"}``, a search hit ``{"messageId", "subject"}`` and a
read message the full :func:`message_details`. Dates are ISO 8601 in UTC (``2024-08-19T06:54:28Z``).

Messages are addressed by their ``Message-ID`` header. Two cases need a rule, the same on both
protocols:

* A message without a ``Message-ID`` gets a synthetic one, ``<sha256-…@flint.invalid>``, made from
  its header block (:func:`synthetic_message_id`). It is stable (the same on every list, on IMAP and
  on POP3) and can be passed to ``read``, ``delete`` and ``move`` like a real one.
* Several messages sharing one ``Message-ID`` are copies of one message: ``list`` and ``search``
  show each copy, ``read`` returns the first in mailbox order, ``delete`` and ``move`` act on all.

Search criteria are a leaf ``{"field": "FROM"|"SUBJECT"|"BODY", "value"}`` or a group
``{"operator": "AND"|"OR", "criteria": [...]}`` nested to any depth, validated by the recursive
:data:`CRITERIA_DEFS` schema. A leaf matches when the field contains the value, ignoring case.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from datetime import datetime, timezone
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

from connectors.transport import SERVER_PROPERTIES

__all__ = [
    "ATTACHMENT_CONTENT_LIMIT",
    "CONFIG_SCHEMA",
    "CRITERIA_DEFS",
    "REQUEST_PROPERTIES",
    "REQUEST_OVERRIDABLE",
    "iso_utc",
    "parse_message",
    "header_block",
    "message_id_of",
    "synthetic_message_id",
    "is_synthetic",
    "same_message_id",
    "summary",
    "search_hit",
    "message_details",
    "sent_date",
    "received_date",
    "criteria_fields",
    "criteria_use_body",
    "criteria_match",
    "sort_in_order",
]

logger = logging.getLogger(__name__)

ATTACHMENT_CONTENT_LIMIT = 10 * 1024 * 1024
SYNTHETIC_DOMAIN = "flint.invalid"
_NO_LINE_BREAK = "^[^\r\n]*$"
_FOLDER_PATH = "^[^.\r\n]+(\\.[^.\r\n]+)*$"

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        **SERVER_PROPERTIES,
        "attachment-content-limit": {
            "type": "integer", "minimum": 0,
            "description": "bytes; read includes an attachment's content only up to this size",
        },
    },
    "additionalProperties": False,
}

# Config keys a request may override: the server and credentials, and the attachment content limit.
REQUEST_OVERRIDABLE = frozenset({"target", "port", "security", "username", "password", "timeout",
                                 "attachment-content-limit"})

CRITERIA_DEFS: dict[str, Any] = {
    "criterion": {
        "type": "object",
        "if": {"required": ["operator"]},
        "then": {
            "properties": {
                "operator": {"enum": ["AND", "OR"]},
                "criteria": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/criterion"}},
            },
            "required": ["operator", "criteria"],
            "additionalProperties": False,
        },
        "else": {
            "properties": {
                "field": {"enum": ["FROM", "SUBJECT", "BODY"]},
                "value": {"type": "string", "minLength": 1, "pattern": _NO_LINE_BREAK},
            },
            "required": ["field", "value"],
            "additionalProperties": False,
        },
    }
}

REQUEST_PROPERTIES: dict[str, Any] = {
    "folder": {"type": "string", "pattern": _FOLDER_PATH, "description": "dot-separated path; default INBOX"},
    "max": {"type": "integer", "minimum": 1, "description": "at most this many messages; default 100"},
    "sort-by": {"enum": ["sent-date", "received-date", "size"], "description": "default received-date"},
    "sort-order": {"enum": ["asc", "desc"], "description": "default desc (newest or largest first)"},
    "unseen": {"type": "boolean", "description": "imap only: only messages without the \\Seen flag"},
    "message-id": {"type": "string", "minLength": 1, "pattern": _NO_LINE_BREAK},
    "criteria": {"$ref": "#/$defs/criterion"},
    "from-folder": {"type": "string", "pattern": _FOLDER_PATH},
    "to-folder": {"type": "string", "pattern": _FOLDER_PATH},
}

_PARSER = BytesParser(policy=policy.default)
T = TypeVar("T")


def iso_utc(moment: datetime | None) -> str | None:
    """``2024-08-19T06:54:28Z`` for an aware datetime (naive ones are taken as UTC); None stays None."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = parsedate_to_datetime(str(text).strip())
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def parse_message(raw: bytes) -> EmailMessage:
    """Parse a message (or just its header block) with the modern email policy."""
    return _PARSER.parsebytes(raw)  # type: ignore[return-value]


def header_block(raw: bytes) -> bytes:
    """The header block of ``raw``: its lines up to the first empty one, joined by CRLF."""
    lines: list[bytes] = []
    for line in raw.splitlines():
        if not line.strip(b"\r\n"):
            break
        lines.append(line.rstrip(b"\r\n"))
    return b"\r\n".join(lines)


def synthetic_message_id(raw: bytes) -> str:
    """A stable id for a message without a Message-ID, from the hash of its header block."""
    digest = hashlib.sha256(header_block(raw)).hexdigest()[:32]
    return f"<sha256-{digest}@{SYNTHETIC_DOMAIN}>"


def is_synthetic(message_id: str) -> bool:
    """True when ``message_id`` was made by :func:`synthetic_message_id`."""
    return _bare(message_id).endswith("@" + SYNTHETIC_DOMAIN) and _bare(message_id).startswith("sha256-")


def _bare(message_id: str) -> str:
    text = message_id.strip()
    return text[1:-1].strip() if text.startswith("<") and text.endswith(">") else text


def same_message_id(a: str, b: str) -> bool:
    """True when two Message-IDs name the same message (angle brackets and blanks aside)."""
    return _bare(a) == _bare(b)


def message_id_of(raw: bytes, message: Message | None = None) -> str:
    """The Message-ID header of ``raw`` (its header block suffices), else its synthetic id."""
    message = message if message is not None else parse_message(header_block(raw) + b"\r\n\r\n")
    value = _header_text(message, "Message-ID").strip()
    return value if value else synthetic_message_id(raw)


# The email package's header parser raises on some malformed headers (IndexError, ValueError and
# friends deep inside); a mailbox must still list such a message, so headers are parsed one at a
# time from their raw text, falling back to plain RFC 2047 decoding.
_PARSE_ERRORS = (IndexError, ValueError, TypeError, AttributeError, LookupError)


def _raw_header(message: Message, name: str) -> tuple[str, str] | None:
    for key, raw in message.raw_items():
        if key.lower() == name.lower():
            return key, raw
    return None


def _header_value(message: Message, name: str, raw: str) -> str:
    """A header's text: RFC 2047 decoded, unfolded, without surrounding blanks; never raises."""
    try:
        text = str(message.policy.header_fetch_parse(name, raw))
    except _PARSE_ERRORS:
        text = _decode_words(raw)
    return re.sub(r"\r?\n(?=[ \t])", "", text).strip()


def _header_text(message: Message, name: str) -> str:
    """The decoded text of the first ``name`` header, or "" when there is none."""
    item = _raw_header(message, name)
    return "" if item is None else _header_value(message, *item)


def _decode_words(text: str) -> str:
    try:
        return str(make_header(decode_header(text)))
    except (LookupError, ValueError, UnicodeError):
        return text


def _from_address(message: Message) -> str:
    """The address of the first sender (``alice@example.org``), else the From header's text."""
    item = _raw_header(message, "From")
    if item is None:
        return ""
    try:
        addresses = getattr(message.policy.header_fetch_parse(*item), "addresses", ())
        if addresses and addresses[0].addr_spec and addresses[0].addr_spec != "<>":
            return addresses[0].addr_spec
    except _PARSE_ERRORS:
        pass
    return _header_value(message, *item)


def summary(raw_header: bytes, size: int) -> dict[str, Any]:
    """A list entry from a message's header block: ``{messageId, fromAddress, subject, size}``."""
    message = parse_message(header_block(raw_header) + b"\r\n\r\n")
    return {
        "messageId": message_id_of(raw_header, message),
        "fromAddress": _from_address(message),
        "subject": _header_text(message, "Subject"),
        "size": size,
    }


def search_hit(raw_header: bytes) -> dict[str, Any]:
    """A search entry from a message's header block: ``{messageId, subject}``."""
    message = parse_message(header_block(raw_header) + b"\r\n\r\n")
    return {"messageId": message_id_of(raw_header, message), "subject": _header_text(message, "Subject")}


def sent_date(message: Message) -> datetime | None:
    """The Date header as an aware datetime, or None when missing or unreadable."""
    return _parse_date(_header_text(message, "Date"))


def received_date(message: Message) -> datetime | None:
    """When the message arrived as its headers tell (POP3 has no arrival time).

    The newest ``Received`` header (the first) carries the date after its last ``;``; without one
    the ``Date`` header stands in.
    """
    received = message.get_all("Received") or []
    if received:
        stamp = _parse_date(str(received[0]).rpartition(";")[2])
        if stamp is not None:
            return stamp
    return sent_date(message)


def _text_of(part: Message) -> str:
    """A text part's decoded content with ``\n`` line ends (the wire has CRLF)."""
    try:
        text = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, ValueError, AttributeError):  # unknown charset, broken encoding
        payload = part.get_payload(decode=True) or b""
        text = payload.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n")


def _leaves(part: Message) -> Iterator[Message]:
    if part.get_content_maintype() == "multipart" and part.is_multipart():
        for sub in part.get_payload():
            yield from _leaves(sub)
    else:
        yield part


def _payload_bytes(part: Message) -> bytes:
    if part.get_content_maintype() == "message" and part.is_multipart():
        inner = part.get_payload(0)
        return inner.as_bytes(policy=policy.SMTP)
    return part.get_payload(decode=True) or b""


def _attachments(message: EmailMessage, bodies: Sequence[Message | None], limit: int) -> list[dict[str, Any]]:
    found = []
    for part in _leaves(message):
        if any(part is body for body in bodies):
            continue
        filename = part.get_filename()
        if part.get_content_type() in ("text/plain", "text/html") and not filename \
                and part.get_content_disposition() != "attachment":
            continue  # a further inline text part, not an attachment
        if filename and "=?" in filename:
            filename = _decode_words(filename)
        payload = _payload_bytes(part)
        entry: dict[str, Any] = {"filename": filename, "content-type": part.get_content_type(), "size": len(payload)}
        if len(payload) <= limit:
            entry["content"] = base64.b64encode(payload).decode("ascii")
        else:
            logger.debug("attachment %s is %d bytes, over the content limit %d", filename, len(payload), limit)
        found.append(entry)
    return found


def message_details(raw: bytes, *, size: int, received: datetime | None,
                    content_limit: int = ATTACHMENT_CONTENT_LIMIT) -> dict[str, Any]:
    """The read shape of a whole message; ``received`` None means "as the headers tell"."""
    message = parse_message(raw)
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    headers = [{"header": name, "value": _header_value(message, name, value)} for name, value in message.raw_items()]
    return {
        "messageId": message_id_of(raw, message),
        "fromAddress": _from_address(message),
        "subject": _header_text(message, "Subject"),
        "size": size,
        "plainTextBody": _text_of(plain) if plain is not None else None,
        "htmlBody": _text_of(html) if html is not None else None,
        "headers": headers,
        "sentDate": iso_utc(sent_date(message)),
        "receivedDateTime": iso_utc(received if received is not None else received_date(message)),
        "attachments": _attachments(message, (plain, html), content_limit),
    }


def criteria_fields(raw: bytes, *, with_body: bool) -> dict[str, str]:
    """The texts a criteria leaf looks at: FROM, SUBJECT and (when asked) BODY, all text parts."""
    message = parse_message(raw)
    fields = {"FROM": _header_text(message, "From"), "SUBJECT": _header_text(message, "Subject"), "BODY": ""}
    if with_body:
        texts = [_text_of(p) for p in _leaves(message) if p.get_content_maintype() == "text"]
        fields["BODY"] = "\n".join(texts)
    return fields


def criteria_use_body(criterion: Mapping[str, Any]) -> bool:
    """True when any leaf of ``criterion`` looks at BODY (then the whole message is needed)."""
    if "operator" in criterion:
        return any(criteria_use_body(c) for c in criterion["criteria"])
    return criterion["field"] == "BODY"


def criteria_match(criterion: Mapping[str, Any], fields: Mapping[str, str]) -> bool:
    """Evaluate validated criteria against :func:`criteria_fields` (substring, ignoring case)."""
    if "operator" in criterion:
        results: Iterable[bool] = (criteria_match(c, fields) for c in criterion["criteria"])
        return all(results) if criterion["operator"] == "AND" else any(results)
    return criterion["value"].casefold() in fields.get(criterion["field"], "").casefold()


def sort_in_order(items: Sequence[T], key: Callable[[T], Any], order: str) -> list[T]:
    """Sort by ``key`` (None sorts first), ``desc`` reversed; ties keep mailbox order (RFC 5256)."""
    def safe(item: T) -> tuple[int, Any]:
        value = key(item)
        return (0, 0) if value is None else (1, value)

    return sorted(items, key=safe, reverse=(order == "desc"))
