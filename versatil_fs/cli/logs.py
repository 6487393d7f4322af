"""``versatil logs STREAM``: read (or follow) one event stream."""

from __future__ import annotations

import sys

import click

from versatil_fs import events
from versatil_fs.cli.common import echo

__all__ = ["logs"]


@click.command()
@click.argument("stream", metavar="STREAM", type=click.Choice(events.STREAMS))
@click.option("--tail", type=click.IntRange(min=1), metavar="N", help="Only the last N events.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they come.")
@click.option("--filter", "word", metavar="WORD", help="Only events mentioning WORD.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def logs(stream: str, tail: int | None, follow: bool, word: str | None, as_json: bool) -> None:
    """Show the events of STREAM: locks, collision-detection, checkpoints, wave-execution."""
    for event in events.read(stream, tail=tail, word=word):
        _print(event, as_json)
    if follow:
        try:
            for event in events.follow(stream, word=word):
                _print(event, as_json)
        except KeyboardInterrupt:
            return


def _print(event: events.Event, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(events.encode(event).decode() + "\n")
        sys.stdout.flush()  # consumers read through a pipe, one event at a time
    else:
        echo(event.summary())
