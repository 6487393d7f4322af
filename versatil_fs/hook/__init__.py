"""The git pre-commit guard: the check it runs on every commit, and installing or removing it.

* :mod:`~versatil_fs.hook.check` — the check: staged paths against other agents' write locks,
  and the message a refused commit prints;
* :mod:`~versatil_fs.hook.install` — the hook script, where git runs it, install and uninstall;
* :mod:`~versatil_fs.hook.context` — what git hands a hook (its repository, its variables).
* :mod:`~versatil_fs.hook.strict` — the strict guard (``install --strict``): git's
  reference-transaction hook, for the commits that skip pre-commit.

The names callers use are re-exported here (``hook.check``, ``hook.install``).
"""

from __future__ import annotations

from versatil_fs.hook.check import (
    Blocked,
    CheckResult,
    StagedPath,
    check,
    find_blocked,
    parse_name_status,
    refusal,
)
from versatil_fs.hook.install import (
    HOOK_NAME,
    HOOK_TEMPLATE,
    MARKER,
    SAVED_SUFFIX,
    HookPlace,
    hook_place,
    install,
    render_hook,
    uninstall,
)

__all__ = [
    "HOOK_NAME",
    "HOOK_TEMPLATE",
    "MARKER",
    "SAVED_SUFFIX",
    "Blocked",
    "CheckResult",
    "HookPlace",
    "StagedPath",
    "check",
    "find_blocked",
    "hook_place",
    "install",
    "parse_name_status",
    "refusal",
    "render_hook",
    "uninstall",
]
