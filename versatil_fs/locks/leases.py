"""Holder files: the kernel's proof that a lock holder (or a waiter) is still alive.

Each process that holds or waits for locks keeps one file ``run/leases/<id>.lease`` flocked
(``LOCK_EX``) for as long as it does. The kernel drops that flock the instant the process dies,
however it dies, so:

* liveness is a non-blocking ``LOCK_SH`` probe: it fails while the owner lives and succeeds once
  it is gone. Probing with ``LOCK_SH`` (not ``LOCK_EX``) matters: waiters also take ``LOCK_SH``
  on the file and must never make a dead holder look alive;
* a waiter learns of a holder's death from a *blocking* ``LOCK_SH`` on that file, in a helper
  thread: the kernel wakes it within about 0.1 ms. No poll interval, no guessing from PIDs.
  Releases by a live holder are announced by the lock table itself changing (inotify).

One file per process, not per lease, because creating and unlinking a file costs about 0.5 ms on
ext4 here (inode allocation and discard) — more than the whole lock transaction. The file also
holds the JSON records of the process's grants and waits, rewritten in place under the table
lock, so the table can be rebuilt from the lease directory if ``resource-locks.json`` is ever
damaged; a torn rewrite only happens if the process dies, and then its records are dead anyway.

What this does not guarantee (as tox-dev/filelock's lease notes say of theirs): a holder whose
lease was force-released or expired keeps running and can still write; the lock is advisory.
Descriptors are ``O_CLOEXEC`` so commands started with exec never inherit a flock, but a plain
``os.fork()`` child shares it; the manager notices the new PID and opens a file of its own.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import threading
import weakref
from collections.abc import Iterable
from pathlib import Path

from versatil_fs import flock, linux
from versatil_fs.state import StateDir, overwrite, state_error

__all__ = ["Doorbell", "HolderFile", "is_held", "rewrite_foreign"]


class HolderFile:
    """The flocked file that proves this process (one lock manager in it) is alive."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.pid = os.getpid()
        self._fd: int | None = fd

    @classmethod
    def create(cls, state: StateDir, holder_id: str) -> HolderFile:
        """Create and flock the file under a temporary name, then rename it in place.

        The rename comes last so that anyone who can see ``<id>.lease`` (a rebuild scanning
        the directory) finds it already flocked: a probe can never catch it between open and
        flock and declare a live holder dead.
        """
        state.ensure_dir(state.leases)
        final = state.leases / f"{holder_id}.lease"
        tmp = state.leases / f".{holder_id}.tmp"
        fd = state.open_lock_file(tmp)
        try:
            if not flock.try_lock(fd):  # a fresh id: only a planted file could be held
                raise BlockingIOError(errno.EWOULDBLOCK, "held by another process", str(tmp))
            os.rename(tmp, final)
        except BaseException:
            os.close(fd)
            state.remove(tmp)
            raise
        return cls(final, fd)

    @property
    def usable(self) -> bool:
        # After a fork the child shares our flock; it must prove its own life with a new file.
        return self._fd is not None and self.pid == os.getpid()

    def write(self, data: bytes) -> None:
        """Replace the records in place (under the table lock: no reader sees a partial one)."""
        if self._fd is not None:
            try:
                overwrite(self._fd, data)
            except OSError as exc:
                # A full disk: a StateError fails the transaction (nothing is recorded) with
                # one sentence, instead of an internal error.
                raise state_error(self.path, exc) from exc

    def close(self) -> None:
        """Remove the file, then drop the flock: waiters wake and find it gone."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def fileno(self) -> int | None:
        """The flocked descriptor, for processes this one starts to inherit (``pass_fds``)."""
        return self._fd if self.usable else None

    def detach(self) -> None:
        """Close our descriptor but keep the file and its records: a process that inherited
        the descriptor shares its open file description, and a flock belongs to that, so the
        kernel keeps the lock (this holder alive) until the last such process exits."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# Every holder file is opened without following a symlink and without blocking: a FIFO
