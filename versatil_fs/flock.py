"""OS file locks: the only module that calls ``fcntl.flock``.

Every lock versatil-fs takes (the lock table's ``run/table.lock``, the holder files under
``run/leases/``, a wave run's lock, the monitor's election, a restore's and a scratch
directory's lock) is a ``flock(2)`` on a descriptor. It belongs to the *open file description*:
another ``open`` of the same file, even in this process, contends with it; a ``dup`` or a forked
child shares it; the kernel drops it the instant the last descriptor closes, however the process
dies. That is why a flock is our proof of life.

One contention rule for every caller (as tox-dev/filelock's ``_unix.py`` has one
``_lock_fd_nonblocking``): a non-blocking request that fails with ``EAGAIN``, ``EWOULDBLOCK`` or
``EACCES`` means "held by someone else" (flock(2) documents ``EWOULDBLOCK``; ``EACCES`` is what
some file systems' lock emulation and ``lockf`` return). Any other errno is a real failure and
raises ``OSError``.

The API:

* :func:`try_lock` — non-blocking; ``True`` if taken, ``False`` if held by someone else;
* :func:`lock` / :func:`unlock` and :func:`held` (a ``with`` block) — blocking;
* :func:`lock_within` — blocking with a timeout, without polling: a helper thread blocks in
  ``flock`` on a descriptor of its own and the kernel wakes it the moment the lock is free;
* :func:`probe` / :func:`probe_path` — "is this file held by someone?", taking nothing away.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "CONTENTION",
    "held",
    "is_contention",
    "lock",
    "lock_within",
    "probe",
    "probe_path",
    "try_lock",
    "unlock",
]

CONTENTION = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES})
"""The errnos of a non-blocking flock that mean "another open file description holds it"."""

# A path probe opens without following a symlink and without blocking: a FIFO planted under a
# lock file's name would otherwise hang the opener, and a symlink would point the probe at a
# file that is not ours.
_PROBE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _mode(shared: bool) -> int:
    return fcntl.LOCK_SH if shared else fcntl.LOCK_EX


def is_contention(exc: OSError) -> bool:
    """Whether a failed non-blocking flock means "held by someone else" (the one rule)."""
    return exc.errno in CONTENTION


def try_lock(fd: int, *, shared: bool = False) -> bool:
    """Take the lock on ``fd`` without blocking: ``True`` if taken, ``False`` if held.

    Raises ``OSError`` for anything but contention (a bad descriptor, ``ENOLCK``).
    """
    try:
        fcntl.flock(fd, _mode(shared) | fcntl.LOCK_NB)
    except OSError as exc:
        if is_contention(exc):
            return False
        raise
    return True


def lock(fd: int, *, shared: bool = False) -> None:
    """Take the lock on ``fd``, blocking until it is free (``EINTR`` is retried by Python)."""
    fcntl.flock(fd, _mode(shared))


def unlock(fd: int) -> None:
    """Drop the lock held through ``fd`` (closing the last descriptor does it too)."""
    fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def held(fd: int, *, shared: bool = False) -> Iterator[None]:
    """Hold the lock on ``fd`` (blocking to take it) for the ``with`` block."""
    lock(fd, shared=shared)
    try:
        yield
    finally:
        unlock(fd)


def lock_within(
    open_fd: Callable[[], int], timeout: float, *, shared: bool = False
) -> int | None:
    """A new descriptor from ``open_fd()`` holding the lock, taken within ``timeout`` seconds.

    Returns None when the lock stayed held that long; the descriptor is then closed for us.
    flock has no timeout, so a helper thread blocks in it (the kernel wakes it the moment the
    lock is free: no polling) while we wait on an event. The thread's descriptor is a separate
    open file description, so the lock it gets is ours to use; if we give up first, the thread
    lets go of the lock as soon as it gets it by closing that descriptor — which is why the
    descriptor must be one that nobody else uses. A failed flock raises its ``OSError``: it is
    never mistaken for a lock taken.
    """
    fd = open_fd()
    try:
        if try_lock(fd, shared=shared):
            return fd
    except BaseException:
        os.close(fd)
        raise
    got = threading.Event()
    guard = threading.Lock()
    abandoned = [False]
    failed: list[OSError] = []

    def take() -> None:
        try:
            lock(fd, shared=shared)
        except OSError as exc:
            failed.append(exc)
        with guard:
            if abandoned[0]:
                os.close(fd)  # drops the lock we no longer want
                return
            got.set()

    threading.Thread(target=take, daemon=True, name="versatil-flock-wait").start()
    if not got.wait(min(max(timeout, 0.0), threading.TIMEOUT_MAX)):
        with guard:
            if not got.is_set():
                abandoned[0] = True
                return None
        # else: granted just as we gave up; use it
    if failed:
        os.close(fd)
        raise failed[0]
    return fd


def probe(fd: int, *, shared: bool = True) -> bool:
    """Whether someone else holds a lock on ``fd``'s file that conflicts with ours.

    ``shared=True`` (the default) asks "is it held exclusively?" — the question a liveness
    probe asks, because waiters take shared locks on a holder's file and must never make a
    dead holder look alive; ``shared=False`` asks "is it held at all?". ``fd`` must be a
    descriptor of its own (a fresh ``open``): whatever the probe takes it drops again.
    """
    if not try_lock(fd, shared=shared):
        return True
    unlock(fd)
    return False


def probe_path(path: str | Path, *, shared: bool = True) -> bool:
    """:func:`probe` of the regular file at ``path``, opened safely; False when it is gone.

    Anything but a regular file (a symlink, a FIFO) is no proof of life: it is not held. An
    error other than contention counts as not held too.
    """
    try:
        fd = os.open(path, _PROBE_FLAGS)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return probe(fd, shared=shared)
    except OSError:
        return False
    finally:
        os.close(fd)  # closing also drops anything the probe took
