"""The ``smtp`` connector: send mail through an SMTP server, or capture it to ``.eml`` files.

Action ``send`` (the default) takes the keys of SPEC section 4 (``from``, ``to``, ``cc``,
``bcc``, ``reply-to``, ``subject``, ``body``, ``body-file``, ``content-type``, ``text-body``,
``attachments``, ``headers``, ``importance``, ``sensitivity``, ``read-receipt``,
``follow-up``, and per-request ``target``, ``port``, ``security``, ``username``,
``password``, ``timeout``) and answers::

    {"result": "success", "message-id": "<...>", "accepted": [...], "refused": {"addr": "550 ..."}}

plus ``"eml"`` (the stored file) when the config names a ``capture-dir``.

A transaction that failed before the server could have accepted the message (a 4xx, a
connection dropped before the final ``.``) is retried with backoff within the timeout; nothing
is ever sent again once the final ``.`` has gone (:mod:`.retry` has the rule).

Modules: :mod:`.schema` (JSON Schemas), :mod:`.attachments` (roots, limits, loading),
:mod:`.fetch` (URL attachments, guarded), :mod:`.message` (building the message),
:mod:`.wire` (the message as sent, its attachments encoded only during DATA),
:mod:`.session` (the SMTP transaction and its errors), :mod:`.retry` (what is retried),
:mod:`.pool` (idle connections), :mod:`.connector` (the :class:`SmtpConnector` tying them together).
"""

from __future__ import annotations

from connectors.smtp.connector import SmtpConnector

__all__ = ["SmtpConnector"]
