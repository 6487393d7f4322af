"""Committing a staged working tree as a checkpoint: one ``git fast-import`` for the trees, the
commit and the ref, then the metadata file, all or nothing.

fast-import commits HEAD's tree with the paths that differ from it changed (parent HEAD, none on
an unborn branch) and creates the ref: ``write-tree`` + ``commit-tree`` + ``update-ref`` in one
process, writing the new trees and the commit as one pack rather than a loose file per object.
A ref that already exists is never moved (an id drawn twice is drawn again).
"""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from versatil_fs import faults
from versatil_fs.checkpoints.plumbing import (
    all_added,
    count_index,
    import_stream,
    parse_raw_diff,
    record_warnings,
)
from versatil_fs.checkpoints.records import (
    GITLINK_MODE,
    REF_PREFIX,
    Change,
    CheckpointRecord,
    clean_name,
    commit_message,
    new_id,
    reason,
)
from versatil_fs.checkpoints.site import Site, StagedTree, describe
from versatil_fs.errors import GitFailed, VersatilError
from versatil_fs.state import state_error

__all__ = ["commit"]

# fast-import keeps what it writes as a pack whatever the number of objects (by default it
# explodes imports of fewer than 100 objects into loose files, one file creation each).
_IMPORT_OPTIONS = ("-c", "fastimport.unpackLimit=1")


def commit(
    site: Site,
    staged: StagedTree,
    *,
    started: float,
    message: str,
    agent: str,
    large_file_bytes: Callable[[], int],
    wave: int | None = None,
    kind: str = "checkpoint",
    tasks: dict[str, str] | None = None,
    files_modified: builtins.list[str] | None = None,
    tests_run: builtins.list[str] | None = None,
    errors: builtins.list[str] | None = None,
    restore_of: str | None = None,
    described: tuple[bytes, bytes] | None = None,
) -> CheckpointRecord:
    """Commit the staged tree under a new ref, then write its metadata (durably).

    ``described`` is :func:`~versatil_fs.checkpoints.site.describe`'s result if the caller
    already has it; ``large_file_bytes`` gives the size above which a new file is warned
    about (asked only when there is a new file).
    """
    ls_out, diff_out = described or describe(site.git, staged)
    files, gitlinks = count_index(ls_out)
    # On an unborn branch every file is new.
    against_head = parse_raw_diff(diff_out) if staged.head else all_added(ls_out)
    checkpoint_id = new_id(started, wave)
    body = commit_message(message, agent=agent, wave=wave, kind=kind, started=started,
                          worktree=site.worktree)
    stream = import_stream(REF_PREFIX + checkpoint_id, staged.head, against_head,
                           name=clean_name(agent), when=int(started), message=body)
    oid, tree, clash = _import(site, stream, staged.index.parent)
    if clash:
        checkpoint_id = _create_ref(site, oid, started, wave)
    with _all_or_nothing(site, checkpoint_id, oid):
        large = _large_new_files(site.repo.toplevel, against_head, large_file_bytes)
        record = CheckpointRecord(
            id=checkpoint_id, commit=oid, tree=tree, parent=staged.head, time=started,
            message=message, agent=agent, wave=wave, kind=kind, tasks=dict(tasks or {}),
            files_modified=(
                list(files_modified) if files_modified is not None
                else [c.path for c in against_head]
            ),
            tests_run=list(tests_run or []),
            errors=list(errors or []),
            files=files,
            gitlinks=gitlinks,
            large_files=large,
            warnings=record_warnings(gitlinks, staged.embedded, large),
            restore_of=restore_of,
            restore_complete=False if kind == "safety" else None,
            repo=str(site.repo.toplevel),
            worktree=site.worktree,
        )
        site.write_record(record)
    return record


@contextlib.contextmanager
def _all_or_nothing(site: Site, checkpoint_id: str, oid: str) -> Iterator[None]:
    """Delete the new ref again if the block fails: a checkpoint the caller is told failed must
    not exist. Its objects are garbage git collects; only if the ref cannot be deleted either
    does the error say the checkpoint exists, listed from its commit."""
    try:
        yield
    except BaseException as exc:
        if site.git.succeeds("update-ref", "-d", REF_PREFIX + checkpoint_id, oid) \
                or not isinstance(exc, VersatilError):
            raise
        raise GitFailed(message=(
            f"Checkpoint {checkpoint_id} was made but its metadata could not be written "
            f"({reason(exc)}); `versatil checkpoint list` shows it, rebuilt from its commit."
        )) from exc


def _import(site: Site, stream: bytes, scratch: Path) -> tuple[str, str, bool]:
    """Run ``git fast-import`` on ``stream``: (commit, tree, whether the ref was taken).

    The stream goes through a file, not a pipe, so that a process killed mid-write never hands
    git a truncated stream; ``done`` at its end makes git refuse one that is cut short all the
    same.
    """
    path = scratch / "import"
    try:
        path.write_bytes(stream)
    except OSError as exc:
        raise state_error(path, exc) from exc
    faults.point("checkpoint.before-commit")  # blobs stored, no tree, commit or ref yet
    with open(path, "rb") as source:
        # LC_ALL=C: its "Not updating" refusal is recognised below.
        proc = site.git.spawn(*_IMPORT_OPTIONS, "fast-import", "--quiet", "--done",
                              stdin=source, extra={"LC_ALL": "C"})
        out, err = proc.communicate()
    lines = out.decode().splitlines()
    oid = lines[0].strip() if lines else ""
    if proc.returncode != 0:
        # git leaves a crash report in .git when fast-import dies: ours to clean up.
        for directory in {site.repo.git_dir, site.repo.common_dir}:
            with contextlib.suppress(OSError):
                os.unlink(directory / f"fast_import_crash_{proc.pid}")
        if oid and b"Not updating" in err:
            # The ref exists: another checkpoint drew the same id in the same second.
            return oid, _tree_of(site, oid, lines), True
        raise GitFailed(("fast-import",), proc.returncode, err)
    return oid, _tree_of(site, oid, lines), False


def _tree_of(site: Site, oid: str, lines: builtins.list[str]) -> str:
    # The stream's `ls :1 ""` printed "040000 tree <oid>\t"; an empty root prints "missing".
    fields = lines[1].split() if len(lines) > 1 else []
    if len(fields) >= 3 and fields[1] == "tree":
        return fields[2]
    return site.git.run("rev-parse", f"{oid}^{{tree}}").decode().strip()


def _create_ref(site: Site, oid: str, started: float, wave: int | None) -> str:
    for _ in range(20):
        checkpoint_id = new_id(started, wave)
        proc = site.git.spawn(
            "update-ref", "-m", "versatil checkpoint", REF_PREFIX + checkpoint_id, oid, ""
        )
        _, err = proc.communicate()
        if proc.returncode == 0:
            return checkpoint_id
        if b"already exists" not in err:
            raise GitFailed(("update-ref",), proc.returncode, err)
        # Two checkpoints in the same second drew the same random suffix: draw again.
    raise GitFailed(message="Could not find a free checkpoint id after 20 attempts.")


def _large_new_files(top: Path, against_head: Iterable[Change],
                     limit_of: Callable[[], int]) -> dict[str, int]:
    large: dict[str, int] = {}
    limit: int | None = None
    for change in against_head:
        if change.status != "A" or change.new_mode == GITLINK_MODE:
            continue
        try:
            size = os.lstat(top / change.path).st_size
        except OSError:
            continue
        if limit is None:
            limit = limit_of()
        if size > limit:
            large[change.path] = size
    return large
