"""``flint worker`` processes started by tests, and a small wait helper."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest


class Workers:
    """``flint worker`` processes for a project; all killed at teardown."""

    def __init__(self, project) -> None:
        self.project = project
        self.processes: list[subprocess.Popen] = []

    def start(self, *extra: str, name: str | None = None) -> subprocess.Popen:
        """Start ``flint worker`` (its stderr goes to ``worker-N.log`` in the project)."""
        args = [sys.executable, "-c", "from runtime.cli import main; main()", "--config", str(self.project.config_dir),
                "--redis", self.project.redis_url, "worker", *extra]
        if name:
            args += ["--name", name]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLINT_")}
        log = open(self.project.root / f"worker-{len(self.processes)}.log", "wb")
        process = subprocess.Popen(args, cwd=self.project.root, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        log.close()
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        """SIGKILL every worker still running (with its child)."""
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.fixture
def workers(redis_project):
    """Start ``flint worker`` processes on the ``redis_project``; killed at teardown."""
    pool = Workers(redis_project)
    yield pool
    pool.stop_all()


def wait_for(predicate, timeout: float, interval: float = 0.05):
    """Poll ``predicate`` until it is truthy (its value is returned) or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
