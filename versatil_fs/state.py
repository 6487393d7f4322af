"""The state directory: its layout, and the only code that writes files in it.

Everything versatil-fs remembers lives under ``$VERSATIL_HOME`` (default ``~/.versatil``)::

    config.toml                     user-wide configuration (optional)
    logs/resource-locks.json        the lock table: readable JSON, always a complete document
    logs/<stream>.jsonl             append-only event logs, one JSON object per line
    run/table.lock                  flock that serialises every lock-table transaction
    run/fence                       the ceiling of the fencing tokens reserved so far
    run/leases/<id>.lease           one per live lease or waiter, flocked by its process
    checkpoints/                    checkpoint metadata (one msgpack/JSON record per checkpoint)
    waves/                          wave-run state

Guarantees:

* Directories are created 0700 and files 0600, because lock records name what agents do.
* A write is complete or absent: a temporary file in the same directory, then ``rename``.
  ``durable=True`` adds ``fsync`` of the file and its directory for state that must survive a
  power loss (wave runs, checkpoint metadata). The lock table skips it: it is derived state that
  the next reader rebuilds from the lease files, so a lost write costs nothing but a re-check.
* A file that does not parse is never silently replaced: :func:`move_aside` renames it with a
  timestamp and the caller reports it once.
* We refuse (with the checks of :mod:`versatil_fs.trust`) a state directory, or a file in it,
  that is a symlink, belongs to another user or is writable by anyone but its owner (group or
  world write bit), as ssh refuses such a ``~/.ssh``: someone who can write there could rename
  ``run/`` away from under a holder, plant a ``config.toml`` that turns collision detection
  off, or forge lock records. Every file is checked on the descriptor we read or write it
  through (``fstat``: free, and no window between the check and the use); directories with
  ``lstat`` when first used, and again at most :data:`RECHECK_SECONDS` later, so a long-lived
  process (a monitor, a ``run`` wrapper) notices a later ``chmod`` within that time.
* We also refuse a state directory whose *parents* let another user replace it: each directory
  from ``/`` down to the state root (both the path as written and the one its symlinks resolve
  to) must belong to root or to us and must not be group- or world-writable unless it has the
  sticky bit (``/tmp`` is fine: nobody else can rename our entry in it). ssh checks the same
  chain for ``authorized_keys``.
* State files are opened ``O_NONBLOCK`` and must be regular files (``S_ISREG`` on the open
  descriptor): a FIFO planted as the lock table would otherwise block ``open`` forever, while
  the table flock is held. Such a file raises :class:`~versatil_fs.errors.NotRegularFile`.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from versatil_fs import flock, linux
from versatil_fs.errors import NotRegularFile, StateError
from versatil_fs.trust import check_ancestors, check_fd_owned, check_owned, state_error

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "RECHECK_SECONDS",
    "StateDir",
    "flocked",
    "home",
    "overwrite",
    "read_regular",
    "state_error",
    "write_all",
]


DIR_MODE = 0o700
FILE_MODE = 0o600

# O_NOFOLLOW makes open() fail on a planted symlink instead of following it; O_CLOEXEC keeps
# our descriptors (and the flocks on them) out of the commands `versatil run` starts; O_NONBLOCK
# makes open() of a planted FIFO return at once (ENXIO for a writer) instead of waiting for the
# other end, so the S_ISREG check on the descriptor gets to refuse it. On a regular file it
# changes nothing.
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

RECHECK_SECONDS = 1.0
"""How long a directory's checked owner and mode are trusted before they are looked at again."""


def home() -> Path:
    """The state directory, from ``VERSATIL_HOME`` or ``~/.versatil`` (not created here)."""
    configured = os.environ.get("VERSATIL_HOME")
    if configured:
        return Path(configured).expanduser().absolute()
    return Path.home() / ".versatil"


