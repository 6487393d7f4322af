"""`versatil lock` and `versatil run` say once, on stderr, whom they wait for (agent, resource,
since) the moment they start to wait (issue 15, item 15); the Python API says nothing itself
and tells a caller's ``on_wait`` instead."""

from __future__ import annotations

from pathlib import Path

from integration.helpers import Child, Spawner, run_versatil, versatil_argv, wait_for

from versatil_fs import LockManager
from versatil_fs.locks.clock import hms
from versatil_fs.locks.manager import Waiting

FILES = {"src/a.py": "a\n"}


def held_by_dana(repo: Path, manager: LockManager) -> float:
    held = run_versatil("lock", "--agent", "Dana", "--ttl", "600", "src/a.py", cwd=repo)
    assert held.returncode == 0, held
    return manager.sweep().locks[0].acquired_at


def first_line(child: Child) -> str:
    text = wait_for(lambda: child.stderr if "\n" in child.stderr else "",
                    message="a line on stderr")
    return text.splitlines()[0]


def test_lock_says_whom_it_waits_for_when_it_starts_to_wait(
    repo: Path, manager: LockManager, spawn: Spawner
) -> None:
    since = held_by_dana(repo, manager)
    waiter = spawn.popen(versatil_argv("lock", "--agent", "Marcus", "--wait", "60", "src/a.py"),
                         cwd=repo, stdin=False)

    # Said at once (before, `versatil lock` waited up to its whole budget in silence) ...
    line = first_line(waiter)
    assert line.startswith("versatil: waiting up to 60 s: src/a.py is write-locked by Dana "
                           f"(since {hms(since)}"), line
    assert [w.agent for w in manager.sweep().waiters] == ["Marcus"]

    # ... and once: granted when Dana lets go, with nothing more said about waiting.
    assert run_versatil("unlock", "--agent", "Dana", "src/a.py", cwd=repo).returncode == 0
    assert waiter.wait() == 0
    assert len(waiter.stderr.splitlines()) == 1, waiter.stderr


def test_run_names_the_holder_when_it_starts_to_wait(
    repo: Path, manager: LockManager, spawn: Spawner
) -> None:
    since = held_by_dana(repo, manager)
    runner = spawn.popen(
        versatil_argv("run", "--agent", "Marcus", "--lock", "src/a.py", "--wait", "60",
                      "--no-monitor", "--", "true"),
        cwd=repo, stdin=False,
    )
    line = first_line(runner)
    # Before: "waiting up to 60 s for src/a.py", without the holder.
    assert line.startswith("versatil: waiting up to 60 s: src/a.py is write-locked by Dana "
                           f"(since {hms(since)}"), line
    assert run_versatil("unlock", "--agent", "Dana", "src/a.py", cwd=repo).returncode == 0
    assert runner.wait() == 0
    assert runner.stderr.count("waiting") == 1, runner.stderr


def test_the_api_tells_on_wait_once_and_prints_nothing(
    repo: Path, manager: LockManager, capfd: object
) -> None:
    held = manager.acquire(["src/a.py"], agent="Dana")
    told: list[Waiting] = []
    other = LockManager(repo=repo)

    def on_wait(waiting: Waiting) -> None:
        told.append(waiting)
        held.release()  # the holder lets go once the waiter is queued: it is then granted

    lease = other.acquire(["src/a.py"], agent="Marcus", wait=60, on_wait=on_wait)
    lease.release()
    other.close()

    assert len(told) == 1
    assert (told[0].agent, told[0].resource, told[0].since, told[0].budget) == (
        "Dana", "src/a.py", held.grant.acquired_at, 60)
    assert told[0].until is None  # a process lease: held while Dana's process lives
    out, err = capfd.readouterr()  # type: ignore[attr-defined]
    assert (out, err) == ("", "")


def test_no_notice_when_nothing_is_in_the_way(repo: Path, manager: LockManager) -> None:
    told: list[Waiting] = []
    manager.acquire(["src/a.py"], agent="Marcus", on_wait=told.append).release()
    assert told == []
    wait_for(lambda: not manager.sweep().locks, message="the lock released")
