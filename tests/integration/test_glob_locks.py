"""Glob locks work everywhere a lock does (issue 16 part 1), end to end: real git repositories in
tmp_path, `versatil` as separate processes, the installed commit guard, a real monitor, the
harness stand-in driving real hook processes."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.agent_harness import FakeHarness
from integration.helpers import (
    Spawner,
    commit_files,
    git,
    run_versatil,
    versatil_argv,
    wait_for,
)
from integration.test_monitor import start_monitor

from versatil_fs import events, hook
from versatil_fs.errors import LockConflict
from versatil_fs.locks.manager import LockManager

BIN = str(Path(sys.executable).parent)
FILES = {
    "src/a.ts": "a\n", "src/b.py": "b\n", "src/ui/c.ts": "c\n", "tests/unit/test_x.py": "x\n",
    "docs/guide.md": "g\n", "README.md": "r\n",
}


@pytest.fixture
def repo(git_repo: Path) -> Path:
    return commit_files(git_repo, FILES)


def _lock(repo: Path, agent: str, *specs: str, cwd: Path | None = None, wait: str = "0"):  # type: ignore[no-untyped-def]
    return run_versatil("lock", "--agent", agent, "--wait", wait, "--ttl", "600", *specs,
                        cwd=cwd or repo)


def test_cli_glob_lock_refuses_a_file_under_it_naming_the_witness(repo: Path) -> None:
    held = _lock(repo, "James", "src/*.ts")
    assert held.returncode == 0, held.stderr
    refused = _lock(repo, "Marcus", "src/a.ts")
    assert refused.returncode == 1, refused.stderr
    assert "`src/*.ts` (James) and `src/a.ts` (Marcus) both cover src/a.ts" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    # Two globs: the text of one is not a path the other matches, and still they meet.
    other = _lock(repo, "Marcus", "src/a*")
    assert other.returncode == 1
    assert "`src/*.ts` (James) and `src/a*` (Marcus) both cover src/a.ts" in other.stderr
    # What does not overlap is granted; a pattern typed in src/ is read there.
    assert _lock(repo, "Marcus", "*.py", cwd=repo / "src").returncode == 0
    assert _lock(repo, "Marcus", "src/ui/c.ts").returncode == 0  # `*` stays in one segment
    listing = run_versatil("locks", cwd=repo)
    assert "src/*.ts" in listing.stdout and "src/*.py" in listing.stdout
    shown = json.loads(run_versatil("locks", "--json", cwd=repo).stdout)
    globbed = [c["resource"] for lock in shown["locks"] for c in lock["claims"]
               if c["resource"].get("glob")]
    assert {r["path"] for r in globbed} == {"src/*.ts", "src/*.py"}
    # Released by the pattern as typed.
    assert run_versatil("unlock", "--agent", "James", "src/*.ts", cwd=repo).returncode == 0
    assert _lock(repo, "Marcus", "src/a.ts").returncode == 0


def test_a_malformed_pattern_is_one_sentence_and_exit_2(repo: Path) -> None:
    bad = _lock(repo, "James", "src/[a")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "versatil: The pattern 'src/[a' has a [ that is never closed (write \\[ for a literal [)."
    ]


def test_the_python_api_reserves_a_glob(repo: Path) -> None:
    manager = LockManager(repo=repo)
    lease = manager.acquire(["src/**/*.ts"], agent="James", wait=0)
    try:
        refused = _lock(repo, "Marcus", "src/ui/c.ts")
        assert refused.returncode == 1
        assert "both cover src/ui/c.ts" in refused.stderr
        assert _lock(repo, "Marcus", "docs/guide.md").returncode == 0
        # src/b.py is a file: nothing can be under it, so the pattern does not meet it.
        assert _lock(repo, "Marcus", "src/b.py").returncode == 0
        other = LockManager(repo=repo)
        with pytest.raises(LockConflict) as caught:
            other.acquire(["src"], agent="Dana", wait=0)
        assert caught.value.resource == "src/**/*.ts"
        assert "`src/**/*.ts` (James) and `src` (Dana) both cover src/" in str(caught.value)
        other.close()
    finally:
        lease.release()
        manager.close()


@pytest.fixture
def guarded(repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    hook.install(repo)
    return repo


def test_the_commit_guard_refuses_a_staged_file_under_another_agents_glob(
    guarded: Path,
) -> None:
    assert _lock(guarded, "James", "src/**/*.ts").returncode == 0
    (guarded / "src" / "ui" / "c.ts").write_text("changed\n")
    (guarded / "src" / "b.py").write_text("changed\n")
    git(guarded, "add", "-A")
    env = {**os.environ, "VERSATIL_AGENT": "Marcus"}
    import subprocess

    refused = subprocess.run(["git", "commit", "-q", "-m", "x"], cwd=guarded, env=env,
                             capture_output=True, text=True, check=False)
    assert refused.returncode != 0
    assert "src/ui/c.ts" in refused.stderr and "James" in refused.stderr
    assert "locked by James via its lock on `src/**/*.ts`, since" in refused.stderr
    assert "src/b.py" not in refused.stderr.split("Ways out")[0]
    # Only the file outside the pattern: the commit goes through.
    git(guarded, "reset", "-q", "src/ui/c.ts")
    done = subprocess.run(["git", "commit", "-q", "-m", "py"], cwd=guarded, env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_monitor_and_restore_agent_follow_a_glob_lock(spawn: Spawner, repo: Path) -> None:
    made = run_versatil("checkpoint", "create", "-m", "before", cwd=repo)
    assert made.returncode == 0, made.stderr
    checkpoint = made.stdout.strip()
    monitor = start_monitor(spawn, repo)
    manager = LockManager(repo=repo)
    with manager.hold(["src/*.ts"], agent="James"):
        (repo / "src" / "a.ts").write_text("James's\n")
        line = monitor.next()
        assert (line["kind"], line["agent"], line["path"]) == ("locked-write", "James",
                                                                "src/a.ts")
        (repo / "src" / "b.py").write_text("nobody's\n")
        line = monitor.next()
        assert (line["kind"], line["path"]) == ("unlocked-write", "src/b.py")
    manager.close()
    recorded = [e for e in events.read("collision-detection") if e.kind == "files-modified"]
    assert any(e.agent == "James" and "src/a.ts" in e.data["paths"] for e in recorded)
    done = run_versatil("checkpoint", "restore", checkpoint, "--agent", "James", cwd=repo)
    assert done.returncode == 0, done.stderr
    assert (repo / "src" / "a.ts").read_text() == "a\n"
    assert (repo / "src" / "b.py").read_text() == "nobody's\n"  # not James's: left alone


def test_a_write_seen_after_a_glob_lock_ended_is_still_its_agents(repo: Path) -> None:
    from versatil_fs.monitor import lock_held_at
    from versatil_fs.repo import Repository
    from versatil_fs.state import StateDir

    manager = LockManager(repo=repo)
    lease = manager.acquire(["tests/**/test_*.py"], agent="Dana", wait=0)
    inside = time.time()
    wait_for(lambda: time.time() > inside + 0.02)
    lease.release()
    key = Repository.find(repo).key
    held = lock_held_at(StateDir(), key, "tests/unit/test_x.py", inside)
    assert held is not None and held.agent == "Dana"
    assert lock_held_at(StateDir(), key, "tests/unit/helper.py", inside) is None
    manager.close()


@pytest.fixture
def harnesses() -> Iterator[list[FakeHarness]]:
    started: list[FakeHarness] = []
    yield started
    for harness in started:
        harness.close()


def test_the_edit_hook_denies_a_file_under_another_sessions_glob(
    repo: Path, harnesses: list[FakeHarness]
) -> None:
    assert _lock(repo, "James", "src/*.ts").returncode == 0
    session = FakeHarness(repo, "cccccccc-3333-4333-8333-333333333333")
    harnesses.append(session)
    denied = session.before_write(repo / "src" / "a.ts")
    reason = denied.denied
    assert reason is not None, denied
    assert "src/a.ts" in reason and "James" in reason
    assert "`src/*.ts`, which covers src/a.ts" in reason
    assert session.before_write(repo / "src" / "b.py").silent  # outside the pattern


def test_run_lock_takes_a_glob(repo: Path, spawn: Spawner) -> None:
    marker = repo / "holding"
    runner = spawn.popen(
        versatil_argv("run", "--agent", "James", "--lock", "tests/**", "--no-monitor", "--",
                      "sh", "-c", f"touch {marker} && sleep 30"),
        cwd=repo, stdin=False,
    )
    wait_for(lambda: marker.exists() or not runner.alive, message="the run to start")
    refused = _lock(repo, "Marcus", "tests/unit/test_x.py")
    assert refused.returncode == 1
    assert "`tests/**` (James)" in refused.stderr
    runner.kill(signal.SIGTERM)
    runner.wait()


def test_a_plan_with_glob_writes_separates_the_tasks_they_overlap(repo: Path) -> None:
    plan = repo / "plan.yaml"
    plan.write_text(
        "tasks:\n"
        "  - {id: ts, agent: James, run: 'true', writes: ['src/**/*.ts']}\n"
        "  - {id: ui, agent: Marcus, run: 'true', writes: ['src/ui/*']}\n"
        "  - {id: md, agent: Dana, run: 'true', writes: ['docs/*.md'], reads: ['src/ui/*.py']}\n"
    )
    shown = run_versatil("wave", "plan", str(plan), "--json", cwd=repo)
    assert shown.returncode == 0, shown.stderr
    # ts and ui both cover src/ui/a.ts, ui and md src/ui/a.py; docs/*.md meets neither.
    assert json.loads(shown.stdout)["schedule"]["wave_of"] == {"ts": 1, "ui": 2, "md": 3}
    ran = run_versatil("wave", "run", str(plan), cwd=repo)
    assert ran.returncode == 0, ran.stderr + ran.stdout


def test_run_under_a_glob_rolls_back_only_what_the_glob_covers(repo: Path) -> None:
    # The command writes a file under its glob and one beside it (in the same directory,
    # which is where versatil has to look): only the first is its to record and roll back.
    ran = run_versatil(
        "run", "--agent", "James", "--lock", "src/*.ts", "--rollback-on-failure",
        "--no-monitor", "--", "sh", "-c", "echo J > src/a.ts; echo beside > src/b.py; exit 3",
        cwd=repo,
    )
    assert ran.returncode == 3, ran.stderr
    assert (repo / "src" / "a.ts").read_text() == "a\n"  # rolled back
    assert (repo / "src" / "b.py").read_text() == "beside\n"  # not under the lock: kept
    ok = run_versatil(
        "run", "--agent", "James", "--lock", "src/**/*.ts", "--no-monitor", "--",
        "sh", "-c", "echo J > src/ui/c.ts; echo beside > src/b.py", cwd=repo,
    )
    assert ok.returncode == 0, ok.stderr
    recorded = [e for e in events.read("collision-detection")
                if e.kind == "files-modified" and e.agent == "James"]
    # The failed run's file, then this one's; never the file beside them.
    assert [e.data["paths"] for e in recorded] == [["src/a.ts"], ["src/ui/c.ts"]]


def test_a_failed_wave_task_rolls_back_only_its_globs_files(repo: Path) -> None:
    plan = repo / "plan.yaml"
    plan.write_text(
        "tasks:\n"
        "  - id: ts\n    agent: James\n    writes: ['src/*.ts']\n"
        "    run: 'echo J > src/a.ts; echo beside > src/b.py; exit 1'\n"
    )
    ran = run_versatil("wave", "run", str(plan), cwd=repo)
    assert ran.returncode == 1, ran.stderr + ran.stdout
    assert (repo / "src" / "a.ts").read_text() == "a\n"
    assert (repo / "src" / "b.py").read_text() == "beside\n"


def test_a_restore_refuses_a_file_under_another_agents_glob_lock(repo: Path) -> None:
    made = run_versatil("checkpoint", "create", "-m", "before", cwd=repo)
    checkpoint = made.stdout.strip()
    (repo / "src" / "ui" / "c.ts").write_text("James's work\n")
    assert _lock(repo, "James", "src/**/*.ts").returncode == 0
    refused = run_versatil("checkpoint", "restore", checkpoint, "--path", "src/ui/c.ts", cwd=repo,
                           env={"VERSATIL_AGENT": "Marcus"})
    assert refused.returncode == 1, refused.stderr
    assert "src/ui/c.ts" in refused.stderr and "James" in refused.stderr
    assert (repo / "src" / "ui" / "c.ts").read_text() == "James's work\n"


def test_the_mcp_tools_answer_a_glob_conflict_with_its_witness(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mcp")
    from versatil_fs.agents.mcp_server import Tools

    assert _lock(repo, "James", "src/*.ts").returncode == 0
    monkeypatch.setenv("VERSATIL_AGENT", "Marcus")
    tools = Tools("claude", cwd=str(repo))
    try:
        answer = tools.lock(["src/a*"], "write", 0, "")
        assert not answer.granted and answer.conflict is not None
        assert answer.conflict.resource == "src/*.ts"
        assert "`src/*.ts` (James) and `src/a*` (Marcus) both cover src/a.ts" in (
            answer.conflict.message)
        check = tools.locks("src/a.ts").path
        assert check is not None and not check.free_for_you
        assert [e.agent for e in check.held_by] == ["James"]
        free = tools.locks("src/b.py").path
        assert free is not None and free.free_for_you
    finally:
        tools.close()


def test_core_ignorecase_makes_patterns_match_either_case(repo: Path) -> None:
    assert _lock(repo, "James", "SRC/*.TS").returncode == 0
    assert _lock(repo, "Marcus", "src/a.ts").returncode == 0  # case-sensitive by default
    assert run_versatil("unlock", "--agent", "Marcus", "src/a.ts", cwd=repo).returncode == 0
    git(repo, "config", "core.ignorecase", "true")
    refused = _lock(repo, "Marcus", "src/a.ts")
    assert refused.returncode == 1
    assert "`SRC/*.TS` (James) and `src/a.ts` (Marcus) both cover src/a.ts" in refused.stderr


def test_a_deep_pattern_meets_files_it_covers_and_directories_not_the_files_beside_them(
    repo: Path,
) -> None:
    # `src/**/*.ts` could only meet src/b.py through src/b.py/x.ts, which cannot exist while
    # src/b.py is a file: reserving every TypeScript file must not block the Python beside it.
    assert _lock(repo, "James", "src/**/*.ts").returncode == 0
    assert _lock(repo, "Marcus", "src/b.py").returncode == 0
    assert _lock(repo, "Marcus", "src/new.py").returncode == 0  # to be created: a file
    # A directory may hold TypeScript: refused, naming a file both would cover.
    directory = _lock(repo, "Marcus", "src/ui")
    assert directory.returncode == 1
    assert "both cover src/ui/" in directory.stderr
    to_be = _lock(repo, "Marcus", "src/later/")  # written as a directory: one
    assert to_be.returncode == 1
    assert _lock(repo, "Marcus", "src/a.ts").returncode == 1  # the pattern's own file
    # A file deleted since its lock is still unlocked by its name, and so is a directory
    # removed since (the resource is its name, not what is on disk).
    (repo / "src" / "b.py").unlink()
    assert run_versatil("unlock", "--agent", "Marcus", "src/b.py", cwd=repo).returncode == 0
    assert _lock(repo, "Marcus", "docs").returncode == 0
    for child in (repo / "docs").iterdir():
        child.unlink()
    (repo / "docs").rmdir()
    assert run_versatil("unlock", "--agent", "Marcus", "docs", cwd=repo).returncode == 0
