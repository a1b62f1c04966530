"""Flintbits that misbehave, through the embedded queue and worker: each ends its own job only,
with the right exit-code, and the next job runs.

Loops, sleeps, memory, fork, subprocesses, huge output and logs, stdout and stdin, exceptions
that are not ``Exception``, and signal handlers that try to dodge the timeout.
"""

from __future__ import annotations

import os
import time

import pytest


def run(project, source, timeout_ms=None, **kwargs):
    ref = project.bit("t:bad.py", source)
    return project.client().run_bit(ref, {}, timeout_ms=timeout_ms, **kwargs)


def next_job_runs(project, n=1):
    """The worker goes on: a good job after the bad one completes normally (twice: both workers)."""
    client = project.client()
    ref = project.bit("t:ok.py", "output.set('ok', input.get('n'))\n")
    for n in range(2):
        env = client.run_bit(ref, {"n": n}, timeout_ms=10000)
        assert (env["meta"]["status"], env["meta"]["exit-code"], env["output"]) == ("complete", 0, {"ok": n}), env


def code_of(env):
    meta = env["meta"]
    return meta["status"], meta["exit-code"]


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


# -- time ------------------------------------------------------------------------------------------

def test_sleep_is_aborted_at_its_timeout(project):
    started = time.monotonic()
    env = run(project, "import time\ntime.sleep(60)\n", timeout_ms=500)
    assert code_of(env) == ("aborted", -6) and env["meta"]["message"] == "timed out after 500 ms"
    assert time.monotonic() - started < 3
    next_job_runs(project)


def test_a_loop_that_swallows_the_timeout_is_killed(project):
    env = run(project, """
        while True:
            try:
                while True:
                    pass
            except BaseException:
                pass
    """, timeout_ms=400)
    assert code_of(env) == ("aborted", -6)
    next_job_runs(project)


@pytest.mark.parametrize("dodge", [
    "signal.signal(signal.SIGALRM, signal.SIG_IGN)",
    "signal.signal(signal.SIGALRM, lambda *args: None)",
    "signal.setitimer(signal.ITIMER_REAL, 0)",
    "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])",
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); signal.signal(signal.SIGALRM, signal.SIG_IGN)",
])
def test_dodging_the_timer_signal_is_still_aborted_by_the_kill_backstop(project, dodge):
    started = time.monotonic()
    env = run(project, f"import signal\n{dodge}\nwhile True:\n    pass\n", timeout_ms=400)
    assert code_of(env) == ("aborted", -6) and env["meta"]["message"] == "timed out after 400 ms"
    assert time.monotonic() - started < 3
    next_job_runs(project)


def test_a_handler_left_behind_does_not_let_the_next_job_run_past_its_timeout(project):
    """A job that ends normally after ignoring SIGALRM leaves its process; the next one is still timed."""
    client = project.client()
    dodger = project.bit("t:dodge.py", "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n")
    loop = project.bit("t:loop.py", "while True:\n    pass\n")
    for _ in range(2):  # both workers' processes
        assert code_of(client.run_bit(dodger, {}, timeout_ms=5000)) == ("complete", 0)
    for _ in range(2):
        started = time.monotonic()
        assert code_of(client.run_bit(loop, {}, timeout_ms=400)) == ("aborted", -6)
        assert time.monotonic() - started < 3
    next_job_runs(project)


# -- memory ----------------------------------------------------------------------------------------

def test_growing_memory_step_by_step_is_a_limit(project):
    project.flint({"worker": {"memory-limit": 600}})
    env = run(project, "chunks = []\nwhile True:\n    chunks.append(bytearray(8 * 1024 * 1024))\n", timeout_ms=20000)
    assert code_of(env) == ("error", -7) and env["meta"]["message"] == "memory limit of 600 MB exceeded"
    next_job_runs(project)


# -- processes -------------------------------------------------------------------------------------

def test_os_fork_the_child_does_not_outlive_the_job_nor_run_the_worker_loop(project):
    """The forked copy returns from fork() into the flintbit too; it must not report, nor take jobs."""
    env = run(project, """
        import os
        pid = os.fork()
        if pid == 0:
            output.set("in", "child")
        else:
            output.set("in", "parent").set("pid", pid)
            os.waitpid(pid, 0)
    """, timeout_ms=5000)
    assert code_of(env) == ("complete", 0), env
    assert env["output"]["in"] == "parent", env
    assert gone_within(env["output"]["pid"], 2)
    next_job_runs(project)


