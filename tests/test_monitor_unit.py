"""The monitor's and the run wrapper's parts on their own: rules, git's ignore answers, the
tree scan, attribution, the election, and the in-process monitor (real inotify) where a case is
easier to set up inside one process — the watch limit, guarded paths, extra ignore patterns.
"""

from __future__ import annotations

import errno
import os
import queue
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from integration.helpers import Spawner, git, lock_agent, wait_for

from versatil_fs import config as config_module
from versatil_fs import events, monitor, runner
from versatil_fs.locks.manager import LockManager
from versatil_fs.monitor import (
    Election,
    IgnoreMatcher,
    LockView,
    Monitor,
    Write,
    changes,
    normalize_guards,
    scan,
    under,
    unlocked_write_count,
    writes_from_event,
)
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir


@pytest.fixture
def repo(git_repo: Path) -> Repository:
    files = {
        ".gitignore": "build/\n*.log\n!keep.log\nnode_modules/\n",
        "src/a.py": "a\n",
        "src/sub/b.py": "b\n",
        "docs/x.md": "x\n",
        "tracked.log": "tracked although ignored\n",
    }
    for name, text in files.items():
        (git_repo / name).parent.mkdir(parents=True, exist_ok=True)
        (git_repo / name).write_text(text)
    git(git_repo, "add", "-f", "-A")
    git(git_repo, "commit", "-q", "-m", "files")
    return Repository.find(git_repo)


# Pure rules -------------------------------------------------------------------------------------
def test_guards_are_normalised_and_nested_ones_dropped() -> None:
    assert normalize_guards(["./src/", "src/api", "docs"]) == ["docs", "src"]
    assert normalize_guards(["src", "."]) == ["."]
    assert normalize_guards(["srcs", "src"]) == ["src", "srcs"]


def test_under_respects_path_boundaries() -> None:
    assert under("src/a.py", ["src"]) and under("src", ["src"]) and under("x", ["."])
    assert not under("srcs/a.py", ["src"])


@pytest.mark.parametrize(
    ("name", "temporary"),
    [
        (".a.py.swp", True), ("a.py~", True), ("a.py.tmp", True), (".#a.py", True),
        ("4913", True), ("a.py___jb_tmp___", True), (".a.py.tmp.123", True),
        ("a.py", False), (".env", False), ("tmp.py", False),
    ],
)
def test_temporary_names(name: str, temporary: bool) -> None:
    assert monitor.looks_temporary(f"src/{name}") is temporary


def test_git_dir_paths() -> None:
    assert monitor.in_git_dir(".git/index")
    assert monitor.in_git_dir("vendor/lib/.git/HEAD")
    assert not monitor.in_git_dir(".github/workflows/ci.yml")
    assert not monitor.in_git_dir("src/.gitignore")


def test_changes_between_two_scans() -> None:
    old = {"a": (1, 1, 1, 1), "b": (1, 1, 1, 2), "c": (1, 1, 1, 3)}
    new = {"a": (1, 1, 1, 1), "b": (1, 2, 5, 2), "d": (1, 1, 1, 4)}
    assert changes(old, new) == [("b", "modified"), ("c", "deleted"), ("d", "created")]


def test_write_json_has_the_documented_keys() -> None:
    write = Write(kind="unlocked-write", path="a", event="created", agent=None, time=1.5)
    assert msgspec.json.decode(monitor.encode_write(write)) == {
        "kind": "unlocked-write", "path": "a", "event": "created", "agent": None, "time": 1.5,
    }
    moved = Write(
        kind="locked-write", path="b", event="moved", agent="M", time=2.0, source="a",
        rescan=True,
    )
    assert msgspec.json.decode(monitor.encode_write(moved))["from"] == "a"
    assert moved.line().endswith(
        "locked-write moved b (from a) (written while M held the lock) [rescan]"
    )
    restored = Write(
        kind="restored", path="c", event="modified", agent="H", time=2.0, checkpoint="cp-1",
        attributed="restore",
    )
    assert restored.line().endswith("restored modified c (by H's restore of cp-1)")
    assert msgspec.json.decode(monitor.encode_write(restored))["attributed"] == "restore"


def test_logged_events_become_writes() -> None:
    unlocked = events.Event(
        time=3.0, stream="collision-detection", kind="unlocked-write", repo="r",
        data={"path": "a", "event": "deleted"},
    )
    locked = events.Event(
        time=4.0, stream="collision-detection", kind="files-modified", agent="M", repo="r",
        data={"paths": ["b"], "event": "modified", "source": "monitor"},
    )
    by_run = events.Event(
        time=5.0, stream="collision-detection", kind="files-modified", agent="M", repo="r",
        data={"paths": ["c"]},
    )
    assert [w.path for w in writes_from_event(unlocked)] == ["a"]
    assert [(w.kind, w.agent) for w in writes_from_event(locked)] == [("locked-write", "M")]
    assert writes_from_event(by_run) == []  # the run's summary repeats what was reported


