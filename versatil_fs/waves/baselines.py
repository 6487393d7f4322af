"""Baselines and rollback: the checkpoint each task's files go back to if it fails.

A wave's checkpoint is made once, before its first task runs: in the background as soon as one
of its tasks is ready (:meth:`Baselines.make_ahead`), or else by the worker of the first task
to start; the wave's other tasks wait for it (its gate) rather than make their own. A task's
*baseline* is its wave's checkpoint unless a task that conflicts with it ended after that
checkpoint's making began (possible when waves overlap): then the checkpoint may hold that
task's half-written files, and a fresh one is made just before the task starts. Checkpoint
makings and task ends share one sequence of numbers (guarded by the executor's mutex) so that
"ended after the making began" is a comparison of two numbers.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from versatil_fs import git
from versatil_fs.state import StateDir
from versatil_fs.waves.records import RunState, TaskRun

__all__ = ["Baselines", "tree_files"]


class Baselines:
    """The checkpoints of one run: made, chosen per task, and restored from on a failure.

    ``run`` gives the run's state, ``mutex`` is the executor's (it guards the state and the
    numbering here), ``after`` maps a task to the tasks of earlier waves that conflict with it,
    and ``started(wave, checkpoint)`` is called, in the thread that made it, once a wave's
    checkpoint exists.
    """

    def __init__(
        self, repo: Path, state: StateDir, *, run: Callable[[], RunState],
        mutex: threading.Lock, after: Mapping[str, set[str]],
        started: Callable[[int, str], None],
    ) -> None:
        self.repo = repo
        self.state = state
        self._run = run
        self._mutex = mutex
        self._after = after
        self._started = started
        self._git = threading.Lock()  # one checkpoint create/restore at a time in this process
        self._seq = 0  # orders checkpoint creations and task ends (see baseline);
        # it and the two maps below are guarded by the mutex
        self._checkpoint_seq: dict[str, int] = {}
        self._ended_seq: dict[str, int] = {}
        self._wave_gates: dict[int, threading.Lock] = {}  # one maker of each wave's checkpoint
        self._making: set[int] = set()  # waves whose checkpoint make_ahead started (main thread)
        self._checkpoints: Any = None

    def api(self) -> Any:
        """The repository's :class:`~versatil_fs.checkpoints.Checkpoints`, made once."""
        if self._checkpoints is None:
            from versatil_fs.checkpoints import Checkpoints

            self._checkpoints = Checkpoints(self.repo, state=self.state)
        return self._checkpoints

    def task_ended(self, task_id: str) -> None:
        """Number a task's end (call with the mutex held)."""
        self._seq += 1
        self._ended_seq[task_id] = self._seq

    def baseline(self, task_id: str, wave: int) -> str | None:
        """The checkpoint this task's files go back to if it fails (see the module docstring).

        Called from the task's worker thread before it takes its locks, so the scheduler goes
        on starting other tasks meanwhile.
        """
        run = self._run()
        if not run.checkpoints:
            return None
        checkpoint = self.wave_checkpoint(wave)
        with self._mutex:
            # Every conflicting predecessor has ended (the scheduler starts a task only then)
            # and its end has its number; a checkpoint whose making began before one of those
            # ends may hold that task's half-written files, which must not be what this
            # task's failure restores.
            made = self._checkpoint_seq.get(checkpoint, 0)
            stale = any(self._ended_seq.get(p, 0) > made for p in self._after[task_id])
        if stale:
            checkpoint = self.checkpoint(f"wave {wave}, before task {task_id}", wave)
        return checkpoint

    def wave_checkpoint(self, wave: int) -> str:
        """The wave's checkpoint, made once: whoever comes first makes it under the wave's
        gate (a task's worker, or :meth:`make_ahead`), and the others wait for it."""
        run = self._run()
        with self._mutex:
            gate = self._wave_gates.setdefault(wave, threading.Lock())
        with gate:
            with self._mutex:
                checkpoint = run.wave_checkpoints.get(wave)
            if checkpoint is not None:
                return checkpoint
            checkpoint = self.checkpoint(f"before wave {wave}", wave)
            with self._mutex:
                run.wave_checkpoints[wave] = checkpoint
            self._started(wave, checkpoint)
            return checkpoint

    def make_ahead(self, wave: int) -> None:
        """Start making the checkpoint of a wave that has a ready task, in the background.

        A ready task often waits for a slot; its wave's checkpoint is then made meanwhile
        instead of on its path once it starts. It is the same checkpoint its first task would
        make (the task is ready: whatever conflicts with it has ended), only sooner; a task of
        the wave for which it is too old gets a fresh one (:meth:`baseline`).
        """
        run = self._run()
        if not run.checkpoints or wave in self._making or wave in run.wave_checkpoints:
            return
        self._making.add(wave)

        def make() -> None:
            # A failure here is not lost: the wave's first task tries again and fails with it.
            with contextlib.suppress(Exception):
                self.wave_checkpoint(wave)

        threading.Thread(target=make, name=f"checkpoint-wave-{wave}", daemon=True).start()

    def checkpoint(self, message: str, wave: int) -> str:
        """Make a checkpoint of the whole tree for this run, numbered when its making began."""
        run = self._run()
        with self._git:
            api = self.api()
            with self._mutex:
                # Numbered when its making begins: a task that ends from here on ends after
                # it, even if the end is applied before the checkpoint is done.
                self._seq += 1
                number = self._seq
                states = {t.id: t.status for t in run.tasks.values()}
            record = api.create(
                f"{message} of wave run {run.id}", wave=wave, agent="wave-executor",
                tasks=states, prune=False, kind="wave",
            )
        with self._mutex:
            self._checkpoint_seq[record.id] = number
        return str(record.id)

    def rollback(self, task_run: TaskRun, files: list[str]) -> list[str]:
        """Restore ``files`` from the task's baseline, on its behalf; returns what changed."""
        if not files or task_run.checkpoint is None:
            return []
        api = self.api()
        with self._git:
            record = api.show(task_run.checkpoint)
            # A file the task deleted that the checkpoint does not hold either (made after it
            # by someone else) cannot be restored; restore() would refuse the whole selection.
            present = set(tree_files(self.repo, record.commit, files))
            wanted = [f for f in files if f in present or (self.repo / f).exists()
                      or os.path.islink(self.repo / f)]
            if not wanted:
                return []
            result = api.restore(task_run.checkpoint, paths=wanted, by=task_run.agent)
        return list(result.changed)


def tree_files(repo: Path, commit: str, paths: Sequence[str]) -> list[str]:
    """Which of ``paths`` the commit's tree holds."""
    result = git.run(
        ["--literal-pathspecs", "ls-tree", "-r", "-z", "--name-only", commit, "--", *paths],
        cwd=repo, check=False,
    )
    return [os.fsdecode(p) for p in result.stdout.split(b"\0") if p]
