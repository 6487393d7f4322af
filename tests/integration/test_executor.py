"""The wave executor end to end: real git repositories, real task processes, real kill -9.

Tasks are small shell commands. They synchronise with the test through marker files outside
the repository (a task announces it started by creating one, and waits for one the test or
another task creates); the plans' `sleep`s are workload, never synchronisation.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from integration.helpers import (
    Spawner,
    assert_one_line_error,
    git,
    lock_agent,
    run_versatil,
    versatil_argv,
    wait_for,
    wait_for_file,
)

from versatil_fs import events
from versatil_fs.checkpoints import Checkpoints
from versatil_fs.waves.executor import WaveExecutor
from versatil_fs.waves.plan import Plan
from versatil_fs.waves.progress import Progress
from versatil_fs.waves.records import RunState, TaskRun
from versatil_fs.waves.report import report
from versatil_fs.waves.schedule import admits, waves_in_flight
from versatil_fs.waves.store import RunStore, StartRecord, frame_record
from versatil_fs.waves.tasks import leftover_processes

# A task that waits for a file: polls it (the workload's own loop) for at most ~20 s.
WAIT_FOR = 'i=0; while [ ! -e "{path}" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; ' \
           '[ -e "{path}" ]'


def stamp(marks: Path, name: str) -> str:
    """Shell that records the current time (nanoseconds) in marks/<name>, atomically.

    ``date > name`` would create the file (the shell's redirection) before ``date`` takes the
    time: a task waiting for it could go on, and stamp its own end, before this time was
    taken, or read it empty. Written to a temporary name and renamed, the file appears only
    with the time in it, so "it exists" means "its time is taken".
    """
    return f'date +%s%N > "{marks / name}.tmp" && mv "{marks / name}.tmp" "{marks / name}"'


def write_plan(path: Path, tasks: list[dict[str, Any]], **top: Any) -> Path:
    path.write_text(yaml.safe_dump({"tasks": tasks, **top}, sort_keys=False))
    return path


def run_plan(repo: Path, plan: Path, **options: Any) -> RunState:
    return WaveExecutor(Plan.load(plan), repo=repo, **options).run()


def interval(marks: Path, name: str) -> tuple[int, int]:
    return int((marks / f"{name}.start").read_text()), int((marks / f"{name}.end").read_text())


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    path = tmp_path / "marks"
    path.mkdir()
    return path


def timed(marks: Path, task_id: str, body: str) -> str:
    return f"{stamp(marks, task_id + '.start')}; {body}; {stamp(marks, task_id + '.end')}"


# Parallelism ------------------------------------------------------------------------------------
def test_independent_tasks_really_run_at_the_same_time(git_repo: Path, marks: Path) -> None:
    # Each waits for the other two to have started: only a parallel run can finish.
    names = ["dana", "marcus", "james"]
    tasks = [
        {
            "id": name, "agent": name.title(), "writes": [f"src/{name}.txt"],
            "run": f'touch "{marks / name}"; '
            + "; ".join(WAIT_FOR.format(path=marks / other) for other in names if other != name)
            + f"; mkdir -p src; echo {name} > src/{name}.txt",
        }
        for name in names
    ]
    run = run_plan(git_repo, write_plan(git_repo / "plan.yaml", tasks))
    assert run.status == "succeeded", {t.id: t.error for t in run.tasks.values()}
    assert [len(w) for w in run.waves] == [3]
    for name in names:
        assert (git_repo / f"src/{name}.txt").read_text() == f"{name}\n"
        assert run.tasks[name].files == [f"src/{name}.txt"]


def test_at_most_max_agents_tasks_run_at_once(git_repo: Path, marks: Path) -> None:
    tasks = [
        {"id": f"t{i}", "agent": f"A{i}", "writes": [f"f{i}"],
         "run": timed(marks, f"t{i}", f"sleep 0.2; echo {i} > f{i}")}
        for i in range(5)
    ]
    run = run_plan(git_repo, write_plan(git_repo / "plan.yaml", tasks), max_agents=2)
    assert run.status == "succeeded"
    spans = [interval(marks, f"t{i}") for i in range(5)]
    points = sorted({s for s, _ in spans})
    busiest = max(sum(1 for s, e in spans if s <= p < e) for p in points)
    assert busiest == 2  # two at once (so parallel), never three


def test_needs_and_conflicts_order_tasks(git_repo: Path, marks: Path) -> None:
    tasks = [
        {"id": "schema", "agent": "Dana", "writes": ["db/schema.sql"],
         "run": timed(marks, "schema", "sleep 0.1; mkdir -p db; echo create > db/schema.sql")},
        {"id": "api", "agent": "Marcus", "writes": ["api/"], "reads": ["db/schema.sql"],
         "needs": ["schema"],
         "run": timed(marks, "api", "mkdir -p api; cat db/schema.sql > api/x")},
        # Same directory as `schema`, no `needs`: the conflict alone keeps them apart.
        {"id": "seed", "agent": "Dana", "writes": ["db/"],
         "run": timed(marks, "seed", "sleep 0.1; echo seed > db/seed.sql")},
    ]
    run = run_plan(git_repo, write_plan(git_repo / "plan.yaml", tasks))
    assert run.status == "succeeded"
    schema, api, seed = (interval(marks, n) for n in ("schema", "api", "seed"))
    assert schema[1] <= api[0]  # api needs schema
    assert schema[1] <= seed[0] or seed[1] <= schema[0]  # same files: never at once
    assert (git_repo / "api/x").read_text() == "create\n"


# Failure isolation and rollback ------------------------------------------------------------------
def test_a_failed_task_is_rolled_back_its_dependents_skipped_and_the_rest_goes_on(
    git_repo: Path, marks: Path
) -> None:
    (git_repo / "src").mkdir()
    (git_repo / "src/api.py").write_text("original api\n")
    (git_repo / "src/ui.tsx").write_text("original ui\n")
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-q", "-m", "app")
    tasks = [
        {"id": "api", "agent": "Marcus", "writes": ["src/api.py", "src/auth/"],
         "run": "echo broken >> src/api.py; mkdir -p src/auth; echo half > src/auth/jwt.py; "
                "echo oops >&2; exit 3"},
        {"id": "ui", "agent": "James", "writes": ["src/ui.tsx"],
         "run": "sleep 0.2; echo login form >> src/ui.tsx"},
        {"id": "api-tests", "agent": "Maria", "writes": ["tests/api/"], "needs": ["api"],
         "run": "mkdir -p tests/api; touch tests/api/t.py"},
        {"id": "e2e", "agent": "Maria", "writes": ["tests/e2e/"], "needs": ["api-tests", "ui"],
         "run": "mkdir -p tests/e2e; touch tests/e2e/t.py"},
        {"id": "ui-tests", "agent": "Maria", "writes": ["tests/ui/"], "needs": ["ui"],
         "run": "mkdir -p tests/ui; touch tests/ui/t.py"},
    ]
    run = run_plan(git_repo, write_plan(git_repo / "plan.yaml", tasks))
    assert run.status == "failed"
    status = {t.id: t.status for t in run.tasks.values()}
    assert status == {"api": "failed", "ui": "succeeded", "api-tests": "skipped",
                      "e2e": "skipped", "ui-tests": "succeeded"}
    api = run.tasks["api"]
    assert api.exit_code == 3 and api.error == "exited with 3"
    assert api.files == ["src/api.py", "src/auth/jwt.py"]
    assert sorted(api.rolled_back) == ["src/api.py", "src/auth/jwt.py"]
    # Only the failed task's files went back; the other agent's work is untouched.
    assert (git_repo / "src/api.py").read_text() == "original api\n"
    assert not (git_repo / "src/auth").exists()
    assert (git_repo / "src/ui.tsx").read_text() == "original ui\nlogin form\n"
    assert (git_repo / "tests/ui/t.py").exists()
    assert not (git_repo / "tests/api").exists()
    assert run.tasks["api-tests"].skipped_because == "needs api, which failed"
    assert run.tasks["e2e"].skipped_because == "needs api-tests, which was skipped (api failed)"
    assert "oops" in Path(api.log).read_text()
    result = report(run)
    assert result.failed == ["api"] and result.skipped == ["api-tests", "e2e"]
    # The checkpoint before wave 1 exists and was made without touching the user's index.
    record = Checkpoints(git_repo).show(run.wave_checkpoints[1])
    assert record.wave == 1 and git(git_repo, "status", "--porcelain", "--", "src") != ""


def test_a_timeout_fails_the_task_and_stops_everything_it_started(
    git_repo: Path, marks: Path
) -> None:
    tasks = [{
        "id": "slow", "agent": "Victor", "writes": ["out.txt"], "timeout": 0.5,
        # A grandchild that would outlive the shell if only the shell were killed.
        "run": f'echo partial > out.txt; (sleep 30; touch "{marks / "survivor"}") & '
               f'echo $! > "{marks / "child.pid"}"; sleep 30',
    }]
    run = run_plan(git_repo, write_plan(git_repo / "plan.yaml", tasks))
    slow = run.tasks["slow"]
    assert slow.status == "failed" and slow.error == "timed out after 0.5 s"
    assert not (git_repo / "out.txt").exists()  # created by the task: removed again
    child = int((marks / "child.pid").read_text())
    wait_for(lambda: not Path(f"/proc/{child}").exists() or _zombie(child),
             message="the task's background child to be killed")
    assert leftover_processes(run.id) == []


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True


def test_a_command_that_cannot_start_fails_cleanly(git_repo: Path) -> None:
    tasks = [{"id": "ghost", "agent": "A", "run": ["/no/such/program"], "writes": ["x"]},
             {"id": "fine", "agent": "B", "run": "true"}]
    run = run_plan(git_repo, write_plan(git_repo / "plan.yaml", tasks))
    assert run.tasks["ghost"].status == "failed"
    assert "could not start" in run.tasks["ghost"].error
    assert run.tasks["fine"].status == "succeeded"


# Locks -------------------------------------------------------------------------------------------
def test_a_task_waits_for_an_outside_lock_holder_and_runs_under_its_own_locks(
    git_repo: Path, marks: Path, spawn: Spawner
) -> None:
    holder = lock_agent(spawn, git_repo)
    holder.acquire(["src/api/"], agent="Human")
    tasks = [{
        "id": "api", "agent": "Marcus-Backend", "writes": ["src/api/routes.py"],
        "run": f'echo "$VERSATIL_AGENT $VERSATIL_TASK $VERSATIL_WAVE" > "{marks / "env"}"; '
               f'mkdir -p src/api; echo routes > src/api/routes.py',
    }]
    plan = write_plan(git_repo / "plan.yaml", tasks)
    seen: list[str] = []

    class Watch(Progress):
        def event(self, run: RunState, kind: str, task: TaskRun | None, detail: str) -> None:
            seen.append(kind)
            if kind == "task-waiting":
                holder.release()  # the test hands the file over once the task queues for it

    run = WaveExecutor(Plan.load(plan), repo=git_repo, observer=Watch()).run()
    assert run.status == "succeeded", run.tasks["api"].error
    assert seen.index("task-waiting") < seen.index("task-start")
    assert (marks / "env").read_text() == "Marcus-Backend api 1\n"
    assert run.tasks["api"].lock_wait > 0
    grants = [e for e in events.read("locks") if e.kind == "grant"]
    assert any(e.agent == "Marcus-Backend" for e in grants)
    modified = [e for e in events.read("collision-detection") if e.kind == "files-modified"]
    assert [(e.agent, e.data["paths"], e.data["task"]) for e in modified] == [
        ("Marcus-Backend", ["src/api/routes.py"], "api")
    ]


def test_a_task_that_cannot_get_its_locks_fails_and_the_others_go_on(
    git_repo: Path, spawn: Spawner
) -> None:
    holder = lock_agent(spawn, git_repo)
    holder.acquire(["db:users"], agent="Human")
    tasks = [{"id": "migrate", "agent": "Dana", "writes": ["db:users"], "run": "true"},
             {"id": "docs", "agent": "Alex", "writes": ["docs/"], "run": "true"}]
    run = run_plan(git_repo, write_plan(git_repo / "plan.yaml", tasks), lock_wait=0.2)
    assert run.tasks["migrate"].status == "failed"
    assert "locked by Human" in run.tasks["migrate"].error
    assert run.tasks["docs"].status == "succeeded"


# The command line, crash and resume ---------------------------------------------------------
def crash_plan(repo: Path, marks: Path) -> Path:
    """`quick` ends at once; `slow` writes half its output, announces itself, then hangs on its
    first attempt; `after` needs both. Every attempt of each task is counted in marks/."""
    count = 'echo x >> "{}"'
    slow_first = (
        f'echo half > build/slow.txt; touch "{marks / "slow-started"}"; echo $$ > '
        f'"{marks / "slow.pid"}"; sleep 60'
    )
    return write_plan(repo / "plan.yaml", [
        {"id": "quick", "agent": "Dana", "writes": ["build/quick.txt"],
         "run": f'{count.format(marks / "quick")}; mkdir -p build; echo q > build/quick.txt'},
        {"id": "slow", "agent": "Marcus", "writes": ["build/slow.txt"],
         "run": f'{count.format(marks / "slow")}; mkdir -p build; '
                f'if [ -e "{marks / "slow-started"}" ]; then echo full > build/slow.txt; '
                f'else {slow_first}; fi'},
        {"id": "after", "agent": "Maria", "writes": ["build/after.txt"],
         "needs": ["quick", "slow"],
         "run": f'{count.format(marks / "after")}; cat build/quick.txt build/slow.txt '
                '> build/after.txt'},
    ])


def test_resume_after_kill_9_mid_wave_never_reruns_finished_tasks(
    git_repo: Path, marks: Path, spawn: Spawner
) -> None:
    plan = crash_plan(git_repo, marks)
    executor = spawn.popen(versatil_argv("wave", "run", str(plan)), cwd=git_repo, name="wave")
    wait_for_file(marks / "slow-started")
    store = RunStore()
    wait_for(lambda: _quick_done(store), message="quick to be recorded as succeeded")
    executor.kill9()  # the executor's process group; the tasks run in their own sessions
    slow_pid = int((marks / "slow.pid").read_text())
    assert Path(f"/proc/{slow_pid}").exists()  # an orphan, still running

    status = run_versatil("wave", "status", "--json", cwd=git_repo)
    view = json.loads(status.stdout)
    assert view["status"] == "interrupted"
    assert view["run"]["tasks"]["slow"]["status"] == "running"
    assert (git_repo / "build/slow.txt").read_text() == "half\n"

    resumed = run_versatil("wave", "resume", cwd=git_repo)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Resuming wave run" in resumed.stdout
    wait_for(lambda: not Path(f"/proc/{slow_pid}").exists() or _zombie(slow_pid),
             message="the orphaned task to be killed")
    assert (git_repo / "build/after.txt").read_text() == "q\nfull\n"
    counts = {n: len((marks / n).read_text().split()) for n in ("quick", "slow", "after")}
    assert counts == {"quick": 1, "slow": 2, "after": 1}
    run = store.runs()[-1]
    assert run.status == "succeeded" and len(run.sessions) == 2
    assert run.tasks["slow"].attempts == 2 and run.tasks["quick"].attempts == 1
    kinds = [e.kind for e in events.read("wave-execution")]
    assert "resume" in kinds and "rollback" in kinds
    # The report leaves the time the executor was dead out of the makespan.
    assert report(run).makespan < run.sessions[1].ended - run.sessions[0].started


def _quick_done(store: RunStore) -> bool:
    runs = store.runs()
    return bool(runs) and runs[-1].tasks["quick"].status == "succeeded"


def test_kill_9_right_after_a_task_starts_then_resume(
    git_repo: Path, marks: Path
) -> None:
    plan = write_plan(git_repo / "plan.yaml", [
        {"id": "one", "agent": "Dana", "writes": ["one.txt"],
         "run": f'echo x >> "{marks / "one"}"; echo 1 > one.txt'},
        {"id": "two", "agent": "Dana", "writes": ["two.txt"], "needs": ["one"],
         "run": f'echo x >> "{marks / "two"}"; echo 2 > two.txt'},
    ])
    crashed = run_versatil("wave", "run", str(plan), cwd=git_repo,
                           env={"VERSATIL_FAULT": "wave.task-started:2"})
    assert crashed.returncode == -signal.SIGKILL
    # Its start was on disk before its process was (in the write-ahead file at least).
    assert RunStore().runs()[-1].tasks["two"].status == "running"
    resumed = run_versatil("wave", "resume", cwd=git_repo)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (marks / "one").read_text() == "x\n"  # never run again
    assert (git_repo / "two.txt").read_text() == "2\n"


def test_a_resumed_run_writes_ahead_to_a_new_file_not_after_a_torn_record(
    git_repo: Path, marks: Path
) -> None:
    plan = write_plan(git_repo / "plan.yaml", [
        {"id": "one", "agent": "Dana", "writes": ["one.txt"],
         "run": f'echo x >> "{marks / "one"}"; echo 1 > one.txt'},
    ])
    crash = {"VERSATIL_FAULT": "wave.task-started:1"}
    assert run_versatil("wave", "run", str(plan), cwd=git_repo, env=crash).returncode == -9
    store = RunStore()
    run_id = store.runs()[-1].id
    with store.wal_path(run_id).open("ab") as wal:
        wal.write(b"\x40\x00\x00\x00torn")  # what a crash in the middle of an append leaves
    # The resumed session dies right after starting `one` again: its start must be readable.
    assert run_versatil("wave", "resume", cwd=git_repo, env=crash).returncode == -9
    one = store.load(run_id).tasks["one"]
    assert one.status == "running" and one.attempts == 2
    resumed = run_versatil("wave", "resume", cwd=git_repo)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert store.load(run_id).tasks["one"].attempts == 3


@pytest.mark.slow  # tests/reliability kills at every wave fault point; this is the quick look
def test_a_kill_at_the_state_write_leaves_a_readable_resumable_run(
    git_repo: Path, marks: Path
) -> None:
    plan = write_plan(git_repo / "plan.yaml", [
        {"id": f"t{i}", "agent": "A", "writes": [f"t{i}.txt"], "run": f"echo {i} > t{i}.txt"}
        for i in range(3)
    ])
    crashed = run_versatil("wave", "run", str(plan), "--max-agents", "1", cwd=git_repo,
                           env={"VERSATIL_FAULT": "wave.before-state-write:5"})
    assert crashed.returncode == -signal.SIGKILL
    status = run_versatil("wave", "status", cwd=git_repo)
    assert status.returncode == 0 and ": interrupted" in status.stdout
    resumed = run_versatil("wave", "resume", cwd=git_repo)
    assert resumed.returncode == 0, resumed.stderr
    assert all((git_repo / f"t{i}.txt").read_text() == f"{i}\n" for i in range(3))


def test_task_starts_written_ahead_of_the_state_are_read_over_it(git_repo: Path) -> None:
    plan = write_plan(git_repo / "plan.yaml", [
        {"id": "a", "agent": "A", "writes": ["a"], "run": "true"},
        {"id": "b", "agent": "B", "writes": ["b"], "run": "true"},
    ])
    run = run_plan(git_repo, plan)
    store = RunStore()
    assert not store.wal_path(run.id).exists()  # removed once the state held all of it
    # A state that holds records up to 4, with a write-ahead file after it: record 3 is older
    # than the state, 5 is newer (task a started again), 6 was torn by a crash.
    state = store.load(run.id)
    state.journal = 4
    store.save(state)
    a, b = state.tasks["a"], state.tasks["b"]
    again = msgspec.structs.replace(a, status="running", attempts=2, finished=None)
    store.wal_path(run.id).write_bytes(
        frame_record(StartRecord(number=3, task=msgspec.structs.replace(b, status="running")))
        + frame_record(StartRecord(number=5, task=again))
        + frame_record(StartRecord(number=6, task=msgspec.structs.replace(b, status="failed")))[:-2]
    )
    loaded = store.load(run.id)
    assert loaded.tasks["a"] == again and loaded.journal == 5
    assert loaded.tasks["b"] == b
    assert store.runs()[-1].tasks["a"].status == "running"  # listing reads it the same way


def test_wave_run_cli_plain_progress_report_and_exit_codes(git_repo: Path) -> None:
    plan = write_plan(git_repo / "plan.yaml", [
        {"id": "ok", "agent": "Dana-Database", "writes": ["a"], "run": "echo a > a",
         "estimate": 1},
        {"id": "bad", "agent": "Marcus-Backend", "writes": ["b"], "run": "echo b > b; exit 1",
         "estimate": 1},
    ])
    result = run_versatil("wave", "run", str(plan), cwd=git_repo)
    assert result.returncode == 1
    out = result.stdout
    assert "start    ok (Dana-Database)" in out and "done     ok (Dana-Database)" in out
    assert "FAILED   bad (Marcus-Backend): exited with 1; rolled back 1 file" in out
    assert "x faster" in out and "Lower bound" in out
    assert "One after another" in out and "In waves" in out and "% idle)" in out
    run_id = RunStore().runs()[-1].id
    status = run_versatil("wave", "status", run_id[:12], "--json", cwd=git_repo)
    view = json.loads(status.stdout)
    assert view["status"] == "failed" and view["report"]["failed"] == ["bad"]
    # A finished run is not resumed: its finished tasks are never run again.
    again = run_versatil("wave", "resume", run_id, cwd=git_repo)
    assert "already finished" in assert_one_line_error(again, 1)
    nothing = run_versatil("wave", "resume", cwd=git_repo)
    assert "No interrupted wave run" in assert_one_line_error(nothing, 2)
    logs = run_versatil("logs", "wave-execution", "--json", cwd=git_repo)
    kinds = [json.loads(line)["kind"] for line in logs.stdout.splitlines()]
    for kind in ("run-start", "wave-start", "task-start", "task-done", "task-failed",
                 "run-done"):
        assert kind in kinds


def test_resume_retry_failed_runs_failed_and_skipped_tasks_again_and_nothing_else(
    git_repo: Path, marks: Path
) -> None:
    # `flaky` writes half its file and fails on its first attempt only; `after` needs it;
    # `other` has nothing to do with it. Every attempt of each task is counted in marks/.
    count = 'echo x >> "{}"'
    plan = write_plan(git_repo / "plan.yaml", [
        {"id": "flaky", "agent": "Dana", "writes": ["build/flaky.txt"],
         "run": f'{count.format(marks / "flaky")}; mkdir -p build; echo half > build/flaky.txt; '
                f'if [ ! -e "{marks / "tried"}" ]; then touch "{marks / "tried"}"; exit 4; fi; '
                'echo whole > build/flaky.txt'},
        {"id": "after", "agent": "Maria", "writes": ["build/after.txt"], "needs": ["flaky"],
         "run": f'{count.format(marks / "after")}; cp build/flaky.txt build/after.txt'},
        {"id": "other", "agent": "James", "writes": ["build/other.txt"],
         "run": f'{count.format(marks / "other")}; mkdir -p build; echo o > build/other.txt'},
    ])
    first = run_versatil("wave", "run", str(plan), cwd=git_repo)
    assert first.returncode == 1, first.stdout + first.stderr
    assert not (git_repo / "build/flaky.txt").exists()  # rolled back when it failed
    run_id = RunStore().runs()[-1].id
    refused = run_versatil("wave", "resume", cwd=git_repo)
    assert "No interrupted wave run" in assert_one_line_error(refused, 2)
    refused = run_versatil("wave", "resume", run_id, cwd=git_repo)
    assert "--retry-failed" in assert_one_line_error(refused, 1)

    again = run_versatil("wave", "resume", "--retry-failed", cwd=git_repo)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"Resuming wave run {run_id}" in again.stdout
    assert (git_repo / "build/after.txt").read_text() == "whole\n"
    counts = {n: len((marks / n).read_text().split()) for n in ("flaky", "after", "other")}
    assert counts == {"flaky": 2, "after": 1, "other": 1}
    run = RunStore().load(run_id)
    assert run.status == "succeeded" and len(run.sessions) == 2
    assert run.tasks["flaky"].attempts == 2 and run.tasks["flaky"].error == ""
    assert run.tasks["after"].skipped_because == ""
    assert "retry" in [e.kind for e in events.read("wave-execution")]
    done = run_versatil("wave", "resume", "--retry-failed", run_id, cwd=git_repo)
    assert "already finished (succeeded)" in assert_one_line_error(done, 1)


def test_wave_run_json(git_repo: Path) -> None:
    plan = write_plan(git_repo / "plan.yaml", [{"id": "a", "agent": "A", "run": "true"}])
    result = run_versatil("wave", "run", str(plan), "--json", cwd=git_repo)
    assert result.returncode == 0
    doc = json.loads(result.stdout)
    assert doc["status"] == "succeeded" and doc["tasks"][0]["id"] == "a"


def test_a_bad_plan_exits_2_naming_file_line_and_task(git_repo: Path) -> None:
    plan = git_repo / "plan.yaml"
    plan.write_text("tasks:\n  - id: a\n    agent: A\n    run: x\n    needs: [b]\n")
    result = run_versatil("wave", "run", str(plan), cwd=git_repo)
    line = assert_one_line_error(result, 2)
    assert f"{plan}:5: task 'a': needs 'b'" in line
    outside = write_plan(git_repo / "p2.yaml", [
        {"id": "x", "agent": "A", "run": "true", "writes": ["link/f"]}
    ])
    (git_repo / "link").symlink_to("/tmp")
    result = run_versatil("wave", "run", str(outside), cwd=git_repo)
    assert "task 'x'" in assert_one_line_error(result, 2)


def test_the_state_is_msgpack_and_a_damaged_one_is_moved_aside(git_repo: Path) -> None:
    plan = write_plan(git_repo / "plan.yaml", [{"id": "a", "agent": "A", "run": "true"}])
    run = run_plan(git_repo, plan)
    path = RunStore().path(run.id)
    decoded = msgspec.msgpack.decode(path.read_bytes())
    assert decoded["tasks"]["a"]["status"] == "succeeded"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    path.write_bytes(b"\x00garbage")
    result = run_versatil("wave", "status", run.id, cwd=git_repo)
    assert "moved aside" in assert_one_line_error(result, 2)  # one sentence, not two
    assert list(path.parent.glob(f"{path.name}.corrupt-*"))


def test_sigterm_stops_rolls_back_and_leaves_a_resumable_run(
    git_repo: Path, marks: Path, spawn: Spawner
) -> None:
    plan = crash_plan(git_repo, marks)
    executor = spawn.popen(versatil_argv("wave", "run", str(plan)), cwd=git_repo, name="wave")
    wait_for_file(marks / "slow-started")
    os.kill(executor.pid, signal.SIGTERM)
    assert executor.wait() == 130
    assert not (git_repo / "build/slow.txt").exists()  # its half-written file rolled back
    run = RunStore().runs()[-1]
    assert run.tasks["slow"].status == "pending"
    resumed = run_versatil("wave", "resume", run.id, cwd=git_repo)
    assert resumed.returncode == 0
    assert (git_repo / "build/after.txt").read_text() == "q\nfull\n"


def test_live_progress_on_a_terminal(git_repo: Path) -> None:
    import pty
    import subprocess

    plan = write_plan(git_repo / "plan.yaml", [
        {"id": f"t{i}", "agent": f"Agent{i}", "run": "sleep 0.6", "writes": [f"f{i}"]}
        for i in range(3)
    ])
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        versatil_argv("wave", "run", str(plan)), cwd=git_repo, stdin=follower,
        stdout=follower, stderr=follower, env={**os.environ, "COLUMNS": "120"},
    )
    os.close(follower)
    chunks = []
    try:
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(leader)
        proc.wait(timeout=30)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "waves 0/1" in text  # the live panel
    assert "⏵" in text  # a running task's line
    assert "x faster" in text


def test_overlapping_waves_take_a_fresh_baseline_for_a_task_after_a_conflicting_one(
    git_repo: Path, marks: Path
) -> None:
    # `long` (wave 1) still runs when wave 2 starts; `fix` (wave 2, conflicting with `long`)
    # must not be rolled back to wave 2's checkpoint, which holds long's half-written file.
    tasks = [
        {"id": "long", "agent": "Dana", "writes": ["shared.txt"],
         "run": f'echo half > shared.txt; {WAIT_FOR.format(path=marks / "wave2")}; '
                'echo whole > shared.txt'},
        {"id": "short", "agent": "Marcus", "writes": ["other.txt"], "run": "echo o > other.txt"},
        {"id": "next", "agent": "Marcus", "writes": ["next.txt"], "needs": ["short"],
         "run": f'touch "{marks / "wave2"}"; echo n > next.txt'},
        {"id": "fix", "agent": "James", "writes": ["shared.txt"], "needs": ["short"],
         "run": "echo broken >> shared.txt; exit 1"},
    ]
    run = run_plan(git_repo, write_plan(git_repo / "plan.yaml", tasks))
    assert run.tasks["fix"].status == "failed"
    assert (git_repo / "shared.txt").read_text() == "whole\n"
    assert run.tasks["fix"].checkpoint != run.wave_checkpoints[2]


def test_overlapping_wave_intervals_show_in_the_report(git_repo: Path, marks: Path) -> None:
    tasks = [{"id": f"t{i}", "agent": f"A{i % 2}", "writes": [f"f{i}"],
              "run": timed(marks, f"t{i}", "sleep 0.2")} for i in range(4)]
    run = run_plan(git_repo, write_plan(git_repo / "plan.yaml", tasks))
    spans = [interval(marks, f"t{i}") for i in range(4)]
    assert any(a[0] < b[1] and b[0] < a[1] for a, b in itertools.combinations(spans, 2))
    result = report(run)
    # The four start together (one wave, five agents) and overlap, so the makespan is shorter
    # than their sum unless starting one took longer than two whole tasks (1.5 failed on a
    # loaded machine).
    assert result.speedup is not None and result.speedup > 1.0
    assert result.efficiency is not None and 0 < result.efficiency <= 1.0
    assert {u.agent for u in result.utilization} == {"A0", "A1"}
    assert all(len(u.timeline) == 20 for u in result.utilization)


def test_python_api_from_the_package(git_repo: Path) -> None:
    import versatil_fs

    assert sys.modules["versatil_fs"] is versatil_fs
    plan = write_plan(git_repo / "plan.yaml", [{"id": "a", "agent": "A", "run": "true"}])
    assert Plan.load(plan).waves()[0][0].id == "a"


def test_the_demo_chapter_tells_the_whole_wave_story(git_repo: Path) -> None:
    from versatil_fs.demo.stage import Demo
    from versatil_fs.demo.waves import chapter_waves

    lines: list[str] = []
    demo = Demo(repo=git_repo, out=lines.append)
    try:
        chapter_waves(demo)
    finally:
        for proc in demo.processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = "\n".join(lines)
    assert "wave 4 (20m): e2e (Maria-QA), security (Victor-Verifier)" in text
    assert "waiting  frontend (James-Frontend) for its locks" in text
    assert "Alex-BA releases app/ui/: handed to James-Frontend" in text
    assert "FAILED   connect-api (James-Frontend)" in text
    assert "rolled back only its own files (app/ui/api.ts): // Mock API" in text
    assert "e2e (Maria-QA) skipped: needs connect-api, which failed" in text
    assert "unlocked-write modified README.md" in text
    assert "before wave 4 of wave run" in text
    assert "x faster" in text and "% idle)" in text
    assert (git_repo / "docs/auth/security-review.md").exists()
    page = git_repo.parent / "wave-report.html"
    assert f"The picture of this run (`versatil wave report --html`): {page}" in text
    assert "<svg" in page.read_text() and "connect-api" in page.read_text()


def test_the_demo_plan_ships_inside_the_package() -> None:
    # A wheel holds the package directory only: the example must live there for `versatil
    # demo` to run its wave chapter from a wheel install.
    import versatil_fs
    from versatil_fs.demo.waves import EXAMPLE

    assert EXAMPLE.is_relative_to(Path(versatil_fs.__file__).resolve().parent)
    assert EXAMPLE.is_file() and (EXAMPLE.parent / "agents" / "lib.sh").is_file()


def test_with_two_waves_in_flight_a_task_of_the_wave_after_next_does_not_start(
    git_repo: Path, marks: Path
) -> None:
    # slow1 (wave 1) and slow2 (wave 2) run until `release` exists; only `opener` (wave 2)
    # creates it. When `b` ends, one slot frees and both `c` (wave 3, ranked first by its
    # priority) and `opener` are ready: with waves 1 and 2 in flight `c` must not take the
    # slot, so `opener` gets it. Were `c` let in, it would have started while both slow tasks
    # still ran (and `opener` after it).
    release = WAIT_FOR.format(path=marks / "release")
    tasks = [
        {"id": "a", "agent": "Marcus", "writes": ["a"], "priority": 2, "run": "true"},
        {"id": "slow1", "agent": "Dana", "writes": ["slow1"], "priority": 2,
         "run": timed(marks, "slow1", release)},
        {"id": "slow2", "agent": "James", "writes": ["slow2"], "needs": ["a"], "priority": 2,
         "run": timed(marks, "slow2", release)},
        {"id": "b", "agent": "Maria", "writes": ["b"], "needs": ["a"], "priority": 2,
         "run": "true"},
        {"id": "opener", "agent": "Alex", "writes": ["opener"], "needs": ["a"],
         "run": timed(marks, "opener", f'touch "{marks / "release"}"')},
        {"id": "c", "agent": "Victor", "writes": ["c"], "needs": ["b"], "priority": 9,
         "run": timed(marks, "c", "true")},
    ]
    run = run_plan(git_repo, write_plan(git_repo / "plan.yaml", tasks), max_agents=3)
    assert run.max_waves == 2  # the default
    assert run.status == "succeeded", {t.id: t.error for t in run.tasks.values()}
    assert {t: run.tasks[t].wave for t in ("a", "slow1", "slow2", "b", "opener", "c")} == {
        "a": 1, "slow1": 1, "slow2": 2, "b": 2, "opener": 2, "c": 3,
    }
    slow1, slow2, opener, c = (interval(marks, n) for n in ("slow1", "slow2", "opener", "c"))
    assert opener[0] <= c[0]
    # Wave 3 waited until wave 1 or wave 2 was no longer in flight (then two waves are).
    assert min(slow1[1], slow2[1]) <= c[0]


def test_a_straggler_does_not_hold_back_waves_once_the_next_one_is_done(
    git_repo: Path, marks: Path
) -> None:
    # `slow` (wave 1) runs until `c` (wave 3) has started. Once `b` (wave 2) is done only wave
    # 1 is in flight, so `c` may start beside the straggler: counting every wave not done
    # (wave 1 here) as in flight would keep `c` waiting for `slow`, which waits for `c`.
    tasks = [
        {"id": "slow", "agent": "Dana", "writes": ["slow"],
         "run": timed(marks, "slow", WAIT_FOR.format(path=marks / "c.start"))},
        {"id": "a", "agent": "Marcus", "writes": ["a"], "run": "true"},
        {"id": "b", "agent": "Marcus", "writes": ["b"], "needs": ["a"], "run": "true"},
        {"id": "c", "agent": "James", "writes": ["c"], "needs": ["b"],
         "run": timed(marks, "c", "true")},
    ]
    run = run_plan(git_repo, write_plan(git_repo / "plan.yaml", tasks), max_waves=2)
    assert run.status == "succeeded", {t.id: t.error for t in run.tasks.values()}
    assert [run.tasks[t].wave for t in ("slow", "a", "b", "c")] == [1, 1, 2, 3]
    slow, c = (interval(marks, n) for n in ("slow", "c"))
    assert c[0] < slow[1]


def test_the_window_admits_a_wave_in_flight_or_one_more_up_to_the_limit() -> None:
    assert waves_in_flight([3, 1, 3]) == {3: 2, 1: 1}
    assert admits({}, 7, 1)
    assert admits({1: 1}, 1, 1) and not admits({1: 1}, 2, 1)
    assert admits({1: 2}, 5, 2)  # wave 5 beside a wave-1 straggler: two in flight
    assert not admits({1: 1, 2: 3}, 3, 2) and admits({1: 1, 2: 3}, 2, 2)


def test_with_checkpoints_off_a_failed_task_keeps_its_files_and_says_so(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERSATIL_CHECKPOINTS_ENABLED", "false")
    plan = write_plan(git_repo / "plan.yaml", [
        {"id": "bad", "agent": "A", "writes": ["out.txt"], "run": "echo x > out.txt; exit 1"}
    ])
    run = run_plan(git_repo, plan)
    bad = run.tasks["bad"]
    assert bad.status == "failed" and bad.rolled_back == [] and bad.checkpoint is None
    assert "checkpoints.enabled is false" in bad.error
    assert (git_repo / "out.txt").exists()
    assert run.wave_checkpoints == {}


def test_a_state_of_another_schema_version_is_set_aside_not_misread(git_repo: Path) -> None:
    plan = write_plan(git_repo / "plan.yaml", [{"id": "a", "agent": "A", "run": "true"}])
    run = run_plan(git_repo, plan)
    path = RunStore().path(run.id)
    doc = msgspec.msgpack.decode(path.read_bytes())
    doc["version"] = 99
    path.write_bytes(msgspec.msgpack.encode(doc))
    result = run_versatil("wave", "status", run.id[:8], cwd=git_repo)
    line = assert_one_line_error(result, 2)
    assert f"wave run {run.id}" in line and "schema version 99" in line and "moved aside" in line


def test_a_stamp_file_appears_only_with_its_time_in_it(tmp_path: Path, marks: Path) -> None:
    # The straggler test's race, made certain: a `date` that waits until the test has looked.
    # With `date > c.start` the shell had created c.start (empty) by then, so a task waiting
    # for it went on before c's time was taken; the stamp must not exist until it holds it.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    looked = tmp_path / "looked"
    fake = bin_dir / "date"
    fake.write_text(f'#!/bin/sh\nwhile [ ! -e "{looked}" ]; do sleep 0.01; done\necho 42\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.Popen(["sh", "-c", stamp(marks, "c.start")], env=env)
    try:
        # Once the fake `date` runs (a child of the shell), the redirection is done.
        wait_for(lambda: "date" in _children(proc.pid), timeout=10)
        assert not (marks / "c.start").exists()
    finally:
        looked.touch()
        assert proc.wait(timeout=10) == 0
    assert (marks / "c.start").read_text() == "42\n"


def _children(pid: int) -> list[str]:
    """The command names of a process's children, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(name)
    return found
