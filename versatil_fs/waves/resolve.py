"""The pure resolver: a plan's tasks -> waves, the critical path and the makespan's lower bound.

Conflict means exactly what it means to the lock manager (the resources overlap and one side
writes), except that two tasks of the same agent conflict too (see :mod:`versatil_fs.waves.plan`).
Nothing here touches the disk: claims are the tasks' paths normalised as text
(:func:`lexical_claims`) unless the executor hands in resolved ones.
"""

from __future__ import annotations

import functools
import heapq
import math
import posixpath
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

import msgspec

from versatil_fs.errors import PlanError
from versatil_fs.locks import globs
from versatil_fs.locks.table import Claim, Mode, Resource, ancestors
from versatil_fs.repo import parse_named

if TYPE_CHECKING:
    from versatil_fs.waves.plan import Task

SCHEMA_VERSION = 1  # of plans and of the resolver's output (`wave plan --json`)

__all__ = [
    "SCHEMA_VERSION",
    "ConflictIndex",
    "K",
    "Schedule",
    "Wave",
    "critical_path",
    "dependency_cycle",
    "lexical_claims",
    "lower_bound",
    "resolve",
    "wave_estimate",
]


def lexical_claims(task: Task, repo: str = "") -> list[Claim]:
    """The task's claims without touching the disk: paths normalised as text, not resolved.

    A resource both written and read is claimed for writing, as the lock manager does.
    """
    modes: dict[Resource, Mode] = {}
    for mode, specs in (("read", task.reads), ("write", task.writes)):
        for spec in specs:
            named = parse_named(spec)
            if named is not None:
                resource = Resource(name=f"{named[0]}:{named[1]}")
            else:
                path = posixpath.normpath(spec.strip())
                resource = Resource(repo=repo, path=path, glob=globs.is_glob(path))
            if modes.get(resource) != "write":
                modes[resource] = mode  # type: ignore[assignment]
    return [Claim(resource, mode) for resource, mode in sorted(modes.items())]


# Conflicts between many tasks -------------------------------------------------------------------
K = TypeVar("K", bound=Hashable)


class ConflictIndex(Generic[K]):
    """The claims of many tasks, answering "which of them conflict with these claims?".

    The answers are :func:`versatil_fs.locks.table.claims_conflict`'s (the property tests hold
    the two together); the work is O(depth of the path) per claim instead of O(tasks), because
    the resolver asks once per task over plans of a thousand tasks. Two paths overlap when one
    is an ancestor of (or equal to) the other, so a claim on ``a/b`` meets the entries stored at
    ``.``, ``a`` and ``a/b`` (its ancestors and itself) and the entries stored *below* ``a/b``.
    """

    def __init__(self) -> None:
        self._at: dict[tuple[str, str], list[tuple[K, bool]]] = {}  # (repo, path) -> holders
        self._below: dict[tuple[str, str], list[tuple[K, bool]]] = {}  # (repo, ancestor) -> ...
        self._names: dict[str, list[tuple[K, bool]]] = {}
        # Glob claims (issue 16) are few and checked pairwise, exactly, as the lock table
        # does; a glob asked about is checked against every path claim.
        self._globs: list[tuple[K, Claim]] = []
        self._paths: list[tuple[K, Claim]] = []

    def add(self, key: K, claims: Iterable[Claim]) -> None:
        for claim in claims:
            entry = (key, claim.mode == "write")
            resource = claim.resource
            if resource.name:
                self._names.setdefault(resource.name, []).append(entry)
                continue
            self._paths.append((key, claim))
            if resource.glob:
                self._globs.append((key, claim))
                continue
            repo = resource.repo
            self._at.setdefault((repo, resource.path), []).append(entry)
            for ancestor in _spots(resource.path)[1:]:  # its proper ancestors
                self._below.setdefault((repo, ancestor), []).append(entry)

    def conflicting(self, claims: Iterable[Claim]) -> set[K]:
        found: set[K] = set()
        for claim, entries in self._candidates(claims):
            write = claim.mode == "write"
            found.update(key for key, theirs in entries if write or theirs)
        return found

    def any_conflict(self, claims: Iterable[Claim]) -> bool:
        for claim, entries in self._candidates(claims):
            write = claim.mode == "write"
            if any(write or theirs for _, theirs in entries):
                return True
        return False

    def _candidates(self, claims: Iterable[Claim]) -> Iterator[tuple[Claim, list[tuple[K, bool]]]]:
        for claim in claims:
            resource = claim.resource
            if resource.name:
                entries = self._names.get(resource.name)
                if entries:
                    yield claim, entries
                continue
            if resource.glob:
                entries = [(key, c.mode == "write") for key, c in self._paths
                           if c.resource.overlaps(resource)]
                if entries:
                    yield claim, entries
                continue
            if self._globs:
                entries = [(key, c.mode == "write") for key, c in self._globs
                           if c.resource.overlaps(resource)]
                if entries:
                    yield claim, entries
            repo, path = resource.repo, resource.path
            for spot in _spots(path):
                entries = self._at.get((repo, spot))
                if entries:
                    yield claim, entries
            entries = self._below.get((repo, path))
            if entries:
                yield claim, entries


