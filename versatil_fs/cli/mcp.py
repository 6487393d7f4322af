"""``versatil mcp``: the lock manager as MCP tools, on stdio, for an agent harness to start."""

from __future__ import annotations

import importlib.util
import os

import click

from versatil_fs.errors import UsageError

__all__ = ["mcp"]


@click.command()
@click.option(
    "--harness", default="", metavar="NAME",
    help="The harness that starts the server (claude, codex, gemini, cursor): it picks "
    "[agents] names.NAME and names the agent NAME:mcp-PID when nothing else does.",
)
def mcp(harness: str) -> None:
    """Serve versatil's locks, checkpoints and wave status as MCP tools over stdio.

    A harness runs this for a session (`versatil integrate HARNESS` registers it) and ends it
    with the session: the locks taken through it are held by this process and end with it,
    `kill -9` included. Tools: lock, unlock, locks, checkpoint_create, checkpoint_list,
    checkpoint_diff, checkpoint_restore, wave_status.
    """
    from versatil_fs.agents.protocol import HARNESSES

    if harness and harness not in HARNESSES:
        raise UsageError(
            f"Unknown harness {harness!r} for --harness; one of {', '.join(HARNESSES)}."
        )
    # The SDK is an optional extra: every other command works without it.
    if importlib.util.find_spec("mcp") is None:
        raise UsageError(
            "versatil mcp needs the MCP SDK, an optional extra: pip install 'versatil-fs[mcp]'."
        )
    if os.isatty(0):
        # A person at a terminal would see nothing at all while it waits for JSON-RPC.
        raise UsageError(
            "versatil mcp speaks MCP on stdin and stdout for a harness to start (`versatil "
            "integrate HARNESS` registers it); it is not meant to be run by hand."
        )
    from versatil_fs.agents.mcp_server import serve

    raise SystemExit(serve(harness))
