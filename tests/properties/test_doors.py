"""Bad input at the doors of the runtime: flintbit refs that try to leave the flintbit directories,
oversized bodies and uploads, and JSON that Python's json module takes but the runtime cannot carry.

A file planted outside the flintbits directory (and reachable through symlinks inside it) is
never read, run or returned, whatever the ref looks like, at the API, the CLI or the store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from runtime.api import MAX_JSON_DEPTH, create_app
from runtime.auth import UserStore
from runtime.errors import InvalidRequest, NotFound
from runtime.store import FlintbitStore

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

PLANTED = "PLANTED-SECRET-7f3a"

TRAVERSALS = [
    "..", "..:secret.py", "box:..:secret.py", "box:..:..:secret.py", "%2e%2e:secret.py", "%2E%2E%3Asecret.py",
    "box%3A..%3Asecret.py", "box::secret.py", ":secret.py", "secret.py:", "box:.:..:secret.py",
    "%2Fsecret.py", "%2F..%2Fsecret.py", "box%2F..%2F..%2Fsecret.py", "..%5Csecret.py", "box:..%5C..%5Csecret.py",
    "%E2%80%A5:secret.py", "%EF%BC%8E%EF%BC%8E:secret.py", "%C0%AE%C0%AE:secret.py", "%252e%252e:secret.py",
    "secret.py%00.py", "box:link.py", "linkdir:secret.py", "linkdir:box:bit.py", "~:secret.py", "box:*.py",
]


@pytest.fixture
def planted(project):
    """A flintbit outside the flintbits directory, and links to it from inside."""
    secret = project.root / "secret.py"
    secret.write_text(f"output.set('leak', '{PLANTED}')\n# {PLANTED}\n")
    project.bit("box:bit.py", "output.set('ok', True)\n")
    (project.bits_dir / "box" / "link.py").symlink_to(secret)
    (project.bits_dir / "linkdir").symlink_to(project.root, target_is_directory=True)
    return secret


@pytest.fixture
def admin_key(project):
    return UserStore(project.config_dir / "users.yaml").add("admin", "admin", "admin-pass-1")


@pytest.fixture
def api(project, planted, admin_key):
    with TestClient(create_app(project.settings()), raise_server_exceptions=False) as client:
        client.headers["flint-key"] = admin_key
        yield client


def assert_refused(response, codes=(400, 404, 405)):
    assert response.status_code in codes, (response.status_code, response.text)
    assert PLANTED not in response.text
    body = response.json()
    assert body["output"] == {} and body["meta"]["exit-code"] in (-2, -3)


@pytest.mark.parametrize("ref", TRAVERSALS)
def test_a_ref_never_reaches_outside_the_flintbit_directories_at_the_api(api, planted, ref):
    before = planted.read_bytes()
    assert_refused(api.get(f"/v1/bit/{ref}"))
    assert_refused(api.post(f"/v1/bit/run/{ref}/sync"))
    assert_refused(api.post(f"/v1/bit/run/{ref}"))
    assert_refused(api.delete(f"/v1/bit/{ref}"))
    upload = api.put(f"/v1/bit/{ref}", content="output.set('uploaded', 1)\n")
    if upload.status_code == 200:  # a well-formed ref: the upload is kept in the queue, no file is written
        assert api.get(f"/v1/bit/{ref}").text == "output.set('uploaded', 1)\n"
        assert api.post(f"/v1/bit/run/{ref}/sync").json()["output"] == {"uploaded": 1}
        assert api.delete(f"/v1/bit/{ref}").status_code == 200
        assert_refused(api.get(f"/v1/bit/{ref}"))
    else:
        assert_refused(upload)
    assert planted.read_bytes() == before
    assert PLANTED not in api.get("/v1/bits").text
    assert api.post("/v1/bit/run/box:bit.py/sync").json()["output"] == {"ok": True}


@pytest.mark.parametrize("ref", ["..:secret.py", "box:..:..:secret.py", "box:link.py", "linkdir:secret.py",
                                 "/etc/passwd", "..\\secret.py", "\u2025:secret.py", "\uff0e\uff0e:secret.py"])
def test_a_ref_never_reaches_outside_the_flintbit_directories_at_the_cli(project, planted, ref):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLINT_")}
    result = subprocess.run([sys.executable, "-c", "from runtime.cli import main; main()", "--config",
                             str(project.config_dir), "run", ref], cwd=project.root, env=environ,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert PLANTED not in result.stdout + result.stderr
    assert json.loads(result.stdout)["meta"]["exit-code"] in (-2, -3)


SEGMENTS = st.one_of(st.sampled_from(["..", ".", "", "box", "secret.py", "link.py", "linkdir", "bit.py", "...",
                                      "%2e%2e", "\u2025", "..\\", "/", "/etc", "\x00", " ..", ".. "]),
                     st.text(max_size=6))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segments=st.lists(SEGMENTS, min_size=1, max_size=5))
@example(segments=["linkdir", "secret.py"])
@example(segments=["box", "link.py"])
def test_the_store_resolves_any_ref_inside_its_directories_or_refuses_it(project, planted, segments):
    store = FlintbitStore([project.bits_dir])
    ref = ":".join(segments)
    try:
        script = store.find(ref)
    except (InvalidRequest, NotFound) as exc:
        assert exc.exit_code in (-2, -3)
        return
    assert PLANTED not in script.source
    assert os.path.realpath(script.origin).startswith(str(project.bits_dir.resolve()) + os.sep)


def test_an_upload_over_max_body_is_413_and_one_under_it_runs(api):
    huge = "# " + "x" * (10 * 1024 * 1024) + "\n"
    response = api.put("/v1/bit/up:huge.py", content=huge)
    assert response.status_code == 413 and response.json()["meta"]["exit-code"] == -7
    assert api.get("/v1/bit/up:huge.py").status_code == 404
    big = ("# " + "x" * 1000 + "\n") * 9000 + "output.set('ran', True)\n"  # 9 MB: within api.max-body
    assert api.put("/v1/bit/up:big.py", content=big).status_code == 200
    env = api.post("/v1/bit/run/up:big.py/sync").json()
    assert (env["meta"]["status"], env["meta"]["exit-code"], env["output"]) == ("complete", 0, {"ran": True})


def test_a_body_over_max_body_is_413_at_every_door(api):
    body = b'{"a": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    for path in ("/v1/bit/run/box:bit.py", "/v1/bit/run/box:bit.py/sync", "/v1/bit/run/box:bit.py/sync/5000",
                 "/v1/connector/run/smtp", "/v1/connector/run/smtp/sync", "/v1/connector/run/smtp/sync/5000"):
        response = api.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 413 and response.json()["meta"]["exit-code"] == -7, path


@pytest.mark.parametrize("body, problem", [
    ("[" * 5000 + "]" * 5000, f"nested deeper than {MAX_JSON_DEPTH} levels"),
    ("[" * 600 + "]" * 600, f"nested deeper than {MAX_JSON_DEPTH} levels"),
    ('{"a":' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1), "nested deeper"),
    ("1" * 5000, "more than 4300 digits"),
    ('{"n": 1e99999}', "too large"),
    ('{"n": NaN}', "NaN is not a JSON value"),
    ('[-Infinity]', "-Infinity is not a JSON value"),
    ('{"name": "\\ud800"}', "surrogate"),
    ('{"name": "x\\uDC00y"}', "surrogate"),
])
def test_json_the_runtime_cannot_carry_is_refused_400(api, body, problem):
    for path in ("/v1/bit/run/box:bit.py/sync", "/v1/connector/run/smtp/sync"):
        response = api.post(path, content=body.encode(), headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        meta = response.json()["meta"]
        assert meta["exit-code"] == -2 and problem in meta["message"]
    assert api.post("/v1/bit/run/box:bit.py/sync").json()["output"] == {"ok": True}  # the workers are fine


def test_json_nested_to_the_limit_and_surrogate_pairs_are_fine(api, project):
    project.bit("box:echo.py", "output.set('got', input.data())\n")
    nested = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    env = api.post("/v1/bit/run/box:echo.py/sync", content=nested.encode()).json()
    assert env["meta"]["exit-code"] == 0
    env = api.post("/v1/bit/run/box:echo.py/sync", content=b'{"s": "\\ud83d\\ude00"}').json()
    assert env["output"]["got"] == {"s": "\U0001F600"}


def test_a_flintbit_writing_a_lone_surrogate_gets_an_envelope_not_a_500(api, project):
    project.bit("box:surrogate.py", "log.info('bad \\ud800 text')\noutput.set('s', 'a\\udfffb')\n")
    response = api.post("/v1/bit/run/box:surrogate.py/sync")
    assert response.status_code == 200, response.text
    env = response.json()
    assert env["meta"]["exit-code"] == 0 and env["output"] == {"s": "a\ufffdb"}
    result = api.get(f"/v1/bit/result/{env['meta']['job-id']}")
    assert result.status_code == 200 and result.json()["output"] == {"s": "a\ufffdb"}
    log = api.get(f"/v1/bit/log/{env['meta']['job-id']}")
    assert log.status_code == 200 and log.json()[0]["message"] == "bad \ufffd text"


@pytest.mark.parametrize("timeout", ["86400001", "9999999999999", str(2 ** 63), "99999999999999999999"])
def test_a_timeout_past_a_day_is_400_not_a_crashed_worker(api, timeout):
    for path in (f"/v1/bit/run/box:bit.py/sync/{timeout}", f"/v1/connector/run/smtp/sync/{timeout}"):
        response = api.post(path, json={})
        assert response.status_code == 400, response.text
        meta = response.json()["meta"]
        assert meta["exit-code"] == -2 and "timeout_ms" in meta["message"]
    env = api.post("/v1/bit/run/box:bit.py/sync/86400000").json()
    assert (env["meta"]["exit-code"], env["meta"]["timeout"], env["output"]) == (0, 86400000, {"ok": True})
