"""TLS, STARTTLS, AUTH and connection failures of the smtp connector, against real servers."""

from __future__ import annotations

import logging
import smtplib
import time

import pytest

from connectors.smtp import SmtpConnector
from connectors.smtp.session import ServerSettings
from connectors.transport import require_safe_auth
from runtime.errors import AuthFailed, ConnectFailed, FlintError, Forbidden, TimedOut
from tests.servers.smtp import SmtpServers, send

PASSWORD = "s3cr3t-Pa55-w0rd!"
MAIL = {"from": "ops@example.org", "to": "a@example.org", "body": "x"}


def test_starttls_with_test_ca(smtp_servers: SmtpServers, smtp_ca) -> None:
    server = smtp_servers.start(tls=True)
    out = send(server.config(security="starttls", **{"ca-file": smtp_ca.ca_file}), **MAIL)

    assert out["accepted"] == ["a@example.org"]
    assert len(server.received) == 1


def test_starttls_by_default_when_security_is_not_given(smtp_servers: SmtpServers, smtp_ca) -> None:
    server = smtp_servers.start(tls=True)
    config = {"target": "127.0.0.1", "port": server.port, "ca-file": smtp_ca.ca_file}
    send(config, **MAIL)

    assert len(server.received) == 1


def test_starttls_required_but_not_offered_fails_and_delivers_nothing(smtp_servers: SmtpServers) -> None:
    server = smtp_servers.start()  # no TLS at all
    with pytest.raises(ConnectFailed) as caught:
        send(server.config(security="starttls"), **MAIL)

    assert caught.value.exit_code == -4
    assert str(caught.value) == f"STARTTLS not offered by 127.0.0.1:{server.port}"
    assert server.received == []


def test_untrusted_certificate_is_refused(smtp_servers: SmtpServers) -> None:
    server = smtp_servers.start(tls=True)
    with pytest.raises(ConnectFailed) as caught:
        send(server.config(security="starttls"), **MAIL)  # the system CAs do not know the test CA

    assert caught.value.exit_code == -4
    assert "not trusted" in str(caught.value) and f"127.0.0.1:{server.port}" in str(caught.value)
    assert server.received == []


def test_tls_verify_false_accepts_the_untrusted_certificate(smtp_servers: SmtpServers) -> None:
    server = smtp_servers.start(tls=True)
    send(server.config(security="starttls", **{"tls-verify": False}), **MAIL)

    assert len(server.received) == 1


def test_implicit_tls(smtp_servers: SmtpServers, smtp_ca) -> None:
    server = smtp_servers.start(implicit_tls=True)
    out = send(server.config(security="tls", **{"ca-file": smtp_ca.ca_file}), **MAIL)

    assert out["result"] == "success"
    assert len(server.received) == 1


def test_implicit_tls_untrusted(smtp_servers: SmtpServers) -> None:
    server = smtp_servers.start(implicit_tls=True)
    with pytest.raises(ConnectFailed, match="not trusted"):
        send(server.config(security="tls"), **MAIL)


def test_auth_success_over_plain_text_on_loopback(smtp_servers: SmtpServers) -> None:
    server = smtp_servers.start(users={"ops": PASSWORD})
    send(server.config(username="ops", password=PASSWORD), **MAIL)

    assert len(server.received) == 1


def test_auth_success_after_starttls_with_per_request_credentials(smtp_servers: SmtpServers, smtp_ca) -> None:
    server = smtp_servers.start(tls=True, users={"ops": PASSWORD})
    send(server.config(security="starttls", **{"ca-file": smtp_ca.ca_file}), username="ops", password=PASSWORD,
         **MAIL)

    assert len(server.received) == 1


