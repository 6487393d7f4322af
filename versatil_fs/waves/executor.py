"""The wave executor: runs a plan's tasks in parallel under locks, checkpoints before every wave,
isolates failures, and resumes after a crash.

How a run goes
--------------
The resolver (:mod:`versatil_fs.waves.plan`) gives each task a wave. A task starts as soon as

* everything it ``needs`` has succeeded,
* every task of an earlier wave whose claims conflict with its own has ended (so two tasks that
  touch the same files run in the plan's order, never at once),
* its wave is already in flight, or fewer than ``max_concurrent_waves`` waves are (see below),
  and
* one of the ``max_concurrent_agents`` slots is free;

then, in a worker thread, it finds or makes its baseline checkpoint (below), takes its locks
(waiting in the lock queue like any agent),
records which files under its write paths exist and how (``stat``), runs its command in its own
process group with ``VERSATIL_AGENT`` set and its output in a per-task log file, and compares
the files afterwards: what changed under its write paths is what it modified. Only those files
are attributed to it (``files-modified`` events, which ``checkpoint restore --agent`` reads) and
only those are rolled back if it fails. Writes outside its declared paths are the monitor's
business (unlocked writes), not the executor's.

Waves in flight
---------------
A wave is *in flight* while one of its tasks is (from its start to its end, locks and checkpoint
included), and tasks of at most ``max_concurrent_waves`` waves are in flight at once: with the
default 2, a slow task of wave N lets wave N+1 go on, but nothing of wave N+2 starts while
tasks of both N and N+1 are still running. A wave whose tasks are all done, or not started,
holds no place, so a wave-N straggler does not keep agents idle once N+1 is done.
Ready tasks are taken critical path first. This rule was chosen with the simulator in
``bench/bench_waves.py`` (zero-overhead runs of the bench's plans, 5 agents, makespan over its
tight lower bound): on the random 200-task DAG it gives 1.023 where "within 2 of the lowest
wave not done" (the rule before) gave 1.100, a window over consecutive waves 1.104, and taking
the lowest wave first 1.080 (no window at all: 1.005); chains, fans and diamonds are equal
under every rule.

Checkpoints and rollback
------------------------
A checkpoint is made before a wave's first task runs, once for the wave and off the
scheduler's thread: in the background as soon as one of the wave's tasks is ready (it often
waits for a slot meanwhile), or else by the worker of the first task to start; the wave's other
tasks wait for it rather than make their own.
A failed task (non-zero exit, timeout, or locks it could not get) has its modified files
restored from its *baseline*, while it still holds its locks. The baseline is its wave's
checkpoint, unless a task that conflicts with it ended after that checkpoint's making began
(possible when waves overlap): then the checkpoint may hold that task's half-written files, and
a fresh checkpoint is made just before this task starts. Either way the baseline is a checkpoint
made after every conflicting predecessor ended and before the task runs. Tasks that need a
failed task are skipped, and named in the report; every other task goes on.

Crash safety
------------
The run's state is one msgpack document, written durably (fsync, rename, fsync of the
directory) after every transition by one writer thread; transitions that happen together share
a write (see :class:`~versatil_fs.waves.journal.Journal`). A task is recorded as running —
with its file snapshot — and that record is on disk *before* its process is started: appended
to the run's write-ahead file and fdatasynced, which readers apply over the document until the
document catches up.
``resume`` after a ``kill -9`` of the executor kills what is left of the tasks that were running
(found by the ``VERSATIL_WAVE_TASK`` marker in their environment, which every descendant
inherits, so no PID has to be trusted), rolls their files back from the snapshot, and runs
them again; tasks recorded as succeeded, failed or skipped are never run again.

A task's exit is recorded the moment ``waitpid`` returns, before anything else is done for it
(its leftovers killed, its files compared, rolled back or attributed, its locks released): one
fdatasync'd append of the task, with its exit code and ``exited`` time, to the write-ahead
file. ``resume`` *settles* a task whose exit is recorded instead of running it again: under
its locks it compares its files with its start snapshot, keeps them if it succeeded and rolls
them back from its baseline if it failed, exactly as the executor would have. So what can
still be run again is exactly: a task whose process was running when the executor died (it
has no outcome), one whose process exited in the instant between ``waitpid`` returning and
that append reaching the disk (fault point ``wave.before-exit-record``), one whose exit
record could not be written (a full disk: the usual state write is then the record), and a
task stopped by an interrupt (Ctrl-C, SIGTERM: being stopped is not an outcome).

A second record, made while the task still holds its locks, holds its outcome (what it
modified, what was rolled back) and drops its start snapshot: after the locks are released
another agent may change those files, and a resume must not compare them with the snapshot
and roll that agent's work back. Only a crash between the two records (while the task's files
are compared and rolled back) leaves a resume to do that work itself, against the snapshot.

While a task runs, everything it starts holds its locks: the lease's flocked descriptor is
inherited by the whole process tree (see :class:`versatil_fs.runner.ProcessTree`), so after a
``kill -9`` of the executor the locks stay with the tasks' processes until they exit or
``resume`` kills them, and no other agent writes beside them. When a task ends, what it left
running is killed (its process group, then anything else carrying its marker); a process
that also cleared its environment cannot be found and keeps the task's locks until it exits.

What it does not do: roll back writes outside a task's declared write paths, or files git
ignores. And a file a failed task modified goes back to the task's baseline checkpoint, so a
change someone else made to that same file between the checkpoint and the task's start (under
their own lock) goes with it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from versatil_fs import faults
from versatil_fs.checkpoints import pruned_line
from versatil_fs.errors import (
    StateError,
    UsageError,
    VersatilError,
)
from versatil_fs.monitor.ignore import IgnoreMatcher
from versatil_fs.monitor.scan import TreeScan, scan
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir
from versatil_fs.waves.baselines import Baselines
from versatil_fs.waves.claims import conflict_predecessors, resolve_claims
from versatil_fs.waves.interrupt import (
    leave_resumable,
    restore_sigterm,
    stop_on_sigterm,
    stop_running,
)
from versatil_fs.waves.journal import Journal
from versatil_fs.waves.plan import Plan, Task
from versatil_fs.waves.progress import Progress, wave_done
from versatil_fs.waves.records import (
    MAX_LOCK_WAIT,
    TERMINAL,
    RunState,
    Session,
    TaskRun,
    new_run,
)
from versatil_fs.waves.recovery import (
    check_resumable,
    files_word,
    latest_resumable,
    reset_failed,
    take_over,
)
from versatil_fs.waves.run_log import RunLog
from versatil_fs.waves.running import Outcome, TaskPool, TaskRunner, Worker
from versatil_fs.waves.schedule import ranks, ready_tasks, skips, to_start
from versatil_fs.waves.store import (
    RunStore,
    os_reason,
)

_checkpoints_log = logging.getLogger("versatil_fs.checkpoints")

__all__ = [
    "WaveExecutor",
]


# The executor ----------------------------------------------------------------------------------
class WaveExecutor:
    """Run a :class:`~versatil_fs.plan.Plan` in waves: ``WaveExecutor(plan).run()``.

    ``repo`` is any directory of the working tree the tasks run in (their commands start at its
    root, and their paths are relative to it). ``max_agents`` / ``max_waves`` default to the
    configuration's ``parallel`` section; ``lock_wait`` (seconds a task may wait in the lock
    queue before it fails) to ``retry_attempts × retry_delay``.
    """

    def __init__(
        self,
        plan: Plan,
        *,
        repo: str | os.PathLike[str] = ".",
        max_agents: int | None = None,
        max_waves: int | None = None,
        lock_wait: float | None = None,
        observer: Progress | None = None,
        state: StateDir | None = None,
    ) -> None:
        from versatil_fs import config as config_module

        self.plan = plan
        self.repo = Repository.find(repo)
        self.state = state or StateDir()
        self.store = RunStore(self.state)
        self.config = config_module.load(self.repo.toplevel, state=self.state)
        parallel = self.config.parallel
        self.max_agents = max_agents or parallel.max_concurrent_agents
        self.max_waves = max_waves or parallel.max_concurrent_waves
        if self.max_agents < 1 or self.max_waves < 1:
            raise UsageError("--max-agents and --max-waves must be 1 or more.")
        self.lock_wait = _checked_lock_wait(
            self.config.default_wait if lock_wait is None else lock_wait
        )
        self.observer = observer or Progress()
        self.tasks = {t.id: t for t in plan.tasks}
        self._mutex = threading.Lock()  # guards self.run and its writes to disk
        self._inbox: queue.Queue[Outcome] = queue.Queue()
        self._workers: dict[str, Worker] = {}  # the tasks in flight
        self._stopping = threading.Event()
        self._failed_root: dict[str, str] = {}  # skipped task -> the failed task behind it
        self.run_state: RunState | None = None
        self._log = RunLog(self.state, self._state)
        self._claims = resolve_claims(plan, self.repo, self.state, self.config)
        self.schedule = plan.schedule(agents=self.max_agents, claims=self._claims)
        self._after = conflict_predecessors(self.schedule, self._claims)
        self._rank = ranks(plan.tasks, self.schedule)
        self._journal: Journal
        self._baselines = Baselines(
            self.repo.toplevel, self.state, run=self._state, mutex=self._mutex,
            after=self._after, started=self._wave_started,
        )
        # The one tree scan's rule (monitor/scan.py): what git counts, minus guard.ignore, the
        # same files `versatil run` compares; list_files is safe from the worker threads.
        self._matcher = IgnoreMatcher(self.repo, self.config.guard.ignore, state=self.state)
        self._runner = TaskRunner(
            self.repo, self.state, self.config, self.store, self._claims, self.lock_wait,
            self._baselines, self._mutex, self._inbox, self._workers, self._stopping,
            run=self._state, journal=lambda: self._journal, emit=self._emit, scan=self._scan,
        )
        self._pool = TaskPool(self._runner)  # at most max_agents threads

    # Public entry points ------------------------------------------------------------------------
    def run(self) -> RunState:
        """Run the plan from the start as a new run; returns its final state."""
        run = new_run(
            self.plan, self.schedule, self.repo, max_agents=self.max_agents,
            max_waves=self.max_waves, checkpoints=self.config.checkpoints.enabled,
        )
        with self.store.locked(run.id):
            self.run_state = run
            self._emit("run-start", None, plan=self.plan.path, tasks=len(run.tasks),
                       waves=len(run.waves), max_agents=self.max_agents, max_waves=self.max_waves)
            return self._execute("run-start", f"{len(run.tasks)} tasks in {len(run.waves)} waves")

    @classmethod
    def resume(
        cls,
        run_id: str | None = None,
        *,
        repo: str | os.PathLike[str] = ".",
        max_agents: int | None = None,
        lock_wait: float | None = None,
        observer: Progress | None = None,
        state: StateDir | None = None,
        retry_failed: bool = False,
    ) -> RunState:
        """Go on with an interrupted run (default: the latest one of this repository).

        Tasks that were running are stopped if anything of them survived, rolled back and run
        again; tasks that ended are never run again. With ``retry_failed`` a run that ended
        failed goes on too (it is then the default, if it is the latest): its failed tasks,
        whose files were rolled back when they failed, run again, and so do the tasks that
        were skipped because of them. A retried task runs after every task that succeeded
        meanwhile, including later tasks that share its files without needing it.
        """
        store = RunStore(state)
        if run_id is None:
            run_id = latest_resumable(store, Repository.find(repo), retry_failed)
        run = store.load(run_id)
        with store.locked(run.id):
            # Read again under the lock: the last executor may have ended in between.
            run = store.load(run.id)
            check_resumable(run, retry_failed)
            executor = cls(
                run.plan, repo=run.repo, max_agents=max_agents or run.max_agents,
                max_waves=run.max_waves, lock_wait=lock_wait, observer=observer,
                state=store.state,
            )
            return executor._resume(run, retry_failed=retry_failed)

    # Resume ------------------------------------------------------------------------------------
    def _resume(self, run: RunState, *, retry_failed: bool = False) -> RunState:
        run.max_agents = self.max_agents
        run.status = "running"
        run.finished = None
        self.run_state = run
        retried = reset_failed(run) if retry_failed else []
        if retried:
            self._emit("retry", None, tasks=retried)
        interrupted = [t for t in run.tasks.values() if t.status in ("running", "waiting")]
        self._emit("resume", None, tasks=[t.id for t in interrupted],
                   done=sum(1 for t in run.tasks.values() if t.status in TERMINAL))
        leftovers = take_over(self._runner, self.observer, self.tasks, run, interrupted)
        if leftovers:  # anything a task started that outlived the executor
            self._emit("leftovers-killed", None, pids=leftovers)
        with self._mutex:
            self.store.save(run)
        # The state now holds all of the last session's write-ahead file, whose tail a crash
        # may have torn: this session's records go to a new one, not after the tear.
        self.store.drop_wal(run.id)
        pending = sum(1 for t in run.tasks.values() if t.status not in TERMINAL)
        again = f" ({_tasks_word(len(retried))} failed or skipped run again)" if retried else ""
        # The progress line names the run already ("Resuming wave run X: ..."): not again here.
        return self._execute("resume", f"{pending} tasks to go{again}")

    def _scan(self, paths: Sequence[str]) -> TreeScan:
        """The files under a task's write paths, with their stamps (see monitor/scan.py)."""
        return scan(self.repo.toplevel, paths, self._matcher)

    # The main loop ----------------------------------------------------------------------------
    def _execute(self, kind: str, detail: str) -> RunState:
        run = self._state()
        with self._mutex:
            run.sessions.append(Session(pid=os.getpid(), started=time.time()))
        self._journal = Journal(self.store, run, self._mutex)
        self._journal.sync(self._journal.note())
        self.observer.event(run, kind, None, detail)
        previous = stop_on_sigterm()
        try:
            while True:
                self._drain(block=False)
                self._skip_blocked()
                self._start_ready()
                if run.done:
                    break
                if not self._workers:
                    self._stuck()
                    continue
                self._drain(block=True)
                self.observer.tick(run)
        except KeyboardInterrupt:
            self._interrupt()
            return run
        except StateError as exc:
            if self._journal.failure is None:
                raise
            # The state can no longer be written (a full disk, often filled by a task): no
            # outcome could be recorded, so stop as on Ctrl-C, running tasks rolled back, and
            # say what is true rather than pass on "nothing was changed".
            self._journal.stopping = True
            self._interrupt(save=False)
            raise StateError(
                f"The state of wave run {run.id} could not be written ({os_reason(exc)}): its "
                "running tasks were stopped and rolled back and nothing more was started; "
                f"once there is room, go on with `versatil wave resume {run.id}`."
            ) from exc
        finally:
            restore_sigterm(previous)
            self._matcher.close()  # only ever lists files: no conversation left running
            self._pool.close()
            self.observer.close()
            try:
                self._journal.close()
            except StateError:
                if not self._stopping.is_set():
                    raise  # else already said above, in its own words
        return self._finish()

    def _finish(self) -> RunState:
        run = self._state()
        with self._mutex:  # the journal has stopped: this last write is made here
            run.status = "succeeded" if all(
                t.status == "succeeded" for t in run.tasks.values()
            ) else "failed"
            run.finished = time.time()
            run.sessions[-1].ended = run.finished
            self.store.save(run)
        if run.checkpoints:
            with contextlib.suppress(VersatilError):
                # The run made its checkpoints with prune=False; a prune nobody asked for is
                # never silent (as after `checkpoint create`): one line per checkpoint removed,
                # on the checkpoints' logger, which the CLI prints.
                for entry in self._baselines.api().prune().entries:
                    _checkpoints_log.info("%s", pruned_line(entry))
        counts = run.counts()
        self._emit("run-done", None, status=run.status, **counts)
        self.observer.event(run, "run-done", None, run.status)
        return run

    def _interrupt(self, *, save: bool = True) -> None:
        """Ctrl-C or SIGTERM: stop the running tasks, roll them back, leave the run resumable
        (see :mod:`versatil_fs.waves.interrupt`).

        ``save=False`` when the state cannot be written any more: what the last write holds
        (tasks running, with their snapshots) is what a resume starts from."""
        run = self._state()
        self._stopping.set()
        stop_running(self._workers, lambda: self._drain(block=True))
        leave_resumable(run, self._workers, self._mutex)
        if save:
            self._journal.sync(self._journal.note())
        self._emit("run-interrupted", None, **run.counts())
        self.observer.event(run, "run-interrupted", None, f"resume with: versatil wave resume "
                                                          f"{run.id}")

    def _stuck(self) -> None:
        # Cannot happen with a plan the resolver accepted (every pending task waits only for
        # tasks that will end); kept so that a bug shows as skipped tasks, not a hung executor.
        run = self._state()
        with self._mutex:
            for task_run in run.tasks.values():
                if task_run.status == "pending":
                    task_run.status = "skipped"
                    task_run.skipped_because = "could not be scheduled (please report this)"
        self._journal.note()

    def _drain(self, *, block: bool) -> None:
        """Apply what the workers reported; waits up to 0.2 s for the first report if ``block``."""
        try:
            outcome = self._inbox.get(timeout=0.2) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            self._apply(outcome)
            try:
                outcome = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _apply(self, outcome: Outcome) -> None:
        run = self._state()
        if outcome.kind == "wave-start":
            self.observer.event(run, "wave-start", None, outcome.detail)
            return
        task_run = run.tasks[outcome.task]
        if outcome.kind == "waiting":
            self.observer.event(run, "task-waiting", task_run, "waiting for its locks")
            return
        if outcome.kind == "started":
            self.observer.event(run, "task-start", task_run, self.tasks[outcome.task].agent)
            return
        self._workers.pop(outcome.task, None)
        with self._mutex:
            self._baselines.task_ended(outcome.task)
            task_run.finished = (
                (outcome.ended or time.time()) if task_run.started is not None else None
            )
            task_run.exit_code = outcome.exit_code
            task_run.error = outcome.error
            task_run.files = outcome.files
            task_run.rolled_back = outcome.rolled_back
            task_run.before = None
            task_run.pid = 0
            if outcome.interrupted:
                task_run.status = "pending"
                task_run.started = task_run.finished = None
            else:
                task_run.status = outcome.status
        self._journal.note()
        if outcome.interrupted:
            self._emit("task-interrupted", task_run, rolled_back=outcome.rolled_back)
            self.observer.event(run, "task-interrupted", task_run,
                                f"stopped; {files_word(outcome.rolled_back)} rolled back")
            return
        kind = "task-done" if outcome.status == "succeeded" else "task-failed"
        self._emit(kind, task_run, exit_code=outcome.exit_code, duration=task_run.duration,
                   files=outcome.files, rolled_back=outcome.rolled_back, error=outcome.error)
        self.observer.event(run, kind, task_run, outcome.error)
        if self._wave_done(task_run.wave):
            self._wave_ended(task_run.wave)

    def _wave_done(self, number: int) -> bool:
        run = self._state()
        return all(run.tasks[t].status in TERMINAL for t in run.waves[number - 1])

    def _wave_ended(self, number: int) -> None:
        run = self._state()
        self._emit("wave-done", None, wave=number)
        self.observer.event(run, "wave-done", None, wave_done(run, number))

    def _skip_blocked(self) -> None:
        """Skip every pending task that needs a task that failed or was skipped."""
        run = self._state()
        with self._mutex:
            skipped = self._find_skips(run)
        if not skipped:
            return
        self._journal.note()
        for task_run in skipped:
            self._emit("task-skipped", task_run, reason=task_run.skipped_because)
            self.observer.event(run, "task-skipped", task_run, task_run.skipped_because)
        for number in sorted({t.wave for t in skipped}):
            if self._wave_done(number):
                self._wave_ended(number)

    def _find_skips(self, run: RunState) -> list[TaskRun]:
        statuses = {t: r.status for t, r in run.tasks.items()}
        skipped: list[TaskRun] = []
        for task_id, reason, root in skips(self.plan.tasks, statuses, self._failed_root):
            task_run = run.tasks[task_id]
            task_run.status = "skipped"
            task_run.skipped_because = reason
            if root:
                self._failed_root[task_id] = root
            skipped.append(task_run)
        return skipped

    def _start_ready(self) -> None:
        if self._stopping.is_set():
            return
        run = self._state()
        ready = ready_tasks(self.plan.tasks, run, self._after)
        # Even with every slot taken: a ready task's wave gets its checkpoint while it waits.
        for wave in {run.tasks[t.id].wave for t in ready}:
            self._baselines.make_ahead(wave)
        running = [run.tasks[t].wave for t in self._workers]
        for task in to_start(
            ready, self._rank, {t: r.wave for t, r in run.tasks.items()}, running,
            slots=self.max_agents - len(self._workers), max_waves=self.max_waves,
        ):
            self._start(task)

    def _start(self, task: Task) -> None:
        run = self._state()
        task_run = run.tasks[task.id]
        with self._mutex:
            task_run.status = "waiting"
            task_run.checkpoint = None  # its worker makes or finds its baseline
            task_run.exit_code = None
            task_run.exited = None
            task_run.error = ""
            task_run.files = []
            task_run.rolled_back = []
        self._workers[task.id] = Worker(task=task)
        self._pool.hand_over(task, in_flight=len(self._workers))

    # Checkpoints --------------------------------------------------------------------------------
    def _wave_started(self, wave: int, checkpoint: str) -> None:
        """A wave's checkpoint was made (in the thread that made it): record and tell it."""
        self._journal.note()
        faults.point("wave.after-wave-checkpoint")
        self._emit("wave-start", None, wave=wave, checkpoint=checkpoint)
        self._inbox.put(Outcome(
            task="", kind="wave-start", wave=wave,
            detail=f"wave {wave} (checkpoint {checkpoint})",
        ))

    # Helpers ---------------------------------------------------------------------------------
    def _state(self) -> RunState:
        assert self.run_state is not None
        return self.run_state

    def _emit(self, kind: str, task: TaskRun | None, **data: Any) -> None:
        self._log.emit(kind, task, **data)


def _checked_lock_wait(seconds: float) -> float:
    """``--lock-wait``, checked once here: the lock manager would refuse a bad one too, but
    task by task, and every task would fail over one bad option."""
    if math.isnan(seconds) or seconds < 0 or (
        math.isfinite(seconds) and seconds > MAX_LOCK_WAIT
    ):
        raise UsageError(
            f"--lock-wait must be between 0 and {MAX_LOCK_WAIT:.0e} seconds (or inf), "
            f"got {seconds}."
        )
    return seconds


def _tasks_word(count: int) -> str:
    return "1 task" if count == 1 else f"{count} tasks"
