"""The progress listener of a wave run (what the CLI and the demo draw).
"""

from __future__ import annotations

from versatil_fs.waves.records import (
    RunState,
    TaskRun,
)

__all__ = [
    "Progress",
]


# Progress ---------------------------------------------------------------------------------------
class Progress:
    """Told about every transition, from the executor's main thread only; the CLI draws it."""

    def event(self, run: RunState, kind: str, task: TaskRun | None, detail: str) -> None:
        """``kind``: run-start, resume, wave-start, wave-done, task-waiting, task-start,
        task-done, task-failed, task-skipped, task-interrupted, rollback, run-done,
        run-interrupted; ``note`` is free text from whoever drives the run (the demo)."""

    def tick(self, run: RunState) -> None:
        """Called a few times a second while tasks run."""

    def close(self) -> None:
        """The run is over (or interrupted); let go of the terminal."""
