"""The physical-limit references, each run in its own process and timing itself.

``python -m bench.loops reliable URL LIST COUNT``: the minimal reliable queue on redis-py. ``LIST``
holds ``COUNT`` pre-queued items; each is moved to a processing list (``LMOVE``), "run" (nothing),
and acknowledged (``LREM``): two round trips per job, no job state, no result.

``python -m bench.loops smtp HOST PORT COUNT``: ``COUNT`` messages built and sent with smtplib over
one reused connection.

Each prints ``{"n": ..., "seconds": ...}``: from the first item taken (or the connection opened) to
the last one acknowledged (or sent).
"""

from __future__ import annotations

import json
import sys
import time

import redis

from bench.tasks import send_loop

__all__ = ["reliable_loop", "smtp_loop"]


def reliable_loop(url: str, source: str, count: int) -> tuple[int, float]:
    """Drain ``source``; return (jobs done, seconds from first take to last ack)."""
    client = redis.Redis.from_url(url)
    processing = source + ":processing"
    done = 0
    start = 0.0
    while True:
        item = client.lmove(source, processing, "LEFT", "RIGHT")
        if item is None:
            break
        if not done:
            start = time.perf_counter()
        client.lrem(processing, 1, item)  # the ack
        done += 1
    if done != count:
        raise SystemExit(f"reliable loop: {done} jobs done, {count} expected")
    return done, time.perf_counter() - start


def smtp_loop(host: str, port: int, count: int) -> tuple[int, float]:
    """Send ``count`` messages over one connection; return (messages, seconds)."""
    start = time.perf_counter()
    send_loop(host, port, count)
    return count, time.perf_counter() - start


def main(argv: list[str]) -> None:
    """Run the loop named by ``argv[0]`` and print its JSON result."""
    kind, *args = argv
    if kind == "reliable":
        n, seconds = reliable_loop(args[0], args[1], int(args[2]))
    elif kind == "smtp":
        n, seconds = smtp_loop(args[0], int(args[1]), int(args[2]))
    else:
        raise SystemExit(f"unknown loop {kind!r}: reliable or smtp")
    print(json.dumps({"n": n, "seconds": seconds}))


if __name__ == "__main__":
    main(sys.argv[1:])
