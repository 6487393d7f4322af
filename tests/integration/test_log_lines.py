"""Log lines a person reads (issue 15, item 13): only fields that have a value, durations
rounded, one line per fact, and a wait event's `holder_pid` the holder's; --json keeps every
field of every event."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from integration.helpers import Spawner, run_versatil, versatil_argv, wait_for

from versatil_fs import LockManager, events

FILES = {"src/a.py": "a\n"}


def lines(repo: Path, *args: str) -> list[str]:
    result = run_versatil("logs", *args, cwd=repo)
    assert result.returncode == 0, result
    return result.stdout.splitlines()


def test_a_line_shows_only_fields_with_a_value_and_rounds_durations(repo: Path) -> None:
    key = str(repo / ".git")
    events.emit("collision-detection", "files-modified", agent="Marcus", repo=key,
                paths=["src/a.py"], wave=None, task=None)
    events.emit("wave-execution", "task-done", agent="Marcus", task="t1", wave=2,
                duration=10.023038864135742, rolled_back=[], error="")

    modified = lines(repo, "collision-detection")
    done = lines(repo, "wave-execution")

    assert modified[0].endswith(" files-modified Marcus paths=src/a.py"), modified
    assert done[0].endswith(" task-done Marcus task=t1 wave=2 duration=10.0s"), done
    # --json keeps every field, empty or not, unrounded.
    document = json.loads(run_versatil("logs", "wave-execution", "--json", cwd=repo).stdout)
    assert document["data"] == {"task": "t1", "wave": 2, "duration": 10.023038864135742,
                                "rolled_back": [], "error": ""}


def test_a_wait_event_names_the_holders_process(
    repo: Path, manager: LockManager, spawn: Spawner
) -> None:
    holder = manager.acquire(["src/a.py"], agent="Dana")
    waiter = spawn.popen(versatil_argv("lock", "--agent", "Marcus", "--wait", "60", "src/a.py"),
                         cwd=repo, stdin=False)
    wait_for(lambda: [e for e in events.read("locks") if e.kind == "wait"],
             message="Marcus's wait event")
    holder.release()
    assert waiter.wait() == 0

    wait = next(e for e in events.read("locks") if e.kind == "wait")
    # Before: holder_pid was the waiter's own pid.
    assert wait.data["holder_pid"] == holder.grant.pid != waiter.pid
    assert wait.data["waiter_pid"] == waiter.pid == wait.pid
    shown = next(line for line in lines(repo, "locks") if " wait Marcus " in line)
    assert f"holder_pid={holder.grant.pid}" in shown and "blocked_by=Dana" in shown
    # The grant's line: waited rounded, no write_paths repeating resources.
    grant = next(line for line in lines(repo, "locks") if " grant Marcus " in line)
    assert re.search(r" waited=\d+\.\ds", grant) and "write_paths" not in grant, grant


def test_a_write_the_writer_recorded_is_one_line_not_two(repo: Path) -> None:
    key = str(repo / ".git")
    # What `versatil run --lock src/a.py` under a monitor leaves: the monitor saw the write
    # while Marcus's lease was held, and the run recorded its own child's write.
    events.emit("collision-detection", "files-modified", agent="Marcus", repo=key,
                paths=["src/a.py"], wave=None, task=None, event="modified", source="monitor",
                lease="L1", worktree=str(repo))
    events.emit("collision-detection", "files-modified", agent="Marcus", repo=key,
                paths=["src/a.py"], wave=None, task=None)
    # A write the monitor saw under Dana's lock that nobody else recorded stays.
    events.emit("collision-detection", "files-modified", agent="Dana", repo=key,
                paths=["src/b.py"], event="modified", source="monitor", lease="L2")

    shown = [line for line in lines(repo, "collision-detection") if "files-modified" in line]
    every = run_versatil("logs", "collision-detection", "--json", cwd=repo).stdout.splitlines()

    assert [line.split(" ", 2)[2] for line in shown] == [
        "files-modified Marcus paths=src/a.py",
        "files-modified Dana paths=src/b.py event=modified source=monitor lease=L2",
    ]
    assert len(every) == 3


def test_a_later_write_under_another_lease_is_not_folded(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = str(repo / ".git")
    events.emit("collision-detection", "files-modified", agent="Marcus", repo=key,
                paths=["src/a.py"], event="modified", source="monitor", lease="L1")
    events.emit("locks", "release", agent="Marcus", repo=key, lease="L1")
    # An hour later: another write, recorded by Marcus's hook, long after L1 ended.
    later = time.time() + 3600
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: later)
        events.emit("collision-detection", "files-modified", agent="Marcus", repo=key,
                    paths=["src/a.py"], source="agent-hook")

    shown = [line for line in lines(repo, "collision-detection") if "files-modified" in line]
    assert len(shown) == 2, shown
