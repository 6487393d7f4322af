"""A restore, as the steps it takes.

It changes the working tree only, and reads as one context manager composed of smaller ones
(the shape of pre-commit's ``staged_files_only``: each step sets something up and undoes it on
the way out, whatever happens inside):

1. :func:`one_restore_at_a_time` -- the repository's restore lock (two interleaved restores
   would each make a safety checkpoint of a tree the other is half-way through rewriting);
2. :func:`staged_working_tree` -- the working tree staged into a private index, removed after;
3. :func:`planned_changes` -- what differs between the staged tree and the checkpoint, narrowed
   to the selection, refused if someone else's lock or work is in it, or if the caller presents
   a fencing token a newer lock has superseded on those files (:func:`refuse_superseded`; not
   lifted by ``force``, which overrides other agents' locks, not a lock the caller says it holds
   and does not);
4. :func:`safety_checkpoint` -- the current state committed first (whatever the checkpoint will
   overwrite that git ignores is force-added to it), its record marked finished only when the
   restore in the block ended or changed nothing: a restore killed or failing part-way leaves it
   unfinished, so ``list`` points at the checkpoint that undoes it;
5. :func:`~versatil_fs.checkpoints.apply.apply_changes` -- the files written, each whole.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from versatil_fs import flock
from versatil_fs.checkpoints.apply import apply_changes, unsaved_in_the_way
from versatil_fs.checkpoints.create import commit
from versatil_fs.checkpoints.plumbing import parse_raw_diff, path_bytes
from versatil_fs.checkpoints.records import (
    Change,
    CheckpointRecord,
    RestoreResult,
    printable,
    reason,
)
from versatil_fs.checkpoints.selection import refuse_locked, select
from versatil_fs.checkpoints.site import (
    Site,
    StagedTree,
    describe,
    diff_index,
    in_background,
    stage,
)
from versatil_fs.errors import GitFailed, Refused, RestoreIncomplete, StateError
from versatil_fs.state import flocked

__all__ = [
    "RestoreRequest",
    "interrupted_restores",
    "one_restore_at_a_time",
    "planned_changes",
    "refuse_superseded",
    "restore",
    "restore_in_progress",
    "safety_checkpoint",
    "staged_working_tree",
    "writing_announced",
]

_RESTORE_LOCK = "restore.lock"


@dataclass(frozen=True)
class RestoreRequest:
    """What to restore and on whose behalf (see ``Checkpoints.restore``)."""

    paths: builtins.list[str] | None  # repo-relative, normalized; None: everything
    agent: str | None  # only the files this agent recorded as modified
    wave: int | None  # only the files this wave recorded as modified
    force: bool  # overwrite locked files, other agents' work and unsaved ignored files
    restorer: str  # who restores (the caller): its own locks never block it, and the
    # safety checkpoint and the restore event are its
    fence: int | None = None  # the token the caller presents ($VERSATIL_FENCE); None: none

    @property
    def selective(self) -> bool:
        return self.paths is not None or self.agent is not None or self.wave is not None


def restore(site: Site, target: CheckpointRecord, request: RestoreRequest, *,
            large_file_bytes: Callable[[], int]) -> RestoreResult:
    """Bring the working tree (or the selection) back to ``target``; see the module's steps.

    The result's ``safety_checkpoint`` is None when nothing had to change.
    """
    with one_restore_at_a_time(site), staged_working_tree(site) as staged, in_background(
        # What the safety checkpoint will need is worked out while the restore decides what
        # to change (and thrown away if nothing is to change).
        lambda: describe(site.git, staged)
    ) as described:
        changes, by_lock = planned_changes(site, staged, target, request)
        if not changes:
            return RestoreResult(checkpoint=target.id, safety_checkpoint=None)
        with safety_checkpoint(site, staged, target, changes, request, described(),
                               large_file_bytes=large_file_bytes) as safety, writing_announced(
            site, target, safety, changes, request.restorer
        ):
            result = apply_changes(site, target, safety, changes)
        result.attributed_by_lock = [p for p in by_lock if p in set(result.changed)]
        return result


@contextlib.contextmanager
def writing_announced(site: Site, target: CheckpointRecord, safety: CheckpointRecord,
                      changes: Sequence[Change], restorer: str) -> Iterator[None]:
    """``restore-writing`` (the paths about to be written) before the block, ``restore-written``
    after it, both under the restore lock: the monitor attributes the writes between them to
    the restore (``restored``), not to nobody (issue 15, item 3)."""
    fields = {"repo": site.key, "worktree": str(site.repo.toplevel), "checkpoint": target.id,
              "safety": safety.id}
    site.emit_done("checkpoints", "restore-writing", agent=restorer or None,
                   paths=[c.path for c in changes], **fields)
    try:
        yield
    finally:
        site.emit_done("checkpoints", "restore-written", agent=restorer or None, **fields)


def restore_in_progress(site: Site) -> bool:
    """Whether some process holds the repository's restore lock now (is restoring)."""
    return flock.probe_path(site.metadata / _RESTORE_LOCK, shared=False)


