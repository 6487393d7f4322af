"""Liveness on the PostgreSQL lock store: this process's advisory key, and the waiter's doorbell.

- **Liveness.** Every process that holds or waits keeps one connection (:class:`Liveness`)
  holding the session-level ``pg_advisory_lock(NAMESPACE, key(holder id))`` for as long as it
  lives. The server drops the lock the moment the connection ends: a ``kill -9`` frees it at
  once, a host that dies silently once TCP keepalives give up (see
  :mod:`versatil_fs.locks.pg_connect`).
- **Server restarts.** The liveness connection is watched by a thread that sleeps in ``select``
  on its socket; when it drops, the thread reconnects (retrying every ``RECONNECT_EVERY`` = 0.2 s
  while the server is down: the only poll, and only then) and takes its key again.
- **Children.** :meth:`Liveness.share` gives the liveness socket to the children this process
  starts (from then on closing never ends the session); :meth:`Liveness.detach` leaves it to
  them (no Terminate is sent).
- **Hand-off.** A waiter's :class:`PgDoorbell` ``LISTEN`` s on the project's channel and sleeps
  in ``select`` on the connections' sockets: no polling. A holder killed by ``kill -9`` sends no
  NOTIFY, so the doorbell also waits, on a second connection, in
  ``pg_advisory_lock_shared(NAMESPACE, key(first blocker))``: it returns when that blocker's
  session ends (then it is unlocked at once; shared, so it never looks like a live holder).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import ConnStatus, ExecStatus

from versatil_fs.errors import StoreUnavailable, UsageError
from versatil_fs.locks.leases import Doorbell
from versatil_fs.locks.pg_connect import (
    NAMESPACE,
    RECONNECT_EVERY,
    connect,
    disowned,
    holder_key,
    silence,
    unavailable,
    usable,
)
from versatil_fs.locks.table import new_id

__all__ = ["GRACE_POLL", "Liveness", "PgDoorbell"]

# How often a waiter looks again while its blocker is in the restart grace (see PgDoorbell).
GRACE_POLL = 0.25


class Liveness:
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
    def start(cls, url: str, safe_url: str) -> Liveness:
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
            raise unavailable(self.safe_url, exc) from None
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
            silence(conn)
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
            if not usable(self._watch):
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
        if not usable(self._listen):
            self._close(self._listen)  # lost, or a parent's (silenced in this forked child)
            self._listen = None
            if not usable(self._watch):
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
        if conn is not None and not disowned(conn):
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        self._close(self._watch)
        self._close(self._listen)
        self._watch = self._listen = None
        self._watched = None
