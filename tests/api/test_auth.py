"""API authentication and roles: the three credential forms, 401/403, the users file."""

from __future__ import annotations

import stat

import pytest
import yaml

from runtime.auth import UserStore, hash_key, verify_password
from tests.api.conftest import test_client

RUN = "/v1/bit/run/box:bit.py/sync"


def assert_401(response, needle: str) -> None:
    assert response.status_code == 401, response.text
    meta = response.json()["meta"]
    assert (meta["exit-code"], meta["status"], meta["username"]) == (-5, "error", "")
    assert needle in meta["message"]


@pytest.mark.parametrize("path", ["/v1/bits", "/v1/connectors", "/v1/bit/box:bit.py", "/v1/bit/result/job-x",
                                  "/v1/bit/log/job-x"])
def test_every_endpoint_but_health_needs_credentials(api, path):
    assert_401(api.get(path), "authentication required")


def test_no_credentials_for_a_run_is_401(api):
    assert_401(api.post(RUN, json={}), "authentication required")


def test_flint_key_header_right_and_wrong(api, creds):
    assert api.post(RUN, headers={"flint-key": creds.user_key}).status_code == 200
    assert_401(api.post(RUN, headers={"flint-key": creds.user_key + "x"}), "invalid flint-key")
    assert_401(api.post(RUN, headers={"flint-key": ""}), "authentication required")


def test_flint_key_query_right_and_wrong(api, creds):
    assert api.post(RUN, params={"flint-key": creds.user_key}).status_code == 200
    assert_401(api.post(RUN, params={"flint-key": "not-a-key"}), "invalid flint-key")


def test_username_and_password_right_and_wrong(api, creds):
    ok = api.post(RUN, headers={"x-flint-username": "ops", "x-flint-password": creds.user_password})
    assert ok.status_code == 200 and ok.json()["meta"]["username"] == "ops"
    again = api.post(RUN, headers={"x-flint-username": "ops", "x-flint-password": creds.user_password})
    assert again.status_code == 200  # the second check is served from the verified cache
    for headers in ({"x-flint-username": "ops", "x-flint-password": "wrong"},
                    {"x-flint-username": "nobody", "x-flint-password": creds.user_password},
                    {"x-flint-username": "admin", "x-flint-password": creds.user_password},
                    {"x-flint-username": "ops"},
                    {"x-flint-password": creds.user_password}):
        response = api.post(RUN, headers=headers)
        assert_401(response, "invalid username or password")
        assert creds.user_password not in response.text


def test_a_wrong_key_is_refused_even_with_a_right_password(api, creds):
    headers = {"flint-key": "wrong", "x-flint-username": "ops", "x-flint-password": creds.user_password}
    assert_401(api.post(RUN, headers=headers), "invalid flint-key")


def test_no_users_configured_means_401_saying_so(project, caplog):
    project.bit("box:bit.py", "output.set('x', 1)\n")
    with caplog.at_level("WARNING", logger="runtime.api"), test_client(project.settings()) as client:
        response = client.post(RUN, headers={"flint-key": "anything"})
    assert "no API users" in caplog.text  # said once at start-up too
    assert_401(response, "no API users are configured")
    assert "flint user add" in response.json()["meta"]["message"]


def test_users_added_later_take_effect_without_restart_and_a_new_key_replaces_the_old(api, project, creds):
    store = UserStore(project.config_dir / "users.yaml")
    new_key = store.add("late", "user")
    assert api.get("/v1/bits", headers={"flint-key": new_key}).status_code == 200
    rotated = store.add("late", "user")
    assert_401(api.get("/v1/bits", headers={"flint-key": new_key}), "invalid flint-key")
    assert api.get("/v1/bits", headers={"flint-key": rotated}).status_code == 200
    # a key-only user has no password to sign in with
    assert_401(api.get("/v1/bits", headers={"x-flint-username": "late", "x-flint-password": ""}),
               "invalid username or password")


def test_only_admins_upload_or_delete(api, creds):
    for headers in (creds.user(), {"x-flint-username": "ops", "x-flint-password": creds.user_password}):
        upload = api.put("/v1/bit/up:x.py", content="output.set('a', 1)\n", headers=headers)
        assert upload.status_code == 403
        assert (upload.json()["meta"]["exit-code"], upload.json()["meta"]["username"]) == (-9, "ops")
        assert "admin" in upload.json()["meta"]["message"]
        assert api.delete("/v1/bit/up:x.py", headers=headers).status_code == 403
    assert api.put("/v1/bit/up:x.py", content="output.set('a', 1)\n", headers=creds.admin()).status_code == 200
    assert api.delete("/v1/bit/up:x.py", headers=creds.admin()).status_code == 200


def test_the_users_file_holds_hashes_only_and_is_private(project, creds):
    path = project.config_dir / "users.yaml"
    text = path.read_text()
    assert creds.admin_key not in text and creds.admin_password not in text
    assert creds.user_key not in text and creds.user_password not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    users = yaml.safe_load(text)["users"]
    assert users["admin"]["role"] == "admin" and users["ops"]["role"] == "user"
    assert users["admin"]["key-hash"] == hash_key(creds.admin_key)
    assert users["admin"]["password-hash"].startswith("scrypt$")
    assert verify_password(creds.admin_password, users["admin"]["password-hash"])
    assert not verify_password("wrong", users["admin"]["password-hash"])
    # salted: the same password hashes differently for two users
    other = UserStore(path)
    other.add("twin", "user", creds.admin_password)
    assert yaml.safe_load(path.read_text())["users"]["twin"]["password-hash"] != users["admin"]["password-hash"]


def test_health_and_openapi_need_no_credentials(api):
    health = api.get("/v1/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "queue": "embedded"}
    document = api.get("/openapi.json")
    assert document.status_code == 200
    paths = document.json()["paths"]
    for path in ("/v1/bit/run/{ref}", "/v1/bit/run/{ref}/sync", "/v1/bit/run/{ref}/sync/{timeout_ms}",
                 "/v1/bit/result/{job_id}", "/v1/bit/log/{job_id}", "/v1/bit/{ref}", "/v1/bits",
                 "/v1/connector/run/{name}", "/v1/connector/run/{name}/sync",
                 "/v1/connector/run/{name}/sync/{timeout_ms}", "/v1/connectors", "/v1/health"):
        assert path in paths
    schemes = document.json()["components"]["securitySchemes"]
    assert {scheme["name"] for scheme in schemes.values()} == {"flint-key", "x-flint-username", "x-flint-password"}
