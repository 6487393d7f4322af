"""A task's processes: its environment and start, its wait (TERM, grace, KILL on a timeout),
its exit in words, what it leaves (found by the marker every descendant inherits, killed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from versatil_fs import linux
from versatil_fs.locks.fencing import FENCE_ENV
from versatil_fs.processes import ProcessTree, exit_code_of
from versatil_fs.state import write_all
from versatil_fs.waves.plan import Task
from versatil_fs.waves.records import RunState

__all__ = [
    "TASK_ENV",
    "TERM_GRACE",
    "describe_exit",
    "end_task_tree",
    "kill_leftovers",
    "leftover_processes",
    "signal_group",
    "spawn_task",
    "task_environment",
    "terminate",
    "wait_task",
]


TASK_ENV = "VERSATIL_WAVE_TASK"  # run-id/task-id, inherited by everything a task starts
TERM_GRACE = 3.0  # seconds between SIGTERM and SIGKILL for a task that is stopped


# Processes a task left ------------------------------------------------------------------------
def leftover_processes(run_id: str, task_id: str | None = None) -> list[int]:
    """PIDs of processes started for this run (or one of its tasks) that are still alive."""
    wanted = f"{TASK_ENV}={run_id}/".encode()
    exact = f"{TASK_ENV}={run_id}/{task_id}".encode() if task_id else None

    def ours(environ: list[bytes]) -> bool:
        return any(
            item.startswith(wanted) and (exact is None or item == exact) for item in environ
        )

    return linux.pids_with_environ(ours)


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


def task_environment(
    run: RunState, task: Task, wave: int, fence: int | None = None
) -> dict[str, str]:
    """The environment a task's command runs in: ours, without an armed fault, plus who and
    what it is, the marker that finds everything it starts (:func:`leftover_processes`) and
    ``VERSATIL_FENCE``, its lease's fencing token (``fence``; None: the task holds no locks)."""
    env = dict(os.environ)
    env.pop("VERSATIL_FAULT", None)  # a fault armed for the executor is not the task's
    if fence is not None:
        # Its own lease's token, for the commit guard and restore; a task without locks keeps
        # an enclosing lease's (the executor run under `versatil run`), as its descriptors.
        env[FENCE_ENV] = str(fence)
    plan_dir = run.plan.directory
    env.update({
        "VERSATIL_AGENT": task.agent,
        "VERSATIL_TASK": task.id,
        "VERSATIL_WAVE": str(wave),
        "VERSATIL_RUN": run.id,
        "VERSATIL_PLAN_DIR": str(plan_dir) if plan_dir else "",
        TASK_ENV: f"{run.id}/{task.id}",
    })
    return env


def spawn_task(
    task: Task, attempt: int, cwd: Path, env: dict[str, str], log_fd: int,
    pass_fds: Sequence[int],
) -> subprocess.Popen[bytes]:
    """Start a task's command in its own session, output appended to its log after a header
    line; ``OSError`` if it cannot start."""
    os.lseek(log_fd, 0, os.SEEK_END)
    header = f"== {task.id} ({task.agent}), attempt {attempt}: {task.describe_run()}\n"
    write_all(log_fd, header.encode())
    return subprocess.Popen(
        task.command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log_fd,
        stderr=subprocess.STDOUT, start_new_session=True, pass_fds=tuple(pass_fds),
    )


def wait_task(proc: subprocess.Popen[bytes], timeout: float | None) -> tuple[int, bool]:
    """Wait for a task's process; past ``timeout`` it is stopped (:func:`terminate`).
    Returns (its returncode, whether it timed out)."""
    try:
        return proc.wait(timeout=timeout), False
    except subprocess.TimeoutExpired:
        pass

    def settled(deadline: float) -> bool:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
        return True

    terminate(lambda: [proc.pid], settled)
    return proc.wait(), True


def describe_exit(code: int, timed_out: bool, timeout: float | None) -> tuple[int, str]:
    """(exit code, error) of a task's process: 128+N for death by signal N, "" on success."""
    if timed_out:
        return code, f"timed out after {timeout or 0:g} s"
    if code < 0:
        return exit_code_of(code), f"killed by signal {-code}"
    return code, "" if code == 0 else f"exited with {code}"


def end_task_tree(
    proc: subprocess.Popen[bytes], tree: ProcessTree, run_id: str, task_id: str
) -> tuple[list[int], bool]:
    """Kill what a task left running: its process group, then whatever left the group
    (setsid, daemons) found by its marker. Returns (the pids killed by marker, whether
    something is still alive, i.e. a process that also cleared its environment)."""
    signal_group(proc.pid, signal.SIGKILL)
    if tree.empty(TERM_GRACE):
        return [], False
    killed = kill_leftovers(run_id, task_id)
    return killed, not tree.empty(TERM_GRACE)