@functools.lru_cache(maxsize=65536)
def _spots(path: str) -> tuple[str, ...]:
    """Where entries overlapping ``path`` are stored: itself, then every ancestor up to ``.``.

    The lock manager's own :func:`~versatil_fs.locks.table.ancestors`, so that the resolver and
    the lock table cannot disagree on what covers a path; cached because the resolver asks for
    the same directories once per task over plans of a thousand tasks.
    """
    return tuple(ancestors(path))


# The resolver -----------------------------------------------------------------------------------
class Wave(msgspec.Struct, kw_only=True):
    number: int  # from 1
    tasks: list[str]
    estimate: float  # its tasks' estimates run on the plan's agents (see wave_estimate)


class Schedule(msgspec.Struct, kw_only=True):
    """What the resolver decided; the schema of ``versatil wave plan --json``."""

    version: int = SCHEMA_VERSION
    waves: list[Wave]
    wave_of: dict[str, int]
    critical_path: list[str]
    critical_path_estimate: float
    total_estimate: float
    agents: int
    lower_bound: float  # max(critical path, total work / agents), from the estimates
    unestimated: list[str] = []  # tasks without an estimate (counted as 0)

    @property
    def barrier_estimate(self) -> float:
        """The makespan if every wave waited for the previous one to finish entirely."""
        return sum(w.estimate for w in self.waves)


def dependency_cycle(tasks: Sequence[Task]) -> list[str] | None:
    """A dependency cycle as ``[a, b, ..., a]`` (each needs the next), or None.

    Iterative, so a chain of thousands of tasks cannot exhaust Python's recursion limit.
    """
    needs = {t.id: [n for n in t.needs] for t in tasks}
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for root in needs:
        if state.get(root):
            continue
        path: list[str] = [root]
        state[root] = 1
        stack: list[Iterator[str]] = [iter(needs[root])]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                state[path.pop()] = 2
                continue
            if nxt not in needs:
                continue  # an unknown id is reported by the loader, not here
            seen = state.get(nxt)
            if seen == 1:
                return [*path[path.index(nxt):], nxt]
            if seen is None:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(needs[nxt]))
    return None


def resolve(
    tasks: Sequence[Task],
    *,
    claims: Mapping[str, Sequence[Claim]] | None = None,
    agents: int = 5,
) -> Schedule:
    """Order ``tasks`` into waves; see the module docstring for the rules.

    ``claims`` gives each task's resolved claims (the executor passes what the lock manager
    resolved, symlinks and all); without it they are worked out from the text of the plan.
    Tasks are placed in dependency order; among the tasks of one depth, higher ``priority``
    first, then plan order. Each goes to the first wave after everything it needs in which
    nothing conflicts with it, so a conflict pushes a task back as little as possible.
    """
    if agents < 1:
        raise PlanError(f"at least one agent is needed to run a plan, not {agents}.")
    by_id: dict[str, Task] = {}
    for task in tasks:
        if task.id in by_id:
            raise PlanError(f"the task id {task.id!r} is used twice.")
        by_id[task.id] = task
    for task in tasks:
        for need in task.needs:
            if need not in by_id:
                raise PlanError(f"task {task.id!r} needs {need!r}, which is not in the plan.")
    order = _topological(tasks, by_id)
    depth: dict[str, int] = {}
    for task_id in order:
        depth[task_id] = 1 + max((depth[n] for n in by_id[task_id].needs), default=0)
    position = {t.id: i for i, t in enumerate(tasks)}
    placing = sorted(order, key=lambda t: (depth[t], -by_id[t].priority, position[t]))

    claims_of = {
        t.id: list(claims[t.id]) if claims is not None else lexical_claims(t) for t in tasks
    }
    wave_of = _place(placing, by_id, claims_of)

    count = max(wave_of.values(), default=0)
    members: list[list[str]] = [[] for _ in range(count)]
    for task_id in placing:
        members[wave_of[task_id] - 1].append(task_id)
    estimate = {t.id: t.estimate or 0.0 for t in tasks}
    waves = [
        Wave(number=i + 1, tasks=ids, estimate=wave_estimate([estimate[t] for t in ids], agents))
        for i, ids in enumerate(members)
    ]
    path, length = critical_path(tasks, estimate, order)
    total = math.fsum(estimate.values())
    return Schedule(
        waves=waves, wave_of=wave_of, critical_path=path, critical_path_estimate=length,
        total_estimate=total, agents=agents, lower_bound=lower_bound(length, total, agents),
        unestimated=[t.id for t in tasks if t.estimate is None],
    )


