"""Checkpoints: git commits of the whole working tree that never disturb the user.

A checkpoint is a commit of every tracked and untracked, non-ignored file, kept under
``refs/versatil/checkpoints/<id>``, plus a small JSON metadata record in the state directory.
It is built from git plumbing on a *private* index, never with ``git stash``:

1. copy the user's index to a scratch ``GIT_INDEX_FILE`` (so unchanged files keep their stat
   data and are not hashed again; the copy keeps the original's mtime, see :func:`_copy_index`);
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

What is on disk is what a snapshot stores: files git is told not to look at
(``--assume-unchanged``, ``--skip-worktree``) lose that flag in the private index and are added
like the rest (a skip-worktree file absent from the disk is a sparse checkout's, not deleted).

A restore changes the working tree only. It first checkpoints the current state (the *safety*
checkpoint, so every restore can be undone with one more restore), computes what differs with
``git diff-index`` between the staged snapshot and the checkpoint's tree, and touches exactly
those paths. Whatever stands on disk where it will write and that the snapshot does not hold (a
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

GitPython is not used here: every operation is one plumbing command, run directly so that we
control its environment (the private index, literal pathspecs) and parse its ``-z`` output.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import msgspec

from versatil_fs import config, events, faults, git
from versatil_fs.errors import (
    GitFailed,
    Refused,
    RestoreIncomplete,
    StateError,
    UsageError,
    VersatilError,
)
from versatil_fs.locks.manager import LockManager
from versatil_fs.locks.table import Grant, WriteLocks, ancestors
from versatil_fs.repo import Repository, default_agent
from versatil_fs.state import StateDir, _state_error, flocked

SCHEMA_VERSION = 1
REF_PREFIX = "refs/versatil/checkpoints/"
# Where a ref under REF_PREFIX that is not a checkpoint is moved aside to (kept, not deleted).
DAMAGED_PREFIX = "refs/versatil/damaged/"
# The one shape of a checkpoint id (see _new_id). Every id read from a ref name, a metadata file
# or the command line is matched against it before it names a file or a ref: an id is never a
# path ("../x", "a/b") and never selects anything outside refs/versatil/checkpoints/.
ID_PATTERN = re.compile(r"cp-[0-9]{8}-[0-9]{6}-[0-9a-f]{4}(?:-wave-[0-9]{1,9})?")
MAX_WAVE = 999_999_999  # a wave number's digits are bounded by ID_PATTERN
DEFAULT_MAX_CHECKPOINTS = 10
DEFAULT_LARGE_FILE_MB = 50.0

GITLINK_MODE = "160000"
_COMMITTER_EMAIL = "versatil@localhost"
# A scratch directory younger than this is never swept without its lock file, see _sweep.
_SCRATCH_GRACE_SECONDS = 3600.0
_STALE_TEMPORARY_SECONDS = 600.0

# Options every git command gets. splitIndex=false: a private copy of a split index is written
# back whole, so git never adds a `sharedindex.*` file to the user's .git for our scratch index.
# --literal-pathspecs: file names with `*`, `?`, `[` or a leading `:` mean themselves.
_GIT_OPTIONS = (
    "-c", "core.splitIndex=false",
    "-c", "advice.addEmbeddedRepo=false",
    "--literal-pathspecs",
)
# fast-import keeps what it writes as a pack whatever the number of objects (by default it
# explodes imports of fewer than 100 objects into loose files, one file creation each).
_IMPORT_OPTIONS = ("-c", "fastimport.unpackLimit=1")


def valid_id(checkpoint_id: str) -> bool:
    """Whether ``checkpoint_id`` has the one shape versatil gives checkpoint ids."""
    return ID_PATTERN.fullmatch(checkpoint_id) is not None


# Records ----------------------------------------------------------------------------------------
class CheckpointRecord(msgspec.Struct, kw_only=True):
    """One checkpoint: the schema on disk, in the API and in ``--json`` output."""

    version: int = SCHEMA_VERSION
    id: str
    commit: str
    tree: str
    parent: str | None = None  # HEAD when it was made; None on an unborn branch
    time: float
    message: str = ""
    agent: str = ""
    wave: int | None = None
    kind: str = "checkpoint"  # or "safety": made by a restore before it changed anything
    tasks: dict[str, str] = {}  # task id -> state, as the wave executor saw them
    files_modified: list[str] = []  # files differing from HEAD unless the caller said otherwise
    tests_run: list[str] = []
    errors: list[str] = []
    files: int | None = None  # entries in the checkpoint's tree (None when rebuilt from git)
    gitlinks: list[str] = []  # submodules and nested repositories: their commit, not contents
    large_files: dict[str, int] = {}  # new files above the warning size -> bytes
    warnings: list[str] = []
    restore_of: str | None = None  # safety checkpoints: the checkpoint being restored
    restore_complete: bool | None = None  # safety checkpoints: False until the restore ended
    recovered: bool = False  # rebuilt from the git commit: the metadata file was lost or damaged
    repo: str = ""  # the working tree it was made in, for people reading the file


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """One path that differs between two trees, seen from ``old`` to ``new``."""

    status: str  # "A" only in new, "D" only in old, "M" content or mode, "T" type
    path: str
    old_mode: str
    new_mode: str
    old_oid: str
    new_oid: str

    @property
    def is_gitlink(self) -> bool:
        return GITLINK_MODE in (self.old_mode, self.new_mode)


class RestoreResult(msgspec.Struct, kw_only=True):
    """What a restore did; ``safety_checkpoint`` undoes it (None when nothing had to change)."""

    version: int = SCHEMA_VERSION
    checkpoint: str
    safety_checkpoint: str | None
    restored: list[str] = []  # written from the checkpoint (modified or deleted since)
    removed: list[str] = []  # created since the checkpoint
    skipped: list[str] = []  # submodules / nested repositories, whose contents are not stored

    @property
    def changed(self) -> builtins.list[str]:
        return sorted([*self.restored, *self.removed])


class PruneResult(msgspec.Struct, kw_only=True):
    version: int = SCHEMA_VERSION
    kept: int
    removed: list[str] = []


_record_decoder = msgspec.json.Decoder(CheckpointRecord)
# (repository, ref, object) of damage already reported by this process: said once, not on every
# listing of one command.
_REPORTED: set[tuple[str, str, str]] = set()


def _encode_record(record: CheckpointRecord) -> bytes:
    """A record as JSON. A file name that is not UTF-8 (held as surrogate escapes, see
    :func:`_decode_path`) cannot be JSON: the file gets its printable form (``\\xNN``), as the
    event logs and ``--json`` do. Only descriptive fields hold paths (files modified, gitlinks,
    warnings); what a restore writes comes from the commit's tree, byte for byte."""
    try:
        data = msgspec.json.encode(record)
    except UnicodeEncodeError:
        data = msgspec.json.encode(events.printable(record))
    return msgspec.json.format(data, indent=2) + b"\n"


def _decode_record(data: bytes) -> CheckpointRecord:
    return _record_decoder.decode(data)


# The lock manager's records, as far as a restore needs them ------------------------------------
def _ancestors(path: str) -> Iterator[str]:
    """``a/b/c`` -> ``a/b/c``, ``a/b``, ``a``, ``.``: every selection that would cover it."""
    return ancestors(path)


def _covered(path: str, selection: set[str] | dict[str, str]) -> bool:
    return any(candidate in selection for candidate in _ancestors(path))


def write_lock_conflicts(
    grants: Iterable[Grant], paths: Iterable[str], *, repo_key: str, agent: str
) -> builtins.list[tuple[str, str]]:
    """``(path, holder)`` for each path write-locked by an agent other than ``agent``.

    Read locks do not protect against a restore: a reader expects the file to change under it no
    more than under any other writer, and only writers lose work when it is overwritten.
    """
    locks = WriteLocks(grants, repo_key, except_agent=agent)
    conflicts = []
    for path in paths:
        hit = locks.holder(path)
        if hit is not None:
            conflicts.append((path, hit[0].agent))
    return conflicts


