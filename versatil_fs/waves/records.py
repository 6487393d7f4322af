"""The records of a wave run: a task's run (:class:`TaskRun`), a stretch of the executor
(:class:`Session`) and the run (:class:`RunState`), the schema on disk and in ``--json``.
"""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING, Literal

import msgspec

from versatil_fs.monitor.scan import Stamp
from versatil_fs.waves.plan import Plan

if TYPE_CHECKING:
    from versatil_fs.repo import Repository
    from versatil_fs.waves.resolve import Schedule

__all__ = [
    "MAX_LOCK_WAIT",
    "MAX_SLOTS",
    "MAX_TIME",
    "RUN_ID",
    "SCHEMA_VERSION",
    "STREAM",
    "TERMINAL",
    "RunState",
    "RunStatus",
    "Session",
    "Status",
    "TaskRun",
    "new_run",
]


SCHEMA_VERSION = 1
STREAM = "wave-execution"
RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{4}")  # as new_run makes them
MAX_SLOTS = 10_000  # agents or waves in flight: more is not a run this machine made
MAX_LOCK_WAIT = 1e9  # the lock manager's "for ever"
MAX_TIME = 1e11  # seconds since 1970 (the year 5138): anything later is not a time

Status = Literal["pending", "waiting", "running", "succeeded", "failed", "skipped"]
RunStatus = Literal["running", "succeeded", "failed", "interrupted"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "skipped"})



class TaskRun(msgspec.Struct, kw_only=True):
    """One task of a run: where it is, and what happened the last time it ran."""

    id: str
    agent: str
    wave: int
    status: Status = "pending"
    attempts: int = 0
    started: float | None = None  # its process started (after its locks were granted)
    finished: float | None = None
    lock_wait: float = 0.0  # seconds spent in the lock queue
    exit_code: int | None = None
    error: str = ""
    files: list[str] = []  # files it modified, under its write paths
    rolled_back: list[str] = []
    skipped_because: str = ""
    log: str = ""
    pid: int = 0
    # When its process exited: recorded (write-ahead, fdatasynced) the moment it does, before
    # its files are compared or rolled back; a resume finds the task ended, not interrupted.
    exited: float | None = None
    checkpoint: str | None = None  # the baseline its files are rolled back to
    # While running: its write paths as they were when it started (path -> stat stamp), so a
    # resume can tell what it changed. Cleared when it ends.
    before: dict[str, Stamp] | None = None

    @property
    def duration(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return max(0.0, self.finished - self.started)


class Session(msgspec.Struct, kw_only=True):
    """One stretch of the executor running (a run has one, plus one per resume)."""

    pid: int
    started: float
    ended: float | None = None


class RunState(msgspec.Struct, kw_only=True):
    """A wave run: the schema on disk (msgpack), in the API and in ``wave status --json``."""

    version: int = SCHEMA_VERSION
    id: str
    status: RunStatus = "running"
    plan: Plan
    plan_file: str
    repo: str  # the working tree
    repo_key: str  # its git common directory
    created: float
    finished: float | None = None
    max_agents: int
    max_waves: int
    checkpoints: bool = True
    waves: list[list[str]]
    wave_checkpoints: dict[int, str] = {}
    tasks: dict[str, TaskRun]
    sessions: list[Session] = []
    lower_bound_estimate: float = 0.0
    # The number of the last start record (see Journal.log) whose transition this document
    # holds: the records after it in waves/<run>.wal are newer than the document.
    journal: int = 0

    @property
    def done(self) -> bool:
        return all(t.status in TERMINAL for t in self.tasks.values())

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for task in self.tasks.values():
            found[task.status] = found.get(task.status, 0) + 1
        return found

    def waves_done(self) -> int:
        return sum(
            1 for wave in self.waves if all(self.tasks[t].status in TERMINAL for t in wave)
        )


def new_run(plan: Plan, schedule: Schedule, repo: Repository, *, max_agents: int,
            max_waves: int, checkpoints: bool) -> RunState:
    """A run of ``plan`` about to start, every task pending in its wave; its id
    (:data:`RUN_ID`) is the local time and two random bytes."""
    now = time.time()
    run_id = f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{os.urandom(2).hex()}"
    return RunState(
        id=run_id, plan=plan, plan_file=plan.path, repo=str(repo.toplevel),
        repo_key=repo.key, created=now, max_agents=max_agents,
        max_waves=max_waves, checkpoints=checkpoints,
        waves=[list(w.tasks) for w in schedule.waves],
        tasks={
            t.id: TaskRun(id=t.id, agent=t.agent, wave=schedule.wave_of[t.id])
            for t in plan.tasks
        },
        lower_bound_estimate=schedule.lower_bound,
    )
