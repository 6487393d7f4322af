"""Connections to the PostgreSQL lock store: made, kept safe across fork(), failures in a sentence.

- **Keepalives.** Each connection sets libpq's ``keepalives=1``, ``keepalives_idle=10``,
  ``keepalives_interval=5``, ``keepalives_count=3``, ``tcp_user_timeout=30000`` (ms) and the
  server's ``tcp_keepalives_*``/``tcp_user_timeout`` for its session, so both ends drop a dead
  peer within about 30 s (10 + 3 x 5 s of silence; 30 s of unacknowledged data). A URL that sets
  any of them wins.
- **Forks.** A fork()ed child shares its parent's sockets: closing one the normal way would send
  the server a Terminate on the parent's session (and end its liveness). So every connection
  opened here is remembered; in a child they are :func:`disowned` (never used, never closed)
  and silenced at its exit (their descriptors pointed at /dev/null first).
- **Failures.** A server that cannot be reached or used is :class:`StoreUnavailable`: one
  sentence naming the URL with the password hidden (exit 2).
- **Keys.** Every advisory lock versatil takes is ``(NAMESPACE, key)``; a holder's key is
  :func:`holder_key` of its id; a project's NOTIFY channel is :func:`channel_of` its name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import weakref
from typing import Any

import psycopg
from psycopg.pq import ConnStatus

from versatil_fs.errors import StoreUnavailable, UsageError
from versatil_fs.locks.stores import hide_password

__all__ = [
    "KEEPALIVES",
    "NAMESPACE",
    "RECONNECT_EVERY",
    "channel_of",
    "connect",
    "disowned",
    "holder_key",
    "reason_of",
    "silence",
    "unavailable",
    "usable",
]

# The first half of every advisory lock key versatil takes (two-int form, `objsubid = 2` in
# pg_locks), so its keys never meet another application's bigint keys. "Vers" in ASCII.
NAMESPACE = 0x56657273

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
# While the server is down: how often a liveness connection tries to come back (and a
# transaction or a doorbell looks again).
RECONNECT_EVERY = 0.2

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
            silence(conn)


def silence(conn: psycopg.Connection[Any]) -> None:
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


def usable(conn: psycopg.Connection[Any] | None) -> bool:
    """True if ``conn`` is open, healthy and this process's to use (not :func:`disowned`)."""
    return (
        conn is not None and conn not in _FORKED and not conn.closed
        and conn.pgconn.status == ConnStatus.OK
    )


def disowned(conn: psycopg.Connection[Any]) -> bool:
    """True for a connection this process must neither use nor close: a parent's in a forked
    child, or one passed to :func:`silence` (its session is whoever else holds the socket's)."""
    return conn in _FORKED


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
        raise UsageError(f"store.url {safe!r} is not a libpq URL ({reason_of(exc)}).") from None
    for key, value in KEEPALIVES.items():
        params.setdefault(key, value)
    # The user's own options after ours: with -c, the last setting of a name wins.
    params["options"] = f"{_SERVER_KEEPALIVES} {params.get('options', '')}".strip()
    params.setdefault("application_name", purpose)
    try:
        conninfo = psycopg.conninfo.make_conninfo("", **params)
        conn = psycopg.connect(conninfo, autocommit=True)
    except psycopg.Error as exc:
        raise unavailable(safe, exc) from None
    _open_connections.add(conn)
    return conn


def reason_of(exc: BaseException) -> str:
    """The first line of a psycopg error, for the parentheses of a one-sentence message."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    # libpq's "connection to server at ... failed: " repeats what the sentence says already.
    first = re.sub(r'^connection to server (?:at|on) .*? failed: ', "", first)
    return first.rstrip(".")


def unavailable(safe_url: str, exc: BaseException) -> StoreUnavailable:
    """The error of a server that cannot be reached or used, ``safe_url`` naming it."""
    return StoreUnavailable(
        f"The lock store at {safe_url} cannot be reached or used ({reason_of(exc)}); nothing "
        "was changed, try again once the server is back.",
        url=safe_url,
    )

