"""A write made under a lock is the lock's agent's even when the monitor sees it after the
release: short tasks lock, write and release before the monitor gets to the event."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from integration.helpers import Spawner, commit_files, wait_for
from integration.test_monitor import FILES, start_monitor

from versatil_fs.locks.manager import LockManager
from versatil_fs.monitor import lock_held_at
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir


def test_a_write_seen_after_its_lock_was_released_is_still_attributed(
    spawn: Spawner, git_repo: Path
) -> None:
    repo = commit_files(git_repo, FILES)
    monitor = start_monitor(spawn, repo)
    manager = LockManager(repo=repo)
    # Stopped, the monitor can only see the write once the lock is gone.
    os.kill(monitor.pid, signal.SIGSTOP)
    try:
        with manager.hold(["src/"], agent="Dana-Database"):
            written = time.time()
            target = repo / "src" / "a.py"
            target.write_text("a = 5\n")
            os.utime(target, (written, written))
            # More than a kernel timestamp tick between the write and the release, so the
            # mtime is unambiguously inside the lock.
            wait_for(lambda: time.time() > written + 0.02)
    finally:
        os.kill(monitor.pid, signal.SIGCONT)
    line = monitor.next()
    assert (line["kind"], line["agent"], line["path"]) == ("locked-write", "Dana-Database",
                                                            "src/a.py")
    manager.close()


def test_the_locks_log_answers_only_inside_a_locks_interval(git_repo: Path) -> None:
    repo = commit_files(git_repo, FILES)
    key = Repository.find(repo).key
    manager = LockManager(repo=repo)
    lease = manager.acquire(["src/"], agent="Marcus-Backend", wait=0)
    inside = time.time()
    wait_for(lambda: time.time() > inside + 0.02)
    lease.release()
    after = time.time()
    state = StateDir()
    held = lock_held_at(state, key, "src/a.py", inside)
    assert held is not None and held.agent == "Marcus-Backend"
    assert lock_held_at(state, key, "docs/x.md", inside) is None  # not covered
    assert lock_held_at(state, key, "src/a.py", after) is None  # after the release
    assert lock_held_at(state, key, "src/a.py", lease.grant.acquired_at - 1) is None  # before
    assert lock_held_at(state, "/another/.git", "src/a.py", inside) is None  # another repo
    manager.close()


def test_a_monitor_inside_a_submodule_sees_a_lock_taken_above_it(tmp_path: Path) -> None:
    """Submodule files are locked in the top superproject's lock space (issue 12, item 12), so
    the monitor of the submodule must attribute a write there to the superproject's lock."""
    from integration.helpers import git, make_git_repo

    from versatil_fs.monitor import LockView

    sub = make_git_repo(tmp_path / "sub-origin", {"s.txt": "sub\n"})
    top = make_git_repo(tmp_path / "super", {"README.md": "top\n"})
    git(top, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "libs/sm")
    git(top, "commit", "-q", "-m", "submodule")
    manager = LockManager(repo=top)
    lease = manager.acquire(["libs/"], agent="Marcus-Backend", wait=0)
    inside = time.time()
    wait_for(lambda: time.time() > inside + 0.02)
    state = StateDir()
    key = Repository.find(top / "libs" / "sm").key
    view = LockView(state, key)
    holder = view.holder("s.txt")
    assert holder is not None and holder.agent == "Marcus-Backend"
    lease.release()
    assert view.holder("s.txt") is None
    held = lock_held_at(state, key, "s.txt", inside)
    assert held is not None and held.agent == "Marcus-Backend"
    manager.close()
