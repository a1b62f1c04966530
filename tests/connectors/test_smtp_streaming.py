"""Large messages go on the wire a slice at a time: the same bytes, a bounded memory cost.

The attachment's base64 is written during DATA from its bytes (:mod:`connectors.smtp.wire`);
these tests check, against real aiosmtpd servers, that what arrives is what ``email`` would
have written, that dot-stuffing survives slicing, that SIZE is exact, that a reset while the
attachment streams is retried, and that a 10 MiB attachment costs the sender about its own
size in memory, not several times it, whether it comes from a file, a URL or the request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from connectors.smtp.attachments import Attachment
from connectors.smtp.message import POLICY, build_message, read_addressing
from connectors.smtp.wire import CHUNK_BYTES, DeferredPayloads, WireMessage
from runtime.errors import FlintError
from tests.servers.raw_smtp import RawBehaviour, RawSmtpServers
from tests.servers.smtp import LOOPBACK_FETCHES, HttpFiles, RecordingHandler, SmtpServer, SmtpServers, send

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
MAIL = {"from": "ops@example.org", "to": "a@example.org", "subject": "report"}
# Lines that dot-stuffing must double on the wire and the server must undo.
DOTTED = ".\n.leading dot\n..two dots\nmiddle . dot\n. space\n"


def assert_same(got: bytes | str, want: bytes | str, what: str) -> None:
    """``got == want``, else an error showing the first difference (pytest would diff megabytes)."""
    if got == want:
        return
    at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    raise AssertionError(f"{what} differs at offset {at} (lengths {len(got)} and {len(want)}): "
                         f"{got[max(0, at - 40):at + 40]!r} != {want[max(0, at - 40):at + 40]!r}")


class OptionsRecorder(RecordingHandler):
    """Also records the MAIL FROM options (SIZE=...) of each message received."""

    def __init__(self) -> None:
        super().__init__()
        self.options: list[list[str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.options.append(list(envelope.mail_options))
        return await super().handle_DATA(server, session, envelope)


def test_a_10_mib_attachment_arrives_byte_for_byte_and_dotted_lines_survive(
        smtp_servers: SmtpServers, attachments_dir: Path) -> None:
    handler = OptionsRecorder()
    server = smtp_servers.start(handler=handler)
    data = os.urandom(10 * MIB)
    (attachments_dir / "report.bin").write_bytes(data)
    body = DOTTED * 3 + "end\n"

    out = send(server.config(), timeout_ms=60000, **MAIL, content_type="text/plain", body=body,
               attachments=["var/attachments/report.bin"])

    assert out["result"] == "success"
    [got] = server.received
    message = got.message
    [text, attachment] = message.iter_parts()
    assert_same(text.get_content().replace("\r\n", "\n"), body, "the body")
    assert b"\r\n.\r\n.leading dot\r\n..two dots\r\nmiddle . dot\r\n. space\r\n" in got.raw  # as written
    assert attachment.get_filename() == "report.bin"
    assert attachment.get_content_type() == "application/octet-stream"
    assert attachment["Content-Transfer-Encoding"] == "base64"
    assert_same(attachment.get_payload(decode=True), data, "the attachment")
    lines = got.raw.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    encoded = [line for line in lines if len(line) == 76]
    assert len(encoded) == len(data) // 57  # 57 bytes to a 76-character line, as email writes them
    assert handler.options == [[f"SIZE={len(got.raw)}"]]


def test_a_body_over_many_slices_keeps_every_dotted_line(smtp_server: SmtpServer) -> None:
    body = DOTTED * (4 * CHUNK_BYTES // len(DOTTED))

    send(smtp_server.config(), **MAIL, content_type="text/plain", body=body)

    [got] = smtp_server.received
    assert_same(got.message.get_content().replace("\r\n", "\n"), body, "the body")


def _messages(attachments: list[Attachment]) -> tuple[WireMessage, bytes]:
    """The same request built twice: streamed (placeholders) and as ``email`` writes it whole."""
    request = {**MAIL, "to": "Zoë <a@example.org>", "content-type": "multipart/alternative",
               "subject": "Résumé",
               "text-body": DOTTED * (3 * CHUNK_BYTES // len(DOTTED))}  # dotted lines across slices
    addressing = read_addressing(request)
    now = datetime(2026, 11, 21, 9, 0, tzinfo=timezone.utc)
    deferred = DeferredPayloads(POLICY)
    streamed = build_message(request, addressing, [], "<p>html</p>", attachments, now=now, deferred=deferred)
    wire = WireMessage.render(streamed, deferred)  # fixes the boundaries
    whole = build_message(request, addressing, [], "<p>html</p>", attachments, now=now)
    whole.replace_header("Message-ID", streamed["Message-ID"])
    for mine, theirs in zip(whole.walk(), streamed.walk(), strict=True):
        if theirs.get_boundary():
            mine.set_boundary(theirs.get_boundary())
    return wire, whole.as_bytes(policy=POLICY)


def test_the_streamed_message_is_what_email_writes() -> None:
    sizes = [0, 1, 2, 56, 57, 58, 3 * 57, 100_000, 3 * CHUNK_BYTES + 5]
    attachments = [Attachment(f"f{size}.bin", "application/octet-stream", os.urandom(size)) for size in sizes]
    attachments.append(Attachment("notes.txt", "text/plain", b".dot line\r\n" * 10))

    wire, expected = _messages(attachments)

    assert_same(wire.as_bytes(), expected, "the streamed message")
    assert wire.size == len(expected)
    stuffed = b"".join(wire.data_chunks())
    dotted = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in expected.split(b"\r\n"))
    assert_same(stuffed, dotted, "the dot-stuffed message")


def test_a_server_size_limit_counts_the_streamed_attachment(smtp_servers: SmtpServers,
                                                              attachments_dir: Path) -> None:
    (attachments_dir / "a.bin").write_bytes(os.urandom(200_000))
    request = {**MAIL, "body": "x", "attachments": ["var/attachments/a.bin"]}
    probe = smtp_servers.start()
    send(probe.config(), **request)
    size = len(probe.received[0].raw) + 40  # Date and Message-ID may differ in length; leave room

    tight = smtp_servers.start(size_limit=size - 400)
    with pytest.raises(FlintError) as caught:
        send(tight.config(), **request)
    assert caught.value.exit_code == -7 and tight.handler.transactions == 0
    roomy = smtp_servers.start(size_limit=size)
    send(roomy.config(), **request)
    assert len(roomy.received) == 1


def test_a_reset_while_the_attachment_streams_is_retried_and_delivered_once(
        raw_smtp: RawSmtpServers, attachments_dir: Path) -> None:
    data = os.urandom(8 * MIB)  # far more than the kernel buffers hold: the reset finds us sending
    (attachments_dir / "big.bin").write_bytes(data)
    server = raw_smtp.start(RawBehaviour(drop_after=256 * 1024), RawBehaviour())

    out = send(server.config(retries=2, **{"retry-backoff": 10}), timeout_ms=60000, **MAIL, body="x",
               attachments=["var/attachments/big.bin"])

    assert out["result"] == "success"
    assert server.connections == 2 and server.dots == 1
    [got] = server.received
    [attachment] = got.message.iter_attachments()
    assert_same(attachment.get_payload(decode=True), data, "the attachment")


# Run in a child process so that only the sender's allocations are traced (this process's
# aiosmtpd server buffers the whole message it receives). An inline attachment's base64 text is
# made before tracing starts: it is the request's, as a job's JSON input holds it.
_MEASURE = textwrap.dedent("""
    import base64, gc, json, sys, tracemalloc
    from connectors.base import ConnectorCall
    from connectors.smtp import SmtpConnector

    config, source = json.loads(sys.argv[1]), sys.argv[2]
    if source.startswith("inline:"):
        with open(source[len("inline:"):], "rb") as handle:
            source = {"filename": "report.bin", "content": base64.b64encode(handle.read()).decode()}
    mail = {"from": "ops@example.org", "to": "a@example.org", "body": "<p>see attached</p>"}
    connector = SmtpConnector("smtp", config)
    connector.run(dict(mail), ConnectorCall(jobid="warm-up", timeout_ms=60000))  # imports, caches
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    connector.run({**mail, "attachments": [source]}, ConnectorCall(jobid="job", timeout_ms=60000))
    peak = tracemalloc.get_traced_memory()[1]
    connector.close()
    print(json.dumps({"peak": peak - before}))
