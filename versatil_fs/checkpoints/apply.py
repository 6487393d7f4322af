"""Writing a checkpoint's files into the working tree, each whole or not at all.

Every file to write is checked out with ``git checkout-index --prefix`` from a tiny index holding
only those paths (so filters, modes and symlinks come out as git would write them) into a
staging directory inside the git directory (same filesystem, unseen by git); removals are
unlinked; then each staged file is renamed over its path. Each file is its old version or its
new one, never a part of either, and a full disk stops the restore before any file changed.
Nothing is written or removed through a symlink, and submodules and nested repositories (stored
as a commit id only) are left alone.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from versatil_fs import faults
from versatil_fs.checkpoints.plumbing import path_bytes
from versatil_fs.checkpoints.records import (
    Change,
    CheckpointRecord,
    RestoreResult,
    printable,
    reason,
)
from versatil_fs.checkpoints.scratch import scratch_dir, staging_dir
from versatil_fs.checkpoints.site import Site
from versatil_fs.errors import RestoreIncomplete, VersatilError
from versatil_fs.locks.table import ancestors

__all__ = [
    "Blocked",
    "apply_changes",
    "move_into_place",
    "remove_path",
    "unsaved_in_the_way",
]


class Blocked:
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
        if self._gitlinks and any(a in self._gitlinks for a in ancestors(change.path)):
            return True
        if change.status != "A":
            return False  # the staged tree holds it, so git saw no repository around it
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


def unsaved_in_the_way(top: Path, changes: Sequence[Change]) -> builtins.list[str]:
    """Paths on disk that writing ``changes`` would overwrite or delete and that the staged
    tree does not hold: a file ignored now (it was not when the checkpoint was made), an
    ignored directory where the checkpoint has a file, a file where it has a directory. Paths
    the staged tree holds are in the diff as "D", "M" or "T"; an "A" path is not in it, so
    whatever stands there (or in the way above it) is not either.
    """
    removed = {c.path for c in changes if c.status == "D"}
    blocked = Blocked(top, changes)
    found: builtins.list[str] = []
    seen: set[str] = set()
    for change in changes:
        if change.status != "A" or blocked(change):
            continue  # in the staged tree, or skipped by apply_changes
        parts = change.path.split("/")
        for i in range(1, len(parts)):
            above = "/".join(parts[:i])
            if above in seen or above in removed:
                continue
            seen.add(above)
            try:
                info = os.lstat(os.path.join(top, above))
            except OSError:
                continue
            if not stat.S_ISDIR(info.st_mode):
                found.append(above)  # a file or a symlink where a directory goes
        if os.path.lexists(os.path.join(top, change.path)):
            found.append(change.path)
    return found


def apply_changes(
    site: Site, target: CheckpointRecord, safety: CheckpointRecord, changes: Iterable[Change]
) -> RestoreResult:
    """Change the working tree to the target's version of ``changes``.

    First every file is checked out into the staging directory (a full disk stops the restore
    there, before any file changed), then the removals, then each staged file is renamed over
    its path. A process killed at any moment leaves each file old or new, never half-written;
    a failure part-way is a :class:`RestoreIncomplete` naming what was done.
    """
    result = RestoreResult(checkpoint=target.id, safety_checkpoint=safety.id)
    changes = builtins.list(changes)
    writes: builtins.list[Change] = []
    removals: builtins.list[Change] = []
    blocked = Blocked(site.repo.toplevel, changes)
    for change in changes:
        if blocked(change):
            result.skipped.append(change.path)
        elif change.status == "D":
            removals.append(change)
        else:
            writes.append(change)
    with _staged_files(site, target, writes, removals) as stage:
        try:
            # Removals first: a path that was a file and is now a directory (or the reverse)
            # must be out of the way before the new one is renamed into place.
            for change in removals:
                remove_path(site.repo.toplevel, change.path)
                result.removed.append(change.path)
            faults.point("checkpoint.mid-restore")
            made: set[str] = set()
            for change in writes:
                _place(site.repo.toplevel, stage, change.path, made)
                result.restored.append(change.path)
                faults.point("checkpoint.mid-write")
        except OSError as exc:
            raise _incomplete(target, safety, result, [*removals, *writes], exc) from exc
    return result


@contextlib.contextmanager
def _staged_files(site: Site, target: CheckpointRecord, writes: builtins.list[Change],
                  removals: builtins.list[Change]) -> Iterator[Path]:
    """The staging directory holding the target's version of every path of ``writes``;
    removed (with whatever was not renamed out of it) on the way out."""
    with contextlib.ExitStack() as stack:
        try:
            stage = stack.enter_context(staging_dir(site.repo.git_dir, site.repo.toplevel))
            if writes:
                _check_out(site, writes, stage)
        except (VersatilError, OSError) as exc:
            raise RestoreIncomplete(
                f"The restore of {target.id} changed nothing: the files could not be "
                f"written ({reason(exc)}).",
                restored=[], not_restored=[c.path for c in [*removals, *writes]],
                safety=None,
            ) from exc
        yield stage


def _check_out(site: Site, writes: builtins.list[Change], stage: Path) -> None:
    """Check the target's version of every path of ``writes`` out below ``stage``, from a
    tiny index holding only those paths (so filters, modes and symlinks come out as git
    would write them)."""
    info = b"".join(
        f"{c.new_mode} {c.new_oid}\t".encode() + path_bytes(c.path) + b"\0" for c in writes
    )
    with scratch_dir(site.scratch) as directory:
        tiny = directory / "index"
        site.git.run("update-index", "-z", "--index-info", index=tiny, stdin=info)
        site.git.run("checkout-index", "-a", f"--prefix={stage}/", index=tiny)


def _incomplete(target: CheckpointRecord, safety: CheckpointRecord, result: RestoreResult,
                planned: Sequence[Change], exc: OSError) -> RestoreIncomplete:
    done = result.changed
    finished = set(done)
    left = [c.path for c in planned if c.path not in finished]

    def names(paths: Sequence[str]) -> str:
        shown = ", ".join(printable(p) for p in paths[:5])
        return shown + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")

    what = f"restored {len(done)} path(s) ({names(done)})" if done else "restored nothing"
    return RestoreIncomplete(
        f"The restore of {target.id} stopped part-way ({reason(exc)}): it {what} and not "
        f"{len(left)} ({names(left)}); `versatil checkpoint restore {safety.id}` undoes "
        "what it did.",
        restored=done, not_restored=left, safety=safety.id,
    )


def remove_path(top: Path, rel: str) -> None:
    """Unlink ``rel`` from the working tree at ``top`` and the directories it leaves empty;
    never through a symlink, never a directory that appeared there."""
    path = top / rel
    if os.path.realpath(path.parent) != str(path.parent):
        # Git never tracks a file below a symlink, so one appeared after the tree was staged;
        # unlinking through it could delete a file outside the repository.
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        return  # became a directory after the tree was staged: someone's new work, leave it
    except OSError as exc:
        if exc.errno != errno.EISDIR:
            raise
        return
    # Remove the directories this leaves empty, as git does; one with ignored files stays.
    parent = path.parent
    while parent != top:
        try:
            os.rmdir(parent)
        except OSError:
            break
        parent = parent.parent


def _place(top: Path, stage: Path, rel: str, made: set[str]) -> None:
    """Rename the staged ``rel`` over its path in the working tree."""
    top_bytes = os.fsencode(top)
    name = path_bytes(rel)
    parts = rel.split("/")
    # Every directory above it, as git would make them: never through a symlink, and a
    # file or symlink in the way (saved in the safety checkpoint) goes.
    for i in range(1, len(parts)):
        above = "/".join(parts[:i])
        if above in made:
            continue
        here = os.path.join(top_bytes, path_bytes(above))
        try:
            info = os.lstat(here)
        except FileNotFoundError:
            os.mkdir(here)
        else:
            if not stat.S_ISDIR(info.st_mode):
                os.unlink(here)
                os.mkdir(here)
        made.add(above)
    final = os.path.join(top_bytes, name)
    try:
        info = os.lstat(final)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISDIR(info.st_mode):
            # An ignored directory where the checkpoint has a file: its files are in the
            # safety checkpoint (unsaved_in_the_way); rmtree does not follow symlinks.
            shutil.rmtree(final)
    move_into_place(os.path.join(os.fsencode(stage), name), final)


def move_into_place(source: bytes, target: bytes) -> None:
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
