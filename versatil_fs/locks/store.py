"""Where the lock table lives: the one boundary between the lock rules and storage.

The manager only ever calls the five methods of :class:`LockStore`, so a store for agents on
several machines (Redis: a transaction as WATCH/MULTI, liveness as a key with a TTL kept alive by
the holder, the doorbell as pub/sub) slots in without touching the rules, the CLI or the queue.

:class:`LocalStore` is the product today: ``logs/resource-locks.json`` under the state directory,
read-modified-written under an exclusive flock on ``run/table.lock``, with liveness proven by the
lease files of :mod:`versatil_fs.locks.leases`.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import msgspec

from versatil_fs.locks import leases
from versatil_fs.locks.table import SCHEMA_VERSION, Grant, Holder, Table, Waiter
from versatil_fs.state import StateDir


class LockStore(Protocol):
    def transaction(self) -> AbstractContextManager[Table]:
        """Exclusive access to the table; changes are saved when the block exits cleanly."""

    def is_live(self, holder: Holder, now: float) -> bool:
        """Whether a grant or waiter still stands (its process lives, its lease not expired)."""

    def open_lease(self, holder: Holder) -> leases.LeaseFile:
        """Start this process's liveness proof for ``holder`` (before it enters the table)."""

    def doorbell(self) -> leases.Doorbell:
        """Something a blocked request can sleep on until its blockers may have gone."""

    def forget(self, holder: Holder) -> None:
        """Drop the liveness proof of a holder that is no longer in the table."""


_encoder = msgspec.json.Encoder()
_table_decoder = msgspec.json.Decoder(Table)
_grant_decoder = msgspec.json.Decoder(Grant)
_waiter_decoder = msgspec.json.Decoder(Waiter)


class DamagedTable(Exception):
    """The table file did not parse; carries why, for the one report the user sees."""


class LocalStore:
    def __init__(self, state: StateDir | None = None) -> None:
        self.state = state or StateDir()
        self._lock_fd: int | None = None
        self.on_damage: list[str] = []  # reasons of tables moved aside, for the manager to log

    # Transactions ---------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Table]:
        fd = self._table_lock_fd()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            raw = self.state.read_bytes(self.state.lock_table)
            table = self._decode(raw)
            before = _encoder.encode(table) if raw is not None else b""
            yield table
            encoded = _encoder.encode(table)
            if encoded != before:
                # Pretty-printed: `cat ~/.versatil/logs/resource-locks.json` is how the
                # reference note tells people to look at locks.
                self.state.write_swapped(
                    self.state.lock_table, msgspec.json.format(encoded, indent=2) + b"\n"
                )
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _table_lock_fd(self) -> int:
        # Kept open for the manager's lifetime: reopening it costs more than the flock itself.
        if self._lock_fd is None:
            self._lock_fd = self.state.open_lock_file(self.state.table_lock)
        return self._lock_fd

    def close(self) -> None:
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
        """The table as the live lease files describe it (after damage, or on first use)."""
        table = Table()
        now = time.time()
        self.state.ensure_dir(self.state.leases)
        waiters: list[Waiter] = []
        for path in sorted(self.state.leases.glob("*.lease")):
            found = leases.read_record(path)
            if found is None:
                continue
            status, record = found
            try:
                if status == leases.GRANTED:
                    grant = _decode_grant(record, now)
                    if self.is_live(grant, now):
                        table.locks.append(grant)
                        continue
                elif status == leases.WAITING:
                    waiter = _waiter_decoder.decode(record)
                    if self.is_live(waiter, now):
                        waiters.append(waiter)
                        continue
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass
            if not leases.is_held(path):
                self.state.remove(path)
        # Arrival order survives through `since`; renumber so new arrivals queue behind.
        for waiter in sorted(waiters, key=lambda w: w.since):
            waiter.seq = table.next_seq()
            table.waiters.append(waiter)
        return table

    # Liveness -------------------------------------------------------------------------------
    def is_live(self, holder: Holder, now: float) -> bool:
        if holder.owner == "shell" and isinstance(holder, Grant):
            return now < holder.expires_at
        # A process lease is alive exactly as long as its flock: no expiry can take it from a
        # live process, and no PID can keep it for a dead one.
        return bool(holder.lease_file) and leases.is_held(holder.lease_file)

    def open_lease(self, holder: Holder) -> leases.LeaseFile:
        self.state.ensure_dir(self.state.leases)
        return leases.LeaseFile.create(self.state, holder.id, _encoder.encode(holder))

    def lease_path(self, lease_id: str) -> str:
        return str(self.state.leases / f"{lease_id}.lease")

    def write_shell_lease(self, grant: Grant) -> None:
        """Record a shell lease (no live process) so a rebuild keeps it until it expires."""
        self.state.write_atomic(
            self.state.leases / f"{grant.id}.lease", leases.GRANTED + _encoder.encode(grant)
        )

    def forget(self, holder: Holder) -> None:
        if holder.owner == "shell" and isinstance(holder, Grant):
            self.state.remove(self.state.leases / f"{holder.id}.lease")
        elif holder.lease_file and leases.is_held(holder.lease_file):
            leases.mark_revoked(holder.lease_file)  # forced release of a live holder
        elif holder.lease_file:
            self.state.remove(holder.lease_file)  # its process is gone: nobody else will

    def doorbell(self) -> leases.Doorbell:
        return leases.Doorbell(self.state.logs)

    def lease_files(self, holders: Iterable[Holder]) -> list[str]:
        return [h.lease_file for h in holders if h.lease_file]



def _decode_grant(record: bytes, now: float) -> Grant:
    # A shell lease file holds its Grant; a process lease file holds the Waiter it started as,
    # with its status byte flipped to G when granted.
    try:
        return _grant_decoder.decode(record)
    except msgspec.ValidationError:
        return _waiter_decoder.decode(record).granted(now)
