"""`versatil lock / unlock / release / locks` as a user runs them: real processes, real repos."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from integration.helpers import (
    Spawner,
    assert_one_line_error,
    git,
    lock_agent,
    run_versatil,
    wait_for,
)

from versatil_fs import LockConflict, LockManager, events
from versatil_fs.state import StateDir

FILES = {name: f"{name}\n" for name in ("src/a.py", "src/b.py", "docs/x.md")}


def versatil(repo: Path, *args: str, **kwargs: object) -> object:
    return run_versatil(*args, cwd=repo, **kwargs)  # type: ignore[arg-type]


def ok(result: object) -> str:
    assert result.returncode == 0, (  # type: ignore[attr-defined]
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"  # type: ignore[attr-defined]
    )
    assert "Traceback" not in result.stderr  # type: ignore[attr-defined]
    return result.stdout  # type: ignore[attr-defined,no-any-return]


def locks_json(repo: Path, *args: str) -> dict[str, object]:
    out = ok(versatil(repo, "locks", "--json", *args))
    assert len(out.splitlines()) == 1, "--json prints one object"
    doc = json.loads(out)
    assert isinstance(doc, dict)
    return doc


def wait_queued(manager: LockManager, name: str) -> None:
    wait_for(lambda: name in {w.agent for w in manager.sweep().waiters},
             message=f"{name} to be queued")


# Shell leases -----------------------------------------------------------------------------------
def test_a_shell_lock_outlives_the_command_and_blocks_other_agents(
    repo: Path, manager: LockManager
) -> None:
    out = ok(versatil(repo, "lock", "--agent", "Shell", "src/a.py", "db:users"))
    assert "src/a.py" in out and "db:users" in out and "Shell" in out
    # The command has exited; its locks have not.
    with pytest.raises(LockConflict, match="Shell"):
        manager.acquire(["src/a.py"], agent="Other", wait=0)
    line = assert_one_line_error(
        versatil(repo, "lock", "--agent", "Other", "--wait", "0", "./src/../src/a.py"), 1
    )
    assert "Shell" in line and "src/a.py" in line
    # One agent never blocks itself.
    ok(versatil(repo, "lock", "--agent", "Shell", "--wait", "0", "src"))
    (shell,) = {g.agent for g in manager.holders()}
    assert shell == "Shell"


def test_unlock_frees_the_lock_and_a_waiting_process_is_granted_promptly(
    repo: Path, manager: LockManager, spawn: Spawner
) -> None:
    ok(versatil(repo, "lock", "--agent", "Shell", "src/a.py"))
    waiter = lock_agent(spawn, repo)
    waiter.request(["src/a.py"], agent="Waiter", wait=30)
    wait_queued(manager, "Waiter")
    out = ok(versatil(repo, "unlock", "--agent", "Shell", str(repo / "src" / "a.py")))
    unlocked_at = time.time()
    assert "src/a.py" in out
    granted = waiter.reply()
    assert granted["ok"], granted
    assert granted["granted_at"] - unlocked_at < 1.0


def test_unlock_of_something_not_held_is_refused(repo: Path) -> None:
    ok(versatil(repo, "lock", "--agent", "Shell", "src/a.py"))
    line = assert_one_line_error(versatil(repo, "unlock", "--agent", "Other", "src/a.py"), 1)
    assert "Other" in line
    assert_one_line_error(versatil(repo, "unlock", "--agent", "Shell", "src/b.py"), 1)


def test_a_shell_lease_expires_after_its_ttl(
    repo: Path, manager: LockManager, spawn: Spawner
) -> None:
    grant = json.loads(ok(versatil(repo, "lock", "--agent", "Shell", "--ttl", "1", "--json",
                                   "db:ttl")))
    assert grant["owner"] == "shell" and grant["expires_at"] - grant["acquired_at"] == 1.0
    waiter = lock_agent(spawn, repo)
    waiter.request(["db:ttl"], agent="Waiter", wait=30)
    granted = waiter.reply()
    assert granted["ok"], granted
    # Not before the lease ran out, and promptly after.
    assert granted["granted_at"] >= grant["expires_at"]
    assert granted["granted_at"] - grant["expires_at"] < 1.0
    assert [e.agent for e in events.read("locks") if e.kind == "expire"] == ["Shell"]


def test_an_expired_shell_lease_disappears_from_the_listing(repo: Path) -> None:
    grant = json.loads(ok(versatil(repo, "lock", "--agent", "Shell", "--ttl", "0.5", "--json",
                                   "db:brief")))
    assert [g["agent"] for g in locks_json(repo)["locks"]] == ["Shell"]
    wait_for(lambda: time.time() > grant["expires_at"])
    assert locks_json(repo)["locks"] == []


def test_release_agent_frees_every_lock_of_that_agent(
    repo: Path, manager: LockManager, spawn: Spawner
) -> None:
    ok(versatil(repo, "lock", "--agent", "Stuck", "src"))
    ok(versatil(repo, "lock", "--agent", "Stuck", "--read", "docs/x.md"))
    ok(versatil(repo, "lock", "--agent", "Keeper", "db:users"))
    waiter = lock_agent(spawn, repo)
    waiter.request(["src/b.py"], agent="Waiter", wait=30)
    wait_queued(manager, "Waiter")
    out = ok(versatil(repo, "release", "--agent", "Stuck"))
    assert len(out.splitlines()) == 2 and "Stuck" in out
    assert waiter.reply()["ok"]
    assert sorted(g["agent"] for g in locks_json(repo)["locks"]) == ["Keeper", "Waiter"]
    assert ok(versatil(repo, "release", "--agent", "Stuck")).strip() == "Stuck held no locks."
    doc = json.loads(ok(versatil(repo, "release", "--agent", "Keeper", "--json")))
    assert doc["agent"] == "Keeper" and len(doc["released"]) == 1
    assert len([e for e in events.read("locks") if e.kind == "forced-release"]) == 3


def test_release_needs_an_agent(repo: Path) -> None:
    result = versatil(repo, "release")
    assert result.returncode == 2 and "Traceback" not in result.stderr  # type: ignore[attr-defined]


def test_versatil_daemon_release_locks(repo: Path) -> None:
    pytest.importorskip("versatil_fs.cli.daemon")
    ok(versatil(repo, "lock", "--agent", "Stuck", "src/a.py"))
    result = subprocess_run(
        [sys.executable, "-c", "from versatil_fs.cli.daemon import main; main()",
         "release-locks", "--agent=Stuck"],
        repo,
    )
    assert result.returncode == 0, result.stderr
    assert "src/a.py" in result.stdout
    assert locks_json(repo)["locks"] == []


def subprocess_run(argv: list[str], cwd: Path) -> object:
    import subprocess

    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


# Listing ------------------------------------------------------------------------------------------
def test_locks_json_shape(repo: Path, manager: LockManager, spawn: Spawner) -> None:
    ok(versatil(repo, "lock", "--agent", "Writer", "src/"))
    ok(versatil(repo, "lock", "--agent", "Reader", "--read", "docs/x.md"))
    holder = lock_agent(spawn, repo)
    holder.acquire(["db:users"], agent="Process")
    for name, priority in (("Second", "0"), ("First", "5")):
        child = lock_agent(spawn, repo)
        child.request(["db:users"], agent=name, wait=60, priority=int(priority))
        wait_queued(manager, name)

    doc = locks_json(repo)
    assert set(doc) >= {"version", "locks", "waiters"}
    assert doc["version"] == 1
    locks = {g["agent"]: g for g in doc["locks"]}  # type: ignore[attr-defined]
    assert set(locks) == {"Writer", "Reader", "Process"}
    writer = locks["Writer"]
    assert {"id", "agent", "claims", "owner", "pid", "acquired_at", "expires_at", "ttl"} <= set(
        writer
    )
    assert writer["owner"] == "shell"
    assert writer["claims"] == [
        {"resource": {"repo": str(repo / ".git"), "path": "src"}, "mode": "write"}
    ]
    assert locks["Reader"]["claims"][0]["mode"] == "read"
    assert locks["Process"]["owner"] == "process"
    assert locks["Process"]["pid"] == holder.pid
    assert locks["Process"]["claims"] == [{"resource": {"name": "db:users"}, "mode": "write"}]
    waiting = doc["waiters"]
    assert [w["agent"] for w in waiting] == ["First", "Second"]  # type: ignore[index]
    assert {"agent", "claims", "priority", "since", "deadline", "pid"} <= set(waiting[0])  # type: ignore[index]
    assert waiting[0]["priority"] == 5  # type: ignore[index]

    only = locks_json(repo, "--agent", "Writer")
    assert [g["agent"] for g in only["locks"]] == ["Writer"]  # type: ignore[attr-defined]
    assert only["waiters"] == []

    text = ok(versatil(repo, "locks"))
    for word in ("Writer", "Reader", "Process", "src", "docs/x.md", "db:users", "First", "Second"):
        assert word in text
    assert text.index("First") < text.index("Second")  # queue order


def test_locks_with_nothing_held(repo: Path, tmp_path: Path) -> None:
    assert ok(versatil(repo, "locks")).strip() == "No locks held, nobody waiting."
    assert locks_json(repo)["locks"] == []
    # Listing needs no repository.
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    assert json.loads(ok(run_versatil("locks", "--json", cwd=outside)))["locks"] == []


def test_lock_json_prints_the_grant(repo: Path) -> None:
    grant = json.loads(ok(versatil(repo, "lock", "--agent", "A", "--json", "--ttl", "60",
                                   "src/a.py", "db:x")))
    assert grant["agent"] == "A" and grant["owner"] == "shell" and grant["ttl"] == 60
    assert sorted(str(c["resource"].get("path") or c["resource"]["name"])
                  for c in grant["claims"]) == ["db:x", "src/a.py"]


# Which agent, which directory ---------------------------------------------------------------------
def test_the_agent_comes_from_the_environment_then_git_config(repo: Path) -> None:
    ok(versatil(repo, "lock", "db:env", env={"VERSATIL_AGENT": "Env-Agent"}))
    git(repo, "config", "versatil.agent", "Git-Agent")
    ok(versatil(repo, "lock", "db:git"))
    owners = {g["claims"][0]["resource"]["name"]: g["agent"] for g in locks_json(repo)["locks"]}  # type: ignore[attr-defined]
    assert owners == {"db:env": "Env-Agent", "db:git": "Git-Agent"}
    ok(versatil(repo, "unlock", "db:env", env={"VERSATIL_AGENT": "Env-Agent"}))
    ok(versatil(repo, "unlock", "db:git"))
    assert locks_json(repo)["locks"] == []


def test_paths_are_read_from_the_current_directory_or_dash_c(repo: Path, tmp_path: Path) -> None:
    ok(run_versatil("lock", "--agent", "A", "a.py", cwd=repo / "src"))
    ok(run_versatil("-C", str(repo / "docs"), "lock", "--agent", "B", "x.md", cwd=tmp_path))
    paths = {g["agent"]: g["claims"][0]["resource"]["path"] for g in locks_json(repo)["locks"]}  # type: ignore[attr-defined]
    assert paths == {"A": "src/a.py", "B": "docs/x.md"}


def test_named_resources_can_be_locked_outside_a_repository(tmp_path: Path) -> None:
    ok(run_versatil("lock", "--agent", "A", "port:5432", cwd=tmp_path))
    line = assert_one_line_error(
        run_versatil("lock", "--agent", "B", "--wait", "0", "port:5432", cwd=tmp_path), 1
    )
    assert "A" in line and "port:5432" in line


# Exit codes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["lock", "--agent", "A", "../outside.txt"], ["outside the repository"]),
        (["lock", "--agent", "A", "/etc/passwd"], ["outside the repository"]),
        (["lock", "--agent", "A", "db:"], ["empty name"]),
        (["lock", "--agent", "A", "--wait", "-1", "db:x"], ["--wait"]),
        (["lock", "--agent", "A", "--ttl", "0", "db:x"], ["positive"]),
        (["lock", "--agent", "A", ".git/config"], [".git"]),
        (["unlock", "--agent", "A", "db:"], ["empty name"]),
    ],
)
def test_bad_input_exits_2_with_one_line(repo: Path, args: list[str], words: list[str]) -> None:
    line = assert_one_line_error(versatil(repo, *args), 2)
    for word in words:
        assert word in line
    assert not StateDir().lock_table.exists() or LockManager(repo=repo).holders() == []


@pytest.mark.parametrize(
    "args",
    [["--ttl", "inf"], ["--ttl", "nan"], ["--ttl", "1e300"], ["--wait", "nan"]],
    ids=["ttl-inf", "ttl-nan", "ttl-1e300", "wait-nan"],
)
def test_non_finite_numbers_are_bad_input_and_never_reach_the_table(
    repo: Path, manager: LockManager, args: list[str], capfd: pytest.CaptureFixture[str]
) -> None:
    manager.acquire(["db:kept"], agent="Keeper", owner="shell")
    result = versatil(repo, "lock", "--agent", "A", *args, "db:x")
    assert [g.agent for g in manager.sweep().locks] == ["Keeper"]
    assert not list(StateDir().logs.glob("resource-locks.json.corrupt-*")), "table damaged"
    assert "could not be read" not in capfd.readouterr().err
    assert_one_line_error(result, 2)


def test_waiting_for_ever_does_not_damage_the_table(
    repo: Path, manager: LockManager, spawn: Spawner
) -> None:
    """`--wait inf` either waits for ever (a sound table meanwhile) or is refused (exit 2)."""
    ok(versatil(repo, "lock", "--agent", "Holder", "db:held"))
    from integration.helpers import versatil_argv

    forever = spawn.popen(
        versatil_argv("lock", "--agent", "Patient", "--wait", "inf", "db:held"), cwd=repo,
        stdin=False, name="wait-inf",
    )
    wait_for(
        lambda: not forever.alive or "Patient" in {w.agent for w in manager.sweep().waiters},
        timeout=5,
        message="`lock --wait inf` to be refused or queued",
    )
    if not forever.alive:
        assert forever.wait() == 2 and "Traceback" not in forever.stderr
        return
    for _ in range(3):
        manager.sweep()  # a few more transactions while it waits
    assert not list(StateDir().logs.glob("resource-locks.json.corrupt-*")), forever.stderr
    ok(versatil(repo, "unlock", "--agent", "Holder", "db:held"))
    assert forever.wait() == 0, forever.stderr


def test_a_path_outside_any_repository_exits_2(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    line = assert_one_line_error(run_versatil("lock", "--agent", "A", "file.txt", cwd=plain), 2)
    assert "git" in line


def test_malformed_options_exit_2_without_a_traceback(repo: Path) -> None:
    for args in (["lock", "--agent", "A", "--wait", "soon", "db:x"], ["lock"], ["nonsense"]):
        result = versatil(repo, *args)
        assert result.returncode == 2, args  # type: ignore[attr-defined]
        assert "Traceback" not in result.stderr  # type: ignore[attr-defined]


def test_a_conflict_exits_1_naming_holder_resource_and_time(repo: Path) -> None:
    ok(versatil(repo, "lock", "--agent", "Marcus-Backend", "src"))
    started = time.monotonic()
    # --wait 0: a request that waits first says whom for (tests/integration/test_wait_notice.py)
    line = assert_one_line_error(
        versatil(repo, "lock", "--agent", "James", "--wait", "0", "src/a.py"), 1
    )
    assert time.monotonic() - started < 30
    assert "Marcus-Backend" in line and "src" in line and "since" in line


def test_a_deadlock_exits_1_at_once_naming_both_agents(
    repo: Path, manager: LockManager, spawn: Spawner
) -> None:
    alice = lock_agent(spawn, repo)
    alice.acquire(["src/a.py"], agent="Alice")
    ok(versatil(repo, "lock", "--agent", "Bob", "src/b.py"))
    alice.request(["src/b.py"], agent="Alice", wait=60)  # Alice waits for Bob
    wait_queued(manager, "Alice")
    started = time.monotonic()
    result = versatil(repo, "lock", "--agent", "Bob", "--wait", "30", "src/a.py")
    assert time.monotonic() - started < 10  # refused at once, not after --wait 30
    line = assert_one_line_error(result, 1)
    assert "deadlock" in line.lower() and "Alice" in line and "Bob" in line


# A damaged table, seen from the command line -----------------------------------------------------
def test_locks_reports_a_damaged_table_in_one_line_and_goes_on(
    repo: Path, spawn: Spawner
) -> None:
    holder = lock_agent(spawn, repo)
    holder.acquire(["src/a.py"], agent="Holder")
    table = StateDir().lock_table
    table.write_bytes(b'{"version": 1, "locks": [')
    result = versatil(repo, "locks", "--json")
    doc = json.loads(ok(result))
    assert [g["agent"] for g in doc["locks"]] == ["Holder"]
    report = [line for line in result.stderr.splitlines() if line.strip()]  # type: ignore[attr-defined]
    assert len(report) == 1 and "resource-locks.json" in report[0]
    assert len(list(table.parent.glob("resource-locks.json.corrupt-*"))) == 1
    # Reported once: the next command finds a good table and says nothing.
    assert versatil(repo, "locks").stderr == ""  # type: ignore[attr-defined]
    assert_one_line_error(versatil(repo, "lock", "--agent", "X", "--wait", "0", "src/a.py"), 1)
