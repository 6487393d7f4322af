"""``versatil monitor [--json] [PATH...]``: print every write to the repository as it happens."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

import click

from versatil_fs import monitor as monitoring
from versatil_fs.cli.common import json_lines_option
from versatil_fs.repo import Repository

__all__ = ["monitor"]


@click.command()
@json_lines_option
@click.argument("paths", nargs=-1, metavar="[PATH...]")
def monitor(as_json: bool, paths: tuple[str, ...]) -> int:
    """Report unlocked and locked writes until interrupted; one line per write.

    \b
    unlocked-write  no live write lock covered the path
    locked-write    written while AGENT held a write lock covering it
    restored        written by a `checkpoint restore` (who restored, which checkpoint)

    The monitor cannot tell who wrote a file (inotify does not say): a write to a locked
    path is attributed to the lock's holder, even one made by another process in another
    shell. The writer itself is known only where versatil sees it: the agent harness hooks
    (`versatil integrate`) and `versatil run` and wave tasks, which scan what their own
    processes changed. The monitor's own output files are never reported.

    PATHs narrow what is printed. Only one process observes a repository at a time: if a
    `versatil run` or another monitor already does, this one prints what that one reports,
    and takes over when it exits.
    """
    repo = Repository.find(".")
    wanted = [repo.relpath(p) for p in paths]
    stop = threading.Event()

    def stop_on(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # SIGTERM and SIGHUP end the monitor the way Ctrl-C does: output flushed, election handed on.
    signal.signal(signal.SIGTERM, stop_on)
    signal.signal(signal.SIGHUP, stop_on)

    def on_write(write: monitoring.Write) -> None:
        text = monitoring.encode_write(write).decode() if as_json else write.line()
        sys.stdout.write(text + "\n")
        sys.stdout.flush()  # consumers read us through a pipe: one event, one flush

    try:
        monitoring.watch(
            repo, paths=wanted, on_write=on_write,
            on_notice=monitoring.stderr_notice("versatil monitor"), stop=stop,
        )
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a foreground monitor ends
    return 0
