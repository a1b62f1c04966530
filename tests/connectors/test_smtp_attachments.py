"""Attachments: allowed roots (-9), missing (-3), size limits (-7), URLs, inline content."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from runtime.errors import FlintError
from tests.servers.smtp import LOOPBACK_FETCHES, SmtpServer, send

MAIL = {"from": "ops@example.org", "to": "a@example.org", "body": "see attached"}


def refused(server: SmtpServer, code: int, message: str | None = None, *, config: dict | None = None,
            **request) -> FlintError:
    with pytest.raises(FlintError) as caught:
        send({**server.config(), **(config or {})}, **{**MAIL, **request})
    assert caught.value.exit_code == code, str(caught.value)
    if message is not None:
        assert str(caught.value) == message
    assert server.received == [] and server.handler.transactions == 0
    return caught.value


def attached(server: SmtpServer) -> list:
    assert len(server.received) == 1
    return list(server.received[0].message.iter_attachments())


def test_relative_absolute_and_file_url_paths_under_the_root(smtp_server: SmtpServer, attachments_dir: Path) -> None:
    (attachments_dir / "a.txt").write_bytes(b"alpha")
    (attachments_dir / "sub").mkdir()
    (attachments_dir / "sub" / "b c.bin").write_bytes(b"\x00\x01")
    send(smtp_server.config(), **MAIL, attachments=[
        "var/attachments/a.txt", str(attachments_dir / "sub" / "b c.bin"),
        (attachments_dir / "a.txt").as_uri()])

    parts = attached(smtp_server)
    assert [(p.get_filename(), p.get_content_type(), p.get_payload(decode=True)) for p in parts] == [
        ("a.txt", "text/plain", b"alpha"), ("b c.bin", "application/octet-stream", b"\x00\x01"),
        ("a.txt", "text/plain", b"alpha")]


def test_path_outside_the_roots_is_forbidden(smtp_server: SmtpServer, attachments_dir: Path) -> None:
    refused(smtp_server, -9, "attachment path outside the allowed roots: /etc/passwd", attachments=["/etc/passwd"])
    refused(smtp_server, -9, "attachment path outside the allowed roots: var/attachments/../../secret.txt",
            attachments=["var/attachments/../../secret.txt"])
    refused(smtp_server, -9, "attachment path outside the allowed roots: file:///etc/passwd",
            attachments=["file:///etc/passwd"])


def test_symlink_escaping_the_root_is_forbidden(smtp_server: SmtpServer, attachments_dir: Path,
                                                tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (attachments_dir / "innocent.txt").symlink_to(secret)
    (attachments_dir / "dir").symlink_to(tmp_path)
    refused(smtp_server, -9, "attachment path outside the allowed roots: var/attachments/innocent.txt",
            attachments=["var/attachments/innocent.txt"])
    refused(smtp_server, -9, attachments=["var/attachments/dir/secret.txt"])


def test_missing_file_is_not_found(smtp_server: SmtpServer, attachments_dir: Path) -> None:
    refused(smtp_server, -3, "attachment not found: var/attachments/nope.pdf", attachments=["var/attachments/nope.pdf"])


def test_a_bad_attachment_anywhere_fails_before_any_is_fetched(smtp_server: SmtpServer, attachments_dir: Path,
                                                               http_files) -> None:
    (http_files.directory / "ok.txt").write_text("ok")
    refused(smtp_server, -3, attachments=[http_files.url("ok.txt"), "var/attachments/nope.pdf"])


def test_directory_is_not_an_attachment(smtp_server: SmtpServer, attachments_dir: Path) -> None:
    (attachments_dir / "folder").mkdir()
    refused(smtp_server, -2, attachments=["var/attachments/folder"])


def test_file_over_the_size_limit(smtp_server: SmtpServer, attachments_dir: Path) -> None:
    report = attachments_dir / "report.pdf"
    with open(report, "wb") as handle:  # sparse: the size is checked by stat, the file is never read
        handle.truncate(int(12.4 * 1024 * 1024))
    refused(smtp_server, -7, "attachment report.pdf is 12.4 MB; the limit is 10 MB",
            attachments=["var/attachments/report.pdf"])


def test_configured_limit_and_roots(smtp_server: SmtpServer, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outbox").mkdir()
    (tmp_path / "outbox" / "big.bin").write_bytes(b"x" * 3000)
    (tmp_path / "outbox" / "small.bin").write_bytes(b"x" * 100)
    config = {"attachment-roots": ["outbox"], "attachment_size": 0.002}
    refused(smtp_server, -7, "attachment big.bin is 0.0 MB; the limit is 0.002 MB", config=config,
            attachments=["outbox/big.bin"])
    send(smtp_server.config(**config), **MAIL, attachments=["outbox/small.bin"])
    assert attached(smtp_server)[0].get_payload(decode=True) == b"x" * 100


def test_inline_attachment_size_is_checked_from_base64(smtp_server: SmtpServer, attachments_dir: Path) -> None:
    content = base64.b64encode(b"y" * 3000).decode()
    refused(smtp_server, -7, "attachment data.bin is 0.0 MB; the limit is 0.002 MB",
            config={"attachment_size": 0.002}, attachments=[{"filename": "data.bin", "content": content}])


def test_inline_attachment_with_bad_base64(smtp_server: SmtpServer, attachments_dir: Path) -> None:
    refused(smtp_server, -2, "attachments[0]: content is not valid base64",
            attachments=[{"filename": "x.bin", "content": "not base64!"}])
    refused(smtp_server, -2, "attachments[0]: invalid content-type 'pdf'",
            attachments=[{"filename": "x.bin", "content": "eA==", "content-type": "pdf"}])


def test_http_attachment(smtp_server: SmtpServer, attachments_dir: Path, http_files) -> None:
    (http_files.directory / "Übersicht.csv").write_bytes(b"a;b\n1;2\n")
    send(smtp_server.config(**LOOPBACK_FETCHES), **MAIL, attachments=[http_files.url("%C3%9Cbersicht.csv")])

    [part] = attached(smtp_server)
    assert part.get_filename() == "Übersicht.csv"
    assert part.get_content_type() == "text/csv"
    assert part.get_payload(decode=True) == b"a;b\n1;2\n"


def test_http_attachment_over_the_cap(smtp_server: SmtpServer, attachments_dir: Path, http_files) -> None:
    (http_files.directory / "big.bin").write_bytes(b"x" * 5000)
    refused(smtp_server, -7, "attachment big.bin is 0.0 MB; the limit is 0.001 MB",
            config={"attachment_size": 0.001, **LOOPBACK_FETCHES}, attachments=[http_files.url("big.bin")])
    # No Content-Length: reading stops once past the cap (the server would send 50 MB).
    error = refused(smtp_server, -7, config={"attachment_size": 0.001, **LOOPBACK_FETCHES},
                    attachments=[http_files.stream_url(50 << 20)])
    assert str(error).startswith("attachment 52428800 is over the limit of 0.001 MB")


def test_http_attachment_not_found(smtp_server: SmtpServer, attachments_dir: Path, http_files) -> None:
    url = http_files.url("missing.pdf")
    refused(smtp_server, -3, f"attachment not found: {url} (HTTP 404)", config=LOOPBACK_FETCHES, attachments=[url])


def test_http_attachment_url_credentials_never_shown(smtp_server: SmtpServer, attachments_dir: Path,
                                                     http_files) -> None:
    url = http_files.url("missing.pdf").replace("http://", "http://user:hunter2@") + "?token=abc"
    error = refused(smtp_server, -3, config=LOOPBACK_FETCHES, attachments=[url])
    assert "hunter2" not in str(error) and "token=abc" not in str(error)


def test_unsupported_url_scheme(smtp_server: SmtpServer, attachments_dir: Path) -> None:
    refused(smtp_server, -2, "attachments[0]: unsupported attachment URL scheme 'ftp'",
            attachments=["ftp://example.org/x"])


def test_body_file_rules(smtp_server: SmtpServer, attachments_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.html").write_text("x")
    refused(smtp_server, -9, f"attachment path outside the allowed roots: {tmp_path / 'outside.html'}",
            body=None, body_file=str(tmp_path / "outside.html"))
    refused(smtp_server, -3, body=None, body_file="var/attachments/none.html")
    (attachments_dir / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    refused(smtp_server, -2, body=None, body_file="var/attachments/latin1.txt")


def test_default_root_is_relative_to_the_working_directory(smtp_server: SmtpServer, tmp_path: Path,
                                                           monkeypatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "var" / "attachments").mkdir(parents=True)
    (elsewhere / "var" / "attachments" / "f.txt").write_text("f")
    monkeypatch.chdir(elsewhere)
    send(smtp_server.config(), **MAIL, attachments=[os.path.join("var", "attachments", "f.txt")])
    assert attached(smtp_server)[0].get_payload(decode=True) == b"f"
