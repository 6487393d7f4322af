"""``versatil-daemon``: the command names the reference note's troubleshooting section uses.

``versatil-daemon list-checkpoints``, ``restore-checkpoint ID`` and ``release-locks --agent=A``
are the same operations as ``versatil checkpoint list``, ``checkpoint restore`` and
``versatil release``, kept so that runbooks written for the original tool work as written.
"""

from __future__ import annotations

import os
from typing import Any

import click

from versatil_fs.cli import run_cli
from versatil_fs.cli.common import (
    echo,
    echo_json,
    json_option,
    restore_options,
    say_library_notices,
)

__all__ = ["daemon", "list_checkpoints", "main", "release_locks", "restore_checkpoint"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-C", "directory", type=click.Path(file_okay=False), help="Run as if started in DIRECTORY."
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def daemon(directory: str | None, debug: bool) -> None:
    """Recovery commands: list and restore checkpoints, release an agent's locks."""
    say_library_notices()
    if directory:
        try:
            os.chdir(directory)
        except OSError as exc:
            raise click.BadParameter(f"cannot enter {directory}: {exc.strerror}.") from exc


@daemon.command(name="list-checkpoints")
@click.option("--tail", type=click.IntRange(min=1), metavar="N", help="Only the newest N.")
@json_option
def list_checkpoints(tail: int | None, as_json: bool) -> None:
    """Every checkpoint of this repository, oldest first."""
    from versatil_fs.checkpoints import Checkpoints
    from versatil_fs.cli.checkpoint import print_list

    print_list(Checkpoints("."), tail, as_json)


@daemon.command(name="restore-checkpoint")
@restore_options
def restore_checkpoint(
    checkpoint_id: str,
    paths: tuple[str, ...],
    agent: str | None,
    wave: int | None,
    force: bool,
    as_json: bool,
) -> None:
    """Bring the working tree back to checkpoint ID (a safety checkpoint is made first)."""
    from versatil_fs.checkpoints import Checkpoints
    from versatil_fs.cli.checkpoint import run_restore

    run_restore(Checkpoints("."), checkpoint_id, paths, agent, wave, force, as_json)


@daemon.command(name="release-locks")
@click.option("--agent", required=True, metavar="NAME", help="The agent whose locks to release.")
@json_option
def release_locks(agent: str, as_json: bool) -> None:
    """Release every lock an agent holds (its processes keep running)."""
    # Each command imports only what it uses, so `versatil-daemon --help` starts fast.
    from versatil_fs.locks.manager import LockManager

    released: list[Any] = list(LockManager(repo=".").release_agent(agent))
    if as_json:
        echo_json({"agent": agent, "released": released})
        return
    if not released:
        echo(f"{agent} held no locks.")
        return
    for grant in released:
        claims = ", ".join(f"{claim.resource} ({claim.mode})" for claim in grant.claims)
        echo(f"Released {claims} held by {agent}.")


def main(args: list[str] | None = None) -> None:
    raise SystemExit(run_cli(daemon, args, prog="versatil-daemon"))
