"""``python -m bench [--quick] [--only NAME[,NAME...]] [--repeat N] [--keep]``: run the bench, print the table.

Starts its own ``redis-server`` (no persistence) and ``smtp-sink`` on free 127.0.0.1 ports, runs the
sections (``noop``, ``smtp``, ``sync``, ``bulk``, ``memory``) against them, stops everything it
started, and prints one markdown table on stdout (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.report import Row, render
from bench.sections import FULL, QUICK, SECTIONS, Context
from bench.servers import BenchError, RedisServer, SmtpSink

__all__ = ["main"]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="small job counts and one repeat: a smoke run")
    parser.add_argument("--only", default="", metavar="NAME[,NAME]",
                        help=f"run only these sections: {', '.join(SECTIONS)}")
    parser.add_argument("--repeat", type=int, default=None, help="repeats per row (default 3; 1 with --quick)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, projects)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    args.sections = names
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def _measured_code() -> str:
    """Which runtime is measured: the commit of the tree the bench runs from, and whether it is dirty."""
    import subprocess

    from bench.flint_project import REPO

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return f"runtime from {REPO} (not a git checkout)"
    dirty = git("status", "--porcelain", "--", "runtime", "connectors")
    return f"runtime at commit {commit}" + (" plus uncommitted changes in runtime/ or connectors/" if dirty else "")


def _versions(redis_server: RedisServer) -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("rq", "redis", "celery", "fastapi", "uvicorn"):
        with contextlib.suppress(PackageNotFoundError):
            found.append(f"{name} {version(name)}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"Python {platform.python_version()}, redis-server {redis_server.version()}, {', '.join(found)}; "
            f"{os.cpu_count()} CPUs, load average at start {load}")


def main(argv: list[str] | None = None) -> int:
    """Run the bench; 0 when it ran (whatever the targets say), 1 when it could not."""
    args = _arguments(argv)
    workdir = Path(tempfile.mkdtemp(prefix="flint-bench-"))
    started = time.monotonic()
    rows: list[Row] = []
    redis_server = RedisServer(workdir)
    sink = SmtpSink()
    try:
        redis_server.start()
        sink.start()
        context = Context(redis_server.url, sink.port, workdir, QUICK if args.quick else FULL, args.repeat)
        versions = _versions(redis_server)
        for name in args.sections:
            rows += SECTIONS[name](context)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        print(f"bench: logs kept in {workdir}", file=sys.stderr)
        args.keep = True
        return 1
    except BaseException:
        print(f"bench: stopped by an error; logs kept in {workdir}", file=sys.stderr)
        args.keep = True
        raise
    finally:
        sink.stop()
        redis_server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    mode = "quick smoke run, " if args.quick else ""
    print(f"Flint runtime bench, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {mode}"
          f"median of {args.repeat} run(s) per row, {time.monotonic() - started:.0f} s in all.")
    print(versions)
    print(_measured_code())
    print()
    print(render(rows))
    if args.keep:
        print(f"\n(work directory kept: {workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
