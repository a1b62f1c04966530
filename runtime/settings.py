"""Runtime settings, read once: command-line option, then environment variable, then
``config/flint.yaml``, then the default.

>>> s = Settings.load(config_dir="config", env={})
>>> s.embedded, s.default_timeout
(True, 60000)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from runtime.configuration import SecretResolver, load_yaml
from runtime.errors import ConfigError

__all__ = ["Settings", "MAX_TIMEOUT_MS"]

# The longest a job may run: a day. Longer values overflow the timer (setitimer) and Redis'
# XREAD BLOCK, which took down the process running the job.
MAX_TIMEOUT_MS = 24 * 60 * 60 * 1000

_SCHEMA_KEYS = {
    "redis": {"url", "prefix"},
    "jobs": {"default-timeout", "result-ttl", "max-output"},
    "worker": {"lost-after", "memory-limit", "heartbeat", "retryable"},
    "api": {"host", "port", "max-body"},
    "secrets-file": None,
    "users-file": None,
    "flintbits": None,
}


def _section(data: Mapping[str, Any], name: str, path: Path) -> Mapping[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {name} must be a mapping")
    unknown = set(value) - (_SCHEMA_KEYS[name] or set())
    if unknown:
        raise ConfigError(f"{path}: unknown key in {name}: {', '.join(sorted(map(str, unknown)))}")
    return value


def _number(value: Any, key: str, path: Path, kind: type = int, maximum: int | None = None,
            limit_note: str = "") -> Any:
    """A positive number; text (from ``${VAR}``) is read as one. ``true`` or ``1.5`` for an int is refused
    rather than read as 1 (a timeout of 1 ms)."""
    what = "a whole number" if kind is int else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{path}: {key} must be {what}, not {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{path}: {key} must be {what}, not {value!r}") from None
    if kind is int and not number.is_integer():
        raise ConfigError(f"{path}: {key} must be {what}, not {value!r}")
    if not number > 0 or number == float("inf"):
        raise ConfigError(f"{path}: {key} must be positive, not {value!r}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{path}: {key} must be at most {int(maximum)}{limit_note}, not {value!r}")
    return kind(number)


def _text(value: Any, key: str, path: Path) -> str:
    """A text setting (a number is taken as its text; a list or mapping is refused)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{path}: {key} must be text, not {value!r}")
    return str(value)


@dataclass(frozen=True)
class Settings:
    """Everything the runtime reads from ``flint.yaml`` and the environment, typed."""

    config_dir: Path
    redis_url: str = ""
    prefix: str = "flint"
    default_timeout: int = 60000
    result_ttl: int = 86400
    max_output: int = 16 * 1024 * 1024
    lost_after: float = 30.0
    heartbeat: float = 0.0
    memory_limit_mb: int = 2048
    retryable: tuple[str, ...] = ()
    api_host: str = "127.0.0.1"
    api_port: int = 3501
    max_body: int = 10 * 1024 * 1024
    secrets_file: Path | None = None
    users_file: Path | None = None
    flintbit_dirs: tuple[Path, ...] = field(default_factory=lambda: (Path("flintbits"),))

    @property
    def embedded(self) -> bool:
        """True when no Redis URL is set: jobs go through the in-process queue."""
        return not self.redis_url

    @property
    def heartbeat_interval(self) -> float:
        """How often a worker says it is alive: a third of ``lost_after`` unless set."""
        return self.heartbeat or max(self.lost_after / 3.0, 0.2)

    def secret_resolver(self) -> SecretResolver:
        """Resolves ``secrets.NAME`` from the environment, then ``secrets-file``."""
        return SecretResolver(self.secrets_file)

    @classmethod
    def load(
        cls,
        config_dir: str | Path | None = None,
        *,
        redis_url: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> "Settings":
        """Resolve settings: option, then environment, then ``flint.yaml``, then default."""
        env = os.environ if env is None else env
        directory = Path(config_dir or env.get("FLINT_CONFIG") or "config")
        path = directory / "flint.yaml"
        data = load_yaml(path, resolver=None, env=env) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: must be a mapping")
        unknown = set(data) - set(_SCHEMA_KEYS)
        if unknown:
            raise ConfigError(f"{path}: unknown key: {', '.join(sorted(map(str, unknown)))}")
        redis = _section(data, "redis", path)
        jobs = _section(data, "jobs", path)
        worker = _section(data, "worker", path)
        api = _section(data, "api", path)

        url = redis_url if redis_url is not None else env.get("FLINT_REDIS_URL") or redis.get("url") or ""
        dirs_value = env.get("FLINT_FLINTBITS") or data.get("flintbits") or "flintbits"
        if isinstance(dirs_value, list):  # a YAML list of directories, as well as "a:b"
            dirs_value = os.pathsep.join(_text(d, "flintbits[]", path) for d in dirs_value)
        dirs = tuple(Path(p) for p in _text(dirs_value, "flintbits", path).split(os.pathsep) if p)

        def in_config(name: str, default: str) -> Path:
            value = Path(_text(data.get(name) or default, name, path))
            return value if value.is_absolute() else directory / value

        retryable = worker.get("retryable") or []
        if not isinstance(retryable, list) or not all(isinstance(r, str) for r in retryable):
            raise ConfigError(f"{path}: worker.retryable must be a list of flintbit refs")
        return cls(
            config_dir=directory,
            redis_url=_text(url, "redis.url", path),
            prefix=_text(redis.get("prefix") or "flint", "redis.prefix", path),
            default_timeout=_number(jobs.get("default-timeout", 60000), "jobs.default-timeout", path,
                                    maximum=MAX_TIMEOUT_MS, limit_note=" (a day)"),
            result_ttl=_number(jobs.get("result-ttl", 86400), "jobs.result-ttl", path),
            max_output=_number(jobs.get("max-output", 16 * 1024 * 1024), "jobs.max-output", path),
            lost_after=_number(worker.get("lost-after", 30), "worker.lost-after", path, float),
            heartbeat=_number(worker["heartbeat"], "worker.heartbeat", path, float) if worker.get("heartbeat") else 0.0,
            memory_limit_mb=_number(worker.get("memory-limit", 2048), "worker.memory-limit", path),
            retryable=tuple(str(r) for r in retryable),
            api_host=_text(api.get("host") or "127.0.0.1", "api.host", path),
            api_port=_number(api.get("port", 3501), "api.port", path),
            max_body=_number(api.get("max-body", 10 * 1024 * 1024), "api.max-body", path),
            secrets_file=in_config("secrets-file", "secrets.yaml"),
            users_file=in_config("users-file", "users.yaml"),
            flintbit_dirs=dirs,
        )
