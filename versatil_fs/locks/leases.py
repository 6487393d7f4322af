"""Lease files: the kernel's proof that a lock holder (or a waiter) is still alive.

Each live lease or waiting request has a file ``run/leases/<id>.lease`` that its process keeps
flocked (``LOCK_EX``) from before the request is recorded until it is released. The kernel drops
that flock the instant the process dies, however it dies, so:

* liveness is a non-blocking ``LOCK_SH`` probe: it fails while the owner lives, and succeeds
  once it is gone. Probing with ``LOCK_SH`` (not ``LOCK_EX``) matters: waiters also take
  ``LOCK_SH`` on the file, and must never make a dead holder look alive to a probe;
* waiting is a *blocking* ``LOCK_SH`` on the holder's file, in a helper thread: the kernel wakes
  it within about 0.1 ms of the holder's release or death. No poll interval, no guessing from PIDs.

The file also carries the lease's record (first byte the status, then JSON), so the lock table
can be rebuilt from the lease directory if ``resource-locks.json`` is ever damaged.

What this does not guarantee (as in tox-dev/filelock's lease notes): a holder whose lease was
force-released keeps running and can still write; the lock is advisory. Descriptors are
``O_CLOEXEC`` so commands started with exec never inherit a flock, but a plain ``os.fork()``
child shares it, and keeps the lease alive until it exits too.
"""

from __future__ import annotations

import fcntl
import os
import select
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from versatil_fs.state import StateDir

WAITING = b"W"
GRANTED = b"G"
REVOKED = b"R"


class LeaseFile:
    """The flocked file of one lease owned by this process."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def create(cls, state: StateDir, lease_id: str, record: bytes) -> LeaseFile:
        """Create, flock and fill the file under a temporary name, then rename it in place.

        The rename comes last so that anyone who can see ``<id>.lease`` (a table rebuild scanning
        the directory) finds it already flocked: a probe can never catch it between open and
        flock and declare a live request dead.
        """
        final = state.leases / f"{lease_id}.lease"
        tmp = state.leases / f".{lease_id}.tmp"
        fd = state.open_lock_file(tmp)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, WAITING + record)
            os.rename(tmp, final)
        except BaseException:
            os.close(fd)
            state.remove(tmp)
            raise
        return cls(final, fd)

    def mark(self, status: bytes) -> None:
        # One byte at offset 0: a single pwrite is never torn, so a rebuild sees W or G, not both.
        if self._fd is not None:
            os.pwrite(self._fd, status, 0)

    @property
    def closed(self) -> bool:
        return self._fd is None

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


def is_held(path: str | Path) -> bool:
    """Whether a live process still holds the lease file at ``path`` flocked."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing also drops the probe's own LOCK_SH
    return False


def mark_revoked(path: str | Path) -> None:
    """Mark another process's lease revoked, so a table rebuild does not bring it back."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.pwrite(fd, REVOKED, 0)
    finally:
        os.close(fd)


def read_record(path: Path) -> tuple[bytes, bytes] | None:
    """``(status, record JSON)`` of a lease file, or None if it is gone or empty."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data:
        return None
    return data[:1], data[1:]


class Doorbell:
    """Wakes a blocked request when a lease it waits on ends or the lock table changes.

    Two sources ring it, both kernel notifications: a thread blocked in ``flock(LOCK_SH)`` on
    each blocking lease file (release or death of a process lease), and inotify on the table's
    directory (a table rewrite: a shell lease unlocked, a forced release, a waiter ahead leaving).
    Where inotify is missing, the table is re-read every ``fallback_poll`` seconds instead —
    the only poll, and only for shell leases, which have no process to wake us.
    """

    fallback_poll = 0.05

    def __init__(self, table_dir: Path) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        self._watched: set[str] = set()
        self._inotify = _inotify_watch(table_dir)

    def watch(self, lease_files: Iterable[str]) -> None:
        for path in lease_files:
            if path and path not in self._watched:
                self._watched.add(path)
                # Each thread owns a duplicate of the pipe's write end: it may outlive this
                # doorbell (blocked until that holder finally releases) and must never write
                # to a descriptor number that has since been reused.
                wfd = os.dup(self._write)
                threading.Thread(
                    target=_wait_for_release, args=(path, wfd), daemon=True,
                    name=f"versatil-wait-{Path(path).stem}",
                ).start()

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
        for fd in (self._read, self._write, self._inotify):
            if fd is not None:
                os.close(fd)
        self._inotify = None


def _wait_for_release(path: str, wfd: int) -> None:
    try:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            pass  # already gone: ring at once
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
            finally:
                os.close(fd)
        try:
            os.write(wfd, b"x")
        except OSError:
            pass  # the doorbell was closed: nobody is waiting any more
    finally:
        os.close(wfd)


_IN_MOVED_TO = 0x00000080
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000


def _inotify_watch(directory: Path) -> int | None:
    """An inotify descriptor reporting files renamed into ``directory`` (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = int(libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))
    except (OSError, AttributeError):
        return None
    if fd < 0:
        return None
    if libc.inotify_add_watch(fd, os.fsencode(directory), _IN_MOVED_TO) < 0:
        os.close(fd)  # e.g. the watch limit is reached: fall back to the bounded poll
        return None
    return fd
