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

from versatil_fs import linux
from versatil_fs.state import StateDir

__all__ = ["OUTPUT_FDS", "OwnFiles"]

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

    def __bool__(self) -> bool:
        return bool(self.paths or self.inodes or self.prefixes)

    def __call__(self, rel: str, info: os.stat_result | None) -> bool:
        """Whether ``rel`` (repo-relative; ``info`` its ``lstat`` when it exists) is ours."""
        if rel in self.paths:
            return True
        if info is not None and (info.st_dev, info.st_ino) in self.inodes:
            return True
        return any(rel.startswith(p) for p in self.prefixes)
