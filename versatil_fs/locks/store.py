"""Where the lock table lives: the one boundary between the lock rules and storage.

The manager only calls the methods of :class:`LockStore`, so a store for agents on several
machines (Redis: the transaction as WATCH/MULTI, liveness as a per-process key kept alive by its
holder, the doorbell as pub/sub) slots in without touching the rules, the CLI or the queue.

:class:`LocalStore` is the product today: ``logs/resource-locks.json`` under the state directory,
read-modified-written under an exclusive flock on ``run/table.lock``, with liveness proven by the
holder files of :mod:`versatil_fs.locks.leases`.
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
from versatil_fs.locks.table import (
    SCHEMA_VERSION,
    Grant,
    Record,
    Table,
    Waiter,
    check_records,
    new_id,
    queue_key,
    valid_id,
)
from versatil_fs.state import StateDir, read_regular

__all__ = [
    "TABLE_LOCK_GRACE",
    "TABLE_LOCK_WAIT",
    "HolderRecords",
    "LocalStore",
    "LockStore",
    "expires_wall",
    "seconds_left",
]


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

    def doorbell(self) -> leases.Doorbell:
        """Something a blocked request sleeps on until its blockers may have gone."""

    def holder_files(self, holders: Iterable[Record]) -> list[str]:
        """The holder files a blocked request should watch."""

    def sweep(self) -> int:
        """Clean up after processes that died without doing so; returns how many."""

    def close(self) -> None:
        """Let go of this process's proof of life and any open handles."""


class HolderRecords(msgspec.Struct, kw_only=True):
    """What a holder file contains: its process's grants and waits."""

    version: int = SCHEMA_VERSION
    pid: int
    grants: list[Grant] = msgspec.field(default_factory=list)
    waiters: list[Waiter] = msgspec.field(default_factory=list)


_encoder = msgspec.json.Encoder()
_table_decoder = msgspec.json.Decoder(Table)
_grant_decoder = msgspec.json.Decoder(Grant)
_records_decoder = msgspec.json.Decoder(HolderRecords)


def seconds_left(grant: Grant) -> float:
    """How long a shell lease still stands (negative once it has expired).

    Measured on CLOCK_BOOTTIME while the machine has not rebooted since the grant, so a wall
    clock stepped forward or back neither ends the lease early nor keeps it late; after a
    reboot (another boot id) the wall-clock expiry stored beside it is all there is.
    """
    now = clock.CLOCK
    if grant.boot_id and grant.expires_boot > 0 and grant.boot_id == now.boot_id():
        return grant.expires_boot - now.boottime()
    return grant.expires_at - now.wall()


def expires_wall(grant: Record) -> float | None:
    """The wall-clock time a shell lease ends, from :func:`seconds_left` (the boot clock: right
    even after the wall clock was set); None for a process lease or a waiter, which end with
    their process."""
    if isinstance(grant, Grant) and grant.owner == "shell":
        return clock.CLOCK.wall() + seconds_left(grant)
    return None


