"""One task of a wave run, in its worker thread: its locks, its run, its outcome.

:class:`TaskRunner` takes a task the scheduler started, makes its baseline, holds its locks as
its agent (queued, or failed once ``lock_wait`` is over), records it as running before its
process exists, runs and waits for it, ends everything it started, rolls its files back if it
failed, and makes its outcome durable while it still holds its locks. It reports to the
executor's main thread through ``inbox`` (:class:`Outcome`); the executor applies that to the
run. The ordering of the durable records is the executor's module docstring's
(:mod:`versatil_fs.waves.executor`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from versatil_fs import faults
from versatil_fs.checkpoints.records import has_surrogates, printable
from versatil_fs.config import Config
from versatil_fs.errors import (
    Deadlock,
    LockConflict,
    StateError,
    Stopped,
    UsageError,
    VersatilError,
)
from versatil_fs.locks.holders import WriteScope
from versatil_fs.locks.table import Claim
from versatil_fs.monitor.scan import TreeScan, modified
from versatil_fs.processes import ProcessTree
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir
from versatil_fs.waves.baselines import Baselines
from versatil_fs.waves.journal import Journal
from versatil_fs.waves.plan import Task
from versatil_fs.waves.records import RunState, Status, TaskRun
from versatil_fs.waves.store import RunStore, safe_name
from versatil_fs.waves.tasks import (
    describe_exit,
    end_task_tree,
    spawn_task,
    task_environment,
    wait_task,
)

__all__ = [
    "Held",
    "Outcome",
    "TaskPool",
    "TaskRunner",
    "Worker",
    "as_text",
    "not_utf8",
    "task_files",
    "write_paths",
    "wrote_not_utf8",
]

def not_utf8(names: Iterable[str]) -> list[str]:
    """The names that are bytes, not UTF-8 (``os.fsdecode``'s surrogate escapes): the run's
    state (msgpack) and the event log (JSON) hold only text."""
    return [name for name in names if has_surrogates(name)]


def wrote_not_utf8(odd: Sequence[str]) -> str:
    return (f"it wrote {printable(odd[0])}, a file name that is not UTF-8, which a wave run "
            "cannot record")


def as_text(names: Sequence[str]) -> list[str]:
    """Names as the state can record them: one that is not UTF-8 shown as ``\\xNN``."""
    return [printable(n) if has_surrogates(n) else n for n in names]


@dataclass
class Outcome:
    """What a worker thread reports to the main thread."""

    task: str  # "" for a wave-start
    kind: Literal["started", "finished", "waiting", "wave-start"]
    status: Status = "running"
    exit_code: int | None = None
    error: str = ""
    files: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    interrupted: bool = False
    ended: float | None = None  # when its process exited (rollback time is not its duration)
    wave: int = 0  # of a wave-start
    detail: str = ""  # for the observer


@dataclass
class Held:
    """A task's hold on its locks, as its worker sees it."""

    lease_fd: int | None = None  # for the task's processes to inherit (None: no locks)
    fence: int | None = None  # its lease's fencing token, exported as VERSATIL_FENCE
    handed_over: bool = False  # left to processes of the task that could not be stopped


@dataclass
class Worker:
    """A task in flight: its process once started (the executor stops it on an interrupt)."""

    task: Task
    proc: subprocess.Popen[bytes] | None = None


def write_paths(claims: dict[str, list[Claim]], task: Task) -> list[str]:
    """Where the files ``task`` writes are (what it may modify, and what is rolled back): its
    write paths, a glob's literal directories; :func:`task_files` keeps what they cover."""
    return WriteScope(claims[task.id]).roots


def task_files(claims: dict[str, list[Claim]], task: Task, files: list[str]) -> list[str]:
    """Of ``files`` found under :func:`write_paths`, those ``task``'s write locks cover (a
    glob's files, not its neighbours: another agent's file beside them is never rolled back)."""
    return WriteScope(claims[task.id]).only_covered(files)


@dataclass
class TaskRunner:
    """Runs one task at a time per worker thread; what it shares with the executor is explicit.

    ``run``, ``journal``, ``emit`` and ``scan`` are the executor's: the run and its journal only
    exist once a run starts (or resumes), after this is made. ``mutex`` guards the run's records
    and their writes; ``inbox`` is read by the main thread; ``workers`` holds the tasks in
    flight (the main thread stops their processes); ``stopping`` is set on an interrupt.
    """

    repo: Repository
    state: StateDir
    config: Config
    store: RunStore
    claims: dict[str, list[Claim]]
    lock_wait: float
    baselines: Baselines
    mutex: threading.Lock
    inbox: queue.Queue[Outcome]
    workers: dict[str, Worker]
    stopping: threading.Event
    run: Callable[[], RunState]
    journal: Callable[[], Journal]
    emit: Callable[..., None]
    scan: Callable[[Sequence[str]], TreeScan]

    def work(self, task: Task) -> None:
        run = self.run()
        task_run = run.tasks[task.id]
        try:
            if self.stopping.is_set():
                raise Stopped
            baseline = self.baselines.baseline(task.id, task_run.wave)
            with self.mutex:
                task_run.checkpoint = baseline
            queued = time.time()
            with self.task_locks(
                task, wait=self.lock_wait, on_wait=self._announce_wait
            ) as held:
                if self.stopping.is_set():
                    raise Stopped
                outcome = self._run_locked(task, task_run, queued, held)
        except Stopped:
            outcome = Outcome(task=task.id, kind="finished", status="pending", interrupted=True)
        except (LockConflict, Deadlock) as exc:  # the locks could not be had
            outcome = Outcome(
                task=task.id, kind="finished", status="failed", error=f"locks: {exc}"
            )
        except VersatilError as exc:
            outcome = Outcome(task=task.id, kind="finished", status="failed", error=str(exc))
        except Exception as exc:  # a bug or an OS failure: fail the task, keep the run going
            outcome = Outcome(
                task=task.id, kind="finished", status="failed",
                error=f"internal error: {type(exc).__name__}: {exc}",
            )
        self.inbox.put(outcome)

    def _announce_wait(self, task: Task) -> None:
        self.inbox.put(Outcome(task=task.id, kind="waiting"))
        self.emit("task-waiting", self.run().tasks[task.id])

    def _run_locked(
        self, task: Task, task_run: TaskRun, queued: float, held: Held
    ) -> Outcome:
        paths = write_paths(self.claims, task)
        before, log_path = self._record_start(task, task_run, queued, paths)
        exit_code, error, interrupted, ended = self._spawn_and_wait(
            task, task_run, log_path, held
        )
        faults.point("wave.task-exited")
        files = task_files(self.claims, task, modified(before, self.scan(paths)))
        odd = not_utf8(files)
        if odd:
            # Unrecordable (see _record_start): failed, so that everything it wrote is rolled
            # back rather than kept unattributed, and said in a sentence, not a crashed record.
            error = f"{error}; {wrote_not_utf8(odd)}" if error else wrote_not_utf8(odd)
        status: Status = "succeeded" if exit_code == 0 and not error else "failed"
        rolled, error = self._keep_or_roll_back(
            task, task_run, files, error, roll_back=status == "failed" or interrupted
        )
        # Recorded as text from here on (the state holds no other); the rollback had the real
        # names.
        files, rolled = as_text(files), as_text(rolled)
        self._record_settled(task_run, files, rolled, error, interrupted=interrupted)
        return Outcome(
            task=task.id, kind="finished", status=status, exit_code=exit_code, error=error,
            files=files, rolled_back=rolled, interrupted=interrupted, ended=ended,
        )

    def _record_start(
        self, task: Task, task_run: TaskRun, queued: float, paths: list[str]
    ) -> tuple[TreeScan, Path]:
        """Scan the task's write paths and record it as running, durably, before its process
        exists: the start snapshot and the log it will write."""
        run = self.run()
        before = self.scan(paths)
        odd = not_utf8(before)
        if odd:
            # The run's state (msgpack) and the event log (JSON) hold text, and such a name
            # is bytes: its start snapshot could not be recorded, so the task cannot run
            # safely (as a lock on such a path is refused).
            raise UsageError(
                f"its write paths hold {printable(odd[0])}, a file name that is not UTF-8, "
                "which a wave run cannot record; nothing was run (rename the file)"
            )
        log_path = self.store.log_dir(run.id) / f"{safe_name(task.id)}.log"
        with self.mutex:
            task_run.status = "running"
            task_run.attempts += 1
            task_run.started = time.time()
            task_run.finished = None
            task_run.lock_wait = round(task_run.started - queued, 6)
            task_run.before = before
            task_run.log = str(log_path)
        # Durable before the process exists: see the module docstring.
        self.journal().log(task_run)
        faults.point("wave.after-start-record")  # recorded as running, no process yet
        self.emit(
            "task-start", task_run, attempt=task_run.attempts, checkpoint=task_run.checkpoint,
            lock_wait=task_run.lock_wait, command=task.describe_run(),
        )
        return before, log_path

    def _keep_or_roll_back(
        self, task: Task, task_run: TaskRun, files: list[str], error: str, *, roll_back: bool
    ) -> tuple[list[str], str]:
        """Roll back what a failed or interrupted task wrote; attribute what it kept. Returns
        the files rolled back and the error, grown by what went wrong here."""
        rolled: list[str] = []
        if roll_back:
            try:
                rolled = self.baselines.rollback(task_run, files)
            except VersatilError as exc:
                error = f"{error}; rollback failed: {exc}" if error else f"rollback failed: {exc}"
            if files and not self.run().checkpoints:
                error += "; its files were kept (checkpoints.enabled is false: no rollback)"
        # Attribute what it changed and kept: a rolled-back file is no longer its work, and
        # counting it would make a later `restore --agent` refuse over a change that is gone.
        # (A name that is not UTF-8 cannot be logged either; the task failed over it.)
        kept = [f for f in files if f not in set(rolled) and not has_surrogates(f)]
        if kept:
            from versatil_fs.checkpoints import record_files_modified

            with contextlib.suppress(VersatilError):
                record_files_modified(
                    self.repo, task.agent, kept, wave=task_run.wave, task=task.id
                )
        return rolled, error

    def _record_settled(
        self, task_run: TaskRun, files: list[str], rolled: list[str], error: str, *,
        interrupted: bool,
    ) -> None:
        """Make the task's outcome durable while it still holds its locks.

        Once they are released another agent may change its files; a resume that then
        compared them with the task's start snapshot would roll that agent's work back. So
        the snapshot goes (``before`` cleared) in the same fdatasync'd record that holds what
        the task modified and what was rolled back: a resume only marks such a task ended.
        """
        with self.mutex:
            task_run.files = files
            task_run.rolled_back = rolled
            task_run.error = error
            task_run.before = None
            if interrupted:  # stopped and rolled back: to be run again, from nothing
                task_run.status = "pending"
                task_run.started = task_run.finished = task_run.exited = None
        try:
            self.journal().log(task_run)
        except (StateError, Stopped):
            pass  # as for the exit record: the state write that follows is the record then
        faults.point("wave.after-outcome-record")

    def _spawn_and_wait(
        self, task: Task, task_run: TaskRun, log_path: Path, held: Held
    ) -> tuple[int | None, str, bool, float]:
        """Run the command; returns (exit code, error, interrupted, when it exited)."""
        env = task_environment(self.run(), task, task_run.wave, held.fence)
        # Everything the task starts inherits its lease's descriptor, so its locks last as
        # long as the last of those processes, even if this executor is killed (see
        # versatil_fs.runner.ProcessTree); the pipe beside it tells when they have all gone.
        tree = ProcessTree(held.lease_fd)
        tree.export(env)
        try:
            # Opened like the state's lock files: 0600, no symlink followed, close-on-exec.
            log_fd = self.state.open_lock_file(log_path)
            try:
                proc = spawn_task(
                    task, task_run.attempts, self.repo.toplevel, env, log_fd, tree.pass_fds
                )
            except OSError as exc:
                return None, f"could not start: {exc.strerror or exc}", False, time.time()
            finally:
                os.close(log_fd)
            tree.started()
            return self._wait_for(task, task_run, proc, tree, held)
        finally:
            tree.close()

    def _wait_for(
        self, task: Task, task_run: TaskRun, proc: subprocess.Popen[bytes], tree: ProcessTree,
        held: Held,
    ) -> tuple[int | None, str, bool, float]:
        self.workers[task.id].proc = proc
        with self.mutex:
            task_run.pid = proc.pid
        # The document catches up with the write-ahead record. A failed state write is the
        # main thread's to report: raising here would leave the process running unwaited
        # for, and its lease released under it.
        with contextlib.suppress(StateError):
            self.journal().note()
        self.inbox.put(Outcome(task=task.id, kind="started"))
        faults.point("wave.task-started")
        code, timed_out = wait_task(proc, task.timeout)
        ended = time.time()
        interrupted = self.stopping.is_set() and not timed_out
        exit_code, error = describe_exit(code, timed_out, task.timeout)
        if not interrupted:
            # Before anything else, the kill below included: from here on a crash no longer
            # makes `wave resume` run the task again (see the module docstring).
            faults.point("wave.before-exit-record")
            self._record_exit(task_run, exit_code, error, ended)
        # The task is everything it started: anything it left running would go on writing
        # once its locks are gone, so it ends with the task. Its process group first; then
        # whatever left the group (setsid, daemons), found by the marker in its environment.
        killed, left = end_task_tree(proc, tree, self.run().id, task.id)
        if left:
            # Still alive without our marker (it cleared its environment): its locks are
            # left to it and end when it does, instead of letting it write unguarded.
            held.handed_over = True
            self.emit("task-leftovers", task_run, killed=killed,
                       locks="kept until the processes left exit")
        self.workers[task.id].proc = None
        return exit_code, "" if interrupted else error, interrupted, ended

    def _record_exit(
        self, task_run: TaskRun, exit_code: int | None, error: str, ended: float
    ) -> None:
        """Make the task's exit durable the moment it happens: one fdatasync'd append."""
        with self.mutex:
            task_run.exited = ended
            task_run.exit_code = exit_code
            task_run.error = error
        try:
            self.journal().log(task_run)
        except (StateError, Stopped):
            # A full disk: the exit still reaches the state through the usual write, and until
            # then a crash makes resume run the task again, as before this record existed.
            pass

    @contextlib.contextmanager
    def task_locks(
        self, task: Task, *, wait: float, on_wait: Callable[[Task], None] | None = None
    ) -> Iterator[Held]:
        """Hold the task's locks, as its agent, for the block (nothing to hold: no locks).

        Released at the end, unless the block left them to processes the task started that
        could not be stopped (:attr:`Held.handed_over`): they then end with those processes.
        """
        if not task.writes and not task.reads:
            yield Held()
            return
        from versatil_fs.locks.manager import LockManager

        # One manager per task: a manager's table transactions are not safe to share between
        # threads (they flock one descriptor), and each task is a thread here.
        manager = LockManager(self.repo, state=self.state, config=self.config)
        try:
            claims = self.claims[task.id]
            writes = [c.resource for c in claims if c.mode == "write"]
            reads = [c.resource for c in claims if c.mode == "read"]
            # Not granted within a moment means queued behind a holder: say so. (A first try
            # with wait=0 would tell for sure, but logs a lock conflict for a normal wait.)
            granted = threading.Event()
            timer = threading.Timer(
                0.1, lambda: None if granted.is_set() or on_wait is None else on_wait(task)
            )
            timer.daemon = True
            timer.start()
            try:
                lease = manager.acquire(
                    writes, reads=reads, agent=task.agent, wait=wait, priority=task.priority
                )
            finally:
                granted.set()
                timer.cancel()
            held = Held(lease_fd=manager.lease_descriptor(), fence=lease.fence)
            try:
                yield held
            finally:
                if held.handed_over:
                    manager.hand_over()
                else:
                    try:
                        lease.release()
                    except StateError:
                        # The table cannot be rewritten (a full disk). Closing the manager
                        # below drops the flock, so the grant is dead and reclaimed at the
                        # next look; the task's outcome must not be replaced by this error.
                        pass
        finally:
            manager.close()


class TaskPool:
    """The worker threads: at most one per slot, kept for the run, each running the tasks it is
    handed one at a time. (Starting a thread per task made the scheduler wait for each new
    thread to be scheduled before it went on.)"""

    def __init__(self, runner: TaskRunner) -> None:
        self._runner = runner
        self._tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def hand_over(self, task: Task, in_flight: int) -> None:
        """Give ``task`` to the next free thread; one more thread while there are fewer than
        the ``in_flight`` tasks."""
        self._tasks.put(task)
        if len(self._threads) < in_flight:
            thread = threading.Thread(target=self._serve, name="task-pool", daemon=True)
            self._threads.append(thread)
            thread.start()

    def close(self) -> None:
        for _ in self._threads:
            self._tasks.put(None)  # each thread ends once it is free

    def _serve(self) -> None:
        me = threading.current_thread()
        while (task := self._tasks.get()) is not None:
            me.name = f"task-{task.id}"
            self._runner.work(task)
            me.name = "task-pool"