# Files modified by agents ----------------------------------------------------------------------
def record_files_modified(
    repo: Repository,
    agent: str,
    paths: builtins.list[str],
    *,
    wave: int | None = None,
    task: str | None = None,
    state: StateDir | None = None,
) -> None:
    """Record that ``agent`` modified ``paths`` (repo-relative POSIX), for ``restore --agent``.

    The run wrapper and the monitor call this; a restore by agent or wave reads these events back
    (from the same ``state`` directory: default $VERSATIL_HOME).
    """
    # The event log is UTF-8 JSON: a name that is not UTF-8 goes in `paths_hex` as its bytes,
    # so that `restore --agent` selects exactly that file (a printable stand-in could name
    # another one).
    extra: dict[str, Any] = {}
    raw = [os.fsencode(p).hex() for p in paths if _has_surrogates(p)]
    if raw:
        extra["paths_hex"] = raw
    events.emit(
        "collision-detection",
        "files-modified",
        agent=agent,
        repo=str(repo.common_dir),
        paths=[p for p in paths if not _has_surrogates(p)],
        wave=wave,
        task=task,
        state=state,
        **extra,
    )


@dataclass(frozen=True)
class _Modification:
    agent: str | None
    wave: int | None
    paths: tuple[str, ...]


def _modifications_since(
    repo_key: str, since: float, state: StateDir
) -> builtins.list[_Modification]:
    found = []
    for event in events.read("collision-detection", state=state):
        if event.kind != "files-modified" or event.repo != repo_key or event.time <= since:
            continue
        raw_paths = builtins.list(event.data.get("paths") or [])
        for encoded in event.data.get("paths_hex") or []:
            with contextlib.suppress(TypeError, ValueError):
                raw_paths.append(os.fsdecode(bytes.fromhex(encoded)))
        wave = event.data.get("wave")
        paths = tuple(_clean_recorded(p) for p in raw_paths if isinstance(p, str) and p)
        found.append(_Modification(event.agent, wave if isinstance(wave, int) else None, paths))
    return found


def _clean_recorded(path: str) -> str:
    while path.startswith("./"):
        path = path[2:]
    return path.rstrip("/") or "."


# The API ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Snapshot:
    """The working tree staged into a private index (its blobs stored), not yet a tree."""

    head: str | None
    index: Path  # the private index, describing the working tree as it was snapshotted
    embedded: tuple[str, ...]  # nested repositories git added as gitlinks


