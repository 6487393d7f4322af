"""``versatil demo``: the whole story on a throwaway repository."""

from __future__ import annotations

import click

from versatil_fs.cli.common import echo

__all__ = ["demo"]


@click.command()
@click.option("--keep", is_flag=True, help="Keep the throwaway repository to look at after.")
def demo(keep: bool) -> None:
    """Show locks, waits, deadlock refusal and reclaim on a throwaway repository."""
    from versatil_fs import demo as story

    story.run(out=echo, keep=keep)
