"""Running flintbits and connector requests over HTTP, end to end: a real uvicorn server, httpx."""

from __future__ import annotations

import asyncio
import time

import httpx


def test_sync_run_returns_the_envelope_with_the_caller_as_username(http, creds):
    response = http.post("/v1/bit/run/box:bit.py/sync", json={"name": "ops"}, headers=creds.user())
    assert response.status_code == 200
    envelope = response.json()
    meta = envelope["meta"]
    assert (meta["status"], meta["exit-code"], meta["message"]) == ("complete", 0, "success")
    assert (meta["username"], meta["context"], meta["timeout"]) == ("ops", "box:bit.py", 60000)
    assert meta["job-id"].startswith("job-")
    assert envelope["output"]["greeting"] == "Hello, ops!"


def test_username_and_password_and_query_key_name_the_caller_too(http, creds):
    by_password = http.post("/v1/bit/run/box:bit.py/sync", json={},
                            headers={"x-flint-username": "admin", "x-flint-password": creds.admin_password})
    by_query = http.post("/v1/bit/run/box:bit.py/sync", params={"flint-key": creds.user_key}, json={})
    assert by_password.json()["meta"]["username"] == "admin"
    assert by_query.json()["meta"]["username"] == "ops"


def test_body_types_no_content_type_and_curl_form_type_are_json(http, creds):
    headers = creds.user()
    bare = http.post("/v1/bit/run/box:bit.py/sync", content=b'{"name": "bare"}', headers=headers)
    form = http.post("/v1/bit/run/box:bit.py/sync", content=b'{"name": "curl"}',
                     headers={**headers, "content-type": "application/x-www-form-urlencoded"})
    fields = http.post("/v1/bit/run/box:bit.py/sync", data={"name": "form"}, headers=headers)
    empty = http.post("/v1/bit/run/box:bit.py/sync", headers=headers)
    xml = http.post("/v1/bit/run/box:bit.py/sync", content=b"<name>x</name>",
                    headers={**headers, "content-type": "application/xml"})
    assert "content-type" not in bare.request.headers
    assert bare.json()["output"]["greeting"] == "Hello, bare!"
    assert bare.json()["output"]["raw"] == '{"name": "bare"}'
    assert form.json()["output"]["greeting"] == "Hello, curl!"
    assert form.json()["output"]["type"] == "application/json"
    assert fields.json()["output"]["greeting"] == "Hello, form!"
    assert empty.json()["output"]["greeting"] == "Hello, world!"
    assert (xml.json()["output"]["type"], xml.json()["output"]["raw"]) == ("application/xml", "<name>x</name>")


def test_async_run_returns_meta_only_then_the_result_endpoint_has_the_envelope(http, live, creds):
    receipt = http.post("/v1/bit/run/box:bit.py", json={"name": "later"}, headers=creds.user())
    assert receipt.status_code == 200
    assert receipt.json().keys() == {"meta"}
    meta = receipt.json()["meta"]
    assert (meta["status"], meta["exit-code"], meta["message"], meta["username"]) == ("submitted", 0, "success", "ops")
    live.app.state.client.result(meta["job-id"], wait_ms=20000)  # blocks on the job's end, no polling
    final = http.get(f"/v1/bit/result/{meta['job-id']}", headers=creds.user())
    assert final.status_code == 200
    assert final.json()["meta"]["status"] == "complete"
    assert final.json()["output"]["greeting"] == "Hello, later!"


def test_log_endpoint_returns_the_job_lines(http, creds):
    jobid = http.post("/v1/bit/run/box:bit.py/sync", json={"name": "ada"}, headers=creds.user()).json()["meta"]["job-id"]
    lines = http.get(f"/v1/bit/log/{jobid}", headers=creds.user())
    assert lines.status_code == 200
    assert [line["message"] for line in lines.json()] == ["greeting ada"]
    assert set(lines.json()[0]) == {"ts", "level", "message"}


def test_sync_with_a_timeout_aborts_a_sleeping_flintbit_within_seconds(http, project, creds):
    project.bit("box:sleep.py", "import time\ntime.sleep(30)\noutput.set('woke', True)\n")
    started = time.monotonic()
    response = http.post("/v1/bit/run/box:sleep.py/sync/1000", headers=creds.user())
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    meta = response.json()["meta"]
    assert elapsed < 5, f"the sync call took {elapsed:.1f} s"
    assert (meta["status"], meta["exit-code"], meta["timeout"]) == ("aborted", -6, 1000)
    assert meta["message"] == "timed out after 1000 ms"
    after = http.get(f"/v1/bit/result/{meta['job-id']}", headers=creds.user()).json()["meta"]
    assert (after["status"], after["exit-code"]) == ("aborted", -6)


def test_a_flintbit_failure_is_still_200_with_the_failure_in_the_envelope(http, project, creds):
    project.bit("box:boom.py", "1 / 0\n")
    project.bit("box:exit.py", "output.exit(7, 'nope')\n")
    boom = http.post("/v1/bit/run/box:boom.py/sync", headers=creds.user())
    nope = http.post("/v1/bit/run/box:exit.py/sync", headers=creds.user())
    assert boom.status_code == nope.status_code == 200
    assert (boom.json()["meta"]["exit-code"], boom.json()["meta"]["message"]) == (1, "ZeroDivisionError: division by zero")
    assert (nope.json()["meta"]["exit-code"], nope.json()["meta"]["message"]) == (7, "nope")


