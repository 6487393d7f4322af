"""Resuming a wave run: which run may go on, and what becomes of the tasks a dead executor left.

:func:`take_over` goes through what the last executor left (:func:`reset_failed` first, for
``--retry-failed``).

A task whose exit was recorded is settled (:func:`settle`: its outcome stands, it is not run
again); a task that was still running is recovered (:func:`recover`: its files are rolled back
and it runs again). Both hold the task's locks while they compare and roll back its files, as
the task did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

from versatil_fs.errors import Refused, StateError, UsageError, VersatilError
from versatil_fs.monitor.scan import modified, within
from versatil_fs.repo import Repository
from versatil_fs.waves.plan import Task
from versatil_fs.waves.progress import Progress
from versatil_fs.waves.records import TERMINAL, RunState, TaskRun
from versatil_fs.waves.running import (
    TaskRunner,
    as_text,
    not_utf8,
    task_files,
    write_paths,
    wrote_not_utf8,
)
from versatil_fs.waves.store import RunStore, effective_status
from versatil_fs.waves.tasks import kill_leftovers

__all__ = [
    "check_resumable",
    "files_word",
    "latest_resumable",
    "recover",
    "reset_failed",
    "settle",
    "take_over",
]


def latest_resumable(store: RunStore, here: Repository, retry_failed: bool) -> str:
    """The id of the latest run of this repository that ``resume`` may go on with."""
    wanted = ("interrupted", "failed") if retry_failed else ("interrupted",)
    candidates = [r for r in store.runs(here.key) if effective_status(r, store) in wanted]
    if not candidates:
        what = "interrupted or failed" if retry_failed else "interrupted"
        raise UsageError(
            f"No {what} wave run in this repository; `versatil wave status` shows "
            "the latest run."
        )
    return candidates[-1].id


def check_resumable(run: RunState, retry_failed: bool) -> None:
    """Refuse a run that is not in the working tree it names, or already finished."""
    here = Repository.find(run.repo)
    if str(here.toplevel) != run.repo or here.key != run.repo_key:
        raise StateError(
            f"Wave run {run.id} says it ran in {run.repo}, which is not the working "
            "tree it was started in; it is not resumed."
        )
    if run.status == "succeeded" or (run.status == "failed" and not retry_failed):
        hint = (
            " To run its failed tasks (and those skipped because of them) again: "
            f"`versatil wave resume --retry-failed {run.id}`."
            if run.status == "failed" else ""
        )
        raise Refused(
            f"Wave run {run.id} already finished ({run.status}); nothing to resume. "
            "Finished tasks are never run again: start a new run with `versatil wave "
            f"run`.{hint}"
        )


def reset_failed(run: RunState) -> list[str]:
    """Make the failed tasks, and those skipped because of them, pending again; their ids.

    Nothing is rolled back here: a failed task's files were rolled back when it failed
    (what could not be is named in its error), and a skipped task never ran.
    """
    retried = []
    for task_run in run.tasks.values():
        if task_run.status in ("failed", "skipped"):
            retried.append(task_run.id)
            task_run.status = "pending"
            task_run.skipped_because = ""
            task_run.started = task_run.finished = None
    return retried


def take_over(
    runner: TaskRunner, observer: Progress, tasks: Mapping[str, Task], run: RunState,
    interrupted: Sequence[TaskRun],
) -> list[int]:
    """Make what the last executor left ready to go on; returns the pids of leftovers killed.

    Each task it left running or waiting has what is left of its processes killed, then is
    settled (its exit was recorded) or recovered (it was running) and otherwise made pending;
    the unfinished waves lose their checkpoints; anything a task started that outlived the
    executor is killed.
    """
    for task_run in interrupted:
        killed = kill_leftovers(run.id, task_run.id)
        task = tasks[task_run.id]
        if task_run.status == "running" and task_run.exited is not None:
            # It ended: its outcome stands.
            settle(runner, observer, task, task_run, killed)
            continue
        if task_run.status == "running":
            recover(runner, observer, task, task_run, killed)
        task_run.status = "pending"
        task_run.before = None
        task_run.pid = 0
    # Waves not finished get a fresh checkpoint when they go on: the tree has moved since.
    for number, ids in enumerate(run.waves, start=1):
        if any(run.tasks[t].status not in TERMINAL for t in ids):
            run.wave_checkpoints.pop(number, None)
    return kill_leftovers(run.id)


def settle(
    runner: TaskRunner, observer: Progress, task: Task, task_run: TaskRun, killed: list[int]
) -> None:
    """Finish what the executor did not for a task whose exit it recorded before dying.

    The task ran to its end once; it is not run again. Its outcome is the exit it recorded:
    a success keeps its files, a failure has them rolled back from its baseline, exactly
    as if the executor had lived, and what it modified is compared with the snapshot taken
    when it started.
    """
    failed = task_run.exit_code != 0 or bool(task_run.error)
    error = task_run.error
    kept: list[str] = []
    if task_run.before is None:
        # Its outcome was recorded too, before its locks went: compared, rolled back and
        # attributed already. Its files may be someone else's work by now: not touched.
        files, rolled = task_run.files, task_run.rolled_back
    else:
        files, rolled, error, failed = _settle_files(runner, task, task_run, failed=failed)
        kept = [f for f in files if f not in set(rolled) and not not_utf8([f])]
        files, rolled = as_text(files), as_text(rolled)
    if kept:
        from versatil_fs.checkpoints import record_files_modified

        with contextlib.suppress(VersatilError):
            record_files_modified(
                runner.repo, task.agent, kept, wave=task_run.wave, task=task.id
            )
    task_run.status = "failed" if failed else "succeeded"
    task_run.finished = task_run.exited
    task_run.error = error
    task_run.files = files
    task_run.rolled_back = rolled
    task_run.before = None
    task_run.pid = 0
    kind = "task-failed" if failed else "task-done"
    runner.emit(kind, task_run, exit_code=task_run.exit_code, duration=task_run.duration,
               files=files, rolled_back=rolled, error=error, recorded_before_crash=True)
    detail = f"{len(killed)} leftover processes killed" if killed else "no process left"
    observer.event(
        runner.run(), "rollback" if failed else "note", task_run,
        f"had ended ({'failed' if failed else 'succeeded'}) when the executor stopped "
        f"({detail}); not run again" + (f", {files_word(rolled)} rolled back" if failed else ""),
    )

def _settle_files(
    runner: TaskRunner, task: Task, task_run: TaskRun, *, failed: bool
) -> tuple[list[str], list[str], str, bool]:
    """What an ended task modified (against its start snapshot), rolled back if it failed
    (or wrote a name the state cannot hold, as the executor would have failed it); returns
    (files, rolled back, error, failed)."""
    paths = write_paths(runner.claims, task)
    before = within(task_run.before or {}, paths)
    error = task_run.error
    with runner.task_locks(task, wait=runner.lock_wait):
        after = runner.scan(paths)
        files = task_files(runner.claims, task, modified(before, after))
        odd = not_utf8(files)
        if odd:
            error = f"{error}; {wrote_not_utf8(odd)}" if error else wrote_not_utf8(odd)
            failed = True
        rolled: list[str] = []
        if failed and files:
            try:
                rolled = runner.baselines.rollback(task_run, files)
            except VersatilError as exc:
                error = f"{error}; rollback failed: {exc}"
    return files, rolled, error, failed

def recover(
    runner: TaskRunner, observer: Progress, task: Task, task_run: TaskRun, killed: list[int]
) -> None:
    """Roll back the files of a task that was running when the executor died."""
    detail = f"{len(killed)} leftover processes killed" if killed else "no process left"
    paths = write_paths(runner.claims, task)
    before = within(task_run.before or {}, paths)
    with runner.task_locks(task, wait=runner.lock_wait) as _:
        after = runner.scan(paths)
        files = task_files(runner.claims, task, modified(before, after))
        rolled = as_text(runner.baselines.rollback(task_run, files) if files else [])
    task_run.rolled_back = rolled
    runner.emit("rollback", task_run, files=rolled, reason="interrupted", detail=detail)
    observer.event(
        runner.run(), "rollback", task_run,
        f"was running when the executor stopped ({detail}); "
        f"{files_word(rolled)} rolled back; running it again",
    )


def files_word(paths: Sequence[str]) -> str:
    return "1 file" if len(paths) == 1 else f"{len(paths)} files"
