"""The capture SMTP server, alone and as the smtp connector's capture mode."""

from __future__ import annotations

import json
import smtplib
import threading
from pathlib import Path
from typing import Iterator

import pytest

from connectors.capture import CaptureServer, capture_server, stop_capture_servers
from tests.servers.smtp import send


@pytest.fixture(autouse=True)
def _stop_servers() -> Iterator[None]:
    yield
    stop_capture_servers()


def stored(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.eml"))


def test_capture_server_stores_raw_message_and_envelope(tmp_path: Path) -> None:
    server = CaptureServer(tmp_path / "mail")
    port = server.start()
    try:
        assert server.port == port > 0 and server.running
        raw = b"Subject: hi\r\nX-Odd:  spaced  \r\n\r\n.leading dot\r\nFrom me\r\n"
        with smtplib.SMTP(server.host, port, timeout=5) as client:
            client.sendmail("a@example.org", ["b@example.org", "c@example.org"], raw)
    finally:
        server.stop()
    assert not server.running and server.port == 0

    [eml] = stored(tmp_path / "mail")
    assert eml.read_bytes() == raw
    envelope = json.loads(eml.with_name(eml.name.replace(".eml", ".envelope.json")).read_text())
    assert envelope["mail-from"] == "a@example.org"
    assert envelope["rcpt-to"] == ["b@example.org", "c@example.org"]
    assert envelope["received"].endswith("Z") and envelope["peer"].startswith("127.0.0.1:")


def test_capture_server_is_started_once_per_process_and_directory(tmp_path: Path) -> None:
    found: list[CaptureServer] = []
    threads = [threading.Thread(target=lambda: found.append(capture_server(tmp_path / "m"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len({id(server) for server in found}) == 1 and found[0].running
    assert capture_server(str(tmp_path / "m")) is found[0]
    assert capture_server(tmp_path / "other") is not found[0]


def test_capture_mode_delivers_over_smtp_and_reports_the_eml(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = {"capture-dir": "var/mail", "from": "Flint <flint@localhost>",
              "target": "mail.invalid", "port": 1, "security": "tls"}  # ignored in capture mode
    out = send(config, to="a@example.org", bcc="hidden@example.org", subject="captured", body="<p>hi</p>")

    eml = Path(out["eml"])
    assert eml.is_absolute() and eml.parent == tmp_path / "var" / "mail"
    assert [p.name for p in stored(tmp_path / "var" / "mail")] == [eml.name]
    raw = eml.read_bytes()
    assert b"Subject: captured\r\n" in raw and b"hidden" not in raw
    assert f"Message-ID: {out['message-id']}".encode() in raw
    envelope = json.loads(eml.with_name(eml.name.replace(".eml", ".envelope.json")).read_text())
    assert envelope == {**envelope, "mail-from": "flint@localhost", "rcpt-to": ["a@example.org", "hidden@example.org"]}
    assert out["accepted"] == ["a@example.org", "hidden@example.org"] and out["refused"] == {}


def test_capture_mode_still_checks_inputs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    from runtime.errors import Forbidden, InvalidRequest

    with pytest.raises(InvalidRequest, match="line break in subject"):
        send({"capture-dir": "var/mail"}, **{"from": "a@x.org"}, to="b@x.org", subject="a\nb")
    with pytest.raises(Forbidden):
        send({"capture-dir": "var/mail"}, **{"from": "a@x.org"}, to="b@x.org", attachments=["/etc/passwd"])
    assert stored(tmp_path / "var" / "mail") == []


def test_forked_child_starts_its_own_capture_server(tmp_path: Path) -> None:
    import os

    parent = capture_server(tmp_path / "m")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: deliver through its own server, report the port, exit at once
        try:
            child = capture_server(tmp_path / "m")
            with smtplib.SMTP(child.host, child.port, timeout=5) as client:
                client.sendmail("a@x.org", ["b@x.org"], b"Subject: child\r\n\r\nx\r\n")
            os.write(write_end, str(child.port).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    child_port = int(os.read(read_end, 16) or b"0")
    os.waitpid(pid, 0)
    os.close(read_end)

    assert child_port not in (0, parent.port)
    assert parent.running and len(stored(tmp_path / "m")) == 1
