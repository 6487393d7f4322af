"""A queued request rides out a store that fails under one of its looks (a PostgreSQL server
restarting mid-transaction): nothing of that look was saved, its place in the queue stands, and
it looks again while its wait lasts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from integration.helpers import wait_for

from versatil_fs import LockManager
from versatil_fs.errors import StoreUnavailable
from versatil_fs.locks.store import LocalStore
from versatil_fs.locks.table import Table

FILES = {"src/a.py": "a\n"}


class FailsOnce(LocalStore):
    """The local store, failing the ``fail_at``-th transaction the way a lost server does."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.looks = 0

    @contextmanager
    def transaction(self, budget: float | None = None) -> Iterator[Table]:
        self.looks += 1
        with super().transaction(budget) as table:
            if self.looks == self.fail_at:
                raise StoreUnavailable("The lock store at postgresql:///x cannot be reached.")
            yield table


def test_a_queued_request_looks_again_after_its_store_failed(repo: Path) -> None:
    holder = LockManager(repo=repo)
    held = holder.acquire(["src/a.py"], agent="Holder", wait=0)
    # Looks 1 and 2 queue the request and check once more before sleeping; the release wakes
    # it for look 3, which fails; look 4 grants.
    store = FailsOnce(fail_at=3)
    waiter = LockManager(repo=repo, store=store)
    got: list[object] = []
    thread = threading.Thread(
        target=lambda: got.append(waiter.acquire(["src/a.py"], agent="Waiter", wait=30))
    )
    thread.start()
    try:
        wait_for(lambda: store.looks >= 2 and [w.agent for w in holder.sweep().waiters]
                 == ["Waiter"])
        held.release()
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert store.looks >= 4
        assert [g.agent for g in holder.sweep().locks] == ["Waiter"]
    finally:
        for lease in got:
            lease.release()  # type: ignore[attr-defined]
        waiter.close()
        holder.close()


def test_a_store_still_failing_when_the_wait_ends_is_said(repo: Path) -> None:
    holder = LockManager(repo=repo)
    held = holder.acquire(["src/a.py"], agent="Holder", wait=0)

    class AlwaysAfterQueued(FailsOnce):
        @contextmanager
        def transaction(self, budget: float | None = None) -> Iterator[Table]:
            self.looks += 1
            with LocalStore.transaction(self, budget) as table:
                if self.looks >= 2 and budget is not None:
                    raise StoreUnavailable("The lock store at postgresql:///x cannot be reached.")
                yield table

    waiter = LockManager(repo=repo, store=AlwaysAfterQueued(fail_at=0))
    try:
        with pytest.raises(StoreUnavailable, match="cannot be reached"):
            waiter.acquire(["src/a.py"], agent="Waiter", wait=0.6)
    finally:
        held.release()
        waiter.close()
        holder.close()
