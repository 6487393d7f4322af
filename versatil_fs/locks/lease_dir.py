"""The lease directory ``run/leases/``: what outlives the lock table, and the table rebuilt
from it.

Every process that holds or waits keeps its holder file there (``<id>.lease``, flocked for as
long as it lives, see :mod:`versatil_fs.locks.leases`) with its grants and waits written in it;
a shell lease, which has no process, leaves ``<id>.shell`` until it expires. When the table is
missing or damaged, :meth:`LeaseDirectory.rebuild` makes it again from those files alone. Only
files named as we name them are read or removed, only regular files, never through a symlink;
nothing in them is used as a path: each record is re-attached to its own file's id.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgspec

from versatil_fs.locks import clock, leases
from versatil_fs.locks.clock import seconds_left
from versatil_fs.locks.table import (
    SCHEMA_VERSION,
    Grant,
    Record,
    Table,
    Waiter,
    check_records,
    queue_key,
    valid_id,
)
from versatil_fs.state import StateDir, read_regular

__all__ = ["HolderRecords", "LeaseDirectory"]


class HolderRecords(msgspec.Struct, kw_only=True):
    """What a holder file contains: its process's grants and waits."""

    version: int = SCHEMA_VERSION
    pid: int
    grants: list[Grant] = msgspec.field(default_factory=list)
    waiters: list[Waiter] = msgspec.field(default_factory=list)


_encoder = msgspec.json.Encoder()
_grant_decoder = msgspec.json.Decoder(Grant)
_records_decoder = msgspec.json.Decoder(HolderRecords)


def _parse_name(name: str) -> tuple[str, str] | None:
    """``(id, kind)`` for a file name of the lease directory we made (``<id>.lease``,
    ``<id>.shell``, ``<id>.pending``, ``.<id>.tmp``); None for anything else, which the sweep
    and the rebuild leave alone."""
    if name.startswith(".") and name.endswith(".tmp"):
        ident, kind = name[1:-4], "tmp"
    else:
        ident, dot, kind = name.rpartition(".")
        if not dot or kind not in ("lease", "shell", "pending"):
            return None
    return (ident, kind) if valid_id(ident) else None


