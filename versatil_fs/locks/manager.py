"""Acquire, wait, release, renew and reclaim locks: the lock manager users call.

Every decision is made inside one store transaction with the pure rules of
:mod:`versatil_fs.locks.table`; between decisions a blocked request sleeps on a
:class:`~versatil_fs.locks.leases.Doorbell` that the kernel rings when a blocker's process
releases or dies, or when the table changes. So a waiter is granted within a table transaction
of the conflict clearing, and burns no CPU while it waits.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from versatil_fs import faults
from versatil_fs.errors import Deadlock, LockConflict, StoreUnavailable, UsageError
from versatil_fs.locks import clock, index, requests, stores
from versatil_fs.locks.leases import Doorbell
from versatil_fs.locks.notices import (
    Logged,
    Waiting,
    agents,
    conflict,
    describe,
    emit_logged,
    waiting,
)
from versatil_fs.locks.requests import ResourceSpec
from versatil_fs.locks.store import (
    TABLE_LOCK_GRACE,
    LockStore,
    seconds_left,
)
from versatil_fs.locks.table import (
    FOREVER,
    MAX_TIME,
    Claim,
    Grant,
    Mode,
    Owner,
    Record,
    Resource,
    Table,
    Waiter,
    find_cycle,
)
from versatil_fs.repo import Repository, default_agent
from versatil_fs.state import StateDir

if TYPE_CHECKING:
    from versatil_fs.config import Config

__all__ = ["RELEASE_WAIT", "Lease", "LockManager", "Logged", "ResourceSpec", "Waiting"]


class Lease:
    """Locks granted together; release them with :meth:`release` or by leaving ``with``."""

    def __init__(self, manager: LockManager, grant: Grant) -> None:
        self.manager = manager
        self.grant = grant
        self.released = False

    @property
    def id(self) -> str:
        return self.grant.id

    @property
    def agent(self) -> str:
        return self.grant.agent

    @property
    def claims(self) -> list[Claim]:
        return self.grant.claims

    @property
    def fence(self) -> int:
        """The fencing token of this grant: larger than any earlier grant's in the lock space.
        Hand it to whatever the lock guards (``VERSATIL_FENCE``) so a superseded holder can be
        refused."""
        return self.grant.fence

    def release(self) -> None:
        """Release every lock of this lease; releasing twice does nothing."""
        if self.released:
            return
        self.released = True
        self.manager._release(self)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        what = ", ".join(f"{c.resource} ({c.mode})" for c in self.claims)
        return f"<Lease {self.id} {self.agent}: {what}>"


class LockManager:
    """Locks on files, directories and named resources, shared by every process on the machine.

    ``repo`` is where path resources are looked up (any directory inside the working tree); it
    is only needed when a path is locked, so named resources work outside a repository.
    """

    def __init__(
        self,
        repo: str | os.PathLike[str] | Repository | None = ".",
        *,
        state: StateDir | None = None,
        config: Config | None = None,
        store: LockStore | None = None,
    ) -> None:
        self.state = state or StateDir()
        # The store [store] backend names (the local table, or PostgreSQL for several machines).
        self.store: LockStore = store or stores.open_store(self.state, config, repo)
        self._repo_arg = repo
        self._repo: Repository | None = repo if isinstance(repo, Repository) else None
        # Relative paths are read against the directory the manager was given (the current
        # directory by default), as a user standing there would mean them.
        self._base: Path | None = (
            repo.toplevel if isinstance(repo, Repository)
            else Path(repo).absolute() if repo is not None else None
        )
        self._config = config
        self._leases: dict[str, Lease] = {}
        # This process's own grants and waits, published to the store for table rebuilds.
        self._records: dict[str, Record] = {}
        # Let go of the holder file when the manager is collected or the interpreter exits
        # (a kill -9 skips this; the kernel drops the flock and the next sweep the file).
        weakref.finalize(self, self.store.close)
        self._bells = threading.local()  # each closes itself when its thread ends
        self._guard = threading.Lock()

    # Context --------------------------------------------------------------------------------
    @property
    def repo(self) -> Repository:
        if self._repo is None:
            if self._repo_arg is None or isinstance(self._repo_arg, Repository):
                raise UsageError("No repository given; path resources need a git repository.")
            self._repo = Repository.find(self._repo_arg)
        return self._repo

    @property
    def config(self) -> Config:
        if self._config is None:
            from versatil_fs import config

            root = self._repo.toplevel if self._repo else _quiet_toplevel(self._repo_arg)
            self._config = config.load(root, state=self.state)
        return self._config

    def resolve(self, resource: ResourceSpec) -> Resource:
        """The canonical resource for a path (any spelling) or a ``kind:name`` string."""
        # The repository is found only for a path: named resources work outside one.
        return requests.resolve(resource, lambda: self.repo, base=self._base)

    def claims(
        self, writes: Iterable[ResourceSpec] = (), reads: Iterable[ResourceSpec] = ()
    ) -> list[Claim]:
        """Claims for the given resources, deduplicated; a resource both read and written is
        claimed for writing."""
        return requests.claims(writes, reads, self.resolve)

    # Acquire --------------------------------------------------------------------------------
    def acquire(
        self,
        resources: Iterable[ResourceSpec] = (),
        *,
        agent: str | None = None,
        mode: Mode = "write",
        reads: Iterable[ResourceSpec] = (),
        wait: float | None = None,
        ttl: float | None = None,
        priority: int | None = None,
        owner: Owner = "process",
        session: str = "",
        on_wait: Callable[[Waiting], None] | None = None,
    ) -> Lease:
        """Take every resource at once, or none: waits up to ``wait`` seconds in the queue.

        ``resources`` are claimed in ``mode`` and ``reads`` for reading. ``owner="process"``
        (the default) keeps the lease for as long as this process lives and releases it the
        moment it dies; ``owner="shell"`` leaves a lease that outlives the process and ends at
        ``unlock`` or after ``ttl`` seconds. Raises :class:`LockConflict` when the wait runs out
        and :class:`Deadlock` when waiting would close a cycle. ``session`` is stored on the
        record as is, for people to read (the harness hooks put the harness and its session id
        there); it changes nothing in the conflict rules. ``on_wait`` is called once, outside
        the table lock, when the request starts to wait, with a :class:`Waiting` naming whom
        it waits for (the library itself prints nothing; the CLI says it on stderr).
        """
        writes, reads_ = (resources, reads) if mode == "write" else ((), [*resources, *reads])
        request, wait = requests.new_request(
            self.claims(writes, reads_), self.config, self.store,
            agent=agent or default_agent(self._repo), wait=wait, ttl=ttl, priority=priority,
            owner=owner, session=session,
        )
        # The wait is measured on the monotonic clock: the request's `deadline` is only what
        # the table shows people, and a wall clock set back must not stretch the wait (nor
        # forward shorten it).
        grant = self._wait_in_queue(request, clock.CLOCK.monotonic() + wait, wait, on_wait)
        lease = Lease(self, grant)
        if owner == "process":
            self._track(lease)
        else:
            # Only now that the table holds the grant does its rebuild record count: a process
            # killed before this point leaves a pending record that no rebuild trusts.
            self.store.confirm_shell_lease(grant)
        return lease

    def _wait_in_queue(
        self, request: Waiter, until: float, budget: float,
        on_wait: Callable[[Waiting], None] | None,
    ) -> Grant:
        """Look, and while blocked sleep on the doorbell and look again, until granted.

        ``until`` is the deadline on the monotonic clock (``budget`` seconds from now, for
        ``on_wait``); the refusals (:class:`LockConflict`, :class:`Deadlock`) come from
        :meth:`_decide`.
        """
        queued = False  # whether a committed transaction put the request in the queue
        try:
            outcome = self._decide(request, until, first=True)
            if isinstance(outcome, list):
                queued = True
                if on_wait is not None:
                    # Told after the transaction: a slow callback (a blocked stderr) must not
                    # hold the table lock everyone else needs.
                    on_wait(waiting(request, outcome, budget))
                # The doorbell only hears what happens after it is armed, so look once more
                # before the first sleep: a release between the first look and the arming
                # would otherwise go unheard until the wait deadline.
                bell = self._doorbell()
                bell.drain()
                outcome = self._decide_queued(request, until)
                while isinstance(outcome, list):
                    bell.watch(self.store.holder_files(outcome))
                    bell.wait(_sleep_budget(until, outcome))
                    outcome = self._decide_queued(request, until)
        except BaseException:
            # A request whose first look failed was never written to the table (a transaction
            # that raises is not saved): nothing to take out, and no table lock to wait for
            # again when that failure was a busy table.
            if queued:
                self._abandon(request)
            raise
        return outcome

    def _decide_queued(self, request: Waiter, until: float) -> Grant | list[Record]:
        """A look while queued. A store that fails mid-look (a server restarting under a
        transaction) is looked at again while the wait lasts: nothing of that transaction was
        saved, and the request still has its place in the queue."""
        while True:
            try:
                return self._decide(request, until, first=False)
            except StoreUnavailable:
                left = until - clock.CLOCK.monotonic()
                if left <= 0:
                    raise
                time.sleep(min(STORE_RETRY, left))

    @contextmanager
    def hold(
        self,
        resources: Iterable[ResourceSpec] = (),
        *,
        agent: str | None = None,
        mode: Mode = "write",
        reads: Iterable[ResourceSpec] = (),
        wait: float | None = None,
        priority: int | None = None,
        session: str = "",
        on_wait: Callable[[Waiting], None] | None = None,
    ) -> Iterator[Lease]:
        """Hold the resources for the ``with`` block: renewed while held, released on exit."""
        lease = self.acquire(
            resources, agent=agent, mode=mode, reads=reads, wait=wait, priority=priority,
            session=session, on_wait=on_wait,
        )
        try:
            yield lease
        finally:
            lease.release()

    def _decide(self, request: Waiter, until: float, *, first: bool) -> Grant | list[Record]:
        """One look under the table lock: the grant, or what still blocks the request.

        ``until`` is the request's deadline on the monotonic clock.
        """
        logged: Logged = []
        try:
            budget = max(until - clock.CLOCK.monotonic(), TABLE_LOCK_GRACE)
            with self.store.transaction(min(budget, FOREVER)) as table:
                self.store.after_commit(lambda: emit_logged(logged, self.store, self.state))
                now = clock.CLOCK.wall()
                mine = next((w for w in table.waiters if w.id == request.id), None)
                if mine is not None:
                    # The table's number is our place: a rebuilt table keeps it, and deciding
                    # with another number than the others see would make false cycles.
                    request.seq = mine.seq
                elif not request.seq:
                    # Our place in the queue is taken on the first look, before any decision:
                    # a newcomer must rank behind every request already waiting.
                    request.seq = table.next_seq()
                found = self._live_blockers(table, request, now, logged)
                if not found:
                    return self._grant(table, request, mine, now, logged)
                if mine is None:
                    # First look, or our record was lost (a damaged table rebuilt without it
                    # yet): join the queue, unless there is no time to wait at all.
                    if until <= clock.CLOCK.monotonic():
                        raise conflict(request, found, now)
                    mine = self._join_queue(table, request)
                cycle = find_cycle(table, request)
                if cycle and _youngest_in_cycle(table, request, cycle):
                    table.waiters.remove(mine)
                    self._own(table, request.id, None)
                    logged.append(("deadlock", request, {"cycle": cycle}))
                    raise Deadlock(
                        f"Waiting for {describe(request)} as {request.agent} would deadlock: "
                        f"{' -> '.join(cycle)} each wait for the next; release a lock first.",
                        cycle=cycle,
                    )
                if clock.CLOCK.monotonic() >= until:
                    table.waiters.remove(mine)
                    self._own(table, request.id, None)
                    raise conflict(request, found, now)
                if first:
                    # holder_pid: the first blocker's process (the waiter's is the event's pid).
                    logged.append(("wait", request, {
                        "blocked_by": agents(found), "holder_pid": found[0].pid,
                    }))
                return found
        except LockConflict as exc:
            logged.append(("conflict", request, {"reason": str(exc)}))
            raise
        finally:
            emit_logged(logged, self.store, self.state)

    def _grant(
        self, table: Table, request: Waiter, mine: Waiter | None, now: float, logged: Logged
    ) -> Grant:
        """Turn the request (and its queue entry ``mine``, if any) into a grant in ``table``."""
        if mine is not None:
            table.waiters.remove(mine)
        grant = request.granted(now)
        grant.fence = self.store.next_fence(table)
        if grant.owner == "shell":  # a process lease ends with its flock, not a clock
            _stamp_boot(grant)
        index.add_grant(table, grant)
        if grant.owner == "shell":
            # The shell lease outlives this process: it ends at unlock or expiry.
            self.store.record_shell_lease(grant)
            self._own(table, request.id, None)
        else:
            self._own(table, grant.id, grant)
        waited = round(now - request.since, 6)
        logged.append(("grant", grant, {"waited": waited}))
        # A crash here, granted but not yet recorded, must leave nothing behind.
        faults.point("locks.before-record")
        # The caller's copy: the table's record may be renewed in place by later transactions.
        return msgspec.structs.replace(grant)

    def _join_queue(self, table: Table, request: Waiter) -> Waiter:
        """Put the request in ``table``'s queue at its place; returns its queue entry."""
        if any(w.seq == request.seq for w in table.waiters):
            request.seq = table.next_seq()  # our old number went to someone else
        table.seq = max(table.seq, request.seq)
        table.waiters.append(request)
        self._own(table, request.id, request)
        return request

    def _live_blockers(
        self, table: Table, request: Waiter, now: float, logged: Logged
    ) -> list[Record]:
        # Only what stands in this request's way is probed: one flock probe per blocker keeps an
        # uncontended acquire cheap however many unrelated locks the table holds.
        while True:
            found = index.blockers(table, request)
            dead = [h for h in found if not self.store.is_live(h, now)]
            if not dead:
                for holder in found:
                    if isinstance(holder, Grant):
                        _renew(table, holder, now)
                return found
            for holder in dead:
                self._drop(table, holder, now, logged)

    def _drop(
        self, table: Table, holder: Record, now: float, logged: Logged
    ) -> None:
        if isinstance(holder, Grant):
            index.remove_grant(table, holder)
            kind = "expire" if holder.owner == "shell" else "reclaim"
            logged.append((kind, holder, {"held_for": round(now - holder.acquired_at, 3)}))
        else:
            table.waiters.remove(holder)
            logged.append(("waiter-gone", holder, {}))
        self.store.forget(holder)

    # Release --------------------------------------------------------------------------------
    def _release(self, lease: Lease) -> None:
        logged: Logged = []
        try:
            # The table first, then the flock: a waiter woken by the flock must find the grant
            # already gone, or it would take a clean release for a dead holder. A release has
            # no wait budget of its own and must not be lost to a briefly busy table, so it
            # waits long; if even that fails, the lease stays releasable (and held).
            with self.store.transaction(RELEASE_WAIT) as table:
                self.store.after_commit(lambda: emit_logged(logged, self.store, self.state))
                grant = index.find_grant(table, lease.id)
                if grant is not None:
                    index.remove_grant(table, grant)
                    now = clock.CLOCK.wall()
                    held = round(now - grant.acquired_at, 3)
                    logged.append(("release", grant, {"held_for": held}))
                    if grant.owner == "shell":
                        self.store.forget(grant)
                self._own(table, lease.id, None)
        except LockConflict:
            lease.released = False  # still held: a later release (or close) tries again
            raise
        except BaseException:
            self._untrack(lease)
            raise
        else:
            self._untrack(lease)
        finally:
            emit_logged(logged, self.store, self.state)

    def _abandon(self, request: Waiter) -> None:
        """Take a request that gave up (timeout, deadlock, Ctrl-C) out of the queue."""
        with self.store.transaction() as table:
            table.waiters[:] = [w for w in table.waiters if w.id != request.id]
            self._own(table, request.id, None)

    def _doorbell(self) -> Doorbell:
        """This thread's doorbell, kept for the manager's life.

        Closing an inotify descriptor waits for an RCU grace period (measured: up to 20 ms on
        a busy machine), which would sit between a grant and the caller; so a doorbell is made
        once per thread and closed when the thread ends or the manager closes. One per thread,
        because draining a shared one could swallow another thread's wake-up.
        """
        bell: Doorbell | None = getattr(self._bells, "bell", None)
        if bell is None:
            bell = self._bells.bell = self.store.doorbell()
        return bell

    def _own(self, table: Table, record_id: str, record: Record | None) -> None:
        """Update this process's published records (called inside a transaction).

        Records the table no longer has (force-released, or reaped) are dropped first, and the
        others are published as the table has them now: a record published again after a
        forced release, or with the claims another process unlocked, would come back at the
        next rebuild.
        """
        if record is None:
            self._records.pop(record_id, None)
        else:
            self._records[record_id] = record
        # Looked up by id in the table's index, not by a scan of every grant in it.
        find = index.finder(table)
        waiters = {w.id: w for w in table.waiters}
        records: dict[str, Record] = {}
        for key in self._records:
            present: Record | None = waiters.get(key) or find(key)
            if present is not None:
                records[key] = present
        self._records = records
        self.store.publish(self._records.values())

    def close(self) -> None:
        """Release every lease this manager holds and let go of its holder file."""
        for lease in list(self._leases.values()):
            lease.release()
        bell: Doorbell | None = getattr(self._bells, "bell", None)
        if bell is not None:
            bell.close()
            del self._bells.bell
        self.store.close()

    def lease_descriptor(self) -> int | None:
        """A descriptor for the processes a holder starts to inherit (``pass_fds``), so that its
        process leases last as long as the last of them lives, even after this process dies
        (``kill -9`` included): the flock that proves a lease alive belongs to the open file
        description, which every inheriting process shares. None where the store has no
        such descriptor (nothing is held yet, or another kind of store). On PostgreSQL it is
        the socket of the session holding this process's liveness key: the server keeps the
        session, and so the leases, while any process holds the socket open."""
        inheritable = getattr(self.store, "inheritable_fd", None)
        if callable(inheritable):
            fd = inheritable()
            return fd if isinstance(fd, int) else None
        return None

    def hand_over(self) -> None:
        """Leave every process lease of this manager to the processes that inherited
        :meth:`lease_descriptor`, without releasing them: the locks end when the last of those
        processes exits. The manager is done with them (releasing them does nothing)."""
        with self._guard:
            leases = list(self._leases.values())
            self._leases.clear()
        for lease in leases:
            lease.released = True
        handing = getattr(self.store, "hand_over", None)  # LocalStore's, PgStore's
        if callable(handing):
            handing()

    def unlock(self, resources: Iterable[ResourceSpec], *, agent: str | None = None) -> list[Claim]:
        """Release ``agent``'s locks on exactly these resources; returns what was released."""
        agent = agent or default_agent(self._repo)
        # By name, not by what is on disk now: a file deleted since, or a directory removed,
        # is still unlocked (Resource.key leaves `file` out).
        wanted = {resource.key: resource for resource in map(self.resolve, resources)}
        if not wanted:
            raise UsageError("Nothing to unlock: name at least one resource.")
        released: list[Claim] = []
        logged: Logged = []
        with self.store.transaction() as table:
            self.store.after_commit(lambda: emit_logged(logged, self.store, self.state))
            for grant in [g for g in table.locks if g.agent == agent]:
                gone = [c for c in grant.claims if c.resource.key in wanted]
                if not gone:
                    continue
                released.extend(gone)
                # The event describes the claims that ended (a copy: the grant keeps the rest),
                # so its write_paths tell the monitor's lock_held_at that those paths are free.
                ended = msgspec.structs.replace(grant, claims=gone)
                grant.claims = [c for c in grant.claims if c.resource.key not in wanted]
                index.changed(table, grant)
                logged.append(("release", ended, {"resources": [str(c.resource) for c in gone]}))
                if not grant.claims:
                    index.remove_grant(table, grant)
                    self.store.forget(grant)
                elif grant.id in self._records:
                    self._own(table, grant.id, grant)
                else:
                    self.store.amend(grant)
        emit_logged(logged, self.store, self.state)
        missing = wanted.keys() - {c.resource.key for c in released}
        if missing:
            names = ", ".join(sorted(str(wanted[key]) for key in missing))
            raise LockConflict(f"{agent} holds no lock on {names}; see `versatil locks`.")
        return released

    def release_agent(self, agent: str) -> list[Grant]:
        """Force-release every lock ``agent`` holds (its processes keep running unguarded)."""
        logged: Logged = []
        with self.store.transaction() as table:
            self.store.after_commit(lambda: emit_logged(logged, self.store, self.state))
            gone = [g for g in table.locks if g.agent == agent]
            for grant in gone:
                index.remove_grant(table, grant)
                self.store.forget(grant)
                logged.append(("forced-release", grant, {}))
        emit_logged(logged, self.store, self.state)
        return gone

    # Reading --------------------------------------------------------------------------------
    def sweep(self) -> Table:
        """Drop (and log) dead and expired entries, write the table and sweep the holder files
        left behind, then return what is live."""
        logged: Logged = []
        with self.store.transaction() as table:
            self.store.after_commit(lambda: emit_logged(logged, self.store, self.state))
            now = clock.CLOCK.wall()
            everyone: list[Record] = [*table.locks, *table.waiters]
            for holder in everyone:
                if not self.store.is_live(holder, now):
                    self._drop(table, holder, now, logged)
                elif isinstance(holder, Grant):
                    _renew(table, holder, now)
            # Copies: the store keeps the table's records for its next transactions (renewed
            # or unlocked in place there), and what a caller was given must not change.
            copy = msgspec.structs.replace
            result = Table(
                seq=table.seq, fence=table.fence,
                locks=[copy(g) for g in table.locks], waiters=[copy(w) for w in table.waiters],
            )
            self.store.sweep()
        emit_logged(logged, self.store, self.state)
        return result

    # Deprecated: the old name, kept because LockManager is public API (demo, library users).
    snapshot = sweep

    def holders(self) -> list[Grant]:
        """The live lock records."""
        return self.sweep().locks

    # Leases of this manager ----------------------------------------------------------------
    def _track(self, lease: Lease) -> None:
        with self._guard:
            self._leases[lease.id] = lease

    def _untrack(self, lease: Lease) -> None:
        with self._guard:
            self._leases.pop(lease.id, None)