def test_wrong_password_is_auth_failed_and_never_shown(smtp_servers: SmtpServers, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    server = smtp_servers.start(users={"ops": "the-right-one"})
    with pytest.raises(AuthFailed) as caught:
        send(server.config(username="ops", password=PASSWORD), **MAIL)

    assert caught.value.exit_code == -5
    assert str(caught.value).startswith("SMTP authentication failed: 535")
    assert server.received == []
    assert_password_absent(caught.value, caplog)


def test_auth_not_offered_names_the_missing_capability(smtp_servers: SmtpServers) -> None:
    server = smtp_servers.start()
    with pytest.raises(AuthFailed, match="does not offer AUTH"):
        send(server.config(username="ops", password=PASSWORD), **MAIL)


def test_plaintext_auth_off_loopback_is_forbidden_before_connecting(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    config = {"target": "mail.invalid", "port": 25, "security": "none", "username": "ops", "password": PASSWORD}
    with pytest.raises(Forbidden) as caught:
        send(config, **MAIL)

    assert caught.value.exit_code == -9
    assert "mail.invalid" in str(caught.value)
    assert_password_absent(caught.value, caplog)


def test_plaintext_auth_off_loopback_allowed_by_config() -> None:
    require_safe_auth({"target": "mail.example.org", "allow-plaintext-auth": True}, encrypted=False)
    with pytest.raises(Forbidden):
        require_safe_auth({"target": "mail.example.org"}, encrypted=False)
    ServerSettings("mail.example.org", 587, security="starttls", username="ops").check_auth_allowed()


def test_connection_refused(closed_port) -> None:
    host, port = closed_port
    with pytest.raises(ConnectFailed) as caught:
        send({"target": host, "port": port, "security": "none"}, **MAIL)

    assert caught.value.exit_code == -4
    assert str(caught.value) == f"connection refused: {host}:{port}"


def test_silent_server_times_out(silent_server) -> None:
    host, port = silent_server
    started = time.monotonic()
    with pytest.raises(TimedOut) as caught:
        send({"target": host, "port": port, "security": "none"}, timeout=300, **MAIL)

    assert caught.value.exit_code == -6
    assert f"{host}:{port}" in str(caught.value) and "300 ms" in str(caught.value)
    assert time.monotonic() - started < 5


def test_call_timeout_bounds_the_request_timeout(silent_server) -> None:
    host, port = silent_server
    with pytest.raises(TimedOut, match="200 ms"):
        send({"target": host, "port": port, "security": "none", "timeout": 60000}, timeout_ms=200, **MAIL)


def test_password_never_in_outputs_errors_or_logs(smtp_servers: SmtpServers, closed_port, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    server = smtp_servers.start(users={"ops": PASSWORD})
    out = send(server.config(username="ops", password=PASSWORD), **MAIL)
    assert PASSWORD not in repr(out)

    host, port = closed_port
    failures: list[FlintError] = []
    for config in ({"target": host, "port": port, "security": "none"},
                   server.config(security="starttls"),
                   {"target": "mail.invalid", "security": "none"}):
        with pytest.raises(FlintError) as caught:
            send({**config, "username": "ops", "password": PASSWORD}, **MAIL)
        failures.append(caught.value)
    for error in failures:
        assert_password_absent(error, caplog)
    connector = SmtpConnector("smtp", {"target": host, "password": PASSWORD})
    assert PASSWORD not in repr(connector.prepare(MAIL))


def test_open_connection_is_the_one_seam(smtp_server) -> None:
    opened: list[ServerSettings] = []

    class Recording(SmtpConnector):
        def open_connection(self, server: ServerSettings) -> smtplib.SMTP:
            opened.append(server)
            return super().open_connection(server)

    from connectors.base import ConnectorCall

    Recording("smtp", smtp_server.config()).run(MAIL, ConnectorCall())
    assert [s.where for s in opened] == [f"127.0.0.1:{smtp_server.port}"]
    assert len(smtp_server.received) == 1


def assert_password_absent(error: BaseException, caplog) -> None:
    """The password is in no message of the error chain and no log record."""
    chain: BaseException | None = error
    while chain is not None:
        assert PASSWORD not in str(chain) and PASSWORD not in repr(chain.args)
        chain = chain.__cause__ or chain.__context__
    for record in caplog.records:
        assert PASSWORD not in record.getMessage()
