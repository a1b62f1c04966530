"""The envelope every job returns: ``meta`` (job-id, exit-code, message, status, ...) and ``output``.

>>> meta = new_meta(context="examples:hello.py", timeout=60000, username="admin")
>>> meta["status"], meta["exit-code"], meta["job-id"].startswith("job-")
('submitted', 0, True)
>>> failure(meta, TimedOut("timed out after 10 ms"))["status"], meta["exit-code"]
('aborted', -6)
"""

from __future__ import annotations

import enum
import time
import uuid
from typing import Any

from runtime.errors import FlintError, TimedOut

__all__ = ["Status", "new_job_id", "new_meta", "finish", "failure", "status_for", "envelope", "now_ms"]

CONTENT_TYPE = "application/json"


class Status(str, enum.Enum):
    """Where a job stands. ``complete``, ``error`` and ``aborted`` are final."""

    SUBMITTED = "submitted"
    RUNNING = "running"
    COMPLETE = "complete"
    ERROR = "error"
    ABORTED = "aborted"

    @property
    def final(self) -> bool:
        """True once the job has ended."""
        return self in (Status.COMPLETE, Status.ERROR, Status.ABORTED)


def now_ms() -> int:
    """Epoch milliseconds."""
    return int(time.time() * 1000)


def new_job_id() -> str:
    """``job-`` followed by a uuid4."""
    return f"job-{uuid.uuid4()}"


def new_meta(*, context: str, timeout: int, username: str = "", jobid: str | None = None) -> dict[str, Any]:
    """The meta of a job just submitted: status ``submitted``, exit-code 0, message ``success``."""
    return {
        "job-id": jobid or new_job_id(),
        "exit-code": 0,
        "context": context,
        "message": "success",
        "timeout": int(timeout),
        "timestamp": now_ms(),
        "status": Status.SUBMITTED.value,
        "content-type": CONTENT_TYPE,
        "username": username,
    }


def status_for(error: FlintError) -> Status:
    """A timeout aborts the job; any other runtime or connector failure is an error."""
    return Status.ABORTED if isinstance(error, TimedOut) else Status.ERROR


def finish(meta: dict[str, Any], *, exit_code: int, message: str, status: Status | None = None) -> dict[str, Any]:
    """Set the final exit-code, message and status of ``meta`` (in place) and return it."""
    meta["exit-code"] = int(exit_code)
    meta["message"] = message
    meta["status"] = (status or Status.COMPLETE).value
    return meta


def failure(meta: dict[str, Any], error: FlintError) -> dict[str, Any]:
    """The one place an error becomes an envelope's meta: its exit-code, message and status."""
    return finish(meta, exit_code=error.exit_code, message=error.message, status=status_for(error))


def envelope(meta: dict[str, Any], output: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"meta": meta, "output": output}``."""
    return {"meta": meta, "output": output if output is not None else {}}
