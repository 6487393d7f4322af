"""Which process observes a working tree: an election won by holding one ``flock``."""

from __future__ import annotations

import hashlib
import os

from versatil_fs import flock
from versatil_fs.errors import VersatilError
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir, overwrite

__all__ = ["Election"]


class Election:
    """Who observes a working tree: the process holding ``run/monitors/<tree>.lock``
    exclusively.

    One per working tree rather than per repository: linked worktrees share their locks (the
    git common directory) but not their files, so each needs an observer of its own.

    The lock is a ``flock``, so it goes when its process goes, however that happens, and a
    candidate blocked in :meth:`wait_to_win` is woken by the kernel at that moment. The winner
    writes its PID into the file, for the message a losing candidate prints.
    """

    def __init__(self, repo: Repository, state: StateDir | None = None) -> None:
        self.state = state or StateDir()
        digest = hashlib.sha256(str(repo.toplevel).encode()).hexdigest()[:16]
        self.path = self.state.subdir("run", "monitors") / f"{digest}.lock"
        self._fd: int | None = None

    @property
    def won(self) -> bool:
        return self._fd is not None

    def try_win(self) -> bool:
        """Become the monitor if nobody is; never blocks."""
        if self._fd is not None:
            return True
        fd = self.state.open_lock_file(self.path)
        try:
            won = flock.try_lock(fd)
        except BaseException:
            os.close(fd)
            raise
        if not won:
            os.close(fd)
            return False
        self._claim(fd)
        return True

    def wait_to_win(self) -> None:
        """Block until this process is the monitor (the current one exits)."""
        if self._fd is not None:
            return
        fd = self.state.open_lock_file(self.path)
        try:
            flock.lock(fd)
        except BaseException:
            os.close(fd)
            raise
        self._claim(fd)

    def _claim(self, fd: int) -> None:
        self._fd = fd
        try:
            overwrite(fd, f"{os.getpid()}\n".encode())
        except OSError:
            # A full disk (or quota): the PID is only for the message a losing candidate
            # prints ("another process" then), and the flock alone makes us the monitor.
            pass

    def holder_pid(self) -> int | None:
        """The PID of the process observing now, if it said."""
        try:
            text = self.state.read_bytes(self.path)
        except VersatilError:
            return None
        try:
            return int((text or b"").strip() or b"0") or None
        except ValueError:
            return None

    def resign(self) -> None:
        """Let the next candidate observe."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # drops the flock: the kernel wakes the next candidate
