"""The fencing rule (versatil_fs.locks.fencing) on records built here: which files a presented
token is superseded on, what the caller's lock was from the lock log, and what is a token.
The end-to-end refusals (git commit, checkpoint restore) are tests/integration/test_fence_guard.py.
"""

from __future__ import annotations

import pytest

from versatil_fs import events
from versatil_fs.errors import UsageError
from versatil_fs.locks.fencing import presented, superseded
from versatil_fs.locks.table import Claim, Grant, Mode, Resource

REPO = "/x/repo/.git"  # a lock-space key that names no real repository (no submodule prefix)


def grant(agent: str, fence: int, *paths: str, mode: Mode = "write") -> Grant:
    return Grant(
        id=f"lease-{fence}", agent=agent, fence=fence, acquired_at=1.0, expires_at=2.0,
        claims=[Claim(Resource(repo=REPO, path=p, glob="*" in p), mode) for p in paths],
    )


def log_grant(agent: str, fence: int, *writes: str) -> None:
    """The grant event the lock manager logs (notices.emit_logged's fields)."""
    events.emit("locks", "grant", agent=agent, repo=REPO, lease=f"lease-{fence}",
                fence=fence, resources=[f"{p} (write)" for p in writes],
                write_paths=list(writes), write_globs=[p for p in writes if "*" in p])


CHANGED = [("src/api/a.py", "modified"), ("docs/x.md", "modified"), ("free.py", "added")]


def test_a_newer_write_grant_supersedes_the_files_the_old_lock_covered() -> None:
    log_grant("Marcus", 41, "src/api", "docs/*.md")
    grants = [grant("James", 57, "src/api/a.py"), grant("Dana", 58, "docs"),
              grant("Eve", 60, "free.py")]
    found, mine = superseded(CHANGED, grants, REPO, 41)
    assert [(f.path, f.grant.agent, f.grant.fence) for f in found] == [
        ("src/api/a.py", "James", 57), ("docs/x.md", "Dana", 58)]  # free.py: never Marcus's
    assert mine is not None and mine.found and mine.agent == "Marcus"


def test_not_superseded_while_the_lease_stands_or_without_a_newer_write_grant() -> None:
    log_grant("Marcus", 41, "src")
    live = [grant("Marcus", 41, "src"), grant("Marcus", 57, "src/api/a.py")]
    assert superseded(CHANGED, live, REPO, 41) == ([], None)
    older = [grant("James", 40, "src")]
    assert superseded(CHANGED, older, REPO, 41) == ([], None)
    reading = [grant("James", 57, "src", mode="read")]  # a read lock never supersedes a write
    assert superseded(CHANGED, reading, REPO, 41) == ([], None)


def test_a_grant_gone_from_the_log_refuses_every_candidate() -> None:
    log_grant("Marcus", 410, "docs")  # "fence":410 contains "fence":41: not this token's
    found, mine = superseded(CHANGED, [grant("James", 500, ".")], REPO, 41)
    assert [f.path for f in found] == [p for p, _ in CHANGED]
    assert mine is not None and not mine.found


@pytest.mark.parametrize("value, token", [("41", 41), (" 7\n", 7), ("", None), ("  ", None)])
def test_what_is_a_token(value: str, token: int | None) -> None:
    assert presented({"VERSATIL_FENCE": value}) == token
    assert presented({}) is None


@pytest.mark.parametrize("value", ["0", "-1", "1e3", "٣", "null", "12345678901234567890"])
def test_what_is_not(value: str) -> None:
    with pytest.raises(UsageError, match="VERSATIL_FENCE must be the fencing token of a lock"):
        presented({"VERSATIL_FENCE": value})
