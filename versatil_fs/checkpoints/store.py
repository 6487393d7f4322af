"""Checkpoints: git commits of the whole working tree that never disturb the user.

A checkpoint is a commit of every tracked and untracked, non-ignored file, kept under
``refs/versatil/checkpoints/<id>``, plus a small JSON metadata record in the state directory.
It is built from git plumbing on a *private* index, never with ``git stash``:

1. copy the user's index to a scratch ``GIT_INDEX_FILE`` (so unchanged files keep their stat
   data and are not hashed again; the copy keeps the original's mtime, see
   :func:`~versatil_fs.checkpoints.scratch.copy_index`);
2. ``git add -A`` into it;
3. ``git diff-index --cached HEAD`` for what differs from HEAD, and ``git fast-import`` to commit
   HEAD's tree with those paths changed (parent HEAD, none on an unborn branch) and to create the
   ref. That is ``write-tree`` + ``commit-tree`` + ``update-ref`` in one process, writing the new
   trees and the commit as one pack rather than a loose file per object. Every changed file
   makes a new tree for each directory above it; for 100 files spread over a 5,000-file tree,
   ``write-tree`` spent 50-100 ms writing those ~50 trees as loose files on the machine this was
   measured on, fast-import a few. A ref that already exists is never moved (an id drawn twice
   is drawn again).

So creating one never takes ``.git/index.lock`` and never changes the user's index, working tree,
HEAD, branch or stash list; parallel creates share nothing but the object database, which git
already writes safely from many processes.

What is on disk is what a checkpoint stores: files git is told not to look at
(``--assume-unchanged``, ``--skip-worktree``) lose that flag in the private index and are added
like the rest (a skip-worktree file absent from the disk is a sparse checkout's, not deleted).

A restore changes the working tree only. It first checkpoints the current state (the *safety*
checkpoint, so every restore can be undone with one more restore), computes what differs with
``git diff-index`` between the staged tree and the checkpoint's tree, and touches exactly those
paths. Whatever stands on disk where it will write and that the staged tree does not hold (a
file git ignores now, an ignored directory where the checkpoint has a file) is force-added to
the safety checkpoint first. Then every file to write is checked out with ``git checkout-index
--prefix`` from a tiny index holding only those paths (so filters, modes and symlinks come out
as git would write them) into a staging directory inside the git directory (same filesystem,
unseen by git), removals are unlinked, and each staged file is renamed over its path: each file
is its old version or its new one, never a part of either, and a full disk stops the restore
before any file changed.

Nothing read from a metadata file is acted on unless git agrees: a checkpoint id matches
:data:`ID_PATTERN` before it names a file, and a record must name its ref's commit and that
commit's tree, else it is damaged (moved aside, rebuilt from the commit). A ref under
``refs/versatil/checkpoints/`` that is not a checkpoint is moved to ``refs/versatil/damaged/``.

What a crash leaves behind:

* killed before fast-import's ref update: some unreferenced objects (git's gc collects them)
  and a scratch directory that the next operation sweeps (it proves the owner dead with
  ``flock``);
* killed between the ref update and the metadata write: a checkpoint listed from its commit alone
  (its message, agent, wave and time are in the commit; task states are lost, and it says so);
* killed mid-restore: the safety checkpoint exists and its metadata says the restore did not
  finish, so ``list`` and ``show`` point at it; restoring it undoes the partial restore. Every
  file is whole (old or new); a staging directory left in the git directory is swept by the next
  command (its flock proves its owner dead). A restore that *fails* part-way (an error, not a
  kill) says which paths it did and did not restore, and names the safety checkpoint.
* a create that cannot write its metadata deletes its ref again: a checkpoint reported as failed
  does not exist (only a kill leaves a ref without metadata, listed from its commit).

Every operation is one plumbing command run through :mod:`versatil_fs.git`, so that we control
its environment (the private index, literal pathspecs) and parse its ``-z`` output.

The package, by module: ``records`` (the data: records, ids, metadata bytes, commit message),
``plumbing`` (git's formats, pure), ``scratch`` (private index and staging directories, their
sweepers), ``site`` (where one repository's checkpoints live; staging the working tree),
``create`` (commit + ref + metadata), ``catalog`` (list, resolve, delete), ``selection`` (what a
restore may touch, and its refusals), ``apply`` (writing files whole), ``restore`` (the restore
as its steps), and this module, :class:`Checkpoints`, the API that ties them together.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from versatil_fs import config
from versatil_fs.checkpoints.catalog import delete_refs, list_records, resolve
from versatil_fs.checkpoints.create import commit
from versatil_fs.checkpoints.plumbing import parse_raw_diff
from versatil_fs.checkpoints.records import (
    AUTOMATIC_KINDS,
    DAMAGED_PREFIX,
    ID_PATTERN,
    MAX_WAVE,
    REF_PREFIX,
    SCHEMA_VERSION,
    USER_KIND,
    Change,
    CheckpointRecord,
    PrunedCheckpoint,
    PruneResult,
    RestoreResult,
    automatic,
    printable,
    reason,
    valid_id,
)
from versatil_fs.checkpoints.restore import (
    RestoreRequest,
    interrupted_restores,
    restore,
    staged_working_tree,
)
from versatil_fs.checkpoints.selection import (
    Modification,
    attribution,
    history,
    normalize,
    record_files_modified,
    write_lock_conflicts,
)
from versatil_fs.checkpoints.site import Site, diff_index, in_background, stage
from versatil_fs.errors import Refused, UsageError, VersatilError
from versatil_fs.repo import Repository, default_agent
from versatil_fs.state import StateDir, flocked

__all__ = [
    "DAMAGED_PREFIX",
    "DEFAULT_LARGE_FILE_MB",
    "DEFAULT_MAX_AUTOMATIC",
    "DEFAULT_MAX_CHECKPOINTS",
    "ID_PATTERN",
    "MAX_WAVE",
    "REF_PREFIX",
    "SCHEMA_VERSION",
    "Change",
    "CheckpointRecord",
    "Checkpoints",
    "Modification",
    "PruneResult",
    "PrunedCheckpoint",
    "RestoreResult",
    "checkpoint",
    "printable",
    "pruned_line",
    "record_files_modified",
    "valid_id",
    "write_lock_conflicts",
]

DEFAULT_MAX_CHECKPOINTS = 10
DEFAULT_MAX_AUTOMATIC = 20
_log = logging.getLogger("versatil_fs.checkpoints")
DEFAULT_LARGE_FILE_MB = 50.0
# A temporary metadata file older than this is a dead writer's, see _remove_stale_temporaries.
_STALE_TEMPORARY_SECONDS = 600.0


class Checkpoints:
    """Create, list, show, diff, restore and prune the checkpoints of one repository.

    ``state`` (default $VERSATIL_HOME) is where everything lives: the metadata, the event log,
    the lock table a restore checks, the configuration file and the recorded modifications.
    """

    def __init__(
        self,
        repo: str | os.PathLike[str] = ".",
        *,
        state: StateDir | None = None,
        large_file_mb: float | None = None,
    ) -> None:
        self.repo = Repository.find(repo)
        self.site = Site(self.repo, state or StateDir())
        self.key = self.site.key
        self._large_file_mb = large_file_mb
        self._config: Any = None
        # Every command cleans up after processes killed mid-create or mid-restore.
        self.site.sweep()

    # Create ---------------------------------------------------------------------------------
    def create(
        self,
        message: str | None = None,
        *,
        wave: int | None = None,
        agent: str | None = None,
        tasks: dict[str, str] | None = None,
        files_modified: builtins.list[str] | None = None,
        tests_run: builtins.list[str] | None = None,
        errors: builtins.list[str] | None = None,
        prune: bool = True,
        kind: str = USER_KIND,
    ) -> CheckpointRecord:
        """Checkpoint the whole working tree; prunes afterwards (see :meth:`prune`).

        ``kind`` is ``"checkpoint"`` for a user's own (kept under ``max_checkpoints``), or
        ``"wave"``, ``"run"``, ``"periodic"`` for one versatil makes on its own (kept under
        ``max_automatic``, so that those never push out the user's).
        """
        if wave is not None and not 0 <= wave <= MAX_WAVE:
            raise UsageError(f"A wave number is 0 to {MAX_WAVE:,}, not {wave}.")
        if kind != USER_KIND and kind not in AUTOMATIC_KINDS - {"safety"}:
            raise UsageError(f"A checkpoint's kind is checkpoint, wave, run or periodic, not "
                             f"{printable(kind)!r}.")
        started = time.time()
        with self.site.private_index() as index, in_background(
            lambda: agent or default_agent(self.repo)
        ) as who:
            # Finding the default agent may run `git config`: it runs while git adds files.
            staged = stage(self.site, index)
            agent = who()
            record = commit(
                self.site, staged, started=started, message=message or "", agent=agent,
                large_file_bytes=self.large_file_bytes, wave=wave, tasks=tasks,
                files_modified=files_modified, tests_run=tests_run, errors=errors, kind=kind,
            )
        self.site.emit_done(
            "checkpoints", "create", agent=agent, repo=self.key, id=record.id,
            message=record.message, wave=wave, files=record.files, commit=record.commit,
            checkpoint_kind=kind,
        )
        if prune:
            self._auto_prune()
        return record

    # List / show / diff ----------------------------------------------------------------------
    def show(self, checkpoint_id: str) -> CheckpointRecord:
        """The checkpoint with this id or unique id prefix; ``UsageError`` otherwise."""
        return resolve(self.site, checkpoint_id)

    def elsewhere(self, record: CheckpointRecord) -> str | None:
        """The toplevel of the worktree ``record`` was made in, if not this one; else None."""
        return None if self.site.here(record) else self.site.worktree_top(record)

    def worktree_of(self, record: CheckpointRecord) -> str:
        """The toplevel of the worktree ``record`` was made in (this one's if it is here)."""
        return self.site.worktree_top(record)

    def _this_worktree(self, record: CheckpointRecord, force: bool, doing: str) -> None:
        # Worktrees of one repository share its refs, so every checkpoint is visible from each
        # of them; one made in another worktree holds that worktree's files (another branch),
        # and comparing or restoring it here is rarely what was meant.
        other = self.elsewhere(record)
        if other is not None and not force:
            raise Refused(
                f"Not {doing}: checkpoint {record.id} was made in the worktree {other}, not in "
                f"this one ({self.repo.toplevel}); pass --force to use it here anyway."
            )

    def diff(self, checkpoint_id: str, *, force: bool = False) -> builtins.list[Change]:
        """What changed in the working tree since the checkpoint (statuses seen from it).
        A checkpoint of another worktree is ``Refused`` unless ``force``."""
        record = resolve(self.site, checkpoint_id)
        self._this_worktree(record, force, "comparing")
        with staged_working_tree(self.site) as staged:
            return parse_raw_diff(diff_index(self.site.git, staged, record.tree))

    def changed_by(
        self, checkpoint_id: str, paths: Sequence[str]
    ) -> dict[str, builtins.list[Modification]]:
        """For each of ``paths``: the modifications recorded since the checkpoint that cover it
        (``files-modified`` events of this worktree, oldest first); a modification whose
        ``by_writer`` is False is the monitor's "written while that agent held the lock"."""
        record = resolve(self.site, checkpoint_id)
        return attribution(self.key, record.time, self.site.state, paths,
                           str(self.repo.toplevel))

    def who(self, path: str | os.PathLike[str]) -> tuple[str, builtins.list[Modification]]:
        """``path`` (relative to the repository root, or absolute) as a repo-relative path, and
        every modification of it recorded in the log for this worktree, oldest first."""
        rel = normalize(self.repo.toplevel, path, {})
        return rel, history(self.key, rel, self.site.state, str(self.repo.toplevel))

    def untracked_unchanged(
        self, checkpoint_id: str
    ) -> tuple[builtins.list[str], CheckpointRecord | None]:
        """Files the checkpoint records as modified only because HEAD does not have them
        (untracked, or new) and that are byte for byte as they were in the previous
        checkpoint of this repository; and that previous checkpoint (None if there is none:
        then nothing can be said to be unchanged)."""
        record = resolve(self.site, checkpoint_id)
        earlier = [r for r in self.list()
                   if (r.time, r.id) < (record.time, record.id)
                   and self.site.worktree_key(r) == self.site.worktree_key(record)]
        if not earlier or not record.files_modified:
            return [], None
        previous = earlier[-1]
        new = set(self._names("diff-tree", "-r", "-z", "--no-renames", "--name-only",
                              "--diff-filter=A", record.parent, record.tree)
                  if record.parent else self._names("ls-tree", "-r", "-z", "--name-only",
                                                    record.tree))
        changed = set(self._names("diff-tree", "-r", "-z", "--no-renames", "--name-only",
                                  previous.tree, record.tree))
        return [p for p in record.files_modified if p in new and p not in changed], previous

    def _names(self, *args: str) -> builtins.list[str]:
        out = self.site.git.run(*args)
        return [os.fsdecode(p) for p in out.split(b"\0") if p]

    def diff_patch(self, checkpoint_id: str, *, force: bool = False) -> bytes:
        """The same difference as a patch, as ``git diff`` prints it."""
        record = resolve(self.site, checkpoint_id)
        self._this_worktree(record, force, "comparing")
        with staged_working_tree(self.site) as staged:
            return self.site.git.run("diff", "--cached", "--no-color", "--binary", record.tree,
                                     index=staged.index)

    def interrupted_restores(
        self, records: Sequence[CheckpointRecord] | None = None
    ) -> builtins.list[CheckpointRecord]:
        """Safety checkpoints of restores whose process died before finishing (among
        ``records``, default every checkpoint)."""
        return interrupted_restores(self.site, self.list() if records is None else records)

    # Restore --------------------------------------------------------------------------------
    def restore(
        self,
        checkpoint_id: str,
        *,
        paths: Sequence[str | os.PathLike[str]] | None = None,
        agent: str | None = None,
        wave: int | None = None,
        force: bool = False,
        by: str | None = None,
        prune: bool = True,
        fence: int | None = None,
    ) -> RestoreResult:
        """Bring the working tree (all of it, or a selection) back to the checkpoint.

        ``paths`` (relative to the repository root, or absolute) selects files and directories;
        ``agent`` and ``wave`` select the files that agent / wave recorded as modified after the
        checkpoint (an ``agent`` that recorded none at all is ``Refused``, naming those that
        did). Several selections intersect. A file write-locked by an agent other than the one
        restoring (or ``agent``, whose files these are) is refused (``Refused``) unless
        ``force``, and so is a checkpoint made in another worktree of the repository (its
        files are that worktree's). The one restoring is ``by``, else the caller
        ($VERSATIL_AGENT, git config, login name): ``agent`` says whose files, never who
        restores. The result's ``attributed_by_lock`` names the files only the monitor
        attributed to ``agent``.
        The safety checkpoint counts towards ``max_checkpoints``; ``prune=False`` skips the
        pruning after it (for callers that still need the oldest checkpoints). ``fence`` is the
        fencing token the caller presents (``versatil checkpoint restore`` passes
        ``$VERSATIL_FENCE``): a restore of files a newer lock covers once its lease has ended
        is ``Refused``, ``force`` or not (:mod:`versatil_fs.locks.fencing`).
        """
        target = resolve(self.site, checkpoint_id)
        self._this_worktree(target, force, "restoring")
        restorer = by or default_agent(self.repo)
        parents: dict[str, str] = {}
        wanted = None if paths is None else [
            normalize(self.repo.toplevel, p, parents) for p in paths
        ]
        request = RestoreRequest(paths=wanted, agent=agent, wave=wave, force=force,
                                 restorer=restorer, fence=fence)
        result = restore(self.site, target, request, large_file_bytes=self.large_file_bytes)
        if result.safety_checkpoint is None:
            self.site.emit_done(
                "checkpoints", "restore", agent=restorer, repo=self.key,
                checkpoint=target.id, safety=None, restored=0, removed=0, files_of=agent,
                wave=wave,
            )
            return result
        extra: dict[str, Any] = {}
        if result.attributed_by_lock:
            extra["attributed_by_lock"] = result.attributed_by_lock[:100]
        self.site.emit_done(
            "checkpoints", "restore", agent=restorer, repo=self.key, checkpoint=target.id,
            safety=result.safety_checkpoint, restored=len(result.restored),
            removed=len(result.removed), paths=result.changed[:100], forced=force,
            files_of=agent, wave=wave, **extra,
        )
        if prune:
            self._auto_prune()
        return result

    # Prune ----------------------------------------------------------------------------------
    def _auto_prune(self) -> None:
        # Metadata files are one per checkpoint (written right after its ref), so while there
        # are no more of them than the smaller budget, no budget can be exceeded and there is
        # no need to ask git.
        keep, keep_automatic = self.max_checkpoints(), self.max_automatic()
        if sum(1 for _ in self.site.metadata.glob("*.json")) <= min(keep, keep_automatic):
            return
        try:
            result = self.prune(keep, keep_automatic)
        except VersatilError as exc:
            # The checkpoint or restore this follows is done: an error here must not make
            # the caller believe it was not.
            _log.warning("done, but pruning old checkpoints failed (%s).", reason(exc))
            return
        # A prune the user did not ask for is never silent: one line per checkpoint removed,
        # on this logger (the CLI prints its lines on stderr; a library caller chooses).
        for entry in result.entries:
            _log.info("%s", pruned_line(entry))

    def prune(self, keep: int | None = None,
              keep_automatic: int | None = None) -> PruneResult:
        """Delete the oldest checkpoints beyond the budgets, in each worktree on its own: the
        user's own beyond ``keep`` (default ``max_checkpoints``), those versatil made on its
        own (safety, wave, run, periodic) beyond ``keep_automatic`` (default
        ``max_automatic``). The result lists each one removed (``entries``), and the ``prune``
        event records it; each removal is logged on the ``versatil_fs.checkpoints`` logger (at
        INFO after a create or restore, which nobody asked to prune; else at DEBUG)."""
        if keep is None:
            keep = self.max_checkpoints()
        if keep_automatic is None:
            keep_automatic = self.max_automatic()
        if keep < 0:
            raise UsageError(f"--keep must be 0 or more, not {keep}.")
        if keep_automatic < 0:
            raise UsageError(f"--keep-automatic must be 0 or more, not {keep_automatic}.")
        lock_fd = self.site.lock_file("prune.lock")
        try:
            with flocked(lock_fd):
                # Metadata names first, refs second: a create writes its ref before its metadata,
                # so every metadata file listed here has its ref in the listing below.
                names = {p.stem for p in self.site.metadata.glob("*.json")}
                records = self.list()
                groups: dict[tuple[str, bool], builtins.list[CheckpointRecord]] = {}
                for record in records:  # oldest first, so each group is too
                    groups.setdefault((self.site.worktree_key(record), automatic(record)),
                                      []).append(record)
                doomed: builtins.list[CheckpointRecord] = []
                for (_, auto), group in groups.items():
                    budget = keep_automatic if auto else keep
                    # The safety checkpoint of a restore that never finished is the only way
                    # back from a half-done restore: never pruned (it counts all the same).
                    doomed.extend(r for r in group[: max(0, len(group) - budget)]
                                  if not (r.kind == "safety" and r.restore_complete is False))
                doomed.sort(key=lambda r: (r.time, r.id))
                delete_refs(self.site.git, doomed)
                live = {r.id for r in records} - {r.id for r in doomed}
                for name in names - live:
                    self.site.state.remove(self.site.metadata / f"{name}.json")
                self._remove_stale_temporaries()
        finally:
            os.close(lock_fd)
        entries = [
            PrunedCheckpoint(
                id=r.id, kind=r.kind, budget="max_automatic" if automatic(r) else
                "max_checkpoints", time=r.time, message=r.message, agent=r.agent,
                worktree=self.site.worktree_top(r),
            )
            for r in doomed
        ]
        removed = [r.id for r in doomed]
        if removed:
            self.site.emit_done("checkpoints", "prune", repo=self.key, removed=removed,
                                kept=keep, kept_automatic=keep_automatic)
            for entry in entries:  # the caller has them (entries); a debug log may want them
                _log.debug("%s", pruned_line(entry))
        left = [r for r in records if r.id in live]
        own = sum(1 for r in left if not automatic(r))
        return PruneResult(kept=len(left), removed=removed, kept_own=own,
                           kept_automatic=len(left) - own, entries=entries)

    def _remove_stale_temporaries(self) -> None:
        # A process killed inside StateDir.write_atomic leaves its `.<id>.json.<pid>.<ns>.tmp`.
        # A live write lasts milliseconds, so one this old can only be from a dead writer.
        cutoff = time.time() - _STALE_TEMPORARY_SECONDS
        for path in self.site.metadata.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                if path.lstat().st_mtime < cutoff:
                    self.site.state.remove(path)

    # Settings -------------------------------------------------------------------------------
    def max_checkpoints(self) -> int:
        """``checkpoints.max_checkpoints`` from the configuration (default 10): how many of the
        user's own checkpoints each worktree keeps."""
        value = getattr(self._settings(), "max_checkpoints", None)
        return DEFAULT_MAX_CHECKPOINTS if value is None else int(value)

    def max_automatic(self) -> int:
        """``checkpoints.max_automatic`` from the configuration (default 20): how many of the
        checkpoints versatil makes on its own (safety, wave, run, periodic) each worktree
        keeps."""
        value = getattr(self._settings(), "max_automatic", None)
        return DEFAULT_MAX_AUTOMATIC if value is None else int(value)

    def large_file_bytes(self) -> int:
        """New files above this size get a warning: the constructor's ``large_file_mb``, else
        ``checkpoints.large_file_mb`` in the configuration (files, or
        $VERSATIL_CHECKPOINTS_LARGE_FILE_MB), else 50 MB."""
        megabytes = self._large_file_mb
        if megabytes is None:
            megabytes = getattr(self._settings(), "large_file_mb", DEFAULT_LARGE_FILE_MB)
        return int(float(megabytes) * 1024 * 1024)

    def _settings(self) -> Any:
        if self._config is None:
            # The user file is the one of this state directory, as for the lock manager.
            self._config = config.load(self.repo.toplevel, state=self.site.state)
        return getattr(self._config, "checkpoints", None)

    # Listing (defined last: inside the class body `list` names this method) -----------------
    def list(self, *, all_worktrees: bool = True) -> builtins.list[CheckpointRecord]:
        """Every checkpoint of the repository, oldest first (``all_worktrees=False``: only
        those made in this worktree; a record from before worktrees were recorded counts as
        the main worktree's).

        A ref under ``refs/versatil/checkpoints/`` that is not a checkpoint (a name of another
        shape, or pointing at something that is not a commit) is damaged: it is moved aside to
        ``refs/versatil/damaged/`` (said once, on stderr) and the others are listed as usual.
        """
        records = list_records(self.site)
        if all_worktrees:
            return records
        return [r for r in records if self.site.here(r)]


def pruned_line(entry: PrunedCheckpoint) -> str:
    """One line saying that a prune removed ``entry``, and why."""
    whose = "automatic" if entry.budget == "max_automatic" else "your own"
    message = entry.message.splitlines()[0] if entry.message else ""
    return (f"pruned checkpoint {entry.id} ({whose}, {entry.kind}, over "
            f"checkpoints.{entry.budget}){': ' + printable(message) if message else ''}")


def checkpoint(message: str, repo: str | os.PathLike[str] = ".") -> CheckpointRecord:
    """One line for long scripts: ``checkpoint("migration-step1")``."""
    return Checkpoints(repo).create(message)
