"""Who held the write lock covering a path: now (the lock table) or when a file was written
(the locks log), so that a write is attributed to that lock's agent."""

from __future__ import annotations

import os

import msgspec

from versatil_fs import events
from versatil_fs.errors import NotRegularFile
from versatil_fs.locks import leases
from versatil_fs.locks.store import seconds_left
from versatil_fs.locks.table import Grant, Table, in_lock_space, path_contains, valid_id
from versatil_fs.state import StateDir

__all__ = ["LockView", "lock_held_at"]


class LockView:
    """The live write locks of one repository, read from the lock table without locking it.

    The table is replaced atomically (rename), so a plain read sees a whole document; it is
    re-read only when its inode, size or mtime changed, which costs one ``stat`` per lookup.
    A lock whose process has died but which is still listed is not counted: liveness is the
    holder's flock, probed for the one lock that covers the path.
    """

    def __init__(self, state: StateDir, repo_key: str) -> None:
        self.state = state
        self.repo_key = repo_key
        self._stamp: tuple[int, int, int] | None = None
        self._grants: list[Grant] = []
        self._decoder = msgspec.json.Decoder(Table)

    def holder(self, path: str, *, refresh: bool = True) -> Grant | None:
        """The live write lock covering the repo-relative ``path``, if any.

        ``refresh=False`` skips the check for a newer table: for the second and later paths of
        one batch of events, all of which happened before the batch's first look.
        """
        if refresh:
            self.refresh()
        for grant in self._grants:
            for claim in grant.claims:
                if claim.mode == "write" and claim.resource.covers(self.repo_key, path):
                    if _alive(self.state, grant):
                        return grant
                    break
        return None

    def refresh(self) -> None:
        """Re-read the table if it changed since the last look."""
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
    space, path = in_lock_space(repo_key, path)  # the log keys submodule paths as locks do
    for lease, grant in started.items():
        if grant.repo != space or grant.agent is None or written < grant.time:
            continue
        ends = ended.get(lease, {})
        for claimed in grant.data.get("write_paths") or []:
            if not path_contains(str(claimed), path):
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

