"""The baselines, each run the way its users run it, on the bench's Redis: rq, Celery, the plain loops.

Every runner pre-queues its jobs, starts one worker process, and returns ``(jobs, seconds)`` from the
first job taken to the last one finished, as recorded by the system itself, so that no worker's
start-up is counted:

- rq (``Worker``, which forks a work horse per job, and ``SimpleWorker``, which runs jobs in the
  worker process): the ``started_at`` and ``ended_at`` rq stores on each job.
- Celery (``-P solo -c 1``, ``acks_late``, Redis broker and result backend): the worker's own clock,
  see :mod:`bench.celery_app`.
- the loops of :mod:`bench.loops`: their own ``perf_counter``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import redis
from rq import Queue
from rq.job import Job, JobStatus

from bench.flint_project import REPO
from bench.servers import BenchError, stop_process

__all__ = ["RQ_WORKER", "RQ_SIMPLE_WORKER", "run_rq", "run_celery", "run_loop", "fill_list"]

RQ_WORKER = "rq.worker.Worker"
RQ_SIMPLE_WORKER = "rq.worker.SimpleWorker"


def _environment(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def _run(command: list[str], log: Path, timeout: float, what: str, **env: str) -> str:
    """Run ``command`` from the repository to its end; its stdout, or BenchError with its log."""
    with open(log, "ab") as err:
        try:
            done = subprocess.run(command, cwd=REPO, env=_environment(**env), stdout=subprocess.PIPE,
                                  stderr=err, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{what} still running after {timeout:.0f} s") from None
    if done.returncode != 0:
        raise BenchError(f"{what} exited with {done.returncode}; see {log}")
    return done.stdout.decode()


def run_rq(url: str, func: Callable[..., Any], calls: Sequence[tuple[Any, ...]], worker_class: str,
           workdir: Path, timeout: float = 300.0) -> tuple[int, float]:
    """Queue ``func(*args)`` for each of ``calls`` and drain them with one ``rq worker --burst``."""
    connection = redis.Redis.from_url(url)
    queue = Queue(f"bench-{uuid.uuid4().hex[:8]}", connection=connection)
    jobs = queue.enqueue_many([Queue.prepare_data(func, args, result_ttl=3600) for args in calls])
    _run([sys.executable, "-m", "rq.cli", "worker", "--burst", "--quiet", "--url", url,
          "--worker-class", worker_class, queue.name], workdir / "rq.log", timeout, f"rq worker ({worker_class})")
    fetched = Job.fetch_many([job.id for job in jobs], connection=connection)
    failed = [job for job in fetched if job is None or job.get_status() != JobStatus.FINISHED]
    if failed:
        raise BenchError(f"{len(failed)} rq jobs did not finish ({worker_class}); see {workdir / 'rq.log'}")
    start = min(job.started_at for job in fetched)
    end = max(job.ended_at for job in fetched)
    connection.close()
    return len(fetched), (end - start).total_seconds()


def run_celery(url: str, count: int, workdir: Path, timeout: float = 300.0) -> tuple[int, float]:
    """Queue ``count`` no-op tasks and drain them with ``celery worker -P solo -c 1`` (acks_late)."""
    from celery import Celery

    queue = f"bench-celery-{uuid.uuid4().hex[:8]}"
    done_key = f"{queue}:done"
    producer_app = Celery("bench-producer", broker=url)  # no result backend: the producer waits for nothing
    with producer_app.producer_or_acquire() as producer:
        for _ in range(count):
            producer_app.send_task("bench.noop", queue=queue, producer=producer)
    log = open(workdir / "celery.log", "ab")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker", "-P", "solo", "-c", "1", "-Q", queue,
         "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=REPO, env=_environment(BENCH_REDIS_URL=url, BENCH_CELERY_EXPECT=str(count), BENCH_CELERY_DONE_KEY=done_key),
        stdout=log, stderr=subprocess.STDOUT)
    # No socket timeout: redis-py 8 otherwise gives up on any reply after 5 s, a blocking one included.
    connection = redis.Redis.from_url(url, decode_responses=True, socket_timeout=None)
    try:
        reply = connection.blpop([done_key], timeout=int(timeout))
    finally:
        stop_process(worker)
        log.close()
        producer_app.close()
    if reply is None:
        raise BenchError(f"celery worker did not finish {count} tasks in {timeout:.0f} s; see {workdir / 'celery.log'}")
    start, end, ok = reply[1].split()
    if int(ok) != count:
        raise BenchError(f"celery: {ok} of {count} tasks succeeded; see {workdir / 'celery.log'}")
    connection.close()
    return count, float(end) - float(start)


def run_loop(kind: str, args: Sequence[str], workdir: Path, timeout: float = 300.0) -> tuple[int, float]:
    """Run one of :mod:`bench.loops` in its own process; ``(n, seconds)`` as it measured them."""
    out = _run([sys.executable, "-m", "bench.loops", kind, *args], workdir / "loops.log", timeout, f"{kind} loop")
    result = json.loads(out.strip().splitlines()[-1])
    return int(result["n"]), float(result["seconds"])


def fill_list(url: str, key: str, count: int) -> None:
    """Pre-queue ``count`` items on list ``key`` for the reliable loop."""
    connection = redis.Redis.from_url(url)
    pipe = connection.pipeline(transaction=False)
    for index in range(count):
        pipe.rpush(key, f"job-{index}")
    pipe.execute()
    connection.close()
