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
  session-level ``pg_advisory_lock(NAMESPACE, key(holder id))`` for as long as it lives; a
  process record is live while someone holds that key exclusively (one ``pg_locks`` query per
  transaction). The server drops the lock the moment the connection ends: a ``kill -9`` frees
  it at once, a host that dies silently once TCP keepalives give up (below). Shell leases end
  by their TTL as on one machine.
- **Children.** :meth:`PgStore.inheritable_fd` is the liveness connection's socket: a child of
  ``versatil run`` that inherits it keeps the session (so the leases) alive after the wrapper
  dies, as the inherited flock does locally. :meth:`PgStore.hand_over` drops the wrapper's own
  reference without a Terminate message. Gap: a handed-over session that a server restart ends
  is not re-established (no process of ours speaks on it); those leases end with the restart.
- **Keepalives.** Each connection sets libpq's ``keepalives=1``, ``keepalives_idle=10``,
  ``keepalives_interval=5``, ``keepalives_count=3``, ``tcp_user_timeout=30000`` (ms) and the
  server's ``tcp_keepalives_*``/``tcp_user_timeout`` for its session, so both ends drop a dead
  peer within about 30 s (10 + 3 x 5 s of silence; 30 s of unacknowledged data). A URL that sets
  any of them wins.
- **Hand-off.** A waiter's :class:`PgDoorbell` ``LISTEN`` s on the project's channel and sleeps
  in ``select`` on the connections' sockets: no polling. A holder killed by ``kill -9`` sends no
  NOTIFY, so the doorbell also waits, on a second connection, in
  ``pg_advisory_lock_shared(NAMESPACE, key(first blocker))``: it returns when that blocker's
  session ends (then it is unlocked at once; shared, so it never looks like a live holder).
- **Fencing.** ``versatil_tables.fence`` is the project's counter, bumped in the row's
  transaction: strictly increasing across machines, and kept when a damaged document is set
  aside.
- **Server restarts.** The row survives (WAL). Each process's liveness connection is watched by
  a thread; when it drops, the thread reconnects (retrying every 0.2 s while the server is down:
  the only poll, and only then) and takes its key again. For ``[store] restart_grace`` seconds
  (10 by default) after ``pg_postmaster_start_time()`` a process record whose key nobody holds
  still counts as live, so live holders keep their grants; after it, a holder that has not come
  back is dead and its grants are reclaimed (the ``reclaim`` event says so, as for any dead
  holder). While the server is unreachable a transaction retries until its budget, then raises
  :class:`StoreUnavailable`: one sentence naming the URL with the password hidden (exit 2).
  A COMMIT whose answer is lost is reported the same way; a grant it may have made belongs to
  this process and ends with it.
- **Schema.** Made on first use (or by ``versatil store init``), versioned in
  ``versatil_schema``, migrated forward under an advisory transaction lock; every table is
  ``versatil_``-prefixed and created unqualified, i.e. in the role's own schema first on the
  ``search_path`` (``"$user"``): no right on ``public`` is needed.
- **Not kept.** The local store's holder-file records (its table rebuild) have no use here: the
  row is durable. A document that no longer decodes is copied to ``versatil_damaged`` and
  restarted empty, its fencing counter kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import select
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import psycopg
from psycopg import sql
from psycopg.pq import ConnStatus, ExecStatus

from versatil_fs.errors import LockConflict, StoreUnavailable, UsageError
from versatil_fs.locks import clock
from versatil_fs.locks.clock import seconds_left
from versatil_fs.locks.leases import Doorbell
from versatil_fs.locks.store import TABLE_LOCK_GRACE, TABLE_LOCK_WAIT
from versatil_fs.locks.stores import hide_password
from versatil_fs.locks.table import SCHEMA_VERSION, Grant, Record, Table, check_records, new_id

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

# The first half of every advisory lock key versatil takes (two-int form, `objsubid = 2` in
# pg_locks), so its keys never meet another application's bigint keys. "Vers" in ASCII.
NAMESPACE = 0x56657273

# Schema versions and the statements that take the previous one to each (never edited once
# released: a new version is a new entry).
PG_SCHEMA_VERSION = 1
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE versatil_tables ("
        " project text PRIMARY KEY,"
        " doc jsonb NOT NULL DEFAULT '{}'::jsonb,"
        " fence bigint NOT NULL DEFAULT 0,"
        # The server start (epoch seconds) the row was last written under, and the process
        # holders its document held when a transaction first saw a newer start: the only
        # records the restart grace covers.
        " server_start float8 NOT NULL DEFAULT 0,"
        " grace_holders text[] NOT NULL DEFAULT '{}',"
        " updated_at timestamptz NOT NULL DEFAULT now())",
        "CREATE TABLE versatil_damaged ("
        " id bigserial PRIMARY KEY,"
        " project text NOT NULL,"
        " doc text NOT NULL,"
        " reason text NOT NULL,"
        " set_aside_at timestamptz NOT NULL DEFAULT now())",
    ),
}

