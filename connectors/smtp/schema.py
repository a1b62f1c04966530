"""The JSON Schemas of the smtp connector: its config and the request of its ``send`` action.

Config keys hold the server (``target``, ``port``, ``security``, credentials, TLS settings), the
limits (``attachment_size`` in MB per attachment, ``attachment-roots``,
``attachment-allow-private`` for URL attachments on private networks), the retries of a
transaction that failed for now (``retries``, ``retry-backoff`` in ms), an optional default
``from``, and ``capture-dir`` for capture mode. A request may override only the keys in
:data:`REQUEST_OVERRIDABLE`; the other config keys guard the host (see ``Connector.request_overridable``) and are refused
when a request names them, so a flintbit cannot widen its own attachment roots or turn off
certificate checks.
"""

from __future__ import annotations

from typing import Any

from connectors.base import make_request_schema
from connectors.transport import SERVER_PROPERTIES

__all__ = [
    "CONFIG_SCHEMA",
    "SEND_SCHEMA",
    "REQUEST_OVERRIDABLE",
    "CONTENT_TYPES",
    "DEFAULT_ATTACHMENT_ROOTS",
    "DEFAULT_ATTACHMENT_SIZE_MB",
]

CONTENT_TYPES = ("text/html", "text/plain", "multipart/alternative")
DEFAULT_ATTACHMENT_ROOTS = ("var/attachments",)
DEFAULT_ATTACHMENT_SIZE_MB = 10

_ADDRESS = {"type": "string", "minLength": 1, "description": "one address, display name allowed"}

# A list of addresses, or one string of comma-separated addresses.
_ADDRESSES: dict[str, Any] = {
    "if": {"type": "array"},
    "then": {"items": {"type": "string"}},
    "else": {"type": "string"},
}

_INLINE_ATTACHMENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "filename": {"type": "string", "minLength": 1},
        "content": {"type": "string", "description": "base64"},
        "content-type": {"type": "string", "minLength": 3},
    },
    "required": ["filename", "content"],
    "additionalProperties": False,
}

# A file path, a file:// or http(s):// URL, or an inline object.
_ATTACHMENT: dict[str, Any] = {
    "if": {"type": "object"},
    "then": _INLINE_ATTACHMENT,
    "else": {"type": "string", "minLength": 1},
}

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        **SERVER_PROPERTIES,
        "from": _ADDRESS,
        "attachment_size": {"type": "number", "exclusiveMinimum": 0, "description": "MB per attachment"},
        "attachment-roots": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "attachment-allow-private": {
            "if": {"type": "array"},
            "then": {"items": {"type": "string", "minLength": 1}},
            "else": {"type": "boolean"},
            "description": "let http(s) attachments come from loopback, link-local, private, multicast "
                           "addresses: true for any, or a list of networks (10.1.2.0/24) or addresses"},
        "retries": {"type": "integer", "minimum": 0, "maximum": 20,
                    "description": "retries of a transaction that failed for now (4xx, dropped connection)"},
        "retry-backoff": {"type": "integer", "minimum": 0, "description": "ms before the first retry; doubles"},
        "capture-dir": {"type": "string", "minLength": 1,
                        "description": "deliver to a local capture server storing .eml files here"},
    },
    "additionalProperties": False,
    "anyOf": [{"required": ["target"]}, {"required": ["capture-dir"]}],
    "description": "'target' is required (or 'capture-dir' for capture mode)",
}

REQUEST_OVERRIDABLE = frozenset({"target", "port", "security", "username", "password", "timeout", "from"})

_SEND_PROPERTIES: dict[str, Any] = {
    "from": _ADDRESS,
    "to": _ADDRESSES,
    "cc": _ADDRESSES,
    "bcc": _ADDRESSES,
    "reply-to": _ADDRESSES,
    "subject": {"type": "string"},
    "body": {"type": "string"},
    "body-file": {"type": "string", "minLength": 1},
    "text-body": {"type": "string", "description": "the plain part of multipart/alternative"},
    "content-type": {"enum": list(CONTENT_TYPES)},
    "attachments": {"type": "array", "items": _ATTACHMENT},
    "headers": {
        "type": "object",
        "additionalProperties": {"type": ["string", "number"]},
    },
    "importance": {"enum": ["high", "normal", "low", True, False]},
    "sensitivity": {"enum": ["normal", "personal", "private", "confidential"]},
    "read-receipt": {"type": "boolean"},
    "follow-up": {"enum": ["today", "tomorrow"]},
}

SEND_SCHEMA: dict[str, Any] = make_request_schema(
    CONFIG_SCHEMA,
    _SEND_PROPERTIES,
    anyOf=CONFIG_SCHEMA["anyOf"],
    description=CONFIG_SCHEMA["description"],
)
