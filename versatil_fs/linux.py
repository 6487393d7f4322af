"""Every Linux-only call versatil-fs makes, each with its fallback, guarded one way.

The guard: :data:`IS_LINUX` (``sys.platform.startswith("linux")``) first, then, for calls the
standard library does not wrap, the C library loaded once by :func:`_libc` (``ctypes``, imported
nowhere else in the package). A call that is missing (another system, an old kernel, a libc
without the symbol) takes its documented fallback instead of failing:

============================  ===================================  ============================
call                          what for                             fallback
============================  ===================================  ============================
``renameat2(RENAME_EXCHANGE)`` swap the lock table with its spare  temp file + ``rename``
``F_SETLEASE`` / ``F_SETSIG``  "nobody else has this file open"     temp file + ``rename``
``inotify``                    wake a waiter when the table changes a bounded re-read (poll)
``prctl(PR_SET_PDEATHSIG)``    a child dies with its wrapper        none (the wrapper's own
                                                                    cleanup)
``/proc/locks``                which pid holds a flock (a message)  "another process"
``/proc/<pid>/environ``        processes a task left behind         none found
``/proc/self/fd/<n>``          what an inherited descriptor is      unknown (not trusted)
``/proc/<pid>/stat``           a hook's ancestors (its harness)     none found (a TTL instead)
``pidfd_open``                 a keeper wakes when its harness dies none (a TTL instead)
``CLOCK_BOOTTIME``, boot id    a lease's expiry across a suspend    ``monotonic``, wall clock
============================  ===================================  ============================
"""

from __future__ import annotations

import errno
import os
import sys
import time

# Typing names only for the checker: the agent hook process imports this module before every
# edit an agent makes, and `typing`/`pathlib` alone would cost it more than its whole decision.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

__all__ = [
    "IS_LINUX",
    "ProcessInfo",
    "boot_id",
    "boottime",
    "exchange_supported",
    "fd_target",
    "flock_holder_pid",
    "inotify_moved_to",
    "nobody_else_has_open",
    "parent_death_signal",
    "pidfd_open",
    "pids_with_environ",
    "process_info",
    "rename_exchange",
]

IS_LINUX = sys.platform.startswith("linux")
"""The one platform test: every function here checks it before anything else."""

_LIBC: list[ctypes.CDLL | None] = []


def _ctypes() -> Any:
    # Imported on first use: the agent hook process (its start is the latency an agent waits
    # for before every edit) reads /proc through this module and never needs the C library.
    import ctypes

    return ctypes


def _libc() -> ctypes.CDLL | None:
    """The C library this process already has loaded (cached; None off Linux or if absent)."""
    if not _LIBC:
        library: ctypes.CDLL | None = None
        if IS_LINUX:
            try:
                library = _ctypes().CDLL(None, use_errno=True)
            except OSError:
                library = None
        _LIBC.append(library)
    return _LIBC[0]


def _function(name: str) -> Callable[..., int] | None:
    library = _libc() if IS_LINUX else None
    if library is None:
        return None
    try:
        function: Callable[..., int] = getattr(library, name)
    except AttributeError:
        return None  # an older libc without it
    return function


def _raise_errno(path: str | Path | None = None) -> None:
    code = _ctypes().get_errno()
    raise OSError(code, os.strerror(code), None if path is None else str(path))


# renameat2(RENAME_EXCHANGE) and write leases: the lock table's fast replacement -------------
# Cleared the first time the file system says no (no leases on NFS, no exchange on some
# overlays), so every later write takes the safe path at once.
_EXCHANGE = [IS_LINUX]


def exchange_supported() -> bool:
    """Whether :func:`rename_exchange` and :func:`nobody_else_has_open` may work here."""
    return IS_LINUX and _EXCHANGE[0] and _function("renameat2") is not None


def rename_exchange(a: Path, b: Path) -> None:
    """Swap the names ``a`` and ``b`` in one step (``renameat2(RENAME_EXCHANGE)``).

    Raises ``OSError``: ``ENOENT`` when ``b`` does not exist yet (the caller renames instead),
    ``EINVAL``/``ENOSYS`` where the file system or kernel has no exchange — after which
    :func:`exchange_supported` answers False.
    """
    renameat2 = _function("renameat2") if _EXCHANGE[0] else None
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available here", str(b))
    at_fdcwd, flag_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), flag_exchange):
        code = _ctypes().get_errno()
        if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # never again here
            _EXCHANGE[0] = False
        raise OSError(code, os.strerror(code), str(b))


def nobody_else_has_open(fd: int) -> bool:
    """Whether ``fd`` is the only open descriptor of its file: a write lease taken, dropped.

    The kernel grants ``F_SETLEASE F_WRLCK`` only when no one else has the file open. False
    when someone does, and also where leases are unsupported (then :func:`exchange_supported`
    turns False too: always take the safe path).
    """
    if not IS_LINUX:
        return False
    import fcntl

    try:
        # Should anyone open the file in the microseconds we hold the lease, the kernel
        # signals us; SIGIO would terminate the process, SIGURG is ignored by default.
        import signal  # here, not at the top: see TYPE_CHECKING above

        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)  # type: ignore[attr-defined,unused-ignore]
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)  # type: ignore[attr-defined,unused-ignore]
    except BlockingIOError:
        return False  # a reader still has the file open
    except OSError:
        _EXCHANGE[0] = False  # no leases on this file system
        return False
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)  # type: ignore[attr-defined,unused-ignore]
    return True


