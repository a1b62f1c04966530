"""Error statuses and bodies: every error is an envelope, with the HTTP status of SPEC section 5."""

from __future__ import annotations

import pytest

from runtime.api import http_status, parse_input
from runtime.auth import UserStore
from runtime.errors import ConfigError, Forbidden, InvalidRequest, LimitExceeded, NotFound, QueueUnavailable, \
    TimedOut
from tests.api.conftest import test_client
from tests.project import Project
from tests.servers.redis import RedisServer


def meta_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body.keys() == {"meta", "output"} and body["output"] == {}
    assert body["meta"]["status"] == "error"
    return body["meta"]


@pytest.mark.parametrize("error, status", [
    (InvalidRequest("x"), 400), (NotFound("x"), 404), (Forbidden("x"), 403), (LimitExceeded("x"), 413),
    (QueueUnavailable("x"), 503), (ConfigError("x"), 500), (TimedOut("x"), 500),
])
def test_http_status_of_each_error(error, status):
    assert http_status(error) == status


def test_unknown_flintbit_connector_and_job_are_404_envelopes(api, creds):
    cases = [
        (api.post("/v1/bit/run/box:nope.py/sync", headers=creds.user()), -3, "flintbit not found: box:nope.py"),
        (api.post("/v1/bit/run/box:nope.py", headers=creds.user()), -3, "flintbit not found: box:nope.py"),
        (api.get("/v1/bit/box:nope.py", headers=creds.user()), -3, "flintbit not found: box:nope.py"),
        (api.delete("/v1/bit/box:nope.py", headers=creds.admin()), -3, "box:nope.py"),
        (api.post("/v1/connector/run/smtpx/sync", json={}, headers=creds.user()), -3, "connector not found: smtpx"),
        (api.post("/v1/connector/run/smtpx", json={}, headers=creds.user()), -3, "connector not found: smtpx"),
        (api.get("/v1/bit/result/job-nope", headers=creds.user()), -3, "no such job: job-nope"),
        (api.get("/v1/bit/log/job-nope", headers=creds.user()), -3, "no such job: job-nope"),
    ]
    for response, code, message in cases:
        meta = meta_of(response, 404)
        assert meta["exit-code"] == code and message in meta["message"]
        assert meta["username"] in ("ops", "admin")


def test_the_context_of_an_error_envelope_is_the_ref_or_connector(api, creds):
    assert meta_of(api.post("/v1/bit/run/box:nope.py/sync", headers=creds.user()), 404)["context"] == "box:nope.py"
    assert meta_of(api.post("/v1/connector/run/smtpx", headers=creds.user()), 404)["context"] == "connector:smtpx"


@pytest.mark.parametrize("ref", ["box:..:bit.py", "..:bit.py", "box:.:bit.py", "box::bit.py", "box:bit", "%2E%2E",
                                 "box:b%20it.py"])
def test_refs_with_dot_dot_or_bad_segments_are_refused_400(api, creds, ref):
    for response in (api.post(f"/v1/bit/run/{ref}/sync", headers=creds.user()),
                     api.get(f"/v1/bit/{ref}", headers=creds.user()),
                     api.put(f"/v1/bit/{ref}", content="x = 1\n", headers=creds.admin())):
        meta = meta_of(response, 400)
        assert meta["exit-code"] == -2 and "invalid flintbit reference" in meta["message"]


def test_slashes_and_unknown_paths_get_envelopes_from_routing(api, creds):
    for path in ("/v1/bit/run/box/bit.py/sync", "/v1/bit/run/box%2Fbit.py", "/v1/nothing", "/"):
        meta = meta_of(api.post(path, headers=creds.user()), 404)
        assert meta["exit-code"] == -3 and "no such path" in meta["message"]
    wrong_method = meta_of(api.get("/v1/bit/run/box:bit.py", headers=creds.user()), 405)
    assert wrong_method["exit-code"] == -2 and "GET" in wrong_method["message"]


def test_bad_timeout_in_the_path_is_400(api, creds):
    for timeout in ("abc", "0", "-5"):
        meta = meta_of(api.post(f"/v1/bit/run/box:bit.py/sync/{timeout}", headers=creds.user()), 400)
        assert meta["exit-code"] == -2 and "timeout_ms" in meta["message"]


def test_malformed_json_is_400_with_an_envelope(api, creds):
    for headers in ({}, {"content-type": "application/json"}, {"content-type": "application/x-www-form-urlencoded"}):
        response = api.post("/v1/bit/run/box:bit.py/sync", content=b'{"name": ', headers={**creds.user(), **headers})
        meta = meta_of(response, 400)
        assert meta["exit-code"] == -2 and "malformed JSON body" in meta["message"]
        assert meta["context"] == "box:bit.py" and meta["username"] == "ops"
    not_utf8 = api.post("/v1/bit/run/box:bit.py/sync", content=b"\xff\xfe", headers=creds.user())
    assert meta_of(not_utf8, 400)["exit-code"] == -2


