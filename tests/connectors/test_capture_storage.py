"""The capture server when it cannot store: a transient 452, never a 250, and no partial files.

The tests run as root as often as not, where chmod stops no write: failures are injected at the
handler's write seam (``StoreHandler.write``) or by putting a file where the directory was.
"""

from __future__ import annotations

import errno
import shutil
import smtplib
from pathlib import Path
from typing import Iterator

import pytest

from connectors.capture import CaptureServer, capture_server, stop_capture_servers
from runtime.errors import TransientFailure
from tests.servers.smtp import send

MAIL = {"from": "ops@example.org", "to": "a@example.org", "subject": "stored?", "body": "<p>hi</p>"}
RAW = b"Subject: hi\r\n\r\nbody\r\n"


@pytest.fixture(autouse=True)
def _stop_servers() -> Iterator[None]:
    yield
    stop_capture_servers()


def everything(directory: Path) -> list[str]:
    """Every entry in the directory, hidden temporaries included."""
    return sorted(path.name for path in directory.iterdir()) if directory.is_dir() else []


def disk_full(path: Path, data: bytes) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def half_then_full(path: Path, data: bytes) -> None:
    path.write_bytes(data[: len(data) // 2])  # the disk fills up half way through the file
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def mail_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path / "var" / "mail"


def config(mail_dir: Path) -> dict:
    return {"capture-dir": str(mail_dir), "retries": 1, "retry-backoff": 10}


@pytest.mark.parametrize("failing", [disk_full, half_then_full])
def test_a_full_disk_is_a_transient_refusal_and_nothing_is_delivered(mail_dir: Path, monkeypatch, failing) -> None:
    server = capture_server(mail_dir)
    monkeypatch.setattr(server.handler, "write", failing)
    log: list[tuple[str, str]] = []
    with pytest.raises(TransientFailure) as caught:
        send(config(mail_dir), log=log, **MAIL)

    assert caught.value.exit_code == -1
    assert str(caught.value) == ("SMTP 452 4.3.1 insufficient storage (No space left on device) (message data); "
                                 "gave up after 2 attempts")
    assert len([line for level, line in log if "retrying" in line]) == 1
    assert everything(mail_dir) == []


def test_when_only_the_eml_cannot_be_written_its_envelope_goes_too(mail_dir: Path, monkeypatch) -> None:
    server = capture_server(mail_dir)
    real = server.handler.write

    def eml_fails(path: Path, data: bytes) -> None:
        if path.name.endswith(".eml.tmp"):
            half_then_full(path, data)
        real(path, data)

    monkeypatch.setattr(server.handler, "write", eml_fails)
    with pytest.raises(TransientFailure):
        send(config(mail_dir), **MAIL)
    assert everything(mail_dir) == []


def test_the_raw_reply_is_452_not_250(tmp_path: Path, monkeypatch) -> None:
    server = CaptureServer(tmp_path / "mail")
    port = server.start()
    monkeypatch.setattr(server.handler, "write", disk_full)
    try:
        with smtplib.SMTP(server.host, port, timeout=5) as client:
            with pytest.raises(smtplib.SMTPDataError) as caught:
                client.sendmail("a@example.org", ["b@example.org"], RAW)
    finally:
        server.stop()
    assert caught.value.smtp_code == 452
    assert caught.value.smtp_error == b"4.3.1 insufficient storage (No space left on device)"


def test_a_directory_replaced_by_a_file(mail_dir: Path) -> None:
    capture_server(mail_dir)
    shutil.rmtree(mail_dir)
    mail_dir.write_text("not a directory")
    with pytest.raises(TransientFailure, match=r"^SMTP 452 4\.3\.1 insufficient storage \("):
        send(config(mail_dir), **MAIL)
    assert mail_dir.read_text() == "not a directory"


def test_storing_works_again_once_there_is_room(mail_dir: Path, monkeypatch) -> None:
    server = capture_server(mail_dir)
    monkeypatch.setattr(server.handler, "write", disk_full)
    with pytest.raises(TransientFailure):
        send(config(mail_dir), **MAIL)
    monkeypatch.undo()
    out = send(config(mail_dir), **MAIL)

    eml = Path(out["eml"])
    assert everything(mail_dir) == sorted([eml.name, eml.name.replace(".eml", ".envelope.json")])
    assert b"Subject: stored?\r\n" in eml.read_bytes()


def test_a_disk_full_for_a_moment_is_ridden_out_by_the_retry(mail_dir: Path, monkeypatch) -> None:
    server = capture_server(mail_dir)
    real, failures = server.handler.write, []

    def full_once(path: Path, data: bytes) -> None:
        if not failures:
            failures.append(path)
            disk_full(path, data)
        real(path, data)

    monkeypatch.setattr(server.handler, "write", full_once)
    out = send(config(mail_dir), **MAIL)
    assert out["result"] == "success" and len(failures) == 1
    assert [name for name in everything(mail_dir) if name.endswith(".eml")] == [Path(out["eml"]).name]
