"""A refused lock and a deadlock carry who, what and when as attributes, not only a sentence."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from versatil_fs import errors
from versatil_fs.errors import Blocker, Deadlock, LockConflict
from versatil_fs.locks.manager import LockManager


def test_every_error_class_of_the_package_lives_in_errors() -> None:
    from versatil_fs import runner
    from versatil_fs.locks import store
    from versatil_fs.monitor import ignore
    from versatil_fs.waves import plan

    assert runner.CommandNotFound is errors.CommandNotFound
    assert runner.CommandNotExecutable is errors.CommandNotExecutable
    assert plan.PlanError is errors.PlanError
    assert ignore.MonitorError is errors.MonitorError
    assert store.DamagedTable is errors.DamagedTable


def test_a_conflict_names_holder_resource_since_and_until(versatil_home: Path) -> None:
    first, second = LockManager(), LockManager()
    lease = first.acquire(["db:users"], agent="alice")
    with pytest.raises(LockConflict) as caught:
        second.acquire(["db:users"], agent="bob", wait=0)
    exc = caught.value
    assert exc.holders == (Blocker("alice", lease.id),)
    assert exc.resource == "db:users"
    assert exc.since == lease.grant.acquired_at
    assert exc.until is None  # held while alice's process lives
    assert "db:users is write-locked by alice" in str(exc)
    lease.release()


def test_a_deadlock_carries_its_cycle(versatil_home: Path) -> None:
    # alice holds r:1 and wants r:2, bob the other way round: whichever asks second closes the
    # cycle and gets the Deadlock (then lets go, so the other is granted). No timing needed.
    found: list[BaseException] = []
    ready = threading.Barrier(2)

    def agent(name: str, have: str, want: str) -> None:
        manager = LockManager()
        held = manager.acquire([have], agent=name)
        ready.wait(30)
        try:
            manager.acquire([want], agent=name, wait=30).release()
        except Deadlock as exc:
            found.append(exc)
        finally:
            held.release()

    threads = [threading.Thread(target=agent, args=("alice", "r:1", "r:2")),
               threading.Thread(target=agent, args=("bob", "r:2", "r:1"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(found) == 1
    exc = found[0]
    assert isinstance(exc, Deadlock)
    assert sorted(exc.cycle[:2]) == ["alice", "bob"] and exc.cycle[0] == exc.cycle[-1]
    assert " -> ".join(exc.cycle) in str(exc)