# libpq's and the server's keepalive settings (see the module docstring); a URL's own win.
KEEPALIVES: dict[str, str] = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
    "connect_timeout": "5",
}
_SERVER_KEEPALIVES = (
    "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3 "
    "-c tcp_user_timeout=30000"
)
# While the server is down: how often a liveness connection tries to come back.
RECONNECT_EVERY = 0.2
# How often a waiter looks again while its blocker is in the restart grace (see PgDoorbell).
GRACE_POLL = 0.25
# How long a transaction without a wait budget of its own waits for an unreachable server.
UNREACHABLE_WAIT = 1.0

_encoder = msgspec.json.Encoder()
_table_decoder = msgspec.json.Decoder(Table)


# Every connection this process opened, so that a fork()ed child (which shares their sockets)
# can let go of them without a word: a child that closed one the normal way would send the
# server a Terminate on its parent's session, and end the parent's liveness with it.
_open_connections: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
# In a forked child, the parent's connections: never used, never closed, kept from collection
# (collecting one closes it), and silenced at exit. Not at the fork itself: a child that goes
# on to exec (subprocess with preexec_fn runs the fork hooks too) must pass the parent's
# liveness socket on intact, as `versatil run` does.
_FORKED: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
_KEPT: list[psycopg.Connection[Any]] = []


def _forget_in_child() -> None:
    inherited = list(_open_connections)
    _open_connections.clear()
    for conn in inherited:
        _FORKED.add(conn)
    if not _KEPT:
        import atexit

        atexit.register(_silence_kept)
    _KEPT.extend(inherited)


def _silence_kept() -> None:
    for conn in _KEPT:
        with contextlib.suppress(OSError, psycopg.Error):
            _silence(conn)


def _silence(conn: psycopg.Connection[Any]) -> None:
    """Point ``conn``'s socket descriptor at /dev/null, so that whatever closing it sends
    reaches no one; the session lives on in whoever else holds the socket."""
    fd = conn.pgconn.socket
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)
    _FORKED.add(conn)


os.register_at_fork(after_in_child=_forget_in_child)


def _usable(conn: psycopg.Connection[Any] | None) -> bool:
    return (
        conn is not None and conn not in _FORKED and not conn.closed
        and conn.pgconn.status == ConnStatus.OK
    )


def holder_key(holder_id: str) -> int:
    """The advisory lock key (second half) of a holder id: 31 bits of its hash, never 0 (the
    schema migration's key)."""
    digest = hashlib.blake2b(holder_id.encode(), digest_size=4).digest()
    return (int.from_bytes(digest, "big") & 0x7FFFFFFF) or 1


def channel_of(project: str) -> str:
    """The project's NOTIFY channel: ``versatil_`` and a hash (any name, within 63 bytes)."""
    return "versatil_" + hashlib.blake2b(project.encode(), digest_size=12).hexdigest()


def connect(url: str, *, purpose: str = "versatil") -> psycopg.Connection[Any]:
    """An autocommit connection with versatil's keepalives (where the URL sets none)."""
    safe = hide_password(url)
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise UsageError(f"store.url {safe!r} is not a libpq URL ({_reason(exc)}).") from None
    for key, value in KEEPALIVES.items():
        params.setdefault(key, value)
    # The user's own options after ours: with -c, the last setting of a name wins.
    params["options"] = f"{_SERVER_KEEPALIVES} {params.get('options', '')}".strip()
    params.setdefault("application_name", purpose)
    try:
        conninfo = psycopg.conninfo.make_conninfo("", **params)
        conn = psycopg.connect(conninfo, autocommit=True)
    except psycopg.Error as exc:
        raise _unavailable(safe, exc) from None
    _open_connections.add(conn)
    return conn


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    # libpq's "connection to server at ... failed: " repeats what the sentence says already.
    first = re.sub(r'^connection to server (?:at|on) .*? failed: ', "", first)
    return first.rstrip(".")


