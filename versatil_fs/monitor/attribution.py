"""Who held the write lock covering a path: now (the lock table) or when a file was written
(the locks log), so that a write is attributed to that lock's agent; and which writes a
``checkpoint restore`` made (:class:`RestoreView`), so that they are the restore's."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from versatil_fs import events
from versatil_fs.errors import NotRegularFile
from versatil_fs.locks import leases
from versatil_fs.locks.store import seconds_left
from versatil_fs.locks.table import (
    Grant,
    Resource,
    Table,
    in_lock_space,
    path_contains,
    valid_id,
)
from versatil_fs.state import StateDir

if TYPE_CHECKING:
    from versatil_fs.locks.manager import LockManager
    from versatil_fs.repo import Repository

# With the table on a server, the store is asked at most this often (each batch of events, and
# again when a lookup finds no lock: a grant made since may be why the file was written), so a
# thousand unlocked writes of a build are not a thousand queries.
REMOTE_RECHECK = 0.005

__all__ = [
    "DELETE_SLACK",
    "STASH_EVENT",
    "LockView",
    "RestoreView",
    "Restoring",
    "Stash",
    "StashView",
    "lock_held_at",
    "stashed_then",
]


class LockView:
    """The live write locks of one repository, read from the lock table without locking it.

    The table is replaced atomically (rename), so a plain read sees a whole document; it is
    re-read only when its inode, size or mtime changed, which costs one ``stat`` per lookup.
    A lock whose process has died but which is still listed is not counted: liveness is the
    holder's flock, probed for the one lock that covers the path.
    """

    def __init__(
        self, state: StateDir, repo_key: str, *, manager: LockManager | None = None
    ) -> None:
        self.state = state
        self.repo_key = repo_key
        self._stamp: tuple[int, int, int] | None = None
        self._grants: list[Grant] = []
        self._decoder = msgspec.json.Decoder(Table)
        # With the table on a server (`[store] backend = "postgres"`) there is no local file to
        # stat and no local holder file to probe: the store is asked (its answer holds live
        # grants only), at most every REMOTE_RECHECK seconds.
        self._manager = manager
        self._fetched = -1.0

    def holder(self, path: str, *, refresh: bool = True) -> Grant | None:
        """The live write lock covering the repo-relative ``path``, if any.

        ``refresh=False`` skips the check for a newer table: for the second and later paths of
        one batch of events, all of which happened before the batch's first look.
        """
        if refresh:
            self.refresh()
        found = self._covering(path)
        # A grant made since the last query may be why the file was written: ask again (an
        # answer found is at worst a lock released a moment ago, which the locks log's tick
        # slack treats the same way).
        if found is None and self._manager is not None and self._refresh_remote():
            found = self._covering(path)
        return found

    def _covering(self, path: str) -> Grant | None:
        for grant in self._grants:
            for claim in grant.claims:
                if claim.mode == "write" and claim.resource.covers(self.repo_key, path):
                    # The store's answer holds live grants only; the local table is probed.
                    if self._manager is not None or _alive(self.state, grant):
                        return grant
                    break
        return None

    def refresh(self) -> None:
        """Re-read the table if it changed since the last look."""
        if self._manager is not None:
            self._refresh_remote()
            return
        try:
            info = os.stat(self.state.lock_table)
        except FileNotFoundError:
            self._stamp, self._grants = None, []
            return
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        if stamp == self._stamp:
            return
        try:
            raw = self.state.read_bytes(self.state.lock_table)
            table = self._decoder.decode(raw or b"{}")
        except (msgspec.DecodeError, msgspec.ValidationError, NotRegularFile):
            # Damaged: the lock manager moves it aside and rebuilds it from the live holders.
            from versatil_fs.locks.manager import LockManager

            table = LockManager(repo=None, state=self.state).sweep()
            stamp = (0, 0, 0)
        # Keyed by lock space, not by repository: a submodule's files are locked in its top
        # superproject's space (issue 12), so a monitor inside a submodule must look there.
        space = in_lock_space(self.repo_key, ".")[0]
        self._grants = [
            g for g in table.locks
            if any(c.resource.repo == space and c.mode == "write" for c in g.claims)
        ]
        self._stamp = stamp

    def _refresh_remote(self) -> bool:
        """Ask the store again, unless it answered less than REMOTE_RECHECK ago; whether it
        was asked."""
        assert self._manager is not None
        if 0 <= time.monotonic() - self._fetched < REMOTE_RECHECK:
            return False
        space = in_lock_space(self.repo_key, ".")[0]
        self._grants = [
            g for g in self._manager.holders()
            if any(c.resource.repo == space and c.mode == "write" for c in g.claims)
        ]
        self._fetched = time.monotonic()
        return True


# File timestamps come from the kernel's coarse clock, up to one tick (4 ms at HZ=250) behind
# the real time. So an mtime within a tick before a release may belong to a write just after
# it: only an mtime clearly inside a lock's logged interval counts as written under it.
_TICK = 0.005
_LOG_TAIL = 1 << 20


def lock_held_at(state: StateDir, repo_key: str, path: str, written: float) -> Grant | None:
    """A write lock of ``repo_key`` that covered ``path`` when a file got mtime ``written``.

    Read from the locks log (its last MiB: this answers for writes seen moments after a
    release). In doubt, within a tick of a release, it answers None: better a write reported
    unlocked than an unlocked write hidden behind a lock that was already gone.
    """
    started: dict[str, events.Event] = {}
    # When each claimed path of a lease stopped being held: `unlock` can end some of a lease's
    # claims and leave the rest, and its release event lists exactly the paths that ended.
    ended: dict[str, dict[str, float]] = {}
    tail = events.records("locks", state=state, containing=b'"write_paths"', last_bytes=_LOG_TAIL)
    for entry in tail:
        lease = str(entry.data.get("lease", ""))
        if entry.kind == "grant":
            started[lease] = entry
        elif entry.kind in ("release", "expire", "reclaim", "forced-release"):
            ends = ended.setdefault(lease, {})
            for claimed in entry.data.get("write_paths") or []:
                ends.setdefault(str(claimed), entry.time)
    space, full = in_lock_space(repo_key, path)  # the log keys submodule paths as locks do
    for lease, grant in started.items():
        if grant.repo != space or grant.agent is None or written < grant.time:
            continue
        ends = ended.get(lease, {})
        patterns = set(grant.data.get("write_globs") or [])
        for claimed in grant.data.get("write_paths") or []:
            if str(claimed) in patterns:
                if not Resource(repo=space, path=str(claimed), glob=True).covers(repo_key, path):
                    continue
            elif not path_contains(str(claimed), full):
                continue
            end = ends.get(str(claimed))
            if end is not None and written > end - _TICK:
                continue
            return Grant(
                id=lease, agent=grant.agent, claims=[], acquired_at=grant.time,
                expires_at=end if end is not None else grant.time,
            )
    return None


def _alive(state: StateDir, grant: Grant) -> bool:
    if grant.owner == "shell":
        return seconds_left(grant) > 0  # CLOCK_BOOTTIME: a stepped wall clock fools nothing
    # The holder file's path is rebuilt from the validated id, never read from the table.
    if not valid_id(grant.holder):
        return False
    return leases.is_held(state.leases / f"{grant.holder}.lease")



# A deletion leaves no mtime: it is the restore's if its event arrives at most this long after
# the restore said it was done (events reach the monitor after the write, later when loaded).
DELETE_SLACK = 2.0


@dataclass(frozen=True)
class Restoring:
    """One restore's writing phase, from the checkpoints log: who restored which checkpoint,
    the paths it was to write, from when until when (None: not said yet)."""

    restorer: str | None
    checkpoint: str
    safety: str
    paths: frozenset[str]
    started: float
    ended: float | None


class RestoreView:
    """The restores of one working tree, from their ``restore-writing`` and ``restore-written``
    events (logged under the restore lock, around the writes): a write to a path a restore was
    writing, inside its interval, is the restore's.

    The log is re-read only when it grew (one ``stat`` per lookup). A restore that said it
    started and not that it ended is still writing only while its process holds the restore
    lock; one killed part-way ended when it died, and what it wrote is reported as usual.
    """

    def __init__(self, state: StateDir, repo: Repository) -> None:
        self.state = state
        self.repo = repo
        self.worktree = str(repo.toplevel)
        self._size = -1
        self._restores: list[Restoring] = []
        self._site: object | None = None

    def refresh(self) -> None:
        size = events.end("checkpoints", state=self.state)
        if size == self._size:
            return
        self._size = size
        started: dict[str, events.Event] = {}
        ended: dict[str, float] = {}
        tail = events.records(
            "checkpoints", state=self.state, containing=b'"restore-writ', last_bytes=_LOG_TAIL
        )
        for entry in tail:
            if entry.repo != self.repo.key or entry.data.get("worktree") != self.worktree:
                continue
            safety = str(entry.data.get("safety", ""))
            if entry.kind == "restore-writing":
                started[safety] = entry
            elif entry.kind == "restore-written":
                ended[safety] = entry.time
        self._restores = [
            Restoring(
                restorer=entry.agent, checkpoint=str(entry.data.get("checkpoint", "")),
                safety=safety, paths=frozenset(str(p) for p in entry.data.get("paths") or []),
                started=entry.time, ended=ended.get(safety),
            )
            for safety, entry in started.items()
        ]

    def restore_of(self, rel: str, written: float | None) -> Restoring | None:
        """The restore that wrote ``rel`` at mtime ``written`` (None: deleted, seen now)."""
        self.refresh()
        if not self._restores:
            return None
        name = events.printable(rel)  # the log holds names that are not UTF-8 printable
        when = time.time() if written is None else written
        found = self._covering(name, when, deleted=written is None)
        if found is not None and found.ended is None and not self._restoring_now():
            # Not said to have ended, and its lock is free: it ended after our read of the log
            # (read it again for when), or it was killed part-way (then it wrote no more).
            self.refresh()
            found = self._covering(name, when, deleted=written is None)
            if found is not None and found.ended is None:
                return None
        return found

    def _covering(self, name: str, when: float, *, deleted: bool) -> Restoring | None:
        slack = DELETE_SLACK if deleted else _TICK
        for restoring in reversed(self._restores):
            if name not in restoring.paths or when < restoring.started - _TICK:
                continue
            if restoring.ended is None or when <= restoring.ended + slack:
                return restoring
        return None

    def _restoring_now(self) -> bool:
        from versatil_fs.checkpoints.restore import restore_in_progress
        from versatil_fs.checkpoints.site import Site

        if self._site is None:
            self._site = Site(self.repo, self.state)
        assert isinstance(self._site, Site)
        return restore_in_progress(self._site)


STASH_EVENT = "framework-stash"
"""The collision-detection event ``versatil hook check`` logs under the pre-commit framework:
which files the framework stashed for the commit running it (and will put back), when, and
the framework process (pid and start) whose end ends the un-stash."""
_STASH_TAIL = 1 << 18
_STASH_MARGIN = 1 << 14
_STASHES_KEPT = 64


@dataclass(frozen=True)
class Stash:
    """One framework stash, as its ``framework-stash`` event says."""

    paths: frozenset[str]
    stashed_at: float  # the patch's mtime: the stash's checkout came right after it
    logged_at: float  # when our hook saw it: the un-stash comes after this
    pid: int
    start: int


def _stashes(entries: list[events.Event], worktree: str) -> list[Stash]:
    found = []
    for entry in entries:
        data = entry.data
        if entry.kind != STASH_EVENT or data.get("worktree") != worktree:
            continue
        try:
            found.append(Stash(
                paths=frozenset(str(p) for p in data.get("paths") or []),
                stashed_at=float(data.get("stashed_at", entry.time)), logged_at=entry.time,
                pid=int(data.get("framework_pid", 0)), start=int(data.get("framework_start", 0)),
            ))
        except (TypeError, ValueError):
            continue  # a damaged line attributes nothing
    return found


def stashed_then(entries: list[events.Event], worktree: str, path: str, when: float) -> bool:
    """Whether an unlocked write of ``path`` reported at ``when`` was the framework's stash
    (its checkout, between the patch and our hook's event; reported up to
    :data:`DELETE_SLACK` later), from the events ``entries``."""
    name = events.printable(path)
    return any(
        name in stash.paths
        and stash.stashed_at - _TICK <= when <= stash.logged_at + DELETE_SLACK
        for stash in _stashes(entries, worktree)
    )


class StashView:
    """The pre-commit framework's stashes of one working tree: a write to a stashed path from
    our hook's event until the framework process ends is its un-stash (``git apply`` of the
    patch), not an unlocked write. The stash itself (before our hook could say) is taken out
    of the count afterwards (:func:`stashed_then`).

    The framework process is named by pid and start time (a reused pid is another process);
    its writes are seen a moment after they happen, so its end counts :data:`DELETE_SLACK`
    after we first find it gone.
    """

    def __init__(self, state: StateDir, worktree: str) -> None:
        self.state = state
        self.worktree = worktree
        self._size = -1
        self._stashes: list[Stash] = []
        self._gone: dict[tuple[int, int], float] = {}
        self._alive: set[tuple[int, int]] = set()

    def refresh(self) -> None:
        # The log grows with every write the monitor reports, so only what was appended since
        # the last look is read (and a little before it: the file may grow between our size
        # and the read's), not the whole tail each time.
        size = events.end("collision-detection", state=self.state)
        if size == self._size:
            return
        if self._size < 0 or size < self._size:
            last, self._stashes = _STASH_TAIL, []
        else:
            last = min(_STASH_TAIL, size - self._size + _STASH_MARGIN)
        self._size = size
        tail = events.records(
            "collision-detection", state=self.state, containing=b'"framework-stash"',
            last_bytes=last,
        )
        known = set(self._stashes)
        fresh = [s for s in _stashes(list(tail), self.worktree) if s not in known]
        self._stashes = (self._stashes + fresh)[-_STASHES_KEPT:]

    def unstash_of(self, rel: str) -> Stash | None:
        """The stash whose un-stash this write of ``rel`` (seen now) is, if any."""
        self.refresh()
        if not self._stashes:
            return None
        name = events.printable(rel)
        now = time.time()
        for stash in reversed(self._stashes):
            if name not in stash.paths or now < stash.logged_at:
                continue
            if self._running(stash, now):
                return stash
        return None

    def _running(self, stash: Stash, now: float) -> bool:
        from versatil_fs import linux

        key = (stash.pid, stash.start)
        gone = self._gone.get(key)
        if gone is None:
            info = linux.process_info(stash.pid) if stash.pid > 0 else None
            if info is not None and info[1] == stash.start:
                self._alive.add(key)
                return True
            # Gone: when we saw it alive before, it ended just now; if we never did, all we
            # know is that it was alive when our hook logged the stash.
            gone = self._gone[key] = now if key in self._alive else stash.logged_at
        return now <= gone + DELETE_SLACK
