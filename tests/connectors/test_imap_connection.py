"""How the imap connector reaches Dovecot: STARTTLS, implicit TLS, certificates, and its errors."""

from __future__ import annotations

import logging
import socket
from typing import Any, Iterator

import pytest

from connectors.base import ConnectorCall
from connectors.imap import ImapConnector
from runtime.errors import FlintError
from tests.servers.dovecot import DovecotServer, MailAccount


def run(config: dict[str, Any], action: str = "list", **request: Any) -> Any:
    return ImapConnector("imap", config).run({"action": action, **request}, ConnectorCall(timeout_ms=10000))


def fails(config: dict[str, Any], action: str = "list", **request: Any) -> FlintError:
    with pytest.raises(FlintError) as caught:
        run(config, action, **request)
    return caught.value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("security", ["starttls", "tls", "none"])
def test_each_security_mode_reaches_the_mailbox(mail_account: MailAccount, security: str) -> None:
    result = run(mail_account.config("imap", security))["result"]
    assert len(result) == 5


def test_tls_verify_false_accepts_an_unknown_ca(mail_account: MailAccount) -> None:
    config = mail_account.config("imap", "tls", **{"tls-verify": False})
    del config["ca-file"]
    assert len(run(config)["result"]) == 5


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_untrusted_certificate_is_minus_4(mail_account: MailAccount, security: str) -> None:
    config = mail_account.config("imap", security)
    del config["ca-file"]
    error = fails(config)
    assert error.exit_code == -4
    assert f"TLS certificate of 127.0.0.1:{config['port']} not trusted" in error.message


def test_tls_against_a_plain_port_is_minus_4(mail_account: MailAccount) -> None:
    config = mail_account.config("imap", "tls", port=mail_account.server.ports["imap"])
    assert fails(config).exit_code == -4


def test_starttls_not_offered_is_minus_4_and_never_falls_back(dovecot_plain: DovecotServer) -> None:
    account = dovecot_plain.add_user()
    config = account.config("imap", "starttls")
    error = fails(config)
    assert error.exit_code == -4
    assert error.message == f"STARTTLS not offered by 127.0.0.1:{config['port']}"
    assert len(run(account.config("imap", "none"))["result"]) == 0  # the same server in plain text works


def test_wrong_password_is_minus_5_and_names_the_user(mail_account: MailAccount) -> None:
    error = fails(mail_account.config("imap", "starttls", password="not-the-password"))
    assert error.exit_code == -5
    assert error.message.startswith(f"IMAP authentication failed for user {mail_account.username}")
    assert "not-the-password" not in error.message


def test_closed_port_is_minus_4() -> None:
    port = _free_port()
    config = {"target": "127.0.0.1", "port": port, "security": "tls", "username": "u", "password": "p"}
    error = fails(config)
    assert error.exit_code == -4 and error.message == f"connection refused: 127.0.0.1:{port}"


def test_silent_server_times_out_with_minus_6(silent_port: int) -> None:
    config = {"target": "127.0.0.1", "port": silent_port, "security": "none", "username": "u", "password": "p",
              "timeout": 300}
    error = fails(config)
    assert error.exit_code == -6 and "timed out after 300 ms" in error.message


def test_plain_text_credentials_to_a_remote_host_are_forbidden() -> None:
    config = {"target": "mail.example.com", "security": "none", "username": "u", "password": "p"}
    error = fails(config)
    assert error.exit_code == -9 and "mail.example.com" in error.message


def test_unknown_action_lists_the_actions(mail_account: MailAccount) -> None:
    error = fails(mail_account.config("imap"), "purge")
    assert error.exit_code == -2 and "delete, list, move, read, search" in error.message


def test_password_never_appears_in_output_errors_or_logs(mail_account: MailAccount,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    password = mail_account.password
    texts: list[str] = []
    config = mail_account.config("imap", "starttls")
    texts.append(repr(run(config, "read", **{"message-id": "<plain-1@example.org>"})))
    texts.append(repr(run(config, "move", **{"message-id": "<plain-1@example.org>", "to-folder": "Done"})))
    for bad in (dict(config, password=password + "x"), dict(config, port=_free_port()),
                {k: v for k, v in config.items() if k != "ca-file"}):
        error = fails(bad)
        texts += [error.message, repr(error), str(error.__cause__)]
    error = fails(config, "read", **{"message-id": "<nope@x>"})
    texts += [error.message, repr(error)]
    texts += [record.getMessage() for record in caplog.records]
    assert caplog.records, "expected debug logging to be captured"
    assert not [text for text in texts if password in text]


def test_missing_dovecot_fails_and_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from tests.servers import dovecot

    monkeypatch.setattr(dovecot, "DOVECOT", tmp_path / "no-dovecot")
    with pytest.raises(pytest.fail.Exception, match="Dovecot is not installed: apt-get install -y dovecot-imapd"):
        next(dovecot._run_dovecot(tls=False))


@pytest.mark.parametrize("key, value", [("tls-verify", False), ("ca-file", "/tmp/evil.pem"),
                                        ("allow-plaintext-auth", True)])
def test_a_request_cannot_loosen_the_configs_guards(key: str, value: object) -> None:
    from connectors.imap import ImapConnector
    from connectors.pop3 import Pop3Connector

    for cls in (ImapConnector, Pop3Connector):
        with pytest.raises(FlintError) as caught:
            cls("mail", {"target": "127.0.0.1", "port": 1}).prepare({"action": "list", key: value})
        assert (caught.value.exit_code, caught.value.message) == (
            -9, f"{key!r} can be set only in the connector config, not in a request")
