"""Connector types. Each type is a :class:`connectors.base.Connector` subclass named here.

Adding a connector type touches only this package: its module, its schemas and this table.
"""

from __future__ import annotations

import importlib

from connectors.base import Connector, ConnectorCall

__all__ = ["Connector", "ConnectorCall", "TYPES", "connector_class"]

# type name -> "module:Class", imported on first use so a worker loads only what it serves.
TYPES: dict[str, str] = {
    "smtp": "connectors.smtp:SmtpConnector",
    "imap": "connectors.imap:ImapConnector",
    "pop3": "connectors.pop3:Pop3Connector",
}


def connector_class(type_name: str) -> type[Connector]:
    """Return the class of connector type ``type_name``; KeyError if there is none."""
    module_name, _, class_name = TYPES[type_name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)
