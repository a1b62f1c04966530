"""The Flint runtime.

Inside a flintbit the names ``input``, ``output``, ``log``, ``connector``, ``flintbit``, ``call``
and ``config`` are already defined. The same objects are importable from here, for editors and
tests (``from runtime import output``); outside a running flintbit using them is an error.
"""

from __future__ import annotations

from typing import Any

from runtime.errors import FlintError
from runtime.script import CallBuilder, Response

__all__ = ["input", "output", "log", "connector", "flintbit", "call", "config", "Response", "FlintError"]


class _FlintbitName:
    """Stands for one of a running flintbit's names and forwards to the current one."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _target(self) -> Any:
        from runtime.execution import current_namespace

        namespace = current_namespace()
        if namespace is None:
            raise RuntimeError(f"runtime.{self._name} is only available while a flintbit runs")
        return namespace[self._name]

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):  # introspection (pickle, doctest, IDEs) is not a flintbit call
            raise AttributeError(attribute)
        return getattr(self._target(), attribute)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<flintbit name {self._name!r}>"


input = _FlintbitName("input")  # noqa: A001 - the flintbit API's own name
output = _FlintbitName("output")
log = _FlintbitName("log")
call = _FlintbitName("call")
config = _FlintbitName("config")


def connector(name: str) -> CallBuilder:
    """A request to connector ``name`` from the running flintbit."""
    return _FlintbitName("connector")(name)


def flintbit(ref: str) -> CallBuilder:
    """A call of flintbit ``ref`` from the running flintbit."""
    return _FlintbitName("flintbit")(ref)
