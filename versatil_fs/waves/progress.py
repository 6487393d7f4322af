"""The progress listener of a wave run (what the CLI and the demo draw).
"""

from __future__ import annotations

from versatil_fs.waves.records import (
    RunState,
    TaskRun,
)

__all__ = [
    "Progress",
    "wave_done",
]


# Progress ---------------------------------------------------------------------------------------
class Progress:
    """Told about every transition, from the executor's main thread only; the CLI draws it."""

    def event(self, run: RunState, kind: str, task: TaskRun | None, detail: str) -> None:
        """``kind``: run-start, resume, wave-start, wave-done, task-waiting, task-start,
        task-done, task-failed, task-skipped, task-interrupted, rollback, run-done,
        run-interrupted; ``note`` is free text from whoever drives the run (the demo).
        A wave-done's ``detail`` is :func:`wave_done`'s."""

    def tick(self, run: RunState) -> None:
        """Called a few times a second while tasks run."""

    def close(self) -> None:
        """The run is over (or interrupted); let go of the terminal."""


def wave_done(run: RunState, number: int) -> str:
    """What a finished wave came to: "wave 2 done" when every task of it succeeded, else
    "wave 3 done: 1 failed" or "wave 4 done: 1 skipped" (the tasks that did not succeed), so a
    wave with a failure never reads as a clean one."""
    found: dict[str, int] = {}
    for task_id in run.waves[number - 1]:
        status = run.tasks[task_id].status
        if status != "succeeded":
            found[status] = found.get(status, 0) + 1
    counts = [f"{found[s]} {s}" for s in ("failed", "skipped") if s in found]
    counts += [f"{n} {s}" for s, n in sorted(found.items()) if s not in ("failed", "skipped")]
    return f"wave {number} done" + (": " + ", ".join(counts) if counts else "")
