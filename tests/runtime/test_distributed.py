"""The runtime on a real redis-server with real ``flint worker`` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from runtime.errors import QueueUnavailable
from tests.servers.workers import wait_for
from runtime.settings import Settings
from runtime.client import FlintClient


def test_async_submit_then_result_through_a_worker_process(redis_project, workers):
    ref = redis_project.bit("t:hello.py", "log.info('on a worker')\noutput.set('pid', __import__('os').getpid())\n")
    client = redis_project.client()
    receipt = client.run_bit(ref, {"x": 1}, wait=False, username="ann")
    assert receipt["meta"]["status"] == "submitted" and receipt.keys() == {"meta"}
    workers.start()
    final = client.result(receipt["meta"]["job-id"], wait_ms=20000)
    assert (final["meta"]["status"], final["meta"]["exit-code"], final["meta"]["username"]) == ("complete", 0, "ann")
    assert final["output"]["pid"] != os.getpid()
    assert [line["message"] for line in client.logs(receipt["meta"]["job-id"])] == ["on a worker"]


def test_two_workers_300_async_sends_every_message_exactly_once(redis_project, workers, smtp_server):
    redis_project.connectors({"connectors": {"smtp": {"type": "smtp", "config": smtp_server.config(
        **{"from": "flint@example.com"})}}})
    client = redis_project.client()
    jobids = [client.call_connector("smtp", {"to": f"user{i}@example.com", "subject": f"n{i}", "body": "x"},
                                    wait=False)["meta"]["job-id"] for i in range(300)]
    workers.start(name="w1")
    workers.start(name="w2")
    finals = [client.result(jobid, wait_ms=60000) for jobid in jobids]
    assert [f["meta"]["status"] for f in finals] == ["complete"] * 300, [f["meta"] for f in finals if f["meta"]["status"] != "complete"][:3]
    subjects = sorted(r.message["Subject"] for r in smtp_server.received)
    assert len(subjects) == 300 and subjects == sorted(f"n{i}" for i in range(300))
    served_by = {json.loads(client.queue.redis.hget(client.queue.keys.job(j), "meta") or "{}").get("job-id") for j in jobids}
    assert len(served_by) == 300


def test_sigkilled_worker_job_is_marked_lost_by_the_survivor(redis_project, workers):
    redis_project.flint({"worker": {"lost-after": 2}})
    ref = redis_project.bit("t:slow.py", "import time\ntime.sleep(20)\n")
    client = redis_project.client()
    victim = workers.start(name="victim")
    receipt = client.run_bit(ref, {}, wait=False)
    jobid = receipt["meta"]["job-id"]
    wait_for(lambda: client.result(jobid)["meta"]["status"] == "running", 15)
    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    workers.start(name="survivor")
    final = client.result(jobid, wait_ms=15000)
    elapsed = time.monotonic() - killed_at
    assert (final["meta"]["status"], final["meta"]["exit-code"]) == ("error", -8)
    assert final["meta"]["message"] == "worker lost while running the job"
    assert elapsed < 2 + 2 + 2  # lost-after, one heartbeat, and a margin for process start
    ok = client.run_bit(redis_project.bit("t:ok.py", "output.set('ok', 1)\n"), {}, timeout_ms=10000)
    assert ok["output"] == {"ok": 1}


def test_retryable_flintbit_is_requeued_and_runs_again(redis_project, workers):
    redis_project.flint({"worker": {"lost-after": 2}})
    marker = redis_project.root / "attempts"
    ref = redis_project.bit("t:retry.py", f"""\
        # flint: retryable
        import time
        from pathlib import Path
        p = Path({str(marker)!r})
        n = int(p.read_text()) + 1 if p.exists() else 1
        p.write_text(str(n))
        if n == 1:
            time.sleep(30)
        output.set("attempt", n)
    """)
    client = redis_project.client()
    victim = workers.start(name="victim")
    jobid = client.run_bit(ref, {}, wait=False)["meta"]["job-id"]
    wait_for(lambda: marker.exists(), 15)
    os.killpg(victim.pid, signal.SIGKILL)
    workers.start(name="survivor")
    final = client.result(jobid, wait_ms=20000)
    assert (final["meta"]["status"], final["output"]) == ("complete", {"attempt": 2})


def test_os_exit_on_a_worker_process_and_the_worker_serves_the_next(redis_project, workers):
    client = redis_project.client()
    workers.start()
    crash = client.run_bit(redis_project.bit("t:crash.py", "import os\nos._exit(9)\n"), {}, timeout_ms=10000)
    assert (crash["meta"]["status"], crash["meta"]["exit-code"]) == ("error", -8)
    nxt = client.run_bit(redis_project.bit("t:next.py", "output.set('next', True)\n"), {}, timeout_ms=10000)
    assert nxt["output"] == {"next": True}


def test_connector_only_worker_serves_async_connector_calls(redis_project, workers, smtp_server):
    redis_project.connectors({"connectors": {"mail": {"type": "smtp", "config": smtp_server.config(
        **{"from": "flint@example.com"})}}})
    ref = redis_project.bit("t:fanout.py", """\
        r = connector("mail").set("to", "a@example.com").set("subject", "async").set("body", "x").async_()
        done = r.wait(10000)
        output.set("status", done.status).set("context", done.context).set("accepted", done.get("accepted"))
    """)
    workers.start(name="bits")
    workers.start("--connectors", "mail", name="mailer")
    env = redis_project.client().run_bit(ref, {}, timeout_ms=20000)
    assert env["output"] == {"status": "complete", "context": "connector:mail", "accepted": ["a@example.com"]}
    assert len(smtp_server.received) == 1


def test_a_timeout_aborts_a_blocking_call_and_the_worker_goes_on(redis_project, workers):
    client = redis_project.client()
    workers.start()
    started = time.monotonic()
    env = client.run_bit(redis_project.bit("t:block.py", "import socket\nsocket.socket().accept() if False else __import__('time').sleep(30)\n"),
                         {}, timeout_ms=1000)
    assert (env["meta"]["status"], env["meta"]["exit-code"]) == ("aborted", -6)
    assert time.monotonic() - started < 5
    assert client.run_bit(redis_project.bit("t:after.py", "output.set('a', 1)\n"), {}, timeout_ms=10000)["output"] == {"a": 1}


def test_redis_unreachable_is_a_clear_error(tmp_path, monkeypatch, closed_port):
    monkeypatch.chdir(tmp_path)
    host, port = closed_port
    url = f"redis://:not-shown-pw@{host}:{port}/0"
    from tests.project import Project

    project = Project(tmp_path, redis_url=url)
    with pytest.raises(QueueUnavailable) as caught:
        FlintClient(Settings.load(project.config_dir, redis_url=url, env={})).run_bit(
            project.bit("t:x.py", "pass\n"), {})
    assert caught.value.message == f"queue unavailable: cannot reach Redis at {host}:{port}"
    result = subprocess.run([sys.executable, "-c", "from runtime.cli import main; main()", "--config",
                             str(project.config_dir), "--redis", url, "run", "t:x.py"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert f"cannot reach Redis at {host}:{port}" in result.stderr and "not-shown-pw" not in result.stderr + result.stdout
    assert json.loads(result.stdout)["meta"]["exit-code"] == -8
    worker = subprocess.run([sys.executable, "-c", "from runtime.cli import main; main()", "--config",
                             str(project.config_dir), "--redis", url, "worker"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert worker.returncode == 1 and f"cannot reach Redis at {host}:{port}" in worker.stderr


def test_work_in_several_queues_at_once_is_all_run_and_nothing_left_pending(redis_project, smtp_server):
    from runtime.queue import JobQueue, connect
    from runtime.worker import Worker

    redis_project.connectors({"connectors": {"smtp": {"type": "smtp", "config": smtp_server.config(
        **{"from": "flint@example.com"})}}})
    client = redis_project.client()
    ref = redis_project.bit("t:noop.py", "output.set('ok', True)\n")
    jobids = []
    for i in range(5):
        jobids.append(client.run_bit(ref, {}, wait=False)["meta"]["job-id"])
        jobids.append(client.call_connector("smtp", {"to": f"u{i}@example.com", "subject": "s", "body": "b"},
                                            wait=False)["meta"]["job-id"])
    settings = redis_project.settings()
    queue = JobQueue(connect(settings), settings)
    done = Worker(settings, queue, ["bits", "connector:smtp"], burst=True).work()
    assert done == 10
    assert {client.result(j)["meta"]["status"] for j in jobids} == {"complete"}
    for name in ("bits", "connector:smtp"):
        assert queue.redis.xpending(queue.keys.queue(name), "workers")["pending"] == 0
    assert len(smtp_server.received) == 5


def test_a_sync_wait_longer_than_a_socket_timeout(redis_project, workers):
    workers.start()
    ref = redis_project.bit("t:six.py", "import time\ntime.sleep(6)\noutput.set('slept', 6)\n")
    envelope = redis_project.client().run_bit(ref, {}, timeout_ms=20000)
    assert (envelope["meta"]["status"], envelope["output"]) == ("complete", {"slept": 6})
