"""A lock record's `session` (issue 14: the harness hooks say which harness session asked):
stored on requests and grants, shown by `versatil locks`, checked when read back, and absent
from tables written before it existed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from integration.helpers import Spawner, lock_agent, run_versatil, wait_for

from versatil_fs import LockManager
from versatil_fs.errors import UsageError
from versatil_fs.locks.table import MAX_SESSION, Claim, Grant, Resource, check_records, new_id
from versatil_fs.state import StateDir

FILES = {"src/a.py": "a\n", "src/b.py": "b\n"}
CLAUDE = "claude 1a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d"


def locks(repo: Path, *args: str) -> str:
    result = run_versatil("locks", *args, cwd=repo)
    assert (result.returncode, result.stderr) == (0, ""), result
    return result.stdout


def test_a_session_is_stored_on_the_request_and_the_grant_and_shown(
    repo: Path, manager: LockManager, spawn: Spawner
) -> None:
    first = manager.acquire(["src/a.py"], agent="Dana", session=CLAUDE)
    assert first.grant.session == CLAUDE
    other = lock_agent(spawn, repo)
    other.request(["src/a.py"], agent="Marcus", wait=30, session="codex 77aa")
    wait_for(lambda: any(w.session == "codex 77aa" for w in manager.sweep().waiters),
             message="Marcus's request, with its session, in the queue")

    listing = locks(repo)
    header = listing.splitlines()[0].split()
    assert header == ["AGENT", "SESSION", "MODE", "RESOURCE", "SINCE", "UNTIL"]
    row = next(line for line in listing.splitlines() if line.startswith("Dana"))
    assert row.split()[1:4] == [*CLAUDE.split(), "write"]
    assert "Marcus wants src/a.py (write) (session codex 77aa, priority 0" in listing
    document = json.loads(locks(repo, "--json"))
    assert document["locks"][0]["session"] == CLAUDE
    assert document["waiters"][0]["session"] == "codex 77aa"

    first.release()
    assert other.reply()["ok"]
    # The grant a waiter becomes keeps its session.
    assert [g.session for g in manager.sweep().locks] == ["codex 77aa"]
    other.exit()


def test_no_session_column_when_no_record_has_one(repo: Path, manager: LockManager) -> None:
    with manager.hold(["src/b.py"], agent="Dana"):
        listing = locks(repo)
        assert listing.splitlines()[0].split() == ["AGENT", "MODE", "RESOURCE", "SINCE", "UNTIL"]
        assert "SESSION" not in listing and "session" not in listing
        # --json always has the field.
        assert json.loads(locks(repo, "--json"))["locks"][0]["session"] == ""


def test_hold_takes_a_session(manager: LockManager) -> None:
    with manager.hold(["src/b.py"], agent="Dana", session="gemini 9f") as lease:
        assert lease.grant.session == "gemini 9f"
        assert [g.session for g in manager.sweep().locks] == ["gemini 9f"]


@pytest.mark.parametrize(
    ("session", "problem"),
    [("x" * (MAX_SESSION + 1), "at most 200"), ("claude \x1b[31m", "not printable"),
     ("a\nb", "not printable")],
)
def test_a_bad_session_is_refused_before_anything_is_written(
    manager: LockManager, session: str, problem: str
) -> None:
    with pytest.raises(UsageError, match=problem) as caught:
        manager.acquire(["src/a.py"], agent="Dana", session=session)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)
    assert manager.sweep().locks == []


def test_a_table_with_a_bad_session_is_damaged() -> None:
    grant = Grant(id=new_id(), agent="Dana", session="\x1b]0;owned\x07",
                  claims=[Claim(Resource("r", "src/a.py"), "write")],
                  acquired_at=1.0, expires_at=2.0, owner="shell")
    problem = check_records([grant])
    assert problem is not None and "not printable" in problem
    grant.session = "y" * (MAX_SESSION + 1)
    assert "at most 200" in (check_records([grant]) or "")
    grant.session = CLAUDE
    assert check_records([grant]) is None


def test_a_table_written_before_sessions_still_loads(repo: Path, manager: LockManager) -> None:
    result = run_versatil("lock", "--agent", "Old", "src/a.py", cwd=repo)
    assert result.returncode == 0, result
    table_file = StateDir().lock_table
    document = json.loads(table_file.read_text())
    for record in document["locks"]:
        del record["session"]
    table_file.write_text(json.dumps(document))  # in place: same owner and mode
    assert "session" not in table_file.read_text()

    table = manager.sweep()
    assert [(g.agent, g.session) for g in table.locks] == [("Old", "")]
    listing = locks(repo)
    assert "Old" in listing and "SESSION" not in listing
    # Nothing was moved aside as damaged.
    assert not [p for p in table_file.parent.iterdir() if ".corrupt-" in p.name]