def test_direct_connector_request_sync_and_async(http, live, project, creds):
    body = {"to": "ops@example.com", "subject": "From the API", "body": "<p>hi</p>"}
    sync = http.post("/v1/connector/run/smtp/sync", json=body, headers=creds.user())
    assert sync.status_code == 200
    meta = sync.json()["meta"]
    assert (meta["exit-code"], meta["context"], meta["username"]) == (0, "connector:smtp", "ops")
    assert sync.json()["output"]["accepted"] == ["ops@example.com"]
    invalid = http.post("/v1/connector/run/smtp/sync/5000", json={"subject": "no recipient"}, headers=creds.user())
    assert invalid.status_code == 200 and invalid.json()["meta"]["exit-code"] == -2
    receipt = http.post("/v1/connector/run/smtp", json=body, headers=creds.user()).json()
    assert receipt.keys() == {"meta"} and receipt["meta"]["status"] == "submitted"
    final = live.app.state.client.result(receipt["meta"]["job-id"], wait_ms=20000)
    assert final["meta"]["exit-code"] == 0
    not_object = http.post("/v1/connector/run/smtp/sync", json=["a"], headers=creds.user())
    assert not_object.status_code == 400


def test_upload_run_read_list_and_delete_a_flintbit(http, creds):
    source = "output.set('uploaded', input.get('n', 0) + 1)\n"
    denied = http.put("/v1/bit/up:plus.py", content=source, headers=creds.user())
    assert denied.status_code == 403
    assert (denied.json()["meta"]["exit-code"], denied.json()["meta"]["username"]) == (-9, "ops")
    first = http.put("/v1/bit/up:plus.py", content=source, headers=creds.admin())
    second = http.put("/v1/bit/up:plus.py", content=source, headers=creds.admin())
    assert first.status_code == second.status_code == 200
    assert first.json()["ref"] == "up:plus.py"
    assert second.json()["version"] > first.json()["version"]

    ran = http.post("/v1/bit/run/up:plus.py/sync", json={"n": 41}, headers=creds.user())
    assert ran.json()["output"] == {"uploaded": 42}
    read = http.get("/v1/bit/up:plus.py", headers=creds.user())
    assert read.status_code == 200 and read.text == source
    assert read.headers["content-type"].startswith("text/plain")
    listed = http.get("/v1/bits", headers=creds.user()).json()
    assert {"ref": "up:plus.py", "origin": "upload"} in listed
    assert "box:bit.py" in [bit["ref"] for bit in listed]

    assert http.delete("/v1/bit/up:plus.py", headers=creds.user()).status_code == 403
    deleted = http.delete("/v1/bit/up:plus.py", headers=creds.admin())
    assert deleted.status_code == 200 and deleted.json() == {"ref": "up:plus.py", "deleted": True}
    assert http.get("/v1/bit/up:plus.py", headers=creds.user()).status_code == 404
    assert http.post("/v1/bit/run/up:plus.py/sync", headers=creds.user()).status_code == 404


def test_an_upload_that_does_not_compile_is_400_naming_the_line(http, creds):
    response = http.put("/v1/bit/up:bad.py", content="x = 1\ny = (\nz = 2\n", headers=creds.admin())
    assert response.status_code == 400
    meta = response.json()["meta"]
    assert meta["exit-code"] == -2
    assert "line 2" in meta["message"] and "up:bad.py" in meta["message"]
    assert http.get("/v1/bit/up:bad.py", headers=creds.admin()).status_code == 404


def test_a_hundred_waiting_sync_calls_do_not_starve_the_server(live, project, creds):
    """Both workers are busy, so 100 sync calls all wait at once; the server still answers others."""
    project.bit("box:sleep.py", "import time\ntime.sleep(30)\n")
    queue = live.app.state.client.queue
    stream = queue.keys.queue("bits")

    async def main() -> None:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=live.url, timeout=60, limits=limits, headers=creds.user()) as client:
            for _ in range(2):  # one sleeping job per embedded worker, aborted after 3 s
                live.app.state.client.run_bit("box:sleep.py", timeout_ms=3000, wait=False)
            calls = [asyncio.ensure_future(client.post("/v1/bit/run/box:bit.py/sync", json={"name": f"n{i}"}))
                     for i in range(100)]
            deadline = time.monotonic() + 20
            while queue.redis.xlen(stream) < 102:  # every call has queued its job and is now waiting
                assert time.monotonic() < deadline, "the 100 sync calls were not all accepted"
                await asyncio.sleep(0.02)
            health = await client.get("/v1/health")
            listing = await client.get("/v1/bits")
            assert health.status_code == listing.status_code == 200
            assert not any(call.done() for call in calls), "the sync calls should still be waiting"
            results = await asyncio.gather(*calls)
        assert [r.status_code for r in results] == [200] * 100
        assert sorted(r.json()["output"]["greeting"] for r in results) == sorted(f"Hello, n{i}!" for i in range(100))

    asyncio.run(main())
