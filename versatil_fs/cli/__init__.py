"""The ``versatil`` command's entry point.

``versatil agent-hook HARNESS`` is what a coding agent's harness runs before and after every
tool call, so its start-up is latency the agent waits for on every edit: it is handed to
:mod:`versatil_fs.agents.client` (the standard library only) before anything else is imported.
``versatil hook check-refs`` (the strict guard, in every branch update) goes straight to
:mod:`versatil_fs.hook.strict`. Every other command goes to the click application in
:mod:`versatil_fs.cli.app`.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

__all__ = ["COMMANDS", "LazyGroup", "cli", "main", "printable_streams", "run_cli"]


def main(args: list[str] | None = None) -> NoReturn:
    argv = sys.argv[1:] if args is None else args
    if argv[:1] == ["agent-hook"]:
        from versatil_fs.agents.client import main as agent_hook

        sys.exit(agent_hook(argv[1:]))
    if argv[:2] == ["hook", "check-refs"]:
        # The strict guard runs in every branch update: click's start-up is skipped there too.
        from versatil_fs.hook.strict import main as check_refs

        sys.exit(check_refs(argv[2:]))
    from versatil_fs.cli.app import cli, printable_streams, run_cli

    printable_streams()
    sys.exit(run_cli(cli, args))


def __getattr__(name: str) -> Any:
    # The click application's names, for callers that imported them from here.
    if name in __all__:
        from versatil_fs.cli import app

        return getattr(app, name)
    raise AttributeError(f"module 'versatil_fs.cli' has no attribute {name!r}")