# inotify ---------------------------------------------------------------------------------------
_IN_MOVED_TO = 0x00000080
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000


def inotify_moved_to(directory: Path) -> int | None:
    """A non-blocking inotify descriptor readable when a file is renamed into ``directory``.

    None where inotify is missing or its watch limit is reached: the caller then re-reads on a
    bounded poll. The lock table is replaced by a rename (exchange or plain), which inotify
    reports as ``IN_MOVED_TO``; appends to the event logs beside it do not ring.
    """
    init = _function("inotify_init1")
    add_watch = _function("inotify_add_watch")
    if init is None or add_watch is None:
        return None
    fd = int(init(_IN_NONBLOCK | _IN_CLOEXEC))
    if fd < 0:
        return None
    if add_watch(fd, os.fsencode(directory), _IN_MOVED_TO) < 0:
        os.close(fd)
        return None
    return fd


# prctl -----------------------------------------------------------------------------------------
_PR_SET_PDEATHSIG = 1


def parent_death_signal() -> Callable[[int], None] | None:
    """A function that asks the kernel to send the calling process a signal when its parent
    dies (``prctl(PR_SET_PDEATHSIG, sig)``), or None where there is no such call.

    Resolve it *before* a fork and call it in the child (``preexec_fn``): the lookup allocates,
    the call does not. Raises ``OSError`` if the kernel refuses.
    """
    prctl = _function("prctl")
    if prctl is None:
        return None
    library = _libc()
    assert library is not None
    raw = library.prctl
    ctypes = _ctypes()
    raw.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    raw.restype = ctypes.c_int

    def set_signal(signum: int) -> None:
        if raw(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            _raise_errno()

    return set_signal


# /proc -----------------------------------------------------------------------------------------
def flock_holder_pid(path: Path) -> int | None:
    """The pid holding ``path`` flocked, from ``/proc/locks``; None when unknown."""
    if not IS_LINUX:
        return None
    try:
        info = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    major, minor = os.major(info.st_dev), os.minor(info.st_dev)
    wanted = {f"{major:02x}:{minor:02x}:{info.st_ino}", f"{major}:{minor}:{info.st_ino}"}
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; a blocked waiter's line has
        # "->" as its second field, so it never matches.
        if (
            len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] in wanted
            and fields[4].isdigit()
        ):
            return int(fields[4])
    return None


def pids_with_environ(matches: Callable[[list[bytes]], bool]) -> list[int]:
    """PIDs (other than ours) whose environment ``matches`` (a list of ``NAME=value`` bytes),
    from ``/proc/<pid>/environ``. Empty where there is no ``/proc``; processes that vanish or
    are not ours to read are skipped."""
    if not IS_LINUX:
        return []
    found = []
    me = os.getpid()
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue  # gone, a zombie, or not ours
        if matches(environ):
            found.append(int(entry.name))
    return found


def fd_target(fd: int) -> str | None:
    """The path descriptor ``fd`` of this process was opened on (``/proc/self/fd``), or None
    where that cannot be told (then the descriptor must not be trusted)."""
    if not IS_LINUX:
        return None
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


ProcessInfo = tuple[int, int, str]
"""``(ppid, start, name)`` of a process: its parent; its start in clock ticks after boot
(with the pid, it names one process: pids are reused); its command name (``comm``, at most
15 characters)."""


def process_info(pid: int) -> ProcessInfo | None:
    """``pid``'s parent, start time and name, or None (gone, or no ``/proc``)."""
    if not IS_LINUX or pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read(4096)
    except OSError:
        return None
    # "pid (comm) state ppid ... starttime(22) ...": comm may hold spaces and parentheses,
    # so the fields are counted from its last ")".
    head, sep, tail = raw.rpartition(b")")
    fields = tail.split()
    if not sep or len(fields) < 20 or b"(" not in head:
        return None
    try:
        return (
            int(fields[1]), int(fields[19]), head.partition(b"(")[2].decode("utf-8", "replace")
        )
    except ValueError:
        return None


def pidfd_open(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux 5.3+), or None.

    Unlike a pid, it cannot come to mean another process: open it, then check the process is
    still the one meant (its start time), and from then on the descriptor follows that one."""
    if not IS_LINUX:
        return None
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        fd: int = opener(pid)
    except OSError:
        return None
    os.set_inheritable(fd, False)
    return fd


# Clocks ----------------------------------------------------------------------------------------
def boottime() -> float:
    """``CLOCK_BOOTTIME``: monotonic, and it keeps counting through a suspend (else
    ``time.monotonic``)."""
    if IS_LINUX:
        try:
            return time.clock_gettime(time.CLOCK_BOOTTIME)  # type: ignore[attr-defined,unused-ignore]
        except (AttributeError, OSError):
            pass
    return time.monotonic()


def boot_id() -> str:
    """This boot's id, or "" where the system does not tell (callers then use the wall clock)."""
    if not IS_LINUX:
        return ""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as handle:
            text = handle.read(64).decode("ascii", "replace").strip().lower()
    except OSError:
        return ""
    return text if text and set(text) <= set("0123456789abcdef-") else ""
