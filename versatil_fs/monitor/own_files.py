"""The files a monitor writes itself, which it never reports: its standard output and error when
they are files in the working tree (``versatil monitor > monitor.log`` inside the repository),
and the state directory when it lies inside the tree (every report appends to its event log).

Reporting them would never end: each report is a line in the output file, which is a write,
which is a report (issue 15, item 4). They are recognised by path and by inode, so an output
file renamed while the monitor writes it (log rotation) is still its own.
"""

from __future__ import annotations

import os
import stat

from versatil_fs import events, linux
from versatil_fs.errors import VersatilError
from versatil_fs.state import StateDir

__all__ = ["OUTPUT_EVENT", "OUTPUT_FDS", "FollowerOutputs", "OwnFiles", "announce"]

OUTPUT_EVENT = "monitor-output"
"""The collision-detection event a following monitor logs: its output files in the tree, and
its process (pid and start), so that the observing monitor does not report them either."""
_TAIL = 1 << 18
_MARGIN = 1 << 14

OUTPUT_FDS = (1, 2)
"""The descriptors a monitor writes its output to."""


class OwnFiles:
    """What this process writes into the working tree at ``root``: :meth:`__call__` answers
    whether a repo-relative path (and, when the file is still there, its ``lstat``) is one.

    Read once, when the monitor starts: a process's stdout and stderr do not change under it.
    """

    def __init__(self, root: str, state: StateDir, fds: tuple[int, ...] = OUTPUT_FDS) -> None:
        self.root = os.path.realpath(root)
        self.paths: set[str] = set()
        self.inodes: set[tuple[int, int]] = set()
        self.prefixes: list[str] = []
        for fd in fds:
            self._add_fd(fd)
        state_rel = self._rel(os.path.realpath(state.root))
        if state_rel is not None:
            self.prefixes.append(state_rel + "/")

    def _rel(self, path: str) -> str | None:
        if path.startswith(self.root + "/"):
            return path[len(self.root) + 1 :]
        return None

    def _add_fd(self, fd: int) -> None:
        try:
            info = os.fstat(fd)
        except OSError:
            return  # closed
        if not stat.S_ISREG(info.st_mode):
            return  # a terminal or a pipe: nothing in the tree
        self.inodes.add((info.st_dev, info.st_ino))
        # Its name, for a deletion (no inode to compare then): /proc/self/fd says where the
        # descriptor points; a file already deleted has " (deleted)" after its name there.
        target = linux.fd_target(fd)
        if target is None or target.endswith(" (deleted)"):
            return
        rel = self._rel(os.path.realpath(target))
        if rel is not None:
            self.paths.add(rel)

    def announce(self, repo_key: str, worktree: str) -> None:
        """Log our output files for the observing monitor (a following monitor does this)."""
        announce(self, repo_key, worktree)

    def __bool__(self) -> bool:
        return bool(self.paths or self.inodes or self.prefixes)

    def __call__(self, rel: str, info: os.stat_result | None) -> bool:
        """Whether ``rel`` (repo-relative; ``info`` its ``lstat`` when it exists) is ours."""
        if rel in self.paths:
            return True
        if info is not None and (info.st_dev, info.st_ino) in self.inodes:
            return True
        return any(rel.startswith(p) for p in self.prefixes)


def announce(own: OwnFiles, repo_key: str, worktree: str) -> None:
    """Log ``own``'s output files (when it has any in the tree) with this process's pid and
    start, for the observing monitor's :class:`FollowerOutputs`; a log that cannot be written
    only means those writes are reported."""
    if not own.paths:
        return
    info = linux.process_info(os.getpid())
    try:
        events.emit(
            "collision-detection", OUTPUT_EVENT, repo=repo_key, worktree=worktree,
            paths=sorted(own.paths), monitor_pid=os.getpid(),
            monitor_start=info[1] if info else 0,
        )
    except (OSError, VersatilError):
        pass  # a full disk: the follower goes on, unannounced


class FollowerOutputs:
    """The output files of the monitors following this one (each announced with
    :func:`announce`), for as long as each of them lives: they write those files, so their
    writes are not reported. Reads only what the log gained since its last look."""

    def __init__(self, state: StateDir, worktree: str) -> None:
        self.state = state
        self.worktree = worktree
        self._size = -1
        self._followers: dict[tuple[int, int], frozenset[str]] = {}

    def _refresh(self) -> None:
        size = events.end("collision-detection", state=self.state)
        if size == self._size:
            return
        if self._size < 0 or size < self._size:
            last = _TAIL
        else:
            last = min(_TAIL, size - self._size + _MARGIN)
        self._size = size
        for entry in events.records(
            "collision-detection", state=self.state, containing=b'"monitor-output"',
            last_bytes=last,
        ):
            data = entry.data
            if entry.kind != OUTPUT_EVENT or data.get("worktree") != self.worktree:
                continue
            try:
                key = (int(data.get("monitor_pid", 0)), int(data.get("monitor_start", 0)))
            except (TypeError, ValueError):
                continue
            self._followers[key] = frozenset(str(p) for p in data.get("paths") or [])

    def __call__(self, rel: str) -> bool:
        """Whether ``rel`` is the output file of a following monitor that still runs."""
        self._refresh()
        if not self._followers:
            return False
        name = events.printable(rel)
        for key, paths in list(self._followers.items()):
            if name not in paths:
                continue
            info = linux.process_info(key[0]) if key[0] > 0 else None
            if info is not None and info[1] == key[1]:
                return True
            del self._followers[key]  # it ended: its file is nobody's output any more
        return False
