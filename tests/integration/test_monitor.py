"""``versatil monitor`` against real inotify, real git and real processes.

Every assertion that something was *not* reported is closed by a sentinel: the test writes one
more file afterwards and reads the monitor's output up to the sentinel's line, so anything
wrongly reported would already have been printed (the monitor reports in event order).
Nothing waits on a fixed sleep: the tests read the monitor's stdout through a pipe (a reader
thread with a queue and deadlines) or wait for an event in the log.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.helpers import Child, Spawner, git, versatil_argv, wait_for

from versatil_fs import events
from versatil_fs.locks.manager import LockManager
from versatil_fs.monitor import Election, unlocked_write_count
from versatil_fs.repo import Repository

FILES = {
    "src/a.py": "a = 1\n",
    "src/b.py": "b = 2\n",
    "docs/x.md": "# x\n",
    "README.md": "hello\n",
    ".gitignore": "build/\n*.log\n!keep.log\n",
}


class MonitorProcess:
    """A running ``versatil monitor --json``: read its writes, up to a sentinel."""

    sentinels = 0  # shared: two monitors of one test must not reuse one sentinel's name

    def __init__(self, child: Child, repo: Path) -> None:
        self.child = child
        self.repo = repo

    @property
    def pid(self) -> int:
        return self.child.pid

    def next(self, timeout: float = 20.0) -> dict[str, Any]:
        line = self.child.read_json(timeout)
        assert isinstance(line, dict), line
        return line

    def until(self, path: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Every write line up to and including the first one for ``path``."""
        seen = []
        while True:
            line = self.next(timeout)
            seen.append(line)
            if line["path"] == path:
                return seen

    def sentinel(self) -> list[dict[str, Any]]:
        """Write a fresh sentinel file and return what was reported before it (not it)."""
        MonitorProcess.sentinels += 1
        name = f"docs/sentinel-{MonitorProcess.sentinels}.md"
        (self.repo / name).write_text("sentinel\n")
        seen = self.until(name)
        assert seen[-1]["event"] == "created", seen[-1]
        return seen[:-1]


def start_monitor(spawn: Spawner, repo: Path, *args: str) -> MonitorProcess:
    child = spawn.popen(versatil_argv("monitor", "--json", *args), cwd=repo, name="monitor")
    wait_for(
        lambda: "watching" in child.stderr or "already watching" in child.stderr
        or not child.alive,
        message=lambda: f"the monitor to start; stderr: {child.stderr!r}",
    )
    assert child.alive, child.stderr
    return MonitorProcess(child, repo)


@pytest.fixture
def monitor(spawn: Spawner, repo: Path) -> Iterator[MonitorProcess]:
    yield start_monitor(spawn, repo)


def log(kind: str | None = None) -> list[events.Event]:
    found = events.read("collision-detection")
    return [e for e in found if kind is None or e.kind == kind]


# What is reported ------------------------------------------------------------------------------
def test_unlocked_write_is_one_json_line_per_event(monitor: MonitorProcess, repo: Path) -> None:
    (repo / "src" / "a.py").write_text("a = 2\n")
    line = monitor.next()
    assert set(line) == {"kind", "path", "event", "agent", "time"}
    assert line["kind"] == "unlocked-write"
    assert line["path"] == "src/a.py"
    assert line["event"] == "modified"
    assert line["agent"] is None
    assert isinstance(line["time"], float)
    (repo / "src" / "c.py").write_text("c = 3\n")
    assert monitor.next()["event"] == "created"
    (repo / "src" / "b.py").unlink()
    line = monitor.next()
    assert (line["path"], line["event"]) == ("src/b.py", "deleted")
    recorded = log("unlocked-write")
    assert [(e.data["path"], e.data["event"]) for e in recorded] == [
        ("src/a.py", "modified"), ("src/c.py", "created"), ("src/b.py", "deleted"),
    ]
    assert unlocked_write_count(repo) == 3


def test_write_under_a_lock_is_attributed_to_its_agent(
    monitor: MonitorProcess, repo: Path
) -> None:
    manager = LockManager(repo=repo)
    with manager.hold(["src/"], agent="Marcus-Backend"):
        (repo / "src" / "a.py").write_text("a = 2\n")
        line = monitor.next()
    assert line["kind"] == "locked-write"
    assert line["agent"] == "Marcus-Backend"
    assert line["path"] == "src/a.py"
    # After the release the same file is an unlocked write again. (Another size: on a kernel
    # with coarse timestamps two same-size writes in one tick look alike, see monitor.py.)
    (repo / "src" / "a.py").write_text("a = 30\n")
    assert monitor.next()["kind"] == "unlocked-write"
    modified = [e for e in log("files-modified") if e.data.get("source") == "monitor"]
    assert [(e.agent, e.data["paths"]) for e in modified] == [("Marcus-Backend", ["src/a.py"])]
    assert unlocked_write_count(repo) == 1
    manager.close()


