"""The pure scheduling rule: which ready task starts first (:func:`ranks`) and whether one more
wave may be in flight (:func:`waves_in_flight`, :func:`admits`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from versatil_fs.waves.plan import Task
from versatil_fs.waves.resolve import Schedule

__all__ = [
    "admits",
    "ranks",
    "waves_in_flight",
]


# The waves-in-flight window ----------------------------------------------------------------------
def ranks(tasks: Sequence[Task], schedule: Schedule) -> dict[str, tuple[int, float, int, int]]:
    """The order ready tasks start in, as sort keys: highest priority first, then the longest
    estimated chain from the task to the end of the plan (the classic list-scheduling rule that
    keeps the makespan near its lower bound), then the most tasks on it, then plan order."""
    dependents: dict[str, list[str]] = {t.id: [] for t in tasks}
    for task in tasks:
        for need in task.needs:
            dependents[need].append(task.id)
    by_id = {t.id: t for t in tasks}
    ahead: dict[str, tuple[float, int]] = {}
    for wave in reversed(schedule.waves):  # dependents come in later waves
        for task_id in wave.tasks:
            after = max((ahead[d] for d in dependents[task_id]), default=(0.0, 0))
            ahead[task_id] = (after[0] + (by_id[task_id].estimate or 0.0), after[1] + 1)
    order = {t.id: i for i, t in enumerate(tasks)}
    return {
        t: (-by_id[t].priority, -length, -count, order[t]) for t, (length, count) in ahead.items()
    }


def waves_in_flight(waves: Iterable[int]) -> dict[int, int]:
    """Wave -> how many of its tasks are in flight, from the waves of the tasks in flight."""
    return Counter(waves)


def admits(in_flight: Mapping[int, int], wave: int, max_waves: int) -> bool:
    """Whether a ready task of ``wave`` may start with ``in_flight`` (wave -> tasks) running.

    A wave is in flight while one of its tasks is (its worker is making the wave's checkpoint,
    waiting for locks or running the command): a task may start if its wave is already in
    flight or fewer than ``max_waves`` are. See the module docstring for why.
    """
    return wave in in_flight or len(in_flight) < max_waves
