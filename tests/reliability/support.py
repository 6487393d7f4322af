"""What the reliability tests share: the session tally, running the CLI, and the invariants a
user relies on after a crash or a bad input.

The invariants are stated as functions that *return* the problems they find (an empty list is
good), so a test can count them in the tally before it asserts.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
from integration.helpers import environment, git, versatil_argv

from versatil_fs.checkpoints import REF_PREFIX, CheckpointRecord
from versatil_fs.locks.table import SCHEMA_VERSION, Table


# The tally ------------------------------------------------------------------------------------
@dataclass
class Tally:
    """Counters for the whole session; all but the first two must stay zero."""

    faults_injected: int = 0
    bad_inputs: int = 0
    locks_stuck: int = 0
    overlaps: int = 0
    files_lost: int = 0
    queue_jumps: int = 0  # grants out of priority/arrival order (the linearizability check)
    attacks: int = 0  # hostile inputs or planted state tried (issue 12's attack scenarios)
    hangs: int = 0  # a command that did not finish within its budget
    internal_errors: int = 0  # a traceback or exit 70 where one sentence was owed
    known: int = 0  # violations found by tests of known bugs (marked xfail)
    tests: int = 0  # tests that asked for the tally

    @property
    def violations(self) -> int:
        return (
            self.locks_stuck + self.overlaps + self.files_lost + self.queue_jumps
            + self.hangs + self.internal_errors
        )

    def line(self) -> str:
        return (
            f"versatil reliability: faults injected {self.faults_injected}, "
            f"bad inputs tried {self.bad_inputs}, locks stuck {self.locks_stuck}, "
            f"overlaps {self.overlaps}, files lost {self.files_lost}, "
            f"out-of-order grants {self.queue_jumps}, attacks tried {self.attacks}, "
            f"hangs {self.hangs}, internal errors {self.internal_errors}"
            + (f" (and {self.known} in tests of known bugs, marked xfail)" if self.known else "")
        )

    @property
    def clean(self) -> bool:
        return self.violations == 0

    def killed(self, returncode: int | None) -> bool:
        """Count a fault if the process died of SIGKILL; returns whether it did."""
        if returncode == -9:
            self.faults_injected += 1
            return True
        return False

    def lost(self, problems: Sequence[str]) -> Sequence[str]:
        self.files_lost += len(problems)
        return problems

    def attack(self, count: int = 1) -> None:
        """Count a hostile input or a planted state file tried against the tool."""
        self.attacks += count

    def outcome(self, result: Result) -> Result:
        """Count an internal error (exit 70 or a traceback) in a command's result."""
        if result.code == 70 or "Traceback" in result.err:
            self.internal_errors += 1
        return result

    def hung(self, proc: subprocess.Popen[bytes] | subprocess.Popen[str], budget: float) -> bool:
        """Wait up to ``budget`` seconds; a process still running then is a hang (and is killed)."""
        try:
            proc.wait(timeout=budget)
            return False
        except subprocess.TimeoutExpired:
            self.hangs += 1
            proc.kill()
            proc.wait()
            return True


# Running the command line ---------------------------------------------------------------------
@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    def __str__(self) -> str:
        return f"exit {self.code}\nstdout: {self.out!r}\nstderr: {self.err!r}"


