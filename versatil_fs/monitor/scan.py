"""The one tree scan: which files are below some paths, each with a stamp that changes on a write.

``versatil run`` (the files under its write locks), the wave executor (the files under a task's
write paths) and the monitor (every guarded path, to compare after an event overflow) all ask
the same question, "which files did this change?", and get the same answer from here:
:func:`scan` before, :func:`scan` after, :func:`modified` (or :func:`changes`) of the two.

**The one rule for what counts as a file of the tree.** A path is scanned when git would count
it as part of the working tree below the given paths: ``git ls-files --cached --others
--exclude-standard``, with ``guard.ignore`` handed to git as an excludes file by the
:class:`~versatil_fs.monitor.ignore.IgnoreMatcher`. So

* a tracked file always counts, even when a pattern matches it (as in git: ignore rules never
  hide a tracked file);
* an untracked file counts unless git ignores it (``.gitignore``, ``.git/info/exclude``, the
  user's global excludes) **or ``guard.ignore`` does** — a file the user told us to ignore is
  never "modified by the task", whichever command ran the task, and a path named explicitly
  (a locked file, a task's declared write path) gets no exception: what git does not count
  cannot be checkpointed, so it could not be rolled back either;
* nested repositories and submodules are not part of the tree (git stores them as one commit
  id): their files are left out, and :attr:`IgnoreMatcher.nested` remembers where they are;
* anything under ``.git`` never counts; symlinks count as themselves (``lstat``).

The stamp is ``(size, mtime_ns, inode, mode)``: a write, a rename over the file, a chmod or a
type change moves at least one of them. It is a plain tuple of ints so that it can be
persisted (the wave executor records a running task's scan in its run state) and compared
after reading it back. What it cannot see: a rewrite with the same size and mode within one
timestamp tick of the previous one, on a kernel without multigrain timestamps.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from versatil_fs.monitor.ignore import IgnoreMatcher

__all__ = [
    "EventName",
    "Stamp",
    "TreeScan",
    "changes",
    "in_git_dir",
    "modified",
    "normalize_guards",
    "scan",
    "stamp",
    "under",
    "within",
]

EventName = Literal["created", "modified", "deleted", "moved"]
Stamp = tuple[int, int, int, int]
"""``(size, mtime_ns, inode, mode)`` of a file, from ``lstat``."""
TreeScan = dict[str, Stamp]
"""Repo-relative path -> :data:`Stamp`, for every file a :func:`scan` found."""


def stamp(info: os.stat_result) -> Stamp:
    """The stamp of a file, from its ``lstat`` result."""
    return (info.st_size, info.st_mtime_ns, info.st_ino, info.st_mode)


def normalize_guards(paths: Iterable[str]) -> list[str]:
    """Repo-relative guard paths without ``./`` or trailing ``/``; nested ones dropped."""
    cleaned: list[str] = []
    for raw in paths:
        path = raw.strip()
        while path.startswith("./"):
            path = path[2:]
        path = path.rstrip("/") or "."
        cleaned.append(path)
    if "." in cleaned:
        return ["."]
    unique = sorted(set(cleaned))
    return [p for p in unique if not any(p.startswith(o + "/") for o in unique if o != p)]


def under(path: str, guards: Sequence[str]) -> bool:
    """Whether the repo-relative ``path`` is one of ``guards`` or below one."""
    return any(g == "." or path == g or path.startswith(g.rstrip("/") + "/") for g in guards)


def in_git_dir(rel: str) -> bool:
    """Whether the repo-relative ``rel`` is a ``.git`` directory or inside one (at any depth)."""
    return rel == ".git" or rel.startswith(".git/") or "/.git/" in rel or rel.endswith("/.git")


def scan(root: Path, paths: Sequence[str], matcher: IgnoreMatcher) -> TreeScan:
    """Every file below the repo-relative ``paths`` that the tree counts (see the module's rule),
    with its stamp. ``["."]`` is the whole tree; no paths, no files.

    The list comes from git, which walks the tree in C and skips ignored directories, five
    times faster than asking about each path here; this process only stats what git lists.
    ``matcher`` carries the ignore rules (``guard.ignore`` included): build it with the
    repository's configuration, ``IgnoreMatcher(repo, config.guard.ignore, state=state)``.
    """
    if not paths:
        return {}
    result: TreeScan = {}
    base = str(root)
    for rel in matcher.list_files(paths):
        try:
            info = os.lstat(f"{base}/{rel}")
        except (FileNotFoundError, NotADirectoryError):
            continue  # tracked but deleted, or gone since git listed it
        except OSError:
            continue  # a name too long to look up, a directory we may not enter: not seen
        if not stat.S_ISDIR(info.st_mode):  # a submodule is listed as its directory
            result[rel] = stamp(info)
    return result


def changes(
    before: Mapping[str, Stamp], after: Mapping[str, Stamp]
) -> list[tuple[str, EventName]]:
    """What changed from ``before`` to ``after``: ``(path, created | modified | deleted)``,
    sorted by path."""
    found: list[tuple[str, EventName]] = []
    for path, now in after.items():
        then = before.get(path)
        if then is None:
            found.append((path, "created"))
        elif tuple(then) != tuple(now):  # a stamp read back from JSON is a list
            found.append((path, "modified"))
    found.extend((path, "deleted") for path in before.keys() - after.keys())
    found.sort()
    return found


def modified(before: Mapping[str, Stamp], after: Mapping[str, Stamp]) -> list[str]:
    """The files created, modified or deleted between two scans, sorted."""
    return [path for path, _ in changes(before, after)]


def within(found: Mapping[str, Stamp], paths: Sequence[str]) -> TreeScan:
    """The entries of ``found`` below one of ``paths``: a scan read back from a state file is
    narrowed to the paths it is about, whatever else the file says."""
    return {path: value for path, value in found.items() if under(path, paths)}
