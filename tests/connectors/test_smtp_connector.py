"""The smtp connector's contract: type table, schemas, public names, check, server limits."""

from __future__ import annotations

import importlib

import pytest
from jsonschema import Draft202012Validator

from connectors import connector_class
from connectors.base import ConnectorCall
from connectors.smtp import SmtpConnector
from runtime.errors import InvalidRequest, LimitExceeded
from tests.servers.smtp import SmtpServers, send

MODULES = ["connectors.smtp", "connectors.smtp.schema", "connectors.smtp.attachments", "connectors.smtp.message",
           "connectors.smtp.session", "connectors.smtp.connector", "connectors.addresses", "connectors.capture"]


def test_type_table_names_the_connector() -> None:
    assert connector_class("smtp") is SmtpConnector
    assert SmtpConnector.type == "smtp" and SmtpConnector.default_action == "send"
    assert set(SmtpConnector.request_schemas) == {"send"}


@pytest.mark.parametrize("module", MODULES)
def test_public_names_exist(module: str) -> None:
    loaded = importlib.import_module(module)
    assert loaded.__all__ and all(hasattr(loaded, name) for name in loaded.__all__)
    assert loaded.__doc__


def test_schemas_are_valid_json_schemas() -> None:
    Draft202012Validator.check_schema(SmtpConnector.config_schema)
    for schema in SmtpConnector.request_schemas.values():
        Draft202012Validator.check_schema(schema)


def test_config_validation_names_keys() -> None:
    SmtpConnector.validate_config({"target": "mx", "port": 587, "attachment-roots": ["a"]}, where="smtp")
    SmtpConnector.validate_config({"capture-dir": "var/mail", "from": "a@x.org"}, where="smtp")
    with pytest.raises(InvalidRequest, match="smtp: 'target' is required"):
        SmtpConnector.validate_config({"port": 25}, where="smtp")
    with pytest.raises(InvalidRequest, match="unknown key: 'to'"):
        SmtpConnector.validate_config({"target": "mx", "to": "a@x.org"}, where="smtp")
    with pytest.raises(InvalidRequest, match="'security' must be one of"):
        SmtpConnector.validate_config({"target": "mx", "security": "ssl"}, where="smtp")


def test_action_can_be_named(smtp_servers: SmtpServers) -> None:
    server = smtp_servers.start()
    send(server.config(), action="send", **{"from": "a@x.org"}, to="b@x.org")
    assert len(server.received) == 1
    with pytest.raises(InvalidRequest, match="unknown action 'list'"):
        send(server.config(), action="list")


def test_server_size_limit_is_checked_before_sending(smtp_servers: SmtpServers) -> None:
    server = smtp_servers.start(size_limit=2000)
    with pytest.raises(LimitExceeded, match=f"127.0.0.1:{server.port} accepts at most"):
        send(server.config(), **{"from": "a@x.org"}, to="b@x.org", body="x" * 5000)
    assert server.handler.transactions == 0


def test_check_greets_secures_and_authenticates(smtp_servers: SmtpServers, smtp_ca, tmp_path, monkeypatch) -> None:
    server = smtp_servers.start(tls=True, users={"ops": "pw"})
    config = server.config(security="starttls", username="ops", password="pw", **{"ca-file": smtp_ca.ca_file})
    assert SmtpConnector("smtp", config).check(ConnectorCall()) == \
        f"greeted, STARTTLS, authenticated: 127.0.0.1:{server.port}"
    monkeypatch.chdir(tmp_path)
    from connectors.capture import stop_capture_servers

    try:
        assert "capture server on 127.0.0.1:" in SmtpConnector("smtp", {"capture-dir": "mail"}).check(ConnectorCall())
    finally:
        stop_capture_servers()
