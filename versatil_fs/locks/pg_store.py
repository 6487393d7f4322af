"""The lock table on PostgreSQL: one lock space for agents on several machines.

The same rules as on one machine (:mod:`versatil_fs.locks.manager` and
:mod:`versatil_fs.locks.table` decide; this is only a :class:`~versatil_fs.locks.store.LockStore`):

- **Transactions.** A project's table is one row of ``versatil_tables`` (the local JSON schema,
  as ``jsonb``). A transaction is ``BEGIN``; ``SELECT ... FOR UPDATE`` of that row (made on first
  use); the manager's decision; the row written back only if it changed, with a ``NOTIFY`` on
  the project's channel; ``COMMIT``. So every decision is linearizable whatever the number of
  machines. A row lock not had within the budget is the same :class:`LockConflict` "the lock
  table is busy" as the local store's.
- **Path resources.** On one machine a path resource is keyed by the clone's git common dir.
  Clones on two machines have different ones, so the row keys this project's paths by
  ``project:<name>`` and the store translates at its boundary (stored: the project key; loaded:
  this clone's lock-space key). Named resources (``db:users``) are shared as they are.
- **Liveness.** Every process that holds or waits keeps one connection holding the
  session-level ``pg_advisory_lock(NAMESPACE, key(holder id))`` for as long as it lives
  (:class:`~versatil_fs.locks.pg_liveness.Liveness`); a process record is live while someone
  holds that key exclusively (one ``pg_locks`` query per transaction). The server drops the
  lock the moment the connection ends: a ``kill -9`` frees it at once, a host that dies
  silently once TCP keepalives give up (:mod:`versatil_fs.locks.pg_connect`). Shell leases end
  by their TTL as on one machine.
- **Children.** :meth:`PgStore.inheritable_fd` is the liveness connection's socket: a child of
  ``versatil run`` that inherits it keeps the session (so the leases) alive after the wrapper
  dies, as the inherited flock does locally. :meth:`PgStore.hand_over` drops the wrapper's own
  reference without a Terminate message. Gap: a handed-over session that a server restart ends
  is not re-established (no process of ours speaks on it); those leases end with the restart.
- **Hand-off.** A waiter's :class:`~versatil_fs.locks.pg_liveness.PgDoorbell` wakes on the
  project's NOTIFY (sent with every commit that changed the row) or on its first blocker's
  session ending (a ``kill -9`` sends no NOTIFY): no polling.
- **Fencing.** ``versatil_tables.fence`` is the project's counter, bumped in the row's
  transaction: strictly increasing across machines, and kept when a damaged document is set
  aside.
- **Server restarts.** The row survives (WAL). Each process's liveness connection comes back
  and takes its key again (:mod:`versatil_fs.locks.pg_liveness`). For ``[store]
  restart_grace`` seconds (10 by default) after ``pg_postmaster_start_time()`` a process record
  whose key nobody holds still counts as live, so live holders keep their grants; after it, a
  holder that has not come back is dead and its grants are reclaimed (the ``reclaim`` event
  says so, as for any dead holder). While the server is unreachable a transaction retries
  until its budget, then raises :class:`StoreUnavailable`: one sentence naming the URL with the
  password hidden (exit 2).
  A COMMIT whose answer is lost is reported the same way; a grant it may have made belongs to
  this process and ends with it.
- **Schema.** Made on first use (or by ``versatil store init``) by
  :func:`~versatil_fs.locks.pg_schema.ensure_schema`.
- **Not kept.** The local store's holder-file records (its table rebuild) have no use here: the
  row is durable. A document that no longer decodes is copied to ``versatil_damaged`` and
  restarted empty, its fencing counter kept.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from versatil_fs.errors import DamagedTable, LockConflict, StoreUnavailable
from versatil_fs.locks import clock
from versatil_fs.locks.clock import seconds_left
from versatil_fs.locks.pg_connect import (
    KEEPALIVES,
    NAMESPACE,
    RECONNECT_EVERY,
    channel_of,
    connect,
    disowned,
    holder_key,
    unavailable,
    usable,
)
from versatil_fs.locks.pg_liveness import Liveness, PgDoorbell
from versatil_fs.locks.pg_schema import PG_SCHEMA_VERSION, ensure_schema
from versatil_fs.locks.store import TABLE_LOCK_GRACE, TABLE_LOCK_WAIT
from versatil_fs.locks.stores import hide_password
from versatil_fs.locks.table import Grant, Record, Table, check_fence, decode_table

# What callers import from here (the store's helpers live in pg_connect, pg_schema and
# pg_liveness; these names are re-exported so that `from ...pg_store import X` keeps working).
__all__ = [
    "KEEPALIVES",
    "NAMESPACE",
    "PG_SCHEMA_VERSION",
    "PgDoorbell",
    "PgStore",
    "channel_of",
    "connect",
    "ensure_schema",
    "holder_key",
]

# How long a transaction without a wait budget of its own waits for an unreachable server.
UNREACHABLE_WAIT = 1.0

_encoder = msgspec.json.Encoder()


class PgStore:
    """The lock table of ``project`` on the server at ``url`` (see the module docstring).

    ``local_space`` is this clone's lock-space key (what ``Resource.repo`` holds for its paths);
    None outside a repository (no path resource is translated then).
    """

    def __init__(
        self,
        url: str,
        project: str,
        *,
        local_space: str | None = None,
        restart_grace: float = 10.0,
    ) -> None:
        self.url = url
        self.safe_url = hide_password(url)
        self.project = project
        self.channel = channel_of(project)
        self.restart_grace = restart_grace
        self.on_damage: list[str] = []
        self._mutex = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._schema_ready = False
        self._on_commit: list[Callable[[], None]] = []
        self._live_keys: set[int] | None = None
        self._uptime = 0.0
        self._row_fence = 0
        self._reach_until = 0.0
        self._grace_holders: set[str] = set()
        self._new_start: float | None = None
        self._liveness: Liveness | None = None
        self._bells: list[PgDoorbell] = []
        # The translation of this clone's path resources (see the module docstring): the JSON
        # spelling of the key on each side, replaced in the encoded document. `"repo":` only
        # ever appears as a Resource's field name (inside strings quotes are escaped).
        shared = msgspec.json.encode(f"project:{project}")
        self._shared_key = shared
        self._load_pattern: re.Pattern[bytes] | None = None
        self._save_from = self._save_to = self._load_to = b""
        if local_space is not None:
            local = msgspec.json.encode(local_space)
            self._load_pattern = re.compile(rb'"repo":\s*' + re.escape(shared))
            self._load_to = b'"repo":' + local
            self._save_from, self._save_to = b'"repo":' + local, b'"repo":' + shared

    # Connections ------------------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if usable(conn):
            assert conn is not None
            return conn
        self._drop_connection()
        conn = connect(self.url, purpose="versatil")
        try:
            if not self._schema_ready:
                ensure_schema(conn, self.safe_url)
                self._schema_ready = True
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _drop_connection(self) -> None:
        if self._conn is not None and disowned(self._conn):
            self._conn = None  # a parent's: silenced in this child, never closed here
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def init_schema(self) -> int:
        """Create or migrate the schema now (``versatil store init``); the version found."""
        with self._mutex:
            conn = connect(self.url, purpose="versatil store init")
            try:
                found = ensure_schema(conn, self.safe_url)
            except psycopg.Error as exc:
                raise unavailable(self.safe_url, exc) from None
            finally:
                conn.close()
            self._schema_ready = True
            return found

    # Transactions -----------------------------------------------------------------------------
    @contextmanager
    def transaction(self, budget: float | None = None) -> Iterator[Table]:
        wait = TABLE_LOCK_WAIT if budget is None else max(budget, TABLE_LOCK_GRACE)
        until = clock.CLOCK.monotonic() + wait
        if not self._mutex.acquire(timeout=min(wait, threading.TIMEOUT_MAX)):
            raise self._busy(wait, "another thread of this process")
        try:
            # A server that cannot be reached is waited for within the caller's budget (a
            # waiter rides out a restart); without a budget of its own (`versatil locks`, a
            # sweep) only briefly: the command says so instead.
            self._reach_until = until if budget is not None else min(
                until, clock.CLOCK.monotonic() + UNREACHABLE_WAIT
            )
            yield from self._locked_transaction(until, wait)
        finally:
            self._mutex.release()

    def _locked_transaction(self, until: float, wait: float) -> Iterator[Table]:
        conn, row = self._begin(until, wait)
        try:
            table = self._decode(conn, row)
            before = _encoder.encode(table)
            yield table
            after = _encoder.encode(table)
            statements: list[sql.Composable] = []
            if after != before:
                statements.append(sql.SQL(
                    "UPDATE versatil_tables SET doc = {doc}::jsonb, fence = GREATEST(fence, {f}),"
                    " updated_at = now() WHERE project = {p}; SELECT pg_notify({c}, '')"
                ).format(
                    doc=sql.Literal(self._to_shared(after).decode()),
                    f=sql.Literal(table.fence), p=sql.Literal(self.project),
                    c=sql.Literal(self.channel),
                ))
            if self._new_start is not None:
                statements.append(sql.SQL(
                    "UPDATE versatil_tables SET server_start = {s}, grace_holders = {g}"
                    " WHERE project = {p}"
                ).format(
                    s=sql.Literal(self._new_start), p=sql.Literal(self.project),
                    g=sql.Literal(sorted(self._grace_holders)),
                ))
            statements.append(sql.SQL("COMMIT"))
            # One round trip: the write, the NOTIFY (sent at commit) and the COMMIT.
            conn.execute(sql.SQL("; ").join(statements))
        except psycopg.Error as exc:
            self._drop_connection()
            self._on_commit = []
            raise unavailable(self.safe_url, exc) from None
        except BaseException:
            self._on_commit = []
            self._rollback(conn)
            raise
        finally:
            self._live_keys = None
        hooks, self._on_commit = self._on_commit, []
        for hook in hooks:
            hook()

    def _begin(self, until: float, wait: float) -> tuple[psycopg.Connection[Any], tuple[Any, ...]]:
        """BEGIN and the project's row locked; retried while the server cannot be reached,
        until ``until`` (then :class:`StoreUnavailable`)."""
        while True:
            try:
                conn = self._connection()
                left_ms = max(1, int((until - clock.CLOCK.monotonic()) * 1000))
                conn.execute(sql.SQL("BEGIN; SET LOCAL lock_timeout = {}").format(left_ms))
                row = conn.execute(_SELECT_ROW, (self.project,)).fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO versatil_tables (project) VALUES (%s) "
                        "ON CONFLICT (project) DO NOTHING", (self.project,),
                    )
                    row = conn.execute(_SELECT_ROW, (self.project,)).fetchone()
                assert row is not None  # inserted above, in this transaction or another
                return conn, row
            except psycopg.errors.LockNotAvailable:
                self._rollback(conn)
                raise self._busy(wait, "another versatil process") from None
            except (psycopg.OperationalError, StoreUnavailable) as exc:
                self._drop_connection()
                left = min(until, self._reach_until) - clock.CLOCK.monotonic()
                if left <= 0:
                    if isinstance(exc, StoreUnavailable):
                        raise
                    raise unavailable(self.safe_url, exc) from None
                # The server is down or restarting: try again shortly, within the budget.
                threading.Event().wait(min(RECONNECT_EVERY, left))
            except psycopg.Error as exc:
                self._drop_connection()
                raise unavailable(self.safe_url, exc) from None

    def _rollback(self, conn: psycopg.Connection[Any]) -> None:
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            self._drop_connection()

    def _busy(self, wait: float, who: str) -> LockConflict:
        return LockConflict(
            f"The lock table is busy: {who} has held project {self.project!r}'s row at "
            f"{self.safe_url} for more than {wait:.1f} s (a versatil command stopped or "
            "stuck?); nothing was changed, try again once it is gone."
        )

    def _decode(self, conn: psycopg.Connection[Any], row: tuple[Any, ...]) -> Table:
        raw, fence, uptime, seen_start, grace, started = row
        self._row_fence = int(fence)
        self._uptime = float(uptime)
        self._grace_holders = set(grace or ())
        self._new_start = None if float(seen_start) == float(started) else float(started)
        data = raw.encode() if isinstance(raw, str) else bytes(raw)
        if self._load_pattern is not None:
            # A function, not a template: a key's JSON may hold backslashes.
            data = self._load_pattern.sub(lambda _match: self._load_to, data)
        try:
            table = decode_table(data)
        except DamagedTable as exc:
            reason = str(exc) or "not a lock table"
            conn.execute(
                "INSERT INTO versatil_damaged (project, doc, reason) VALUES (%s, %s, %s)",
                (self.project, data.decode("utf-8", "replace"), reason),
            )
            self.on_damage.append(reason)
            table = Table()
        # The row's counter is the project's: never go below it (a document set aside).
        table.fence = max(table.fence, self._row_fence)
        if self._new_start is not None:
            # First look since the server (re)started: the process holders the row holds now
            # had their key on the server before; they alone get the grace to take it again.
            self._grace_holders = {
                r.holder for r in [*table.locks, *table.waiters]
                if r.owner == "process" and r.holder
            }
        return table

    def _to_shared(self, document: bytes) -> bytes:
        if not self._save_from:
            return document
        return document.replace(self._save_from, self._save_to)

    def after_commit(self, hook: Callable[[], None]) -> None:
        self._on_commit.append(hook)

    def next_fence(self, table: Table) -> int:
        # The row is locked FOR UPDATE: no other machine can hand out a token until we commit.
        last = max(table.fence, self._row_fence)
        check_fence(last)  # a row's counter set past the bound by hand is refused, not used
        table.fence = last + 1
        return table.fence

    # Liveness ---------------------------------------------------------------------------------
    def is_live(self, holder: Record, now: float) -> bool:
        if holder.owner == "shell" and isinstance(holder, Grant):
            return seconds_left(holder) > 0
        if not holder.holder:
            return False
        if self._live_keys is None:
            self._live_keys = self._held_keys()
        if holder_key(holder.holder) in self._live_keys:
            return True
        # Just after a server restart the holders from before it are still reconnecting: until
        # the grace ends none of them is judged dead. A holder that took its key on this
        # server run (not in the grace set) and no longer holds it is dead at once.
        return holder.holder in self._grace_holders and self._uptime < self.restart_grace

    def _held_keys(self) -> set[int]:
        assert self._conn is not None  # called inside a transaction
        rows = self._conn.execute(_HELD_KEYS, (NAMESPACE,)).fetchall()
        return {int(r[0]) for r in rows}

    def holder_id(self) -> str:
        with self._mutex:
            if self._liveness is None or not self._liveness.usable or (
                self._liveness.pid != os.getpid()
            ):
                self._liveness = Liveness.start(self.url, self.safe_url)
            return self._liveness.holder_id

    def holder_file(self, holder_id: str) -> str:
        return ""  # no file: the proof of life is the advisory lock

    def holder_files(self, holders: Iterable[Record]) -> list[str]:
        """The holder ids to watch (the doorbell waits on the first one's key)."""
        return [h.holder for h in holders if h.holder and h.owner == "process"]

    def inheritable_fd(self) -> int | None:
        with self._mutex:
            return self._liveness.share() if self._liveness is not None else None

    def hand_over(self) -> None:
        """Leave this process's liveness session to the processes that inherited its socket."""
        with self._mutex:
            if self._liveness is not None:
                self._liveness.detach()
                self._liveness = None

    # What the local store keeps for its table rebuilds: nothing to keep here ----------------
    def publish(self, records: Iterable[Record]) -> None:
        pass

    def record_shell_lease(self, grant: Grant) -> None:
        pass

    def confirm_shell_lease(self, grant: Grant) -> None:
        pass

    def forget(self, holder: Record) -> None:
        pass

    def amend(self, grant: Grant) -> None:
        pass

    def sweep(self) -> int:
        return 0

    def doorbell(self) -> PgDoorbell:
        return PgDoorbell(self.url, self.channel)

    def close(self) -> None:
        with self._mutex:
            if self._liveness is not None:
                self._liveness.close()
                self._liveness = None
            self._drop_connection()


_SELECT_ROW = (
    "SELECT doc::text, fence, extract(epoch FROM now() - pg_postmaster_start_time())::float8,"
    " server_start, grace_holders, extract(epoch FROM pg_postmaster_start_time())::float8"
    " FROM versatil_tables WHERE project = %s FOR UPDATE"
)
_HELD_KEYS = (
    "SELECT objid::int8 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s"
    " AND objsubid = 2 AND mode = 'ExclusiveLock' AND granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