def test_a_forked_grandchild_does_not_survive_its_job(project):
    env = run(project, """
        import os, time
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        output.set("pid", pid)
    """, timeout_ms=5000)
    assert code_of(env) == ("complete", 0), env
    pid = env["output"]["pid"]
    try:
        assert gone_within(pid, 3), f"the forked process {pid} outlived its job"
    finally:
        if alive(pid):
            os.kill(pid, 9)
    next_job_runs(project)


def test_a_subprocess_waited_on_is_aborted_and_killed_at_the_timeout(project):
    env = run(project, """
        import subprocess
        subprocess.run(["sleep", "30"])
    """, timeout_ms=500)
    assert code_of(env) == ("aborted", -6)
    next_job_runs(project)


def test_a_subprocess_left_running_does_not_survive_its_job(project):
    env = run(project, """
        import subprocess
        output.set("pid", subprocess.Popen(["sleep", "30"]).pid)
    """, timeout_ms=5000)
    assert code_of(env) == ("complete", 0)
    pid = env["output"]["pid"]
    try:
        assert gone_within(pid, 3), f"subprocess {pid} outlived its job"
    finally:
        if alive(pid):
            os.kill(pid, 9)
    next_job_runs(project)


def test_killing_its_own_process_ends_that_job_only(project):
    env = run(project, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", timeout_ms=5000)
    assert code_of(env) == ("error", -8) and "killed by signal 9" in env["meta"]["message"]
    next_job_runs(project)


# -- output, logs, stdout, stdin -------------------------------------------------------------------

def test_output_over_16_mib_is_a_limit(project):
    env = run(project, "output.set('big', 'y' * (17 * 1024 * 1024))\n", timeout_ms=20000)
    assert code_of(env) == ("error", -7) and env["output"] == {}
    assert env["meta"]["message"].startswith("output is ") and "the limit is 16777216" in env["meta"]["message"]
    next_job_runs(project)


def test_many_and_long_log_lines_end_the_job_normally(project):
    env = run(project, """
        for i in range(50000):
            log.info(f"line {i} " + "z" * 100)
        log.warn("w" * (4 * 1024 * 1024))
        output.set("done", True)
    """, timeout_ms=30000)
    assert code_of(env) == ("complete", 0) and env["output"] == {"done": True}
    lines = project.client().logs(env["meta"]["job-id"])
    assert lines[0]["message"].startswith("line 0 ")
    assert len(lines) <= 50001
    next_job_runs(project)


def test_printing_to_stdout_and_stderr_does_not_disturb_the_worker(project, capfd):
    env = run(project, """
        import os, sys
        print("hello from a flintbit")
        print("x" * 200000)
        sys.stdout.write("\\0" * 1000 + "\\n")
        sys.stdout.flush()
        os.write(1, b"raw bytes on fd 1\\n" * 1000)
        os.write(2, b"raw bytes on fd 2\\n" * 1000)
        output.set("printed", True)
    """, timeout_ms=10000)
    assert code_of(env) == ("complete", 0) and env["output"] == {"printed": True}
    next_job_runs(project)


def test_reading_stdin_does_not_block_the_job(project):
    env = run(project, """
        import sys
        output.set("stdin", sys.stdin.read() if sys.stdin is not None else None)
    """, timeout_ms=3000)
    assert code_of(env) == ("complete", 0), env
    assert env["output"]["stdin"] in ("", None)
    next_job_runs(project)


# -- exceptions that are not Exception -------------------------------------------------------------

@pytest.mark.parametrize("raise_it, code, message", [
    ("raise SystemExit(3)", 3, "3"),
    ("raise SystemExit('bye')", 1, "bye"),
    ("raise SystemExit", 0, "success"),
    ("raise KeyboardInterrupt('stop')", 1, "KeyboardInterrupt: stop"),
    ("raise GeneratorExit()", 1, "GeneratorExit: "),
    ("class Odd(BaseException): pass\nraise Odd('odd one')", 1, "Odd: odd one"),
])
def test_base_exceptions_end_the_job_with_an_exit_code(project, raise_it, code, message):
    env = run(project, raise_it + "\n", timeout_ms=5000)
    assert (env["meta"]["exit-code"], env["meta"]["message"]) == (code, message), env
    assert env["meta"]["status"] == "complete"
    next_job_runs(project)


def test_closing_the_processes_file_descriptors_ends_that_job_only(project):
    env = run(project, "import os\nos.closerange(3, 1024)\noutput.set('x', 1)\n", timeout_ms=5000)
    assert code_of(env) == ("error", -8), env
    next_job_runs(project)
