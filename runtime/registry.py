"""The connector instances named in ``config/connectors.yaml``, validated when the file is loaded.

    connectors:
      smtp:                 # the name flintbits use: connector("smtp")
        type: smtp          # smtp | imap | pop3
        description: Outbound relay
        config: {...}       # checked against the type's config schema
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors import TYPES, Connector, connector_class
from runtime.configuration import SecretResolver, load_yaml
from runtime.errors import ConfigError, InvalidRequest, NotFound

__all__ = ["ConnectorSpec", "ConnectorRegistry"]

logger = logging.getLogger(__name__)

_ENTRY_KEYS = {"type", "description", "config"}


@dataclass(frozen=True)
class ConnectorSpec:
    """One named connector instance as configured (its config may hold secrets)."""

    name: str
    type: str
    description: str
    config: dict[str, Any]

    def public(self) -> dict[str, str]:
        """What ``GET /v1/connectors`` and ``flint connectors`` show: no config values."""
        return {"name": self.name, "type": self.type, "description": self.description}


class ConnectorRegistry:
    """Loads ``connectors.yaml`` once and hands out one connector object per name, lazily."""

    def __init__(self, specs: dict[str, ConnectorSpec], source: Path | None = None) -> None:
        self.specs = specs
        self.source = source
        self._instances: dict[str, Connector] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path, resolver: SecretResolver) -> "ConnectorRegistry":
        """Read and validate ``path``; every error names the file, the connector and the key."""
        data = load_yaml(path, resolver=resolver, required=True) or {}
        if not isinstance(data, dict) or not isinstance(data.get("connectors", {}), dict):
            raise ConfigError(f"{path}: must be a mapping with a 'connectors' mapping")
        unknown = set(data) - {"connectors"}
        if unknown:
            raise ConfigError(f"{path}: unknown key: {', '.join(sorted(map(str, unknown)))}")
        specs: dict[str, ConnectorSpec] = {}
        for name, entry in (data.get("connectors") or {}).items():
            where = f"{path}: connectors.{name}"
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: must be a mapping with type and config")
            extra = set(entry) - _ENTRY_KEYS
            if extra:
                raise ConfigError(f"{where}: unknown key: {', '.join(sorted(map(str, extra)))}")
            type_name = entry.get("type")
            if type_name not in TYPES:
                raise ConfigError(f"{where}.type: unknown connector type {type_name!r} (types: {', '.join(TYPES)})")
            config = entry.get("config") or {}
            if not isinstance(config, dict):
                raise ConfigError(f"{where}.config: must be a mapping")
            try:
                connector_class(type_name).validate_config(config, where=f"{where}.config")
            except InvalidRequest as exc:
                raise ConfigError(exc.message) from None
            description = entry.get("description") or ""
            if not isinstance(description, str):
                raise ConfigError(f"{where}.description: must be text")
            specs[str(name)] = ConnectorSpec(str(name), type_name, description, config)
        return cls(specs, path)

    def spec(self, name: str) -> ConnectorSpec:
        """The spec named ``name``; NotFound (-3) if there is none."""
        try:
            return self.specs[name]
        except KeyError:
            raise NotFound(f"connector not found: {name}") from None

    def get(self, name: str) -> Connector:
        """The connector object for ``name``, created on first use and then reused."""
        with self._lock:
            instance = self._instances.get(name)
            if instance is None:
                spec = self.spec(name)
                instance = connector_class(spec.type)(spec.name, spec.config, spec.description)
                self._instances[name] = instance
            return instance

    def close(self) -> None:
        """Close every connector object made so far (pooled connections)."""
        with self._lock:
            for instance in self._instances.values():
                try:
                    instance.close()
                except Exception:  # closing is best effort; the process may be going away
                    logger.warning("closing connector %s failed", instance.name, exc_info=True)
            self._instances.clear()
