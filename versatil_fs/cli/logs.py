"""``versatil logs STREAM``: read (or follow) one event stream.

Inside a repository only its events are shown (and those of no repository: named resources,
which are machine-wide, a damaged table, a wave run's), ``--all`` every repository's. The
human lines say each fact once: a write the monitor saw under an agent's lock that the writer
itself recorded too (the agent's hook, ``versatil run``, the wave executor) is one line, the
writer's; ``--json`` keeps every event.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator

import click

from versatil_fs import events
from versatil_fs.cli.common import echo, json_lines_option
from versatil_fs.errors import NotARepository
from versatil_fs.repo import Repository

__all__ = ["logs", "told_once"]


@click.command()
@click.argument("stream", metavar="STREAM", type=click.Choice(events.STREAMS))
@click.option("--tail", type=click.IntRange(min=1), metavar="N", help="Only the last N events.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they come.")
@click.option("--filter", "word", metavar="WORD", help="Only events mentioning WORD.")
@click.option(
    "--all", "every_repo", is_flag=True,
    help="Every repository's events (the default outside one); inside one, only its own and "
    "those of no repository (named resources are machine-wide).",
)
@json_lines_option
def logs(stream: str, tail: int | None, follow: bool, word: str | None, every_repo: bool,
         as_json: bool) -> None:
    """Show the events of STREAM: locks, collision-detection, checkpoints, wave-execution."""
    keys = None if every_repo else _here()
    listed = [e for e in events.read(stream, word=word) if _ours(e, keys)]
    shown = listed if as_json else list(told_once(listed, _lease_ends(listed)))
    for event in shown[-tail:] if tail else shown:
        _print(event, as_json)
    if follow:
        try:
            # Following, only a writer's record that came first can fold a monitor line.
            writers = [e for e in listed if _writer_known(e)][-_REMEMBERED:]
            for event in events.follow(stream, word=word):
                if not _ours(event, keys):
                    continue
                if _writer_known(event):
                    writers = [*writers[-_REMEMBERED:], event]
                if as_json or not (_by_monitor(event) and _repeated(event, writers, {})):
                    _print(event, as_json)
        except KeyboardInterrupt:
            return


_REMEMBERED = 200  # writers' records kept while following, to fold a monitor line into


def _here() -> frozenset[str] | None:
    """The repository keys whose events belong here (None: every repository)."""
    try:
        repo = Repository.find(".")
    except NotARepository:
        return None
    return frozenset({repo.key, repo.lock_space()[0]})


def _ours(event: events.Event, keys: frozenset[str] | None) -> bool:
    return keys is None or event.repo is None or event.repo in keys


def _writer_known(event: events.Event) -> bool:
    return event.kind == "files-modified" and event.data.get("source") != "monitor"


def _by_monitor(event: events.Event) -> bool:
    return event.kind == "files-modified" and event.data.get("source") == "monitor"


def _paths(event: events.Event) -> set[str]:
    return {p for p in event.data.get("paths") or [] if isinstance(p, str)}


def _lease_ends(listed: list[events.Event]) -> dict[str, float]:
    """When each lease a monitor line names ended, from the locks log (absent: still held)."""
    wanted = {str(e.data.get("lease")) for e in listed if _by_monitor(e) and e.data.get("lease")}
    if not wanted:
        return {}
    ends: dict[str, float] = {}
    # Only the lines of a lease's end are decoded (a substring search per line): the locks
    # log of a busy machine is mostly grants and waits. `release"` matches forced-release too.
    for marker in (b'release"', b'"expire"', b'"reclaim"'):
        for event in events.records("locks", containing=marker):
            lease = event.data.get("lease")
            if lease in wanted and event.kind in _LEASE_ENDS:
                ends[str(lease)] = min(event.time, ends.get(str(lease), event.time))
    return ends


_LEASE_ENDS = frozenset({"release", "forced-release", "expire", "reclaim"})


def told_once(
    listed: Iterable[events.Event], lease_ends: dict[str, float]
) -> Iterator[events.Event]:
    """``listed`` without the monitor's ``files-modified`` lines that repeat a write the
    writer recorded itself: same repository, same agent, the same paths, recorded while the
    lease the monitor names was held (from the monitor's line until its end in
    ``lease_ends``; to the end of the listing when it has none)."""
    items = list(listed)
    writers = [e for e in items if _writer_known(e)]
    for event in items:
        if _by_monitor(event) and _repeated(event, writers, lease_ends):
            continue
        yield event


# How far before the monitor's line the writer's own record may be: the agent hook records an
# edit as it happens, the monitor's inotify report follows it (measured: well under a second).
_WRITER_FIRST = 5.0


def _repeated(
    seen: events.Event, writers: list[events.Event], lease_ends: dict[str, float]
) -> bool:
    paths = _paths(seen)
    end = lease_ends.get(str(seen.data.get("lease")), float("inf"))
    return bool(paths) and any(
        w.agent == seen.agent and w.repo == seen.repo and paths <= _paths(w)
        and seen.time - _WRITER_FIRST <= w.time <= end + _WRITER_FIRST
        for w in writers
    )


def _print(event: events.Event, as_json: bool) -> None:
    if as_json:
        line = events.encode(event).decode()
        if event.repo is None:
            # Every line carries its repository, null for none (a named resource, machine-
            # wide): the record itself leaves an empty field out.
            line = line[:-1] + ',"repo":null}'
        sys.stdout.write(line + "\n")
        sys.stdout.flush()  # consumers read through a pipe, one event at a time
    else:
        echo(event.summary())