@contextlib.contextmanager
def one_restore_at_a_time(site: Site) -> Iterator[None]:
    """Hold the repository's restore lock for the block."""
    fd = site.lock_file(_RESTORE_LOCK)
    try:
        with flocked(fd):
            yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged_working_tree(site: Site) -> Iterator[StagedTree]:
    """The working tree staged into a private index, which is removed on the way out."""
    with site.private_index() as index:
        yield stage(site, index)


def planned_changes(site: Site, staged: StagedTree, target: CheckpointRecord,
                    request: RestoreRequest) -> tuple[builtins.list[Change], builtins.list[str]]:
    """The changes that bring the staged tree to ``target``, within the request's selection,
    and those of their paths attributed to the selected agent by lock only; ``Refused``
    (unless forced) if another agent's write lock or recorded work is in them."""
    # From the working tree (as staged) to the target: -R turns the tree-to-index comparison
    # around. No tree is written unless there is something to restore.
    changes = parse_raw_diff(diff_index(site.git, staged, target.tree, "-R"))
    by_lock: builtins.list[str] = []
    if request.selective:
        chosen = select(site, changes, target, request.paths, request.agent, request.wave,
                        request.force)
        changes, by_lock = chosen.changes, chosen.by_lock
    if changes and request.fence is not None:
        refuse_superseded(site, changes, target, request.restorer, request.fence)
    if changes and not request.force:
        refuse_locked(site, changes, target, request.restorer, files_of=request.agent)
    return changes, by_lock


def refuse_superseded(site: Site, changes: Sequence[Change], target: CheckpointRecord,
                      restorer: str, fence: int) -> None:
    """``Refused`` if the caller's token ``fence`` is superseded on a file the restore would
    write (see :mod:`versatil_fs.locks.fencing`), logged as ``restore-refused`` with both
    tokens."""
    from versatil_fs.locks.fencing import CallerLock, describe, event_fields, superseded
    from versatil_fs.locks.manager import LockManager

    # The lock table of this state directory, as refuse_locked reads it.
    grants = LockManager(repo=str(site.repo.toplevel), state=site.state).holders()
    found, mine = superseded(((c.path, "restored") for c in changes), grants, site.key, fence,
                             site.state)
    if not found:
        return
    first = [f for f in found if f.grant.id == found[0].grant.id]
    names = ", ".join(printable(f.path) for f in first[:5])
    more = len(found) - min(len(first), 5)
    listed = f"{names} and {more} more" if more > 0 else names
    sentence = describe(mine or CallerLock(fence=fence), first, site.key)
    site.emit_done(
        "checkpoints", "restore-refused", agent=restorer or None, repo=site.key,
        checkpoint=target.id, conflicts=[f"{f.path} ({f.grant.agent})" for f in found[:20]],
        **event_fields(fence, found),
    )
    raise Refused(
        f"Not restoring {target.id}: {sentence} ({listed}); lock them again and restore with "
        "the new lock's VERSATIL_FENCE, or unset VERSATIL_FENCE to restore without a lock."
    )


