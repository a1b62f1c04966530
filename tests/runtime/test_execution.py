"""Flintbits run through the embedded queue and worker: the scripting API, errors and limits."""

from __future__ import annotations

import time

import pytest

from runtime.errors import InvalidRequest, NotFound


def run(project, source, body=None, **kwargs):
    ref = project.bit("t:bit.py", source)
    return project.client().run_bit(ref, body or {}, **kwargs)


def test_input_output_log_and_config(project):
    env = run(project, """
        log.info("hi " + input.get("name"))
        output.set("name", input.get("name")).set("first", input.path("$.items[0].id"))
        output.set("all", input.path("$.items[*].id")).set("team", config.get("team.name"))
        output.set("member", config.get("team.members.1")).set("missing", config.get("no.such", "dflt"))
        output.setraw("raw", '{"a": [1, 2]}').set("gone", 1).remove("gone")
        output.set("jobid", input.jobid).set("user", input.username).set("type", input.type)
    """, {"name": "Ada", "items": [{"id": 7}, {"id": 8}]}, username="alice")
    meta, out = env["meta"], env["output"]
    assert (meta["status"], meta["exit-code"], meta["message"]) == ("complete", 0, "success")
    assert meta["username"] == "alice" and meta["context"] == "t:bit.py"
    assert out == {"name": "Ada", "first": 7, "all": [7, 8], "team": "ops", "member": "bob",
                   "missing": "dflt", "raw": {"a": [1, 2]}, "jobid": meta["job-id"], "user": "alice",
                   "type": "application/json"}
    assert meta["job-id"].startswith("job-") and len(meta["job-id"]) == 40
    logs = project.client().logs(meta["job-id"])
    assert [(l["level"], l["message"]) for l in logs] == [("info", "hi Ada")]
    assert isinstance(logs[0]["ts"], int)


def test_exception_gives_exit_code_1_and_traceback_in_log_only(project):
    env = run(project, """
        x = 1
        output.set("before", True)
        x / 0
    """)
    meta = env["meta"]
    assert (meta["exit-code"], meta["message"], meta["status"]) == (1, "ZeroDivisionError: division by zero", "complete")
    assert "Traceback" not in str(env)
    logs = project.client().logs(meta["job-id"])
    assert any("Traceback" in l["message"] and "ZeroDivisionError" in l["message"] for l in logs)


def test_output_exit_ends_at_once_keeping_output(project):
    env = run(project, """
        output.set("kept", 1)
        try:
            output.exit(42, "stopped here")
        except Exception:
            output.set("swallowed", True)
        output.set("after", 1)
    """)
    assert (env["meta"]["exit-code"], env["meta"]["message"], env["meta"]["status"]) == (42, "stopped here", "complete")
    assert env["output"] == {"kept": 1}


def test_busy_loop_is_aborted_at_its_timeout_and_the_worker_goes_on(project):
    client = project.client()
    ref = project.bit("t:loop.py", "while True:\n    pass\n")
    started = time.monotonic()
    env = client.run_bit(ref, {}, timeout_ms=500)
    assert time.monotonic() - started < 3
    assert (env["meta"]["status"], env["meta"]["exit-code"]) == ("aborted", -6)
    assert env["meta"]["message"] == "timed out after 500 ms"
    ok = client.run_bit(project.bit("t:ok.py", "output.set('ok', 1)"), {})
    assert ok["output"] == {"ok": 1}


def test_flintbit_that_ignores_the_timer_is_killed(project):
    client = project.client()
    ref = project.bit("t:stubborn.py", """
        import time
        while True:
            try:
                time.sleep(10)
            except BaseException:
                pass
    """)
    env = client.run_bit(ref, {}, timeout_ms=400)
    assert (env["meta"]["status"], env["meta"]["exit-code"]) == ("aborted", -6)
    assert client.run_bit(project.bit("t:ok.py", "output.set('ok', 2)"), {})["output"] == {"ok": 2}


def test_os_exit_ends_that_job_only(project):
    client = project.client()
    env = client.run_bit(project.bit("t:exit.py", "import os\nos._exit(3)\n"), {})
    assert (env["meta"]["status"], env["meta"]["exit-code"]) == ("error", -8)
    assert "exited with status 3" in env["meta"]["message"]
    assert client.run_bit(project.bit("t:ok.py", "output.set('ok', 3)"), {})["output"] == {"ok": 3}


def test_memory_blow_up_is_a_limit_and_ends_that_job_only(project):
    project.flint({"worker": {"memory-limit": 700}})
    client = project.client()
    env = client.run_bit(project.bit("t:hog.py", "x = bytearray(2 * 1024 ** 3)\n"), {})
    assert (env["meta"]["status"], env["meta"]["exit-code"]) == ("error", -7)
    assert env["meta"]["message"] == "memory limit of 700 MB exceeded"
    assert client.run_bit(project.bit("t:ok.py", "output.set('ok', 4)"), {})["output"] == {"ok": 4}


