"""Repositories kept apart on the lock listing and the locks log, worktrees kept together
(issue 15, items 5 and 7), and the unlocked-write count with its window (item 3's display).

Two real repositories on one machine, each with a README.md locked by a different agent: inside
one, `versatil locks` and `versatil logs locks` show only its locks (and the named resources,
which are machine-wide); `--all` shows both, with a repository column; `--json` carries the
repository of every record. An absolute path into another worktree of the same repository is
the same resource as the file in this one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from integration.helpers import git, make_git_repo, run_versatil

from versatil_fs import events

FILES = {"README.md": "hello\n", "src/a.py": "a\n"}


def ok(*args: str, cwd: Path) -> str:
    result = run_versatil(*args, cwd=cwd)
    assert result.returncode == 0, result
    assert "Traceback" not in result.stderr
    return result.stdout


def two_repositories(repo: Path, tmp_path: Path) -> Path:
    """A second repository; Marcus locks README.md in ``repo``, Dana in the other, and Eve
    the machine-wide db:users."""
    other = make_git_repo(tmp_path / "other", {"README.md": "other\n"})
    ok("lock", "--agent", "Marcus", "README.md", cwd=repo)
    ok("lock", "--agent", "Dana", "README.md", cwd=other)
    ok("lock", "--agent", "Eve", "db:users", cwd=other)
    return other


def rows(listing: str) -> list[list[str]]:
    return [line.split() for line in listing.splitlines()[1:] if line.strip()]


def test_inside_a_repository_locks_shows_its_own_and_the_named_ones(
    repo: Path, tmp_path: Path
) -> None:
    other = two_repositories(repo, tmp_path)

    here = rows(ok("locks", cwd=repo / "src"))
    there = rows(ok("locks", cwd=other))

    # Before: both "held README.md" in each listing, with nothing to tell them apart.
    assert sorted(r[0] for r in here) == ["Eve", "Marcus"]
    assert sorted(r[0] for r in there) == ["Dana", "Eve"]


def test_all_shows_every_repository_with_a_repository_column(repo: Path, tmp_path: Path) -> None:
    other = two_repositories(repo, tmp_path)

    listing = ok("locks", "--all", cwd=repo)

    assert listing.splitlines()[0].split()[0] == "REPOSITORY"
    found = {(r[1], r[0]) for r in rows(listing)}
    assert found == {("Marcus", str(repo)), ("Dana", str(other)), ("Eve", "(named)")}


def test_json_carries_the_repository_of_every_record(repo: Path, tmp_path: Path) -> None:
    other = two_repositories(repo, tmp_path)
    here = json.loads(ok("locks", "--json", cwd=repo))
    every = json.loads(ok("locks", "--all", "--json", cwd=repo))

    assert here["repo"] == str(repo / ".git") and here["all"] is False
    assert {(g["agent"], g["repo"]) for g in here["locks"]} == {
        ("Marcus", str(repo / ".git")), ("Eve", None)}
    assert every["all"] is True
    assert {(g["agent"], g["repo"]) for g in every["locks"]} == {
        ("Marcus", str(repo / ".git")), ("Dana", str(other / ".git")), ("Eve", None)}


def test_logs_locks_inside_a_repository_shows_its_events(repo: Path, tmp_path: Path) -> None:
    two_repositories(repo, tmp_path)

    here = ok("logs", "locks", cwd=repo)
    every = ok("logs", "locks", "--all", cwd=repo)

    assert "grant Marcus" in here and "grant Eve" in here and "Dana" not in here
    assert all(f"grant {who}" in every for who in ("Marcus", "Dana", "Eve"))
    # --json: the repository of every event, null for the machine-wide db:users.
    documents = [json.loads(line) for line in ok("logs", "locks", "--json", cwd=repo).splitlines()]
    assert {(d["agent"], d["repo"]) for d in documents} == {
        ("Marcus", str(repo / ".git")), ("Eve", None)}
    # A read lock's events carry its repository too (they had none: shown everywhere).
    ok("lock", "--agent", "Reader", "--read", "src/a.py", cwd=repo)
    read_grant = [e for e in events.read("locks") if e.agent == "Reader"]
    assert [e.repo for e in read_grant] == [str(repo / ".git")]


def test_an_absolute_path_into_another_worktree_is_the_same_resource(
    repo: Path, tmp_path: Path
) -> None:
    worktree = tmp_path / "wt2"
    git(repo, "worktree", "add", "-q", str(worktree))

    # From the main worktree, the file named by its path in wt2: was "outside the repository".
    ok("lock", "--agent", "Marcus", str(worktree / "src" / "a.py"), cwd=repo)

    # The same file of the main worktree is the same resource, from either worktree.
    for cwd, spelling in ((worktree, str(repo / "src" / "a.py")), (repo, "src/a.py"),
                          (worktree, "src/a.py")):
        refused = run_versatil("lock", "--agent", "Dana", "--wait", "0", spelling, cwd=cwd)
        assert refused.returncode == 1, refused
        assert "src/a.py is write-locked by Marcus" in refused.stderr
    held = json.loads(ok("locks", "--json", cwd=worktree))
    assert [c["resource"]["path"] for g in held["locks"] for c in g["claims"]] == ["src/a.py"]


def test_a_path_of_another_repository_is_still_refused(repo: Path, tmp_path: Path) -> None:
    other = make_git_repo(tmp_path / "other", {"README.md": "other\n"})
    result = run_versatil("lock", "--agent", "Marcus", str(other / "README.md"), cwd=repo)
    assert result.returncode == 2, result
    assert "outside the repository" in result.stderr and len(result.stderr.splitlines()) == 1


def test_locks_shows_the_unlocked_write_count_over_a_window(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = str(repo / ".git")
    now = time.time()
    # Two recent unlocked writes and one of yesterday, as the monitor logs them: the count
    # used to be every write ever recorded, with no way to reset it.
    for age in (10.0, 20.0, 86400.0):
        with monkeypatch.context() as patch:
            patch.setattr(time, "time", lambda age=age: now - age)
            events.emit("collision-detection", "unlocked-write", repo=key, path="src/a.py",
                        event="modified")

    listing = ok("locks", cwd=repo)
    document = json.loads(ok("locks", "--json", cwd=repo))

    assert ("2 unlocked writes in the last hour in this repository; "
            "`versatil logs collision-detection`.") in listing
    assert (document["unlocked_writes"], document["unlocked_writes_window"]) == (2, 3600)
