"""The bad-input corpus: every case gets one clear sentence and a non-zero exit, and loses nothing.

Each case plants one bad input in a world that has something to lose — a repository with
committed, modified and untracked files, two checkpoints, a lock held by another agent (Keeper)
and its event logs — runs one ``versatil`` command, and checks:

* the exit code: 2 for bad usage or bad input, 1 for a refusal (a conflict);
* exactly one line on stderr, naming the culprit (the file, key, id or path), no traceback;
* nothing that existed before is lost or half-written: every file of the repository (``.git``
  included, objects aside) and of the state directory is byte-for-byte as it was, except the
  event logs, which may only grow, and a damaged file, which may only be *moved aside* whole;
* the lock Keeper held is still held, and the next ordinary command works.

A damaged state file is the one deliberate exception to the non-zero exit: the specification
says it is moved aside, reported and rebuilt from what is live, so the command goes on (exit 0)
after one line saying so — and the test checks the damaged bytes are kept aside and that the
rebuilt state still has Keeper's lock.

The config and plan files of the corpus live in ``data/``; the other cases are built here.
Most cases run the command in this process (``run_cli``, exactly what the console script does);
those that need a real process (a file-size limit, a read-only mount) run it as one.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from integration.helpers import make_git_repo
from reliability.support import (
    Result,
    Tally,
    lost_files,
    one_line_problems,
    snapshot_files,
    versatil,
    versatil_process,
)

from versatil_fs import LockManager

DATA = Path(__file__).parent / "data"

FILES = {
    "README.md": "hello\n",
    "src/a.py": "a = 1\n",
    "src/b.py": "b = 1\n",
    "docs/guide.md": "# guide\n",
    ".gitignore": "*.log\n",
}


@dataclass
class World:
    """A repository and a state directory with something to lose."""

    repo: Path
    home: Path
    outside: Path  # a directory that is not in any git repository
    tmp: Path
    checkpoints: list[str] = field(default_factory=list)

    @property
    def table(self) -> Path:
        return self.home / "logs" / "resource-locks.json"

    def metadata(self, checkpoint: str) -> Path:
        (found,) = self.home.glob(f"checkpoints/*/{checkpoint}.json")
        return found


@pytest.fixture
def world(tmp_path: Path, versatil_home: Path) -> World:
    repo = make_git_repo(tmp_path / "repo", FILES)
    (repo / "src/a.py").write_text("a = 2  # uncommitted\n")
    (repo / "notes.txt").write_text("untracked work\n")
    (repo / "debug.log").write_text("ignored\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    w = World(repo, versatil_home, outside, tmp_path)
    for message in ("first", "second"):
        made = versatil("checkpoint", "create", "-m", message, "--json", cwd=repo)
        assert made.code == 0, made
        w.checkpoints.append(json.loads(made.out)["id"])
    locked = versatil("lock", "--agent", "Keeper", "db:kept", "docs/guide.md", cwd=repo)
    assert locked.code == 0, locked
    return w


@dataclass(frozen=True)
class Case:
    """One bad input: what to plant, the command, and what the answer must say."""

    args: tuple[str, ...]
    codes: tuple[int, ...] = (2,)
    mentions: tuple[str, ...] = ()  # may use {repo}, {home}, {outside}, {cp0}, {cp1}
    plant: Callable[[World], Callable[[], None] | None] | None = None  # returns an undo
    cwd: str = "repo"
    env: tuple[tuple[str, str], ...] = ()
    process: bool = False  # a real process (rlimits, mounts), not run_cli in this process
    timeout: float = 120.0  # for a real process: an answer must come within this
    damaged: str = ""  # a state file that may be moved aside (exit 0 with a notice allowed)
    limit: int = 0  # RLIMIT_FSIZE for the process, in bytes (writes past it fail with EFBIG)
    after: Callable[[World, Result], list[str]] | None = None  # locks not as the exit said
    changes: tuple[str, ...] = ()  # state files a succeeding command may rewrite
    repo_changes: tuple[str, ...] = ()  # repository files a succeeding command may change
    after_counts_as_stuck: bool = True  # what `after` finds is a lock held against the exit


def _fill(text: str, w: World) -> str:
    cp0, cp1 = [*w.checkpoints, "", ""][:2]
    return text.format(repo=w.repo, home=w.home, outside=w.outside, cp0=cp0, cp1=cp1,
                       tmp=w.tmp)


def _copy(name: str, to: str) -> Callable[[World], None]:
    """Plant data/``name`` at ``to`` ("repo:PATH", "home:PATH" or "tmp:PATH")."""

    def plant(w: World) -> None:
        where, _, rel = to.partition(":")
        base = {"repo": w.repo, "home": w.home, "tmp": w.tmp}[where]
        target = base / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DATA / name, target)

    return plant


def _write(to: str, data: bytes | Callable[[bytes], bytes]) -> Callable[[World], None]:
    """Replace (or create) a file: ``data`` or a function of its current bytes."""

    def plant(w: World) -> None:
        where, _, rel = to.partition(":")
        base = {"repo": w.repo, "home": w.home, "tmp": w.tmp}[where]
        target = base / _fill(rel, w)
        if "*" in target.name or "*" in str(target.parent):
            (target,) = base.glob(_fill(rel, w))
        old = target.read_bytes() if target.exists() else b""
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data(old) if callable(data) else data)
        target.chmod(0o600)

    return plant


GARBAGE = bytes(range(256)) * 3


# The corpus -------------------------------------------------------------------------------------
CASES: dict[str, Case] = {}

# The command line itself: click's usage errors, one sentence each like every other error.
CASES["usage/unknown-option"] = Case(("lock", "--bogus", "db:x"), mentions=("--bogus", "--help"))
CASES["usage/missing-argument"] = Case(("wave", "run"), mentions=("FILE", "wave run --help"))
CASES["usage/unknown-command"] = Case(("frobnicate",), mentions=("frobnicate",))
CASES["usage/not-a-number"] = Case(("lock", "--wait", "soon", "db:x"), mentions=("--wait", "soon"))
CASES["usage/out-of-range"] = Case(("checkpoint", "list", "--tail", "0"), mentions=("--tail",))

# Repository configuration (.versatil): syntax, unknown keys, wrong types, bad values.
for path in sorted((DATA / "config").glob("*.toml")):
    CASES[f"config/{path.stem}"] = Case(
        ("lock", "--agent", "Tester", "db:config"),
        mentions=(".versatil",), plant=_copy(f"config/{path.name}", "repo:.versatil"),
    )
CASES["config/user-file-unknown-key"] = Case(
    ("config", "show"), mentions=("config.toml", "lock_timout"),
    plant=_copy("config/unknown-key.toml", "home:config.toml"),
)
CASES["config/user-file-not-toml"] = Case(
    ("checkpoint", "create"), mentions=("config.toml",),
    plant=_copy("config/double-equals.toml", "home:config.toml"),
)
CASES["config/env-not-a-number"] = Case(
    ("lock", "--agent", "Tester", "db:config"),
    mentions=("VERSATIL_COLLISION_DETECTION_LOCK_TIMEOUT",),
    env=(("VERSATIL_COLLISION_DETECTION_LOCK_TIMEOUT", "soon"),),
)
CASES["config/env-unknown-key"] = Case(
    ("config", "show"), mentions=("VERSATIL_PARALLEL_MAX_AGENTS",),
    env=(("VERSATIL_PARALLEL_MAX_AGENTS", "3"),),
)
CASES["config/env-agent-priority"] = Case(
    ("config", "show"), mentions=("VERSATIL_AGENTS_DANA_PRIORITY",),
    env=(("VERSATIL_AGENTS_DANA_PRIORITY", "3"),),
)
CASES["config/set-without-value"] = Case(("config", "show", "--set", "parallel"),
                                         mentions=("--set",))

# Plans: structure, ids, cycles, YAML, encodings; planned and run (nothing may start).
for path in sorted((DATA / "plans").glob("*.yaml")):
    CASES[f"plan/{path.stem}"] = Case(
        ("wave", "plan", str(path)), mentions=(path.name,),
        # A plan that might make the loader run away is read in a process we can stop.
        process=path.stem == "alias-bomb", timeout=30.0,
    )
for name in ("cycle", "duplicate-id", "unknown-need", "binary-garbage"):
    CASES[f"plan-run/{name}"] = Case(
        ("wave", "run", str(DATA / "plans" / f"{name}.yaml")), mentions=(f"{name}.yaml",),
    )
CASES["plan/missing-file"] = Case(("wave", "plan", "{tmp}/no-such-plan.yaml"),
                                  mentions=("no-such-plan.yaml",))
CASES["plan/a-directory"] = Case(("wave", "run", "{tmp}"), mentions=("{tmp}",))

# The lock table: damaged in every way; moved aside, reported once, rebuilt with Keeper's lock.
TABLE = "home:logs/resource-locks.json"
for name, damage in {
    "truncated": lambda old: old[: len(old) // 2],
    "empty": b"",
    "binary": GARBAGE,
    "wrong-version": lambda old: old.replace(b'"version": 1', b'"version": 99', 1),
    "a-list": b"[]\n",
    "wrong-types": b'{"version": 1, "seq": "x", "locks": {}, "waiters": 3}\n',
}.items():
    CASES[f"state/lock-table-{name}"] = Case(
        ("locks",), codes=(0,), mentions=("resource-locks.json",), plant=_write(TABLE, damage),
        damaged="logs/resource-locks.json",
    )
CASES["state/lock-table-damaged-then-lock"] = Case(
    ("lock", "--agent", "Tester", "db:other"), codes=(0,), mentions=("resource-locks.json",),
    plant=_write(TABLE, GARBAGE), damaged="logs/resource-locks.json",
    # The rebuilt table restarts its fencing tokens at the reserved ceiling, so the grant
    # reserves the next block: run/fence is rewritten by design (it only ever goes up).
    changes=("run/fence",),
)

# Checkpoint metadata: damaged, or describing another commit; rebuilt from the commit.
for name, damage in {
    "truncated": lambda old: old[: len(old) // 3],
    "binary": GARBAGE,
    "empty": b"",
    "other-commit": lambda old: old.replace(b'"commit": "', b'"commit": "0000', 1),
    "wrong-version": lambda old: old.replace(b'"version": 1', b'"version": 99', 1),
}.items():
    CASES[f"state/checkpoint-metadata-{name}"] = Case(
        ("checkpoint", "list"), codes=(0,), mentions=("{cp0}",),
        plant=_write("home:checkpoints/*/{cp0}.json", damage), damaged="{cp0}.json",
    )

# Wave run state (msgpack): damaged or from another schema version; moved aside, reported.
def _wave_state(damage: bytes | Callable[[bytes], bytes]) -> Callable[[World], None]:
    def plant(w: World) -> None:
        ran = versatil("wave", "run", str(DATA / "valid-plan.yaml"), "--json", cwd=w.repo)
        assert ran.code == 0, ran
        (state,) = w.home.glob("waves/*.msgpack")
        old = state.read_bytes()
        state.write_bytes(damage(old) if callable(damage) else damage)

    return plant


def _msgpack_version(old: bytes) -> bytes:
    import msgspec

    doc = msgspec.msgpack.decode(old)
    doc["version"] = 99
    return msgspec.msgpack.encode(doc)


for name, command, damage in [
    ("truncated", "status", lambda old: old[: len(old) // 2]),
    ("empty", "resume", b""),
    ("binary", "resume", GARBAGE),
    ("wrong-version", "status", _msgpack_version),
]:
    CASES[f"state/wave-run-{name}-{command}"] = Case(
        ("wave", command, "2"), mentions=("moved aside",), plant=_wave_state(damage),
        damaged=".msgpack",
    )


# Checkpoint ids that name nothing, or more than one thing.
CASES["checkpoint/unknown-id-show"] = Case(("checkpoint", "show", "cp-nope"),
                                           mentions=("cp-nope",))
CASES["checkpoint/unknown-id-restore"] = Case(("checkpoint", "restore", "cp-nope"),
                                              mentions=("cp-nope",))
CASES["checkpoint/unknown-id-diff"] = Case(("checkpoint", "diff", "cp-nope"),
                                           mentions=("cp-nope",))
CASES["checkpoint/ambiguous-prefix"] = Case(("checkpoint", "show", "cp-"),
                                            mentions=("{cp0}", "{cp1}"))
CASES["checkpoint/ambiguous-restore"] = Case(("checkpoint", "restore", "cp-2"),
                                             mentions=("{cp0}",))
CASES["checkpoint/empty-id"] = Case(("checkpoint", "show", " "), mentions=("checkpoint",))
CASES["checkpoint/path-as-id"] = Case(("checkpoint", "restore", "../../etc/passwd"),
                                      mentions=("../../etc/passwd",))
CASES["checkpoint/daemon-unknown-id"] = Case(("checkpoint", "restore", "deadbeef"),
                                             mentions=("deadbeef",))

# Paths outside the repository, inside .git, or nowhere.
CASES["path/restore-outside-repo"] = Case(
    ("checkpoint", "restore", "{cp0}", "--path", "/etc/passwd"), mentions=("/etc/passwd",))
CASES["path/restore-missing-path"] = Case(
    ("checkpoint", "restore", "{cp0}", "--path", "no/such/file.py"), mentions=("no/such/file.py",))
CASES["path/restore-inside-git"] = Case(
    ("checkpoint", "restore", "{cp0}", "--path", ".git/config"), mentions=(".git",))
CASES["path/lock-outside-repo"] = Case(("lock", "--agent", "T", "/etc/passwd"),
                                       mentions=("/etc/passwd",))
CASES["path/lock-dotdot"] = Case(("lock", "--agent", "T", "../escape.txt"),
                                 mentions=("../escape.txt",))
CASES["path/lock-inside-git"] = Case(("lock", "--agent", "T", ".git/config"),
                                     mentions=(".git",))
CASES["path/lock-empty"] = Case(("lock", "--agent", "T", ""), mentions=("empty",))
CASES["path/lock-empty-name"] = Case(("lock", "--agent", "T", "db:"), mentions=("db:",))
CASES["path/lock-negative-wait"] = Case(("lock", "--agent", "T", "--wait", "-1", "db:x"),
                                        mentions=("--wait",))
CASES["path/lock-zero-ttl"] = Case(("lock", "--agent", "T", "--ttl", "0", "db:x"),
                                   mentions=("0",))
CASES["path/unlock-not-held"] = Case(("unlock", "--agent", "T", "db:never"), codes=(1,),
                                     mentions=("db:never",))
CASES["path/lock-held-by-keeper"] = Case(
    ("lock", "--agent", "T", "--wait", "0", "docs/guide.md"), codes=(1,),
    mentions=("Keeper", "docs/guide.md"))
CASES["path/restore-file-locked-by-keeper"] = Case(
    ("checkpoint", "restore", "{cp0}", "--path", "docs"), codes=(1,),
    mentions=("Keeper",), plant=_write("repo:docs/guide.md", b"# edited under a lock\n"))
CASES["path/minus-C-missing"] = Case(("-C", "{tmp}/nowhere", "locks"), mentions=("nowhere",))

# Not a git repository.
for name, args in {
    "lock-a-path": ("lock", "--agent", "T", "file.txt"),
    "checkpoint-list": ("checkpoint", "list"),
    "checkpoint-create": ("checkpoint", "create"),
    "hook-install": ("hook", "install"),
    "wave-status": ("wave", "status"),
    "wave-run": ("wave", "run", str(DATA / "valid-plan.yaml")),
}.items():
    CASES[f"not-a-repo/{name}"] = Case(args, cwd="outside", mentions=("git",))


# The state directory itself: read-only, someone else's, a planted symlink, a full disk.
def _chown_home(w: World) -> Callable[[], None]:
    os.chown(w.home, 12345, 12345)
    return lambda: os.chown(w.home, os.getuid(), os.getgid())


def _chown_table(w: World) -> Callable[[], None]:
    os.chown(w.table, 12345, 12345)
    return lambda: os.chown(w.table, os.getuid(), os.getgid())


def _symlink_logs(w: World) -> Callable[[], None]:
    real = w.home / "logs"
    kept = w.tmp / "real-logs"
    real.rename(kept)
    real.symlink_to(kept)

    def undo() -> None:
        real.unlink()
        kept.rename(real)

    return undo


def _symlink_table(w: World) -> Callable[[], None]:
    victim = w.tmp / "victim.txt"
    victim.write_text("not yours\n")
    real = w.tmp / "real-table.json"
    w.table.rename(real)
    w.table.symlink_to(victim)

    def undo() -> None:
        assert victim.read_text() == "not yours\n"
        w.table.unlink()
        real.rename(w.table)

    return undo


def _home_is_a_file(w: World) -> Callable[[], None]:
    kept = w.tmp / "real-home"
    w.home.rename(kept)
    w.home.write_text("a file where the state directory belongs\n")

    def undo() -> None:
        w.home.unlink()
        kept.rename(w.home)

    return undo


CASES["state-dir/foreign-owner"] = Case(("lock", "--agent", "T", "db:x"),
                                        mentions=("12345", "{home}"), plant=_chown_home)
CASES["state-dir/foreign-table"] = Case(("lock", "--agent", "T", "db:x"),
                                        mentions=("12345", "resource-locks.json"),
                                        plant=_chown_table)
CASES["state-dir/symlinked-logs"] = Case(("lock", "--agent", "T", "db:x"),
                                         mentions=("symlink", "logs"), plant=_symlink_logs)
CASES["state-dir/symlinked-table"] = Case(("locks",), mentions=("symlink",),
                                          plant=_symlink_table)
CASES["state-dir/a-file"] = Case(("locks",), mentions=("{home}",), plant=_home_is_a_file)


# A full disk: a file-size limit on the process, and a tiny tmpfs under the state directory.
def _held_as_told(agent: str, resource_name: str) -> Callable[[World, Result], list[str]]:
    """The lock asked for is held exactly when the command said it was granted (exit 0)."""

    def check(w: World, result: Result) -> list[str]:
        held = any(
            g.agent == agent and any(str(c.resource) == resource_name for c in g.claims)
            for g in LockManager(repo=w.repo).holders()
        )
        if held != (result.code == 0):
            return [f"{agent} {'holds' if held else 'does not hold'} {resource_name} after "
                    f"exit {result.code}"]
        return []

    return check


def _big_log(w: World) -> None:
    """An event log already past the process's file-size limit."""
    log = w.home / "logs" / "locks.jsonl"
    line = log.read_bytes().splitlines(keepends=True)[-1]
    while log.stat().st_size < 64 * 1024:
        log.write_bytes(log.read_bytes() + line * 50)


