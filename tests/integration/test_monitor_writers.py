"""Issue 15, items 1-4: who a write is attributed to. After an unlock nobody's; a restore's to
the restore; never the monitor's own output file; and only "written while X held the lock" when
that is all the monitor can know."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from integration.helpers import Spawner, run_versatil, versatil_argv, wait_for
from integration.test_monitor import FILES, MonitorProcess, log, start_monitor

from versatil_fs import events
from versatil_fs.locks.manager import LockManager
from versatil_fs.monitor import lock_held_at, unlocked_write_count
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir

__all__ = ["FILES"]


def test_a_write_after_unlock_is_an_unlocked_write(spawn: Spawner, repo: Path) -> None:
    """Issue 15 item 1, exactly as reported: lock, unlock, start the monitor, `echo >>`."""
    for command in (("lock", "--agent", "Marcus", "src/"), ("unlock", "--agent", "Marcus", "src/")):
        result = run_versatil(*command, cwd=repo)
        assert result.returncode == 0, result.stderr
    monitor = start_monitor(spawn, repo)
    subprocess.run("echo human >> src/a.py", shell=True, cwd=repo, check=True)
    line = monitor.next()
    assert (line["kind"], line["path"], line["agent"]) == ("unlocked-write", "src/a.py", None)
    assert not [e for e in log("files-modified") if e.agent == "Marcus"]
    assert unlocked_write_count(repo) == 1


def test_unlocking_part_of_a_lease_ends_only_those_paths(repo: Path) -> None:
    """`unlock src/` of a lease on src/ and docs/: a write to src/ after it is nobody's, even
    once the rest of the lease has been released too."""
    key = Repository.find(repo).key
    manager = LockManager(repo=repo)
    lease = manager.acquire(["src/", "docs/"], agent="Marcus", wait=0)
    manager.unlock(["src/"], agent="Marcus")
    between = time.time() + 0.01
    wait_for(lambda: time.time() > between + 0.02)
    lease.release()
    state = StateDir()
    assert lock_held_at(state, key, "src/a.py", between) is None
    held = lock_held_at(state, key, "docs/x.md", between)
    assert held is not None and held.agent == "Marcus"
    manager.close()


def _lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_the_monitor_never_reports_its_own_output_files(spawn: Spawner, repo: Path) -> None:
    """Issue 15 item 4: `versatil monitor > monitor.log` inside the repository (stderr too)."""
    (repo / ".gitignore").write_text("build/\n")  # *.log no longer ignored: the report's case
    argv = " ".join(shlex.quote(a) for a in versatil_argv("monitor", "--json"))
    child = spawn.popen(
        ["sh", "-c", f"exec {argv} > monitor.log 2> monitor.err"], cwd=repo, name="monitor"
    )
    out, err = repo / "monitor.log", repo / "monitor.err"
    wait_for(lambda: "watching" in (err.read_text() if err.exists() else "") or not child.alive)
    assert child.alive, err.read_text()
    (repo / "src" / "a.py").write_text("a = 2\n")
    wait_for(lambda: any(line["path"] == "src/a.py" for line in _lines(out)))
    (repo / "docs" / "sentinel.md").write_text("sentinel\n")
    wait_for(lambda: any(line["path"] == "docs/sentinel.md" for line in _lines(out)))
    # Stopped, the monitor reports what it still held back (a file kept open is reported a
    # moment after its last write): everything it would ever report is in the log now.
    child.kill(signal.SIGTERM)
    assert child.wait() == 0, err.read_text()
    reported = [line["path"] for line in _lines(out)]
    assert reported == ["src/a.py", "docs/sentinel.md"]
    logged = {e.data["path"] for e in log("unlocked-write")}
    assert "monitor.log" not in logged and "monitor.err" not in logged
    assert unlocked_write_count(repo) == len(reported)


def test_a_following_monitor_does_not_print_writes_to_its_own_output(
    spawn: Spawner, repo: Path
) -> None:
    """Another process observes: it must not report the follower's writes to its output file
    (the follower announces it), and the follower must not print them (that would write the
    file again, once per line, forever)."""
    (repo / ".gitignore").write_text("build/\n")
    observer = start_monitor(spawn, repo)
    argv = " ".join(shlex.quote(a) for a in versatil_argv("monitor", "--json"))
    child = spawn.popen(
        ["sh", "-c", f"exec {argv} > follow.log 2> follow.err"], cwd=repo, name="follower"
    )
    out, err = repo / "follow.log", repo / "follow.err"
    wait_for(lambda: "already watching" in (err.read_text() if err.exists() else ""))
    (repo / "src" / "a.py").write_text("a = 2\n")
    wait_for(lambda: any(line["path"] == "src/a.py" for line in _lines(out)))
    # The shell's redirections create both files before the follower runs, let alone says
    # they are its output: those creations are reported, and nothing after them.
    before = observer.until("src/a.py")
    assert {(w["path"], w["event"]) for w in before[:-1]} <= {
        ("follow.log", "created"), ("follow.err", "created"),
    }, before
    (repo / "docs" / "sentinel.md").write_text("sentinel\n")
    wait_for(lambda: any(line["path"] == "docs/sentinel.md" for line in _lines(out)))
    child.kill(signal.SIGTERM)
    assert child.wait() == 0, err.read_text()
    assert [line["path"] for line in _lines(out)] == ["src/a.py", "docs/sentinel.md"]
    # The observer reported neither file of the follower (its lines up to one more sentinel).
    assert [w["path"] for w in observer.sentinel()] == ["docs/sentinel.md"]
    written = {(e.data["path"], e.data["event"]) for e in log("unlocked-write")}
    assert not {("follow.log", "modified"), ("follow.err", "modified")} & written, written


def test_a_restores_writes_are_the_restores(spawn: Spawner, repo: Path) -> None:
    """Issue 15 item 3: `checkpoint restore` writes are reported `restored` (who restored,
    which checkpoint), never counted as unlocked writes."""
    made = run_versatil("checkpoint", "create", "-m", "before", "--json", cwd=repo)
    assert made.returncode == 0, made.stderr
    checkpoint = json.loads(made.stdout)["id"]
    monitor = start_monitor(spawn, repo)
    (repo / "src" / "a.py").write_text("a = 'agent work'\n")
    (repo / "src" / "new.py").write_text("new\n")
    assert [w["kind"] for w in monitor.until("src/new.py")] == ["unlocked-write"] * 2
    restored = run_versatil(
        "checkpoint", "restore", checkpoint, cwd=repo, env={"VERSATIL_AGENT": "Human"}
    )
    assert restored.returncode == 0, restored.stderr
    assert (repo / "src" / "a.py").read_text() == "a = 1\n"
    # A restore renames each file into place (no close-after-write event): a created file
    # is reported a moment later, so read until both have been, and nothing else but them.
    lines: list[dict[str, Any]] = []
    while {w["path"] for w in lines} != {"src/a.py", "src/new.py"}:
        lines.append(monitor.next())
    lines += monitor.sentinel()
    assert sorted((w["kind"], w["agent"], w["path"], w["event"]) for w in lines) == [
        ("restored", "Human", "src/a.py", "modified"),
        ("restored", "Human", "src/new.py", "deleted"),
    ]
    assert {w.get("checkpoint") for w in lines} == {checkpoint}
    assert unlocked_write_count(repo) == 3  # the two writes before it and the sentinel
    logged = log("restored")
    assert sorted(e.data["path"] for e in logged) == ["src/a.py", "src/new.py"]
    assert {e.agent for e in logged} == {"Human"}


def test_a_locked_write_says_it_rests_on_the_lock(spawn: Spawner, repo: Path) -> None:
    """Issue 15 item 2: a write to a locked path, made by another process, is the holder's
    only by the lock, and both forms and the log say so; `monitor --help` says why."""
    manager = LockManager(repo=repo)
    monitor = start_monitor(spawn, repo)
    human = spawn.popen(versatil_argv("monitor"), cwd=repo, name="human-readable")
    wait_for(lambda: "already watching" in human.stderr, message=lambda: human.stderr)
    with manager.hold(["src/"], agent="Marcus"):
        # Another process in another shell writes: inotify cannot say it was not Marcus.
        subprocess.run("echo human >> src/a.py", shell=True, cwd=repo, check=True)
        line = monitor.next()
    assert (line["kind"], line["agent"], line["attributed"]) == ("locked-write", "Marcus", "lock")
    assert human.read_line().endswith(
        "locked-write modified src/a.py (written while Marcus held the lock)"
    )
    [event] = [e for e in log("files-modified") if e.data.get("source") == "monitor"]
    assert (event.agent, event.data["attributed"]) == ("Marcus", "lock")
    manager.close()
    helped = run_versatil("monitor", "--help", cwd=repo)
    assert "cannot tell who wrote a file" in " ".join(helped.stdout.split())


def test_a_state_directory_inside_the_tree_is_never_reported(spawn: Spawner, repo: Path) -> None:
    """Item 4, its log: every report appends to the event log; with VERSATIL_HOME inside the
    repository that append would be a write to report, and so on forever."""
    home = repo / "state"
    argv = versatil_argv("monitor", "--json")
    child = spawn.popen(argv, cwd=repo, env={"VERSATIL_HOME": str(home)}, name="monitor")
    wait_for(lambda: "watching" in child.stderr or not child.alive, message=lambda: child.stderr)
    assert child.alive, child.stderr
    watcher = MonitorProcess(child, repo)
    (repo / "src" / "a.py").write_text("a = 2\n")
    assert watcher.next()["path"] == "src/a.py"
    assert watcher.sentinel() == []
    child.kill(signal.SIGTERM)
    assert child.wait() == 0, child.stderr
    state = StateDir(home)
    logged = [e.data["path"] for e in events.read("collision-detection", state=state)
              if e.kind == "unlocked-write"]
    assert not [p for p in logged if p.startswith("state/")], logged
