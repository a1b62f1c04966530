"""The Celery baseline: an app on the bench's Redis (broker and result backend) with a no-op task.

Run as ``celery -A bench.celery_app worker -P solo -c 1 -Q QUEUE``. Celery has no burst mode, so the
worker times itself: the first ``task_prerun`` marks the start, and the ``task_postrun`` of the
``BENCH_CELERY_EXPECT``-th task marks the end and pushes ``start end ok`` (epoch seconds, tasks that
succeeded) onto the list ``BENCH_CELERY_DONE_KEY``, where the harness waits for it and then stops
the worker. The two signal handlers cost one Python call each per task.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import task_postrun, task_prerun

__all__ = ["app", "noop"]

_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("bench", broker=_URL, backend=_URL)
app.conf.update(
    task_acks_late=True,  # ack after the task ran, as the runtime and rq do (no job lost with its worker)
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop() -> None:
    """A task that does nothing (its result, None, is stored like the runtime's envelopes)."""


class _Clock:
    expect = int(os.environ.get("BENCH_CELERY_EXPECT", "0") or 0)
    done_key = os.environ.get("BENCH_CELERY_DONE_KEY", "")
    start = 0.0
    finished = 0
    ok = 0


@task_prerun.connect
def _first_task(**_: Any) -> None:
    if not _Clock.start:
        _Clock.start = time.time()


@task_postrun.connect
def _task_done(state: str | None = None, **_: Any) -> None:
    _Clock.finished += 1
    _Clock.ok += state == "SUCCESS"
    if _Clock.expect and _Clock.finished == _Clock.expect and _Clock.done_key:
        end = time.time()
        redis.Redis.from_url(_URL).rpush(_Clock.done_key, f"{_Clock.start} {end} {_Clock.ok}")
