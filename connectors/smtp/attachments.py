"""Attachments and body files: where they may come from, how big they may be, and loading them.

An attachment is a file path, a ``file://`` URL, an ``http(s)://`` URL, or an inline object
``{"filename", "content" (base64), "content-type"}``. Files (and ``body-file``) must lie under
one of the connector's ``attachment-roots`` once symlinks are resolved, else -9; a missing file
is -3. Each attachment is at most ``attachment_size`` MB (1 MB = 1,048,576 bytes), else -7.

Every check that needs no network runs before anything is read or fetched (file sizes by
``stat``, inline sizes from the base64 length); a URL is read only up to the limit. So a bad
input anywhere in the list fails the request before a message is built. URLs are fetched by
:mod:`connectors.smtp.fetch`: http(s) only, never to loopback or private addresses unless the
config says ``attachment-allow-private: true`` (-9), at most 5 redirects, within the timeout.
"""

from __future__ import annotations

import binascii
import logging
import mimetypes
import os
import posixpath
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from connectors.addresses import refuse_line_breaks
from connectors.smtp.fetch import Network, fetch, parse_allowed_networks
from connectors.smtp.schema import DEFAULT_ATTACHMENT_ROOTS, DEFAULT_ATTACHMENT_SIZE_MB
from runtime.errors import Forbidden, InvalidRequest, LimitExceeded, NotFound

__all__ = ["Attachment", "AttachmentRules", "load_attachments", "read_body_file", "MB"]

logger = logging.getLogger(__name__)

MB = 1024 * 1024
_MIME_TYPE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$")


