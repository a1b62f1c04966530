"""Faults with real processes: Redis going away under load, workers killed at random points.

Every flintbit here appends its input ``n`` to an evidence file when it runs, so the tests can
tell what really ran from what the runtime reports.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from collections import Counter

import pytest

from runtime.client import FlintClient
from runtime.envelope import Status
from runtime.errors import QueueUnavailable
from tests.project import Project
from tests.servers.redis import RedisServer
from tests.servers.workers import Workers, wait_for

EVIDENCE_BIT = """\
import os, time
fd = os.open({path!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
os.write(fd, (str(input.get("n")) + "\\n").encode())
os.close(fd)
time.sleep(input.get("sleep", 0))
output.set("n", input.get("n"))
"""


def evidence(path) -> Counter:
    return Counter(int(line) for line in path.read_text().split()) if path.exists() else Counter()


def final(client: FlintClient, jobid: str, timeout: float) -> dict:
    """The job's envelope once it is final, riding out a Redis outage on the client side."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            envelope = client.result(jobid, wait_ms=1000)
            if Status(envelope["meta"]["status"]).final:
                return envelope
        except QueueUnavailable:
            time.sleep(0.1)
        if time.monotonic() > deadline:
            raise AssertionError(f"{jobid} not final in {timeout} s")


@pytest.fixture
def persistent_redis():
    server = RedisServer(persistent=True).start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


def test_redis_stopped_and_restarted_under_load(tmp_path, monkeypatch, persistent_redis):
    monkeypatch.chdir(tmp_path)
    project = Project(tmp_path, redis_url=persistent_redis.url)
    project.flint({"worker": {"lost-after": 3}})
    marks = tmp_path / "ran"
    ref = project.bit("t:mark.py", EVIDENCE_BIT.format(path=str(marks)))
    client = project.client()
    jobids = [client.run_bit(ref, {"n": n, "sleep": 0.01}, wait=False)["meta"]["job-id"] for n in range(300)]
    pool = Workers(project)
    try:
        first, second = pool.start(name="w1"), pool.start(name="w2")
        wait_for(lambda: sum(evidence(marks).values()) >= 60, 30)
        persistent_redis.stop()
        with pytest.raises(QueueUnavailable, match="cannot reach Redis at 127.0.0.1"):
            client.result(jobids[0])
        time.sleep(3)  # longer than a heartbeat: the workers back off and wait, they do not exit
        assert first.poll() is None and second.poll() is None
        persistent_redis.start()
        finals = [final(client, jobid, 60) for jobid in jobids]
    finally:
        pool.stop_all()
        project.close()
    ran = evidence(marks)
    statuses = Counter(f["meta"]["status"] for f in finals)
    assert statuses == {"complete": 300}, statuses
    assert all(count == 1 for count in ran.values()) and set(ran) == set(range(300))  # once each, none lost
    assert sorted(f["output"]["n"] for f in finals) == list(range(300))


def test_workers_killed_at_random_points_never_run_a_job_twice(redis_project, workers):
    redis_project.flint({"worker": {"lost-after": 1}})
    marks = redis_project.root / "ran"
    ref = redis_project.bit("t:mark.py", EVIDENCE_BIT.format(path=str(marks)))
    client = redis_project.client()
    rng = random.Random(1234)
    jobids = [client.run_bit(ref, {"n": n, "sleep": rng.uniform(0, 0.05)}, wait=False)["meta"]["job-id"]
              for n in range(60)]
    for round_ in range(4):
        victim = workers.start(name=f"victim-{round_}")
        time.sleep(rng.uniform(0.3, 0.9))  # start-up included: some die before, some during jobs
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(5)
    workers.start(name="survivor")
    finals = {jobid: final(client, jobid, 60) for jobid in jobids}
    ran = evidence(marks)
    lost = [f for f in finals.values() if f["meta"]["status"] == "error"]
    assert all(f["meta"]["status"] in ("complete", "error") for f in finals.values())
    assert max(ran.values()) == 1  # nothing ran twice
    for jobid, envelope in finals.items():
        n = jobids.index(jobid)
        if envelope["meta"]["status"] == "complete":
            assert ran[n] == 1 and envelope["output"] == {"n": n}
        else:
            assert (envelope["meta"]["exit-code"], envelope["meta"]["message"]) == (-8, "worker lost while running the job")
    assert len(lost) <= 4  # at most the one job each killed worker was running


def test_sigterm_lets_the_running_job_finish(redis_project, workers):
    marks = redis_project.root / "ran"
    ref = redis_project.bit("t:mark.py", EVIDENCE_BIT.format(path=str(marks)))
    client = redis_project.client()
    worker = workers.start(name="graceful")
    jobid = client.run_bit(ref, {"n": 7, "sleep": 1.5}, wait=False)["meta"]["job-id"]
    wait_for(lambda: evidence(marks)[7] == 1, 15)
    os.killpg(worker.pid, signal.SIGTERM)  # as systemd or Ctrl-C would: the whole process group
    assert worker.wait(10) == 0
    envelope = client.result(jobid)
    assert (envelope["meta"]["status"], envelope["output"]) == ("complete", {"n": 7})
