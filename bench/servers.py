"""The servers a bench run starts for itself on free loopback ports, and stops: Redis and an SMTP sink.

>>> port = free_port()
>>> 1024 <= port <= 65535
True
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["free_port", "wait_for_port", "stop_process", "RedisServer", "SmtpSink", "BenchError"]

SMTP_SINK = "/usr/sbin/smtp-sink"


class BenchError(RuntimeError):
    """A bench run cannot go on (a server did not start, a job failed, a tool is missing)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    """Return once 127.0.0.1:``port`` accepts connections; BenchError if ``process`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BenchError(f"{process.args[0]} exited with status {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def stop_process(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """Terminate a process this harness started (by its own handle), then kill it if it lingers."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


class RedisServer:
    """A throwaway ``redis-server`` on 127.0.0.1: no persistence, no config file."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        """Start it and wait until it accepts connections."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError("redis-server is not installed: apt-get install -y redis-server (bench/run does)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--loglevel", "warning", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.process)
        return self

    def version(self) -> str:
        """``redis-server --version``, shortened."""
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
        return out.split(" v=")[1].split()[0] if " v=" in out else out.strip()

    def stop(self) -> None:
        """Stop it (nothing is kept)."""
        stop_process(self.process)


class SmtpSink:
    """Postfix's ``smtp-sink`` on 127.0.0.1: accepts every message and throws it away, fast."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> "SmtpSink":
        """Start it and wait until it accepts connections."""
        if not os.access(SMTP_SINK, os.X_OK):
            raise BenchError(f"{SMTP_SINK} is missing: apt-get install -y postfix (bench/run does, without prompting)")
        command = [SMTP_SINK]
        if os.geteuid() == 0:  # as root smtp-sink must be told whose privileges to switch to
            command += ["-u", pwd.getpwuid(0).pw_name]
        command += [f"127.0.0.1:{self.port}", "1000"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.process)
        return self

    def stop(self) -> None:
        """Stop it."""
        stop_process(self.process)
