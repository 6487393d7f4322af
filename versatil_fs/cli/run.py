"""``versatil run``: a command under locks, watched, with the command's own exit code.

Only click and :mod:`versatil_fs.runner` are imported here; the runner loads the lock manager,
the monitor and watchdog only when the run needs them.
"""

from __future__ import annotations

import click

from versatil_fs import runner
from versatil_fs.cli.common import agent_option, say_library_notices

__all__ = [
    "run",
]


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@agent_option
@click.option(
    "--lock", "writes", multiple=True, metavar="RES",
    help="Write-lock a path (file or directory), a glob ('src/**/*.ts', quoted) or "
    "kind:name resource; repeatable.",
)
@click.option(
    "--read", "reads", multiple=True, metavar="RES", help="Read-lock a resource; repeatable."
)
@click.option("--wait", type=float, metavar="S", help="Seconds to wait in the lock queue.")
@click.option(
    "--checkpoint", is_flag=True,
    help="Checkpoint before the command, and every checkpoints.interval while it runs.",
)
@click.option(
    "--rollback-on-failure", is_flag=True,
    help="If the command fails, restore the files it changed under its locks (implies "
    "--checkpoint).",
)
@click.option(
    "--no-monitor", "no_monitor", is_flag=True,
    help="Do not take part in watching the repository for unlocked writes.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- CMD...")
def run(
    agent: str | None,
    writes: tuple[str, ...],
    reads: tuple[str, ...],
    wait: float | None,
    checkpoint: bool,
    rollback_on_failure: bool,
    no_monitor: bool,
    command: tuple[str, ...],
) -> int:
    """Run CMD holding the locks; exit with CMD's code (128+N if signal N killed it).

    \b
    versatil run --agent Marcus --lock src/api/ -- claude -p "add /auth/login"
    """
    say_library_notices()
    result = runner.run(
        command, agent=agent, writes=writes, reads=reads, wait=wait, checkpoint=checkpoint,
        rollback_on_failure=rollback_on_failure, monitor=not no_monitor,
    )
    return result.exit_code