def _parse_name(name: str) -> tuple[str, str] | None:
    """``(id, kind)`` for a file name of the lease directory we made (``<id>.lease``,
    ``<id>.shell``, ``<id>.pending``, ``.<id>.tmp``); None for anything else, which the sweep
    and the rebuild leave alone."""
    if name.startswith(".") and name.endswith(".tmp"):
        ident, kind = name[1:-4], "tmp"
    else:
        ident, dot, kind = name.rpartition(".")
        if not dot or kind not in ("lease", "shell", "pending"):
            return None
    return (ident, kind) if valid_id(ident) else None


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

    def _decode(self, raw: bytes | None) -> Table:
        if raw is None:
            return self._rebuild()
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
            return self._rebuild()
        return table

    def holder_path(self, holder_id: str) -> Path | None:
        """``run/leases/<id>.lease``, rebuilt from a validated id (None for anything else): the
        only way a path is derived from what a table or holder file says."""
        if not valid_id(holder_id):
            return None
        return self.state.leases / f"{holder_id}.lease"

    def _shell_path(self, lease_id: str, kind: str = "shell") -> Path | None:
        if not valid_id(lease_id):
            return None
        return self.state.leases / f"{lease_id}.{kind}"

    def _remove_entry(self, path: Path) -> None:
        """Unlink a file of the lease directory: only a regular file (never a symlink's
        target, never a directory) whose name is one we make."""
        if path.parent != self.state.leases or _parse_name(path.name) is None:
            return
        try:
            info = os.lstat(path)
        except OSError:
            return
        if stat.S_ISREG(info.st_mode):
            self.state.remove(path)

    def _entries(self) -> list[tuple[Path, str, str]]:
        """``(path, id, kind)`` for each regular file of the lease directory that we made;
        symlinks, FIFOs, directories and foreign names are skipped, never read or removed."""
        self.state.ensure_dir(self.state.leases)
        found = []
        with os.scandir(self.state.leases) as listing:
            for entry in listing:
                parsed = _parse_name(entry.name)
                if parsed is None:
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                except OSError:
                    continue
                found.append((self.state.leases / entry.name, *parsed))
        return sorted(found)

    def _rebuild(self) -> Table:
        """The table as the live holder files and unexpired shell leases describe it.

        Nothing in those files names a path: a shell lease's file is ``<its id>.shell``, and
        every record of a holder file is re-attached to that file's own id, whatever it says.
        """
        table = Table()
        waiters: list[Waiter] = []
        for path, ident, kind in self._entries():
            if kind == "shell":
                raw = read_regular(path, ours=True)
                try:
                    grant = _grant_decoder.decode(raw) if raw is not None else None
                except (msgspec.DecodeError, msgspec.ValidationError):
                    grant = None
                if grant is not None and (
                    grant.id != ident or grant.owner != "shell" or check_records([grant])
                ):
                    grant = None  # a record under another lease's name: not to be trusted
                if grant is not None and seconds_left(grant) > 0:
                    grant.holder = grant.lease_file = ""
                    table.locks.append(grant)
                else:
                    self._remove_entry(path)
            elif kind == "lease":
                if not leases.is_held(path):
                    self._remove_entry(path)  # its process is gone, and so are its leases
                    continue
                raw = read_regular(path, ours=True)
                try:
                    records = _records_decoder.decode(raw) if raw else None
                except (msgspec.DecodeError, msgspec.ValidationError):
                    records = None
                if records is None or _damaged(records):
                    continue  # a live holder that has recorded nothing (readable) yet
                for grant in records.grants:
                    if grant.owner == "process":  # shell leases come from their own files
                        grant.holder, grant.lease_file = ident, str(path)
                        table.locks.append(grant)
                for waiter in records.waiters:
                    waiter.holder, waiter.lease_file = ident, str(path)
                    waiters.append(waiter)
        # Every waiter keeps its place: the number it was given stays (its process compares
        # it with the others' and would see false cycles and a broken order if it changed),
        # and newcomers are numbered after the highest one.
        table.waiters = sorted(waiters, key=lambda w: (*queue_key(w), w.since))
        table.seq = max((w.seq for w in waiters), default=0)
        return table

    def sweep(self) -> int:
        """Remove holder files of processes that died without cleaning up; returns how many.

        Only regular files named as we name them, in the lease directory, and only when no
        process holds them flocked.
        """
        removed = 0
        now = clock.CLOCK.wall()
        for path, _ident, kind in self._entries():
            if kind == "lease" and not leases.is_held(path):
                self._remove_entry(path)
                removed += 1
            elif kind in ("pending", "tmp") and _older_than(path, now, 60.0):
                # A `versatil lock` killed between its record and its table write, or a
                # process killed while creating its holder file.
                if kind == "tmp" and leases.is_held(path):
                    continue
                self._remove_entry(path)
                removed += 1
        return removed

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
        """Keep a shell lease (no live process) where a rebuild finds it until it expires.

        Written as ``<id>.pending`` inside the granting transaction and renamed to
        ``<id>.shell`` by :meth:`confirm_shell_lease` once the table holds the grant; a rebuild
        ignores pending records, so a command killed before the table was written leaves no
        lock to resurrect.
        """
        pending = self._shell_path(grant.id, "pending")
        if pending is not None:
            self.state.write_atomic(pending, _encoder.encode(grant))

    def confirm_shell_lease(self, grant: Grant) -> None:
        pending, final = self._shell_path(grant.id, "pending"), self._shell_path(grant.id)
        if pending is None or final is None:
            return
        try:
            os.replace(pending, final)
        except FileNotFoundError:
            pass  # unlocked or expired already

    def after_commit(self, hook: Callable[[], None]) -> None:
        self._on_commit.append(hook)

    def forget(self, holder: Record) -> None:
        # Called inside a transaction: deferred until the table write has committed.
        self._forgotten.append(holder)

    def _forget_now(self, holder: Record) -> None:
        if holder.owner == "shell" and isinstance(holder, Grant):
            for kind in ("shell", "pending"):
                path = self._shell_path(holder.id, kind)
                if path is not None:
                    self._remove_entry(path)
        else:
            self._rewrite_foreign(holder, None)

    def amend(self, grant: Grant) -> None:
        if grant.owner == "shell":
            path = self._shell_path(grant.id)
            if path is not None:
                self.state.write_atomic(path, _encoder.encode(grant))
        else:
            self._rewrite_foreign(grant, grant)

    def _rewrite_foreign(self, holder: Record, replacement: Grant | None) -> None:
        """Strike (or replace) a record in another live process's holder file.

        A live process that lost a grant (forced release, unlock from a shell) still lists it in
        its file; without this a table rebuild would bring the released lock back.
        """
        path = self.holder_path(holder.holder)
        if path is None or (self._holder is not None and path == self._holder.path):
            return  # our own records (the manager publishes them itself), or no holder file
        if not leases.is_held(path):
            self._remove_entry(path)  # its process is gone, and with it every lease it held
            return
        raw = read_regular(path, ours=True)
        try:
            records = _records_decoder.decode(raw) if raw else None
        except (msgspec.DecodeError, msgspec.ValidationError):
            records = None
        if records is None or _damaged(records):
            return
        records.grants = [g for g in records.grants if g.id != holder.id]
        records.waiters = [w for w in records.waiters if w.id != holder.id]
        if replacement is not None:
            records.grants.append(replacement)
        leases.rewrite_foreign(path, _encoder.encode(records))

    def doorbell(self) -> leases.Doorbell:
        return leases.Doorbell(self.state.logs)

    def holder_files(self, holders: Iterable[Record]) -> list[str]:
        paths = (self.holder_path(h.holder) for h in holders if h.holder)
        return sorted({str(p) for p in paths if p is not None})


def _damaged(records: HolderRecords) -> bool:
    return bool(check_records(records.grants) or check_records(records.waiters, "waiters"))


def _older_than(path: Path, now: float, seconds: float) -> bool:
    try:
        return now - os.lstat(path).st_mtime > seconds
    except OSError:
        return False
