"""Reading the YAML configuration: ``${VAR}`` expansion, ``secrets.NAME`` and the :class:`Secret` wrapper.

The three files of ``config/`` are plain YAML. Every string value may hold ``${VAR}`` or
``${VAR:-default}``, expanded from the environment when the file is read. A value that is exactly
``secrets.NAME`` becomes a :class:`Secret`, resolved from the environment variable ``NAME`` or else
from the secrets file named in ``flint.yaml`` (``secrets-file``).

>>> s = Secret("hunter2")
>>> s
Secret('**********')
>>> s.reveal()
'hunter2'
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from runtime.errors import ConfigError

__all__ = ["Secret", "expand_env", "load_yaml", "parse_yaml", "SecretResolver", "reveal"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_REF = re.compile(r"^secrets\.([A-Za-z_][A-Za-z0-9_]*)$")


class _FileError(ConfigError):
    """A ConfigError about another file than the one being read (the secrets file): not re-prefixed."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: let PyYAML say so
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, path: Path | str) -> Any:
    """Parse YAML ``text`` read from ``path``; a ConfigError names the file, the line and the problem.

    Never quotes the file's content (it may hold a secret or a hash), and refuses duplicate keys.

    >>> parse_yaml("a: 1\\na: 2", "x.yaml")
    Traceback (most recent call last):
    ...
    runtime.errors.ConfigError: x.yaml: line 2: duplicate key 'a'
    """
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        code = ord(exc.character) if isinstance(exc.character, str) else int(exc.character)
        raise ConfigError(f"{path}: line {line}: character #x{code:04x} is not allowed in YAML") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{where} {problem}") from None


class Secret:
    """A secret value whose ``repr`` and ``str`` hide it; call :meth:`reveal` at the point of use."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = str(value)

    def reveal(self) -> str:
        """Return the secret text (only to hand to a protocol library)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def reveal(value: Any) -> Any:
    """Return the text of a :class:`Secret`, or ``value`` itself when it is not one."""
    return value.reveal() if isinstance(value, Secret) else value


def expand_env(text: str, env: Mapping[str, str] | None = None, *, where: str = "") -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in ``text``; an unset ``${VAR}`` is a ConfigError."""
    env = os.environ if env is None else env

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value not in (None, ""):
            return value
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {name} is not set and has no default")

    return _VAR.sub(substitute, text)


class SecretResolver:
    """Resolves ``secrets.NAME``: the environment variable ``NAME``, else the secrets file."""

    def __init__(self, secrets_file: Path | None = None, env: Mapping[str, str] | None = None) -> None:
        self._file = secrets_file
        self._env = os.environ if env is None else env
        self._from_file: dict[str, str] | None = None

    def resolve(self, name: str, *, where: str) -> Secret:
        """Return the secret ``name``; a missing one is a ConfigError naming it (never its value)."""
        if name in self._env:
            return Secret(self._env[name])
        values = self._file_values()
        if name in values:
            return Secret(values[name])
        source = f" or in {self._file}" if self._file else ""
        raise ConfigError(f"{where}: secret {name} is not set (looked in the environment{source})")

    def _file_values(self) -> dict[str, str]:
        if self._from_file is None:
            self._from_file = {}
            if self._file and self._file.exists():
                try:
                    data = load_yaml(self._file, resolver=None)
                except ConfigError as exc:
                    raise _FileError(exc.message) from None
                if not isinstance(data, dict):
                    raise _FileError(f"{self._file}: must be a mapping of NAME: value (the secrets file)")
                self._from_file = {str(k): str(v) for k, v in data.items()}
        return self._from_file


def _walk(value: Any, path: str, resolver: SecretResolver | None, env: Mapping[str, str] | None,
          done: dict[int, Any] | None = None) -> Any:
    """Expand and resolve every string in ``value``; ``done`` maps containers already walked (YAML
    aliases share them: each is walked once, and one that contains itself is refused)."""
    if isinstance(value, (dict, list)):
        done = {} if done is None else done
        if id(value) in done:
            if done[id(value)] is None:
                raise ConfigError(f"{path or 'the document'}: a YAML alias refers to itself")
            return done[id(value)]
        done[id(value)] = None  # in progress
        if isinstance(value, dict):
            result: Any = {k: _walk(v, f"{path}.{k}" if path else str(k), resolver, env, done)
                           for k, v in value.items()}
        else:
            result = [_walk(v, f"{path}[{i}]", resolver, env, done) for i, v in enumerate(value)]
        done[id(value)] = result
        return result
    if isinstance(value, str):
        text = expand_env(value, env, where=path)
        match = _SECRET_REF.match(text)
        if match and resolver is not None:
            return resolver.resolve(match.group(1), where=path)
        return text
    return value


def load_yaml(
    path: Path,
    *,
    resolver: SecretResolver | None,
    env: Mapping[str, str] | None = None,
    required: bool = False,
) -> Any:
    """Read a YAML file with ``${VAR}`` expanded and ``secrets.NAME`` resolved.

    Errors name the file and, where they can, the line or the key. A missing file is ``None``
    unless ``required``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: file not found") from None
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    data = parse_yaml(text, path)
    try:
        return _walk(data, "", resolver, env)
    except _FileError as exc:
        raise ConfigError(exc.message) from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}") from None
