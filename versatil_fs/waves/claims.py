"""Each task's claims, resolved once for a run, and the tasks of earlier waves they conflict with.

The executor resolves the claims before anything runs (a bad resource is a usage error naming
the plan's line, not a failed task), and the lock manager, the resolver and the baselines all
work from the same ones.
"""

from __future__ import annotations

from versatil_fs.config import Config
from versatil_fs.errors import UsageError
from versatil_fs.locks.table import Claim
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir
from versatil_fs.waves.plan import Plan
from versatil_fs.waves.resolve import ConflictIndex, Schedule

__all__ = ["conflict_predecessors", "resolve_claims"]


def resolve_claims(
    plan: Plan, repo: Repository, state: StateDir, config: Config
) -> dict[str, list[Claim]]:
    """Each task's claims, as the lock manager reads its ``writes`` and ``reads`` (checked once,
    before anything runs: a bad resource names the plan's line)."""
    from versatil_fs.locks.manager import LockManager

    manager = LockManager(repo, state=state, config=config)
    claims: dict[str, list[Claim]] = {}
    try:
        for task in plan.tasks:
            if not task.writes and not task.reads:
                claims[task.id] = []
                continue
            try:
                claims[task.id] = manager.claims(task.writes, task.reads)
            except UsageError as exc:
                line = plan.lines.get(task.id)
                where = f"{plan.path}:{line}: " if plan.path and line else ""
                raise UsageError(f"{where}task {task.id!r}: {exc}") from None
    finally:
        manager.close()
    return claims

def conflict_predecessors(
    schedule: Schedule, claims: dict[str, list[Claim]]
) -> dict[str, set[str]]:
    """For each task, the tasks of earlier waves whose claims conflict with its own."""
    index: ConflictIndex[str] = ConflictIndex()
    after: dict[str, set[str]] = {}
    for wave in schedule.waves:
        for task_id in wave.tasks:
            after[task_id] = index.conflicting(claims[task_id])
        for task_id in wave.tasks:
            index.add(task_id, claims[task_id])
    return after
