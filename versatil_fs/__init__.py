"""versatil-fs: let several coding agents work on one git repository without losing work.

The public API is re-exported here lazily, so ``import versatil_fs`` (and every CLI start-up)
pays only for what a caller actually uses: the lock path never imports watchdog or the
checkpoint code, and the agent hook process (``versatil agent-hook``, run before every edit an
agent makes) imports nothing here at all — not even ``typing``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from versatil_fs.checkpoints import Checkpoints, checkpoint
    from versatil_fs.errors import (
        ConfigError,
        Deadlock,
        LockConflict,
        NotARepository,
        Refused,
        StateError,
        UsageError,
        VersatilError,
    )
    from versatil_fs.locks.manager import Lease, LockManager
    from versatil_fs.waves.executor import WaveExecutor
    from versatil_fs.waves.plan import Plan

_LAZY = {
    "ConfigError": "versatil_fs.errors",
    "Deadlock": "versatil_fs.errors",
    "LockConflict": "versatil_fs.errors",
    "NotARepository": "versatil_fs.errors",
    "Refused": "versatil_fs.errors",
    "StateError": "versatil_fs.errors",
    "UsageError": "versatil_fs.errors",
    "VersatilError": "versatil_fs.errors",
    "LockManager": "versatil_fs.locks.manager",
    "Lease": "versatil_fs.locks.manager",
    "Checkpoints": "versatil_fs.checkpoints",
    "checkpoint": "versatil_fs.checkpoints",
    "Plan": "versatil_fs.waves.plan",
    "WaveExecutor": "versatil_fs.waves.executor",
}

__all__ = [
    "Checkpoints",
    "ConfigError",
    "Deadlock",
    "Lease",
    "LockConflict",
    "LockManager",
    "NotARepository",
    "Plan",
    "Refused",
    "StateError",
    "UsageError",
    "VersatilError",
    "WaveExecutor",
    "checkpoint",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'versatil_fs' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
