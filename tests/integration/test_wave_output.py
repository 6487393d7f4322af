"""What `versatil wave` prints, end to end (issue 15, item 16): a wave's end says what failed
or was skipped, a resume names its run once, an interrupt is told once, and `wave plan`'s
per-wave estimate counts the agents it has.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import yaml
from integration.helpers import Spawner, run_versatil, versatil_argv, wait_for_file


def write_plan(path: Path, tasks: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"tasks": tasks}, sort_keys=False))
    return path


def test_a_wave_with_a_failed_or_only_a_skipped_task_does_not_read_as_done(
    git_repo: Path,
) -> None:
    plan = write_plan(git_repo / "plan.yaml", [
        {"id": "ok", "agent": "Dana", "writes": ["a"], "run": "echo a > a"},
        {"id": "bad", "agent": "Marcus", "writes": ["b"], "needs": ["ok"],
         "run": "echo b > b; exit 1"},
        {"id": "fine", "agent": "Maria", "writes": ["c"], "needs": ["ok"], "run": "echo c > c"},
        {"id": "after", "agent": "James", "writes": ["d"], "needs": ["bad"], "run": "true"},
    ])
    result = run_versatil("wave", "run", str(plan), cwd=git_repo)
    assert result.returncode == 1, result.stderr
    ends = [line.split("] ", 1)[1] for line in result.stdout.splitlines() if " done" in line
            and "wave" in line and "] " in line and "start" not in line]
    assert "✓ wave 1 done" in ends
    assert "✗ wave 2 done: 1 failed" in ends
    assert "✗ wave 3 done: 1 skipped" in ends
    assert not any(e.startswith("✓ wave 2") or e.startswith("✓ wave 3") for e in ends)


def test_an_interrupt_is_told_once_and_the_resume_names_its_run_once(
    git_repo: Path, tmp_path: Path, spawn: Spawner
) -> None:
    started = tmp_path / "started"
    plan = write_plan(git_repo / "plan.yaml", [
        {"id": "slow", "agent": "Marcus", "writes": ["s"],
         "run": f'if [ -e "{started}" ]; then echo s > s; else touch "{started}"; sleep 60; fi'},
    ])
    executor = spawn.popen(
        versatil_argv("wave", "run", str(plan)), cwd=git_repo, name="wave"
    )
    wait_for_file(started)
    os.kill(executor.pid, signal.SIGTERM)
    assert executor.wait() == 130
    lines = []
    while True:  # everything it printed, up to its end of output
        try:
            lines.append(executor.read_line(timeout=10))
        except AssertionError:
            break
    text = "\n".join(lines)
    assert text.count("Interrupted") == 1, text
    run_id = re.search(r"versatil wave resume (\S+)", text)
    assert run_id, text
    resumed = run_versatil("wave", "resume", cwd=git_repo)
    assert resumed.returncode == 0, resumed.stderr
    line = next(x for x in resumed.stdout.splitlines() if "Resuming wave run" in x)
    assert line.count(run_id.group(1)) == 1, line
    assert "1 tasks to go" in line or "1 task to go" in line


def test_the_plan_estimate_of_a_wave_counts_the_agents(git_repo: Path) -> None:
    plan = write_plan(git_repo / "plan.yaml", [
        {"id": f"t{i}", "agent": f"A{i}", "writes": [f"f{i}"], "estimate": 3, "run": "true"}
        for i in range(7)
    ])
    five = run_versatil("wave", "plan", str(plan), "--max-agents", "5", cwd=git_repo)
    assert five.returncode == 0, five.stderr
    assert "Wave 1  (est. 6.0s)" in five.stdout  # two rounds: 5 tasks, then 2
    seven = run_versatil("wave", "plan", str(plan), "--max-agents", "7", cwd=git_repo)
    assert "Wave 1  (est. 3.0s)" in seven.stdout
    one = run_versatil("wave", "plan", str(plan), "--max-agents", "1", cwd=git_repo)
    assert "Wave 1  (est. 21s)" in one.stdout


def test_a_file_name_that_is_not_utf8_fails_its_task_in_a_sentence_and_is_rolled_back(
    git_repo: Path,
) -> None:
    # The run's state holds text: such a name once crashed the task's record ("internal
    # error: UnicodeEncodeError") and the file stayed. Now the task fails, saying why, and
    # what it wrote goes; a later task whose write paths already hold such a name does not
    # run at all.
    odd = os.fsdecode(b"odd/n\xff")
    plan = write_plan(git_repo / "plan.yaml", [
        {"id": "writes-odd", "agent": "Dana", "writes": ["odd"],
         "run": "mkdir -p odd; echo kept > odd/fine.txt; printf x > \"odd/$(printf 'n\\377')\""},
        {"id": "other", "agent": "Marcus", "writes": ["b"], "run": "echo b > b"},
    ])
    result = run_versatil("wave", "run", str(plan), cwd=git_repo)
    assert result.returncode == 1, result.stderr
    assert "internal error" not in result.stdout + result.stderr
    assert "FAILED   writes-odd (Dana): it wrote odd/n\\xff, a file name that is not UTF-8" \
        in result.stdout
    assert not os.path.lexists(git_repo / odd) and not (git_repo / "odd/fine.txt").exists()
    assert (git_repo / "b").read_text() == "b\n"  # the rest went on
    status = run_versatil("wave", "status", "--json", cwd=git_repo)
    assert status.returncode == 0, status.stderr

    (git_repo / "odd").mkdir(exist_ok=True)
    (git_repo / odd).write_text("there before\n")
    again = write_plan(git_repo / "again.yaml", [
        {"id": "into-odd", "agent": "Dana", "writes": ["odd"], "run": "echo ran > odd/ran"},
    ])
    second = run_versatil("wave", "run", str(again), cwd=git_repo)
    assert second.returncode == 1, second.stderr
    assert "its write paths hold odd/n\\xff, a file name that is not UTF-8" in second.stdout
    assert not (git_repo / "odd/ran").exists()
    assert (git_repo / odd).read_text() == "there before\n"


def test_a_wave_run_says_which_automatic_checkpoints_its_prune_removed(git_repo: Path) -> None:
    # Issue 15, item 8: a prune nobody asked for is never silent, the wave run's included.
    (git_repo / ".versatil").write_text("[checkpoints]\nmax_automatic = 1\n")
    plan = write_plan(git_repo / "plan.yaml", [
        {"id": "one", "agent": "Dana", "writes": ["a"], "run": "echo a > a"},
        {"id": "two", "agent": "Marcus", "writes": ["a"], "needs": ["one"], "run": "echo b > a"},
        {"id": "three", "agent": "Maria", "writes": ["a"], "needs": ["two"], "run": "echo c > a"},
    ])
    result = run_versatil("wave", "run", str(plan), cwd=git_repo)
    assert result.returncode == 0, result.stderr
    pruned = [line for line in result.stderr.splitlines() if "pruned checkpoint" in line]
    assert pruned and all("over checkpoints.max_automatic" in line for line in pruned), result