# Git's ignore rules -----------------------------------------------------------------------------
def test_ignore_matcher_asks_git(repo: Repository) -> None:
    with IgnoreMatcher(repo) as matcher:
        asked = [
            "build/", "build/x/y.o", "debug.log", "keep.log", "tracked.log", "src/a.py",
            "node_modules/", "deleted-dir/", "name with spaces.txt", "ünïcode.log",
        ]
        assert matcher.ignored(asked) == {
            "build/", "build/x/y.o", "debug.log", "node_modules/", "ünïcode.log",
        }


def test_ignore_matcher_answers_thousands_in_one_call(repo: Repository) -> None:
    # More answer bytes than a pipe holds: the conversation must interleave writes and reads.
    paths = [f"deep/{'d' * 60}/file{i}.{'log' if i % 2 else 'py'}" for i in range(3000)]
    with IgnoreMatcher(repo) as matcher:
        ignored = matcher.ignored(paths)
    assert len(ignored) == 1500 and all(p.endswith(".log") for p in ignored)


def test_ignore_matcher_rereads_rules_after_reset(repo: Repository) -> None:
    with IgnoreMatcher(repo) as matcher:
        assert not matcher.is_ignored("notes.txt")
        (repo.toplevel / ".gitignore").write_text("*.txt\n")
        assert not matcher.is_ignored("notes.txt")  # cached, and git has the old rules
        matcher.reset()
        assert matcher.is_ignored("notes.txt")


def test_extra_patterns_add_to_the_users_own(repo: Repository, tmp_path: Path) -> None:
    home_ignore = Path(os.environ["XDG_CONFIG_HOME"]) / "git" / "ignore"
    home_ignore.parent.mkdir(parents=True)
    home_ignore.write_text("*.bak\n")
    with IgnoreMatcher(repo, ["generated/", "*.snap"]) as matcher:
        assert matcher.ignored(["generated/", "a.snap", "a.bak", "a.py"]) == {
            "generated/", "a.snap", "a.bak",
        }


# The tree scan ----------------------------------------------------------------------------------
def test_scan_lists_what_git_counts_as_the_tree(repo: Repository) -> None:
    root = repo.toplevel
    (root / "build" / "deep").mkdir(parents=True)
    (root / "build" / "deep" / "o.o").write_text("o")
    (root / "vendor" / "lib").mkdir(parents=True)
    git(root / "vendor" / "lib", "init", "-q")
    (root / "vendor" / "lib" / "x.c").write_text("x")
    os.symlink("src/a.py", root / "link.py")
    with IgnoreMatcher(repo) as matcher:
        found = scan(root, ["."], matcher)
        # Not .git, not ignored files, not a nested repository's files; tracked files even
        # when a pattern matches them, and symlinks as themselves.
        assert sorted(found) == [
            ".gitignore", "README.md", "docs/x.md", "link.py", "src/a.py", "src/sub/b.py",
            "tracked.log",
        ]
        assert matcher.nested == {"vendor/lib"}
        assert sorted(scan(root, ["src", "docs/x.md", "missing"], matcher)) == [
            "docs/x.md", "src/a.py", "src/sub/b.py",
        ]


# Counting and attribution -----------------------------------------------------------------------
def test_unlocked_write_count_reads_the_log(repo: Repository) -> None:
    assert unlocked_write_count(repo) == 0
    for path in ("a", "b"):
        events.emit("collision-detection", "unlocked-write", repo=repo.key, path=path)
    events.emit("collision-detection", "unlocked-write", repo="/other/.git", path="c")
    events.emit("collision-detection", "files-modified", agent="M", repo=repo.key, paths=["d"])
    assert unlocked_write_count(repo) == 2
    assert unlocked_write_count(str(repo.toplevel)) == 2
    assert unlocked_write_count(repo, since=9e99) == 0


def test_lock_view_finds_live_write_locks_only(repo: Repository, spawn: Spawner) -> None:
    state = StateDir()
    view = LockView(state, repo.key)
    manager = LockManager(repo=repo)
    assert view.holder("src/a.py") is None
    with manager.hold(["src"], agent="Marcus"), manager.hold(["docs"], agent="R", mode="read"):
        grant = view.holder("src/sub/b.py")
        assert grant is not None and grant.agent == "Marcus"
        assert view.holder("docs/x.md") is None  # a read lock does not cover a write
        assert view.holder("srcs/x") is None
    assert view.holder("src/a.py") is None
    shell = manager.acquire(["docs"], agent="Shell", owner="shell", ttl=60)
    assert view.holder("docs/x.md") is not None
    manager.unlock(["docs"], agent="Shell")
    del shell
    # A holder killed with -9 is still listed until someone's next lock transaction, but its
    # flock is gone, so its lock covers nothing any more.
    agent = lock_agent(spawn, repo.toplevel)
    agent.acquire(["src"], agent="Doomed")
    assert view.holder("src/a.py") is not None
    agent.kill9()
    assert view.holder("src/a.py") is None
    manager.close()


