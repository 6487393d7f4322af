"""``versatil who PATH``: which agents wrote a file, when, and under which lock, from the log."""

from __future__ import annotations

import os
import time

import click

from versatil_fs.checkpoints import Checkpoints, Modification, printable
from versatil_fs.cli.common import echo, echo_json, json_option

__all__ = ["who"]


@click.command()
@click.argument("path", metavar="PATH")
@json_option
def who(path: str, as_json: bool) -> None:
    """Which agents wrote PATH, when, and how that is known, from the files-modified log,
    newest last.

    A write is known by its writer when an agent's harness hook, `versatil run` or a wave
    recorded it; by lock when the monitor saw it written while an agent held the lock (the
    monitor cannot tell which process wrote). A directory lists the writes of the files below it.
    """
    if not path:
        from versatil_fs.errors import UsageError

        raise UsageError("Name a file or a directory: `versatil who PATH`.")
    checkpoints = Checkpoints(".")
    # The path is relative to where the user stands; the API's to the repository root.
    rel, writes = checkpoints.who(os.path.abspath(path))
    if as_json:
        echo_json({"repo": str(checkpoints.repo.toplevel), "path": rel,
                   "writes": [_write_json(w) for w in writes]})
        return
    if not writes:
        echo(f"No recorded writes of {printable(rel)} in the log.")
        return
    for write in writes:
        echo(_line(rel, write))


def _line(rel: str, write: Modification) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(write.time))
    agent = printable(write.agent or "someone")
    if not write.by_writer:
        how = (f"under lock {write.lease or '?'} (attributed by lock, not by writer: the "
               f"monitor saw it {write.event or 'written'} while {agent} held the lock)")
    elif write.source == "agent-hook":
        how = "by its agent hook"
    elif write.wave is not None or write.task:
        parts = [f"wave {write.wave}" if write.wave is not None else "",
                 f"task {printable(write.task)}" if write.task else ""]
        how = "by " + ", ".join(p for p in parts if p)
    else:
        how = "by its own process (versatil run or a recorded write)"
    if write.lease and write.by_writer:
        how += f", lock {write.lease}"
    recorded = [p for p in write.paths if p != rel]
    where = f" (recorded as {', '.join(printable(p) for p in recorded)})" if recorded else ""
    return f"{stamp}  {agent}  {how}{where}"


def _write_json(write: Modification) -> dict[str, object]:
    return {"time": write.time, "agent": write.agent, "paths": list(write.paths),
            "source": write.source or None, "lease": write.lease, "wave": write.wave,
            "task": write.task, "event": write.event, "by_writer": write.by_writer}