class LeaseDirectory:
    """``run/leases/`` of one state directory."""

    def __init__(self, state: StateDir) -> None:
        self.state = state

    def holder_path(self, holder_id: str) -> Path | None:
        """``run/leases/<id>.lease``, rebuilt from a validated id (None for anything else): the
        only way a path is derived from what a table or holder file says."""
        if not valid_id(holder_id):
            return None
        return self.state.leases / f"{holder_id}.lease"

    def _shell_path(self, lease_id: str, kind: str = "shell") -> Path | None:
        if not valid_id(lease_id):
            return None
        return self.state.leases / f"{lease_id}.{kind}"

    def _remove_entry(self, path: Path) -> None:
        """Unlink a file of the lease directory: only a regular file (never a symlink's
        target, never a directory) whose name is one we make."""
        if path.parent != self.state.leases or _parse_name(path.name) is None:
            return
        try:
            info = os.lstat(path)
        except OSError:
            return
        if stat.S_ISREG(info.st_mode):
            self.state.remove(path)

    def _entries(self) -> list[tuple[Path, str, str]]:
        """``(path, id, kind)`` for each regular file of the lease directory that we made;
        symlinks, FIFOs, directories and foreign names are skipped, never read or removed."""
        self.state.ensure_dir(self.state.leases)
        found = []
        with os.scandir(self.state.leases) as listing:
            for entry in listing:
                parsed = _parse_name(entry.name)
                if parsed is None:
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                except OSError:
                    continue
                found.append((self.state.leases / entry.name, *parsed))
        return sorted(found)

    def rebuild(self) -> Table:
        """The table as the live holder files and unexpired shell leases describe it.

        Nothing in those files names a path: a shell lease's file is ``<its id>.shell``, and
        every record of a holder file is re-attached to that file's own id, whatever it says.
        """
        table = Table()
        waiters: list[Waiter] = []
        for path, ident, kind in self._entries():
            if kind == "shell":
                raw = read_regular(path, ours=True)
                try:
                    grant = _grant_decoder.decode(raw) if raw is not None else None
                except (msgspec.DecodeError, msgspec.ValidationError):
                    grant = None
                if grant is not None and (
                    grant.id != ident or grant.owner != "shell" or check_records([grant])
                ):
                    grant = None  # a record under another lease's name: not to be trusted
                if grant is not None and seconds_left(grant) > 0:
                    grant.holder = grant.lease_file = ""
                    table.locks.append(grant)
                else:
                    self._remove_entry(path)
            elif kind == "lease":
                if not leases.is_held(path):
                    self._remove_entry(path)  # its process is gone, and so are its leases
                    continue
                raw = read_regular(path, ours=True)
                try:
                    records = _records_decoder.decode(raw) if raw else None
                except (msgspec.DecodeError, msgspec.ValidationError):
                    records = None
                if records is None or _damaged(records):
                    continue  # a live holder that has recorded nothing (readable) yet
                for grant in records.grants:
                    if grant.owner == "process":  # shell leases come from their own files
                        grant.holder, grant.lease_file = ident, str(path)
                        table.locks.append(grant)
                for waiter in records.waiters:
                    waiter.holder, waiter.lease_file = ident, str(path)
                    waiters.append(waiter)
        # Every waiter keeps its place: the number it was given stays (its process compares
        # it with the others' and would see false cycles and a broken order if it changed),
        # and newcomers are numbered after the highest one.
        table.waiters = sorted(waiters, key=lambda w: (*queue_key(w), w.since))
        table.seq = max((w.seq for w in waiters), default=0)
        # The live grants' tokens are a floor too (the store adds its reserved ceiling).
        table.fence = max((g.fence for g in table.locks), default=0)
        return table

    def sweep(self) -> int:
        """Remove holder files of processes that died without cleaning up; returns how many.

        Only regular files named as we name them, in the lease directory, and only when no
        process holds them flocked.
        """
        removed = 0
        now = clock.CLOCK.wall()
        for path, _ident, kind in self._entries():
            if kind == "lease" and not leases.is_held(path):
                self._remove_entry(path)
                removed += 1
            elif kind in ("pending", "tmp") and _older_than(path, now, 60.0):
                # A `versatil lock` killed between its record and its table write, or a
                # process killed while creating its holder file.
                if kind == "tmp" and leases.is_held(path):
                    continue
                self._remove_entry(path)
                removed += 1
        return removed

    def record_shell_lease(self, grant: Grant) -> None:
        """Keep a shell lease (no live process) where a rebuild finds it until it expires.

        Written as ``<id>.pending`` inside the granting transaction and renamed to
        ``<id>.shell`` by :meth:`confirm_shell_lease` once the table holds the grant; a rebuild
        ignores pending records, so a command killed before the table was written leaves no
        lock to resurrect.
        """
        pending = self._shell_path(grant.id, "pending")
        if pending is not None:
            self.state.write_atomic(pending, _encoder.encode(grant))

    def confirm_shell_lease(self, grant: Grant) -> None:
        pending, final = self._shell_path(grant.id, "pending"), self._shell_path(grant.id)
        if pending is None or final is None:
            return
        try:
            os.replace(pending, final)
        except FileNotFoundError:
            pass  # unlocked or expired already

    def forget(self, holder: Record, *, own: Path | None) -> None:
        """Remove a released or dead holder's records: a shell lease's files, or its lines in
        another live process's holder file (never in ``own``, the caller's, which its manager
        publishes itself)."""
        if holder.owner == "shell" and isinstance(holder, Grant):
            for kind in ("shell", "pending"):
                path = self._shell_path(holder.id, kind)
                if path is not None:
                    self._remove_entry(path)
        else:
            self._rewrite_foreign(holder, None, own)

    def amend(self, grant: Grant, *, own: Path | None) -> None:
        """Rewrite a grant's record where a rebuild finds it (after a partial unlock)."""
        if grant.owner == "shell":
            path = self._shell_path(grant.id)
            if path is not None:
                self.state.write_atomic(path, _encoder.encode(grant))
        else:
            self._rewrite_foreign(grant, grant, own)

    def _rewrite_foreign(
        self, holder: Record, replacement: Grant | None, own: Path | None
    ) -> None:
        """Strike (or replace) a record in another live process's holder file.

        A live process that lost a grant (forced release, unlock from a shell) still lists it in
        its file; without this a table rebuild would bring the released lock back.
        """
        path = self.holder_path(holder.holder)
        if path is None or path == own:
            return  # our own records (the manager publishes them itself), or no holder file
        if not leases.is_held(path):
            self._remove_entry(path)  # its process is gone, and with it every lease it held
            return
        raw = read_regular(path, ours=True)
        try:
            records = _records_decoder.decode(raw) if raw else None
        except (msgspec.DecodeError, msgspec.ValidationError):
            records = None
        if records is None or _damaged(records):
            return
        records.grants = [g for g in records.grants if g.id != holder.id]
        records.waiters = [w for w in records.waiters if w.id != holder.id]
        if replacement is not None:
            records.grants.append(replacement)
        leases.rewrite_foreign(path, _encoder.encode(records))


def _damaged(records: HolderRecords) -> bool:
    return bool(check_records(records.grants) or check_records(records.waiters, "waiters"))


def _older_than(path: Path, now: float, seconds: float) -> bool:
    try:
        return now - os.lstat(path).st_mtime > seconds
    except OSError:
        return False
