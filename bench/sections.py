"""The five sections of a bench run; each measures its rows ``repeat`` times and returns table rows.

Within a section the repeats are interleaved (run 1 of every row, then run 2, ...), so that a burst
of noise on the shared machine spreads over the rows instead of landing on one of them.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx
import redis

from bench.baselines import RQ_SIMPLE_WORKER, RQ_WORKER, fill_list, run_celery, run_loop, run_rq
from bench.flint_project import ATTACH, BULK, NOOP, NOOP_SOURCE, PROBE, SEND, BenchProject
from bench.report import Measurement, Row, Target
from bench.servers import BenchError, free_port, stop_process, wait_for_port
from bench.tasks import noop, send_email
from runtime.script import Input, Output
from runtime.store import compile_script

__all__ = ["Sizes", "FULL", "QUICK", "Context", "SECTIONS"]

MB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    """How many jobs each row runs (each run should take a few seconds on 2 cores)."""

    flint_noop: int
    rq_worker_noop: int
    rq_simple_noop: int
    celery_noop: int
    loop_noop: int
    flint_smtp: int
    rq_worker_smtp: int
    rq_simple_smtp: int
    loop_smtp: int
    sync_requests: int
    bulk: int


FULL = Sizes(flint_noop=4000, rq_worker_noop=300, rq_simple_noop=1000, celery_noop=2000, loop_noop=30000,
             flint_smtp=1000, rq_worker_smtp=300, rq_simple_smtp=1000, loop_smtp=3000,
             sync_requests=500, bulk=2000)
QUICK = Sizes(flint_noop=100, rq_worker_noop=20, rq_simple_noop=50, celery_noop=100, loop_noop=1000,
              flint_smtp=50, rq_worker_smtp=20, rq_simple_smtp=50, loop_smtp=200,
              sync_requests=30, bulk=50)


@dataclass
class Context:
    """What every section shares: the servers, a work directory, the sizes and the repeat count."""

    redis_url: str
    sink_port: int
    workdir: Path
    sizes: Sizes
    repeat: int

    def project(self) -> BenchProject:
        """A fresh Flint project (its own directory and key prefix)."""
        root = Path(tempfile.mkdtemp(prefix="project-", dir=self.workdir))
        return BenchProject(root, self.redis_url, self.sink_port)

    def flush(self) -> None:
        """Empty Redis between runs, so that no run pays for the keys of the ones before."""
        client = redis.Redis.from_url(self.redis_url)
        client.flushall()
        client.close()

    def progress(self, message: str) -> None:
        """A progress line on stderr (stdout carries only the report)."""
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _flint_burst(ctx: Context, measurement: Measurement, queue: Callable[[BenchProject], list[str]],
                 count: int | None = None) -> None:
    """Queue jobs on a fresh project, drain them with one ``flint worker --burst``, record the time.

    ``count`` is what the run counts as done (default: the jobs queued).
    """
    project = ctx.project()
    try:
        jobids = queue(project)
        wall = project.burst_worker()
        project.check(jobids)
        stamps = project.window(jobids)
        if stamps is not None:
            seconds = stamps[1]
        else:  # no stamps in Redis: the worker's wall time less that of a burst worker with nothing to do
            measurement.notes.add("wall time - start-up")
            seconds = wall - project.burst_worker()
        measurement.add(count if count is not None else len(jobids), seconds)
    finally:
        project.close()


def noop_section(ctx: Context) -> list[Row]:
    """1. No-op jobs through one worker process: the runtime vs rq, Celery and a reliable-queue loop."""
    s = ctx.sizes
    loop = Measurement("reliable-queue loop (redis-py LMOVE + LREM), reference", "jobs/s")
    rq_worker = Measurement("rq Worker (fork per job), burst", "jobs/s")
    rq_simple = Measurement("rq SimpleWorker, burst", "jobs/s")
    celery = Measurement("Celery -P solo -c 1, acks_late, Redis backend", "jobs/s")
    flint = Measurement("flint worker --burst, no-op flintbit", "jobs/s")
    for run in range(ctx.repeat):
        ctx.progress(f"no-op run {run + 1}/{ctx.repeat}")
        ctx.flush()
        fill_list(ctx.redis_url, "bench:loop", s.loop_noop)
        loop.add(*run_loop("reliable", [ctx.redis_url, "bench:loop", str(s.loop_noop)], ctx.workdir))
        _flint_burst(ctx, flint, lambda p: p.queue_bits(NOOP, s.flint_noop))
        rq_worker.add(*run_rq(ctx.redis_url, noop, [()] * s.rq_worker_noop, RQ_WORKER, ctx.workdir))
        rq_simple.add(*run_rq(ctx.redis_url, noop, [()] * s.rq_simple_noop, RQ_SIMPLE_WORKER, ctx.workdir))
        celery.add(*run_celery(ctx.redis_url, s.celery_noop, ctx.workdir))
    section = "1 no-op"
    return [
        Row(loop, section),
        Row(rq_worker, section, "loop", loop),
        Row(rq_simple, section, "loop", loop),
        Row(celery, section, "loop", loop),
        Row(flint, section, "Celery", celery, Target(1.5)),
        Row(flint, section, "rq Worker", rq_worker, Target(10)),
        Row(flint, section, "loop", loop),
    ]


def smtp_section(ctx: Context) -> list[Row]:
    """2. Queued jobs that each send one email to the sink."""
    s = ctx.sizes
    host = "127.0.0.1"
    loop = Measurement("smtplib loop, one reused connection, reference", "msgs/s")
    rq_worker = Measurement("rq Worker + smtplib (new connection per job)", "msgs/s")
    rq_simple = Measurement("rq SimpleWorker + smtplib (new connection per job)", "msgs/s")
    flint = Measurement("flint worker --burst, call_connector(\"smtp\") jobs", "msgs/s")
    for run in range(ctx.repeat):
        ctx.progress(f"smtp run {run + 1}/{ctx.repeat}")
        ctx.flush()
        loop.add(*run_loop("smtp", [host, str(ctx.sink_port), str(s.loop_smtp)], ctx.workdir))
        _flint_burst(ctx, flint, lambda p: p.queue_sends(s.flint_smtp))
        rq_worker.add(*run_rq(ctx.redis_url, send_email, [(host, ctx.sink_port, i) for i in range(s.rq_worker_smtp)],
                              RQ_WORKER, ctx.workdir))
        rq_simple.add(*run_rq(ctx.redis_url, send_email, [(host, ctx.sink_port, i) for i in range(s.rq_simple_smtp)],
                              RQ_SIMPLE_WORKER, ctx.workdir))
    section = "2 smtp"
    return [
        Row(loop, section),
        Row(rq_worker, section, "loop", loop),
        Row(rq_simple, section, "loop", loop),
        Row(flint, section, "rq Worker", rq_worker, Target(5)),
        Row(flint, section, "rq SimpleWorker", rq_simple),
        Row(flint, section, "loop", loop),
    ]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _in_process(count: int) -> list[float]:
    """Milliseconds per run of the no-op flintbit's compiled code, exec'd here with fresh input/output."""
    code = compile_script(NOOP_SOURCE, NOOP)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        exec(code, {"__name__": "__flintbit__", "input": Input({}), "output": Output()})
        times.append((time.perf_counter() - started) * 1000)
    return times


def sync_section(ctx: Context) -> list[Row]:
    """3. Sync REST latency of a no-op flintbit on ``flint serve`` + one ``flint worker``."""
    n = ctx.sizes.sync_requests
    ctx.flush()
    project = ctx.project()
    inproc = Measurement("in-process exec of the compiled no-op, p50", "ms")
    p50 = Measurement("POST /v1/bit/run/{ref}/sync, p50", "ms")
    p99 = Measurement("POST /v1/bit/run/{ref}/sync, p99", "ms")
    overhead = Measurement("sync REST overhead at p50 (REST p50 - in-process p50)", "ms")
    server = worker = None
    try:
        key = project.user_key()
        port = free_port()
        server = project.popen("serve", "--port", str(port), log="serve.log")
        worker = project.popen("worker", log="worker.log")
        wait_for_port(port, server, timeout=30)
        path = f"/v1/bit/run/{NOOP}/sync"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"flint-key": key}, timeout=30) as http:
            def call() -> float:
                started = time.perf_counter()
                reply = http.post(path, json={})
                elapsed = (time.perf_counter() - started) * 1000
                meta = reply.json().get("meta", {}) if reply.status_code == 200 else {}
                if meta.get("status") != "complete" or meta.get("exit-code") != 0:
                    raise BenchError(f"sync call failed: HTTP {reply.status_code} {reply.text[:300]}")
                return elapsed

            for _ in range(max(10, n // 10)):  # warm-up: connections, the child process, compiled code
                call()
            for run in range(ctx.repeat):
                ctx.progress(f"sync run {run + 1}/{ctx.repeat}")
                local = _in_process(n)
                latencies = [call() for _ in range(n)]
                inproc.add(n, sum(local) / 1000, statistics.median(local))
                p50.add(n, sum(latencies) / 1000, statistics.median(latencies))
                p99.add(n, sum(latencies) / 1000, _percentile(latencies, 0.99))
                overhead.add(n, sum(latencies) / 1000, statistics.median(latencies) - statistics.median(local))
    finally:
        stop_process(server)
        stop_process(worker)
        project.close()
    section = "3 sync API"
    return [Row(inproc, section), Row(p50, section), Row(p99, section), Row(overhead, section, target=Target(5, "<="))]


def bulk_section(ctx: Context) -> list[Row]:
    """4. One flintbit sending ``bulk`` messages with ``connector("smtp")...sync()`` in a loop."""
    n = ctx.sizes.bulk
    loop = Measurement("smtplib loop, one reused connection, reference", "msgs/s")
    flint = Measurement(f"one flintbit, {n} x connector(\"smtp\").sync()", "msgs/s")
    for run in range(ctx.repeat):
        ctx.progress(f"bulk run {run + 1}/{ctx.repeat}")
        ctx.flush()
        loop.add(*run_loop("smtp", ["127.0.0.1", str(ctx.sink_port), str(n)], ctx.workdir))
        _flint_burst(ctx, flint, lambda p: p.queue_bits(BULK, 1, {"count": n}), count=n)
    section = "4 bulk"
    return [Row(loop, section), Row(flint, section, "loop", loop, Target(0.8))]


def memory_section(ctx: Context) -> list[Row]:
    """5. Peak RSS of the worker's job process added by sending a 10 MB attachment."""
    baseline = Measurement("job process peak RSS (VmHWM) after a small send and a no-op", "MB")
    added = Measurement("VmHWM added by one 10 MB attachment send", "MB")
    payload = os.urandom(10 * MB)  # incompressible, like a real PDF or archive
    for run in range(ctx.repeat):
        ctx.progress(f"memory run {run + 1}/{ctx.repeat}")
        ctx.flush()
        project = ctx.project()
        try:
            attachment = project.attachments_dir / "report.bin"
            attachment.write_bytes(payload)
            # A small send first, so that loading the smtp connector is not counted as the attachment's.
            ids = (project.queue_bits(SEND, 1) + project.queue_bits(PROBE, 1)
                   + project.queue_bits(ATTACH, 1, {"path": str(attachment)}) + project.queue_bits(PROBE, 1))
            project.burst_worker()
            project.check(ids)
            before, after = (project.envelopes([ids[1]])[0]["output"], project.envelopes([ids[3]])[0]["output"])
            if before["pid"] != after["pid"]:
                raise BenchError("the probes ran in different job processes; the worker replaced its child")
            seconds = (project.window([ids[2]]) or (1, 0.0))[1]
            baseline.add(1, seconds, before["VmHWM-kB"] / 1024)
            added.add(1, seconds, (after["VmHWM-kB"] - before["VmHWM-kB"]) / 1024)
        finally:
            project.close()
    section = "5 memory"
    return [Row(baseline, section), Row(added, section, target=Target(40, "<="))]


SECTIONS: dict[str, Callable[[Context], list[Row]]] = {
    "noop": noop_section,
    "smtp": smtp_section,
    "sync": sync_section,
    "bulk": bulk_section,
    "memory": memory_section,
}
