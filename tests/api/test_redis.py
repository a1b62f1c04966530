"""The API on a real redis-server, with a worker that is not the API's (as in production)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import httpx
import pytest

from runtime.auth import UserStore
from runtime.queue import JobQueue, connect
from runtime.worker import Worker, default_queues
from tests.api.conftest import LiveServer


@pytest.fixture
def redis_worker(redis_project):
    """One worker on the project's Redis, in a thread; stopped at teardown."""
    settings = redis_project.settings()
    worker = Worker(settings, JobQueue(connect(settings), settings), default_queues(settings, None), burst=False)
    thread = threading.Thread(target=worker.work, name="api-test-worker", daemon=True)
    thread.start()
    yield worker
    worker.stop()
    thread.join(15)


def test_upload_with_the_cli_then_run_read_and_log_over_http(redis_project, redis_worker, tmp_path):
    key = UserStore(redis_project.config_dir / "users.yaml").add("ann", "user")
    script = tmp_path / "shout.py"
    script.write_text("log.warn('shouting')\noutput.set('shout', input.get('word', '').upper())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLINT_")}
    uploaded = subprocess.run(
        [sys.executable, "-c", "from runtime.cli import main; main()", "--config", str(redis_project.config_dir),
         "--redis", redis_project.redis_url, "upload", str(script), "up:shout.py"],
        capture_output=True, text=True, env=env, timeout=30, stdin=subprocess.DEVNULL)
    assert uploaded.returncode == 0, uploaded.stderr
    assert '"version"' in uploaded.stdout and '"up:shout.py"' in uploaded.stdout

    server = LiveServer(redis_project.settings()).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30, headers={"flint-key": key}) as http:
            assert http.get("/v1/health").json() == {"status": "ok", "queue": "redis"}
            ran = http.post("/v1/bit/run/up:shout.py/sync/10000", json={"word": "hey"})
            assert ran.status_code == 200
            meta = ran.json()["meta"]
            assert (meta["status"], meta["exit-code"], meta["username"], meta["timeout"]) == ("complete", 0, "ann", 10000)
            assert ran.json()["output"] == {"shout": "HEY"}
            assert http.get(f"/v1/bit/result/{meta['job-id']}").json() == ran.json()
            assert [(line["level"], line["message"]) for line in http.get(f"/v1/bit/log/{meta['job-id']}").json()] \
                == [("warn", "shouting")]
            assert http.get("/v1/bit/up:shout.py").text == script.read_text()
            assert {"ref": "up:shout.py", "origin": "upload"} in http.get("/v1/bits").json()

            receipt = http.post("/v1/bit/run/up:shout.py", json={"word": "later"}).json()["meta"]
            assert receipt["status"] == "submitted"
            final = server.app.state.client.result(receipt["job-id"], wait_ms=20000)
            assert final["output"] == {"shout": "LATER"}
    finally:
        server.stop()
