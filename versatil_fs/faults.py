"""Named fault points, so tests can kill a process at an awkward moment inside the code.

``VERSATIL_FAULT=state.before-rename`` makes the process SIGKILL itself when it reaches that point
(``name:N`` waits for the N-th time). Unset, a point costs one dict lookup. The points are part of
the crash-safety contract: each marks a moment where a real crash must leave no damage behind.
"""

from __future__ import annotations

import os
import signal

__all__ = ["point"]


_ARMED = os.environ.get("VERSATIL_FAULT", "")
_NAME, _, _COUNT = _ARMED.partition(":")
_remaining = int(_COUNT) if _COUNT.isdigit() else 1


def point(name: str) -> None:
    """Die here with SIGKILL when ``VERSATIL_FAULT`` names this point."""
    global _remaining
    if name != _NAME:
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
