"""The message as it goes on the wire, made a slice at a time during DATA instead of held whole.

Why not ``message.as_bytes()``: ``email`` keeps an attachment as its base64 text (a 10 MB file is
a 14 MB string, and a list of 180,000 lines while it is encoded), its generator buffers every
MIME part whole and splits each payload into a list of lines, and ``smtplib`` copies the result
twice more while dot-stuffing it; a 10 MB attachment cost about 67 MB of memory.

So an attachment never becomes text inside the message. :class:`DeferredPayloads` gives its MIME
part (headers as ``email`` writes them for the real bytes) a one-line placeholder for a body;
``email`` writes that small *skeleton* once, before any connection is made (which also checks
that the message can be encoded, fixes its boundaries and gives its size for SIZE); and
:meth:`WireMessage.data_chunks` replaces each placeholder line by the attachment's base64,
encoded from its bytes a slice at a time, exactly as ``email`` would have written it: 57 bytes to
a 76-character line (``max_line_length // 4 * 3`` for the 78 of the SMTP policy), each line ending
in CRLF. What goes on the wire is unchanged, byte for byte; only the attachment's own bytes stay
in memory.

>>> wire = WireMessage(b"Subject: x\\r\\n\\r\\n.hidden\\r\\nend\\r\\n")
>>> wire.size, b"".join(wire.data_chunks())
(28, b'Subject: x\\r\\n\\r\\n..hidden\\r\\nend\\r\\n')
"""

from __future__ import annotations

import binascii
import secrets
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import Policy
from typing import Iterator, Mapping

__all__ = ["DeferredPayloads", "WireMessage", "CHUNK_BYTES"]

# Roughly what one sendall gets: large enough that a 10 MB message is a few hundred calls.
CHUNK_BYTES = 64 * 1024

_CRLF = b"\r\n"


class DeferredPayloads:
    """Attachments whose bytes are kept out of an :class:`~email.message.EmailMessage` until DATA.

    Each placeholder is ``flint-deferred-<128 random bits>-<n>``: no text a caller writes can
    be taken for one. ``policy`` is the message's; its ``max_line_length`` sets the base64 lines.
    """

    def __init__(self, policy: Policy) -> None:
        self._nonce = secrets.token_hex(16)
        self.line_bytes = policy.max_line_length // 4 * 3
        self.payloads: dict[bytes, bytes] = {}

    def add_attachment(self, message: EmailMessage, data: bytes, *, maintype: str, subtype: str,
                       filename: str) -> None:
        """Attach ``data`` to ``message`` as ``message.add_attachment`` does (base64, the same
        headers), with a placeholder line for the encoded text."""
        message.add_attachment(b"", maintype=maintype, subtype=subtype, filename=filename)
        part = message.get_payload()[-1]
        assert isinstance(part, EmailMessage) and part["Content-Transfer-Encoding"] == "base64"
        token = f"flint-deferred-{self._nonce}-{len(self.payloads)}"
        part.set_payload(token + "\n")
        self.payloads[token.encode("ascii")] = data


@dataclass(frozen=True)
class _Payload:
    data: bytes


