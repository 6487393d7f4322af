"""Scratch space: the private index a checkpoint is staged in, the staging directory a restore
writes into, and the sweepers that remove what a killed process left of either.

Both kinds of directory follow one protocol, so that a sweeper proves an owner dead without
guessing from a PID: the owner holds an ``flock`` for as long as it uses the directory, and the
lock goes with the process. Nothing is opened through a symlink.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from versatil_fs import flock
from versatil_fs.errors import GitFailed
from versatil_fs.state import state_error

__all__ = [
    "SCRATCH_GRACE_SECONDS",
    "STAGING_PREFIX",
    "copy_index",
    "scratch_dir",
    "staging_dir",
    "sweep",
    "sweep_staging",
]

# A scratch directory younger than this is never swept without its lock file, see sweep.
SCRATCH_GRACE_SECONDS = 3600.0
# The name a restore's staging directory starts with (in the git directory).
STAGING_PREFIX = "versatil-restore-"


def copy_index(source: Path, target: Path) -> None:
    """Copy the user's index, keeping its mtime.

    Git treats an entry whose file mtime is not older than the index file as "racily clean" and
    compares its content. A copy with a fresh mtime would make such entries look clean and miss
    an edit made in the same second the index was written, so the copy keeps the original's.
    Reading through one descriptor takes the content and the mtime from the same file even if
    git renames a new index into place meanwhile.
    """
    try:
        src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # a fresh repository has no index yet: git starts from an empty one
    try:
        info = os.fstat(src)
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            remaining = info.st_size
            offset = 0
            while remaining > 0:
                sent = os.sendfile(dst, src, offset, remaining)
                if sent == 0:
                    break
                offset += sent
                remaining -= sent
        finally:
            os.close(dst)
        os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    finally:
        os.close(src)


@contextlib.contextmanager
def scratch_dir(scratch: Path) -> Iterator[Path]:
    """A private directory under ``scratch`` owned by this process while it is flocked.

    Protocol (so that :func:`sweep` can prove an owner dead without guessing from a PID): the
    owner creates ``<name>.lock`` and flocks it *before* creating ``<name>/``, and removes the
    directory before the lock file. A sweeper that wins the flock removes both; an owner that
    was blocked by that sweeper finds its lock file unlinked and starts again under a new name.
    """
    while True:
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        lock_path = scratch / f"{name}.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            # A read-only or full state directory: one sentence, not an internal error.
            raise state_error(lock_path, exc) from exc
        flock.lock(fd)
        if os.fstat(fd).st_nlink == 0:
            os.close(fd)
            continue
        break
    directory = scratch / name
    try:
        try:
            os.mkdir(directory, 0o700)
        except OSError as exc:
            raise state_error(directory, exc) from exc
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


def sweep(scratch: Path) -> None:
    """Remove scratch directories whose owner died (killed mid-create or mid-restore)."""
    try:
        entries = list(os.scandir(scratch))
    except FileNotFoundError:
        return
    names = {e.name for e in entries}
    for entry in entries:
        if entry.name.endswith(".lock"):
            _sweep_one(scratch, entry.name[: -len(".lock")])
        elif entry.is_dir(follow_symlinks=False) and f"{entry.name}.lock" not in names:
            # Owners create the lock file first and delete it last, so a directory without one
            # is garbage, unless it appeared after our listing: then it is young.
            with contextlib.suppress(OSError):
                age = time.time() - entry.stat(follow_symlinks=False).st_mtime
                if age > SCRATCH_GRACE_SECONDS:
                    shutil.rmtree(entry.path, ignore_errors=True)


def _sweep_one(scratch: Path, name: str) -> None:
    lock_path = scratch / f"{name}.lock"
    try:
        # O_NOFOLLOW: a symlink planted as a lock file is never opened (nor flocked) through.
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    except OSError:
        return  # a symlink (ELOOP) or something else that is not our lock file
    try:
        if not flock.try_lock(fd):
            return  # its owner is alive
        if os.fstat(fd).st_nlink == 0:
            return  # its owner finished, or another sweeper got there first
        shutil.rmtree(scratch / name, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
    finally:
        os.close(fd)


@contextlib.contextmanager
def staging_dir(git_dir: Path, toplevel: Path) -> Iterator[Path]:
    """A directory for the files a restore writes, on the working tree's filesystem (so
    each can be renamed into place) and out of git's sight: in the git directory, or at
    the top of the working tree if that is on another filesystem. Removed on the way out."""
    base = git_dir
    try:
        if os.stat(base).st_dev != os.stat(toplevel).st_dev:
            base = toplevel
    except OSError:
        base = toplevel
    sweep_staging(base)
    directory = base / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.mkdir(directory, 0o700)
    except OSError as exc:
        raise GitFailed(message=f"Could not create {directory}: {exc.strerror or exc}.") \
            from exc
    try:
        # Held while the directory is in use: sweep_staging removes only what a dead
        # process left (the flock goes with its owner).
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
    except OSError:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    try:
        flock.lock(fd)
        if os.fstat(fd).st_nlink == 0:
            # A sweeper took the lock between our open and our flock, and removed it all.
            raise GitFailed(message=f"{directory} was removed while in use; run the "
                            "restore again.")
        yield directory / "tree"
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        os.close(fd)


def sweep_staging(base: Path) -> None:
    """Remove staging directories whose restore died (its flock on ``lock`` went with it)."""
    try:
        entries = [e for e in os.scandir(base) if e.name.startswith(STAGING_PREFIX)]
    except OSError:
        return
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        try:
            fd = os.open(os.path.join(entry.path, "lock"), os.O_RDWR | os.O_NOFOLLOW
                         | os.O_CLOEXEC)
        except FileNotFoundError:
            # Its owner creates the lock right after the directory: only an old one is garbage.
            with contextlib.suppress(OSError):
                if time.time() - entry.stat(follow_symlinks=False).st_mtime > \
                        SCRATCH_GRACE_SECONDS:
                    shutil.rmtree(entry.path, ignore_errors=True)
            continue
        except OSError:
            continue
        try:
            if flock.try_lock(fd):  # else its restore is running
                shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            os.close(fd)