""")


@pytest.mark.parametrize("kind", ["file", "url", "inline"])
def test_a_10_mib_attachment_costs_about_its_own_size_in_memory(kind: str, smtp_server: SmtpServer,
                                                                 attachments_dir: Path, http_files: HttpFiles) -> None:
    data = os.urandom(10 * MIB)
    path = attachments_dir / "report.bin"
    path.write_bytes(data)
    (http_files.directory / "report.bin").write_bytes(data)
    source = {"file": str(path), "url": http_files.url("report.bin"), "inline": f"inline:{path}"}[kind]
    config = {**smtp_server.config(), **LOOPBACK_FETCHES, "attachment-roots": [str(attachments_dir)]}

    child = subprocess.run([sys.executable, "-c", _MEASURE, json.dumps(config), source], cwd=REPO,
                           capture_output=True, text=True, timeout=120)

    assert child.returncode == 0, child.stderr
    peak = json.loads(child.stdout.strip().splitlines()[-1])["peak"]
    # The attachment's bytes (10 MiB) are needed; its base64 text (14 MiB), the message written
    # whole and smtplib's copies of it (67 MiB in all for a file before), a list of fetched
    # chunks and their join (URL) or an ASCII copy of the inline text are not.
    assert peak < 20 * MIB, f"peak {peak / MIB:.1f} MiB of Python allocations sending a 10 MiB attachment"
    [got] = smtp_server.received[1:]
    [attachment] = got.message.iter_attachments()
    assert_same(attachment.get_payload(decode=True), data, "the attachment")


def test_the_wire_module_names_its_public_items() -> None:
    import connectors.smtp.wire as wire

    assert wire.__doc__ and set(wire.__all__) == {"DeferredPayloads", "WireMessage", "CHUNK_BYTES"}
    assert all(hasattr(wire, name) for name in wire.__all__)
