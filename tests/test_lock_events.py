"""A lock change that committed stands even when its event line cannot be written."""

from __future__ import annotations

from pathlib import Path

import pytest

from versatil_fs.errors import StateError
from versatil_fs.locks.manager import LockManager
from versatil_fs.state import StateDir


def test_a_grant_and_release_stand_when_the_log_is_full(
    versatil_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def full(self: StateDir, path: Path, line: bytes) -> None:
        raise StateError("No space left on device.")

    monkeypatch.setattr(StateDir, "append_line", full)
    manager = LockManager()
    lease = manager.acquire(["db:users", "db:orders"], agent="alice")
    assert [g.agent for g in LockManager().sweep().locks] == ["alice"]
    err = capsys.readouterr().err
    # One sentence for the transaction, not one per line it could not write.
    assert err.count("\n") == 1, err
    assert err.startswith("versatil: the locks were changed as asked, but the 'grant' event")
    lease.release()
    assert LockManager().sweep().locks == []
    assert "'release' event could not be written" in capsys.readouterr().err
