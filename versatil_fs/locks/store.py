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
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

import msgspec

from versatil_fs import flock, linux
from versatil_fs.errors import DamagedTable, LockConflict, StateError
from versatil_fs.locks import clock, leases
from versatil_fs.locks.clock import seconds_left
from versatil_fs.locks.lease_dir import HolderRecords, LeaseDirectory
from versatil_fs.locks.table import (
    SCHEMA_VERSION,
    Grant,
    Record,
    Table,
    check_records,
    new_id,
)
from versatil_fs.state import StateDir

__all__ = [
    "TABLE_LOCK_GRACE",
    "TABLE_LOCK_WAIT",
    "HolderRecords",
    "LocalStore",
    "LockStore",
    "expires_wall",
    "seconds_left",
]


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
_table_decoder = msgspec.json.Decoder(Table)


def expires_wall(grant: Record) -> float | None:
    """The wall-clock time a shell lease ends, from :func:`seconds_left` (the boot clock: right
    even after the wall clock was set); None for a process lease or a waiter, which end with
    their process."""
    if isinstance(grant, Grant) and grant.owner == "shell":
        return clock.CLOCK.wall() + seconds_left(grant)
    return None


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
        self._checked = b""  # the last table this process wrote
        self._ceiling = -1  # run/fence as last read or written (-1: not read yet)
        self.lease_dir = LeaseDirectory(self.state)

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
            raw = self._read_table()
            table = self._decode(raw)
            yield table
            # Pretty-printed: `cat ~/.versatil/logs/resource-locks.json` is how the reference
            # note tells people to look at locks. The same table always formats to the same
            # bytes, so comparing with what we read tells whether anything changed.
            document = msgspec.json.format(_encoder.encode(table), indent=2) + b"\n"
            if document != raw:
                self.state.write_swapped(self.state.lock_table, document)
            self._checked = document
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

    def _read_table(self) -> bytes | None:
        """The table's bytes; a FIFO, device or directory planted there is damage, not a file
        to block on: it is moved aside like any other damaged table."""
        path = self.state.lock_table
        self.state.ensure_dir(path.parent)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None
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
            return None
        return self.state.read_bytes(path)

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
            # Damaged (not a number): the table's own counter still stands, and the next
            # reservation rewrites the file.
            self._ceiling = int(text) if text.isdigit() and len(text) < 17 else 0
        return self._ceiling

    def _decode(self, raw: bytes | None) -> Table:
        if raw is None:
            return self._rebuilt()
        try:
            table = _table_decoder.decode(raw)
            if table.version != SCHEMA_VERSION:
                raise DamagedTable(f"schema version {table.version}, expected {SCHEMA_VERSION}")
            # The bytes this process wrote last (and so made from checked records) need no
            # second check: with one busy process, that is nearly every transaction.
            if raw != self._checked:
                problem = check_records(table.locks) or check_records(table.waiters, "waiters")
                if problem:
                    raise DamagedTable(problem)
        except (msgspec.DecodeError, msgspec.ValidationError, DamagedTable) as exc:
            # A value out of bounds (msgspec checks the schema's limits) or an id that is not
            # one of ours is damage like a syntax error: nothing read from such a table is
            # acted on, it is set aside whole and rebuilt from the holders.
            self._set_aside(str(exc) or "not valid JSON")
            return self._rebuilt()
        return table

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