def test_connector_call_timeout_and_unknown_connector(project):
    env = run(project, """
        r = connector("nope").set("to", "a@b.c").sync()
        output.set("code", r.exitcode).set("message", r.message).set("status", r.status)
        output.set("context", r.context)
    """)
    assert env["meta"]["exit-code"] == 0
    assert env["output"] == {"code": -3, "message": "connector not found: nope", "status": "error",
                             "context": "connector:nope"}


def test_nested_flintbit_sync_and_timeout(project):
    project.bit("t:child.py", """
        import time
        time.sleep(input.get("sleep", 0))
        output.set("doubled", input.get("n") * 2)
    """)
    env = run(project, """
        r = flintbit("t:child.py").set("n", 21).sync()
        slow = call.bit("t:child.py").set("n", 1).set("sleep", 5).timeout(300).sync()
        missing = flintbit("t:none.py").sync()
        output.set("r", [r.exitcode, r.get("doubled"), r.status])
        output.set("slow", [slow.exitcode, slow.status, slow.message])
        output.set("missing", [missing.exitcode, missing.message])
    """)
    assert env["output"] == {"r": [0, 42, "complete"],
                             "slow": [-6, "aborted", "timed out after 300 ms"],
                             "missing": [-3, "flintbit not found: t:none.py"]}


def test_async_flintbit_call_then_wait(project):
    project.bit("t:child.py", "output.set('doubled', input.get('n') * 2)\n")
    env = run(project, """
        r = flintbit("t:child.py").set("n", 5).async_()
        output.set("submitted", [r.status, r.exitcode, r.message, r.jobid.startswith("job-")])
        done = r.wait(10000)
        output.set("done", [done.status, done.get("doubled"), done.jobid == r.jobid])
        bad = flintbit("t:none.py").async_().wait(10000)
        output.set("bad", [bad.status, bad.exitcode, bad.message])
    """)
    assert env["output"] == {"submitted": ["submitted", 0, "success", True],
                             "done": ["complete", 10, True],
                             "bad": ["error", -3, "flintbit not found: t:none.py"]}


def test_unknown_flintbit_is_not_found_before_queueing(project):
    with pytest.raises(NotFound, match="flintbit not found: t:none.py"):
        project.client().run_bit("t:none.py", {})


def test_sync_call_returns_at_timeout_with_job_still_going(project):
    client = project.client()
    ref = project.bit("t:sleep.py", "import time\ntime.sleep(1.5)\noutput.set('slept', True)\n")
    submitted = client.run_bit(ref, {}, wait=False)
    assert submitted.keys() == {"meta"} and submitted["meta"]["status"] == "submitted"
    early = client.result(submitted["meta"]["job-id"], wait_ms=200)
    assert early["meta"]["status"] in ("submitted", "running")
    final = client.result(submitted["meta"]["job-id"], wait_ms=5000)
    assert (final["meta"]["status"], final["output"]) == ("complete", {"slept": True})


def test_sys_exit_sets_the_exit_code(project):
    assert run(project, "import sys\nsys.exit(5)\n")["meta"]["exit-code"] == 5


def test_huge_output_is_a_limit(project):
    project.flint({"jobs": {"max-output": 1000}})
    env = run(project, "output.set('x', 'y' * 5000)\n")
    assert (env["meta"]["exit-code"], env["output"]) == (-7, {})
    assert env["meta"]["message"] == "output is 5009 bytes; the limit is 1000"


def test_secrets_in_the_input_are_hidden_in_log_lines_and_messages(project):
    env = run(project, """
        log.info("logging in with " + input.get("password"))
        raise RuntimeError("bad password " + input.get("password"))
    """, {"password": "pw-0123456789"})
    assert env["meta"]["message"] == "RuntimeError: bad password **********"
    lines = project.client().logs(env["meta"]["job-id"])
    assert lines[0]["message"] == "logging in with **********"
    assert "pw-0123456789" not in str(env) + str(lines)


def test_a_jobs_log_is_bounded_in_lines_and_line_length(project):
    env = run(project, """
        log.info("x" * 100_000)
        for i in range(10_050):
            log.debug(f"line {i}")
    """)
    lines = project.client().logs(env["meta"]["job-id"])
    assert env["meta"]["exit-code"] == 0 and len(lines) == 10_001
    assert lines[0]["message"].endswith("... [34464 characters cut]") and len(lines[0]["message"]) < 66_000
    assert lines[-1] == {**lines[-1], "level": "warn", "message": "log truncated: a job keeps at most 10000 lines"}


def test_a_job_that_cannot_be_handed_to_its_process_ends_alone(project):
    def nested(depth: int) -> list:
        value: list = []
        for _ in range(depth):
            value = [value]
        return value

    client = project.client()
    ref = project.bit("t:ok.py", "output.set('ok', 1)\n")
    with pytest.raises(InvalidRequest, match="the input cannot be kept as JSON: RecursionError"):
        client.run_bit(ref, {"deep": nested(100_000)})
    env = client.run_bit(ref, {"deep": nested(900)})  # JSON takes it; handing it over does not
    assert (env["meta"]["status"], env["meta"]["exit-code"]) == ("error", -8), env["meta"]
    assert env["meta"]["message"] == "could not hand the job to its process: RecursionError"
    assert client.run_bit(ref, {})["output"] == {"ok": 1}
