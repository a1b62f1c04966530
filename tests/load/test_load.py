"""Load: 10,000 async sends through two workers to a real SMTP server.

Bounded in count (10,000 jobs) and time (the waits below). Besides asserting, the test writes its
figures (throughput, worker memory along the run) to ``load-figures.json`` in its temporary
directory and prints them (``pytest -s``), for the README's Guarantees section.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from runtime.envelope import Status
from tests.servers.workers import wait_for

JOBS = 10_000


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (the worker and its job process), in MB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for each in pids:
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def test_10000_async_sends_two_workers_each_message_once_memory_flat(redis_project, workers, smtp_server):
    redis_project.connectors({"connectors": {"smtp": {"type": "smtp", "config": smtp_server.config(
        **{"from": "load@example.com"})}}})
    client = redis_project.client()
    started = time.monotonic()
    jobids = [client.call_connector("smtp", {"to": f"u{i % 50}@example.com", "subject": f"load {i}", "body": "x"},
                                    wait=False)["meta"]["job-id"] for i in range(JOBS)]
    submitted = time.monotonic()
    pool = [workers.start(name="load-1"), workers.start(name="load-2")]
    samples: list[tuple[int, list[float]]] = []
    for mark in (1000, 2500, 5000, 7500, JOBS):
        wait_for(lambda: len(smtp_server.received) >= mark, 240, interval=0.2)
        samples.append((len(smtp_server.received), [round(rss_mb(p.pid), 1) for p in pool]))
    drained = time.monotonic()
    statuses = Counter(client.result(jobid)["meta"]["status"] for jobid in jobids)
    subjects = Counter(r.message["Subject"] for r in smtp_server.received)
    figures = {
        "jobs": JOBS, "submit_s": round(submitted - started, 2), "drain_s": round(drained - submitted, 2),
        "jobs_per_s": round(JOBS / (drained - submitted), 1), "statuses": dict(statuses),
        "received": len(smtp_server.received), "distinct": len(subjects),
        "worker_rss_mb": [{"done": done, "rss": rss} for done, rss in samples],
    }
    Path("load-figures.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))
    assert statuses == {Status.COMPLETE.value: JOBS}
    assert len(smtp_server.received) == JOBS and set(subjects) == {f"load {i}" for i in range(JOBS)}
    assert max(subjects.values()) == 1  # every message exactly once
    for worker_index in range(2):
        early, late = samples[1][1][worker_index], samples[-1][1][worker_index]
        assert late - early < 15, figures  # flat: no growth with the number of jobs served
