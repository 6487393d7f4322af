"""Every command that takes --json answers a refusal or a failure with one JSON object on stdout
(the error's kind, its message, its exit code and its data), keeps exit 1/2 and still says the
sentence on stderr (issue 15, item 14): one mechanism in cli/app.py, not one per command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from integration.helpers import run_versatil

FILES = {"src/a.py": "a\n"}


def answered(repo: Path, code: int, *args: str) -> dict[str, object]:
    result = run_versatil(*args, cwd=repo)
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result  # before: nothing at all on stdout
    document = json.loads(lines[0])
    assert isinstance(document, dict)
    assert document["exit_code"] == code
    # The same sentence on stderr as without --json.
    assert str(document["message"]) in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    return document


@pytest.mark.parametrize(("code", "kind", "args"), [
    (1, "LockConflict", ("unlock", "--json", "--agent", "Nobody", "src/a.py")),
    (2, "UsageError", ("checkpoint", "show", "--json", "no-such-checkpoint")),
    (2, "UsageError", ("checkpoint", "restore", "--json", "no-such-checkpoint")),
    (2, "PlanError", ("wave", "plan", "--json", "missing-plan.yaml")),
    (2, "UsageError", ("lock", "--json", "--wait", "soon", "src/a.py")),
    (2, "UsageError", ("lock", "--wait", "soon", "--json", "src/a.py")),
    (2, "UsageError", ("logs", "locks", "--json", "--tail", "0")),
    (2, "UsageError", ("lock", "--json", "/elsewhere/f.py")),
])
def test_a_refused_or_failed_json_request_prints_its_error_as_json(
    repo: Path, code: int, kind: str, args: tuple[str, ...]
) -> None:
    document = answered(repo, code, *args)
    assert document["error"] == kind, document


def test_the_error_carries_its_data(repo: Path) -> None:
    assert run_versatil("lock", "--agent", "Dana", "src/a.py", cwd=repo).returncode == 0
    document = answered(repo, 1, "lock", "--json", "--agent", "Marcus", "--wait", "0",
                        "src/a.py")
    assert document["error"] == "LockConflict"
    assert [h["agent"] for h in document["holders"]] == ["Dana"]  # type: ignore[index,union-attr]
    assert document["resource"] == "src/a.py"
    assert isinstance(document["since"], float)


def test_without_json_stdout_stays_empty(repo: Path) -> None:
    result = run_versatil("unlock", "--agent", "Nobody", "src/a.py", cwd=repo)
    assert (result.returncode, result.stdout) == (1, "")
