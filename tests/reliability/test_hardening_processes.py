"""Issue 12, the processes' part: no process keeps writing after its locks are gone, wave state is
never trusted for paths, a finished task is not run again, and bad input never ends in exit 70.

The lock contract tested here: a lock is held for exactly as long as any process started under
it lives. The processes are real (``versatil run`` and ``versatil wave run`` as separate
processes, killed with ``kill -9``), and every step is synchronised on files the children write
or on a process's end, never on a sleep.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from integration.helpers import versatil_argv
from reliability.support import (
    Result,
    Tally,
    one_line_problems,
    versatil,
    versatil_process,
)

FILES = {
    "README.md": "hello\n",
    "src/x.txt": "x\n",
    "src/a.py": "a = 1\n",
    "docs/guide.md": "# guide\n",
}


@pytest.fixture
def repo(git_repo: Path) -> Path:
    from integration.helpers import commit_files

    return commit_files(git_repo, FILES)


# Plans that are not plan files ------------------------------------------------------------------
def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


PLAN_CASES = {
    # A JSON document is YAML too: 5,000 levels overflow PyYAML's recursive composer.
    "json-5000": _nested(5000),
    "mapping-5000": "tasks:\n- " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
    # Deep enough to pass the composer, deep enough to be no plan.
    "agent-list-200": "tasks:\n- id: t\n  run: 'true'\n  agent: " + _nested(200) + "\n",
}


@pytest.mark.parametrize("command", ["plan", "run"])
@pytest.mark.parametrize("case", sorted(PLAN_CASES))
def test_a_deeply_nested_plan_is_one_sentence_and_exit_2(
    case: str, command: str, repo: Path, tmp_path: Path, tally: Tally
) -> None:
    plan = tmp_path / "deep.yaml"
    plan.write_text(PLAN_CASES[case])
    tally.attack()
    result = tally.outcome(versatil("wave", command, str(plan), cwd=repo))
    assert one_line_problems(result, (2,), ["deep.yaml", "nested"]) == [], result


@pytest.mark.parametrize("kind", ["fifo", "fifo-with-writer", "device", "socket"])
def test_a_plan_path_that_is_not_a_regular_file_is_refused_not_waited_on(
    kind: str, repo: Path, tmp_path: Path, tally: Tally
) -> None:
    import socket

    plan = tmp_path / "plan.yaml"
    holder: socket.socket | None = None
    writer = None
    if kind.startswith("fifo"):
        os.mkfifo(plan)
        if kind == "fifo-with-writer":
            # A writer that never writes: a blocking read would wait for it for ever.
            reader = os.open(plan, os.O_RDONLY | os.O_NONBLOCK)
            writer = os.open(plan, os.O_WRONLY)
            os.close(reader)
    elif kind == "device":
        plan = Path("/dev/zero")  # endless: reading it whole would never finish
    else:
        holder = socket.socket(socket.AF_UNIX)
        holder.bind(str(plan))
    try:
        for command in ("plan", "run"):
            tally.attack()
            proc = subprocess.Popen(
                versatil_argv("wave", command, str(plan)), cwd=repo, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            hung = tally.hung(proc, 30)
            assert not hung, f"wave {command} hung on a {kind} plan"
            out, err = proc.communicate()
            result = tally.outcome(Result(proc.returncode, out, err))
            assert one_line_problems(result, (2,), [str(plan), "not a regular file"]) == [], (
                result
            )
    finally:
        if writer is not None:
            os.close(writer)
        if holder is not None:
            holder.close()


# A defaulted agent name -------------------------------------------------------------------------
def test_run_warns_once_when_the_agent_name_is_defaulted(repo: Path) -> None:
    defaulted = versatil_process("run", "--lock", "src/x.txt", "--", "true", cwd=repo)
    assert defaulted.code == 0, defaulted
    assert len(defaulted.err_lines) == 1, defaulted
    assert "no agent name given" in defaulted.err and "exclude" in defaulted.err, defaulted
    for named in (
        versatil_process("run", "--agent", "Ann", "--lock", "src/x.txt", "--", "true", cwd=repo),
        versatil_process("run", "--lock", "src/x.txt", "--", "true", cwd=repo,
                         env={"VERSATIL_AGENT": "Bob"}),
    ):
        assert named.code == 0 and named.err_lines == [], named