def test_git_dir_and_ignored_files_are_never_reported(
    monitor: MonitorProcess, repo: Path
) -> None:
    (repo / ".git" / "scratch").write_text("git's own\n")
    (repo / "build" / "deep").mkdir(parents=True)
    (repo / "build" / "deep" / "out.o").write_text("object\n")
    (repo / "debug.log").write_text("noise\n")
    git(repo, "add", "src")  # rewrites .git/index
    before_sentinel = monitor.sentinel()
    assert before_sentinel == []
    # A negated pattern (`!keep.log`) is git's decision too: reported.
    (repo / "keep.log").write_text("kept\n")
    assert monitor.next()["path"] == "keep.log"


def test_atomic_save_is_reported_once_as_a_write_to_the_target(
    monitor: MonitorProcess, repo: Path
) -> None:
    target = repo / "README.md"
    temporary = repo / ".README.md.swp.tmp"
    temporary.write_text("saved by an editor\n")
    os.replace(temporary, target)
    seen = monitor.sentinel()
    assert [(s["path"], s["event"]) for s in seen] == [("README.md", "modified")]
    # A save that fsyncs the temporary file before the rename: still one line.
    temporary = repo / "docs" / "x.md.tmp"
    with open(temporary, "w") as handle:
        handle.write("saved slowly\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, repo / "docs" / "x.md")
    seen = monitor.sentinel()
    assert [(s["path"], s["event"]) for s in seen] == [("docs/x.md", "modified")]


def test_new_nested_directories_are_watched_at_once(monitor: MonitorProcess, repo: Path) -> None:
    nested = repo / "a" / "b" / "c"
    nested.mkdir(parents=True)
    (nested / "f.txt").write_text("deep\n")
    line = monitor.next()
    assert (line["path"], line["event"]) == ("a/b/c/f.txt", "created")
    # The directories stay watched: a later write deep inside is an ordinary event.
    (nested / "g.txt").write_text("deeper\n")
    assert monitor.next()["path"] == "a/b/c/g.txt"


def test_rename_is_one_moved_line(monitor: MonitorProcess, repo: Path) -> None:
    os.rename(repo / "src" / "a.py", repo / "src" / "renamed.py")
    line = monitor.next()
    assert (line["path"], line["event"], line["from"]) == ("src/renamed.py", "moved", "src/a.py")
    assert monitor.sentinel() == []


def test_directory_moved_out_of_view_reports_its_files_deleted(
    monitor: MonitorProcess, repo: Path, tmp_path: Path
) -> None:
    os.rename(repo / "src", tmp_path / "elsewhere")
    seen = monitor.sentinel()
    assert sorted((s["path"], s["event"]) for s in seen) == [
        ("src/a.py", "deleted"), ("src/b.py", "deleted"),
    ]


def test_paths_narrow_what_is_printed(spawn: Spawner, repo: Path) -> None:
    watcher = start_monitor(spawn, repo, "docs")
    (repo / "src" / "a.py").write_text("a = 2\n")
    (repo / "docs" / "y.md").write_text("y\n")
    assert watcher.next()["path"] == "docs/y.md"
    # Not printed, but recorded: the observer watches for everyone.
    wait_for(lambda: unlocked_write_count(repo) == 2)


def test_human_output_is_one_readable_line(spawn: Spawner, repo: Path) -> None:
    child = spawn.popen(versatil_argv("monitor"), cwd=repo, name="monitor")
    wait_for(lambda: "watching" in child.stderr, message=lambda: child.stderr)
    (repo / "docs" / "x.md").write_text("changed\n")
    line = child.read_line()
    assert line.endswith("unlocked-write modified docs/x.md"), line


# Bursts and overflows --------------------------------------------------------------------------
def _burst(repo: Path, count: int) -> set[str]:
    directory = repo / "burst"
    directory.mkdir(exist_ok=True)
    names = set()
    for i in range(count):
        (directory / f"f{i:05d}.txt").write_text(f"{i}\n")
        names.add(f"burst/f{i:05d}.txt")
    return names


def _collect(watcher: MonitorProcess, names: set[str]) -> Counter[str]:
    seen: Counter[str] = Counter()
    missing = set(names)
    while missing:
        path = watcher.next(timeout=30)["path"]
        seen[path] += 1
        missing.discard(path)
    return seen


@pytest.mark.parametrize("count", [1000, pytest.param(5000, marks=pytest.mark.slow)])
def test_burst_is_reported_completely_and_once(
    monitor: MonitorProcess, repo: Path, count: int
) -> None:
    names = _burst(repo, count)
    seen = _collect(monitor, names)
    seen.update(s["path"] for s in monitor.sentinel())
    assert set(seen) == names
    assert max(seen.values()) == 1


def test_queue_overflow_triggers_a_rescan_that_misses_nothing(
    monitor: MonitorProcess, repo: Path
) -> None:
    # Stopped, the monitor cannot read inotify: 6,000 files x 3 events overflow the kernel's
    # 16,384-event queue for certain. The directory is watched first so that its files get
    # events of their own (a new directory's files are found by watchdog's scan of it instead).
    (repo / "burst").mkdir()
    (repo / "burst" / "first.txt").write_text("first\n")
    assert monitor.next()["path"] == "burst/first.txt"
    os.kill(monitor.pid, signal.SIGSTOP)
    try:
        names = _burst(repo, 6000)
    finally:
        os.kill(monitor.pid, signal.SIGCONT)
    seen = _collect(monitor, names)
    seen.update(s["path"] for s in monitor.sentinel())
    assert set(seen) == names
    assert max(seen.values()) == 1
    assert "overflowed" in monitor.child.stderr
    assert "rescan done" in monitor.child.stderr
    rescans = log("rescan")
    assert len(rescans) == 1 and rescans[0].data["changes"] > 0


# One observer per repository -------------------------------------------------------------------
def test_second_monitor_follows_then_takes_over(spawn: Spawner, repo: Path) -> None:
    first = start_monitor(spawn, repo)
    second = start_monitor(spawn, repo)
    assert f"process {first.pid} is already watching" in second.child.stderr
    (repo / "docs" / "one.md").write_text("1\n")
    assert first.next()["path"] == "docs/one.md"
    assert second.next()["path"] == "docs/one.md"  # printed from the first one's log
    assert first.sentinel() == []
    sentinel = f"docs/sentinel-{MonitorProcess.sentinels}.md"
    assert [line["path"] for line in second.until(sentinel)] == [sentinel]
    # Each write logged once, by the observing monitor only.
    assert [e.data["path"] for e in log("unlocked-write")] == ["docs/one.md", sentinel]
    assert {e.pid for e in log("unlocked-write")} == {first.pid}
    # kill -9: the election lock goes with the process; the second one observes from now on.
    first.child.kill9()
    wait_for(lambda: any(e.pid == second.pid for e in log("monitor-started")))
    assert Election(Repository.find(repo)).holder_pid() == second.pid
    (repo / "docs" / "two.md").write_text("2\n")
    assert second.next()["path"] == "docs/two.md"
    assert [e.pid for e in log("unlocked-write") if e.data["path"] == "docs/two.md"] == [
        second.pid
    ]


def test_monitor_outside_a_repository_is_a_clear_error(spawn: Spawner, tmp_path: Path) -> None:
    child = spawn.popen(versatil_argv("monitor"), cwd=tmp_path, name="monitor")
    assert child.wait() == 2
    assert "not inside a git repository" in child.stderr
    assert "Traceback" not in child.stderr


def test_sigterm_stops_the_monitor_cleanly(monitor: MonitorProcess, repo: Path) -> None:
    os.kill(monitor.pid, signal.SIGTERM)
    assert monitor.child.wait() == 0
    stopped = log("monitor-stopped")
    assert [e.pid for e in stopped] == [monitor.pid]
    assert json.dumps(stopped[0].data["guards"]) == '["."]'


def test_each_worktree_has_its_own_observer(spawn: Spawner, repo: Path) -> None:
    # Linked worktrees share their locks but not their files: one observer for each.
    tree = repo.parent / "second-tree"
    git(repo, "worktree", "add", "-q", str(tree), "-b", "second")
    main_watcher = start_monitor(spawn, repo)
    tree_watcher = start_monitor(spawn, tree.resolve())
    assert "already watching" not in tree_watcher.child.stderr
    (tree / "docs" / "x.md").write_text("written in the second tree\n")
    line = tree_watcher.next()
    assert (line["path"], line["kind"]) == ("docs/x.md", "unlocked-write")
    assert main_watcher.sentinel() == []
    assert tree_watcher.sentinel() == []
    # A lock is one for the whole repository, whichever tree takes it.
    manager = LockManager(repo=repo)
    with manager.hold(["docs/x.md"], agent="Dana"):
        (tree / "docs" / "x.md").write_text("under Dana's lock\n")
        assert tree_watcher.next()["agent"] == "Dana"
    manager.close()