@dataclass(frozen=True)
class Attachment:
    """One loaded attachment: the name the recipient sees, its MIME type and its bytes."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class AttachmentRules:
    """The limits attachments are checked against: allowed roots, size cap, network timeout.

    >>> rules = AttachmentRules.from_settings({"attachment_size": 2}, timeout_s=5.0)
    >>> rules.limit_bytes
    2097152
    """

    roots: tuple[Path, ...]
    limit_mb: float
    timeout_s: float
    allow_private: "bool | tuple[Network, ...]" = False  # True, or the private networks allowed
    deadline: float | None = None  # time.monotonic() by which every fetch must be done

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, timeout_s: float,
                      deadline: float | None = None) -> "AttachmentRules":
        """Read ``attachment-roots`` (relative to the working directory), ``attachment_size`` and
        ``attachment-allow-private``."""
        roots = settings.get("attachment-roots") or list(DEFAULT_ATTACHMENT_ROOTS)
        resolved = tuple(Path(os.path.realpath(os.path.abspath(root))) for root in roots)
        return cls(resolved, float(settings.get("attachment_size", DEFAULT_ATTACHMENT_SIZE_MB)), timeout_s,
                   parse_allowed_networks(settings.get("attachment-allow-private")), deadline)

    @property
    def limit_bytes(self) -> int:
        """The per-attachment limit in bytes."""
        return int(self.limit_mb * MB)

    def check_size(self, name: str, size: int) -> None:
        """Raise LimitExceeded (-7) when ``size`` bytes is over the limit."""
        if size > self.limit_bytes:
            raise LimitExceeded(f"attachment {name} is {size / MB:.1f} MB; the limit is {self.limit_mb:g} MB")

    def local_path(self, given: str, field: str) -> Path:
        """The real path of a file path or ``file://`` URL, checked against the roots.

        Outside every root (after resolving symlinks) is -9, even when the file does not exist,
        so the answer does not reveal what exists elsewhere; then missing is -3.
        """
        path = given
        if given.lower().startswith("file:"):
            parsed = urllib.parse.urlsplit(given)
            if parsed.netloc not in ("", "localhost"):
                raise InvalidRequest(f"{field}: a file URL must name a local file: {given}")
            path = urllib.request.url2pathname(parsed.path)
        if "\x00" in path:
            raise InvalidRequest(f"{field}: invalid path {given!r}")
        real = Path(os.path.realpath(os.path.abspath(path)))
        if not any(real == root or real.is_relative_to(root) for root in self.roots):
            raise Forbidden(f"attachment path outside the allowed roots: {given}")
        if not real.exists():
            raise NotFound(f"attachment not found: {given}")
        if not real.is_file():
            raise InvalidRequest(f"{field}: not a regular file: {given}")
        return real

    def read_file(self, real: Path, name: str) -> bytes:
        """Read a checked file, re-checking its size on the open descriptor."""
        try:
            with open(real, "rb") as handle:
                self.check_size(name, os.fstat(handle.fileno()).st_size)
                data = handle.read(self.limit_bytes + 1)
        except OSError as exc:
            raise NotFound(f"attachment cannot be read: {name}: {exc.strerror}") from exc
        self.check_size(name, len(data))
        return data


def _guess_type(filename: str) -> str:
    guessed = mimetypes.guess_type(filename, strict=False)[0] or "application/octet-stream"
    # message/* and multipart/* parts may not be base64-encoded (RFC 2046); send them as bytes.
    if guessed.startswith(("message/", "multipart/")):
        return "application/octet-stream"
    return guessed


def _inline_size(content: str) -> int:
    compact = re.sub(r"\s+", "", content)
    return len(compact) * 3 // 4 - compact[-2:].count("=")


class _Plan:
    """One attachment after the checks that need no I/O beyond ``stat``."""

    def __init__(self, field: str, kind: str, source: str, filename: str = "", content_type: str = "") -> None:
        self.field, self.kind, self.source = field, kind, source
        self.filename, self.content_type = filename, content_type
        self.path: Path | None = None


def _plan(spec: Any, field: str, rules: AttachmentRules) -> _Plan:
    if isinstance(spec, Mapping):
        filename = str(spec["filename"])
        refuse_line_breaks(filename, f"{field}.filename")
        content_type = str(spec.get("content-type") or _guess_type(filename))
        refuse_line_breaks(content_type, f"{field}.content-type")
        if not _MIME_TYPE.match(content_type):
            raise InvalidRequest(f"{field}: invalid content-type {content_type!r}")
        rules.check_size(filename, _inline_size(spec["content"]))
        return _Plan(field, "inline", spec["content"], filename, content_type.lower())
    given = str(spec)
    refuse_line_breaks(given, field)
    is_url = "://" in given or given.lower().startswith("file:")
    scheme = urllib.parse.urlsplit(given).scheme.lower() if is_url else ""
    if scheme in ("http", "https"):
        return _Plan(field, "url", given)
    if is_url and scheme != "file":
        raise InvalidRequest(f"{field}: unsupported attachment URL scheme {scheme!r}")
    plan = _Plan(field, "file", given)
    plan.path = rules.local_path(given, field)
    shown = urllib.parse.unquote(urllib.parse.urlsplit(given).path) if is_url else given
    plan.filename = posixpath.basename(shown) or plan.path.name
    refuse_line_breaks(plan.filename, f"{field} file name")
    rules.check_size(plan.filename, plan.path.stat().st_size)
    plan.content_type = _guess_type(plan.filename)
    return plan


def _fetch(plan: _Plan, rules: AttachmentRules) -> Attachment:
    fetched = fetch(plan.source, rules, plan.field)
    declared = fetched.declared_type
    content_type = declared if declared and _MIME_TYPE.match(declared) else _guess_type(fetched.name)
    if content_type.startswith(("message/", "multipart/")):
        content_type = "application/octet-stream"
    return Attachment(fetched.name, content_type, fetched.data)


def _load(plan: _Plan, rules: AttachmentRules) -> Attachment:
    if plan.kind == "inline":
        try:
            # b64decode(validate=True) is this call after an ASCII copy of the whole text; binascii
            # reads an ASCII str in place.
            data = binascii.a2b_base64(re.sub(r"\s+", "", plan.source), strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(f"{plan.field}: content is not valid base64") from exc
        rules.check_size(plan.filename, len(data))
        return Attachment(plan.filename, plan.content_type, data)
    if plan.kind == "url":
        return _fetch(plan, rules)
    assert plan.path is not None
    return Attachment(plan.filename, plan.content_type, rules.read_file(plan.path, plan.filename))


def load_attachments(specs: Sequence[Any] | None, rules: AttachmentRules) -> list[Attachment]:
    """Check every attachment (roots, existence, size), then load them in order.

    Raises Forbidden (-9), NotFound (-3), LimitExceeded (-7) or InvalidRequest (-2) naming the
    attachment; fetching a URL may also raise Forbidden (-9, a private address or a redirect off
    http(s)), ConnectFailed (-4), TimedOut (-6), RemoteRefused (-1).
    """
    plans = [_plan(spec, f"attachments[{index}]", rules) for index, spec in enumerate(specs or [])]
    return [_load(plan, rules) for plan in plans]


def read_body_file(given: str, rules: AttachmentRules) -> str:
    """The text of ``body-file``: same root and size rules as attachments, UTF-8 encoded."""
    refuse_line_breaks(given, "body-file")
    real = rules.local_path(given, "body-file")
    data = rules.read_file(real, posixpath.basename(given) or real.name)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"body-file {given} is not UTF-8 text (byte {exc.start})") from exc