class StateDir:
    """The layout of one state directory, created and checked on first use."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root if root is not None else home()).absolute()
        self._checked: set[Path] = set()
        self._parents_checked: set[str] = set()
        self._checked_at = time.monotonic()
        # The layout, computed once: these paths are used on every lock transaction.
        self.logs = self.root / "logs"
        self.lock_table = self.logs / "resource-locks.json"
        self.table_lock = self.root / "run" / "table.lock"
        self.fence_file = self.root / "run" / "fence"
        self.leases = self.root / "run" / "leases"
        self.config_file = self.root / "config.toml"
        self._event_logs: dict[str, Path] = {}

    # Layout ---------------------------------------------------------------------------------
    def event_log(self, stream: str) -> Path:
        path = self._event_logs.get(stream)
        if path is None:
            path = self._event_logs[stream] = self.logs / f"{stream}.jsonl"
        return path

    def subdir(self, *parts: str) -> Path:
        """A directory under the root, created 0700 and checked, e.g. ``subdir("checkpoints")``."""
        path = self.root.joinpath(*parts)
        self.ensure_dir(path)
        return path

    # Safety ---------------------------------------------------------------------------------
    def ensure_dir(self, path: Path, *, create: bool = True) -> bool:
        """Create ``path`` (and the parents up to the root) 0700; refuse foreign, symlinked or
        writable by others. With ``create=False`` nothing is created, and the answer says
        whether the whole chain exists (a read of a file below a missing directory finds
        nothing, and must not create the state directory as a side effect)."""
        self._expire_checks()
        if path in self._checked:
            return True
        if path != self.root and self.root not in path.parents:
            raise StateError(f"{path} is outside the state directory {self.root}.")
        chain = [path, *[p for p in path.parents if p == self.root or self.root in p.parents]]
        for directory in reversed(chain):
            if directory in self._checked:
                continue
            if directory == self.root:
                # Before creating the root: a parent another user can write lets them replace
                # the whole state directory, and no check inside it can see that.
                check_ancestors(directory)
            if create:
                try:
                    os.mkdir(directory, DIR_MODE)
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise state_error(directory, exc) from exc
            elif not os.path.lexists(directory):
                return False
            check_owned(directory, want_dir=True)
            self._checked.add(directory)
        return True

    def _expire_checks(self) -> None:
        # The caches keep the hot lock path at one set lookup, but a long-lived process must
        # not trust a directory's mode forever: someone may `chmod 777` it after we looked.
        # One monotonic read per call; the re-check costs a few lstat calls once a second.
        now = time.monotonic()
        if now - self._checked_at > RECHECK_SECONDS:
            self._checked.clear()
            self._parents_checked.clear()
            self._checked_at = now

    def _ensure_parent(self, path: Path) -> None:
        # On every lock transaction: a string lookup instead of building and hashing a parent
        # Path each time (pathlib's parsing showed up in profiles of the lock path).
        self._expire_checks()
        key = str(path)
        if key not in self._parents_checked:
            self.ensure_dir(path.parent)
            self._parents_checked.add(key)

    # Reading and writing --------------------------------------------------------------------
    def read_bytes(self, path: Path, *, create_dirs: bool = True) -> bytes | None:
        """The file's bytes, or None when it does not exist.

        Every state file anyone reads comes through here (the lock table, holder files, event
        logs, checkpoint metadata, wave state, ``config.toml``), so every reader gets the same
        checks: no symlink (``O_NOFOLLOW``), a regular file (:class:`NotRegularFile` for a
        FIFO, a device or a directory, found without blocking), owned by us and writable by
        nobody else, all on the open descriptor. ``create_dirs=False`` reads without creating
        the state directory when it is not there yet (``config show`` on a fresh machine).
        """
        if create_dirs:
            self._ensure_parent(path)
        elif not self.ensure_dir(path.parent, create=False):
            return None
        try:
            fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise state_error(path, exc) from exc
        try:
            check_fd_owned(fd, path)
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError as exc:
            raise state_error(path, exc) from exc
        finally:
            os.close(fd)

    def open_checked(self, path: Path, flags: int = os.O_RDONLY) -> int:
        """A descriptor on the state file ``path``, after the same checks as :meth:`read_bytes`.

        For a caller that keeps reading the file (``follow`` of an event log, a holder file
        read under the table lock): ``FileNotFoundError`` passes through, everything else
        unsafe is a :class:`StateError`. The caller closes the descriptor.
        """
        return self._open_owned(path, flags | _OPEN_FLAGS)

    def size(self, path: Path) -> int:
        """The size of the state file ``path`` (0 when it does not exist), checked like a read:
        for a reader that follows a growing log."""
        try:
            fd = self.open_checked(path)
        except FileNotFoundError:
            return 0
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def read_range(self, path: Path, offset: int, length: int | None = None) -> bytes:
        """``length`` bytes (all the rest when None) of the state file ``path`` from ``offset``;
        b"" when it does not exist. Checked like :meth:`read_bytes`."""
        try:
            fd = self.open_checked(path)
        except FileNotFoundError:
            return b""
        try:
            if length is None:
                length = max(0, os.fstat(fd).st_size - offset)
            chunks = []
            while length > 0 and (chunk := os.pread(fd, min(length, 1 << 20), offset)):
                chunks.append(chunk)
                offset += len(chunk)
                length -= len(chunk)
            return b"".join(chunks)
        except OSError as exc:
            raise state_error(path, exc) from exc
        finally:
            os.close(fd)

    def write_atomic(self, path: Path, data: bytes, *, durable: bool = False) -> None:
        """Replace ``path`` with ``data``: readers see the old file or the new one, never a mix."""
        self._ensure_parent(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, FILE_MODE)
        except OSError as exc:
            raise state_error(path, exc) from exc
        try:
            try:
                write_all(fd, data)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            from versatil_fs import faults  # cheap: a dict lookup when no fault is armed

            faults.point("state.before-rename")
            os.replace(tmp, path)
        except OSError as exc:
            _unlink_quietly(tmp)
            raise state_error(path, exc) from exc
        except BaseException:
            _unlink_quietly(tmp)
            raise
        if durable:
            _fsync_dir(path.parent)

    def write_swapped(self, path: Path, data: bytes | Sequence[bytes]) -> None:
        """Replace ``path`` atomically by exchanging it with a spare file (Linux).

        For a file rewritten on every lock transaction: the new document is written in place
        into ``.<name>.spare`` (only ever touched under the caller's exclusive lock), then
        ``renameat2(RENAME_EXCHANGE)`` swaps the two names in one step, and the old document
        becomes the next spare. Measured on ext4 here: 25 µs against 800 µs for temp file +
        rename, because no inode is allocated or freed.

        The spare was the live document one write ago, so a reader that opened it then (a
        ``cat`` without our lock) may still be reading it. Rewriting it under that reader would
        tear its read, so we first take a write lease on it (``F_SETLEASE``), which the kernel
        grants only when no one else has the file open, and drop it at once: nobody can open
        the spare afresh through the document's name. A reader still there sends us down the
        slow path for this write. Where exchange or leases are unsupported this falls back to
        :meth:`write_atomic`. Not durable: use it only for state a reader can rebuild.

        ``data`` may be the document's parts, written in order with ``pwritev``: a
        multi-megabyte document assembled from thousands of cached parts is then never joined
        (two copies, and fresh pages faulted in, cost more than the write itself).
        """
        spare = path.with_name(f".{path.name}.spare")
        self._ensure_parent(path)
        if not linux.exchange_supported() or not self._fill_spare(spare, path, data):
            self.write_atomic(path, _joined(data))
            return
        from versatil_fs import faults

        faults.point("state.before-rename")
        try:
            linux.rename_exchange(spare, path)
        except FileNotFoundError:
            os.rename(spare, path)  # first write: nothing to exchange with yet
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                # linux.exchange_supported() now says no: later writes go straight there.
                self.write_atomic(path, _joined(data))
                return
            raise state_error(path, exc) from exc

    @staticmethod
    def _fill_spare(spare: Path, path: Path, data: bytes | Sequence[bytes]) -> bool:
        """Write ``data`` into the spare of ``path``; False when the spare cannot be used and
        :meth:`write_atomic` must be taken instead (not a file, or someone still reading it)."""
        try:
            fd = os.open(spare, os.O_WRONLY | os.O_CREAT | _OPEN_FLAGS, FILE_MODE)
        except OSError as exc:
            error = state_error(spare, exc)
            if isinstance(error, NotRegularFile):
                # Something that is not a file took the spare's name (the damaged table a
                # read moved aside left its FIFO there?): the slow path never writes into it.
                return False
            raise error from exc
        try:
            check_fd_owned(fd, spare)
            if not linux.nobody_else_has_open(fd):
                return False
            overwrite(fd, data)
        except OSError as exc:
            raise state_error(path, exc) from exc
        finally:
            os.close(fd)
        return True

    def append_line(self, path: Path, line: bytes) -> None:
        """Append one line with a single ``write`` on an ``O_APPEND`` descriptor.

        The kernel positions each ``O_APPEND`` write at the end of the file under the inode lock,
        so lines from concurrent writers never interleave or overwrite each other.
        """
        if not line.endswith(b"\n"):
            line += b"\n"
        self._ensure_parent(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _OPEN_FLAGS, FILE_MODE)
        except OSError as exc:
            raise state_error(path, exc) from exc
        try:
            check_fd_owned(fd, path)
            written = os.write(fd, line)
            if written != len(line):
                # Only a full disk or a file-size limit gets here; never leave half a line.
                os.ftruncate(fd, os.fstat(fd).st_size - written)
                raise StateError(f"Could not append to {path}: the disk is full.")
        except OSError as exc:
            raise state_error(path, exc) from exc
        finally:
            os.close(fd)

    def open_lock_file(self, path: Path, *, create: bool = True) -> int:
        """Open (and create 0600) a file used only for its flock; returns the descriptor."""
        return self._open_owned(path, os.O_RDWR | _OPEN_FLAGS | (os.O_CREAT if create else 0))

    def _open_owned(self, path: Path, flags: int) -> int:
        """Open ``path`` (created 0600 if ``flags`` asks) and check the descriptor is a regular
        file of ours that nobody else can write; ``FileNotFoundError`` passes through."""
        self._ensure_parent(path)
        try:
            fd = os.open(path, flags, FILE_MODE)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise state_error(path, exc) from exc
        try:
            check_fd_owned(fd, path)
            # O_NONBLOCK was for the open; a regular file ignores it, but the descriptor may
            # be handed to a child (a wave task's log) that should see an ordinary file.
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def remove(self, path: str | Path) -> None:
        _unlink_quietly(path)

    def move_aside(self, path: Path, reason: str) -> Path:
        """Rename a damaged file to ``<name>.corrupt-<UTC time>`` and say so once on stderr."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        base = f"{path.name}.corrupt-{stamp}-{os.getpid()}"
        for attempt in range(1000):
            target = path.with_name(base if attempt == 0 else f"{base}-{attempt}")
            try:
                # link + unlink, not rename: link refuses to replace an earlier copy set
                # aside in the same second, where rename would silently overwrite it.
                os.link(path, target, follow_symlinks=False)
            except FileExistsError:
                continue
            except FileNotFoundError:
                return target  # another process already moved it aside and reported it
            except PermissionError as exc:
                # A directory planted where a file belongs: it cannot be hard-linked, so it
                # is renamed, to a name checked free first (rename would replace an empty
                # directory there; nobody else can create one in our 0700 directory).
                if not os.path.isdir(path) or os.path.islink(path):
                    raise state_error(path, exc) from exc
                if os.path.lexists(target):
                    continue
                try:
                    os.rename(path, target)
                except FileNotFoundError:
                    return target
                except OSError as rename_exc:
                    raise state_error(path, rename_exc) from rename_exc
                break
            except OSError as exc:
                raise state_error(path, exc) from exc
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            break
        else:
            raise StateError(f"Could not move {path} aside: too many damaged copies beside it.")
        print(
            f"versatil: {path} could not be read ({reason}); moved it aside to {target.name} "
            "and rebuilt it from what is live.",
            file=sys.stderr,
        )
        return target


def flocked(fd: int) -> AbstractContextManager[None]:
    """Hold an exclusive flock on ``fd`` for the ``with`` block (:func:`versatil_fs.flock.held`)."""
    return flock.held(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` at ``fd``'s position: ``os.write`` may write less than asked (a
    signal, a pipe, a file-size limit), so it loops until everything is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def overwrite(fd: int, data: bytes | Sequence[bytes]) -> None:
    """Write ``data`` (or its parts, in order) over the file from offset 0, truncating only if
    it was longer.

    Truncation is a journaled metadata change on ext4 that costs more than the write itself,
    so a file that is rewritten on every lock transaction only pays for it when it shrinks.
    """
    if isinstance(data, bytes):
        view = memoryview(data)
        offset = 0
        while offset < len(data):
            offset += os.pwrite(fd, view[offset:], offset)
    else:
        offset = _pwrite_parts(fd, data)
    if os.fstat(fd).st_size > offset:
        os.ftruncate(fd, offset)


# At most this many buffers per pwritev (Linux's IOV_MAX is 1024).
_IOV_MAX = 1024


def _pwrite_parts(fd: int, parts: Sequence[bytes]) -> int:
    """Write ``parts`` one after the other from offset 0; returns the length written."""
    offset = 0
    pending: list[bytes | memoryview] = list(parts)
    first = 0
    while first < len(pending):
        batch = pending[first:first + _IOV_MAX]
        written = os.pwritev(fd, batch, offset)
        if written <= 0:
            raise OSError(errno.EIO, "the file took no more bytes")
        offset += written
        if written == sum(map(len, batch)):
            first += len(batch)
            continue
        # A short write (a signal, a size limit) ends inside some part: resume there.
        for part in batch:
            if written >= len(part):
                written -= len(part)
                first += 1
            else:
                pending[first] = memoryview(part)[written:]
                break
    return offset


def _joined(data: bytes | Sequence[bytes]) -> bytes:
    return data if isinstance(data, bytes) else b"".join(data)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def read_regular(
    path: str | os.PathLike[str], *, ours: bool = False, follow_symlinks: bool = False
) -> bytes | None:
    """The bytes of the regular file ``path``, or None: absent, unreadable, a FIFO or device
    (``O_NONBLOCK`` and the ``S_ISREG`` check on the descriptor keep those from hanging the
    reader), or a symlink unless ``follow_symlinks``. ``ours=True`` also wants it owned by this
    user (a holder file).

    For files read best-effort, outside :class:`StateDir`'s checks: a holder file probed under
    the table lock (never through a symlink), the user's global git excludes file (often a
    symlink into a dotfiles repository).
    """
    nofollow = 0 if follow_symlinks else os.O_NOFOLLOW
    try:
        fd = os.open(path, os.O_RDONLY | nofollow | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (ours and info.st_uid != os.getuid()):
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)
