"""Linearizability of lock grants: many processes, overlapping read and write locks, priorities.

Each child (see :mod:`reliability.workload`) logs when it asked, was granted and released, with
``time.monotonic_ns()`` (one clock for all processes on Linux), touches a witness while it holds,
and logs every lock table it commits from inside the table transaction. Merged, the logs give
two independent histories of one run, and the checker proves over them:

* **no overlap**: no two conflicting holds of different agents overlapped, neither in time as
  the holders saw it, nor at the witness, nor in any committed table;
* **no queue jump**: every grant was made while no conflicting request that was ahead of it in
  the queue (higher priority, then earlier arrival) went on waiting — except a request that the
  granted agent's own locks blocked, which could not have been granted first anyway (the rule
  that keeps an agent from deadlocking with itself);
* **no lost wake-up**: every request that had nothing alive in its way was granted, and within a
  generous bound (a liveness check: a missed wake-up waits out its whole wait budget);
* the two histories agree: every lease a child was granted was committed to the table before
  ``acquire`` returned and removed after ``release`` was called.

The checker's own tests come first: it must catch the violations it looks for.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import pytest
from integration.helpers import Spawner, make_git_repo
from reliability.support import Tally
from reliability.workload import (
    FILES,
    Death,
    Holder,
    Request,
    State,
    Workers,
    claims_conflict,
    conflicting_grants,
    handoffs,
    overlapping_holds,
    queue_jumps,
)

# A waiter free to go must be granted well within this (liveness, not speed: a missed wake-up
# sleeps for its whole 120 s wait budget).
HANDOFF_LIMIT = 10.0


# The checker catches what it is looking for ------------------------------------------------------
def _h(name: str, *claims: tuple[str, str], prio: int = 0, seq: int = 0, pid: int = 1) -> Holder:
    return Holder(f"id-{name}", name, pid, prio, seq, tuple(claims))


W, R = "write", "read"


def test_the_conflict_rule_is_the_specifications() -> None:
    assert claims_conflict([("src", W)], [("src/x.py", R)])
    assert claims_conflict([("src/x.py", W)], [("src", R)])
    assert not claims_conflict([("src", R)], [("src/x.py", R)])
    assert not claims_conflict([("src/x.py", W)], [("src/y.py", W)])
    assert not claims_conflict([("src", W)], [("srcs/x.py", W)])
    assert claims_conflict([("db:a", W)], [("db:a", R)])
    assert not claims_conflict([("db:a", W)], [("db:b", W)])


def test_the_checker_sees_a_queue_jump_and_excuses_only_a_self_deadlock() -> None:
    first = _h("First", ("db:a", W), seq=1)
    later = _h("Later", ("db:a", W), seq=2)
    vip = _h("Vip", ("db:a", W), prio=5, seq=3)
    holder = _h("Holder", ("db:a", W))
    jumped = [State(1, 1, 2, [holder], [first, later]), State(2, 1, 2, [later], [first])]
    assert len(queue_jumps(jumped)) == 1
    in_order = [State(1, 1, 2, [holder], [first, later]), State(2, 1, 2, [first], [later])]
    assert queue_jumps(in_order) == []
    by_priority = [State(1, 1, 3, [holder], [first, vip]), State(2, 1, 3, [vip], [first])]
    assert queue_jumps(by_priority) == []
    newcomer = _h("Newcomer", ("db:a", W))  # granted on its first look, never queued
    barged = [State(1, 1, 1, [], [first]), State(2, 1, 1, [newcomer], [first])]
    assert len(queue_jumps(barged)) == 1
    # `First` waits for db:b, which `Later` holds: `Later` may take db:a before it.
    first_b = _h("First", ("db:a", W), ("db:b", W), seq=1)
    later_b = _h("Later", ("db:b", W))
    excused = [State(1, 1, 2, [later_b], [first_b]),
               State(2, 1, 2, [later_b, _h("Later", ("db:a", W))], [first_b])]
    assert queue_jumps(excused) == []
    readers = [State(1, 1, 2, [_h("R1", ("src", R))], [_h("R2", ("src/x.py", R), seq=1)])]
    assert queue_jumps(readers) == []


def test_the_checker_sees_overlapping_holds_and_a_witness() -> None:
    a = Request("A", 1, 1, [("src", W)], 0, asked=0, granted=10, released=20)
    b = Request("B", 2, 1, [("src/x.py", R)], 0, asked=0, granted=15, released=30)
    c = Request("C", 3, 1, [("src/x.py", R)], 0, asked=0, granted=21, released=40)
    assert len(overlapping_holds([a, b], {})) == 1
    assert overlapping_holds([a, c], {}) == []
    assert overlapping_holds([b, c], {}) == []  # two readers
    killed = Request("K", 4, 1, [("db:a", W)], 0, asked=0, granted=10)
    after = Request("N", 5, 1, [("db:a", W)], 0, asked=0, granted=60, released=70,
                    sightings=[(61, "4-1-0w")])
    assert overlapping_holds([killed, after], {4: Death(4, killed=50, reaped=55)}) == []
    assert len(overlapping_holds([killed, after], {4: Death(4, killed=65, reaped=66)})) == 2
    grants = [State(1, 1, 0, [_h("A", ("src", W)), _h("B", ("src/x.py", R))], [])]
    assert len(conflicting_grants(grants)) == 1


def test_the_checker_measures_hand_offs_and_charges_dead_holders() -> None:
    holder = _h("Holder", ("db:a", W), pid=7)
    waiter = _h("Waiter", ("db:a", W), seq=1, pid=8)
    states = [
        State(100, 7, 1, [holder], [waiter]),
        State(3_000_000_000, 8, 1, [_h("Waiter", ("db:a", W), pid=8)], []),
    ]
    (gap,) = handoffs(states, {7: Death(7, killed=1_000, reaped=2_000)})
    assert gap.dead_in_the_way and gap.ready == 1_000
    assert gap.seconds == pytest.approx(3.0, abs=0.01)
    released = [states[0], State(200, 7, 1, [], [waiter]), State(300, 8, 1, [], [])]
    (gap,) = handoffs(released, {})
    assert not gap.dead_in_the_way and gap.ended - gap.ready == 100


# The real thing ---------------------------------------------------------------------------------
@dataclass
class History:
    workers: int
    rounds: int
    requests: list[Request]
    states: list[State]


SIZES = [
    pytest.param((6, 25), id="6x25"),
    pytest.param((12, 120), id="12x120", marks=pytest.mark.slow),
]


@pytest.fixture(scope="module", params=SIZES)
def history(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> History:
    """One run of the workload (``workers`` × ``rounds``), shared by the checks below.

    Module-scoped so the run happens once; it sets up its own isolated environment, as the
    per-test autouse fixture would, for as long as the children run.
    """
    workers, rounds = request.param
    base = tmp_path_factory.mktemp("linearizability")
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith(("VERSATIL_", "GIT_")):
                env.delenv(name)
        (base / "home").mkdir()
        env.setenv("HOME", str(base / "home"))
        env.setenv("VERSATIL_HOME", str(base / "versatil-home"))
        env.setenv("GIT_CONFIG_NOSYSTEM", "1")
        env.setenv("GIT_CONFIG_GLOBAL", str(base / "home" / ".gitconfig"))
        for role in ("AUTHOR", "COMMITTER"):
            env.setenv(f"GIT_{role}_NAME", "Versatil Test")
            env.setenv(f"GIT_{role}_EMAIL", "test@versatil.invalid")
        repo = make_git_repo(base / "repo", FILES)
        spawner = Spawner()
        try:
            pool = Workers(spawner, repo, base / "workload")
            for i in range(workers):
                # Three priority levels, unevenly spread; write-heavy so most requests queue.
                pool.start(f"agent-{i}", seed=1000 + i, rounds=rounds, write_share=0.6,
                           priorities=[0, 0, 1, 2] if i % 2 else [0], hold_ms=[0.0, 6.0])
            for child in pool.children.values():
                assert "ready" in child.read_json(), child.stderr
            pool.start_line.go()
            for child in pool.children.values():
                assert child.wait(timeout=600) == 0, child.stderr
        finally:
            spawner.close()
        return History(workers, rounds, pool.requests(), pool.states())


def test_every_request_is_granted(history: History) -> None:
    assert len(history.requests) == history.workers * history.rounds
    errors = [f"{r.agent} #{r.n}: {r.error}" for r in history.requests
              if r.error or r.granted is None]
    assert errors == []


def test_no_two_conflicting_holds_overlap(history: History, tally: Tally) -> None:
    overlaps = overlapping_holds(history.requests, {}) + conflicting_grants(history.states)
    tally.overlaps += len(overlaps)
    assert overlaps == []


def test_no_request_is_granted_past_a_conflicting_request_ahead_of_it(
    history: History, tally: Tally
) -> None:
    jumps = queue_jumps(history.states)
    tally.queue_jumps += len(jumps)
    assert jumps == [], f"{len(jumps)} grants out of queue order, e.g. {jumps[:3]}"


def test_a_request_free_to_go_is_granted(history: History, tally: Tally) -> None:
    gaps = handoffs(history.states, {})
    slow = [h for h in gaps if h.seconds > HANDOFF_LIMIT]
    tally.locks_stuck += len(slow)
    assert slow == []


def test_the_holders_and_the_table_tell_one_story(history: History) -> None:
    """Each lease was in a committed table from before ``acquire`` returned until after
    ``release`` was called, and the run was a real contest (requests queued)."""
    states, requests = history.states, history.requests
    assert [s.seq for s in states] == sorted(s.seq for s in states)
    spans: dict[str, tuple[int, int]] = {}
    for state in states:
        for grant in state.grants:
            first, _ = spans.get(grant.id, (state.t, state.t))
            spans[grant.id] = (first, state.t)
    gone_at: dict[str, int] = {}
    for before, after in itertools.pairwise(states):
        kept = {g.id for g in after.grants}
        for grant in before.grants:
            if grant.id not in kept:
                gone_at.setdefault(grant.id, after.t)
    for req in requests:
        assert req.lease in spans, f"{req.agent} #{req.n} was never in a committed table"
        first, last = spans[req.lease]
        assert req.granted is not None and first <= req.granted
        assert req.released is not None and gone_at[req.lease] >= req.released
        assert last < gone_at[req.lease]
    queued = {w.id for s in states for w in s.waiters}
    assert len(queued & set(spans)) >= history.rounds, "too little contention to prove anything"
