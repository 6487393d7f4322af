"""Stopping a wave run part-way: Ctrl-C, SIGTERM (made to act as Ctrl-C), or a state that can
no longer be written.

Every running task's process group gets TERM, then KILL after the grace
(:func:`~versatil_fs.waves.tasks.terminate`, the one way a task is stopped); each worker then
rolls its task's files back under its locks and reports it interrupted, which leaves it pending
(being stopped is not an outcome). Tasks still queueing for their locks never started anything:
they are pending too. The run stays ``running`` on disk, so ``wave status`` calls it interrupted
once the executor is gone and ``wave resume`` goes on with it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from versatil_fs.waves.records import RunState
from versatil_fs.waves.running import Worker
from versatil_fs.waves.tasks import terminate

__all__ = ["STOP_DEADLINE", "leave_resumable", "restore_sigterm", "stop_on_sigterm",
           "stop_running"]

STOP_DEADLINE = 30.0  # seconds the workers have, after the KILL, to report their tasks stopped


def stop_on_sigterm() -> Any:
    """Make SIGTERM stop a run the way Ctrl-C does (tasks stopped, rolled back, resumable)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def stop_running(workers: Mapping[str, Worker], drain: Callable[[], None]) -> None:
    """Stop every running task's processes and wait until their workers have reported them.

    ``drain`` applies what the workers reported (dropping each from ``workers`` as it ends),
    waiting a moment for the first report; a second Ctrl-C meanwhile does not cut it short.
    """

    def running() -> list[int]:
        return [w.proc.pid for w in list(workers.values()) if w.proc is not None]

    def settled(deadline: float) -> bool:
        while workers and time.monotonic() < deadline:
            with contextlib.suppress(KeyboardInterrupt):
                drain()
        return not workers

    terminate(running, settled)
    deadline = time.monotonic() + STOP_DEADLINE
    while any(w.proc is not None for w in workers.values()) and time.monotonic() < deadline:
        with contextlib.suppress(KeyboardInterrupt):
            drain()


def leave_resumable(run: RunState, workers: Mapping[str, Worker], mutex: threading.Lock) -> None:
    """The run as ``resume`` will find it: its waiting tasks pending, itself still running."""
    with mutex:
        # Workers still queueing for locks never started anything: they are just pending.
        for task_id in list(workers):
            task_run = run.tasks[task_id]
            if task_run.status == "waiting":
                task_run.status = "pending"
        run.status = "running"  # resumable: `status` calls it interrupted once we are gone
        run.sessions[-1].ended = time.time()