def test_election_has_one_winner_and_hands_over(repo: Repository) -> None:
    first, second = Election(repo), Election(repo)
    assert first.try_win() and first.won
    assert not second.try_win()
    assert second.holder_pid() == os.getpid()
    won = threading.Event()

    def candidate() -> None:
        second.wait_to_win()
        won.set()

    thread = threading.Thread(target=candidate, daemon=True)
    thread.start()
    assert not won.wait(0.05)  # a bounded check that it is still blocked, not a sync sleep
    first.resign()
    assert won.wait(10)
    assert second.won
    second.resign()


# The monitor in this process --------------------------------------------------------------------
@pytest.fixture
def watching(repo: Repository) -> Iterator[Any]:
    monitors: list[Monitor] = []
    writes: queue.Queue[Write] = queue.Queue()
    notices: list[str] = []

    def start(**settings: object) -> Monitor:
        cfg = config_module.load(repo.toplevel, overrides=settings or None)
        m = Monitor(repo, config=cfg, sink=writes.put, notify=notices.append)
        monitors.append(m)
        m.start()
        assert m.wait_ready(20)
        return m

    try:
        yield start, writes, notices
    finally:
        for m in monitors:
            m.stop(final_scan=False)


def _next(writes: queue.Queue[Write]) -> Write:
    return writes.get(timeout=20)


def test_guarded_paths_limit_what_is_watched(repo: Repository, watching: Any) -> None:
    start, writes, _ = watching
    m = start(**{"guard.paths": ["src"], "guard.ignore": ["*.gen.py"]})
    assert m.guards == ["src"]
    root = repo.toplevel
    (root / "docs" / "x.md").write_text("unguarded\n")
    (root / "src" / "out.gen.py").write_text("generated\n")
    (root / "src" / "a.py").write_text("guarded\n")
    write = _next(writes)
    assert (write.path, write.event) == ("src/a.py", "modified")
    assert writes.empty()


def test_watch_limit_falls_back_to_rescans(
    repo: Repository, watching: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel limit is machine-wide and cannot be lowered for one test; refuse the watch for
    # one directory the way inotify_add_watch does when max_user_watches is reached.
    from watchdog.observers.inotify_c import InotifyFD

    original = InotifyFD.add_callback

    def add_callback(self: InotifyFD, path: bytes, *args: object) -> object:
        if path.endswith(b"/unwatchable"):
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        return original(self, path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(InotifyFD, "add_callback", add_callback)
    start, writes, notices = watching
    (repo.toplevel / "unwatchable").mkdir()
    start()
    wait_for(lambda: any("watch limit" in n for n in notices), message=lambda: str(notices))
    (repo.toplevel / "unwatchable" / "f.txt").write_text("no watch here\n")
    write = _next(writes)
    assert (write.path, write.event, write.rescan) == ("unwatchable/f.txt", "created", True)


def test_stop_reports_writes_whose_events_have_not_arrived(repo: Repository) -> None:
    writes: list[Write] = []
    m = Monitor(repo, sink=writes.append)
    m.take_baseline()
    m.start(delay=60)  # the observer never starts: only the final scan can see the write
    (repo.toplevel / "src" / "a.py").write_text("written\n")
    m.stop()
    assert [(w.path, w.event) for w in writes] == [("src/a.py", "modified")]
    assert unlocked_write_count(repo) == 1


# The run wrapper's parts ------------------------------------------------------------------------
def test_exit_code_of_a_signal_death() -> None:
    assert runner.exit_code_of(0) == 0
    assert runner.exit_code_of(3) == 3
    assert runner.exit_code_of(-signal.SIGKILL) == 137


def test_command_resolution_says_what_a_shell_would(tmp_path: Path) -> None:
    with pytest.raises(runner.CommandNotFound, match="command not found"):
        runner._resolve_command("no-such-command-xyz", tmp_path)
    with pytest.raises(runner.CommandNotFound):
        runner._resolve_command("./missing.sh", tmp_path)
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(runner.CommandNotExecutable, match="permission denied"):
        runner._resolve_command("./script.sh", tmp_path)
    script.chmod(0o755)
    assert runner._resolve_command("./script.sh", tmp_path) == str(script)
    assert runner._resolve_command("true", tmp_path).endswith("/true")
    assert runner.CommandNotFound.exit_code == 127
    assert runner.CommandNotExecutable.exit_code == 126


def test_python_api_runs_and_reports(repo: Repository) -> None:
    code = "import pathlib; pathlib.Path('src/new.py').write_text('x'); raise SystemExit(2)"
    mask_before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    result = runner.run(
        [sys.executable, "-c", code], agent="Marcus", writes=["src"], cwd=repo.toplevel,
        rollback_on_failure=True,
    )
    assert result.exit_code == 2
    assert result.files_modified == ["src/new.py"]
    assert result.rolled_back == ["src/new.py"]
    assert not (repo.toplevel / "src" / "new.py").exists()
    assert result.checkpoint is not None and result.safety_checkpoint is not None
    # The caller's signal mask is its own again.
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask_before


def test_empty_command_is_a_usage_error() -> None:
    from versatil_fs.errors import UsageError

    with pytest.raises(UsageError, match="Nothing to run"):
        runner.run([], agent="A")
