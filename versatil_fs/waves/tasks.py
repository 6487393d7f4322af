"""The processes a task leaves: found by the marker every descendant inherits, killed, and
SIGTERM turned into an interrupt for the executor's main thread.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "TASK_ENV",
    "TERM_GRACE",
    "kill_leftovers",
    "leftover_processes",
    "restore_sigterm",
    "signal_group",
    "stop_on_sigterm",
    "terminate",
]


TASK_ENV = "VERSATIL_WAVE_TASK"  # run-id/task-id, inherited by everything a task starts
TERM_GRACE = 3.0  # seconds between SIGTERM and SIGKILL for a task that is stopped


# Processes a task left ------------------------------------------------------------------------
def leftover_processes(run_id: str, task_id: str | None = None) -> list[int]:
    """PIDs of processes started for this run (or one of its tasks) that are still alive."""
    wanted = f"{TASK_ENV}={run_id}/".encode()
    exact = f"{TASK_ENV}={run_id}/{task_id}".encode() if task_id else None
    found = []
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue  # gone, a zombie, or not ours
        for item in environ:
            if item.startswith(wanted) and (exact is None or item == exact):
                found.append(int(entry.name))
                break
    return found


def kill_leftovers(run_id: str, task_id: str | None = None, timeout: float = 10.0) -> list[int]:
    """SIGKILL what is left of a task (or a whole run) and wait until it is gone."""
    pids = leftover_processes(run_id, task_id)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and leftover_processes(run_id, task_id):
        time.sleep(0.01)  # the kernel tears the processes down asynchronously
    return pids




def terminate(
    groups: Callable[[], Sequence[int]], settled: Callable[[float], bool],
    grace: float = TERM_GRACE,
) -> bool:
    """TERM, then KILL after ``grace``: the one way a task (or every running task) is stopped.

    ``groups`` names the process groups still to stop (asked again before the KILL: one that
    ended meanwhile is not signalled, its pgid may be reused); ``settled(deadline)`` waits
    until they have all ended or the monotonic ``deadline`` passes, and says whether they did.
    Returns whether they all ended within the grace (no KILL was sent).
    """
    for pgid in groups():
        signal_group(pgid, signal.SIGTERM)
    if settled(time.monotonic() + grace):
        return True
    for pgid in groups():
        signal_group(pgid, signal.SIGKILL)
    return False


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


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