def test_parse_input_by_content_type():
    assert parse_input(b'{"a": 1}', None).data == {"a": 1}
    assert parse_input(b'[1, 2]', "application/json; charset=utf-8").data == [1, 2]
    assert parse_input(b'{"a": 1}', "application/vnd.flint+json").data == {"a": 1}
    assert parse_input(b"a=1&b=two", "application/x-www-form-urlencoded").data == {"a": "1", "b": "two"}
    assert parse_input(b"  ", "application/json").data == {}
    text = parse_input(b"hello", "text/plain")
    assert (text.data, text.raw, text.content_type) == ({}, "hello", "text/plain")
    with pytest.raises(InvalidRequest, match="neither JSON nor form fields"):
        parse_input(b"hello", "application/x-www-form-urlencoded")


def test_a_body_over_max_body_is_413_by_length_and_by_bytes_read(project, creds):
    project.flint({"api": {"max-body": 1024}})
    with test_client(project.settings()) as client:
        small = client.post("/v1/bit/run/box:bit.py/sync", json={"name": "x" * 900}, headers=creds.user())
        assert small.status_code == 200
        big = {"name": "x" * 2000}
        meta = meta_of(client.post("/v1/bit/run/box:bit.py/sync", json=big, headers=creds.user()), 413)
        assert meta["exit-code"] == -7 and "1024 bytes" in meta["message"]

        def chunks():  # no Content-Length: chunked, so only the bytes read can tell
            for _ in range(4):
                yield b"x" * 500

        streamed = client.post("/v1/bit/run/box:bit.py/sync", content=chunks(), headers=creds.user())
        assert "content-length" not in streamed.request.headers
        assert meta_of(streamed, 413)["exit-code"] == -7
        upload = client.put("/v1/bit/up:big.py", content="# " + "x" * 2000 + "\n", headers=creds.admin())
        assert meta_of(upload, 413)["exit-code"] == -7


def test_connectors_list_shows_no_config_values(project, creds, monkeypatch):
    monkeypatch.setenv("API_TEST_SMTP_PASSWORD", "hunter2-very-secret")
    monkeypatch.setenv("API_TEST_SMTP_HOST", "relay.internal.example")
    project.connectors({"connectors": {
        "smtp": {"type": "smtp", "description": "capture", "config": {"capture-dir": "var/mail"}},
        "relay": {"type": "smtp", "description": "Outbound relay",
                  "config": {"target": "${API_TEST_SMTP_HOST}", "port": 587, "security": "starttls",
                             "username": "ops@example.com", "password": "secrets.API_TEST_SMTP_PASSWORD"}},
    }})
    with test_client(project.settings()) as client:
        response = client.get("/v1/connectors", headers=creds.user())
    assert response.status_code == 200
    assert sorted(response.json(), key=lambda c: c["name"]) == [
        {"name": "relay", "type": "smtp", "description": "Outbound relay"},
        {"name": "smtp", "type": "smtp", "description": "capture"},
    ]
    for value in ("hunter2-very-secret", "relay.internal.example", "ops@example.com", "587", "starttls"):
        assert value not in response.text


def test_redis_unreachable_is_503_with_an_envelope_and_health_503(tmp_path, monkeypatch, creds):
    server = RedisServer().start()
    monkeypatch.chdir(tmp_path)
    project = Project(tmp_path / "p", redis_url=server.url)
    project.bit("box:bit.py", "output.set('x', 1)\n")
    UserStore(project.config_dir / "users.yaml").add("ops", "user", creds.user_password)
    headers = {"x-flint-username": "ops", "x-flint-password": creds.user_password}
    try:
        with test_client(project.settings()) as client:
            assert client.get("/v1/health").json() == {"status": "ok", "queue": "redis"}
            server.stop()
            health = client.get("/v1/health")
            meta = meta_of(health, 503)
            assert meta["exit-code"] == -8 and "queue unavailable" in meta["message"]
            assert f"127.0.0.1:{server.port}" in meta["message"]
            for response in (client.post("/v1/bit/run/box:bit.py/sync", headers=headers),
                             client.post("/v1/bit/run/box:bit.py", headers=headers),
                             client.get("/v1/bit/result/job-x", headers=headers),
                             client.get("/v1/bits", headers=headers)):
                meta = meta_of(response, 503)
                assert meta["exit-code"] == -8 and meta["username"] == "ops"
    finally:
        server.stop()
        project.close()
