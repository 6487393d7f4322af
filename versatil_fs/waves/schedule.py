"""The pure scheduling rule: which tasks are ready (:func:`ready_tasks`), which of them start
now (:func:`to_start`: highest :func:`ranks` first, while the window of waves in flight
:func:`admits` them) and which are skipped because of a failure (:func:`skips`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from versatil_fs.waves.plan import Task
from versatil_fs.waves.records import TERMINAL, RunState
from versatil_fs.waves.resolve import Schedule

__all__ = [
    "admits",
    "ranks",
    "ready_tasks",
    "skips",
    "to_start",
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


def ready_tasks(
    tasks: Sequence[Task], run: RunState, after: Mapping[str, set[str]]
) -> list[Task]:
    """The pending tasks that may start, in plan order: everything they need has succeeded and
    every conflicting task of an earlier wave (``after``) has ended."""
    ready = []
    for task in tasks:
        if run.tasks[task.id].status != "pending":
            continue
        if any(run.tasks[n].status != "succeeded" for n in task.needs):
            continue
        if any(run.tasks[p].status not in TERMINAL for p in after[task.id]):
            continue
        ready.append(task)
    return ready


def to_start(
    ready: Sequence[Task], rank: Mapping[str, tuple[int, float, int, int]],
    wave_of: Mapping[str, int], running: Iterable[int], *, slots: int, max_waves: int,
) -> list[Task]:
    """Which ready tasks start now, in order: highest rank first (:func:`ranks`), at most
    ``slots`` of them, none of a wave the window does not admit (:func:`admits`) beside the
    waves of the ``running`` tasks."""
    if slots <= 0 or not ready:
        return []
    chosen: list[Task] = []
    in_flight = waves_in_flight(running)
    for task in sorted(ready, key=lambda t: rank[t.id]):
        wave = wave_of[task.id]
        if not admits(in_flight, wave, max_waves):
            continue  # a later ready task of a wave already in flight may still start
        chosen.append(task)
        in_flight[wave] = in_flight.get(wave, 0) + 1
        if len(chosen) == slots:
            break
    return chosen


def skips(
    tasks: Sequence[Task], statuses: Mapping[str, str], failed_root: Mapping[str, str]
) -> list[tuple[str, str, str | None]]:
    """The pending tasks to skip because something they need failed or was skipped, as
    (task, reason, the failed task behind it); a skip can make the tasks that need it
    skippable in turn. ``failed_root`` holds the roots of earlier skips."""
    status = dict(statuses)
    roots = dict(failed_root)
    found: list[tuple[str, str, str | None]] = []
    changed = True
    while changed:
        changed = False
        for task in tasks:
            if status[task.id] != "pending":
                continue
            for need in task.needs:
                root: str | None
                if status[need] == "failed":
                    reason, root = f"needs {need}, which failed", need
                elif status[need] == "skipped":
                    root = roots.get(need)
                    behind = f" ({root} failed)" if root else ""
                    reason = f"needs {need}, which was skipped{behind}"
                else:
                    continue
                status[task.id] = "skipped"
                if root:
                    roots[task.id] = root
                found.append((task.id, reason, root))
                changed = True
                break
    return found
