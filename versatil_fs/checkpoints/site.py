"""Where one repository's checkpoints live, and the working tree staged for one of them.

:class:`Site` holds what every operation needs: the repository, the state directory (its
metadata, its events, its lock table), the metadata directory and the scratch directory, and
:class:`RepoGit`, git run in that working tree with the options every checkpoint command needs.
:func:`stage` puts the working tree into a private index (:class:`StagedTree`); :func:`describe`
and :func:`diff_index` read it.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from versatil_fs import events, git
from versatil_fs.checkpoints.plumbing import embedded_repositories, flagged_entries
from versatil_fs.checkpoints.records import CheckpointRecord, encode_record, valid_id
from versatil_fs.checkpoints.scratch import copy_index, scratch_dir, sweep, sweep_staging
from versatil_fs.errors import GitFailed, StateError, UsageError
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir, state_error

__all__ = [
    "RepoGit",
    "Site",
    "StagedTree",
    "describe",
    "diff_index",
    "in_background",
    "stage",
]

# Options every git command gets. splitIndex=false: a private copy of a split index is written
# back whole, so git never adds a `sharedindex.*` file to the user's .git for our scratch index.
# --literal-pathspecs: file names with `*`, `?`, `[` or a leading `:` mean themselves.
_GIT_OPTIONS = (
    "-c", "core.splitIndex=false",
    "-c", "advice.addEmbeddedRepo=false",
    "--literal-pathspecs",
)


class RepoGit:
    """git in one working tree (through :mod:`versatil_fs.git`), on a private index if told."""

    def __init__(self, toplevel: Path) -> None:
        self.toplevel = toplevel

    def spawn(
        self, *args: str, index: Path | None = None, extra: dict[str, str] | None = None,
        stdin: IO[bytes] | int = subprocess.PIPE,
    ) -> subprocess.Popen[bytes]:
        """``git <args>`` running in the working tree (on ``index`` if one is given)."""
        env = dict(extra or {})
        if index is not None:
            env["GIT_INDEX_FILE"] = str(index)  # set on purpose: git.py drops an inherited one
        return git.spawn([*_GIT_OPTIONS, *args], cwd=self.toplevel, env=env, stdin=stdin)

    def finish(
        self, proc: subprocess.Popen[bytes], args: Sequence[str], stdin: bytes | None = None
    ) -> tuple[bytes, bytes]:
        """Wait for ``proc`` (feeding it ``stdin``): its stdout and stderr; GitFailed if it
        failed."""
        result = git.finish(proc, args, stdin)
        return result.stdout, result.stderr

    def run(
        self,
        *args: str,
        index: Path | None = None,
        stdin: bytes | None = None,
        extra: dict[str, str] | None = None,
    ) -> bytes:
        """The stdout of ``git <args>``; GitFailed unless it succeeds."""
        return self.finish(self.spawn(*args, index=index, extra=extra), args, stdin)[0]

    def succeeds(self, *args: str, stdin: bytes | None = None) -> bool:
        """Whether ``git <args>`` exits 0 (its output is not wanted)."""
        proc = self.spawn(*args)
        proc.communicate(stdin)
        return proc.returncode == 0


@dataclass(frozen=True)
class StagedTree:
    """The working tree staged into a private index (its blobs stored), not yet a tree."""

    head: str | None
    index: Path  # the private index, describing the working tree as it was staged
    embedded: tuple[str, ...]  # nested repositories git added as gitlinks


class Site:
    """Where the checkpoints of one repository live, for one state directory."""

    def __init__(self, repo: Repository, state: StateDir) -> None:
        self.repo = repo
        self.state = state
        self.key = str(repo.common_dir)  # the repository, as events and the lock table name it
        # This worktree, as checkpoint records name it: its git directory (see worktree_key).
        self.worktree = os.path.realpath(repo.git_dir)
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:16]
        self.metadata = state.subdir("checkpoints", digest)
        self.scratch = state.subdir("checkpoints", digest, "scratch")
        self.git = RepoGit(repo.toplevel)

    def worktree_key(self, record: CheckpointRecord) -> str:
        """The worktree ``record`` was made in, as its git directory. A record without one was
        written before worktrees were recorded: it is the main worktree's (the repository's
        own git directory), where such records were made unless the user had linked
        worktrees, which is the case this field was added to tell apart."""
        return record.worktree or os.path.realpath(self.repo.common_dir)

    def here(self, record: CheckpointRecord) -> bool:
        """Whether ``record`` was made in this worktree."""
        return self.worktree_key(record) == self.worktree

    def worktree_top(self, record: CheckpointRecord) -> str:
        """The toplevel of the worktree ``record`` was made in, for people to read."""
        if self.here(record):
            return str(self.repo.toplevel)
        if record.repo:
            return record.repo
        key = Path(self.worktree_key(record))
        # The main worktree's git dir is <toplevel>/.git; a linked one's `gitdir` file names
        # its .git file (read for display only, never acted on).
        if key == Path(os.path.realpath(self.repo.common_dir)) and key.name == ".git":
            return str(key.parent)
        with contextlib.suppress(OSError, UnicodeDecodeError):
            return str(Path((key / "gitdir").read_text(encoding="utf-8").strip()).parent)
        return str(key)

    def sweep(self) -> None:
        """Clean up after processes killed mid-create or mid-restore."""
        sweep(self.scratch)
        sweep_staging(self.repo.git_dir)

    def lock_file(self, name: str) -> int:
        """The descriptor of the metadata directory's lock file ``name``, for an flock."""
        return self.state.open_lock_file(self.metadata / name)

    @contextlib.contextmanager
    def private_index(self) -> Iterator[Path]:
        """A scratch directory holding a copy of the user's index; removed on the way out."""
        with scratch_dir(self.scratch) as directory:
            index = directory / "index"
            try:
                copy_index(self.repo.git_dir / "index", index)
            except OSError as exc:
                # The copy goes to the state directory: a full disk there is a StateError.
                raise state_error(index, exc) from exc
            yield index

    def write_record(self, record: CheckpointRecord, *, durable: bool = True) -> None:
        """Write a checkpoint's metadata file (atomically; fsynced if ``durable``)."""
        if not valid_id(record.id):
            raise UsageError(f"{record.id!r} is not a checkpoint id.")
        self.state.write_atomic(self.metadata / f"{record.id}.json", encode_record(record),
                                durable=durable)

    def emit_done(self, stream: str, kind: str, **fields: Any) -> None:
        """Log something that has already happened to the refs, the metadata or the tree.

        A full disk on the event log must not turn a change that was made into an error that
        says nothing was changed (a checkpoint the user then believes missing), so the
        failure is one line on stderr and the change stands.
        """
        try:
            # names not UTF-8: printable (events.emit)
            events.emit(stream, kind, state=self.state, **fields)
        except StateError as exc:
            cause = exc.__cause__
            detail = cause.strerror if isinstance(cause, OSError) and cause.strerror else exc
            print(
                f"versatil: done, but the {kind!r} event could not be written to "
                f"{self.state.event_log(stream)} ({detail}).",
                file=sys.stderr,
            )


