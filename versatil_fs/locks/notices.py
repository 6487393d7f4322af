"""What the lock manager tells: the refusal a blocked request gets, and a transaction's log lines.

:func:`conflict` builds the :class:`~versatil_fs.errors.LockConflict` (holders, resource, since,
until as attributes; the sentence for a person); :func:`emit_logged` writes what a table
transaction did to the ``locks`` event stream, saying "the change stands" instead of raising
when the log cannot be written. No decision is made here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from versatil_fs import events
from versatil_fs.errors import Blocker, LockConflict
from versatil_fs.locks import clock
from versatil_fs.locks.store import LockStore, expires_wall
from versatil_fs.locks.table import Claim, Grant, Record, Waiter
from versatil_fs.state import StateDir

__all__ = ["Logged", "Waiting", "agents", "conflict", "describe", "emit_logged", "waiting"]

# Events to log once the table lock is released: (kind, holder, extra fields).
Logged = list[tuple[str, Record, dict[str, Any]]]


@dataclass(frozen=True)
class Waiting:
    """What a request that starts to wait is waiting for, told once to the ``on_wait`` callback
    of :meth:`~versatil_fs.locks.manager.LockManager.acquire`: ``holders`` (first the one
    named), the contested ``resource``, ``since`` (wall-clock seconds: when that holder got it,
    or started waiting), ``until`` (when a shell lease expires; None while its process lives)
    and ``budget`` (the seconds this request will wait at most)."""

    holders: tuple[Blocker, ...]
    resource: str
    since: float
    until: float | None
    budget: float
    held: str  # the sentence's first half: "src/a.py is write-locked by Dana (since ...)"

    @property
    def agent(self) -> str:
        return self.holders[0].agent

    def sentence(self) -> str:
        """``waiting up to 15 s: src/a.py is write-locked by Dana (since 13:02:11, ...)``."""
        return f"waiting up to {self.budget:g} s: {self.held} (see `versatil locks`)"


def _blocked(request: Waiter, found: Sequence[Record]) -> tuple[Record, Claim, str]:
    """The blocker a message names (the first of ``found``), the claim of its in the way, and
    the sentence saying who holds or queues for what, since when, until when.

    When a glob is on either side the sentence starts with a witness, a path both cover
    ("`src/*.ts` (James) and `src/a*` (Marcus) both cover src/a.ts"): two patterns can
    overlap in ways nobody sees at a glance. Two plain paths keep the shorter sentence."""
    blocker = found[0]
    claim, mine = next(
        (c, m) for c in blocker.claims for m in request.claims if c.conflicts(m)
    )
    expires = expires_wall(blocker)
    if isinstance(blocker, Grant):
        if expires is not None:
            until = f"until {clock.hms(expires)}"
        else:
            until = f"while its process {blocker.pid} lives"
        what = f"{claim.mode}-locked by {blocker.agent}"
        when = f"since {clock.hms(blocker.acquired_at)}, {until}"
    else:
        what = f"queued for by {blocker.agent} ahead of you"
        when = f"priority {blocker.priority}, waiting since {clock.hms(blocker.since)}"
    witness = mine.resource.witness(claim.resource)
    if (claim.resource.glob or mine.resource.glob) and witness is not None:
        from versatil_fs.locks import globs

        both = globs.witness_message(
            globs.describe(str(claim.resource), blocker.agent),
            globs.describe(str(mine.resource), request.agent), witness,
        )
        held = f"{both}: {claim.resource} is {what} ({when})"
    else:
        held = f"{claim.resource} is {what} ({when})"
    return blocker, claim, held


def _since(blocker: Record) -> float:
    return blocker.acquired_at if isinstance(blocker, Grant) else blocker.since


def _holders(found: Sequence[Record]) -> list[Blocker]:
    return [Blocker(h.agent, h.id, queued=isinstance(h, Waiter)) for h in found]


def waiting(request: Waiter, found: Sequence[Record], budget: float) -> Waiting:
    """What ``request``, blocked by ``found``, starts to wait for (up to ``budget`` s)."""
    blocker, claim, held = _blocked(request, found)
    return Waiting(
        holders=tuple(_holders(found)), resource=str(claim.resource), since=_since(blocker),
        until=expires_wall(blocker), budget=budget, held=held,
    )


def conflict(request: Waiter, found: Sequence[Record], now: float) -> LockConflict:
    """The refusal for ``request``, blocked by ``found`` (its first member named): who holds
    or queues for what, since when, until when, and how long we waited.

    Two sentences, one per audience: the Python API's names the parameter ``wait=``, the
    command line's (``cli_message``) the option ``--wait``.
    """
    blocker, claim, held = _blocked(request, found)
    waited = max(now - request.since, 0.0)
    gave_up = f"gave up after {waited:.1f} s" if waited >= 0.05 else ""
    ask = f"or ask {blocker.agent} to release"
    api = f"{gave_up or 'not waiting (wait=0)'}. Pass a longer wait=, {ask}."
    cli = f"{gave_up or 'not waiting (--wait 0)'}. Wait longer with --wait, {ask}."
    return LockConflict(
        f"{held}; {api}",
        holders=_holders(found),
        resource=str(claim.resource),
        since=_since(blocker),
        until=expires_wall(blocker),
        cli_message=f"{held}; {cli}",
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
        # The record's own process, named for what it is: a queued request's process is the
        # waiter, not a holder (a wait event adds the holder's, `holder_pid`, from `data`).
        pid_field = "holder_pid" if isinstance(holder, Grant) else "waiter_pid"
        fields: dict[str, Any] = {
            "lease": holder.id,
            "resources": [f"{c.resource} ({c.mode})" for c in holder.claims],
            pid_field: holder.pid,
        }
        if isinstance(holder, Grant) and holder.fence:
            fields["fence"] = holder.fence
        # Structured, for the monitor: a write it sees after the lock is gone is
        # still attributed by the grant and release times logged here.
        writes = [
            c.resource for c in holder.claims if c.mode == "write" and c.resource.is_path
        ]
        if writes:
            fields["write_paths"] = [r.path for r in writes]
            # Which of them are patterns, so that the monitor matches them as patterns.
            patterns = [r.path for r in writes if r.glob]
            if patterns:
                fields["write_globs"] = patterns
        fields.update(data)
        # The repository of any path claimed (a read lock too), so that `versatil logs locks`
        # inside a repository shows its events; named resources belong to none.
        paths = [c.resource for c in holder.claims if c.resource.is_path]
        if events.emit_done(
            "locks", kind, agent=holder.agent, state=state, done=done,
            repo=paths[0].repo if paths else None, **fields,
        ) is None:
            return


def describe(request: Waiter) -> str:
    """The resources ``request`` asks for, for a message."""
    return ", ".join(str(c.resource) for c in request.claims)


def agents(found: Sequence[Record]) -> list[str]:
    """Who holds or queues for ``found``, sorted, each once."""
    return sorted({h.agent for h in found})
