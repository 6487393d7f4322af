"""The glue to watchdog: its events reduced to :class:`Raw` items on the monitor's queue, and an
inotify observer that tells the monitor what watchdog keeps to itself (an event queue overflow,
the watch limit) and does not watch ``.git`` or ignored directories.

Also :func:`wake_on_change`, which tells a follower of the event log that the log grew.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "LIMIT",
    "OVERFLOW",
    "STOP",
    "Handler",
    "Raw",
    "event_filter",
    "make_observer",
    "wake_on_change",
]


@dataclass(frozen=True)
class Raw:
    """A watchdog event reduced to what we use (absolute paths, as str)."""

    kind: str  # created, modified, closed, deleted, moved, dir-deleted
    src: str
    dest: str = ""


# Control items on the monitor's queue, besides Raw events.
STOP = ("stop",)
OVERFLOW = ("overflow",)
LIMIT = ("limit",)


class Handler:
    """A watchdog handler that only queues: the monitor's thread does the work in batches."""

    def __init__(self, sink: queue.SimpleQueue[Any]) -> None:
        self._sink = sink

    def dispatch(self, event: Any) -> None:
        kind = event.event_type
        if event.is_directory:
            if kind == "deleted":
                # Deleted, or moved out of view: its files may get no events of their own.
                self._sink.put(Raw("dir-deleted", _s(event.src_path)))
            return  # files inside new or moved directories get events of their own
        if kind == "moved":
            self._sink.put(Raw("moved", _s(event.src_path), _s(event.dest_path)))
        elif kind in ("created", "modified", "closed", "deleted"):
            self._sink.put(Raw(kind, _s(event.src_path)))


def _s(path: str | bytes) -> str:
    return os.fsdecode(path)


def event_filter() -> list[Any]:
    # Reads (open, close-nowrite) are left out of the kernel mask: a `grep -r` by an agent
    # would otherwise flood the queue with events that can never be writes.
    from watchdog.events import (
        DirCreatedEvent,
        DirDeletedEvent,
        DirMovedEvent,
        FileClosedEvent,
        FileCreatedEvent,
        FileDeletedEvent,
        FileModifiedEvent,
        FileMovedEvent,
    )

    return [
        FileCreatedEvent, FileModifiedEvent, FileDeletedEvent, FileMovedEvent, FileClosedEvent,
        DirCreatedEvent, DirDeletedEvent, DirMovedEvent,
    ]


def make_observer(
    events_queue: queue.SimpleQueue[Any], prune: Callable[[str], bool]
) -> Any:
    """An inotify observer whose watch groups tell the monitor what watchdog keeps to itself.

    Written against watchdog 7.1's ``InotifyWatchGroup``: its overflow callback (to rescan once
    the watches are rebuilt), its watch registration (to notice ``ENOSPC``, which it swallows
    for every directory but the root) and its recursive walk (to skip .git and ignored
    directories, as ``prune`` says). With another watchdog the stock observer is used and an
    overflow is noticed through watchdog's log warning instead; the watch limit then goes
    unnoticed.
    """
    import logging

    logger = logging.getLogger("watchdog")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        # watchdog's warnings would otherwise reach stderr through logging's last resort,
        # across the screen of the agent a wrapper runs; we say what matters ourselves.
        logger.addHandler(logging.NullHandler())
    try:
        from watchdog.observers.inotify import (
            InotifyEmitter,
            InotifyObserver,
            InotifyWatchGroup,
        )
    except ImportError:
        return _stock_observer(events_queue)
    needed = ("_add_all_callbacks", "_add_callback", "on_queue_overflow")
    if not all(hasattr(InotifyWatchGroup, name) for name in needed):
        return _stock_observer(events_queue)
    group = _watch_group(InotifyWatchGroup, events_queue, prune)

    class Emitter(InotifyEmitter):
        def on_thread_start(self) -> None:
            self._inotify = group(
                self._inotify_fd,
                os.fsencode(self.watch.path),
                is_recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(),
                follow_symlink=self.watch.follow_symlink,
            )

    observer = InotifyObserver()
    observer._emitter_class = Emitter
    return observer


def _watch_group(
    base: Any, events_queue: queue.SimpleQueue[Any], prune: Callable[[str], bool]
) -> Any:
    """watchdog's ``InotifyWatchGroup`` (``base``), telling ``events_queue`` about an overflow
    and the watch limit, and adding no watch where ``prune`` says."""

    class Group(base):  # type: ignore[misc]
        def on_queue_overflow(self) -> None:
            super().on_queue_overflow()  # watchdog rebuilds the watches first
            events_queue.put(OVERFLOW)

        def _add_all_callbacks(self, path: bytes) -> None:
            decoded = os.fsdecode(path)
            if path != self.path and prune(decoded):
                return
            self._add_callback(path)
            if not (self.is_recursive and os.path.isdir(path)):
                return
            for root, dirnames, _ in os.walk(path, followlinks=self.follow_symlink):
                kept = []
                for name in dirnames:
                    full = os.path.join(root, name)
                    if not self.follow_symlink and os.path.islink(full):
                        continue
                    if prune(os.fsdecode(full)):
                        continue
                    kept.append(name)
                    self._add_callback(full)
                dirnames[:] = kept

        def _add_callback(self, path: bytes) -> None:
            try:
                wd = self._inotify_fd.add_callback(
                    path, self.event_mask, self._callback, self._id
                )
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    events_queue.put(LIMIT)
                if path == self.path:
                    raise
                return  # a directory that vanished while we walked
            self._active_callbacks_by_path[path] = wd
            self._active_callbacks_by_watch[wd] = path

    return Group


def _stock_observer(events_queue: queue.SimpleQueue[Any]) -> Any:
    import logging

    from watchdog.observers import Observer

    class OverflowLogHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "overflow" in record.getMessage().lower():
                events_queue.put(OVERFLOW)

    logging.getLogger("watchdog").addHandler(OverflowLogHandler(logging.WARNING))
    return Observer()


@contextmanager
def wake_on_change(path: Path) -> Iterator[threading.Event]:
    """An event set whenever ``path`` is written, created or renamed into place (inotify on its
    directory, through watchdog), for as long as the ``with`` lasts."""
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    grew = threading.Event()
    wanted = str(path)

    class Grew(FileSystemEventHandler):
        def on_any_event(self, event: Any) -> None:
            if _s(event.src_path) == wanted or _s(getattr(event, "dest_path", "")) == wanted:
                grew.set()

    observer = Observer()
    observer.schedule(Grew(), str(path.parent), recursive=False)
    observer.start()
    try:
        yield grew
    finally:
        observer.stop()
        observer.join(timeout=10)
