"""`versatil lock --json` answers a refusal with data: one JSON object on stdout naming who
holds what (LockConflict) or the cycle (Deadlock), the sentence on stderr, exit 1."""

from __future__ import annotations

import json
import time
from pathlib import Path

from integration.helpers import Spawner, run_versatil, versatil_argv, wait_for

from versatil_fs import LockManager

FILES = {"src/a.py": "a\n"}


def refusal(repo: Path, *args: str) -> tuple[dict[str, object], str]:
    result = run_versatil("lock", "--json", *args, cwd=repo)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    document = json.loads(lines[0])
    assert isinstance(document, dict)
    return document, result.stderr


def test_a_conflict_is_printed_as_data_with_its_holder(repo: Path, manager: LockManager) -> None:
    before = time.time()
    held = run_versatil("lock", "--agent", "Dana", "--ttl", "600", "src/a.py", cwd=repo)
    assert held.returncode == 0, held
    lease = manager.sweep().locks[0]

    document, stderr = refusal(repo, "--agent", "Marcus", "--wait", "0", "src/a.py")

    assert document["error"] == "LockConflict"
    assert document["holders"] == [{"agent": "Dana", "lease": lease.id, "queued": False}]
    assert document["resource"] == "src/a.py"
    since, until = document["since"], document["until"]
    assert isinstance(since, float) and before - 1 <= since <= time.time()
    # A shell lease: until it expires (computed on the boot clock, so not to the bit).
    assert isinstance(until, float) and abs(until - lease.expires_at) < 1
    # The same sentence as without --json, on stderr.
    assert document["message"] in stderr and "Dana" in stderr
    assert len(stderr.splitlines()) == 1
    # Nothing changed: Dana still holds it, Marcus holds nothing.
    assert [g.agent for g in manager.sweep().locks] == ["Dana"]


def test_a_deadlock_is_printed_as_data_with_its_cycle(
    repo: Path, manager: LockManager, spawn: Spawner
) -> None:
    for agent, resource in (("alice", "r:1"), ("bob", "r:2")):
        taken = run_versatil("lock", "--agent", agent, resource, cwd=repo)
        assert taken.returncode == 0, taken
    # bob waits for alice's r:1 (a real `versatil lock` process, queued in the table) ...
    spawn.popen(versatil_argv("lock", "--agent", "bob", "--wait", "60", "r:1"), cwd=repo,
                stdin=False)
    wait_for(lambda: [w.agent for w in manager.sweep().waiters] == ["bob"],
             message="bob's request in the queue")

    # ... so alice waiting for bob's r:2 would close the cycle: refused at once.
    document, stderr = refusal(repo, "--agent", "alice", "--wait", "60", "r:2")

    assert document["error"] == "Deadlock"
    assert document["cycle"] == ["alice", "bob", "alice"]
    assert "alice -> bob -> alice" in document["message"] and document["message"] in stderr
    assert "alice" not in {w.agent for w in manager.sweep().waiters}


def test_without_json_a_refusal_prints_nothing_on_stdout(repo: Path) -> None:
    held = run_versatil("lock", "--agent", "Dana", "src/a.py", cwd=repo)
    assert held.returncode == 0, held
    result = run_versatil("lock", "--agent", "Marcus", "--wait", "0", "src/a.py", cwd=repo)
    assert (result.returncode, result.stdout) == (1, "")
    assert "Dana" in result.stderr and len(result.stderr.splitlines()) == 1
