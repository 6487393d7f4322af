"""The one tree scan (``versatil_fs.monitor.scan``): the rule for what counts as a file of the tree,
the stamps and the "modified between two scans" answer that ``versatil run``, the wave executor and
the monitor share — and ``events.emit_done``, which lets the monitor go on when its log cannot be
written."""

from __future__ import annotations

import os
import queue
from pathlib import Path

import msgspec
import pytest
import yaml
from integration.helpers import git

from versatil_fs import events, runner
from versatil_fs.errors import StateError
from versatil_fs.monitor import (
    IgnoreMatcher,
    Monitor,
    Write,
    changes,
    modified,
    scan,
    stamp,
    within,
)
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir


@pytest.fixture
def repo(git_repo: Path) -> Repository:
    files = {
        ".gitignore": "*.log\n",
        "src/a.py": "a\n",
        "src/kept.out": "tracked, although guard.ignore matches it\n",
    }
    for name, text in files.items():
        (git_repo / name).parent.mkdir(parents=True, exist_ok=True)
        (git_repo / name).write_text(text)
    git(git_repo, "add", "-f", "-A")
    git(git_repo, "commit", "-q", "-m", "files")
    (git_repo / ".versatil").write_text('[guard]\nignore = ["*.out"]\n')
    return Repository.find(git_repo)


def test_named_paths_get_no_exception_from_the_ignore_rules(repo: Repository) -> None:
    root = repo.toplevel
    (root / "src" / "new.out").write_text("guard.ignore matches me\n")
    (root / "src" / "debug.log").write_text(".gitignore matches me\n")
    (root / "src" / "b.py").write_text("b\n")
    with IgnoreMatcher(repo, ["*.out"]) as matcher:
        named = ["src/new.out", "src/debug.log", "src/b.py", "src/kept.out"]
        # Named one by one (a task's declared writes, a run's locked files) or as their
        # directory: the same files, and never the ignored ones. A tracked file stays.
        assert sorted(scan(root, named, matcher)) == ["src/b.py", "src/kept.out"]
        assert sorted(scan(root, ["src"], matcher)) == ["src/a.py", "src/b.py", "src/kept.out"]


def test_no_paths_is_no_files_and_nested_repositories_are_not_files(repo: Repository) -> None:
    root = repo.toplevel
    (root / "vendor" / "lib").mkdir(parents=True)
    git(root / "vendor" / "lib", "init", "-q")
    (root / "vendor" / "lib" / "x.c").write_text("x")
    with IgnoreMatcher(repo) as matcher:
        assert scan(root, [], matcher) == {}  # not the whole tree
        assert scan(root, ["vendor"], matcher) == {}  # not the nested repository's directory
        assert matcher.nested == {"vendor/lib"}


def test_stamps_compare_the_same_after_a_trip_through_json(repo: Repository) -> None:
    with IgnoreMatcher(repo) as matcher:
        before = scan(repo.toplevel, ["."], matcher)
        read_back = msgspec.json.decode(msgspec.json.encode(before))  # lists, not tuples
        assert changes(read_back, before) == [] and modified(read_back, before) == []
        (repo.toplevel / "src" / "a.py").write_text("changed, another size\n")
        (repo.toplevel / "src" / "c.py").write_text("c\n")
        after = scan(repo.toplevel, ["."], matcher)
    assert changes(read_back, after) == [("src/a.py", "modified"), ("src/c.py", "created")]
    info = os.lstat(repo.toplevel / "src" / "a.py")
    assert after["src/a.py"] == stamp(info) == (
        info.st_size, info.st_mtime_ns, info.st_ino, info.st_mode
    )
    assert within(after, ["src/a.py", "docs"]) == {"src/a.py": after["src/a.py"]}
    assert within(after, ["."]) == after


def test_versatil_run_leaves_out_what_guard_ignore_names(repo: Repository) -> None:
    result = runner.run(
        ["sh", "-c", "echo x > src/new.out; echo y > src/a.py"], agent="A", writes=["src"],
        monitor=False, cwd=repo.toplevel,
    )
    assert result.exit_code == 0
    assert result.files_modified == ["src/a.py"]


def test_the_wave_executor_leaves_out_what_guard_ignore_names(repo: Repository) -> None:
    from versatil_fs.waves.executor import WaveExecutor
    from versatil_fs.waves.plan import Plan

    plan = repo.toplevel / "plan.yaml"
    task = {"id": "t", "agent": "A", "writes": ["src"],
            "run": "echo x > src/new.out; echo y > src/a.py"}
    plan.write_text(yaml.safe_dump({"tasks": [task]}))
    run = WaveExecutor(Plan.load(plan), repo=repo.toplevel).run()
    assert run.status == "succeeded"
    assert run.tasks["t"].files == ["src/a.py"]


def test_the_monitor_goes_on_when_its_log_cannot_be_written(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: queue.Queue[Write] = queue.Queue()
    notices: list[str] = []
    m = Monitor(repo, sink=writes.put, notify=notices.append)
    m.start()
    try:
        assert m.wait_ready(20)

        def full(self: StateDir, path: Path, line: bytes) -> None:
            raise StateError("No space left on device.")

        monkeypatch.setattr(StateDir, "append_line", full)
        for name in ("one.py", "two.py"):
            (repo.toplevel / "src" / name).write_text("x\n")
            assert writes.get(timeout=20).path == f"src/{name}"  # reported, not lost
        assert m.failure is None
    finally:
        m.stop(final_scan=False)
    said = [n for n in notices if "could not be written" in n]
    assert len(said) == 1 and "the monitor goes on" in said[0], notices


def test_emit_done_says_one_sentence_and_returns_none(
    versatil_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert events.emit_done("locks", "grant", done="granted", lease="L") is not None

    def full(self: StateDir, path: Path, line: bytes) -> None:
        raise StateError("No space left on device.")

    monkeypatch.setattr(StateDir, "append_line", full)
    told: list[str] = []
    assert events.emit_done("locks", "grant", done="granted", warn=told.append) is None
    assert told == [
        f"granted, but the 'grant' event could not be written to "
        f"{StateDir().event_log('locks')} (No space left on device.)"
    ]
    assert events.emit_done("locks", "grant", done="granted") is None
    err = capsys.readouterr().err
    assert err.startswith("versatil: granted, but the 'grant' event") and err.count("\n") == 1
    with pytest.raises(ValueError):
        events.emit_done("no-such-stream", "x")