def _unavailable(safe_url: str, exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(
        f"The lock store at {safe_url} cannot be reached or used ({_reason(exc)}); nothing "
        "was changed, try again once the server is back.",
        url=safe_url,
    )


def ensure_schema(conn: psycopg.Connection[Any], safe_url: str = "") -> int:
    """Create or migrate versatil's tables; returns the version found before (0: none).

    One quick read when the schema is current; otherwise the migration runs under an advisory
    transaction lock, so two processes starting together do not both create the tables."""
    try:
        row = conn.execute("SELECT max(version) FROM versatil_schema").fetchone()
        if row is not None and row[0] == PG_SCHEMA_VERSION:
            return PG_SCHEMA_VERSION
    except psycopg.errors.UndefinedTable:
        pass
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (NAMESPACE,))
            conn.execute("CREATE TABLE IF NOT EXISTS versatil_schema (version integer NOT NULL)")
            row = conn.execute("SELECT max(version) FROM versatil_schema").fetchone()
            found = int(row[0]) if row is not None and row[0] is not None else 0
            if found > PG_SCHEMA_VERSION:
                raise UsageError(
                    f"The lock store at {safe_url} has versatil schema version {found}, newer "
                    f"than this versatil's {PG_SCHEMA_VERSION}: upgrade versatil on this machine."
                )
            for version in range(found + 1, PG_SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute("DELETE FROM versatil_schema")
                conn.execute("INSERT INTO versatil_schema (version) VALUES (%s)", (version,))
            return found
    except psycopg.errors.InsufficientPrivilege as exc:
        schema = conn.execute("SELECT current_schema()").fetchone()
        where = f"schema {schema[0]}" if schema and schema[0] else "any schema on the search_path"
        raise UsageError(
            f"The lock store at {safe_url} cannot create versatil's tables in {where} "
            f"({_reason(exc)}): give the role a schema of its own (CREATE SCHEMA name "
            "AUTHORIZATION role, with the role's name) or run `versatil store init` as one "
            "that may."
        ) from None


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
        self._liveness: _Liveness | None = None
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
        if _usable(conn):
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
        if self._conn is not None and self._conn in _FORKED:
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
                raise _unavailable(self.safe_url, exc) from None
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
            raise _unavailable(self.safe_url, exc) from None
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
                    raise _unavailable(self.safe_url, exc) from None
                # The server is down or restarting: try again shortly, within the budget.
                threading.Event().wait(min(RECONNECT_EVERY, left))
            except psycopg.Error as exc:
                self._drop_connection()
                raise _unavailable(self.safe_url, exc) from None

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
            table = _table_decoder.decode(data)
            if table.version != SCHEMA_VERSION:
                raise ValueError(f"schema version {table.version}, expected {SCHEMA_VERSION}")
            problem = check_records(table.locks) or check_records(table.waiters, "waiters")
            if problem:
                raise ValueError(problem)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
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
        table.fence = max(table.fence, self._row_fence) + 1
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
                self._liveness = _Liveness.start(self.url, self.safe_url)
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


class _Liveness:
    """This process's proof of life: a connection holding its key, kept up by a thread.

    The thread sleeps in ``select`` on the socket; anything readable there is the server going
    away (a shutdown notice, EOF); it reconnects and takes the key again (see the restart rule
    in the module docstring)."""

    def __init__(self, url: str, safe_url: str, holder_id: str) -> None:
        self.url, self.safe_url, self.holder_id = url, safe_url, holder_id
        self.key = holder_key(holder_id)
        self.conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._stop_read, self._stop_write = os.pipe()
        self._stopped = False
        self.pid = os.getpid()  # a forked child's copy is its parent's proof, not its own
        self._pipe_closed = False
        self.usable = True
        self.shared = False

    @classmethod
    def start(cls, url: str, safe_url: str) -> _Liveness:
        live = cls(url, safe_url, new_id())
        live.conn = live._take()
        threading.Thread(target=live._keep, daemon=True, name="versatil-pg-liveness").start()
        return live

    def _take(self) -> psycopg.Connection[Any]:
        conn = connect(self.url, purpose="versatil liveness")
        try:
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (NAMESPACE, self.key)
            ).fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise _unavailable(self.safe_url, exc) from None
        if not row or not row[0]:
            # Only our own earlier session can hold our key (ids are unique): still ending.
            conn.close()
            raise StoreUnavailable(
                f"The lock store at {self.safe_url} still holds this process's liveness key "
                "from a session that has not ended yet; try again.", url=self.safe_url,
            )
        return conn

    def fileno(self) -> int | None:
        with self._lock:
            return self.conn.fileno() if self.conn is not None else None

    def share(self) -> int | None:
        """The socket, for processes this one starts to inherit: from now on closing never
        ends the session (no unlock, no Terminate), since they may still hold it."""
        with self._lock:
            self.shared = True
            return self.conn.fileno() if self.conn is not None else None

    def _keep(self) -> None:
        try:
            self._keep_up()
        finally:
            with self._lock:  # under the lock: _stop never writes to a closed descriptor
                os.close(self._stop_read)
                os.close(self._stop_write)
                self._pipe_closed = True

    def _keep_up(self) -> None:
        while True:
            with self._lock:
                conn = self.conn
                if self._stopped or conn is None:
                    return
                fd = conn.fileno()
            try:
                ready, _, _ = select.select([fd, self._stop_read], [], [])
            except (OSError, ValueError):
                ready = [fd]
            if self._stop_read in ready:
                return
            try:
                conn.pgconn.consume_input()
                if conn.pgconn.status == ConnStatus.OK:
                    while conn.pgconn.notifies() is not None:
                        pass
                    continue
            except psycopg.Error:
                pass
            self._reconnect()

    def _reconnect(self) -> None:
        while True:
            with self._lock:
                if self._stopped:
                    return
            try:
                fresh = self._take()
            except (StoreUnavailable, UsageError):
                if _wait_readable(self._stop_read, RECONNECT_EVERY):
                    return
                continue
            with self._lock:
                old, self.conn = self.conn, fresh
                if self._stopped:
                    fresh.close()
                    self.conn = None
            if old is not None:
                with contextlib.suppress(Exception):
                    old.close()
            return

    def _stop(self) -> psycopg.Connection[Any] | None:
        with self._lock:
            self._stopped = True
            self.usable = False
            conn, self.conn = self.conn, None
            if not self._pipe_closed:
                with contextlib.suppress(OSError):
                    os.write(self._stop_write, b"x")
        return conn

    def close(self) -> None:
        if self.pid != os.getpid():
            return  # the parent's session, silenced at the fork: nothing of ours to end
        if self.shared:
            self.detach()
            return
        conn = self._stop()
        if conn is not None:
            with contextlib.suppress(Exception):
                # The key let go and the answer awaited (at most a second: a server that has
                # gone silent must not hold up an exit): a process that exits normally is dead
                # to the next look at once, as the kernel makes a flock's holder. A Terminate
                # alone is handled by the server after we are gone.
                conn.pgconn.send_query(b"SELECT pg_advisory_unlock_all()")
                if _wait_readable(conn.fileno(), 1.0):
                    while conn.pgconn.get_result() is not None:
                        pass
            with contextlib.suppress(Exception):
                conn.close()

    def detach(self) -> None:
        """Drop this process's hold on the session without ending it: the socket's descriptor
        is pointed at /dev/null first, so the Terminate that closing sends reaches no one and
        the session lives for as long as a process that inherited the socket does."""
        conn = self._stop()
        if conn is not None:
            _silence(conn)
            with contextlib.suppress(Exception):
                conn.close()


