"""URL attachments are fetched under guards: no private addresses unless allowed, http(s) only at
every redirect, at most 5 redirects, within the size cap and the request's timeout."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from connectors.smtp.fetch import forbidden_kind
from runtime.errors import FlintError
from tests.servers.smtp import LOOPBACK_FETCHES, HttpFiles, SmtpServer, send

MAIL = {"from": "ops@example.org", "to": "a@example.org", "body": "see attached"}


def refused(server: SmtpServer, code: int, *, config: dict | None = None, timeout_ms: int = 10000,
            **request) -> FlintError:
    """Send with ``request``; assert the exit-code and that the SMTP server saw nothing."""
    with pytest.raises(FlintError) as caught:
        send({**server.config(), **(config or {})}, timeout_ms=timeout_ms, **{**MAIL, **request})
    assert caught.value.exit_code == code, str(caught.value)
    assert server.received == [] and server.handler.transactions == 0
    return caught.value


def attached(server: SmtpServer) -> list:
    assert len(server.received) == 1
    return list(server.received[0].message.iter_attachments())


@pytest.fixture
def other_loopback_files(tmp_path: Path):
    """A second HTTP server, on 127.0.0.2 (loopback too, but another address)."""
    directory = tmp_path / "other"
    directory.mkdir()
    server = HttpFiles(directory, host="127.0.0.2")
    try:
        yield server
    finally:
        server.stop()


def test_loopback_is_refused_by_default(smtp_server: SmtpServer, http_files: HttpFiles) -> None:
    (http_files.directory / "a.txt").write_text("a")
    error = refused(smtp_server, -9, attachments=[http_files.url("a.txt")])
    assert str(error) == ("attachment host 127.0.0.1 is a loopback address; the connector config must allow it "
                          "(attachment-allow-private)")
    error = refused(smtp_server, -9, attachments=[http_files.url("a.txt").replace("127.0.0.1", "localhost")])
    assert str(error).startswith("attachment host localhost (") and "loopback" in str(error)
    assert http_files.requests == []  # refused before any connection


def test_loopback_is_allowed_by_the_config_key(smtp_server: SmtpServer, http_files: HttpFiles) -> None:
    (http_files.directory / "a.txt").write_text("alpha")
    send(smtp_server.config(**LOOPBACK_FETCHES), **MAIL, attachments=[http_files.url("a.txt")])
    assert attached(smtp_server)[0].get_payload(decode=True) == b"alpha"


def test_the_key_is_config_only(smtp_server: SmtpServer, http_files: HttpFiles) -> None:
    error = refused(smtp_server, -9, attachments=[http_files.url("a.txt")], attachment_allow_private=True)
    assert "'attachment-allow-private' can be set only in the connector config" in str(error)


@pytest.mark.parametrize("host, kind", [
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("[fc00::1]", "private"),
    ("169.254.169.254", "link-local"), ("[fe80::1]", "link-local"), ("0.0.0.0", "unspecified"),
    ("[::]", "unspecified"), ("224.0.0.1", "multicast"), ("[::1]", "loopback"), ("127.8.9.10", "loopback"),
    ("[::ffff:127.0.0.1]", "loopback"), ("100.64.0.1", "non-global"), ("0x7f.1", "loopback"),
])
def test_private_addresses_are_refused(smtp_server: SmtpServer, host: str, kind: str) -> None:
    started = time.monotonic()
    error = refused(smtp_server, -9, attachments=[f"http://user:hunter2@{host}:8080/x.pdf?token=abc"])
    assert f" is a {kind} address" in str(error) and host.strip("[]") in str(error)
    assert "hunter2" not in str(error) and "token" not in str(error)
    assert time.monotonic() - started < 5  # no connection was tried


def test_address_kinds() -> None:
    assert [forbidden_kind(ip) for ip in ("8.8.8.8", "2606:4700::1111", "172.32.0.1", "192.169.0.1")] == [None] * 4
    assert forbidden_kind("fe80::1%eth0") == "link-local"


def test_an_allow_list_allows_only_the_networks_it_names(smtp_server: SmtpServer, http_files: HttpFiles,
                                                        other_loopback_files: HttpFiles) -> None:
    (http_files.directory / "a.txt").write_text("alpha")
    (other_loopback_files.directory / "b.txt").write_text("beta")
    config = {"attachment-allow-private": ["127.0.0.1/32"]}
    send(smtp_server.config(**config), **MAIL, attachments=[http_files.url("a.txt")])
    assert attached(smtp_server)[0].get_payload(decode=True) == b"alpha"
    smtp_server.received.clear()
    smtp_server.handler.transactions = 0
    error = refused(smtp_server, -9, config=config, attachments=[other_loopback_files.url("b.txt")])
    assert str(error).startswith("attachment host 127.0.0.2 is a loopback address")
    error = refused(smtp_server, -2, config={"attachment-allow-private": ["10.0.0.0/33"]},
                    attachments=[http_files.url("a.txt")])
    assert str(error).startswith("attachment-allow-private: ")


def test_a_redirect_from_an_allowed_host_to_a_refused_one(smtp_server: SmtpServer, http_files: HttpFiles,
                                                          other_loopback_files: HttpFiles) -> None:
    (other_loopback_files.directory / "secret.txt").write_text("internal")
    config = {"attachment-allow-private": ["127.0.0.1"]}
    start = http_files.redirect_url(other_loopback_files.url("secret.txt"))
    error = refused(smtp_server, -9, config=config, attachments=[start])
    assert str(error).startswith(f"attachment host 127.0.0.2 is a loopback address (redirected from "
                                 f"{http_files.url('redirect')})")
    assert other_loopback_files.requests == []
    # localhost resolves to 127.0.0.1 and, where IPv6 is on, ::1: every address must be allowed.
    if any(info[0] == socket.AF_INET6 for info in socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)):
        refused(smtp_server, -9, config=config, attachments=[http_files.redirect_url(
            other_loopback_files.url("secret.txt").replace("127.0.0.2", "localhost"))])


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1:70/_x",
                                    "data:text/plain,hi"])
def test_a_redirect_off_http_is_refused(smtp_server: SmtpServer, http_files: HttpFiles, target: str) -> None:
    error = refused(smtp_server, -9, config=LOOPBACK_FETCHES, attachments=[http_files.redirect_url(target)])
    scheme = target.split(":")[0]
    assert str(error) == (f"attachment {http_files.url('redirect')} redirects to a {scheme} URL; "
                          "only http and https are followed")


def test_at_most_five_redirects(smtp_server: SmtpServer, http_files: HttpFiles) -> None:
    (http_files.directory / "end.txt").write_text("end")
    send(smtp_server.config(**LOOPBACK_FETCHES), **MAIL, attachments=[http_files.url("hops/5/end.txt")])
    [part] = attached(smtp_server)
    assert (part.get_filename(), part.get_payload(decode=True)) == ("end.txt", b"end")
    smtp_server.received.clear()
    smtp_server.handler.transactions = 0
    error = refused(smtp_server, -7, config=LOOPBACK_FETCHES, attachments=[http_files.url("hops/6/end.txt")])
    assert str(error) == f"attachment {http_files.url('hops/6/end.txt')}: more than 5 redirects"


def test_credentials_go_to_their_own_origin_only(smtp_server: SmtpServer, http_files: HttpFiles,
                                                 other_loopback_files: HttpFiles) -> None:
    (other_loopback_files.directory / "b.txt").write_text("beta")
    (http_files.directory / "a.txt").write_text("alpha")
    start = http_files.redirect_url(other_loopback_files.url("b.txt")).replace("http://", "http://ops:hunter2@")
    send(smtp_server.config(**LOOPBACK_FETCHES), **MAIL, attachments=[start])
    assert attached(smtp_server)[0].get_payload(decode=True) == b"beta"
    assert "Authorization" in http_files.requests[0][1]
    assert [headers.get("Authorization") for _, headers in other_loopback_files.requests] == [None]


def test_each_hop_is_resolved_once_and_connected_to_as_checked(smtp_server: SmtpServer, http_files: HttpFiles,
                                                               monkeypatch) -> None:
    """DNS rebinding: the answer that was checked is the address connected to; no second lookup."""
    (http_files.directory / "a.txt").write_text("alpha")
    real = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding(host, *args, **kwargs):
        if host != "files.test":
            return real(host, *args, **kwargs)
        lookups.append(host)
        # The first answer is the allowed test server; any later one would point elsewhere.
        return real("127.0.0.1" if len(lookups) == 1 else "127.0.0.2", *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = http_files.url("a.txt").replace("127.0.0.1", "files.test")
    send(smtp_server.config(**{"attachment-allow-private": ["127.0.0.1"]}), **MAIL, attachments=[url])
    assert lookups == ["files.test"]
    assert attached(smtp_server)[0].get_payload(decode=True) == b"alpha"
    assert http_files.requests[0][1]["Host"] == f"files.test:{http_files.httpd.server_address[1]}"


def test_a_too_slow_server_times_out_within_the_timeout(smtp_server: SmtpServer, http_files: HttpFiles) -> None:
    started = time.monotonic()
    error = refused(smtp_server, -6, config=LOOPBACK_FETCHES, timeout_ms=1000,
                    attachments=[http_files.url("drip/1000")])  # 100 s at one byte per 0.1 s
    assert time.monotonic() - started < 1.0 + 1.0
    assert str(error) == f"timed out after 1000 ms fetching attachment {http_files.url('drip/1000')}"


def test_oversize_after_a_redirect(smtp_server: SmtpServer, http_files: HttpFiles) -> None:
    (http_files.directory / "big.bin").write_bytes(b"x" * 5000)
    error = refused(smtp_server, -7, config={"attachment_size": 0.001, **LOOPBACK_FETCHES},
                    attachments=[http_files.url("hops/2/big.bin")])
    assert str(error) == "attachment big.bin is 0.0 MB; the limit is 0.001 MB"
    refused(smtp_server, -7, config={"attachment_size": 0.001, **LOOPBACK_FETCHES},
            attachments=[http_files.redirect_url(http_files.stream_url(50 << 20))])
