"""``versatil monitor`` in the foreground: observe when elected, otherwise print what the
elected monitor logs (:func:`follow`), and take over the moment it exits."""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from versatil_fs import events
from versatil_fs.monitor.election import Election
from versatil_fs.monitor.inotify import wake_on_change
from versatil_fs.monitor.own_files import OwnFiles
from versatil_fs.monitor.scan import normalize_guards, under
from versatil_fs.monitor.watcher import Monitor
from versatil_fs.monitor.writes import STREAM, Write, writes_from_event
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir

__all__ = ["follow", "log_size", "stderr_notice", "watch"]


def log_size(state: StateDir) -> int:
    """Where the collision-detection log ends now: :func:`follow` reads from here on."""
    return events.end(STREAM, state=state)


def follow(
    repo: Repository, state: StateDir, stop: threading.Event, offset: int
) -> Iterator[events.Event]:
    """Events logged for ``repo``'s working tree in the collision-detection stream after
    ``offset``, until ``stop``.

    Woken by inotify (through watchdog) when the log grows; the one-second poll is only a
    safety net for a missed wake-up.
    """
    path = state.event_log(STREAM)
    state.ensure_dir(path.parent)
    root = str(repo.toplevel)
    with wake_on_change(path) as grew:
        for event in events.follow(
            STREAM, state=state, offset=offset, stop=stop, grew=grew, poll=1.0
        ):
            if event.repo == repo.key and event.data.get("worktree", root) == root:
                yield event


class _Foreground:
    """The state of one foreground monitor: its output queue, the observer once elected."""

    def __init__(self, repo: Repository, state: StateDir, paths: Sequence[str]) -> None:
        self.repo = repo
        self.state = state
        self.wanted = normalize_guards(paths) if paths else ["."]
        self.out: queue.SimpleQueue[Write | str | None] = queue.SimpleQueue()
        self.election = Election(repo, state)
        self.monitor: Monitor | None = None
        self.following = threading.Event()
        # Our own output files, when another process observes: it reports our writes to them,
        # and printing those would write them again, once more per line, forever.
        self.own = OwnFiles(str(repo.toplevel), state)

    def emit(self, write: Write) -> None:
        if self.own and self.own(write.path, _lstat(self.repo.toplevel / write.path)):
            return
        if under(write.path, self.wanted) or (write.source and under(write.source, self.wanted)):
            self.out.put(write)

    def observe(self) -> None:
        m = Monitor(self.repo, state=self.state, sink=self.emit, notify=self.out.put, record=True)
        m.start()
        m.wait_ready()
        self.out.put(f"watching {', '.join(m.guards)} in {self.repo.toplevel} for unlocked writes")
        self.monitor = m

    def follower(self, offset: int) -> None:
        try:
            for event in follow(self.repo, self.state, self.following, offset):
                if event.kind == "rescan":
                    self.out.put(
                        f"the observing monitor rescanned ({event.data.get('reason')}): "
                        f"{event.data.get('changes')} writes found"
                    )
                for write in writes_from_event(event):
                    self.emit(write)
        except BaseException as exc:  # pragma: no cover - reported, not swallowed
            self.out.put(f"stopped following the observing monitor: {exc}")

    def candidate(self) -> None:
        self.election.wait_to_win()
        self.following.set()  # stop reading the log: from now on we observe ourselves
        self.out.put(None)  # tells the main loop to start observing

    def stand_by(self) -> None:
        """Follow the elected monitor, and wait to take over from it."""
        pid = self.election.holder_pid()
        who = f"process {pid}" if pid else "another process"
        # Before anything is printed: the observer must know our output files are ours.
        self.own.announce(self.repo.key, str(self.repo.toplevel))
        # From this offset on, before saying so: nothing logged after the notice is missed.
        threading.Thread(
            target=self.follower, args=(log_size(self.state),), name="versatil-follow",
            daemon=True,
        ).start()
        threading.Thread(target=self.candidate, name="versatil-elect", daemon=True).start()
        self.out.put(
            f"{who} is already watching {self.repo.toplevel}; showing what it reports "
            "(this monitor takes over when it exits)"
        )

    def close(self) -> None:
        self.following.set()
        if self.monitor is not None:
            self.monitor.stop(final_scan=False)
        self.election.resign()


def watch(
    repo: Repository,
    *,
    paths: Sequence[str] = (),
    on_write: Callable[[Write], None],
    on_notice: Callable[[str], None],
    state: StateDir | None = None,
    stop: threading.Event | None = None,
) -> None:
    """``versatil monitor``: report every write until ``stop`` is set (or Ctrl-C).

    Observes when elected; otherwise prints what the elected monitor logs, and takes over the
    moment it exits. ``paths`` (repo-relative) narrow what is printed, not what is watched: the
    observer always watches every guarded path, because it reports for everyone.
    """
    stop = stop or threading.Event()
    fg = _Foreground(repo, state or StateDir(), paths)
    try:
        if fg.election.try_win():
            fg.observe()
        else:
            fg.stand_by()
        while not stop.is_set():
            try:
                item = fg.out.get(timeout=0.2)
            except queue.Empty:
                if fg.monitor is not None and fg.monitor.failure is not None:
                    raise fg.monitor.failure from None
                continue
            if item is None:
                fg.observe()
                on_notice("took over watching: the previous monitor exited")
            elif isinstance(item, str):
                on_notice(item)
            else:
                on_write(item)
    finally:
        fg.close()


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def stderr_notice(prefix: str) -> Callable[[str], None]:
    """A notifier printing ``prefix: sentence.`` on stderr, flushed."""

    def say(message: str) -> None:
        sys.stderr.write(f"{prefix}: {message}.\n")
        sys.stderr.flush()

    return say