def _wait_readable(fd: int, timeout: float) -> bool:
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready)


class PgDoorbell(Doorbell):
    """Wakes a blocked request on a NOTIFY of its project's channel or its first blocker's death.

    Two connections of its own: one ``LISTEN`` s (notifications only reach an idle session),
    one waits in ``pg_advisory_lock_shared`` on the watched blocker's key. A pending watch is
    kept from one wait to the next while it is the same blocker, and cancelled only when another
    blocker is to be watched, so a hand-off never waits for a cancel. While the server cannot be
    reached the doorbell wakes every ``RECONNECT_EVERY`` seconds (the request then retries its
    transaction until its budget).
    """

    # A Doorbell by type (the manager keeps one per thread), none of its inotify or pipe.
    def __init__(self, url: str, channel: str) -> None:  # no super().__init__: none of it
        self._url = url
        self._channel = channel
        self._listen: psycopg.Connection[Any] | None = None
        self._watch: psycopg.Connection[Any] | None = None
        self._watched: int | None = None  # key of the pending pg_advisory_lock_shared
        self._free: int | None = None  # the key the last watch found free
        self._polling = False  # see watch(): a blocker in its restart grace
        self._connect_listen()

    def _connect_listen(self) -> None:
        try:
            conn = connect(self._url, purpose="versatil doorbell")
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except (StoreUnavailable, psycopg.Error):
            self._listen = None
            return
        self._listen = conn

    def watch(self, holder_files: Iterable[str]) -> None:
        ids = [h for h in holder_files if h]
        if not ids:
            return
        key = holder_key(ids[0])
        if self._watched == key:
            return
        if key == self._free:
            # Asked to watch a key that was free at the last look and its holder still counts
            # as live: the restart grace (it has not reconnected yet). Arming the watch again
            # would return at once, over and over; look again every GRACE_POLL instead.
            self._polling = True
            return
        self._free, self._polling = None, False
        self._cancel_watch()
        try:
            if not _usable(self._watch):
                self._close(self._watch)
                self._watch = connect(self._url, purpose="versatil doorbell watch")
            query = b"SELECT pg_advisory_lock_shared(%d, %d)" % (NAMESPACE, key)
            assert self._watch is not None
            self._watch.pgconn.send_query(query)
            self._watched = key
        except (StoreUnavailable, psycopg.Error):
            self._close(self._watch)
            self._watch, self._watched = None, None

    def _cancel_watch(self) -> None:
        if self._watched is None or self._watch is None:
            return
        pgconn = self._watch.pgconn
        try:
            # A cancel that reaches the backend before it has started the query is ignored
            # (it was idle then), so it is sent again until the query ends; after a second,
            # the connection is given up instead (closing it ends the query too).
            for _ in range(20):
                pgconn.get_cancel().cancel()
                ended = _wait_readable(self._watch.fileno(), 0.05)
                if ended and self._finish_watch(block=False) and self._watched is None:
                    return
            raise psycopg.OperationalError("the watch would not end")
        except psycopg.Error:
            self._close(self._watch)
            self._watch, self._watched = None, None

    def _finish_watch(self, *, block: bool) -> bool:
        """Collect the pending watch's result if it is there (all of it if ``block``): True
        once the watched blocker's session has ended (or the connection broke)."""
        assert self._watch is not None
        pgconn = self._watch.pgconn
        if not block:
            pgconn.consume_input()
            if pgconn.is_busy():
                return pgconn.status != ConnStatus.OK
        got_lock = False
        while (result := pgconn.get_result()) is not None:
            got_lock = got_lock or result.status == ExecStatus.TUPLES_OK
        if got_lock:
            self._free = self._watched
        self._watched = None
        if got_lock:
            # Shared and let go at once: a watcher must never look like a live holder.
            self._watch.execute(
                "SELECT pg_advisory_unlock_all()"
            )
        return True

    def drain(self) -> None:
        """Forget rings from before now (a doorbell is reused from one request to the next)."""
        self._read_notifies()
        if self._watched is not None and self._watch is not None:
            try:
                self._finish_watch(block=False)
            except psycopg.Error:
                self._close(self._watch)
                self._watch, self._watched = None, None

    def _read_notifies(self) -> bool:
        """Consume what the listening connection received; True if anything rang."""
        if self._listen is None:
            return False
        try:
            pgconn = self._listen.pgconn
            pgconn.consume_input()
            rang = False
            while pgconn.notifies() is not None:
                rang = True
            if pgconn.status != ConnStatus.OK:
                raise psycopg.OperationalError("the doorbell's connection was lost")
            return rang
        except psycopg.Error:
            self._close(self._listen)
            self._listen = None
            return True

    def wait(self, timeout: float) -> None:
        """Sleep until rung or ``timeout`` seconds pass; drains what rang."""
        if not _usable(self._listen):
            self._close(self._listen)  # lost, or a parent's (silenced in this forked child)
            self._listen = None
            if not _usable(self._watch):
                self._close(self._watch)
                self._watch, self._watched = None, None
        if self._listen is None:
            self._connect_listen()
            if self._listen is None:
                # The server cannot be reached: wake soon, the caller's transaction retries.
                threading.Event().wait(min(max(timeout, 0.0), RECONNECT_EVERY))
                return
            return  # reconnected: what happened meanwhile is unknown, look again
        if self._polling:
            timeout = min(timeout, GRACE_POLL)
        sources = [self._listen.fileno()]
        watching = self._watched is not None and self._watch is not None
        if watching:
            assert self._watch is not None
            sources.append(self._watch.fileno())
        ready, _, _ = select.select(sources, [], [], max(timeout, 0.0))
        if not ready:
            return
        self._read_notifies()
        if watching and self._watch is not None:
            try:
                self._finish_watch(block=False)
            except psycopg.Error:
                self._close(self._watch)
                self._watch, self._watched = None, None

    @staticmethod
    def _close(conn: psycopg.Connection[Any] | None) -> None:
        if conn is not None and conn not in _FORKED:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        self._close(self._watch)
        self._close(self._listen)
        self._watch = self._listen = None
        self._watched = None