CASES["full-disk/lock-record"] = Case(
    ("lock", "--agent", "T", "db:full"), process=True, limit=200,
    mentions=("disk is full",), after=_held_as_told("T", "db:full"),
)
CASES["full-disk/unlock"] = Case(
    ("unlock", "--agent", "Keeper", "db:kept"), process=True, limit=200,
    mentions=("disk is full",),
)
CASES["full-disk/checkpoint-create"] = Case(
    ("checkpoint", "create", "-m", "no room"), process=True, limit=4096, codes=(1, 2),
    mentions=("full",), plant=_write("repo:big.bin", os.urandom(20000)),
)
# The lock itself can be recorded, its event cannot: granted (the table is the truth), with one
# line saying the log missed it.
CASES["full-disk/event-log"] = Case(
    ("lock", "--agent", "T", "db:full"), process=True, limit=32 * 1024, codes=(0,),
    mentions=("locks.jsonl",), plant=_big_log, after=_held_as_told("T", "db:full"),
    changes=("logs/resource-locks.json",),
)
def _big_checkpoint_log(w: World) -> None:
    log = w.home / "logs" / "checkpoints.jsonl"
    line = log.read_bytes().splitlines(keepends=True)[-1]
    log.write_bytes(log.read_bytes() + line * (64 * 1024 // len(line) + 1))


def _checkpoint_as_told(w: World, result: Result) -> list[str]:
    """A checkpoint was added exactly when the command said it made one (exit 0)."""
    listing = versatil("checkpoint", "list", "--json", cwd=w.repo)
    made = len(json.loads(listing.out)["checkpoints"]) - len(w.checkpoints)
    if (made == 1) != (result.code == 0):
        return [f"{made} checkpoint(s) made after exit {result.code}"]
    return []


CASES["full-disk/checkpoint-event-log"] = Case(
    ("checkpoint", "create", "-m", "unlogged"), process=True, limit=32 * 1024, codes=(0,),
    mentions=("checkpoints.jsonl",), plant=_big_checkpoint_log, after=_checkpoint_as_told,
    changes=("checkpoints/",), after_counts_as_stuck=False,
)




def _mount(*args: str) -> bool:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    return done.returncode == 0


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _small_tmpfs_home(w: World) -> Callable[[], None]:
    """The state directory on a 64 KiB tmpfs that is full (the home's files copied in first)."""
    saved = w.tmp / "home-copy"
    shutil.copytree(w.home, saved, symlinks=True)
    if not _mount("-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(w.home)):
        pytest.skip("cannot mount a tmpfs here (not root, or no mount namespace rights)")
    try:
        shutil.copytree(saved, w.home, symlinks=True, dirs_exist_ok=True)
        with open(w.home / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * 4096)
    except BaseException:
        _umount(w.home)
        raise
    return lambda: _umount(w.home)


def _read_only_home(w: World) -> Callable[[], None]:
    """The state directory bind-mounted read-only over itself: root cannot write there either
    (chmod would not stop root)."""
    if not _mount("--bind", str(w.home), str(w.home)):
        pytest.skip("cannot bind-mount here (not root, or no mount namespace rights)")
    if not _mount("-o", "remount,ro,bind", str(w.home)):
        _umount(w.home)
        pytest.skip("cannot remount read-only here")
    return lambda: _umount(w.home)


CASES["full-disk/tmpfs-lock"] = Case(
    ("lock", "--agent", "T", "db:full"), plant=_small_tmpfs_home, mentions=("disk is full",),
    after=_held_as_told("T", "db:full"),
)
CASES["full-disk/tmpfs-checkpoint"] = Case(
    ("checkpoint", "create"), plant=_small_tmpfs_home, codes=(1, 2), mentions=("full",),
)
CASES["state-dir/read-only-lock"] = Case(
    ("lock", "--agent", "T", "db:ro"), plant=_read_only_home, mentions=("{home}",),
    after=_held_as_told("T", "db:ro"),
)
CASES["state-dir/read-only-checkpoint"] = Case(
    ("checkpoint", "create"), plant=_read_only_home, mentions=("{home}",),
)
CASES["state-dir/read-only-listing"] = Case(
    ("locks",), plant=_read_only_home, codes=(0, 2), mentions=("{home}",),
)


# Building and running a case --------------------------------------------------------------------
def _run(case: Case, w: World) -> Result:
    args = [_fill(a, w) for a in case.args]
    env = {k: _fill(v, w) for k, v in case.env}
    cwd = w.repo if case.cwd == "repo" else w.outside
    if case.process:
        limit = case.limit

        def limited() -> None:
            if limit:  # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        try:
            return versatil_process(*args, cwd=cwd, env=env, timeout=case.timeout,
                                    preexec_fn=limited)
        except subprocess.TimeoutExpired:
            return Result(-9, "", f"(no answer within {case.timeout} s)")
    return versatil(*args, cwd=cwd, env=env)


def _check_answer(case: Case, w: World, result: Result, tally: Tally) -> None:
    tally.bad_inputs += 1
    mentions = [_fill(m, w) for m in case.mentions]
    if case.damaged and result.code == 0:
        problems = one_line_problems(result, (0,), [*mentions, "moved it aside"])
    else:
        problems = one_line_problems(result, case.codes, mentions)
    assert problems == [], f"{problems}\n{result}"


def _check_nothing_lost(
    case: Case, w: World, before: dict[str, dict[str, bytes]], tally: Tally
) -> None:
    damaged = _fill(case.damaged, w)
    lost = lost_files(before["repo"], w.repo,
                      may_change=lambda rel: rel.startswith(case.repo_changes))
    lost += lost_files(before["home"], w.home, may_change=lambda rel: (
        bool(damaged) and rel.endswith(damaged)) or rel.startswith(case.changes))
    tally.lost(lost)
    assert lost == []
    if damaged:  # set aside whole, not silently replaced
        rel, original = next((k, v) for k, v in before["home"].items() if k.endswith(damaged))
        name = Path(rel).name
        kept = [p.read_bytes() for p in [*w.home.rglob(f"{name}.corrupt-*"),
                                         *w.home.rglob(name)]]
        tally.lost([] if original in kept else [damaged])
        assert original in kept, f"{damaged} was replaced without being set aside"


def _check_still_working(w: World, tally: Tally) -> None:
    """Keeper's lock survived, and ordinary commands work."""
    holders = {g.agent for g in LockManager(repo=w.repo).holders()}
    tally.lost([] if "Keeper" in holders else ["Keeper's lock"])
    assert "Keeper" in holders
    listing = versatil("checkpoint", "list", "--json", cwd=w.repo)
    assert listing.code == 0, listing
    assert {c["id"] for c in json.loads(listing.out)["checkpoints"]} >= set(w.checkpoints)


def _snapshot(w: World) -> dict[str, dict[str, bytes]]:
    return {"repo": snapshot_files(w.repo), "home": snapshot_files(w.home)}


def _big_collision_log(w: World) -> None:
    log = w.home / "logs" / "collision-detection.jsonl"
    line = b'{"version":1,"time":1.0,"stream":"collision-detection","kind":"padding"}\n'
    log.write_bytes(line * (64 * 1024 // len(line) + 1))
    log.chmod(0o600)


def _ran_and_released(w: World, result: Result) -> list[str]:
    problems = []
    if b"ran\n" not in (w.repo / "src/a.py").read_bytes():
        problems.append("the command did not run")
    if any(g.agent == "R" for g in LockManager(repo=w.repo).holders()):
        problems.append("R still holds its lock after the run")
    return problems


CASES["full-disk/run-files-modified-log"] = Case(
    ("run", "--agent", "R", "--no-monitor", "--lock", "src/a.py", "--", "sh", "-c",
     "echo ran >> src/a.py"),
    process=True, limit=32 * 1024, codes=(0,), mentions=("collision-detection.jsonl",),
    plant=_big_collision_log, after=_ran_and_released, repo_changes=("src/a.py",),
    changes=("logs/resource-locks.json",),
)


# Bugs this corpus found that are not fixed yet: case name -> reason (the case is an xfail).
# Found and since fixed: checkpoint metadata and wave-run state of another schema version read
# silently; a wave-run state damage reported twice, wrongly; a "billion laughs" plan; raw
# OSError (exit 70) from checkpoints on a read-only or full state directory; "git add -A
# failed: no message" for a git killed by SIGXFSZ; `lock` and `checkpoint create` saying
# "nothing was changed" about a change made when only the event log was full.
KNOWN_BUGS: dict[str, str] = {}


def _params() -> list[object]:
    return [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[name]))
        if name in KNOWN_BUGS else name
        for name in sorted(CASES)
    ]


@pytest.mark.parametrize("name", _params())
def test_bad_input(name: str, world: World, tally: Tally) -> None:
    case = CASES[name]
    undo = case.plant(world) if case.plant else None
    try:
        before = _snapshot(world)
        result = _run(case, world)
        _check_answer(case, world, result, tally)
        _check_nothing_lost(case, world, before, tally)
    finally:
        if undo is not None:
            undo()
    if case.after is not None:
        taken = case.after(world, result)
        tally.locks_stuck += len(taken) if case.after_counts_as_stuck else 0
        assert taken == []
    _check_still_working(world, tally)


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 50
    assert len(list((DATA / "config").glob("*.toml"))) + len(
        list((DATA / "plans").glob("*.yaml"))) >= 40