class Checkpoints:
    """Create, list, show, diff, restore and prune the checkpoints of one repository."""

    def __init__(
        self,
        repo: str | os.PathLike[str] = ".",
        *,
        state: StateDir | None = None,
        large_file_mb: float | None = None,
    ) -> None:
        self.repo = Repository.find(repo)
        self._state = state or StateDir()
        self.key = str(self.repo.common_dir)
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:16]
        self._dir = self._state.subdir("checkpoints", digest)
        self._large_file_mb = large_file_mb
        self._config: Any = None
        # Every command cleans up after processes killed mid-create or mid-restore.
        self._scratch = self._state.subdir("checkpoints", digest, "scratch")
        _sweep(self._scratch)
        _sweep_staging(self.repo.git_dir)

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
    ) -> CheckpointRecord:
        """Checkpoint the whole working tree; prunes to ``max_checkpoints`` afterwards."""
        if wave is not None and not 0 <= wave <= MAX_WAVE:
            raise UsageError(f"A wave number is 0 to {MAX_WAVE:,}, not {wave}.")
        started = time.time()
        with self._private_index() as index, _in_background(
            lambda: agent or default_agent(self.repo)
        ) as who:
            # Finding the default agent may run `git config`: it runs while git adds files.
            snapshot = self._snapshot(index)
            agent = who()
            record = self._commit(
                snapshot,
                started=started,
                message=message or "",
                agent=agent,
                wave=wave,
                tasks=tasks,
                files_modified=files_modified,
                tests_run=tests_run,
                errors=errors,
            )
        self._emit_done(
            "checkpoints", "create", agent=agent, repo=self.key, id=record.id,
            message=record.message, wave=wave, files=record.files, commit=record.commit,
        )
        if prune:
            self._auto_prune()
        return record

    # List / show / diff ----------------------------------------------------------------------
    def show(self, checkpoint_id: str) -> CheckpointRecord:
        """The checkpoint with this id or unique id prefix; ``UsageError`` otherwise."""
        return self._resolve(checkpoint_id)

    def diff(self, checkpoint_id: str) -> builtins.list[Change]:
        """What changed in the working tree since the checkpoint (statuses seen from it)."""
        record = self._resolve(checkpoint_id)
        with self._private_index() as index:
            snapshot = self._snapshot(index)
            return _parse_raw_diff(self._diff_index(snapshot, record.tree))

    def diff_patch(self, checkpoint_id: str) -> bytes:
        """The same difference as a patch, as ``git diff`` prints it."""
        record = self._resolve(checkpoint_id)
        with self._private_index() as index:
            self._snapshot(index)
            return self._git("diff", "--cached", "--no-color", "--binary", record.tree,
                             index=index)

    def interrupted_restores(
        self, records: Sequence[CheckpointRecord] | None = None
    ) -> builtins.list[CheckpointRecord]:
        """Safety checkpoints of restores whose process died before finishing (among
        ``records``, default every checkpoint)."""
        listed = self.list() if records is None else records
        pending = [r for r in listed if r.kind == "safety" and r.restore_complete is False]
        if not pending:
            return []
        fd = self._state.open_lock_file(self._dir / "restore.lock")
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []  # a restore is running right now; its record is not stale
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return pending

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
    ) -> RestoreResult:
        """Bring the working tree (all of it, or a selection) back to the checkpoint.

        ``paths`` (relative to the repository root, or absolute) selects files and directories;
        ``agent`` and ``wave`` select the files that agent / wave recorded as modified after the
        checkpoint. Several selections intersect. A file write-locked by an agent other than the
        one restoring is refused (``Refused``) unless ``force``. The one restoring is ``by``,
        else ``agent`` (rolling back an agent's files is done on its behalf, so its own locks do
        not block it), else the current agent ($VERSATIL_AGENT, git config, login name).
        The safety checkpoint counts towards ``max_checkpoints``; ``prune=False`` skips the
        pruning after it (for callers that still need the oldest checkpoints).
        """
        target = self._resolve(checkpoint_id)
        restorer = by or agent or default_agent(self.repo)
        parents: dict[str, str] = {}
        wanted = None if paths is None else [self._normalize(p, parents) for p in paths]
        selective = wanted is not None or agent is not None or wave is not None
        lock_fd = self._state.open_lock_file(self._dir / "restore.lock")
        try:
            # One restore at a time per repository: two interleaved restores would each make a
            # safety checkpoint of a tree the other is half-way through rewriting.
            with flocked(lock_fd), self._private_index() as index:
                snapshot = self._snapshot(index)
                # What the safety checkpoint will need is worked out while the restore decides
                # what to change (and thrown away if nothing is to change).
                with _in_background(lambda: self._describe(snapshot)) as described:
                    # From the working tree (as staged) to the target: -R turns the
                    # tree-to-index comparison around. No tree is written unless there is
                    # something to restore.
                    changes = _parse_raw_diff(self._diff_index(snapshot, target.tree, "-R"))
                    if selective:
                        changes = self._select(changes, target, wanted, agent, wave, force)
                    if not changes:
                        self._emit_done(
                            "checkpoints", "restore", agent=restorer, repo=self.key,
                            checkpoint=target.id, safety=None, restored=0, removed=0,
                        )
                        return RestoreResult(checkpoint=target.id, safety_checkpoint=None)
                    if not force:
                        self._refuse_locked(changes, target, restorer)
                    description = described()
                    in_the_way = self._unsaved_in_the_way(changes)
                    if in_the_way:
                        # Content the snapshot does not hold (ignored now) would be overwritten
                        # or deleted: it goes into the safety checkpoint too, forced.
                        self._save_in_the_way(snapshot.index, in_the_way, target, force)
                        description = self._describe(snapshot)
                    safety = self._commit(
                        snapshot,
                        started=time.time(),
                        message=f"before restoring {target.id}",
                        agent=restorer,
                        kind="safety",
                        restore_of=target.id,
                        described=description,
                    )
                    try:
                        result = self._apply(target, safety, changes)
                    except RestoreIncomplete as exc:
                        if exc.restored:
                            raise  # the safety record says unfinished: list points at it
                        # Nothing changed: the safety checkpoint is only a copy of the tree.
                        safety.restore_complete = True
                        with contextlib.suppress(StateError):
                            self._write_record(safety, durable=False)
                        exc.safety = safety.id
                        raise
                    safety.restore_complete = True
                    # Not fsynced: losing this update in a power cut only makes `list` call the
                    # restore interrupted, which sends the user to the same safety checkpoint.
                    try:
                        self._write_record(safety, durable=False)
                    except StateError as exc:
                        # The files are restored: an error now would say nothing was changed.
                        print(f"versatil: restored, but {safety.id} could not be marked as "
                              f"finished ({_reason(exc)}); `list` will call it interrupted.",
                              file=sys.stderr)
        finally:
            os.close(lock_fd)
        self._emit_done(
            "checkpoints", "restore", agent=restorer, repo=self.key, checkpoint=target.id,
            safety=safety.id, restored=len(result.restored), removed=len(result.removed),
            paths=result.changed[:100], forced=force,
        )
        if prune:
            self._auto_prune()
        return result

    # Prune ----------------------------------------------------------------------------------
    def _auto_prune(self) -> None:
        # Metadata files are one per checkpoint (written right after its ref), so while there
        # are no more of them than we keep, there is nothing to prune and no need to ask git.
        keep = self.max_checkpoints()
        if sum(1 for _ in self._dir.glob("*.json")) > keep:
            try:
                self.prune(keep)
            except VersatilError as exc:
                # The checkpoint or restore this follows is done: an error here must not make
                # the caller believe it was not.
                print(f"versatil: done, but pruning old checkpoints failed ({_reason(exc)}).",
                      file=sys.stderr)

    def prune(self, keep: int | None = None) -> PruneResult:
        """Delete the oldest checkpoints beyond ``keep`` (default ``max_checkpoints``)."""
        if keep is None:
            keep = self.max_checkpoints()
        if keep < 0:
            raise UsageError(f"--keep must be 0 or more, not {keep}.")
        lock_fd = self._state.open_lock_file(self._dir / "prune.lock")
        try:
            with flocked(lock_fd):
                # Metadata names first, refs second: a create writes its ref before its metadata,
                # so every metadata file listed here has its ref in the listing below.
                names = {p.stem for p in self._dir.glob("*.json")}
                records = self.list()
                doomed = records[: max(0, len(records) - keep)]
                self._delete_refs(doomed)
                live = {r.id for r in records} - {r.id for r in doomed}
                for name in names - live:
                    self._state.remove(self._dir / f"{name}.json")
                self._remove_stale_temporaries()
        finally:
            os.close(lock_fd)
        removed = [r.id for r in doomed]
        if removed:
            self._emit_done("checkpoints", "prune", repo=self.key, removed=removed, kept=keep)
        return PruneResult(kept=len(records) - len(removed), removed=removed)

    def _remove_stale_temporaries(self) -> None:
        # A process killed inside StateDir.write_atomic leaves its `.<id>.json.<pid>.<ns>.tmp`.
        # A live write lasts milliseconds, so one this old can only be from a dead writer.
        cutoff = time.time() - _STALE_TEMPORARY_SECONDS
        for path in self._dir.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                if path.lstat().st_mtime < cutoff:
                    self._state.remove(path)

    def max_checkpoints(self) -> int:
        """``checkpoints.max_checkpoints`` from the configuration (default 10)."""
        value = getattr(self._settings(), "max_checkpoints", None)
        return DEFAULT_MAX_CHECKPOINTS if value is None else int(value)

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
            self._config = config.load(self.repo.toplevel, state=self._state)
        return getattr(self._config, "checkpoints", None)

    # Listing (defined last: inside the class body `list` names this method) -----------------
    def list(self) -> builtins.list[CheckpointRecord]:
        """Every checkpoint of the repository, oldest first.

        A ref under ``refs/versatil/checkpoints/`` that is not a checkpoint (a name of another
        shape, or pointing at something that is not a commit) is damaged: it is moved aside to
        ``refs/versatil/damaged/`` (said once, on stderr) and the others are listed as usual.
        """
        records = []
        for refname, oid, kind, tree in self._checkpoint_refs():
            checkpoint_id = refname[len(REF_PREFIX) :]
            if not valid_id(checkpoint_id):
                self._damaged_ref(refname, oid, "its name is not a checkpoint id")
            elif kind != "commit" or not tree:
                self._damaged_ref(refname, oid, f"it points at a {kind or 'missing object'}, "
                                                "not a commit")
            else:
                record = self._load(checkpoint_id, oid, tree)
                if record is not None:
                    records.append(record)
        records.sort(key=lambda r: (r.time, r.id))
        return records

    def _checkpoint_refs(self) -> builtins.list[tuple[str, str, str, str]]:
        """``(refname, object, object type, tree)`` of every ref under REF_PREFIX."""
        fmt = "--format=%(refname)%00%(objectname)%00%(objecttype)%00%(tree)"
        proc = self._spawn("for-each-ref", fmt, REF_PREFIX)
        out, _ = proc.communicate()
        if proc.returncode == 0:
            rows = []
            for line in out.split(b"\n"):
                if line:
                    name, oid, kind, tree = [*line.split(b"\0"), b"", b"", b""][:4]
                    rows.append((name.decode("utf-8", "surrogateescape"), oid.decode(),
                                 kind.decode(), tree.decode()))
            return rows
        # for-each-ref gives up on the whole listing when one ref names a missing object: list
        # the names alone, and ask cat-file about each object (it answers "missing" for one).
        names = self._git("for-each-ref", "--format=%(refname)%00%(objectname)", REF_PREFIX)
        pairs = [line.split(b"\0", 1) for line in names.split(b"\n") if b"\0" in line]
        query = b"".join(oid + b"\n" + oid + b"^{tree}\n" for _, oid in pairs)
        answers = self._git("cat-file", "--batch-check=%(objectname) %(objecttype)",
                            stdin=query).decode().splitlines()
        found = []
        for i, (name, oid) in enumerate(pairs):
            own = answers[2 * i].split() if 2 * i < len(answers) else []
            root = answers[2 * i + 1].split() if 2 * i + 1 < len(answers) else []
            what = own[1] if len(own) == 2 and own[1] != "missing" else ""
            found.append((name.decode("utf-8", "surrogateescape"), oid.decode(), what,
                          root[0] if len(root) == 2 and root[1] == "tree" else ""))
        return found

    def _damaged_ref(self, refname: str, oid: str, reason: str) -> None:
        """Move a ref that is not a checkpoint out of REF_PREFIX (kept, not deleted), once."""
        rest = refname[len(REF_PREFIX) :]
        aside = DAMAGED_PREFIX + rest
        exists = self._spawn("rev-parse", "-q", "--verify", aside)
        exists.communicate()
        if exists.returncode == 0:
            aside = f"{aside}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}"
        # One transaction naming the old value: if another process moves (or a user fixes) the
        # ref meanwhile, this one fails and changes nothing.
        script = (b"create " + os.fsencode(aside) + b" " + oid.encode() + b"\n"
                  + b"delete " + os.fsencode(refname) + b" " + oid.encode() + b"\n")
        proc = self._spawn("update-ref", "--stdin")
        proc.communicate(script)
        key = (self.key, refname, oid)
        if proc.returncode == 0:
            where = f"moved it aside to {printable(aside)}"
        elif key in _REPORTED:
            return
        else:
            where = "skipped it (it could not be moved aside)"
        _REPORTED.add(key)
        print(f"versatil: {printable(refname)} is not a checkpoint ({reason}); {where}.",
              file=sys.stderr)

    def _emit_done(self, stream: str, kind: str, **fields: Any) -> None:
        """Log something that has already happened to the refs, the metadata or the tree.

        A full disk on the event log must not turn a change that was made into an error that
        says nothing was changed (a checkpoint the user then believes missing), so the
        failure is one line on stderr and the change stands.
        """
        try:
            # names not UTF-8: printable (events.emit)
            events.emit(stream, kind, state=self._state, **fields)
        except StateError as exc:
            cause = exc.__cause__
            detail = cause.strerror if isinstance(cause, OSError) and cause.strerror else exc
            print(
                f"versatil: done, but the {kind!r} event could not be written to "
                f"{self._state.event_log(stream)} ({detail}).",
                file=sys.stderr,
            )

    # Internals: git ---------------------------------------------------------------------------
    def _spawn(
        self, *args: str, index: Path | None = None, extra: dict[str, str] | None = None,
        stdin: IO[bytes] | int = subprocess.PIPE,
    ) -> subprocess.Popen[bytes]:
        """``git <args>`` in the working tree, on the private ``index`` if one is given."""
        env = dict(extra or {})
        if index is not None:
            env["GIT_INDEX_FILE"] = str(index)  # set on purpose: git.py drops an inherited one
        return git.spawn([*_GIT_OPTIONS, *args], cwd=self.repo.toplevel, env=env, stdin=stdin)

    def _finish(
        self, proc: subprocess.Popen[bytes], args: Sequence[str], stdin: bytes | None = None
    ) -> tuple[bytes, bytes]:
        result = git.finish(proc, args, stdin)
        return result.stdout, result.stderr

    def _git(
        self,
        *args: str,
        index: Path | None = None,
        stdin: bytes | None = None,
        extra: dict[str, str] | None = None,
    ) -> bytes:
        return self._finish(self._spawn(*args, index=index, extra=extra), args, stdin)[0]

    # Internals: scratch index ----------------------------------------------------------------
    @contextlib.contextmanager
    def _private_index(self) -> Iterator[Path]:
        """A scratch directory holding a copy of the user's index; removed on the way out."""
        with _scratch_dir(self._scratch) as directory:
            index = directory / "index"
            try:
                _copy_index(self.repo.git_dir / "index", index)
            except OSError as exc:
                # The copy goes to the state directory: a full disk there is a StateError.
                raise _state_error(index, exc) from exc
            yield index

    def _snapshot(self, index: Path) -> _Snapshot:
        """``git add -A`` into the private index: every file's blob is stored, no tree yet.

        What is on disk is what is stored, whatever the index's flags say: ``git add`` skips a
        file marked ``--assume-unchanged`` or ``--skip-worktree`` (it keeps the index's blob),
        so a restore would overwrite an edit its safety checkpoint never saw. Such entries
        (listed while ``add`` runs, so the common case costs no extra wait) lose their flag in
        the private copy and are added again. A skip-worktree file absent from the disk is a
        sparse checkout's, not a deletion: it keeps its flag and its blob.
        """
        head_proc = self._spawn("rev-parse", "-q", "--verify", "HEAD^{commit}")
        flags_proc = self._spawn("ls-files", "-v", "-z", index=index)
        try:
            # LC_ALL=C: the "adding embedded git repository" warning is parsed below.
            add = self._spawn("add", "-A", index=index, extra={"LC_ALL": "C"})
            _, err = self._finish(add, ("add", "-A"))
            flagged, _ = self._finish(flags_proc, ("ls-files", "-v"))
        finally:
            head_out, _ = head_proc.communicate()
            if flags_proc.returncode is None:
                flags_proc.kill()
                flags_proc.communicate()
        self._add_flagged(index, flagged)
        head = head_out.decode().strip() if head_proc.returncode == 0 else None
        embedded = tuple(
            line.split("adding embedded git repository:", 1)[1].strip()
            for line in err.decode("utf-8", "replace").splitlines()
            if "adding embedded git repository:" in line
        )
        return _Snapshot(head=head, index=index, embedded=embedded)

    def _add_flagged(self, index: Path, listing: bytes) -> None:
        """Clear assume-unchanged / skip-worktree in the private index and add those files
        (``listing``: ``git ls-files -v -z``, whose tag is lower case for assume-unchanged and
        ``S`` for skip-worktree)."""
        # The common case, counted in C: every entry is tagged "H " (a path holds no NUL, so
        # "\0H " only starts an entry).
        if listing.count(b"\0") == listing.count(b"\0H ") + listing.startswith(b"H "):
            return
        assumed: builtins.list[bytes] = []
        skipped: builtins.list[bytes] = []
        for entry in listing.split(b"\0"):
            tag, path = entry[:1], entry[2:]
            if not path or tag == b"H":
                continue
            present = os.path.lexists(self.repo.toplevel / os.fsdecode(path))
            if tag.upper() == b"S":
                if not present:
                    continue  # outside the sparse checkout: not on disk, not deleted
                skipped.append(path)
            if tag.islower():
                assumed.append(path)
        if not assumed and not skipped:
            return
        # One flag per run: update-index applies only the first of two such options to paths
        # read from --stdin.
        for option, paths in (("--no-assume-unchanged", assumed),
                              ("--no-skip-worktree", skipped)):
            if paths:
                self._git("update-index", option, "-z", "--stdin", index=index,
                          stdin=b"\0".join(paths) + b"\0")
        every = sorted(set(assumed) | set(skipped))
        self._git("add", "-A", "--pathspec-from-file=-", "--pathspec-file-nul", index=index,
                  stdin=b"\0".join(every) + b"\0")

    def _diff_index(self, snapshot: _Snapshot, tree: str, *options: str) -> bytes:
        """Raw ``-z`` differences from ``tree`` to the snapshot (``-R``: the other way)."""
        return self._git("diff-index", "--cached", "-z", "--no-renames", *options, tree,
                         index=snapshot.index)

    def _describe(self, snapshot: _Snapshot) -> tuple[bytes, bytes]:
        """The snapshot's listing (file count, gitlinks) and its differences from HEAD (what goes
        into the commit, files modified, large new files), computed side by side."""
        ls_proc = self._spawn("ls-files", "-s", "-z", index=snapshot.index)
        try:
            diff_out = self._diff_index(snapshot, snapshot.head) if snapshot.head else b""
        finally:
            ls_out, ls_err = ls_proc.communicate()
        if ls_proc.returncode != 0:
            raise GitFailed(("ls-files",), ls_proc.returncode, ls_err)
        return ls_out, diff_out

    def _commit(
        self,
        snapshot: _Snapshot,
        *,
        started: float,
        message: str,
        agent: str,
        wave: int | None = None,
        kind: str = "checkpoint",
        tasks: dict[str, str] | None = None,
        files_modified: builtins.list[str] | None = None,
        tests_run: builtins.list[str] | None = None,
        errors: builtins.list[str] | None = None,
        restore_of: str | None = None,
        described: tuple[bytes, bytes] | None = None,
    ) -> CheckpointRecord:
        """Commit the snapshot under a new ref, then write its metadata (durably).

        ``described`` is :meth:`_describe`'s result if the caller already has it.
        """
        ls_out, diff_out = described or self._describe(snapshot)
        files, gitlinks = _count_index(ls_out)
        # On an unborn branch every file is new.
        against_head = _parse_raw_diff(diff_out) if snapshot.head else _all_added(ls_out)
        checkpoint_id = _new_id(started, wave)
        body = _commit_message(message, agent=agent, wave=wave, kind=kind, started=started)
        stream = _import_stream(REF_PREFIX + checkpoint_id, snapshot.head, against_head,
                                name=_clean_name(agent), when=int(started), message=body)
        commit, tree, clash = self._import(stream, snapshot.index.parent)
        if clash:
            checkpoint_id = self._create_ref(commit, started, wave)
        try:
            large = self._large_new_files(against_head)
            record = CheckpointRecord(
                id=checkpoint_id,
                commit=commit,
                tree=tree,
                parent=snapshot.head,
                time=started,
                message=message,
                agent=agent,
                wave=wave,
                kind=kind,
                tasks=dict(tasks or {}),
                files_modified=(
                    list(files_modified) if files_modified is not None
                    else [c.path for c in against_head]
                ),
                tests_run=list(tests_run or []),
                errors=list(errors or []),
                files=files,
                gitlinks=gitlinks,
                large_files=large,
                warnings=_warnings(gitlinks, snapshot.embedded, large),
                restore_of=restore_of,
                restore_complete=False if kind == "safety" else None,
                repo=str(self.repo.toplevel),
            )
            self._write_record(record)
        except BaseException as exc:
            # All or nothing: a checkpoint the caller is told failed must not exist. The ref
            # goes (its objects are garbage git collects); only if that fails too does the
            # error say the checkpoint exists, listed from its commit.
            undone = self._spawn("update-ref", "-d", REF_PREFIX + checkpoint_id, commit)
            undone.communicate()
            if undone.returncode == 0 or not isinstance(exc, VersatilError):
                raise
            raise GitFailed(message=
                f"Checkpoint {checkpoint_id} was made but its metadata could not be written "
                f"({_reason(exc)}); `versatil checkpoint list` shows it, rebuilt from its commit."
            ) from exc
        return record

    def _import(self, stream: bytes, scratch: Path) -> tuple[str, str, bool]:
        """Run ``git fast-import`` on ``stream``: (commit, tree, whether the ref was taken).

        fast-import builds the trees from HEAD's plus the changed paths and writes them and the
        commit as one pack (see the module docstring). The stream goes through a file, not a
        pipe, so that a process killed mid-write never hands git a truncated stream; ``done`` at
        its end makes git refuse one that is cut short all the same.
        """
        path = scratch / "import"
        try:
            path.write_bytes(stream)
        except OSError as exc:
            raise _state_error(path, exc) from exc
        faults.point("checkpoint.before-commit")  # blobs stored, no tree, commit or ref yet
        with open(path, "rb") as source:
            # LC_ALL=C: its "Not updating" refusal is recognised below.
            proc = self._spawn(*_IMPORT_OPTIONS, "fast-import", "--quiet", "--done",
                               stdin=source, extra={"LC_ALL": "C"})
            out, err = proc.communicate()
        lines = out.decode().splitlines()
        commit = lines[0].strip() if lines else ""
        if proc.returncode != 0:
            # git leaves a crash report in .git when fast-import dies: ours to clean up.
            for directory in {self.repo.git_dir, self.repo.common_dir}:
                with contextlib.suppress(OSError):
                    os.unlink(directory / f"fast_import_crash_{proc.pid}")
            if commit and b"Not updating" in err:
                # The ref exists: another checkpoint drew the same id in the same second.
                return commit, self._tree_of(commit, lines), True
            raise GitFailed(("fast-import",), proc.returncode, err)
        return commit, self._tree_of(commit, lines), False

    def _tree_of(self, commit: str, lines: builtins.list[str]) -> str:
        # The stream's `ls :1 ""` printed "040000 tree <oid>\t"; an empty root prints "missing".
        fields = lines[1].split() if len(lines) > 1 else []
        if len(fields) >= 3 and fields[1] == "tree":
            return fields[2]
        return self._git("rev-parse", f"{commit}^{{tree}}").decode().strip()

    def _create_ref(self, commit: str, started: float, wave: int | None) -> str:
        for _ in range(20):
            checkpoint_id = _new_id(started, wave)
            proc = self._spawn(
                "update-ref", "-m", "versatil checkpoint", REF_PREFIX + checkpoint_id, commit, ""
            )
            _, err = proc.communicate()
            if proc.returncode == 0:
                return checkpoint_id
            if b"already exists" not in err:
                raise GitFailed(("update-ref",), proc.returncode, err)
            # Two checkpoints in the same second drew the same random suffix: draw again.
        raise GitFailed(message="Could not find a free checkpoint id after 20 attempts.")

    def _delete_refs(self, records: Sequence[CheckpointRecord]) -> None:
        if not records:
            return
        # One transaction that names each ref's current commit: all go or none, and a ref that
        # was moved meanwhile (by hand) is not deleted behind the user's back.
        script = "".join(f"delete {REF_PREFIX}{r.id} {r.commit}\n" for r in records)
        try:
            self._git("update-ref", "--stdin", stdin=script.encode())
        except GitFailed:
            # Someone deleted one of them already; delete the rest one by one.
            for record in records:
                with contextlib.suppress(GitFailed):
                    self._git("update-ref", "-d", REF_PREFIX + record.id, record.commit)

    def _write_record(self, record: CheckpointRecord, *, durable: bool = True) -> None:
        if not valid_id(record.id):
            raise UsageError(f"{record.id!r} is not a checkpoint id.")
        self._state.write_atomic(self._dir / f"{record.id}.json", _encode_record(record),
                                 durable=durable)

    def _large_new_files(self, against_head: Iterable[Change]) -> dict[str, int]:
        large: dict[str, int] = {}
        limit: int | None = None
        for change in against_head:
            if change.status != "A" or change.new_mode == GITLINK_MODE:
                continue
            try:
                size = os.lstat(self.repo.toplevel / change.path).st_size
            except OSError:
                continue
            if limit is None:
                limit = self.large_file_bytes()
            if size > limit:
                large[change.path] = size
        return large

    # Internals: reading records --------------------------------------------------------------
    def _load(self, checkpoint_id: str, oid: str, tree: str) -> CheckpointRecord | None:
        """The record of a valid checkpoint ref (``checkpoint_id`` matches ID_PATTERN and
        ``oid`` is a commit of root ``tree``); None if even its commit cannot be read.

        Nothing in the metadata file is trusted that git can tell us: a record must name the
        ref's commit and that commit's tree (a record naming another tree would make a restore
        write that tree), else it is damaged, moved aside and rebuilt from the commit.
        """
        path = self._dir / f"{checkpoint_id}.json"
        data = self._state.read_bytes(path)
        if data is not None:
            try:
                record = _decode_record(data)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                self._state.move_aside(path, f"not a checkpoint record: {exc}")
            else:
                if record.version != SCHEMA_VERSION:
                    # Decoding ignores what it does not know: a record of another schema would
                    # be read as this one and quietly misunderstood.
                    self._state.move_aside(path, f"schema version {record.version}; this "
                                                 f"versatil reads version {SCHEMA_VERSION}")
                elif record.commit == oid and record.id == checkpoint_id and record.tree == tree:
                    return record
                elif record.commit != oid or record.id != checkpoint_id:
                    self._state.move_aside(path, f"it describes commit {record.commit[:12]}, "
                                                 f"but the ref points at {oid[:12]}")
                else:
                    self._state.move_aside(path, f"it names tree {record.tree[:12]}, but "
                                                 f"commit {oid[:12]} has tree {tree[:12]}")
            rebuilt = self._from_commit(checkpoint_id, oid, tree)
            if rebuilt is not None:
                # Best effort: on a full disk the rebuilt record serves from memory this time.
                with contextlib.suppress(StateError):
                    self._write_record(rebuilt)
            return rebuilt
        # No metadata: a create may be between its ref update and its metadata write, so this
        # is only rebuilt in memory; writing it could overwrite the real record a moment later.
        return self._from_commit(checkpoint_id, oid, tree)

    def _from_commit(self, checkpoint_id: str, oid: str, tree: str) -> CheckpointRecord | None:
        try:
            raw = self._git("cat-file", "commit", oid).decode("utf-8", "replace")
        except GitFailed as exc:
            damage = (self.key, REF_PREFIX + checkpoint_id, oid)
            if damage not in _REPORTED:
                _REPORTED.add(damage)
                print(f"versatil: checkpoint {checkpoint_id} is damaged ({exc}); skipped it.",
                      file=sys.stderr)
            return None
        header, _, message = raw.partition("\n\n")
        fields: dict[str, str] = {}
        committed = 0.0
        for line in header.splitlines():
            key, _, value = line.partition(" ")
            if key in ("tree", "parent"):
                fields.setdefault(key, value)
            elif key == "committer":
                with contextlib.suppress(ValueError, IndexError):
                    committed = float(value.rsplit(" ", 2)[1])
        text, trailers = _split_trailers(message)
        wave = trailers.get("Versatil-Wave")
        try:
            when = float(trailers.get("Versatil-Time", committed))
        except ValueError:
            when = committed
        return CheckpointRecord(
            id=checkpoint_id,
            commit=oid,
            tree=tree,
            parent=fields.get("parent"),
            time=when,
            message=text,
            agent=trailers.get("Versatil-Agent", ""),
            wave=int(wave) if wave and wave.isdigit() else None,
            kind=trailers.get("Versatil-Kind", "checkpoint"),
            recovered=True,
            warnings=["Metadata was rebuilt from the git commit: task states, tests and "
                      "errors recorded with the checkpoint are not available."],
            repo=str(self.repo.toplevel),
        )

    def _resolve(self, checkpoint_id: str) -> CheckpointRecord:
        wanted = checkpoint_id.strip()
        if wanted.startswith(REF_PREFIX):
            wanted = wanted[len(REF_PREFIX) :]
        if not wanted:
            raise UsageError("Name a checkpoint id; `versatil checkpoint list` shows them.")
        records = self.list()
        exact = [r for r in records if r.id == wanted]
        if exact:
            return exact[0]
        matches = [r for r in records if r.id.startswith(wanted)]
        if not matches and not wanted.startswith("cp-"):
            matches = [r for r in records if r.id.startswith("cp-" + wanted)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise UsageError(
                f"No checkpoint '{printable(checkpoint_id)}' in {self.repo.toplevel}; "
                "`versatil checkpoint list` shows the ids."
            )
        names = ", ".join(r.id for r in matches[:10]) + (", ..." if len(matches) > 10 else "")
        raise UsageError(
            f"'{printable(checkpoint_id)}' matches {len(matches)} checkpoints ({names}); "
            "give more of the id."
        )

    # Internals: restore ----------------------------------------------------------------------
    def _normalize(self, raw: str | os.PathLike[str], parents: dict[str, str]) -> str:
        """Repo-relative POSIX path; the last component is kept even if it is a symlink.

        ``parents`` caches resolved directories: the paths of one restore share most of them.
        """
        text = os.fspath(raw)
        if not text:
            raise UsageError("An empty path cannot be restored; name a file or a directory.")
        absolute = Path(os.path.normpath(self.repo.toplevel / text))
        key = str(absolute.parent)
        if key not in parents:
            parents[key] = os.path.realpath(key)
        parent = Path(parents[key])
        candidate = parent if absolute.name in ("", ".") else parent / absolute.name
        try:
            rel = candidate.relative_to(self.repo.toplevel)
        except ValueError:
            raise UsageError(
                f"{printable(text)} is outside the repository {self.repo.toplevel}."
            ) from None
        if rel.parts and rel.parts[0] == ".git":
            raise UsageError(
                f"{printable(text)} is inside .git; checkpoints do not hold git's own files."
            )
        return rel.as_posix() if rel.parts else "."

    def _select(
        self,
        changes: builtins.list[Change],
        target: CheckpointRecord,
        paths: builtins.list[str] | None,
        agent: str | None,
        wave: int | None,
        force: bool,
    ) -> builtins.list[Change]:
        if paths is not None:
            # Sets of paths and their ancestors keep this linear in the number of changes:
            # restoring 1,000 paths must not compare every path with every change.
            selected = {p.strip("/") or "." for p in paths}
            touched = {a for c in changes for a in _ancestors(c.path)}
            for path in selected:
                if path not in touched and not os.path.lexists(self.repo.toplevel / path):
                    raise UsageError(
                        f"{printable(path)} is neither in the working tree nor in checkpoint "
                        f"{target.id}."
                    )
            changes = [c for c in changes if _covered(c.path, selected)]
        if agent is None and wave is None:
            return changes
        mods = _modifications_since(self.key, target.time, self._state)

        def chosen(mod: _Modification) -> bool:
            return (agent is None or mod.agent == agent) and (wave is None or mod.wave == wave)

        recorded = {p for m in mods if chosen(m) for p in m.paths}
        changes = [c for c in changes if _covered(c.path, recorded)]
        if not force:
            others = {p: m.agent or "someone" for m in mods if not chosen(m) for p in m.paths}
            for change in changes:
                who = next((others[a] for a in _ancestors(change.path) if a in others), None)
                if who is not None:
                    raise self._refusal(
                        f"Not restoring: {printable(change.path)} was also modified by {who} "
                        "after "
                        f"checkpoint {target.id}, so restoring it would undo their work too; "
                        "pass --force to restore it anyway.",
                        target, agent or "", [(change.path, who)],
                    )
        return changes

    def _refuse_locked(
        self, changes: Iterable[Change], target: CheckpointRecord, restorer: str
    ) -> None:
        # The lock table of this state directory: one given to Checkpoints(state=...) is where
        # its callers (a wave executor with its own state) take their locks.
        grants = LockManager(repo=str(self.repo.toplevel), state=self._state).holders()
        conflicts = write_lock_conflicts(
            grants, [c.path for c in changes], repo_key=self.key, agent=restorer
        )
        if not conflicts:
            return
        path, holder = conflicts[0]
        more = f" (and {len(conflicts) - 1} more locked files)" if len(conflicts) > 1 else ""
        raise self._refusal(
            f"Not restoring: {printable(path)} is write-locked by {holder}{more}; wait until "
            f"{holder} "
            "releases it, or pass --force to overwrite it.",
            target, restorer, conflicts,
        )

    def _refusal(
        self,
        message: str,
        target: CheckpointRecord,
        restorer: str,
        conflicts: builtins.list[tuple[str, str]],
    ) -> Refused:
        self._emit_done(
            "checkpoints", "restore-refused", agent=restorer or None, repo=self.key,
            checkpoint=target.id, conflicts=[f"{p} ({a})" for p, a in conflicts[:20]],
        )
        return Refused(message)

    def _apply(
        self, target: CheckpointRecord, safety: CheckpointRecord, changes: Iterable[Change]
    ) -> RestoreResult:
        """Change the working tree to the target's version of ``changes``.

        Every file is written whole or not at all: first all of them are checked out into a
        staging directory on the working tree's filesystem (a full disk stops the restore
        there, before any file changed), then the removals, then each staged file is renamed
        over its path. A process killed at any moment leaves each file old or new, never
        half-written; a failure part-way is a :class:`RestoreIncomplete` naming what was done.
        """
        result = RestoreResult(checkpoint=target.id, safety_checkpoint=safety.id)
        changes = builtins.list(changes)
        writes: builtins.list[Change] = []
        removals: builtins.list[Change] = []
        blocked = _Blocked(self.repo.toplevel, changes)
        for change in changes:
            if blocked(change):
                result.skipped.append(change.path)
            elif change.status == "D":
                removals.append(change)
            else:
                writes.append(change)
        with contextlib.ExitStack() as stack:
            try:
                stage = stack.enter_context(self._staging())
                if writes:
                    self._stage_files(writes, stage)
            except (VersatilError, OSError) as exc:
                raise RestoreIncomplete(
                    f"The restore of {target.id} changed nothing: the files could not be "
                    f"written ({_reason(exc)}).",
                    restored=[], not_restored=[c.path for c in [*removals, *writes]],
                    safety=None,
                ) from exc
            try:
                # Removals first: a path that was a file and is now a directory (or the
                # reverse) must be out of the way before the new one is renamed into place.
                for change in removals:
                    self._remove(change.path)
                    result.removed.append(change.path)
                faults.point("checkpoint.mid-restore")
                made: set[str] = set()
                for change in writes:
                    self._place(stage, change.path, made)
                    result.restored.append(change.path)
                    faults.point("checkpoint.mid-write")
            except OSError as exc:
                raise self._incomplete(target, safety, result, [*removals, *writes], exc) from exc
        return result

    def _incomplete(self, target: CheckpointRecord, safety: CheckpointRecord,
                    result: RestoreResult, planned: Sequence[Change],
                    exc: OSError) -> RestoreIncomplete:
        done = result.changed
        finished = set(done)
        left = [c.path for c in planned if c.path not in finished]

        def names(paths: Sequence[str]) -> str:
            shown = ", ".join(printable(p) for p in paths[:5])
            return shown + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")

        what = f"restored {len(done)} path(s) ({names(done)})" if done else "restored nothing"
        return RestoreIncomplete(
            f"The restore of {target.id} stopped part-way ({_reason(exc)}): it {what} and not "
            f"{len(left)} ({names(left)}); `versatil checkpoint restore {safety.id}` undoes "
            "what it did.",
            restored=done, not_restored=left, safety=safety.id,
        )

    def _remove(self, rel: str) -> None:
        path = self.repo.toplevel / rel
        if self._leading_symlink(path.parent):
            # Git never tracks a file below a symlink, so one appeared after the snapshot;
            # unlinking through it could delete a file outside the repository.
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            return  # became a directory after the snapshot: someone's new work, leave it
        except OSError as exc:
            if exc.errno != errno.EISDIR:
                raise
            return
        # Remove the directories this leaves empty, as git does; one with ignored files stays.
        parent = path.parent
        while parent != self.repo.toplevel:
            try:
                os.rmdir(parent)
            except OSError:
                break
            parent = parent.parent

    def _leading_symlink(self, directory: Path) -> bool:
        return os.path.realpath(directory) != str(directory)

    def _unsaved_in_the_way(self, changes: Sequence[Change]) -> builtins.list[str]:
        """Paths on disk that writing ``changes`` would overwrite or delete and that the
        snapshot does not hold: a file ignored now (it was not when the checkpoint was made),
        an ignored directory where the checkpoint has a file, a file where it has a
        directory. Paths the snapshot holds are in the diff as "D", "M" or "T"; an "A" path is
        not in the snapshot, so whatever stands there (or in the way above it) is not either.
        """
        removed = {c.path for c in changes if c.status == "D"}
        blocked = _Blocked(self.repo.toplevel, changes)
        found: builtins.list[str] = []
        seen: set[str] = set()
        for change in changes:
            if change.status != "A" or blocked(change):
                continue  # in the snapshot, or skipped by _apply
            parts = change.path.split("/")
            for i in range(1, len(parts)):
                above = "/".join(parts[:i])
                if above in seen or above in removed:
                    continue
                seen.add(above)
                try:
                    info = os.lstat(os.path.join(self.repo.toplevel, above))
                except OSError:
                    continue
                if not stat.S_ISDIR(info.st_mode):
                    found.append(above)  # a file or a symlink where a directory goes
            if os.path.lexists(os.path.join(self.repo.toplevel, change.path)):
                found.append(change.path)
        return found

    def _save_in_the_way(self, index: Path, paths: Sequence[str], target: CheckpointRecord,
                         force: bool) -> None:
        """Force-add ``paths`` (ignored ones included) to the safety checkpoint's index."""
        proc = self._spawn("add", "-f", "--pathspec-from-file=-", "--pathspec-file-nul",
                           index=index, extra={"LC_ALL": "C"})
        _, err = proc.communicate(b"".join(_path_bytes(p) + b"\0" for p in paths))
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

    @contextlib.contextmanager
    def _staging(self) -> Iterator[Path]:
        """A directory for the files a restore writes, on the working tree's filesystem (so
        each can be renamed into place) and out of git's sight: in the git directory, or at
        the top of the working tree if that is on another filesystem."""
        base = self.repo.git_dir
        try:
            if os.stat(base).st_dev != os.stat(self.repo.toplevel).st_dev:
                base = self.repo.toplevel
        except OSError:
            base = self.repo.toplevel
        _sweep_staging(base)
        directory = base / f"{_STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.mkdir(directory, 0o700)
        except OSError as exc:
            raise GitFailed(message=f"Could not create {directory}: {exc.strerror or exc}.") \
                from exc
        try:
            # Held while the directory is in use: _sweep_staging removes only what a dead
            # process left (the flock goes with its owner).
            fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
        except OSError:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink == 0:
                # A sweeper took the lock between our open and our flock, and removed it all.
                raise GitFailed(message=f"{directory} was removed while in use; run the "
                                "restore again.")
            yield directory / "tree"
        finally:
            shutil.rmtree(directory, ignore_errors=True)
            os.close(fd)

    def _stage_files(self, writes: builtins.list[Change], stage: Path) -> None:
        """Check the target's version of every path of ``writes`` out below ``stage``, from a
        tiny index holding only those paths (so filters, modes and symlinks come out as git
        would write them)."""
        info = b"".join(
            f"{c.new_mode} {c.new_oid}\t".encode() + _path_bytes(c.path) + b"\0" for c in writes
        )
        with _scratch_dir(self._scratch) as directory:
            tiny = directory / "index"
            self._git("update-index", "-z", "--index-info", index=tiny, stdin=info)
            self._git("checkout-index", "-a", f"--prefix={stage}/", index=tiny)

    def _place(self, stage: Path, rel: str, made: set[str]) -> None:
        """Rename the staged ``rel`` over its path in the working tree."""
        top = os.fsencode(self.repo.toplevel)
        name = _path_bytes(rel)
        parts = rel.split("/")
        # Every directory above it, as git would make them: never through a symlink, and a
        # file or symlink in the way (saved in the safety checkpoint) goes.
        for i in range(1, len(parts)):
            above = "/".join(parts[:i])
            if above in made:
                continue
            here = os.path.join(top, _path_bytes(above))
            try:
                info = os.lstat(here)
            except FileNotFoundError:
                os.mkdir(here)
            else:
                if not stat.S_ISDIR(info.st_mode):
                    os.unlink(here)
                    os.mkdir(here)
            made.add(above)
        final = os.path.join(top, name)
        try:
            info = os.lstat(final)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISDIR(info.st_mode):
                # An ignored directory where the checkpoint has a file: its files are in the
                # safety checkpoint (_unsaved_in_the_way); rmtree does not follow symlinks.
                shutil.rmtree(final)
        _move_into_place(os.path.join(os.fsencode(stage), name), final)


# Helpers ------------------------------------------------------------------------------------------
_T = TypeVar("_T")


@contextlib.contextmanager
def _in_background(work: Callable[[], _T]) -> Iterator[Callable[[], _T]]:
    """Run ``work`` in a thread; the yielded function waits for its result (or its error)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # handed to the caller, who re-raises it
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result() -> _T:
        thread.join()
        if "error" in box:
            raise box["error"]
        value: _T = box["value"]
        return value

    try:
        yield result
    finally:
        thread.join()


def checkpoint(message: str, repo: str | os.PathLike[str] = ".") -> CheckpointRecord:
    """One line for long scripts: ``checkpoint("migration-step1")``."""
    return Checkpoints(repo).create(message)


def _new_id(started: float, wave: int | None) -> str:
    # UTC so that ids sort by time whatever the machine's zone; the random part keeps parallel
    # creates in one second apart (a clash is detected by fast-import and drawn again).
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    return f"cp-{stamp}-{secrets.token_hex(2)}" + (f"-wave-{wave}" if wave is not None else "")


def _clean_name(agent: str) -> str:
    # git refuses identities made only of "crud" and strips <, > and newlines; keep it readable.
    cleaned = "".join(ch for ch in agent if ch not in "<>\n\r").strip()
    return cleaned or "versatil"


def _commit_message(message: str, *, agent: str, wave: int | None, kind: str,
                    started: float) -> str:
    # The trailers let `list` rebuild a checkpoint whose metadata file was lost.
    title = message.strip() or ("safety checkpoint" if kind == "safety" else "checkpoint")
    trailers = [f"Versatil-Agent: {_clean_name(agent)}", f"Versatil-Time: {started!r}",
                f"Versatil-Kind: {kind}"]
    if wave is not None:
        trailers.append(f"Versatil-Wave: {wave}")
    return f"{title}\n\n" + "\n".join(trailers) + "\n"


def _split_trailers(message: str) -> tuple[str, dict[str, str]]:
    body, _, last = message.rstrip("\n").rpartition("\n\n")
    trailers: dict[str, str] = {}
    lines = last.splitlines()
    if lines and all(line.startswith("Versatil-") and ": " in line for line in lines):
        for line in lines:
            key, _, value = line.partition(": ")
            trailers[key] = value
        return body, trailers
    return message.rstrip("\n"), trailers


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(exc).replace(" (nothing was changed)", "").rstrip(".")


def printable(text: str) -> str:
    """``text`` fit for one line of a terminal: bytes that are not UTF-8 (surrogate escapes)
    as ``\\xNN``, control characters (a newline in a file name) as escapes."""
    shown = os.fsencode(text).decode("utf-8", "backslashreplace") if _has_surrogates(text) \
        else text
    if shown.isprintable():
        return shown
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in shown)


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _path_bytes(path: str) -> bytes:
    return os.fsencode(path)


def _quoted(path: str) -> bytes:
    """A path as fast-import reads it: C-style quoted, so spaces, quotes, newlines, control
    characters and bytes that are not UTF-8 all mean themselves."""
    out = bytearray(b'"')
    for byte in _path_bytes(path):
        if byte in (0x22, 0x5C):  # " and \
            out += b"\\" + bytes([byte])
        elif byte < 0x20 or byte == 0x7F:
            out += b"\\%03o" % byte
        else:
            out.append(byte)
    out += b'"'
    return bytes(out)


def _import_stream(ref: str, head: str | None, changes: Iterable[Change], *, name: str,
                   when: int, message: str) -> bytes:
    """The fast-import commands that commit HEAD's tree with ``changes`` applied to ``ref``.

    Deletions come first: a file replaced by a directory (or the reverse) must be gone before
    its new entries are added. ``get-mark`` and ``ls`` print the commit and its root tree.
    """
    # surrogateescape: a message or name given as bytes that are not UTF-8 (an argv of such
    # bytes) goes into the commit as those bytes instead of failing half-way.
    body = message.encode("utf-8", "surrogateescape")
    who = f"{name} <{_COMMITTER_EMAIL}> {when} +0000".encode("utf-8", "surrogateescape")
    parts = [b"commit " + ref.encode() + b"\nmark :1\nauthor " + who + b"\ncommitter " + who
             + b"\ndata %d\n" % len(body) + body + b"\n"]
    if head:
        parts.append(b"from " + head.encode() + b"\n")
    changes = builtins.list(changes)
    parts.extend(b"D " + _quoted(c.path) + b"\n" for c in changes if c.status == "D")
    parts.extend(
        b"M " + c.new_mode.encode() + b" " + c.new_oid.encode() + b" " + _quoted(c.path) + b"\n"
        for c in changes if c.status != "D"
    )
    parts.append(b'\nget-mark :1\nls :1 ""\ndone\n')
    return b"".join(parts)


def _decode_path(raw: bytes) -> str:
    # surrogateescape keeps a file name that is not valid UTF-8 round-trippable to the disk.
    return os.fsdecode(raw)


def _parse_raw_diff(out: bytes) -> builtins.list[Change]:
    """Parse raw ``-z`` diff output (``diff-index``): ``:om nm oo no S\\0path\\0`` per change."""
    fields = out.split(b"\0")
    changes = []
    i = 0
    while i + 1 < len(fields):
        meta = fields[i]
        if not meta.startswith(b":"):
            i += 1
            continue
        old_mode, new_mode, old_oid, new_oid, status = meta[1:].decode().split(" ")
        changes.append(
            Change(
                status=status[:1], path=_decode_path(fields[i + 1]), old_mode=old_mode,
                new_mode=new_mode, old_oid=old_oid, new_oid=new_oid,
            )
        )
        i += 2
    return changes


def _all_added(out: bytes) -> builtins.list[Change]:
    """Every entry of ``git ls-files -s -z`` output as an addition (compared with no commit)."""
    changes = []
    for entry in out.split(b"\0"):
        if not entry:
            continue
        meta, _, path = entry.partition(b"\t")
        mode, oid, _stage = meta.decode().split(" ")
        changes.append(Change(status="A", path=_decode_path(path), old_mode="000000",
                              new_mode=mode, old_oid="0" * len(oid), new_oid=oid))
    return changes


def _count_index(out: bytes) -> tuple[int, builtins.list[str]]:
    """Entries and gitlink paths in ``git ls-files -s -z`` output (``mode oid stage\tpath\0``).

    Counted with bytes methods rather than a loop over 50,000 entries: only gitlinks, which
    are rare, are looked at one by one.
    """
    count = out.count(b"\0")
    gitlinks = []
    marker = b"\0" + GITLINK_MODE.encode() + b" "
    start = 0 if out.startswith(marker[1:]) else out.find(marker)
    while start != -1:
        tab = out.index(b"\t", start)
        end = out.index(b"\0", tab)
        gitlinks.append(_decode_path(out[tab + 1 : end]))
        start = out.find(marker, end)
    return count, gitlinks


def _warnings(gitlinks: builtins.list[str], embedded: Iterable[str],
              large: dict[str, int]) -> builtins.list[str]:
    notes = []
    if gitlinks:
        nested = set(embedded)
        names = ", ".join(f"{g} (nested repository)" if g in nested else g for g in gitlinks)
        notes.append(
            f"Stored as gitlinks (the commit they point at, not their files): {names}; "
            "a restore leaves them as they are."
        )
    for path, size in large.items():
        notes.append(
            f"{path} is {size / 1048576:.1f} MB and new since HEAD; it is stored in the "
            "checkpoint (add it to .gitignore if it should not be)."
        )
    return notes


def _copy_index(source: Path, target: Path) -> None:
    """Copy the user's index, keeping its mtime.

    Git treats an entry whose file mtime is not older than the index file as "racily clean" and
    compares its content. A copy with a fresh mtime would make such entries look clean and miss
    an edit made in the same second the index was written, so the copy keeps the original's.
    Reading through one descriptor takes the content and the mtime from the same file even if
    git renames a new index into place meanwhile.
    """
    try:
        src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # a fresh repository has no index yet: git starts from an empty one
    try:
        info = os.fstat(src)
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            remaining = info.st_size
            offset = 0
            while remaining > 0:
                sent = os.sendfile(dst, src, offset, remaining)
                if sent == 0:
                    break
                offset += sent
                remaining -= sent
        finally:
            os.close(dst)
        os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    finally:
        os.close(src)


@contextlib.contextmanager
def _scratch_dir(scratch: Path) -> Iterator[Path]:
    """A private directory under ``scratch`` owned by this process while it is flocked.

    Protocol (so that :func:`_sweep` can prove an owner dead without guessing from a PID): the
    owner creates ``<name>.lock`` and flocks it *before* creating ``<name>/``, and removes the
    directory before the lock file. A sweeper that wins the flock removes both; an owner that
    was blocked by that sweeper finds its lock file unlinked and starts again under a new name.
    """
    while True:
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        lock_path = scratch / f"{name}.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            # A read-only or full state directory: one sentence, not an internal error.
            raise _state_error(lock_path, exc) from exc
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink == 0:
            os.close(fd)
            continue
        break
    directory = scratch / name
    try:
        try:
            os.mkdir(directory, 0o700)
        except OSError as exc:
            raise _state_error(directory, exc) from exc
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


class _Blocked:
    """Which changes a restore leaves alone: a submodule or nested repository is stored as a
    commit id only, so its files are not in the checkpoint, and deleting it, writing into it
    or replacing it with a file could destroy a repository. That covers gitlinks, paths below
    one, and (seen on disk, never through a symlink) a path where an ignored repository
    stands or one inside a repository that is not ours."""

    def __init__(self, top: Path, changes: Sequence[Change]) -> None:
        self._top = top
        self._gitlinks = {c.path for c in changes if c.is_gitlink}
        self._roots: dict[str, bool] = {}

    def __call__(self, change: Change) -> bool:
        if change.is_gitlink:
            return True
        if self._gitlinks and any(a in self._gitlinks for a in _ancestors(change.path)):
            return True
        if change.status != "A":
            return False  # the snapshot holds it, so git saw no repository around it
        parts = change.path.split("/")
        if any(self._root("/".join(parts[:i])) for i in range(1, len(parts))):
            return True
        return self._holds_repository(change.path)

    def _root(self, rel: str) -> bool:
        if rel not in self._roots:
            self._roots[rel] = os.path.lexists(os.path.join(self._top, rel, ".git"))
        return self._roots[rel]

    def _holds_repository(self, rel: str) -> bool:
        top = os.path.join(self._top, rel)
        try:
            if not stat.S_ISDIR(os.lstat(top).st_mode):
                return False
        except OSError:
            return False
        # os.walk does not follow symlinks.
        return any(".git" in dirs or ".git" in files for _root, dirs, files in os.walk(top))


_STAGING_PREFIX = "versatil-restore-"


def _sweep_staging(base: Path) -> None:
    """Remove staging directories whose restore died (its flock on ``lock`` went with it)."""
    try:
        entries = [e for e in os.scandir(base) if e.name.startswith(_STAGING_PREFIX)]
    except OSError:
        return
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        try:
            fd = os.open(os.path.join(entry.path, "lock"), os.O_RDWR | os.O_NOFOLLOW
                         | os.O_CLOEXEC)
        except FileNotFoundError:
            # Its owner creates the lock right after the directory: only an old one is garbage.
            with contextlib.suppress(OSError):
                if time.time() - entry.stat(follow_symlinks=False).st_mtime > \
                        _SCRATCH_GRACE_SECONDS:
                    shutil.rmtree(entry.path, ignore_errors=True)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its restore is running
        else:
            shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            os.close(fd)


def _move_into_place(source: bytes, target: bytes) -> None:
    """Rename ``source`` over ``target``; across filesystems (a mount inside the working tree),
    copy it beside ``target`` first so the last step is still one rename."""
    try:
        os.rename(source, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    directory, name = os.path.split(target)
    temporary = os.path.join(directory, b"." + name + b".versatil-" + secrets.token_hex(4).encode())
    try:
        if os.path.islink(source):
            os.symlink(os.readlink(source), temporary)
        else:
            shutil.copy2(source, temporary, follow_symlinks=False)
        os.rename(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _sweep(scratch: Path) -> None:
    """Remove scratch directories whose owner died (killed mid-create or mid-restore)."""
    try:
        entries = list(os.scandir(scratch))
    except FileNotFoundError:
        return
    names = {e.name for e in entries}
    for entry in entries:
        if entry.name.endswith(".lock"):
            _sweep_one(scratch, entry.name[: -len(".lock")])
        elif entry.is_dir(follow_symlinks=False) and f"{entry.name}.lock" not in names:
            # Owners create the lock file first and delete it last, so a directory without one
            # is garbage, unless it appeared after our listing: then it is young.
            with contextlib.suppress(OSError):
                age = time.time() - entry.stat(follow_symlinks=False).st_mtime
                if age > _SCRATCH_GRACE_SECONDS:
                    shutil.rmtree(entry.path, ignore_errors=True)


def _sweep_one(scratch: Path, name: str) -> None:
    lock_path = scratch / f"{name}.lock"
    try:
        # O_NOFOLLOW: a symlink planted as a lock file is never opened (nor flocked) through.
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    except OSError:
        return  # a symlink (ELOOP) or something else that is not our lock file
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its owner is alive
        if os.fstat(fd).st_nlink == 0:
            return  # its owner finished, or another sweeper got there first
        shutil.rmtree(scratch / name, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
    finally:
        os.close(fd)
