"""May versatil trust this file or directory: the ownership and mode checks of state files.

A state directory, or a file in it, is refused when it is a symlink, belongs to another user or
is writable by anyone but its owner (group or world write bit), as ssh refuses such a
``~/.ssh``; and the directory is refused when one of its *parents* lets another user replace it.
Files are checked on the descriptor they are used through (``fstat``: no window between the check
and the use). These are the checks only: :mod:`versatil_fs.state` decides when to make them and
is the only module that opens state files. :func:`state_error` words what went wrong using a
state path as the one sentence a user sees.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from versatil_fs.errors import NotRegularFile, StateError

__all__ = ["check_ancestors", "check_fd_owned", "check_owned", "state_error"]

# Write bits for anyone but the owner: any of them lets another user swap or forge our files.
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def check_owned(path: Path, *, want_dir: bool) -> None:
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise state_error(path, exc) from exc
    if stat.S_ISLNK(info.st_mode):
        raise StateError(
            f"Refusing to use {path}: it is a symlink, and versatil only trusts a state "
            "directory it created itself; remove it or point VERSATIL_HOME elsewhere."
        )
    if want_dir and not stat.S_ISDIR(info.st_mode):
        raise StateError(f"Refusing to use {path}: it should be a directory but is a file.")
    _check_uid(info, path)
    _check_mode(info, path)


def check_fd_owned(fd: int, path: Path) -> None:
    info = os.fstat(fd)
    _check_uid(info, path)
    if not stat.S_ISREG(info.st_mode):
        raise NotRegularFile(
            f"Refusing to use {path}: it is {_kind(info.st_mode)}, not a regular file; "
            "remove it.",
            str(path),
        )
    _check_mode(info, path)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _check_mode(info: os.stat_result, path: Path) -> None:
    # Group write counts even when the group is the user's own: checking that nobody else is
    # in it would mean reading the whole group and password databases on every start-up.
    if info.st_mode & _OTHERS_WRITE:
        fix = "chmod 700" if stat.S_ISDIR(info.st_mode) else "chmod 600"
        raise StateError(
            f"Refusing to use {path}: it is writable by {_who_writes(info.st_mode)} (mode "
            f"{stat.S_IMODE(info.st_mode):04o}), who could swap or forge versatil's state; "
            f"run `{fix} {_quote(path)}` if nobody tampered with it."
        )


def _who_writes(mode: int) -> str:
    if mode & stat.S_IWOTH:
        return "everyone"
    return "its group"


def check_ancestors(root: Path) -> None:
    """Refuse a state directory that another user could replace from one of its parents.

    Checked: every parent of ``root`` as written and every parent of where it really is (a
    symlinked ``/home`` is fine; a symlink inside a directory others can write is not, because
    that directory is then on the as-written chain, and neither is a symlink someone else
    owns). Each must belong to root or to us and be writable by nobody else unless it is
    sticky (``/tmp``: others cannot rename our entry).
    """
    if not hasattr(os, "getuid"):
        return
    for directory in root.parents:
        # A symlink on the path as written is retargeted by whoever owns it, whatever the
        # directory it points at looks like (someone else's link in /tmp, say).
        try:
            link = os.lstat(directory)
        except OSError:
            continue  # the stat below reports it, or the root's creation does
        if stat.S_ISLNK(link.st_mode) and link.st_uid not in (0, os.getuid()):
            raise StateError(
                f"Refusing to use the state directory {root}: its parent {directory} is a "
                f"symlink that belongs to uid {link.st_uid}, who could point it elsewhere; "
                "point VERSATIL_HOME at a path without it."
            )
    real = Path(os.path.realpath(root.parent))
    seen: set[Path] = set()
    for directory in (*root.parents, real, *real.parents):
        if directory in seen:
            continue
        seen.add(directory)
        try:
            info = os.stat(directory)
        except FileNotFoundError:
            continue  # creating the root below will say so
        except OSError as exc:
            raise state_error(directory, exc) from exc
        if info.st_uid not in (0, os.getuid()):
            raise StateError(
                f"Refusing to use the state directory {root}: its parent {directory} belongs "
                f"to uid {info.st_uid}, who could replace it; point VERSATIL_HOME at a "
                "directory whose parents belong to you or to root."
            )
        if info.st_mode & _OTHERS_WRITE and not info.st_mode & stat.S_ISVTX:
            raise StateError(
                f"Refusing to use the state directory {root}: its parent {directory} is "
                f"writable by {_who_writes(info.st_mode)} (mode "
                f"{stat.S_IMODE(info.st_mode):04o}) without the sticky bit, so another user "
                f"could replace it; run `chmod go-w {_quote(directory)}` (or `chmod +t`), or "
                "point VERSATIL_HOME elsewhere."
            )


def _quote(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def _check_uid(info: os.stat_result, path: Path) -> None:
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise StateError(
            f"Refusing to use {path}: it belongs to uid {info.st_uid}, not to you "
            f"(uid {os.getuid()}); point VERSATIL_HOME at a directory of your own."
        )


def state_error(path: Path, exc: OSError) -> StateError:
    """The one sentence (a :class:`StateError`) for ``exc`` met while using ``path``."""
    if exc.errno == errno.ELOOP:
        return StateError(
            f"Refusing to use {path}: it is a symlink, and versatil only trusts files it "
            "created itself; remove it."
        )
    if exc.errno in (errno.ENXIO, errno.EISDIR):
        # ENXIO: open(O_WRONLY | O_NONBLOCK) of a FIFO nobody reads; EISDIR: a directory.
        what = "a directory" if exc.errno == errno.EISDIR else "a FIFO or a device"
        return NotRegularFile(
            f"Refusing to use {path}: it is {what}, not a regular file; remove it.",
            str(path),
        )
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return StateError(f"Could not write {path}: the disk is full (nothing was changed).")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StateError(
            f"Could not use {path}: permission denied ({exc.strerror}); check VERSATIL_HOME."
        )
    return StateError(f"Could not use {path}: {exc.strerror or exc}.")
