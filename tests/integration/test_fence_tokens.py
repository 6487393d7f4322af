"""Fencing tokens: every grant's is greater than every earlier one's, a table rebuild included.

A lease can end while its holder runs on (an expired shell lease, a forced release); only a
token that never goes back lets whatever the lock guarded refuse the superseded holder.
"""

from __future__ import annotations

import json
from pathlib import Path

from integration.helpers import Spawner, lock_agent, run_versatil

from versatil_fs import LockManager, events
from versatil_fs.locks.store import FENCE_BLOCK
from versatil_fs.state import StateDir

FILES = {"src/a.py": "a\n", "src/b.py": "b\n", "docs/x.md": "x\n"}


def test_tokens_increase_across_grants_releases_and_processes(
    manager: LockManager, repo: Path, spawn: Spawner
) -> None:
    seen = []
    for _ in range(3):
        with manager.hold(["src/a.py"], agent="James") as lease:
            seen.append(lease.fence)
    other = lock_agent(spawn, repo)
    other.acquire(["src/b.py"], agent="Marcus")
    theirs = max(g.fence for g in manager.sweep().locks)
    with manager.hold(["docs/"], agent="James") as lease:
        seen.extend([theirs, lease.fence])
    assert seen == sorted(set(seen)) and seen[0] >= 1


def test_a_rebuilt_table_never_hands_out_a_token_again(manager: LockManager) -> None:
    state = StateDir()
    with manager.hold(["src/a.py"], agent="James") as lease:
        before = lease.fence
    # The table is lost (deleted, or damaged and set aside): the rebuild knows no grant at all.
    state.lock_table.unlink()
    with manager.hold(["src/a.py"], agent="Marcus") as lease:
        assert lease.fence > before
    state.lock_table.write_text("{not json")
    with manager.hold(["src/a.py"], agent="Marcus") as lease:
        assert lease.fence > before


def test_a_table_set_back_by_hand_does_not_lower_the_counter(manager: LockManager) -> None:
    state = StateDir()
    with manager.hold(["src/a.py"], agent="James") as lease:
        before = lease.fence
    for _ in range(FENCE_BLOCK + 2):  # past one reserved block, so the ceiling file moved on
        manager.acquire(["src/b.py"], agent="James").release()
    document = json.loads(state.lock_table.read_text())
    top = document["fence"]
    document["fence"] = 0
    state.lock_table.write_text(json.dumps(document))
    with manager.hold(["src/a.py"], agent="Marcus") as lease:
        assert lease.fence > top > before


def test_every_lock_event_names_its_token(manager: LockManager) -> None:
    with manager.hold(["src/a.py"], agent="James") as lease:
        fence = lease.fence
    logged = [e for e in events.read("locks") if e.data.get("lease") == lease.id]
    assert {e.kind for e in logged} >= {"grant", "release"}
    assert all(e.data["fence"] == fence for e in logged)


def test_a_ceiling_past_what_a_token_may_be_is_damage_not_a_token(repo: Path) -> None:
    """run/fence edited to a number the table cannot hold: taken at its word, the next token
    would make the table unreadable to the next process, and its rebuild would lose a shell
    lease and hand out small tokens again. Each lock here is a process of its own."""
    state = StateDir()

    def lock(path: str) -> int:
        done = run_versatil("lock", "--agent", "James", "--json", path, cwd=repo)
        assert done.returncode == 0, done.stderr
        return int(json.loads(done.stdout)["fence"])

    fences = [lock("src/a.py")]
    state.fence_file.write_text("9999999999999999\n")
    fences += [lock("src/b.py"), lock("docs/x.md")]
    assert fences == sorted(set(fences))
    assert list(state.logs.glob("resource-locks.json.corrupt-*")) == []
    held = {str(c.resource) for g in LockManager(repo=repo).sweep().locks for c in g.claims}
    assert held == {"src/a.py", "src/b.py", "docs/x.md"}
