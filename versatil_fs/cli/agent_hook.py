"""``versatil agent-hook HARNESS``, as listed in ``versatil --help``.

The entry point (:func:`versatil_fs.cli.main`) hands a plain ``versatil agent-hook ...`` to
:mod:`versatil_fs.agents.client` before click is even imported; this command is reached only
through global options (``versatil -C DIR agent-hook claude``) and does the same.
"""

from __future__ import annotations

import click

from versatil_fs.agents.client import main as run_hook
from versatil_fs.agents.protocol import HARNESSES

__all__ = ["agent_hook"]


@click.command("agent-hook", context_settings={"ignore_unknown_options": True})
@click.argument("harness", type=click.Choice([*HARNESSES]))
def agent_hook(harness: str) -> None:
    """What a harness runs before and after each tool call (JSON on stdin).

    `versatil integrate HARNESS` writes the configuration that runs it. It claims the file an
    agent is about to edit, or denies the edit when another agent holds it; it never prints
    anything when nothing stands against the edit.
    """
    raise SystemExit(run_hook([harness]))
