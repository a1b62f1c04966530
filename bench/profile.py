"""``python -m bench.profile [noop|smtp|bulk] [COUNT] [--top N]``: where a burst worker spends its time.

Starts its own Redis and SMTP sink like the bench, queues ``COUNT`` jobs of the kind named (no-op
flintbits, direct smtp connector requests, or one flintbit sending ``COUNT`` messages), and runs one
:class:`runtime.worker.Worker` in burst mode in this process under :mod:`cProfile`. The worker's
job process (its forked child) is profiled too: ``runtime.child.child_main`` is wrapped so that
the child writes its own profile when it stops. Prints the top functions of each, by cumulative and
by own time, and keeps the ``.prof`` files for ``python -m pstats`` or snakeviz.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.flint_project import BULK, NOOP, BenchProject
from bench.servers import RedisServer, SmtpSink

__all__ = ["main"]


def _profiled_child(original: Any, out: Path) -> Any:
    def child_main(*args: Any, **kwargs: Any) -> None:
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            original(*args, **kwargs)
        finally:
            profiler.disable()
            profiler.dump_stats(out)

    return child_main


def _top(path: Path, sort: str, count: int) -> str:
    text = io.StringIO()
    pstats.Stats(str(path), stream=text).strip_dirs().sort_stats(sort).print_stats(count)
    return text.getvalue()


def main(argv: list[str] | None = None) -> None:
    """Profile one burst worker on freshly queued jobs."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("kind", choices=["noop", "smtp", "bulk"], nargs="?", default="noop")
    parser.add_argument("count", type=int, nargs="?", default=2000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)

    import runtime.child
    from runtime.queue import JobQueue, connect
    from runtime.worker import Worker, default_queues

    workdir = Path(tempfile.mkdtemp(prefix="flint-profile-"))
    redis_server, sink = RedisServer(workdir).start(), SmtpSink().start()
    try:
        project = BenchProject(workdir / "project", redis_server.url, sink.port)
        if args.kind == "noop":
            project.queue_bits(NOOP, args.count)
        elif args.kind == "smtp":
            project.queue_sends(args.count)
        else:
            project.queue_bits(BULK, 1, {"count": args.count})
        child_out, parent_out = workdir / "child.prof", workdir / "worker.prof"
        runtime.child.child_main = _profiled_child(runtime.child.child_main, child_out)
        settings = project.settings()
        worker = Worker(settings, JobQueue(connect(settings), settings), default_queues(settings, None), burst=True)
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        done = worker.work()
        profiler.disable()
        elapsed = time.perf_counter() - started
        profiler.dump_stats(parent_out)
        print(f"{done} jobs ({args.kind}, count {args.count}) in {elapsed:.2f} s under the profiler\n")
        for title, path in (("worker (supervisor) process", parent_out), ("job (child) process", child_out)):
            print(f"==== {title}: by cumulative time")
            print(_top(path, "cumulative", args.top))
            print(f"==== {title}: by own time")
            print(_top(path, "tottime", args.top))
        print(f"profiles kept: {parent_out} {child_out}")
        project.close()
    finally:
        sink.stop()
        redis_server.stop()


if __name__ == "__main__":
    main()