# How long a release waits for a busy table lock (a stopped process holding it).
RELEASE_WAIT = 60.0
# How soon a queued request looks again after its store failed mid-look.
STORE_RETRY = 0.2


def _renew(table: Table, grant: Grant, now: float) -> None:
    """Renew a process lease that was just proven alive (its flock is held).

    A process lease is renewed for as long as its process lives, so there is no renewal thread:
    whoever looks at a lease and finds its process alive pushes the expiry shown in the table
    forward. Only when half the lifetime is used up, to keep the table from being rewritten
    on every look. Shell leases are never renewed: they end at unlock or expiry.
    """
    if grant.owner == "process" and grant.expires_at - now < grant.ttl / 2:
        grant.expires_at = min(now + grant.ttl, MAX_TIME)
        index.changed(table, grant)


def _stamp_boot(grant: Grant) -> None:
    """Date the expiry on CLOCK_BOOTTIME too, for :func:`~versatil_fs.locks.store.seconds_left`."""
    now = clock.CLOCK
    grant.boot_id = now.boot_id()
    grant.expires_boot = min(now.boottime() + grant.ttl, MAX_TIME) if grant.boot_id else 0.0


def _youngest_in_cycle(table: Table, request: Waiter, cycle: list[str]) -> bool:
    # Only one member of a cycle is refused: the latest arrival, so the others keep their place.
    members = set(cycle)
    seqs = [w.seq for w in table.waiters if w.agent in members]
    return not seqs or request.seq >= max(seqs)


def _sleep_budget(until: float, found: Sequence[Record]) -> float:
    budget = until - clock.CLOCK.monotonic()
    for holder in found:
        if isinstance(holder, Grant) and holder.owner == "shell":
            # Wake exactly when a shell lease expires.
            budget = min(budget, seconds_left(holder))
    return max(0.0, min(budget, FOREVER)) + 0.001


def _quiet_toplevel(start: str | os.PathLike[str] | Repository | None) -> Path | None:
    if start is None or isinstance(start, Repository):
        return None
    try:
        return Repository.find(start).toplevel
    except UsageError:
        return None

