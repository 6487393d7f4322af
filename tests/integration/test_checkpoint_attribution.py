"""Issue 15, items 9 and 10: whose files a restore rolls back and who restores them, and what
the log says about who wrote a file (`checkpoint diff`'s agent column, `versatil who`).

End to end: real git repositories in tmp_path, the CLI as a user types it, a real monitor
process where the attribution comes from one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from integration.helpers import Spawner, commit_files
from integration.helpers import write_file as write
from integration.test_monitor import FILES, start_monitor
from reliability.support import versatil

from versatil_fs import events
from versatil_fs.checkpoints import record_files_modified
from versatil_fs.locks.manager import LockManager
from versatil_fs.repo import Repository

pytestmark = pytest.mark.usefixtures("tester_env")


@pytest.fixture
def repo(git_repo: Path) -> Path:
    return commit_files(git_repo, FILES)


def _create(repo: Path, *args: str) -> str:
    made = versatil("checkpoint", "create", *args, cwd=repo)
    assert made.code == 0, made.err
    return made.out.strip()


# Item 9: NAME is whose files, the caller restores ---------------------------------------------
def test_restore_agent_names_whose_files_and_the_caller_is_the_restorer(repo: Path) -> None:
    cid = _create(repo, "-m", "before agents")
    write(repo, "src/a.py", "Marcus broke it\n")
    record_files_modified(Repository.find(repo), "Marcus", ["src/a.py"])
    done = versatil("checkpoint", "restore", cid, "--agent", "Marcus", "--json", cwd=repo,
                    env={"VERSATIL_AGENT": "Human"})
    assert done.code == 0, done.err
    safety = json.loads(done.out)["safety_checkpoint"]
    assert (repo / "src/a.py").read_text() == "a = 1\n"
    (event,) = [e for e in events.read("checkpoints") if e.kind == "restore"]
    assert event.agent == "Human" and event.data["files_of"] == "Marcus"
    shown = json.loads(versatil("checkpoint", "show", safety, "--json", cwd=repo).out)
    assert shown["agent"] == "Human" and shown["kind"] == "safety"


def test_restore_agent_with_no_recorded_files_is_refused_naming_those_with_files(
    repo: Path,
) -> None:
    cid = _create(repo)
    write(repo, "src/a.py", "Marcus\n")
    write(repo, "docs/x.md", "James\n")
    the_repo = Repository.find(repo)
    record_files_modified(the_repo, "Marcus", ["src/a.py"])
    record_files_modified(the_repo, "James", ["docs/x.md"])
    typo = versatil("checkpoint", "restore", cid, "--agent", "Marcsu", cwd=repo)
    assert typo.code == 1 and typo.out == ""
    assert len(typo.err.strip().splitlines()) == 1, typo.err
    assert "Marcsu" in typo.err and "James, Marcus" in typo.err, typo.err
    assert (repo / "src/a.py").read_text() == "Marcus\n"
    nobody_at_all = _create(repo)
    refused = versatil("checkpoint", "restore", nobody_at_all, "--agent", "Nobody", cwd=repo)
    assert refused.code == 1 and "no agent" in refused.err.lower(), refused.err


def test_restore_says_which_files_were_attributed_by_lock_not_by_writer(
    spawn: Spawner, repo: Path
) -> None:
    cid = _create(repo)
    monitor = start_monitor(spawn, repo)
    manager = LockManager(repo=repo)
    with manager.hold(["src/"], agent="Marcus"):
        # Marcus holds src/, but anyone may be the writer: the monitor only sees the lock.
        (repo / "src" / "a.py").write_text("written by whoever\n")
        line = monitor.next()
        assert (line["kind"], line["agent"]) == ("locked-write", "Marcus")
    manager.close()
    write(repo, "src/b.py", "Marcus's own hook said so\n")
    record_files_modified(Repository.find(repo), "Marcus", ["src/b.py"])
    done = versatil("checkpoint", "restore", cid, "--agent", "Marcus", cwd=repo)
    assert done.code == 0, done.err
    noted = [line for line in done.out.splitlines() if "attributed by lock" in line]
    assert noted == ["attributed by lock, not by writer: src/a.py (the monitor saw it "
                     "written while Marcus held the lock; it cannot tell who wrote it)"]
    assert (repo / "src/a.py").read_text() == "a = 1\n"
    (event,) = [e for e in events.read("checkpoints") if e.kind == "restore"]
    assert event.data["attributed_by_lock"] == ["src/a.py"]


# Item 10: show, diff's agent column, who ----------------------------------------------------------
def test_show_does_not_list_untracked_files_that_did_not_change_as_modified(repo: Path) -> None:
    write(repo, "notes.txt", "my own untracked notes\n")
    first = _create(repo)
    write(repo, "src/a.py", "changed\n")
    write(repo, "src/new.py", "a new file since the first checkpoint\n")
    second = _create(repo)
    shown = versatil("checkpoint", "show", second, cwd=repo)
    assert shown.code == 0, shown.err
    modified = shown.out.split("files modified (2):\n", 1)[1].split("\n")[:2]
    assert modified == ["  src/a.py", "  src/new.py"], shown.out
    assert f"untracked, unchanged since {first} (1): notes.txt" in shown.out, shown.out
    as_json = json.loads(versatil("checkpoint", "show", second, "--json", cwd=repo).out)
    assert as_json["untracked_unchanged"] == ["notes.txt"]
    assert as_json["previous"] == first
    assert sorted(as_json["files_modified"]) == ["notes.txt", "src/a.py", "src/new.py"]


def test_diff_names_the_agents_that_changed_each_file_since_the_checkpoint(
    spawn: Spawner, repo: Path
) -> None:
    cid = _create(repo)
    the_repo = Repository.find(repo)
    write(repo, "src/a.py", "Marcus and James\n")
    record_files_modified(the_repo, "Marcus", ["src/a.py"], source="agent-hook")
    record_files_modified(the_repo, "James", ["src/a.py"])
    write(repo, "docs/x.md", "nobody said\n")
    monitor = start_monitor(spawn, repo)
    manager = LockManager(repo=repo)
    with manager.hold(["src/b.py"], agent="Dana"):
        (repo / "src" / "b.py").write_text("under Dana's lock\n")
        assert monitor.next()["agent"] == "Dana"
    manager.close()
    shown = versatil("checkpoint", "diff", cid, cwd=repo)
    assert shown.code == 0, shown.err
    assert shown.out.splitlines() == [
        "M docs/x.md  -",
        "M src/a.py  Marcus, James",
        "M src/b.py  Dana (by lock)",
    ]
    as_json = json.loads(versatil("checkpoint", "diff", cid, "--json", cwd=repo).out)
    agents = {c["path"]: c["agents"] for c in as_json["changes"]}
    assert agents == {"docs/x.md": [], "src/a.py": ["Marcus", "James"], "src/b.py": ["Dana"]}


def test_who_lists_the_writers_of_a_path_newest_last(spawn: Spawner, repo: Path) -> None:
    the_repo = Repository.find(repo)
    record_files_modified(the_repo, "Marcus", ["src/a.py"], source="agent-hook")
    record_files_modified(the_repo, "Wave-Agent", ["src/"], wave=2, task="t1")
    record_files_modified(the_repo, "James", ["docs/x.md"])
    monitor = start_monitor(spawn, repo)
    manager = LockManager(repo=repo)
    with manager.hold(["src/"], agent="Dana") as lease:
        (repo / "src" / "a.py").write_text("under Dana's lock\n")
        assert monitor.next()["agent"] == "Dana"
        lease_id = lease.grant.id
    manager.close()
    told = versatil("who", "src/a.py", cwd=repo / "src" / "..")
    assert told.code == 0, told.err
    lines = told.out.splitlines()
    assert [line.split("  ")[1] for line in lines] == ["Marcus", "Wave-Agent", "Dana"]
    assert "agent hook" in lines[0]
    assert "wave 2, task t1" in lines[1] and "(recorded as src)" in lines[1]
    assert f"lock {lease_id}" in lines[2] and "not by writer" in lines[2]
    as_json = json.loads(versatil("who", "a.py", "--json", cwd=repo / "src").out)
    assert as_json["path"] == "src/a.py"
    assert [w["agent"] for w in as_json["writes"]] == ["Marcus", "Wave-Agent", "Dana"]
    assert as_json["writes"][2]["source"] == "monitor"
    assert as_json["writes"][2]["lease"] == lease_id
    none = versatil("who", "README.md", cwd=repo)
    assert none.code == 0 and "No recorded writes of README.md" in none.out
    outside = versatil("who", "/etc/passwd", cwd=repo)
    assert outside.code == 2 and len(outside.err.strip().splitlines()) == 1
