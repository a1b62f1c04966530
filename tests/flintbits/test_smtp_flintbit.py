"""The shipped flintbit flint-util:smtp:operation:smtp.py, end to end through the job runtime."""

from __future__ import annotations

import email
import email.policy
import json
import shutil
from pathlib import Path

from tests.project import DEFAULT_CONNECTORS

REPO = Path(__file__).resolve().parents[2]
REF = "flint-util:smtp:operation:smtp.py"
SECRET = "s3cret-Pa55-word"


def ship_flintbit(project) -> None:
    target = project.bits_dir / "flint-util/smtp/operation"
    target.mkdir(parents=True)
    shutil.copy(REPO / "flintbits/flint-util/smtp/operation/smtp.py", target / "smtp.py")


def test_capture_default_writes_an_eml_and_says_where(project):
    ship_flintbit(project)
    env = project.client().run_bit(REF, {"to": "ops@example.com, Ann <ann@example.com>", "bcc": ["audit@example.com"],
                                         "subject": "Disk full on db-1", "body": "<p>95% used</p>"})
    meta, out = env["meta"], env["output"]
    assert (meta["exit-code"], meta["status"], out["result"]) == (0, "complete", "success")
    assert out["accepted"] == ["ops@example.com", "ann@example.com", "audit@example.com"] and out["refused"] == {}
    eml = Path(out["eml"])
    assert eml.exists() and eml.parent == project.root / "var/mail"
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "Disk full on db-1" and message["Message-ID"] == out["message-id"]
    assert "audit@example.com" not in eml.read_text() and message.get_content_type() == "text/html"
    envelope = json.loads(eml.with_name(eml.name.replace(".eml", ".envelope.json")).read_text())
    assert "audit@example.com" in envelope["rcpt-to"]


def test_real_server_with_auth_and_user_name_alias(project, smtp_servers):
    server = smtp_servers.start(users={"ops": SECRET})
    project.connectors({"connectors": {"mail": {"type": "smtp", "config": server.config(**{"from": "flint@example.com"})}}})
    ship_flintbit(project)
    env = project.client().run_bit(REF, {"connector_name": "mail", "user_name": "ops", "password": SECRET,
                                         "to": ["a@example.com"], "cc": ["c@example.com"], "subject": "hi",
                                         "body": "plain words", "content-type": "text/plain"})
    assert env["meta"]["exit-code"] == 0, env
    [received] = server.received
    assert received.rcpt_tos == ["a@example.com", "c@example.com"]
    assert received.message.get_content().strip() == "plain words"
    assert SECRET not in json.dumps(env)


def test_connector_failure_is_the_flintbits_exit_code_and_no_secret_leaks(project, smtp_servers):
    server = smtp_servers.start(users={"ops": "right-password"})
    project.connectors({"connectors": {"smtp": {"type": "smtp", "config": server.config()}}})
    ship_flintbit(project)
    client = project.client()
    env = client.run_bit(REF, {"from": "f@example.com", "username": "ops", "password": SECRET,
                               "to": "a@example.com", "subject": "x", "body": "y"})
    meta = env["meta"]
    assert (meta["exit-code"], meta["status"]) == (-5, "complete")
    assert meta["message"].startswith("SMTP authentication failed")
    logs = client.logs(meta["job-id"])
    assert any(line["level"] == "error" and "exit-code -5" in line["message"] for line in logs)
    assert SECRET not in json.dumps(env) and SECRET not in json.dumps(logs)
    assert server.received == []


def test_bad_input_is_minus_2_and_nothing_is_sent(project):
    ship_flintbit(project)
    project.connectors(DEFAULT_CONNECTORS)
    env = project.client().run_bit(REF, {"to": "a@example.com", "subject": "two\r\nBcc: x@evil.example", "body": "b"})
    assert env["meta"]["exit-code"] == -2 and "line break" in env["meta"]["message"]
    assert not list((project.root / "var/mail").glob("*.eml")) if (project.root / "var/mail").exists() else True
