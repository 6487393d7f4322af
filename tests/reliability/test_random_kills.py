"""Random kills: a contending workload where a random holder is killed at a random moment.

Four children (see :mod:`reliability.workload`) take and release overlapping read and write
locks without pause; the test repeatedly picks a child (usually one the lock table lists as a
holder, sometimes any), kills it with SIGKILL wherever it is (holding, waiting, inside a table
transaction, half-way through writing the spare table), and starts a replacement. Then, over
the merged history of the whole run:

* **zero stuck locks**: every request that only a dead process's entries stood in the way of
  was granted within a second of the kill (and every other request free to go, within a
  generous bound); at the end every resource is free at once;
* **zero overlaps**: no two conflicting holds overlapped, as the holders saw them, at the
  witness, or in any committed table;
* the table and every state file parse.

``RUNS`` kills by default; the full 200 run under ``-m slow``.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from integration.helpers import Spawner, wait_for
from reliability.support import Tally, state_problems
from reliability.workload import (
    FILES,  # noqa: F401 (the repo fixture of tests/conftest.py commits the module's FILES)
    RESOURCES,
    Death,
    Workers,
    claims_conflict,
    conflicting_grants,
    handoffs,
    overlapping_holds,
)

from versatil_fs import LockManager
from versatil_fs.state import StateDir

STUCK_LIMIT = 1.0  # a dead holder's lock, beyond its death (the bound)
HANDOFF_LIMIT = 10.0  # any other free request (liveness: a missed wake-up waits 120 s)
POOL = 4


def _table(path: Path) -> dict[str, Any]:
    """The lock table, read without the table lock (it is always a complete document)."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _claims(entry: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["resource"].get("name") or c["resource"].get("path", ""), c["mode"])
            for c in entry["claims"]]


def _pick_victim(doc: dict[str, Any], live: dict[int, Any], rng: random.Random) -> int | None:
    """Usually a holder someone is waiting for, else any holder, sometimes anyone at all."""
    grants = [g for g in doc.get("locks", []) if g.get("pid") in live]
    blocking = [
        g["pid"] for g in grants
        if any(claims_conflict(_claims(g), _claims(w)) for w in doc.get("waiters", []))
    ]
    roll = rng.random()
    if blocking and roll < 0.6:
        return int(rng.choice(blocking))
    if grants and roll < 0.9:
        return int(rng.choice(grants)["pid"])
    return None


def _random_kills(spawn: Spawner, repo: Path, tmp_path: Path, tally: Tally, runs: int) -> None:
    rng = random.Random(20261125 + runs)
    pool = Workers(spawn, repo, tmp_path / "workload")
    table = StateDir().lock_table
    started = 0

    def start() -> None:
        nonlocal started
        started += 1
        child = pool.start(f"worker-{started}", seed=started, hold_ms=[0.0, 12.0],
                           write_share=0.5, priorities=[0, 0, 1])
        assert "ready" in child.read_json(), child.stderr

    for _ in range(POOL):
        start()
    pool.start_line.go()
    deaths: dict[int, Death] = {}
    holders_killed = 0
    for _ in range(runs):
        live = {c.pid: c for c in pool.children.values() if c.alive}
        # A random moment: after a random number of further grants, at a poll of the table
        # that shows one of the workers holding a lock.
        target = pool.grants() + rng.randint(1, 8)
        wait_for(lambda target=target: pool.grants() >= target, timeout=120,
                 interval=0.002, message="the workers to make progress")
        doc = wait_for(lambda: (d := _table(table)) and d.get("locks") and d, timeout=120,
                       interval=0.002, message="one of the workers to hold a lock")
        chosen = _pick_victim(doc, live, rng)
        holders_killed += chosen is not None
        victim = live[chosen] if chosen is not None else rng.choice(list(live.values()))
        killed = time.monotonic_ns()
        victim.kill9()
        deaths[victim.pid] = Death(victim.pid, killed, time.monotonic_ns())
        tally.faults_injected += 1
        start()

    pool.stop.touch()
    for child in pool.children.values():
        if child.pid not in deaths:
            assert child.wait(timeout=240) == 0, child.stderr

    requests, states = pool.requests(), pool.states()
    errors = [f"{r.agent} #{r.n}: {r.error}" for r in requests if r.error]
    assert errors == []
    overlaps = overlapping_holds(requests, deaths) + conflicting_grants(states)
    tally.overlaps += len(overlaps)
    assert overlaps == []

    gaps = handoffs(states, deaths)
    after_death = [g.seconds for g in gaps if g.dead_in_the_way]
    print(f"{runs} kills ({holders_killed} of holders), {len(requests)} requests, "
          f"{len(states)} tables; {len(after_death)} waiters freed by a death, slowest "
          f"{max(after_death, default=0) * 1000:.1f} ms; slowest other hand-off "
          f"{max((g.seconds for g in gaps if not g.dead_in_the_way), default=0) * 1000:.1f} ms")
    stuck = [
        f"{g.waiter} waited {g.seconds:.3f} s "
        + ("with only dead holders in its way" if g.dead_in_the_way else "free to go")
        for g in gaps
        if g.seconds > (STUCK_LIMIT if g.dead_in_the_way else HANDOFF_LIMIT)
    ]
    # Whatever the dead left in the table must not keep anything now that everyone has gone.
    manager = LockManager(repo=repo)
    try:
        manager.acquire(list(RESOURCES), agent="Checker", wait=0).release()
    except Exception as exc:  # counted, then reported by the assertion below
        stuck.append(f"at the end: {exc}")
    finally:
        manager.store.close()
    tally.locks_stuck += len(stuck)
    assert stuck == []
    assert tally.lost(state_problems(StateDir().root)) == []
    # The run proved something: holders were killed, and their waiters taken over.
    assert holders_killed > 0
    assert any(g.dead_in_the_way for g in gaps) or runs < 10


def test_random_kills_leave_no_stuck_lock_and_no_overlap(
    spawn: Spawner, repo: Path, tmp_path: Path, tally: Tally
) -> None:
    _random_kills(spawn, repo, tmp_path, tally, runs=30)


@pytest.mark.slow
def test_two_hundred_random_kills(
    spawn: Spawner, repo: Path, tmp_path: Path, tally: Tally
) -> None:
    _random_kills(spawn, repo, tmp_path, tally, runs=200)
