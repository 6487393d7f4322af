"""The journal: a run's transitions made durable by one writer thread, several per fsync, and a
task's start appended (fdatasync'd) to the write-ahead file before its process exists.
"""

from __future__ import annotations

import os
import threading

from versatil_fs.errors import (
    StateError,
    Stopped,
)
from versatil_fs.state import write_all
from versatil_fs.waves.records import (
    RunState,
    TaskRun,
)
from versatil_fs.waves.store import (
    ENCODER,
    RunStore,
    StartRecord,
    frame_record,
)

__all__ = ["Journal"]


# Durable state, several transitions per fsync --------------------------------------------------
class Journal:
    """Writes the run state on a thread of its own: every transition is on disk (fsynced)
    within one write of happening, and transitions that come together share a write.

    A transition is made under ``mutex`` and followed by :meth:`note`; the writer encodes the
    state under the same mutex, so it never sees half a transition. Before this, every
    transition paid its own fsync under the mutex, and with five tasks ending together the
    scheduler queued behind the disk.

    A task's process starts only once its "running" record (with its file snapshot) is on
    disk. Waiting for a state write for that took two fsyncs (file and directory) of the whole
    document, often behind a write already under way; instead :meth:`log` appends the task's
    record to the run's write-ahead file (``waves/<run>.wal``) with one ``fdatasync``, and the
    document catches up in the background. Records are numbered; the document says up to
    which number it holds (``RunState.journal``), and whoever reads the run applies the newer
    records (:meth:`RunStore._replay`). The file goes once a durable document holds all of it.
    """

    def __init__(self, store: RunStore, run: RunState, mutex: threading.Lock) -> None:
        self.store = store
        self.run = run
        self.mutex = mutex
        self.cond = threading.Condition()
        self.asked = 0
        self.written = 0
        self.failure: BaseException | None = None
        self.stopping = False  # the run stops because of ``failure``: notes no longer raise
        self.closing = False
        self.wal_lock = threading.Lock()  # appends in the order of their numbers
        self.wal_fd: int | None = None
        self.thread = threading.Thread(target=self._loop, name="wave-journal", daemon=True)
        self.thread.start()

    def log(self, task: TaskRun) -> None:
        """Make ``task`` as it now is durable before returning, ahead of the document.

        The caller has made the transition under the mutex; the record is numbered and encoded
        under it too, so a document encoded later holds the transition and a higher number.
        The caller notes the transition for the document when it suits it (a task once its
        process started: the document's write would otherwise compete with the spawn).
        """
        with self.wal_lock:
            if self.closing:
                raise Stopped  # the run is over (interrupted): this task must not start
            with self.mutex:
                self.run.journal += 1
                frame = frame_record(StartRecord(number=self.run.journal, task=task))
            try:
                if self.wal_fd is None:
                    self.wal_fd = self.store.open_wal(self.run.id)
                write_all(self.wal_fd, frame)
                os.fdatasync(self.wal_fd)
            except OSError as exc:
                raise StateError(
                    f"Could not record the start of task {task.id} in "
                    f"{self.store.wal_path(self.run.id)}: {exc.strerror or exc}"
                ) from exc

    def note(self) -> int:
        """Ask for a write of the state as it now is; returns its number for :meth:`sync`."""
        with self.cond:
            if self.failure is not None and self.stopping:
                return self.asked  # the run is being stopped for this failure: said once
            self._raise()
            self.asked += 1
            self.cond.notify_all()
            return self.asked

    def sync(self, number: int | None = None) -> None:
        """Wait until write ``number`` (default: everything noted so far) is on disk."""
        with self.cond:
            wanted = self.asked if number is None else number
            while self.written < wanted and self.failure is None:
                self.cond.wait()
            self._raise()

    def close(self) -> None:
        """Write what is pending and stop the writer; the document then holds every record."""
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.thread.join()
        with self.wal_lock:
            if self.wal_fd is not None:
                os.close(self.wal_fd)
                self.wal_fd = None
                if self.failure is None:
                    self.store.drop_wal(self.run.id)
        with self.cond:
            self._raise()

    def _raise(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _loop(self) -> None:
        while True:
            with self.cond:
                while self.written == self.asked and not self.closing:
                    self.cond.wait()
                if self.written == self.asked:
                    return
                number = self.asked
            with self.mutex:
                data = ENCODER.encode(self.run)
            try:
                self.store.write(self.run.id, data)
            except BaseException as exc:  # a full disk: tell every waiter, stop writing
                with self.cond:
                    self.failure = exc
                    self.cond.notify_all()
                return
            with self.cond:
                self.written = number
                self.cond.notify_all()
