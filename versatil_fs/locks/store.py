"""Where the lock table lives: the one boundary between the lock rules and storage.

The manager only calls the methods of :class:`LockStore`, so a store for agents on several
machines (Redis: the transaction as WATCH/MULTI, liveness as a per-process key kept alive by its
holder, the doorbell as pub/sub) slots in without touching the rules, the CLI or the queue.

:class:`LocalStore` is the product today: ``logs/resource-locks.json`` under the state directory,
read-modified-written under an exclusive flock on ``run/table.lock``, with liveness proven by the
holder files of :mod:`versatil_fs.locks.leases`; a missing or damaged table is rebuilt from the
lease directory (:mod:`versatil_fs.locks.lease_dir`).
"""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgspec

from versatil_fs import faults, flock, linux
from versatil_fs.errors import DamagedTable, LockConflict, StateError
from versatil_fs.locks import clock, index, leases
from versatil_fs.locks.clock import seconds_left
from versatil_fs.locks.index import TableView
from versatil_fs.locks.journal import Delta, Journal
from versatil_fs.locks.lease_dir import HolderRecords, LeaseDirectory
from versatil_fs.locks.table import (
    MAX_FENCE,
    Grant,
    Record,
    Table,
    Waiter,
    check_fence,
    decode_table,
    new_id,
)
from versatil_fs.state import StateDir
from versatil_fs.trust import check_fd_owned, state_error

__all__ = [
    "TABLE_LOCK_GRACE",
    "TABLE_LOCK_WAIT",
    "HolderRecords",
    "LocalStore",
    "LockStore",
    "expires_wall",
    "seconds_left",
]


# Below this many grants the table is decoded whole as fast as the journal's records are read
# and written (two more files opened per transaction), so small tables keep no journal.
JOURNAL_FROM = 64

# Fencing tokens are reserved in blocks: `run/fence` holds a ceiling no token handed out has
# passed, rewritten (durably) once per block. A table rebuilt from the holder files, which know
# only the live grants, restarts at the ceiling, so it never hands out a token again.
FENCE_BLOCK = 1024

# How long a transaction waits for the table lock when its caller has no wait budget of its
# own (a release, `versatil locks`, the commit guard), and at least, whatever the budget: a
# transaction holds the lock for well under a millisecond, so only a stopped or stuck process
# holds it longer, and `--wait 0` must not fail because another command is mid-transaction.
TABLE_LOCK_WAIT = 5.0
TABLE_LOCK_GRACE = 0.5