def stage(site: Site, index: Path) -> StagedTree:
    """``git add -A`` into the private index: every file's blob is stored, no tree yet.

    What is on disk is what is stored, whatever the index's flags say: ``git add`` skips a
    file marked ``--assume-unchanged`` or ``--skip-worktree`` (it keeps the index's blob),
    so a restore would overwrite an edit its safety checkpoint never saw. Such entries
    (listed while ``add`` runs, so the common case costs no extra wait) lose their flag in
    the private copy and are added again. A skip-worktree file absent from the disk is a
    sparse checkout's, not a deletion: it keeps its flag and its blob.
    """
    repo_git = site.git
    head_proc = repo_git.spawn("rev-parse", "-q", "--verify", "HEAD^{commit}")
    flags_proc = repo_git.spawn("ls-files", "-v", "-z", index=index)
    try:
        # LC_ALL=C: the "adding embedded git repository" warning is parsed.
        add = repo_git.spawn("add", "-A", index=index, extra={"LC_ALL": "C"})
        _, err = repo_git.finish(add, ("add", "-A"))
        flagged, _ = repo_git.finish(flags_proc, ("ls-files", "-v"))
    finally:
        head_out, _ = head_proc.communicate()
        if flags_proc.returncode is None:
            flags_proc.kill()
            flags_proc.communicate()
    _add_flagged(site, index, flagged)
    head = head_out.decode().strip() if head_proc.returncode == 0 else None
    return StagedTree(head=head, index=index, embedded=embedded_repositories(err))


def _add_flagged(site: Site, index: Path, listing: bytes) -> None:
    """Clear assume-unchanged / skip-worktree in the private index and add those files
    (``listing``: ``git ls-files -v -z``)."""
    assumed: builtins.list[bytes] = []
    skipped: builtins.list[bytes] = []
    for tag, path in flagged_entries(listing):
        present = os.path.lexists(site.repo.toplevel / os.fsdecode(path))
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
            site.git.run("update-index", option, "-z", "--stdin", index=index,
                         stdin=b"\0".join(paths) + b"\0")
    every = sorted(set(assumed) | set(skipped))
    site.git.run("add", "-A", "--pathspec-from-file=-", "--pathspec-file-nul", index=index,
                 stdin=b"\0".join(every) + b"\0")


def diff_index(repo_git: RepoGit, staged: StagedTree, tree: str, *options: str) -> bytes:
    """Raw ``-z`` differences from ``tree`` to the staged tree (``-R``: the other way)."""
    return repo_git.run("diff-index", "--cached", "-z", "--no-renames", *options, tree,
                        index=staged.index)


def describe(repo_git: RepoGit, staged: StagedTree) -> tuple[bytes, bytes]:
    """The staged tree's listing (file count, gitlinks) and its differences from HEAD (what
    goes into the commit, files modified, large new files), computed side by side."""
    ls_proc = repo_git.spawn("ls-files", "-s", "-z", index=staged.index)
    try:
        diff_out = diff_index(repo_git, staged, staged.head) if staged.head else b""
    finally:
        ls_out, ls_err = ls_proc.communicate()
    if ls_proc.returncode != 0:
        raise GitFailed(("ls-files",), ls_proc.returncode, ls_err)
    return ls_out, diff_out


_T = TypeVar("_T")


@contextlib.contextmanager
def in_background(work: Callable[[], _T]) -> Iterator[Callable[[], _T]]:
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