def versatil(
    *args: str,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str | None] | None = None,
) -> Result:
    """Run ``versatil ARGS`` in this process (fast): cwd and environment set for the call only.

    ``run_cli`` turns every outcome into an exit code exactly as the console script does, so
    this sees what a user sees, minus the interpreter start-up.
    """
    from versatil_fs.cli import cli, run_cli

    out, err = io.StringIO(), io.StringIO()
    with (
        environment(env),
        _working_directory(cwd),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = run_cli(cli, list(args))
    return Result(code, out.getvalue(), err.getvalue())


def versatil_process(
    *args: str,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str | None] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    timeout: float = 120.0,
) -> Result:
    """Run ``versatil ARGS`` as a real process (for kills, rlimits and real exit statuses)."""
    full = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    proc = subprocess.run(
        versatil_argv(*args), cwd=cwd, env=full, capture_output=True, text=True,
        timeout=timeout, preexec_fn=preexec_fn, check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@contextlib.contextmanager
def _working_directory(cwd: str | os.PathLike[str] | None) -> Iterator[None]:
    before = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        os.chdir(before)


def one_line_problems(result: Result, codes: Sequence[int], mentions: Sequence[str]) -> list[str]:
    """What is wrong with an error report: exit code, line count, traceback, missing names."""
    problems = []
    if result.code not in codes:
        problems.append(f"exit {result.code}, expected one of {list(codes)}")
    if "Traceback" in result.err or "internal error" in result.err:
        problems.append("a traceback or internal error")
    lines = result.err_lines
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr, expected one")
    for word in mentions:
        if word not in result.err:
            problems.append(f"the message does not mention {word!r}")
    return problems


# Files: nothing lost, nothing half-written ----------------------------------------------------
def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot_files(root: Path, *, skip_git_objects: bool = True) -> dict[str, bytes]:
    """Every regular file under ``root`` (relative POSIX path -> bytes); symlinks as targets."""
    found: dict[str, bytes] = {}
    if not root.exists():
        return found
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if skip_git_objects and rel.startswith(".git/objects/"):
            continue  # only ever added to; checked through refs and fsck instead
        if path.is_symlink():
            found[rel] = b"symlink:" + os.fsencode(os.readlink(path))
        elif path.is_file():
            try:
                found[rel] = path.read_bytes()
            except OSError:
                continue  # a socket or a file we may not read: not ours to judge
    return found


def lost_files(
    before: Mapping[str, bytes],
    root: Path,
    *,
    may_change: Callable[[str], bool] = lambda rel: False,
    append_only: Callable[[str], bool] = lambda rel: rel.endswith(".jsonl"),
) -> list[str]:
    """Files of ``before`` that are gone or changed under ``root``.

    A file moved aside (``<name>.corrupt-*`` beside it, same bytes) is not lost; an append-only
    log may have grown; ``may_change`` names files the command was entitled to rewrite.
    """
    after = snapshot_files(root)
    problems = []
    for rel, old in before.items():
        new = after.get(rel)
        if new == old or may_change(rel):
            continue
        if new is not None and append_only(rel) and new.startswith(old):
            continue
        if new is None and any(
            other.startswith(rel + ".corrupt-") and data == old for other, data in after.items()
        ):
            continue
        what = "removed" if new is None else f"changed ({len(old)} -> {len(new)} bytes)"
        problems.append(f"{root / rel} {what}")
    return problems


# The state directory after a crash ------------------------------------------------------------
_table_decoder = msgspec.json.Decoder(Table)
_record_decoder = msgspec.json.Decoder(CheckpointRecord)


def state_problems(home: Path) -> list[str]:
    """Half-written or unreadable state: the lock table, checkpoint metadata, event logs.

    Temporary files (``.name.*.tmp``, the table's ``.spare``) and files already moved aside
    (``*.corrupt-*``) are not documents and are not judged.
    """
    problems: list[str] = []
    if not home.exists():
        return problems
    for path in sorted(home.rglob("*")):
        if not path.is_file() or path.name.startswith(".") or ".corrupt-" in path.name:
            continue
        rel = path.relative_to(home).as_posix()
        data = path.read_bytes()
        try:
            if rel == "logs/resource-locks.json":
                table = _table_decoder.decode(data)
                if table.version != SCHEMA_VERSION:
                    problems.append(f"{rel}: version {table.version}")
            elif rel.startswith("checkpoints/") and path.suffix == ".json":
                _record_decoder.decode(data)
            elif path.suffix == ".jsonl":
                for line in data.splitlines():
                    if line.strip():
                        json.loads(line)
                if data and not data.endswith(b"\n"):
                    problems.append(f"{rel}: a torn last line")
            elif path.suffix in (".json", ".shell"):
                json.loads(data)
        except (ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            problems.append(f"{rel}: does not parse ({exc})")
    return problems


def ref_problems(repo: Path) -> list[str]:
    """Checkpoint refs that do not point at a complete commit (commit, tree and blobs)."""
    problems = []
    out = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", REF_PREFIX)
    for line in out.splitlines():
        ref, _, oid = line.partition(" ")
        check = subprocess.run(
            ["git", "rev-list", "--objects", "--missing=print", oid], cwd=repo,
            capture_output=True, text=True, check=False,
        )
        if check.returncode != 0 or any(x.startswith("?") for x in check.stdout.split()):
            problems.append(f"{ref} -> {oid} is not a complete commit")
    return problems


def tree_state(repo: Path) -> dict[str, object]:
    """What a user sees of their repository besides the files: HEAD, branch, index, stash."""
    return {
        "head": git(repo, "rev-parse", "HEAD", check=False),
        "branch": git(repo, "symbolic-ref", "-q", "HEAD", check=False),
        "index": digest((repo / ".git" / "index").read_bytes())
        if (repo / ".git" / "index").exists() else None,
        "stash": git(repo, "stash", "list", check=False),
    }


def working_files(repo: Path) -> dict[str, bytes]:
    """The working tree's files (``.git`` left out)."""
    return {k: v for k, v in snapshot_files(repo).items() if not k.startswith(".git/")}


def checkpoint_refs(repo: Path) -> list[str]:
    out = git(repo, "for-each-ref", "--format=%(refname)", REF_PREFIX)
    return sorted(line[len(REF_PREFIX):] for line in out.splitlines())
