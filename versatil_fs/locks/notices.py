"""What the lock manager tells: the refusal a blocked request gets, and a transaction's log lines.

:func:`conflict` builds the :class:`~versatil_fs.errors.LockConflict` (holders, resource, since,
until as attributes; the sentence for a person); :func:`emit_logged` writes what a table
transaction did to the ``locks`` event stream, saying "the change stands" instead of raising
when the log cannot be written. No decision is made here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from versatil_fs import events
from versatil_fs.errors import Blocker, LockConflict
from versatil_fs.locks import clock
from versatil_fs.locks.store import LockStore, expires_wall
from versatil_fs.locks.table import Grant, Record, Waiter
from versatil_fs.state import StateDir

__all__ = ["Logged", "agents", "conflict", "describe", "emit_logged"]

# Events to log once the table lock is released: (kind, holder, extra fields).
Logged = list[tuple[str, Record, dict[str, Any]]]


def conflict(request: Waiter, found: Sequence[Record], now: float) -> LockConflict:
    """The refusal for ``request``, blocked by ``found`` (its first member named): who holds
    or queues for what, since when, until when, and how long we waited."""
    blocker = found[0]
    claim = next(
        c for c in blocker.claims if any(c.conflicts(mine) for mine in request.claims)
    )
    waited = max(now - request.since, 0.0)
    expires = expires_wall(blocker)
    if isinstance(blocker, Grant):
        if expires is not None:
            until = f"until {clock.hms(expires)}"
        else:
            until = f"while its process {blocker.pid} lives"
        held = (
            f"{claim.resource} is {claim.mode}-locked by {blocker.agent} "
            f"(since {clock.hms(blocker.acquired_at)}, {until})"
        )
    else:
        held = (
            f"{claim.resource} is queued for by {blocker.agent} ahead of you "
            f"(priority {blocker.priority}, waiting since {clock.hms(blocker.since)})"
        )
    after = f"gave up after {waited:.1f} s" if waited >= 0.05 else "not waiting (--wait 0)"
    return LockConflict(
        f"{held}; {after}. Wait longer with --wait, or ask {blocker.agent} to release.",
        holders=[Blocker(h.agent, h.id, queued=isinstance(h, Waiter)) for h in found],
        resource=str(claim.resource),
        since=blocker.acquired_at if isinstance(blocker, Grant) else blocker.since,
        until=expires,
    )


def emit_logged(logged: Logged, store: LockStore, state: StateDir) -> None:
    """Log what a transaction did, and empty ``logged``.

    Registered with ``after_commit``, so a transaction that commits logs while it still
    holds the table lock: the log's order is then the table's order (a holder's release
    always comes before its waiter's grant). A transaction that raised logs afterwards.
    """
    damaged = list(store.on_damage)
    store.on_damage.clear()
    pending = list(logged)
    logged.clear()
    # The table transaction has committed: the grant or release stands whatever becomes of
    # its log line. Raising told the caller "nothing was changed" about a lock it now held
    # (a full disk left shell leases nobody knew they had), so emit_done says what happened
    # instead, once: after the first line that could not be written the rest are dropped.
    done = "the locks were changed as asked"
    for reason in damaged:
        if events.emit_done("locks", "table-damaged", state=state, done=done,
                            reason=reason) is None:
            return
    for kind, holder, data in pending:
        fields: dict[str, Any] = {
            "lease": holder.id,
            "resources": [f"{c.resource} ({c.mode})" for c in holder.claims],
            "holder_pid": holder.pid,
        }
        # Structured, for the monitor: a write it sees after the lock is gone is
        # still attributed by the grant and release times logged here.
        writes = [
            c.resource for c in holder.claims if c.mode == "write" and c.resource.is_path
        ]
        if writes:
            fields["write_paths"] = [r.path for r in writes]
        fields.update(data)
        if events.emit_done(
            "locks", kind, agent=holder.agent, state=state, done=done,
            repo=writes[0].repo if writes else None, **fields,
        ) is None:
            return


def describe(request: Waiter) -> str:
    """The resources ``request`` asks for, for a message."""
    return ", ".join(str(c.resource) for c in request.claims)


def agents(found: Sequence[Record]) -> list[str]:
    """Who holds or queues for ``found``, sorted, each once."""
    return sorted({h.agent for h in found})