def wave_estimate(estimates: Sequence[float], agents: int) -> float:
    """How long a wave's tasks take on ``agents`` slots: the longest first, each onto the slot
    free soonest (the executor takes ready tasks as slots free up).

    The longest task alone is the answer only when the wave has no more tasks than agents:
    7 tasks of 3 s on 5 agents are two rounds, 6 s, not 3 s.
    """
    slots = [0.0] * max(1, min(agents, len(estimates)))
    for seconds in sorted(estimates, reverse=True):
        heapq.heapreplace(slots, slots[0] + seconds)
    return max(slots)


def _place(
    placing: Sequence[str], by_id: Mapping[str, Task], claims_of: Mapping[str, Sequence[Claim]]
) -> dict[str, int]:
    """Each task's wave, in ``placing`` order: the first wave after everything it needs in
    which no task already placed conflicts with it."""
    index: ConflictIndex[str] = ConflictIndex()
    wave_of: dict[str, int] = {}
    for task_id in placing:
        wave = 1 + max((wave_of[n] for n in by_id[task_id].needs), default=0)
        taken = {wave_of[other] for other in index.conflicting(claims_of[task_id])}
        while wave in taken:
            wave += 1
        wave_of[task_id] = wave
        index.add(task_id, claims_of[task_id])
    return wave_of


def lower_bound(critical: float, total: float, agents: int) -> float:
    """No schedule on ``agents`` slots can finish sooner: the longest chain must run end to end,
    and all the work must fit through the slots."""
    return max(critical, total / agents)


def critical_path(
    tasks: Sequence[Task], duration: Mapping[str, float], order: Sequence[str] | None = None
) -> tuple[list[str], float]:
    """The chain of needs with the largest total ``duration``, and that total."""
    by_id = {t.id: t for t in tasks}
    order = order if order is not None else _topological(tasks, by_id)
    finish: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for task_id in order:
        before = max(by_id[task_id].needs, key=lambda n: finish[n], default=None)
        finish[task_id] = duration.get(task_id, 0.0) + (finish[before] if before else 0.0)
        via[task_id] = before
    if not finish:
        return [], 0.0
    end: str | None = max(order, key=lambda t: finish[t])
    length = finish[end] if end else 0.0
    path: list[str] = []
    while end is not None:
        path.append(end)
        end = via[end]
    return path[::-1], length


def _topological(tasks: Sequence[Task], by_id: Mapping[str, Task]) -> list[str]:
    """Kahn's algorithm in plan order; a cycle raises :class:`PlanError` naming it."""
    pending = {t.id: len(set(t.needs)) for t in tasks}
    dependents: dict[str, list[str]] = {}
    for task in tasks:
        for need in set(task.needs):
            dependents.setdefault(need, []).append(task.id)
    ready = [t.id for t in tasks if pending[t.id] == 0]
    order: list[str] = []
    while ready:
        task_id = ready.pop()
        order.append(task_id)
        for dependent in dependents.get(task_id, ()):
            pending[dependent] -= 1
            if pending[dependent] == 0:
                ready.append(dependent)
    if len(order) != len(tasks):
        cycle = dependency_cycle(tasks) or sorted(t for t, n in pending.items() if n)
        raise PlanError(f"dependency cycle: {' -> '.join(cycle)}; remove one of these needs.")
    return order
