"""Where flintbits come from: uploaded ones (kept in Redis, seen by every worker) and the
``FLINT_FLINTBITS`` directories, searched in that order.

A reference is the path with ``:`` as separator: ``flintbits/flint-util/smtp/operation/smtp.py`` is
``flint-util:smtp:operation:smtp.py``. Segments match ``[A-Za-z0-9._-]+``; ``..``, ``.``, empty
segments and anything else are refused (-2), and nothing is ever resolved outside a directory.

>>> parse_ref("flint-util:smtp:operation:smtp.py")
('flint-util', 'smtp', 'operation', 'smtp.py')
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from runtime.connection import queue_errors
from runtime.envelope import now_ms
from runtime.errors import InvalidRequest, NotFound
from runtime.keys import Keys

__all__ = ["Script", "parse_ref", "compile_script", "FlintbitStore"]

_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


def parse_ref(ref: str) -> tuple[str, ...]:
    """Split and check a flintbit reference; InvalidRequest (-2) when it is not one."""
    if not isinstance(ref, str) or not ref:
        raise InvalidRequest("flintbit reference is empty")
    segments = tuple(ref.split(":"))
    for segment in segments:
        if not segment or segment in (".", "..") or not _SEGMENT.match(segment):
            raise InvalidRequest(f"invalid flintbit reference {ref!r}: segments are [A-Za-z0-9._-]+, no '..'")
    if not segments[-1].endswith(".py"):
        raise InvalidRequest(f"invalid flintbit reference {ref!r}: a flintbit is a .py file")
    return segments


def compile_script(source: str, ref: str) -> Any:
    """Compile a flintbit; a syntax error is InvalidRequest (-2) naming the line."""
    try:
        return compile(source, ref, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise InvalidRequest(f"{ref} does not compile: line {exc.lineno}: {exc.msg}") from None
    except ValueError as exc:  # e.g. source with NUL bytes
        raise InvalidRequest(f"{ref} does not compile: {exc}") from None


@dataclass(frozen=True)
class Script:
    """A flintbit's source and where it came from (``version`` changes with every upload)."""

    ref: str
    source: str
    version: str
    origin: str


class FlintbitStore:
    """Finds, uploads, lists and removes flintbits. ``redis`` is None where nothing was uploaded."""

    def __init__(self, directories: Sequence[Path], redis: Any = None, keys: Keys | None = None,
                 location: str = "") -> None:
        self.directories = tuple(Path(d) for d in directories)
        self.redis = redis
        self.keys = keys or Keys()
        self.location = location  # where Redis is, for error messages
        self._files: dict[Path, Script] = {}
        self._located: dict[str, tuple[Path, float]] = {}

    def _path_in(self, directory: Path, segments: tuple[str, ...]) -> Path | None:
        root = directory.resolve()
        candidate = root.joinpath(*segments)
        try:
            real = candidate.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if root not in real.parents or not real.is_file():
            return None  # a link that leads outside the directory is not followed
        return real

    @queue_errors
    def find(self, ref: str) -> Script:
        """The flintbit ``ref``: uploaded first, then each directory in order; NotFound (-3)."""
        parse_ref(ref)
        raw = self.redis.hget(self.keys.bits, ref) if self.redis is not None else None
        return self.resolve(ref, json.loads(raw) if raw is not None else None)

    def resolve(self, ref: str, uploaded: dict[str, Any] | None) -> Script:
        """``ref`` from its upload record when there is one (already read), else from the directories.

        Files are read again only when their size or modification time changed.
        """
        if uploaded is not None:
            parse_ref(ref)
            return Script(ref, uploaded["source"], f"upload:{uploaded['version']}", "upload")
        # Where a ref lives is looked up again after a second (a file added in an earlier
        # directory, a link changed); in between one stat says whether the file changed.
        found = self._located.get(ref)
        if found is not None and time.monotonic() - found[1] < 1.0:
            cached = self._files.get(found[0])
            try:
                stat = found[0].stat()
            except OSError:
                stat = None
            if cached is not None and stat is not None and cached.version == f"file:{stat.st_mtime_ns}:{stat.st_size}":
                return cached
        segments = parse_ref(ref)
        for directory in self.directories:
            path = self._path_in(directory, segments)
            if path is not None:
                stat = path.stat()
                version = f"file:{stat.st_mtime_ns}:{stat.st_size}"
                cached = self._files.get(path)
                if cached is None or cached.version != version:
                    cached = self._files[path] = Script(ref, path.read_text(encoding="utf-8"), version, str(path))
                self._located[ref] = (path, time.monotonic())
                return cached
        raise NotFound(f"flintbit not found: {ref}")

    @queue_errors
    def upload(self, ref: str, source: str, username: str = "") -> dict[str, Any]:
        """Compile and keep ``source`` as ``ref``; returns ``{"ref", "version"}``."""
        parse_ref(ref)
        compile_script(source, ref)
        if self.redis is None:
            raise InvalidRequest("uploads need the queue (Redis or the embedded one)")
        version = int(self.redis.incr(self.keys.bits_version))
        record = {"source": source, "version": version, "username": username, "timestamp": now_ms()}
        self.redis.hset(self.keys.bits, ref, json.dumps(record))
        return {"ref": ref, "version": version}

    @queue_errors
    def delete(self, ref: str) -> None:
        """Remove an uploaded flintbit; NotFound if it was not uploaded."""
        parse_ref(ref)
        if self.redis is None or not self.redis.hdel(self.keys.bits, ref):
            raise NotFound(f"flintbit not found among uploads: {ref}")

    @queue_errors
    def list(self) -> list[dict[str, str]]:
        """Every flintbit reachable: ``[{"ref", "origin"}]``, uploads first, sorted by ref."""
        seen: dict[str, str] = {}
        if self.redis is not None:
            for ref in sorted(k.decode() if isinstance(k, bytes) else k for k in self.redis.hkeys(self.keys.bits)):
                seen.setdefault(ref, "upload")
        for directory in self.directories:
            if not directory.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(directory):
                dirnames[:] = sorted(d for d in dirnames if _SEGMENT.match(d) and not d.startswith("."))
                for filename in sorted(filenames):
                    if not filename.endswith(".py") or not _SEGMENT.match(filename):
                        continue
                    rel = Path(dirpath, filename).relative_to(directory)
                    seen.setdefault(":".join(rel.parts), str(directory))
        return [{"ref": ref, "origin": origin} for ref, origin in sorted(seen.items())]
