"""The PostgreSQL store itself: schema, liveness, translation of path resources, fencing, faults."""

from __future__ import annotations

from pathlib import Path

import pytest
from integration.helpers import commit_files

from versatil_fs import LockConflict, LockManager

FILES = {"src/a.py": "a = 1\n", "docs/x.md": "# x\n"}


@pytest.fixture
def repo(git_repo: Path) -> Path:
    return commit_files(git_repo, FILES)


def test_smoke(pg_env: dict[str, str], repo: Path) -> None:
    manager = LockManager(repo=repo)
    lease = manager.acquire(["src/a.py", "db:users"], agent="A")
    other = LockManager(repo=repo)
    with pytest.raises(LockConflict):
        other.acquire(["src"], agent="B", wait=0)
    lease.release()
    other.acquire(["src"], agent="B", wait=0).release()
    manager.close()
    other.close()
