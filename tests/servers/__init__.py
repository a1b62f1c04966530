"""Real servers for the tests (redis-server, aiosmtpd, Dovecot) and worker processes."""

from __future__ import annotations

import shutil

__all__ = ["dies_with_tests"]


def dies_with_tests(command: list[str]) -> list[str]:
    """``command`` run so that the kernel kills it if the test process dies without tearing down.

    util-linux's ``setpriv --pdeathsig KILL`` sets PR_SET_PDEATHSIG and execs the command (no
    ``preexec_fn``, which is unsafe in a process with threads). Without setpriv, ``command``.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *command] if setpriv else list(command)
