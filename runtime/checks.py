"""``flint check``: is the configuration sound, do the flintbits compile, are the servers there?"""

from __future__ import annotations

from typing import Any

from connectors import ConnectorCall
from runtime.configuration import load_yaml
from runtime.errors import FlintError
from runtime.registry import ConnectorRegistry
from runtime.settings import Settings
from runtime.store import FlintbitStore, compile_script

__all__ = ["run_checks"]


def run_checks(config_dir: str | None, redis_url: str | None, *, connect: bool = False) -> dict[str, Any]:
    """Return ``{"ok": bool, "checks": [{"check", "ok", "detail"}]}``; never raises a FlintError."""
    checks: list[dict[str, Any]] = []

    def record(name: str, action: Any) -> Any:
        try:
            value = action()
            checks.append({"check": name, "ok": True, "detail": value if isinstance(value, str) else "ok"})
            return value
        except FlintError as exc:
            checks.append({"check": name, "ok": False, "detail": exc.message})
            return None

    settings = record("flint.yaml", lambda: Settings.load(config_dir, redis_url=redis_url))
    if settings is None:
        return {"ok": False, "checks": checks}
    registry = record("connectors.yaml", lambda: ConnectorRegistry.load(
        settings.config_dir / "connectors.yaml", settings.secret_resolver()))
    record("global.yaml", lambda: load_yaml(settings.config_dir / "global.yaml",
                                            resolver=settings.secret_resolver()) and "ok")
    if not settings.embedded:
        from runtime.queue import JobQueue, connect as connect_redis

        record("redis", lambda: JobQueue(connect_redis(settings), settings).ping() and
               f"reached {JobQueue(connect_redis(settings), settings).location}")
    store = FlintbitStore(settings.flintbit_dirs)
    for entry in store.list():
        ref = entry["ref"]
        record(f"flintbit {ref}", lambda ref=ref: compile_script(store.find(ref).source, ref) and "compiles")
    if connect and isinstance(registry, ConnectorRegistry):
        for name in registry.specs:
            record(f"connector {name}", lambda name=name: registry.get(name).check(ConnectorCall(timeout_ms=5000)))
        registry.close()
    return {"ok": all(c["ok"] for c in checks), "checks": checks}
