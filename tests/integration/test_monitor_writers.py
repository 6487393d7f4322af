"""Issue 15, items 1-4: who a write is attributed to. After an unlock nobody's; a restore's to
the restore; never the monitor's own output file; and only "written while X held the lock" when
that is all the monitor can know."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from integration.helpers import Spawner, run_versatil, wait_for
from integration.test_monitor import FILES, log, start_monitor

from versatil_fs.locks.manager import LockManager
from versatil_fs.monitor import lock_held_at, unlocked_write_count
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir

__all__ = ["FILES"]


def test_a_write_after_unlock_is_an_unlocked_write(spawn: Spawner, repo: Path) -> None:
    """Issue 15 item 1, exactly as reported: lock, unlock, start the monitor, `echo >>`."""
    for command in (("lock", "--agent", "Marcus", "src/"), ("unlock", "--agent", "Marcus", "src/")):
        result = run_versatil(*command, cwd=repo)
        assert result.returncode == 0, result.stderr
    monitor = start_monitor(spawn, repo)
    subprocess.run("echo human >> src/a.py", shell=True, cwd=repo, check=True)
    line = monitor.next()
    assert (line["kind"], line["path"], line["agent"]) == ("unlocked-write", "src/a.py", None)
    assert not [e for e in log("files-modified") if e.agent == "Marcus"]
    assert unlocked_write_count(repo) == 1


def test_unlocking_part_of_a_lease_ends_only_those_paths(repo: Path) -> None:
    """`unlock src/` of a lease on src/ and docs/: a write to src/ after it is nobody's, even
    once the rest of the lease has been released too."""
    key = Repository.find(repo).key
    manager = LockManager(repo=repo)
    lease = manager.acquire(["src/", "docs/"], agent="Marcus", wait=0)
    manager.unlock(["src/"], agent="Marcus")
    between = time.time() + 0.01
    wait_for(lambda: time.time() > between + 0.02)
    lease.release()
    state = StateDir()
    assert lock_held_at(state, key, "src/a.py", between) is None
    held = lock_held_at(state, key, "docs/x.md", between)
    assert held is not None and held.agent == "Marcus"
    manager.close()