@contextlib.contextmanager
def safety_checkpoint(
    site: Site,
    staged: StagedTree,
    target: CheckpointRecord,
    changes: Sequence[Change],
    request: RestoreRequest,
    description: tuple[bytes, bytes],
    *,
    large_file_bytes: Callable[[], int],
) -> Iterator[CheckpointRecord]:
    """The safety checkpoint of the staged tree, for the restore in the block.

    Content that ``changes`` would overwrite or delete and that the staged tree does not hold
    (ignored now) is force-added to it first. Its record says the restore is unfinished until
    the block ends; a block that fails having changed nothing (a :class:`RestoreIncomplete`
    with nothing restored) marks it finished too, and names it in the error.
    """
    in_the_way = unsaved_in_the_way(site.repo.toplevel, changes)
    if in_the_way:
        _save_in_the_way(site, staged.index, in_the_way, target, request.force)
        description = describe(site.git, staged)
    whose = f" ({request.agent}'s files)" if request.agent else ""
    safety = commit(
        site, staged, started=time.time(), message=f"before restoring {target.id}{whose}",
        agent=request.restorer, kind="safety", restore_of=target.id, described=description,
        large_file_bytes=large_file_bytes,
    )
    try:
        yield safety
    except RestoreIncomplete as exc:
        if exc.restored:
            raise  # the safety record says unfinished: list points at it
        # Nothing changed: the safety checkpoint is only a copy of the tree.
        safety.restore_complete = True
        with contextlib.suppress(StateError):
            site.write_record(safety, durable=False)
        exc.safety = safety.id
        raise
    safety.restore_complete = True
    # Not fsynced: losing this update in a power cut only makes `list` call the restore
    # interrupted, which sends the user to the same safety checkpoint.
    try:
        site.write_record(safety, durable=False)
    except StateError as exc:
        # The files are restored: an error now would say nothing was changed.
        print(f"versatil: restored, but {safety.id} could not be marked as "
              f"finished ({reason(exc)}); `list` will call it interrupted.",
              file=sys.stderr)


def _save_in_the_way(site: Site, index: Path, paths: Sequence[str], target: CheckpointRecord,
                     force: bool) -> None:
    """Force-add ``paths`` (ignored ones included) to the safety checkpoint's index."""
    proc = site.git.spawn("add", "-f", "--pathspec-from-file=-", "--pathspec-file-nul",
                          index=index, extra={"LC_ALL": "C"})
    _, err = proc.communicate(b"".join(path_bytes(p) + b"\0" for p in paths))
    if proc.returncode == 0 or force:
        return
    names = ", ".join(printable(p) for p in paths[:5])
    more = f" and {len(paths) - 5} more" if len(paths) > 5 else ""
    raise Refused(
        f"Not restoring {target.id}: it would overwrite {names}{more}, which git ignores "
        f"and which could not be saved in the safety checkpoint "
        f"({GitFailed(('add', '-f'), proc.returncode, err)}); move them away, or pass "
        "--force to overwrite them."
    )


def interrupted_restores(site: Site, listed: Sequence[CheckpointRecord]
                         ) -> builtins.list[CheckpointRecord]:
    """Safety checkpoints among ``listed`` of restores whose process died before finishing."""
    pending = [r for r in listed if r.kind == "safety" and r.restore_complete is False]
    if not pending:
        return []
    fd = site.lock_file(_RESTORE_LOCK)
    try:
        if not flock.try_lock(fd):
            return []  # a restore is running right now; its record is not stale
        flock.unlock(fd)
    finally:
        os.close(fd)
    return pending
