"""The connector contract: a small class with a type name, JSON Schemas and actions.

A connector *type* (``smtp``, ``imap``, ``pop3``) is a subclass of :class:`Connector`. A connector
*instance* is one entry of ``config/connectors.yaml``: a name, a type and a config block, validated
against the type's ``config_schema`` when the file is loaded. A request names an action (the
``action`` key, else the type's ``default_action``); its keys are merged over the config (request
keys win, as Flint's "config/request" parameters) and the merged mapping is validated against the
action's schema before the action runs. Unknown keys are refused with the key's name.

A subclass implements one method per action, ``action_<name>(request, call)``, returning the
output mapping, and raises :mod:`runtime.errors` classes for failures.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import fastjsonschema
import jsonschema
from jsonschema import Draft202012Validator

from runtime.configuration import Secret
from runtime.errors import Forbidden, InvalidRequest

__all__ = ["Connector", "ConnectorCall", "validate", "make_request_schema"]

logger = logging.getLogger(__name__)


def _is_string(checker: Any, instance: Any) -> bool:
    return isinstance(instance, (str, Secret))


_TYPE_CHECKER = Draft202012Validator.TYPE_CHECKER.redefine("string", _is_string)
_Validator = jsonschema.validators.extend(Draft202012Validator, type_checker=_TYPE_CHECKER)


def _describe(error: jsonschema.ValidationError, where: str) -> str:
    """Turn a jsonschema error into a message that names the key and the reason."""
    path = ".".join(str(p) for p in error.absolute_path)
    prefix = f"{where}: " if where else ""
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        owner = f" in {path}" if path else ""
        return f"{prefix}unknown key{'s' if len(extra) > 1 else ''}{owner}: {', '.join(repr(k) for k in extra)}"
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        owner = f" in {path}" if path else ""
        return f"{prefix}{missing[0]!r} is required{owner}" if missing else f"{prefix}{error.message}"
    if error.validator == "anyOf" and error.schema.get("description"):
        return f"{prefix}{error.schema['description']}"
    key = repr(path) if path else "request"
    if error.validator == "type":
        return f"{prefix}{key} must be of type {error.validator_value}"
    if error.validator == "enum":
        allowed = ", ".join(str(v) for v in error.validator_value)
        return f"{prefix}{key} must be one of: {allowed}"
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "minLength", "maxLength", "minItems"):
        return f"{prefix}{key}: {error.validator} is {error.validator_value}"
    if error.validator == "pattern":
        return f"{prefix}{key} is not valid"
    # Other validators: jsonschema's message quotes the instance, which may be a secret; avoid it.
    return f"{prefix}{key} is not valid ({error.validator})"


_validators: dict[int, tuple[Mapping[str, Any], Any, Any]] = {}


def _validators_for(schema: Mapping[str, Any]) -> tuple[Any, Any]:
    """(jsonschema validator, compiled check) per schema object, made once.

    The compiled check (fastjsonschema: the schema turned into Python code) answers "valid?"
    about twenty times faster; jsonschema is used only to say what is wrong.
    """
    cached = _validators.get(id(schema))
    if cached is None or cached[0] is not schema:
        try:
            compiled = fastjsonschema.compile(dict(schema))
        except fastjsonschema.JsonSchemaDefinitionException:
            compiled = None  # a schema it cannot compile is checked by jsonschema alone
        cached = _validators[id(schema)] = (schema, _Validator(schema), compiled)
    return cached[1], cached[2]


def _without_secrets(instance: Any) -> Any:
    if isinstance(instance, dict) and any(isinstance(v, Secret) for v in instance.values()):
        return {k: ("**********" if isinstance(v, Secret) else v) for k, v in instance.items()}
    return instance


def validate(instance: Any, schema: Mapping[str, Any], *, where: str = "") -> None:
    """Validate ``instance``; raise :class:`InvalidRequest` naming the first wrong key."""
    validator, compiled = _validators_for(schema)
    if compiled is not None:
        try:
            compiled(_without_secrets(instance))
            return
        except fastjsonschema.JsonSchemaException:
            pass  # say what is wrong, the way jsonschema sees it
    errors = sorted(validator.iter_errors(instance), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        raise InvalidRequest(_describe(errors[0], where))


def make_request_schema(config_schema: Mapping[str, Any], request_properties: Mapping[str, Any],
                        *, required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """An action's schema: the config keys (overridable per request) plus the action's own keys."""
    properties = dict(copy.deepcopy(config_schema.get("properties", {})))
    properties.update(copy.deepcopy(dict(request_properties)))
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    schema.update(extra)
    return schema


@dataclass
class ConnectorCall:
    """What a running action knows about the call that made it.

    ``timeout_ms`` is the time the action may take in all (the smaller of the request's timeout
    and the job's time left); ``log`` writes a line to the job's log.
    """

    jobid: str = ""
    timeout_ms: int = 60000
    log: Callable[[str, str], None] = field(default=lambda level, message: None)

    @property
    def timeout_s(self) -> float:
        """The timeout in seconds, as socket libraries take it."""
        return max(self.timeout_ms, 1) / 1000.0


class Connector:
    """Base of every connector type. Subclasses set the class attributes and ``action_*`` methods."""

    type: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}, "additionalProperties": False}
    request_schemas: ClassVar[dict[str, dict[str, Any]]] = {}
    default_action: ClassVar[str] = ""
    secret_keys: ClassVar[frozenset[str]] = frozenset({"password"})
    # Config keys a request may override. The others (tls-verify, ca-file, allow-plaintext-auth,
    # attachment roots and limits, ...) guard the host and may come only from the config.
    request_overridable: ClassVar[frozenset[str]] = frozenset(
        {"target", "port", "security", "username", "password", "timeout"})

    def __init__(self, name: str, config: Mapping[str, Any], description: str = "") -> None:
        self.name = name
        self.config = dict(config)
        self.description = description or self.description

    @classmethod
    def validate_config(cls, config: Mapping[str, Any], *, where: str) -> None:
        """Check a config block at load time; raise a ConfigError-compatible InvalidRequest."""
        validate(dict(config), cls.config_schema, where=where)

    def prepare(self, request: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """Merge ``request`` over the config, wrap secrets, validate; return (action, merged).

        A key set to ``null`` counts as not given (flintbits often pass ``input.get("cc")`` on).
        A request naming a config-only key is refused (-9).
        """
        request = {key: value for key, value in request.items() if value is not None}
        config_only = set(self.config_schema.get("properties", {})) - self.request_overridable
        for key in sorted(config_only & set(request)):
            raise Forbidden(f"{key!r} can be set only in the connector config, not in a request")
        action = request.pop("action", None) or self.default_action
        if not isinstance(action, str) or action not in self.request_schemas:
            allowed = ", ".join(sorted(self.request_schemas))
            raise InvalidRequest(f"connector {self.name}: unknown action {action!r} (actions: {allowed})")
        merged = {**self.config, **request}
        for key in self.secret_keys:
            if isinstance(merged.get(key), str):
                merged[key] = Secret(merged[key])
        validate(merged, self.request_schemas[action])
        return action, merged

    def run(self, request: Mapping[str, Any], call: ConnectorCall) -> dict[str, Any]:
        """Run one request (``action`` chooses the action) and return its output mapping."""
        action, merged = self.prepare(request)
        handler = getattr(self, f"action_{action.replace('-', '_')}")
        return handler(merged, call)

    def check(self, call: ConnectorCall) -> str:
        """Reach the configured server (``flint check --connect``); return what was checked.

        The default opens and closes a TCP connection to ``target``:``port``; types override it
        to also greet and authenticate.
        """
        import socket

        from connectors.transport import translate_connect_error

        host, port = self.config.get("target"), self.config.get("port")
        if not host or not port:
            return "no server configured"
        try:
            socket.create_connection((str(host), int(port)), timeout=call.timeout_s).close()
        except OSError as exc:
            raise translate_connect_error(exc, str(host), int(port), timeout_ms=call.timeout_ms) from exc
        return f"reached {host}:{port}"

    def close(self) -> None:
        """Release pooled connections; called when the worker child retires the instance."""