class LockStore(Protocol):
    on_damage: list[str]
    """Why a damaged table was set aside since the last look (the manager logs and clears it)."""

    def transaction(self, budget: float | None = None) -> AbstractContextManager[Table]:
        """Exclusive access to the table; changes are saved when the block exits cleanly.

        Waits at most ``budget`` seconds (default: a few) for another process's transaction
        to end, then raises :class:`LockConflict` saying the table is busy."""

    def is_live(self, holder: Record, now: float) -> bool:
        """Whether a grant or waiter still stands (its process lives, or its lease unexpired)."""

    def holder_id(self) -> str:
        """The id of this process's holder file (its proof of life), created if need be;
        stored in ``Record.holder``."""

    def holder_file(self, holder_id: str) -> str:
        """The path of the holder file ``holder_id``, where a reader outside the manager can
        probe it (stored in ``Record.lease_file``)."""

    def publish(self, records: Iterable[Record]) -> None:
        """This process's own grants and waits, kept where a table rebuild can find them."""

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` once this transaction's table is written, before its lock is let go
        (dropped if the transaction raises)."""

    def forget(self, holder: Record) -> None:
        """Drop what the store keeps for a holder that has left the table (inside a
        transaction; done once the table without it is written)."""

    def amend(self, grant: Grant) -> None:
        """Keep what the store holds for a grant whose claims were partly unlocked."""

    def record_shell_lease(self, grant: Grant) -> None:
        """Keep a shell lease (no live process) until it is unlocked or expires."""

    def confirm_shell_lease(self, grant: Grant) -> None:
        """The table now holds the shell lease: let a rebuild trust its record."""

    def next_fence(self, table: Table) -> int:
        """A fencing token for a grant made in this transaction: greater than every token this
        lock space ever handed out (inside a transaction; recorded in ``table.fence``)."""

    def doorbell(self) -> leases.Doorbell:
        """Something a blocked request sleeps on until its blockers may have gone."""

    def holder_files(self, holders: Iterable[Record]) -> list[str]:
        """The holder files a blocked request should watch."""

    def sweep(self) -> int:
        """Clean up after processes that died without doing so; returns how many."""

    def close(self) -> None:
        """Let go of this process's proof of life and any open handles."""


_encoder = msgspec.json.Encoder()


def expires_wall(grant: Record) -> float | None:
    """The wall-clock time a shell lease ends, from :func:`seconds_left` (the boot clock: right
    even after the wall clock was set); None for a process lease or a waiter, which end with
    their process."""
    if isinstance(grant, Grant) and grant.owner == "shell":
        return clock.CLOCK.wall() + seconds_left(grant)
    return None


# The start of the document holds its generation: `{"version": 1, "generation": "<n>-<nonce>"`.
# The first pread takes this much, so a small table (a few dozen grants) is read whole by the
# same call that looks at its generation: one syscall, where a miss would cost two more.
_HEAD = 16384
_GENERATION = re.compile(
    rb'\A\{\n  "version": \d{1,9},\n  "generation": "(\d{1,18})-([0-9a-f]{16})",\n'
)


def _generation(head: bytes) -> tuple[int, bytes]:
    """``(generation, nonce)`` from the start of a table document; ``(0, b"")`` for a table
    without one (written before generations, or by hand)."""
    match = _GENERATION.match(head)
    return (int(match[1]), match[2]) if match else (0, b"")


def _signature(info: os.stat_result) -> tuple[int, ...]:
    return (
        info.st_ino, info.st_dev, info.st_size, info.st_mtime_ns, info.st_ctime_ns,
        info.st_mode, info.st_uid,
    )


_PEEK_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _read_rest(fd: int, head: bytes) -> bytes:
    """The whole file at ``fd``, of which ``head`` is the start."""
    chunks = [head]
    offset = len(head)
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _waiters_json(waiters: list[Waiter]) -> bytes:
    """The ``waiters`` list as the pretty-printed document has it (few: encoded each time)."""
    if not waiters:
        return b"[]"
    return msgspec.json.format(_encoder.encode(waiters), indent=2).replace(b"\n", b"\n  ")


def _rolled_back(view: TableView, before: tuple[int, int, list[Waiter]]) -> bool:
    """Whether the table of a transaction that raised is again the file's: it is when its
    records are untouched, and then its counters are put back. A refused request (``--wait
    0`` against a held lock) took a queue number and nothing else, so a busy process keeps
    its cache through refusals too."""
    table = view.table
    if view.dirty or not view.in_step() or table.waiters != before[2]:
        return False
    table.seq, table.fence = before[0], before[1]
    return True


@dataclass(slots=True)
class _Cached:
    """A decoded table and what says the file still holds it."""

    view: TableView
    generation: int
    nonce: bytes  # b"": not known to be the file's (rebuilt, or from before generations)
    signature: tuple[int, ...]
    waiters: bytes  # the waiters' JSON as last written
    must_write: bool


class LocalStore:
    def __init__(self, state: StateDir | None = None) -> None:
        self.state = state or StateDir()
        self._lock_fd: int | None = None
        self._mutex = threading.RLock()
        self._forgotten: list[Record] = []
        self._on_commit: list[Callable[[], None]] = []
        self._holder: leases.HolderFile | None = None
        self._probed: dict[str, bool] = {}
        self.on_damage: list[str] = []  # reasons of tables moved aside, for the manager to log
        # The table as this process last read or wrote it, with its index; None: read it.
        self._cache: _Cached | None = None
        self._ceiling = -1  # run/fence as last read or written (-1: not read yet)
        self.lease_dir = LeaseDirectory(self.state)
        self._table_name = str(self.state.lock_table)
        self.journal = Journal(self.state)

    # Transactions ---------------------------------------------------------------------------
    @contextmanager
    def transaction(self, budget: float | None = None) -> Iterator[Table]:
        # flock excludes other processes but not other threads sharing our descriptor (it
        # belongs to the open file description), so threads queue on a mutex first.
        wait = TABLE_LOCK_WAIT if budget is None else max(budget, TABLE_LOCK_GRACE)
        started = clock.CLOCK.monotonic()
        if not self._mutex.acquire(timeout=min(wait, threading.TIMEOUT_MAX)):
            raise self._busy(wait, None)
        try:
            left = wait - (clock.CLOCK.monotonic() - started)
            yield from self._locked_transaction(max(left, TABLE_LOCK_GRACE / 5))
        finally:
            self._mutex.release()

    def _locked_transaction(self, wait: float) -> Iterator[Table]:
        fd = self._table_lock_fd()
        own = flock.try_lock(fd)
        if not own:
            fd = self._flock_within(wait)
        self._probed = {}  # liveness is only stable while we hold the table lock
        try:
            cached = self._current()
            view = cached.view
            table = view.table
            before = (table.seq, table.fence, list(table.waiters))
            committed = False
            try:
                with index.activate(view):
                    yield table
                self._commit(cached, before)
                committed = True
            finally:
                if not committed and not _rolled_back(view, before):
                    # A transaction that raises is not saved, so a table it changed is not
                    # the file any more: the next one reads the file again.
                    self._cache = None
            # Only once the table no longer holds them may their rebuild records go: a crash
            # before the table write must leave both, or a rebuild would drop a live lock.
            for holder in self._forgotten:
                self._forget_now(holder)
            for hook in self._on_commit:
                hook()
        finally:
            self._forgotten = []
            self._on_commit = []
            flock.unlock(fd)
            if not own:
                os.close(fd)

    def _current(self) -> _Cached:
        """The table as the file holds it: the one this process decoded or wrote last while
        the file is still that one (most transactions of a busy process), caught up from the
        journal when another process wrote since, else read and decoded whole.

        The file's generation and random nonce, read with a small pread, say which writer
        wrote it last (every write draws a new nonce, so another process's write is always
        seen, even at the same inode, size and mtime: the swapped writes reuse two inodes, and
        mtimes have a coarse tick); its signature (inode, size, times, owner, mode) catches an
        edit by hand. One descriptor serves the look and, if need be, the whole read.
        """
        cached = self._cache
        self._cache = None
        raw: bytes | None = None
        signature: tuple[int, ...] = ()
        fd = self._open_table()
        if fd is None:
            raw, signature = self._read_table()  # missing, or not a file: what to do is there
        else:
            try:
                info = os.fstat(fd)
                signature = _signature(info)
                head = os.pread(fd, _HEAD, 0)
                generation, nonce = _generation(head)
                if cached is not None and cached.nonce and nonce:
                    if (generation, nonce, signature) == (
                        cached.generation, cached.nonce, cached.signature
                    ):
                        self._cache = cached
                        return cached
                    if self._catch_up(cached, generation, nonce, signature):
                        self._cache = cached
                        return cached
                raw = head if len(head) >= info.st_size else _read_rest(fd, head)
            except OSError as exc:
                raise state_error(self.state.lock_table, exc) from exc
            finally:
                os.close(fd)
        table, from_file = self._decode(raw)
        generation, nonce = _generation(raw) if from_file and raw is not None else (0, b"")
        cached = _Cached(
            view=TableView(table), generation=generation, nonce=nonce, signature=signature,
            waiters=_waiters_json(table.waiters),
            # A rebuilt table, or one without a generation (written before there was one),
            # is written even unchanged: from then on the file says who wrote it last.
            must_write=not nonce,
        )
        self._cache = cached
        return cached

    def _open_table(self) -> int | None:
        """A descriptor on the table file when it is a regular file of ours (checked as every
        state file is); None when it is missing or something else (:meth:`_read_table` then
        says what, and sets it aside if need be)."""
        self.state.ensure_dir(self.state.lock_table.parent)  # checked, and remembered a while
        try:
            # O_NONBLOCK: a FIFO planted there must not hang us.
            fd = os.open(self._table_name, _PEEK_FLAGS)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                return None
            check_fd_owned(fd, self.state.lock_table)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _catch_up(
        self, cached: _Cached, generation: int, nonce: bytes, signature: tuple[int, ...]
    ) -> bool:
        """Bring ``cached`` to the file's generation with the journal's records of the writes
        since ours; False (``cached`` then unusable) when they do not lead exactly there."""
        if len(cached.view.table.locks) < JOURNAL_FROM:
            return False  # a small table is read whole as fast as its records
        deltas = self.journal.since(cached.generation, cached.nonce)
        if not deltas:
            return False
        last = deltas[-1]
        if (last.generation, last.nonce, tuple(last.signature)) != (generation, nonce, signature):
            return False  # a gap: a writer died between its document and its record
        view = cached.view
        table = view.table
        for delta in deltas:
            if not view.apply(delta.added, delta.changed, delta.removed):
                return False
            table.seq, table.fence, table.waiters = delta.seq, delta.fence, delta.waiters
        cached.generation, cached.nonce, cached.signature = generation, nonce, signature
        cached.waiters = _waiters_json(table.waiters)
        return True

    def _commit(self, cached: _Cached, before: tuple[int, int, list[Waiter]]) -> None:
        """Write the table if the transaction changed it (or it must be written anyway)."""
        view = cached.view
        table = view.table
        if not view.in_step():
            view.resync()  # the grants were changed without the index helpers
        waiters = _waiters_json(table.waiters)
        if not (
            cached.must_write or view.dirty or waiters != cached.waiters
            or (table.seq, table.fence) != before[:2]
        ):
            return  # nothing changed: the file already is this table
        generation = cached.generation + 1
        nonce = os.urandom(8).hex().encode()
        # Pretty-printed: `cat ~/.versatil/logs/resource-locks.json` is how the reference
        # note tells people to look at locks. The same bytes msgspec.json.format would give
        # the whole table (plus the generation), but each grant encoded once, when it changes.
        # Written as its parts (pwritev): joining megabytes of fragments costs more than the
        # write itself.
        document = [
            b'{\n  "version": %d,\n  "generation": "%d-%s",\n  "seq": %d,\n  "fence": %d,\n'
            b'  "locks": ' % (table.version, generation, nonce, table.seq, table.fence),
            *view.locks_json(), b',\n  "waiters": ', waiters, b"\n}\n",
        ]
        self._cache = None  # until the write is done: a failed one leaves an unknown file
        self.state.write_swapped(self.state.lock_table, document)
        try:
            info = os.lstat(self.state.lock_table)
        except OSError:
            return
        signature = _signature(info)
        delta = view.take_delta()
        if delta is not None and not cached.must_write and len(table.locks) >= JOURNAL_FROM:
            faults.point("locks.before-journal")
            # After the document, so a record always describes a document that was written: a
            # crash in between leaves a gap, and a gap only costs readers a full read.
            added, changed, removed = delta
            self.journal.append(Delta(
                base=cached.generation, base_nonce=cached.nonce, generation=generation,
                nonce=nonce, signature=list(signature), seq=table.seq, fence=table.fence,
                added=added, changed=changed, removed=removed, waiters=list(table.waiters),
            ))
        cached.generation, cached.nonce, cached.signature = generation, nonce, signature
        cached.waiters, cached.must_write, view.dirty = waiters, False, False
        self._cache = cached

    def _flock_within(self, wait: float) -> int:
        """The table lock, taken on a descriptor of its own within ``wait`` seconds
        (:func:`versatil_fs.flock.lock_within`: a helper thread, no polling)."""
        path = self.state.table_lock
        try:
            fd = flock.lock_within(lambda: self.state.open_lock_file(path), wait)
        except OSError as exc:
            # Never a transaction run without the lock: a failed flock is an error.
            raise StateError(f"Could not lock {path}: {exc.strerror or exc}.") from exc
        if fd is None:
            raise self._busy(wait, path)
        return fd

    def _busy(self, wait: float, path: Path | None) -> LockConflict:
        if path is None:
            who = "another thread of this process"
        else:
            pid = linux.flock_holder_pid(path)
            who = f"process {pid}" if pid else "another process"
        return LockConflict(
            f"The lock table is busy: {who} has held {self.state.table_lock} for more than "
            f"{wait:.1f} s (a versatil command stopped or stuck?); nothing was changed, try "
            "again once it is gone."
        )

    def _read_table(self) -> tuple[bytes | None, tuple[int, ...]]:
        """The table's bytes and the file's signature (see :func:`_signature`); a FIFO,
        device or directory planted there is damage, not a file to block on: it is moved
        aside like any other damaged table."""
        path = self.state.lock_table
        self.state.ensure_dir(path.parent)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None, ()
        except OSError as exc:
            raise StateError(f"Could not use {path}: {exc.strerror or exc}.") from exc
        if stat.S_ISDIR(info.st_mode):
            # A directory cannot be set aside by a link like a file, and is nothing of ours
            # to rename or remove: say so.
            raise StateError(
                f"{path} is a directory, not the lock table; move it away and versatil "
                "rebuilds the table from the live locks."
            )
        if not stat.S_ISREG(info.st_mode) and not stat.S_ISLNK(info.st_mode):
            self._set_aside("it is not a regular file")
            return None, ()
        raw = self.state.read_bytes(path)
        try:
            # Under the table lock no versatil process writes it, so the file read is this one.
            signature = _signature(os.lstat(path))
        except OSError:
            signature = ()
        return raw, signature

    def _set_aside(self, reason: str) -> None:
        self.state.move_aside(self.state.lock_table, reason)
        self.on_damage.append(reason)

    def _table_lock_fd(self) -> int:
        # Kept open for the store's lifetime: reopening costs more than the flock itself.
        if self._lock_fd is None:
            self._lock_fd = self.state.open_lock_file(self.state.table_lock)
        return self._lock_fd

    def close(self) -> None:
        """Let go of this process's holder file and the table lock descriptor."""
        if self._holder is not None:
            self._holder.close()
            self._holder = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self.journal.close()

    def inheritable_fd(self) -> int | None:
        """The descriptor whose flock proves this process's leases alive, for the processes
        it starts to inherit: while any of them holds it, the leases live on (see hand_over)."""
        with self._mutex:
            return self._holder.fileno() if self._holder is not None else None

    def hand_over(self) -> None:
        """Leave this process's leases to the processes that inherited :meth:`inheritable_fd`.

        Nothing in the table changes: the holder file and its records stay, and the kernel
        keeps its flock until the last of those processes exits; then waiters wake (their
        doorbell watches the file) and find the leases dead, as after any holder's death.
        """
        with self._mutex:
            if self._holder is not None:
                self._holder.detach()
                self._holder = None

    # Fencing ---------------------------------------------------------------------------------
    def next_fence(self, table: Table) -> int:
        ceiling = self._fence_ceiling()
        if table.fence < ceiling - FENCE_BLOCK:
            # Below the block in use: a table rebuilt, or set back by hand. Every token so far
            # is at most the ceiling, so starting there keeps them increasing.
            table.fence = ceiling
        check_fence(table.fence)
        table.fence += 1
        if table.fence > ceiling:
            ceiling = self._fence_ceiling(reread=True)  # another process may have reserved
            if table.fence > ceiling:
                # Durable before the token is used: after a crash or power loss the ceiling
                # must still be above every token anyone was given.
                self._ceiling = table.fence + FENCE_BLOCK
                self.state.write_atomic(
                    self.state.fence_file, b"%d\n" % self._ceiling, durable=True
                )
        return table.fence

    def _fence_ceiling(self, *, reread: bool = False) -> int:
        if self._ceiling < 0 or reread:
            raw = self.state.read_bytes(self.state.fence_file)
            text = raw.strip() if raw else b"0"
            # Damaged (not a number, or past what a token may be): the table's own counter
            # still stands, and the next reservation rewrites the file. A ceiling taken at its
            # word past MAX_FENCE would hand out a token the table cannot hold: the table
            # would be set aside at its next read, its shell leases with it.
            value = int(text) if text.isdigit() and len(text) < 17 else 0
            self._ceiling = value if value <= MAX_FENCE + FENCE_BLOCK else 0
        return self._ceiling

    def _decode(self, raw: bytes | None) -> tuple[Table, bool]:
        """The table ``raw`` holds, and True; or the table rebuilt from the holder files (the
        file missing, or damaged and set aside), and False."""
        if raw is None:
            return self._rebuilt(), False
        try:
            # Decoded only when another process wrote the table (this process's own writes
            # are cached), so every record is checked.
            table = decode_table(raw)
        except DamagedTable as exc:
            # Set aside whole and rebuilt from the holders.
            self._set_aside(str(exc) or "not valid JSON")
            return self._rebuilt(), False
        return table, True

    def _rebuilt(self) -> Table:
        """The table rebuilt from the holder files, its fencing counter at the ceiling."""
        table = self.lease_dir.rebuild()
        table.fence = max(table.fence, self._fence_ceiling(reread=True))
        return table

    def holder_path(self, holder_id: str) -> Path | None:
        """``run/leases/<id>.lease``, rebuilt from a validated id (None for anything else)."""
        return self.lease_dir.holder_path(holder_id)

    def sweep(self) -> int:
        """Remove holder files of processes that died without cleaning up; returns how many."""
        return self.lease_dir.sweep()

    # Liveness -------------------------------------------------------------------------------
    def is_live(self, holder: Record, now: float) -> bool:
        if holder.owner == "shell" and isinstance(holder, Grant):
            return seconds_left(holder) > 0
        # A process lease is alive exactly as long as its flock: no expiry takes it from a live
        # process, and no PID keeps it for a dead one.
        ident = holder.holder
        alive = self._probed.get(ident)
        if alive is None:
            path = self.holder_path(ident)
            alive = self._probed[ident] = path is not None and leases.is_held(path)
        return alive

    def holder_id(self) -> str:
        with self._mutex:
            if self._holder is None or not self._holder.usable:
                self._holder = leases.HolderFile.create(self.state, new_id())
            return self._holder.path.name[: -len(".lease")]

    def holder_file(self, holder_id: str) -> str:
        path = self.holder_path(holder_id)
        return str(path) if path is not None else ""

    def publish(self, records: Iterable[Record]) -> None:
        if self._holder is None:
            return
        mine = HolderRecords(pid=os.getpid())
        for record in records:
            (mine.grants if isinstance(record, Grant) else mine.waiters).append(record)  # type: ignore[arg-type]
        self._holder.write(_encoder.encode(mine))

    def record_shell_lease(self, grant: Grant) -> None:
        """Keep a shell lease where a rebuild finds it (see :class:`LeaseDirectory`)."""
        self.lease_dir.record_shell_lease(grant)

    def confirm_shell_lease(self, grant: Grant) -> None:
        self.lease_dir.confirm_shell_lease(grant)

    def after_commit(self, hook: Callable[[], None]) -> None:
        self._on_commit.append(hook)

    def forget(self, holder: Record) -> None:
        # Called inside a transaction: deferred until the table write has committed.
        self._forgotten.append(holder)

    def _forget_now(self, holder: Record) -> None:
        self.lease_dir.forget(holder, own=self._own_file())

    def amend(self, grant: Grant) -> None:
        self.lease_dir.amend(grant, own=self._own_file())

    def _own_file(self) -> Path | None:
        return self._holder.path if self._holder is not None else None

    def doorbell(self) -> leases.Doorbell:
        return leases.Doorbell(self.state.logs)

    def holder_files(self, holders: Iterable[Record]) -> list[str]:
        paths = (self.holder_path(h.holder) for h in holders if h.holder)
        return sorted({str(p) for p in paths if p is not None})
