"""Fault injection for the atomicity tests: signal this process at a named point of a write."""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    """Signal this process here when ``$XMR_CRASH_AT`` is ``name`` (atomicity tests).

    The signal is SIGKILL, or the one ``$XMR_CRASH_SIGNAL`` names (e.g. ``TERM``).
    """
    if os.environ.get("XMR_CRASH_AT") == name:
        sig = getattr(signal, "SIG" + os.environ.get("XMR_CRASH_SIGNAL", "KILL").upper().removeprefix("SIG"))
        os.kill(os.getpid(), sig)