class WireMessage:
    """A message ready for DATA: its skeleton bytes (CRLF line ends) and the deferred payloads.

    ``line_bytes`` is how many bytes of an attachment go on one base64 line (57 for the SMTP
    policy, as :mod:`email.contentmanager` encodes).
    """

    def __init__(self, skeleton: bytes, payloads: Mapping[bytes, bytes] | None = None, *,
                 line_bytes: int = 57) -> None:
        if line_bytes <= 0 or line_bytes % 3:
            raise ValueError(f"line_bytes must be a positive multiple of 3, not {line_bytes}")
        self.line_bytes = line_bytes
        self._pieces = self._split(skeleton, payloads or {})
        #: Octets of the message as written, before dot-stuffing (what SIZE declares).
        self.size = sum(len(piece) if isinstance(piece, bytes) else _base64_size(piece.data, line_bytes)
                        for piece in self._pieces)

    @classmethod
    def render(cls, message: EmailMessage, deferred: DeferredPayloads | None = None) -> "WireMessage":
        """Write ``message`` (with its policy, CRLF for SMTP) around the placeholders of ``deferred``.

        Raises what ``email`` raises for a message it cannot encode.
        """
        skeleton = message.as_bytes(policy=message.policy)
        if deferred is None or not deferred.payloads:
            return cls(skeleton)
        return cls(skeleton, deferred.payloads, line_bytes=deferred.line_bytes)

    @staticmethod
    def _split(skeleton: bytes, payloads: Mapping[bytes, bytes]) -> list[bytes | _Payload]:
        """The skeleton cut at each placeholder line, the payload in its place."""
        found: list[tuple[int, bytes]] = []
        for token in payloads:
            line = token + _CRLF
            at = skeleton.find(line)
            while at > 0 and skeleton[at - 1:at] != b"\n":  # a placeholder is a whole line
                at = skeleton.find(line, at + 1)
            if at < 0:
                raise ValueError(f"placeholder {token!r} is not a line of the message")
            found.append((at, token))
        pieces: list[bytes | _Payload] = []
        start = 0
        for at, token in sorted(found):
            pieces += [skeleton[start:at], _Payload(payloads[token])]
            start = at + len(token) + len(_CRLF)
        pieces.append(skeleton[start:])
        return [piece for piece in pieces if piece != b""]

    def slices(self) -> Iterator[bytes]:
        """The message as written (no dot-stuffing), in slices that each end at a line end."""
        for piece in self._pieces:
            if isinstance(piece, bytes):
                yield from _slices(piece)
            else:
                yield from _base64_lines(piece.data, self.line_bytes)

    def data_chunks(self) -> Iterator[bytes]:
        """What follows ``DATA``, up to but not including the final ``.``: each line that starts
        with ``.`` gets another (RFC 5321 4.5.2), and the last line ends in CRLF."""
        tail = b""
        for piece in self._pieces:
            if isinstance(piece, bytes):
                for chunk in _slices(piece):
                    chunk = _dot_stuffed(chunk)
                    tail = chunk[-2:] if len(chunk) >= 2 else (tail + chunk)[-2:]
                    yield chunk
            else:  # base64 lines never start with "."
                for chunk in _base64_lines(piece.data, self.line_bytes):
                    tail = chunk[-2:]
                    yield chunk
        if tail != _CRLF:
            yield _CRLF

    def as_bytes(self) -> bytes:
        """The whole message at once (for tests and small messages; sending never needs it)."""
        return b"".join(self.slices())


def _dot_stuffed(lines: bytes) -> bytes:
    r"""``lines`` (starting at a line start) with a ``.`` added before each line's leading ``.``.

    >>> _dot_stuffed(b".a\r\nb.\r\n..c\r\n")
    b'..a\r\nb.\r\n...c\r\n'
    """
    stuffed = lines.replace(b"\n.", b"\n..")  # a fifth of the time of re.sub(rb"(?m)^\.", ...)
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


def _slices(data: bytes) -> Iterator[bytes]:
    """``data`` in slices of about :data:`CHUNK_BYTES`, each ending at a line end (or at the end)."""
    if len(data) <= CHUNK_BYTES:
        if data:
            yield data
        return
    start = 0
    while start < len(data):
        cut = data.find(b"\n", start + CHUNK_BYTES - 1)
        end = len(data) if cut < 0 else cut + 1
        yield data[start:end]
        start = end


def _base64_lines(data: bytes, line_bytes: int) -> Iterator[bytes]:
    """``data`` in base64, ``line_bytes`` bytes to a CRLF-ended line, a slice of lines at a time.

    Every slice but the last is a whole number of lines, and ``line_bytes`` is a multiple of 3,
    so no padding falls inside: the lines are those of encoding each line's bytes alone.
    """
    view = memoryview(data)
    step = max(1, CHUNK_BYTES // (line_bytes * 4 // 3 + 2)) * line_bytes
    width = line_bytes * 4 // 3
    for start in range(0, len(view), step):
        encoded = binascii.b2a_base64(view[start:start + step], newline=False)
        yield _CRLF.join([encoded[i:i + width] for i in range(0, len(encoded), width)]) + _CRLF


def _base64_size(data: bytes, line_bytes: int) -> int:
    """Octets :func:`_base64_lines` writes for ``data``.

    >>> _base64_size(b"x" * 58, 57), len(b"".join(_base64_lines(b"x" * 58, 57)))
    (84, 84)
    """
    full, rest = divmod(len(data), line_bytes)
    size = full * (line_bytes * 4 // 3 + 2)
    if rest:
        size += -(-rest // 3) * 4 + 2
    return size
