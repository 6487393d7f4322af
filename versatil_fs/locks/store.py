"""Where the lock table lives: the one boundary between the lock rules and storage.

The manager only calls the methods of :class:`LockStore`, so a store for agents on several
machines (Redis: the transaction as WATCH/MULTI, liveness as a per-process key kept alive by its
holder, the doorbell as pub/sub) slots in without touching the rules, the CLI or the queue.

:class:`LocalStore` is the product today: ``logs/resource-locks.json`` under the state directory,
read-modified-written under an exclusive flock on ``run/table.lock``, with liveness proven by the
holder files of :mod:`versatil_fs.locks.leases`.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

import msgspec

from versatil_fs.locks import leases
from versatil_fs.locks.table import SCHEMA_VERSION, Grant, Holder, Table, Waiter
from versatil_fs.state import StateDir


class LockStore(Protocol):
    on_damage: list[str]
    """Why a damaged table was set aside since the last look (the manager logs and clears it)."""

    def transaction(self) -> AbstractContextManager[Table]:
        """Exclusive access to the table; changes are saved when the block exits cleanly."""

    def is_live(self, holder: Holder, now: float) -> bool:
        """Whether a grant or waiter still stands (its process lives, or its lease unexpired)."""

    def liveness_token(self) -> str:
        """This process's proof of life, started if need be; stored in ``Holder.lease_file``."""

    def publish(self, records: Iterable[Holder]) -> None:
        """This process's own grants and waits, kept where a table rebuild can find them."""

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` once this transaction's table is written, before its lock is let go
        (dropped if the transaction raises)."""

    def forget(self, holder: Holder) -> None:
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

    def holder_files(self, holders: Iterable[Holder]) -> list[str]:
        """The liveness tokens a blocked request should watch."""

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


class DamagedTable(Exception):
    """The table file did not parse; carries why, for the one report the user sees."""


class LocalStore:
    def __init__(self, state: StateDir | None = None) -> None:
        self.state = state or StateDir()
        self._lock_fd: int | None = None
        self._mutex = threading.RLock()
        self._forgotten: list[Holder] = []
        self._on_commit: list[Callable[[], None]] = []
        self._holder: leases.HolderFile | None = None
        self._probed: dict[str, bool] = {}
        self.on_damage: list[str] = []  # reasons of tables moved aside, for the manager to log

    # Transactions ---------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Table]:
        # flock excludes other processes but not other threads sharing our descriptor (it
        # belongs to the open file description), so threads queue on a mutex first.
        with self._mutex:
            yield from self._locked_transaction()

    def _locked_transaction(self) -> Iterator[Table]:
        fd = self._table_lock_fd()
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._probed = {}  # liveness is only stable while we hold the table lock
        try:
            raw = self.state.read_bytes(self.state.lock_table)
            table = self._decode(raw)
            yield table
            # Pretty-printed: `cat ~/.versatil/logs/resource-locks.json` is how the reference
            # note tells people to look at locks. The same table always formats to the same
            # bytes, so comparing with what we read tells whether anything changed.
            document = msgspec.json.format(_encoder.encode(table), indent=2) + b"\n"
            if document != raw:
                self.state.write_swapped(self.state.lock_table, document)
            # Only once the table no longer holds them may their rebuild records go: a crash
            # before the table write must leave both, or a rebuild would drop a live lock.
            for holder in self._forgotten:
                self._forget_now(holder)
            for hook in self._on_commit:
                hook()
        finally:
            self._forgotten = []
            self._on_commit = []
            fcntl.flock(fd, fcntl.LOCK_UN)

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

    def _decode(self, raw: bytes | None) -> Table:
        if raw is None:
            return self._rebuild()
        try:
            table = _table_decoder.decode(raw)
            if table.version != SCHEMA_VERSION:
                raise DamagedTable(f"schema version {table.version}, expected {SCHEMA_VERSION}")
        except (msgspec.DecodeError, msgspec.ValidationError, DamagedTable) as exc:
            reason = str(exc) or "not valid JSON"
            self.state.move_aside(self.state.lock_table, reason)
            self.on_damage.append(reason)
            return self._rebuild()
        return table

    def _rebuild(self) -> Table:
        """The table as the live holder files and unexpired shell leases describe it."""
        table = Table()
        now = time.time()
        self.state.ensure_dir(self.state.leases)
        waiters: list[Waiter] = []
        for path in sorted(self.state.leases.iterdir()):
            if path.suffix == ".shell":
                try:
                    grant = _grant_decoder.decode(path.read_bytes())
                except (OSError, msgspec.DecodeError, msgspec.ValidationError):
                    grant = None
                if grant is not None and self.is_live(grant, now):
                    table.locks.append(grant)
                else:
                    self.state.remove(path)
            elif path.suffix == ".lease":
                if not leases.is_held(path):
                    self.state.remove(path)  # its process is gone, and so are its leases
                    continue
                try:
                    records = _records_decoder.decode(path.read_bytes())
                except (OSError, msgspec.DecodeError, msgspec.ValidationError):
                    continue  # a live holder that has recorded nothing yet
                table.locks.extend(records.grants)
                waiters.extend(records.waiters)
        # Arrival order survives through `since`; renumber so new arrivals queue behind.
        for waiter in sorted(waiters, key=lambda w: w.since):
            waiter.seq = table.next_seq()
            table.waiters.append(waiter)
        return table

    def sweep(self) -> int:
        """Remove holder files of processes that died without cleaning up; returns how many."""
        removed = 0
        self.state.ensure_dir(self.state.leases)
        now = time.time()
        for path in self.state.leases.iterdir():
            if path.suffix == ".lease" and not leases.is_held(path):
                self.state.remove(path)
                removed += 1
            elif path.suffix == ".pending" and _older_than(path, now, 60.0):
                # A `versatil lock` killed between its record and its table write.
                self.state.remove(path)
                removed += 1
        return removed

    # Liveness -------------------------------------------------------------------------------
    def is_live(self, holder: Holder, now: float) -> bool:
        if holder.owner == "shell" and isinstance(holder, Grant):
            return now < holder.expires_at
        # A process lease is alive exactly as long as its flock: no expiry takes it from a live
        # process, and no PID keeps it for a dead one.
        path = holder.lease_file
        if not path:
            return False
        alive = self._probed.get(path)
        if alive is None:
            alive = self._probed[path] = leases.is_held(path)
        return alive

    def liveness_token(self) -> str:
        with self._mutex:
            if self._holder is None or not self._holder.usable:
                holder_id = f"{time.time_ns() // 1_000_000:x}-{os.getpid()}-{os.urandom(3).hex()}"
                self._holder = leases.HolderFile.create(self.state, holder_id)
            return str(self._holder.path)

    def publish(self, records: Iterable[Holder]) -> None:
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
        self.state.write_atomic(
            self.state.leases / f"{grant.id}.pending", _encoder.encode(grant)
        )

    def confirm_shell_lease(self, grant: Grant) -> None:
        pending = self.state.leases / f"{grant.id}.pending"
        try:
            os.replace(pending, self.state.leases / f"{grant.id}.shell")
        except FileNotFoundError:
            pass  # unlocked or expired already

    def after_commit(self, hook: Callable[[], None]) -> None:
        self._on_commit.append(hook)

    def forget(self, holder: Holder) -> None:
        # Called inside a transaction: deferred until the table write has committed.
        self._forgotten.append(holder)

    def _forget_now(self, holder: Holder) -> None:
        if holder.owner == "shell" and isinstance(holder, Grant):
            self.state.remove(self.state.leases / f"{holder.id}.shell")
            self.state.remove(self.state.leases / f"{holder.id}.pending")
        else:
            self._rewrite_foreign(holder, None)

    def amend(self, grant: Grant) -> None:
        if grant.owner == "shell":
            self.state.write_atomic(
                self.state.leases / f"{grant.id}.shell", _encoder.encode(grant)
            )
        else:
            self._rewrite_foreign(grant, grant)

    def _rewrite_foreign(self, holder: Holder, replacement: Grant | None) -> None:
        """Strike (or replace) a record in another live process's holder file.

        A live process that lost a grant (forced release, unlock from a shell) still lists it in
        its file; without this a table rebuild would bring the released lock back.
        """
        path = holder.lease_file
        if not path or (self._holder is not None and path == str(self._holder.path)):
            return  # our own records: the manager publishes them itself
        if not leases.is_held(path):
            self.state.remove(path)  # its process is gone, and with it every lease it held
            return
        try:
            records = _records_decoder.decode(Path(path).read_bytes())
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return
        records.grants = [g for g in records.grants if g.id != holder.id]
        records.waiters = [w for w in records.waiters if w.id != holder.id]
        if replacement is not None:
            records.grants.append(replacement)
        leases.rewrite_foreign(path, _encoder.encode(records))

    def doorbell(self) -> leases.Doorbell:
        return leases.Doorbell(self.state.logs)

    def holder_files(self, holders: Iterable[Holder]) -> list[str]:
        return sorted({h.lease_file for h in holders if h.lease_file})


def _older_than(path: Path, now: float, seconds: float) -> bool:
    try:
        return now - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False
