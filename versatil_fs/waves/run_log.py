"""A wave run's lines in the ``waves`` event log, and what happens when they cannot be written.

The run's state (:mod:`versatil_fs.waves.journal`) is the truth; the event log is a record of
it for ``versatil logs``. So an event that cannot be written (a full disk, often filled by a
task itself) is said once on stderr and the run goes on: failing there failed the task whose
start or end was being logged, or stopped the run in the middle of a failed task's rollback.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from versatil_fs import events
from versatil_fs.errors import StateError
from versatil_fs.state import StateDir
from versatil_fs.waves.records import STREAM, RunState, TaskRun

__all__ = ["RunLog"]


class RunLog:
    """Emits a run's events (``run`` gives the run once it has started or resumed)."""

    def __init__(self, state: StateDir, run: Callable[[], RunState]) -> None:
        self.state = state
        self.run = run
        self._guard = threading.Lock()  # several worker threads may meet a full disk at once
        self._lost = False  # said once on stderr

    def emit(self, kind: str, task: TaskRun | None, **data: Any) -> None:
        run = self.run()
        if task is not None:
            data = {"task": task.id, "wave": task.wave, **data}
        try:
            events.emit(STREAM, kind, agent=task.agent if task else None, repo=run.repo_key,
                        state=self.state, run=run.id, **data)
        except StateError as exc:
            with self._guard:
                told, self._lost = self._lost, True
            if not told:
                cause = exc.__cause__
                detail = cause.strerror if isinstance(cause, OSError) and cause.strerror else exc
                print(
                    f"versatil: the run goes on, but its events could not be written to "
                    f"{self.state.event_log(STREAM)} ({detail}); its state still records it.",
                    file=sys.stderr, flush=True,
                )
