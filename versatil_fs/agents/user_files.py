"""The user's own configuration files, read and written the careful way: ``versatil integrate``
edits files that belong to the user and their harness, not to versatil.

A write is atomic (a temporary file in the same directory, then ``rename``) and keeps the file's
mode; it never goes through a symlink, never into a FIFO or a device, and never over a change
someone made after the file was read. Directories made for a file are counted, so that taking
the file away again can take away exactly those (when empty) and nothing else.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

from versatil_fs.errors import Refused
from versatil_fs.state import write_all

__all__ = ["Found", "make_dirs", "read", "refusal", "remove_dirs", "remove_file", "write"]

# A file as read: its bytes, mode, owner and group (kept when it is rewritten).
Found = tuple[bytes, int, int, int]


def read(path: Path) -> Found | None:
    """The bytes, mode, owner and group of the regular file ``path``, or None when there is none.
    A symlink, a FIFO, a directory or an unreadable file is refused: versatil does not write
    through them."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise refusal(path, exc) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(f"{path} is not a regular file, so versatil leaves it alone.")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid
    except OSError as exc:
        raise refusal(path, exc) from exc
    finally:
        os.close(fd)


def refusal(path: Path, exc: OSError) -> Refused:
    if exc.errno == errno.ELOOP:
        return Refused(
            f"{path} is a symlink, and versatil does not write through symlinks; wire the file "
            "it points to by hand, or replace the link with a copy."
        )
    if exc.errno == errno.ENOTDIR:
        return Refused(f"{path}: a parent of it is a file, not a directory, so versatil stops.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return Refused(f"Could not use {path}: permission denied.")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return Refused(f"Could not write {path}: the disk is full (nothing was changed).")
    return Refused(f"Could not use {path}: {exc.strerror or exc}.")


def make_dirs(directory: Path, base: Path) -> int:
    """Create ``directory`` and its missing parents below ``base``; how many were created."""
    missing = [d for d in (directory, *directory.parents) if base in d.parents]
    created = 0
    for d in reversed(missing):
        try:
            os.mkdir(d)
            created += 1
        except FileExistsError:
            if not d.is_dir():  # a file where the directory goes (Cline's old .clinerules)
                raise Refused(
                    f"{d} is a file, not a directory, so versatil cannot put its hook below it; "
                    "move it aside, then run the command again."
                ) from None
        except OSError as exc:
            raise refusal(d, exc) from exc
    return created


def write(path: Path, data: bytes, *, before: Found | None, executable: bool) -> None:
    """Replace ``path`` with ``data`` atomically, with its old mode (new files: the umask's).

    The file is read again just before the rename: a harness or the user may have saved it since
    it was read, and their write must not be lost (a window of microseconds remains)."""
    tmp = path.with_name(f".{path.name}.versatil-{os.getpid()}-{time.monotonic_ns()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o777 if executable else 0o666)
    except OSError as exc:
        raise refusal(path, exc) from exc
    try:
        try:
            write_all(fd, data)
            mode = before[1] if before is not None else stat.S_IMODE(os.fstat(fd).st_mode)
            if executable:
                # A hook file its owner cannot run is no hook (Cline skips it): whatever the
                # umask or the old file's mode, the owner may read, write and run it.
                mode |= stat.S_IRWXU
            if before is not None and (before[2], before[3]) != (os.geteuid(), os.getegid()):
                # `sudo versatil integrate --user` must not leave a settings file that its
                # owner's harness can no longer save; chown is allowed only to root, else moot.
                try:
                    os.fchown(fd, before[2], before[3])
                except PermissionError:
                    pass
            if before is not None or executable:
                os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        if read(path) != before:
            raise Refused(
                f"{path} changed while versatil was writing it, so nothing was written; run "
                "the command again."
            )
        os.replace(tmp, path)
    except OSError as exc:
        unlink(tmp)
        raise refusal(path, exc) from exc
    except BaseException:
        unlink(tmp)
        raise


def unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_file(path: Path, expected: bytes) -> None:
    found = read(path)
    if found is None or found[0] != expected:
        raise Refused(f"{path} changed while versatil was removing it; run the command again.")
    try:
        os.unlink(path)
    except OSError as exc:
        raise refusal(path, exc) from exc


def remove_dirs(directory: Path, count: int, base: Path) -> None:
    """Remove the ``count`` directories versatil created (deepest first), each only if empty."""
    for d in [directory, *directory.parents][:count]:
        if base not in d.parents:
            return
        try:
            os.rmdir(d)
        except OSError:
            return  # not empty (someone else's files are there now), or gone: leave it
