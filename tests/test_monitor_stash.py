"""The pre-commit framework's stash and un-stash as the monitor attributes them (issue 15,
item 3), from the `framework-stash` event `versatil hook check` logs under the framework."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from versatil_fs import events, linux
from versatil_fs.monitor import STREAM, unlocked_write_count
from versatil_fs.monitor.attribution import StashView
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir


def _emit_at(monkeypatch: pytest.MonkeyPatch, when: float, kind: str, **data: object) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: when)
        events.emit(STREAM, kind, **data)  # type: ignore[arg-type]


def _stash(repo: Repository, paths: list[str], *, pid: int, start: int, at: float,
           monkeypatch: pytest.MonkeyPatch) -> None:
    _emit_at(
        monkeypatch, at, "framework-stash", repo=repo.key, worktree=str(repo.toplevel),
        paths=paths, stashed_at=at - 0.5, framework_pid=pid, framework_start=start,
    )


def test_writes_while_the_framework_runs_are_its_unstash(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repository.find(git_repo)
    info = linux.process_info(os.getpid())
    assert info is not None
    now = time.time()
    # This test's own process stands for the framework's: alive, so its stash is open.
    _stash(repo, ["src/b.py"], pid=os.getpid(), start=info[1], at=now - 30,
           monkeypatch=monkeypatch)
    view = StashView(StateDir(), str(repo.toplevel))
    assert view.unstash_of("src/b.py") is not None
    assert view.unstash_of("src/a.py") is None  # not stashed
    assert StashView(StateDir(), "/another/tree").unstash_of("src/b.py") is None


def test_a_stash_whose_framework_is_gone_attributes_nothing(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repository.find(git_repo)
    info = linux.process_info(os.getpid())
    assert info is not None
    # Our pid with another start time: a reused pid is another process.
    _stash(repo, ["src/b.py"], pid=os.getpid(), start=info[1] + 1, at=time.time() - 30,
           monkeypatch=monkeypatch)
    assert StashView(StateDir(), str(repo.toplevel)).unstash_of("src/b.py") is None


def test_the_stash_itself_is_left_out_of_the_count(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repository.find(git_repo)
    tree = str(repo.toplevel)
    now = time.time()
    for when, path in ((now - 100, "src/b.py"), (now - 10.2, "src/b.py"), (now - 10.2, "x.py")):
        _emit_at(monkeypatch, when, "unlocked-write", repo=repo.key, path=path,
                 event="modified", worktree=tree)
    # The framework stashed src/b.py at now - 10.5 and our hook said so at now - 10.
    _stash(repo, ["src/b.py"], pid=1, start=0, at=now - 10, monkeypatch=monkeypatch)
    # The stash's write is left out; the edit long before it and the other file count.
    assert unlocked_write_count(git_repo) == 2


def test_a_stash_logged_after_the_first_look_is_seen(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The view reads only what the log gained since its last look."""
    repo = Repository.find(git_repo)
    info = linux.process_info(os.getpid())
    assert info is not None
    view = StashView(StateDir(), str(repo.toplevel))
    events.emit(STREAM, "unlocked-write", repo=repo.key, path="x.py", event="modified")
    assert view.unstash_of("src/b.py") is None
    _stash(repo, ["src/b.py"], pid=os.getpid(), start=info[1], at=time.time() - 1,
           monkeypatch=monkeypatch)
    events.emit(STREAM, "unlocked-write", repo=repo.key, path="y.py", event="modified")
    assert view.unstash_of("src/b.py") is not None