# planted under a holder file's name would otherwise hang the opener (with the table lock
# held), and a symlink would point the probe, or a rewrite, at a file that is not ours.
_PROBE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _open_holder(path: str | Path, flags: int) -> int | None:
    """A descriptor on the regular file at ``path``, or None (gone, a symlink, not a file)."""
    try:
        fd = os.open(path, flags | _PROBE_FLAGS)
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def is_held(path: str | Path) -> bool:
    """Whether a live process still holds the file at ``path`` flocked.

    A shared probe (:func:`versatil_fs.flock.probe_path`): waiters take ``LOCK_SH`` on the file
    too and must never make a dead holder look alive. Anything but a regular file (a symlink,
    a FIFO) is no proof of life: it is not held.
    """
    return flock.probe_path(path, shared=True)


def rewrite_foreign(path: str | Path, data: bytes) -> None:
    """Replace the records in another process's holder file (a forced release), in place."""
    fd = _open_holder(path, os.O_WRONLY)
    if fd is None:
        return
    try:
        overwrite(fd, data)
    except OSError as exc:
        raise state_error(Path(path), exc) from exc
    finally:
        os.close(fd)


class Doorbell:
    """Wakes a blocked request when a holder it waits on dies or the lock table changes.

    Two sources ring it, both kernel notifications: a thread blocked in ``flock(LOCK_SH)`` on
    each blocking holder's file (its death, or its file closed), and inotify on the table's
    directory (every release, unlock, expiry and forced release rewrites the table). Where
    inotify is missing the table is re-read every ``fallback_poll`` seconds instead: the only
    poll, and only on systems without inotify.
    """

    fallback_poll = 0.05

    def __init__(self, table_dir: Path) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._inotify = linux.inotify_moved_to(table_dir)
        # Closed when dropped too (a thread's doorbell, when the thread ends), not only by
        # close(): a process that starts many threads must not collect descriptors.
        self._finalizer = weakref.finalize(
            self, _close_bell, self._read, self._write, self._inotify
        )

    def watch(self, holder_files: Iterable[str]) -> None:
        for path in holder_files:
            if path:
                _watch_holder(path, self._write)

    def drain(self) -> None:
        """Forget rings from before now (a doorbell is reused from one request to the next)."""
        for fd in (self._read, self._inotify):
            if fd is None:
                continue
            try:
                while os.read(fd, 4096):
                    pass
            except BlockingIOError:
                pass

    def wait(self, timeout: float) -> None:
        """Sleep until rung or ``timeout`` seconds pass; drains what rang."""
        sources = [self._read]
        if self._inotify is not None:
            sources.append(self._inotify)
        else:
            timeout = min(timeout, self.fallback_poll)
        ready, _, _ = select.select(sources, [], [], max(timeout, 0.0))
        for fd in ready:
            try:
                while os.read(fd, 4096):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        self._finalizer()  # runs once, whether called here or at collection


# One watcher thread per holder file per process, however many requests wait on that holder:
# it rings every doorbell registered for the file when the holder's flock goes away.
_watchers: dict[str, set[int]] = {}
_watchers_lock = threading.Lock()


def _watch_holder(path: str, bell: int) -> None:
    with _watchers_lock:
        bells = _watchers.get(path)
        if bells is not None:
            bells.add(bell)
            return
        _watchers[path] = {bell}
    threading.Thread(
        target=_wait_for_release, args=(path,), daemon=True, name=f"versatil-wait-{path}"
    ).start()


def _close_bell(read: int, write: int, inotify: int | None) -> None:
    _unwatch(write)
    for fd in (read, write, inotify):
        if fd is not None:
            os.close(fd)


def _unwatch(bell: int) -> None:
    # Under the lock, so a watcher thread never writes to a descriptor after it was closed.
    with _watchers_lock:
        for bells in _watchers.values():
            bells.discard(bell)


def _wait_for_release(path: str) -> None:
    fd = _open_holder(path, os.O_RDONLY)
    if fd is not None:  # else already gone (or not a holder file at all): ring at once
        try:
            flock.lock(fd, shared=True)
        except OSError:
            pass
        finally:
            os.close(fd)
    with _watchers_lock:
        for bell in _watchers.pop(path, ()):
            try:
                os.write(bell, b"x")
            except OSError:
                pass  # a full pipe has already been rung
