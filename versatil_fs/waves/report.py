"""The pure report of a wave run: per task, per wave and per agent, with a text timeline.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import msgspec

from versatil_fs.waves.records import (
    SCHEMA_VERSION,
    RunState,
    Session,
    TaskRun,
)
from versatil_fs.waves.resolve import critical_path, lower_bound

__all__ = [
    "BAR",
    "AgentUse",
    "Report",
    "TaskReport",
    "WaveReport",
    "report",
]


# The report --------------------------------------------------------------------------------------
class TaskReport(msgspec.Struct, kw_only=True):
    id: str
    agent: str
    wave: int
    status: str
    duration: float | None
    lock_wait: float
    exit_code: int | None
    error: str = ""
    files: list[str] = []
    rolled_back: list[str] = []
    skipped_because: str = ""
    attempts: int = 0
    log: str = ""
    # When it ran, in seconds from the run's first task start on the executor's running time
    # (the gaps between a crash and its resume left out, as in the makespan): the picture's
    # bars and the trace's spans. None for a task that did not run.
    start: float | None = None
    end: float | None = None


class WaveReport(msgspec.Struct, kw_only=True):
    number: int
    tasks: list[str]
    duration: float | None  # first start to last end of its tasks that ran
    checkpoint: str | None = None


class AgentUse(msgspec.Struct, kw_only=True):
    agent: str
    busy: float  # seconds its tasks ran
    utilization: float  # busy / makespan
    timeline: str  # 20 cells: busy (█) or idle (░) over the run
    sequential_timeline: str  # the same tasks, one after another


class Report(msgspec.Struct, kw_only=True):
    """The end-of-run report; the schema of ``wave run --json`` and ``wave status --json``."""

    version: int = SCHEMA_VERSION
    run: str
    status: str
    makespan: float  # executor running time from the first task start to the last end
    sequential: float  # every task that ran, one after another
    speedup: float | None
    lower_bound: float  # max(critical path, sequential / agents), from the actual durations
    lower_bound_estimate: float  # the same from the plan's estimates
    efficiency: float | None  # lower_bound / makespan: 1.0 is as fast as possible
    agents: int
    tasks: list[TaskReport]
    waves: list[WaveReport]
    utilization: list[AgentUse]
    failed: list[str] = []
    skipped: list[str] = []


BAR = 20


def report(run: RunState, status: str | None = None) -> Report:
    """Durations, speedup, the lower bound and utilization, from a run's state (pure)."""
    tasks = list(run.tasks.values())
    ran = [t for t in tasks if t.duration is not None and t.status in ("succeeded", "failed")]
    ran_ids = {t.id for t in ran}
    timeline = _Timeline(run.sessions, ran)
    makespan = timeline.length
    sequential = sum(t.duration or 0.0 for t in ran)
    durations = {t.id: t.duration or 0.0 for t in tasks}
    _, critical = critical_path(run.plan.tasks, durations)
    bound = lower_bound(critical, sequential, run.max_agents) if ran else 0.0
    waves = []
    for number, ids in enumerate(run.waves, start=1):
        members = [run.tasks[t] for t in ids]
        starts = [t.started for t in members if t.started is not None and t.finished is not None]
        ends = [t.finished for t in members if t.finished is not None and t.started is not None]
        duration = timeline.span(min(starts), max(ends)) if starts and ends else None
        waves.append(WaveReport(
            number=number, tasks=ids, duration=duration,
            checkpoint=run.wave_checkpoints.get(number),
        ))
    agents = sorted({t.agent for t in tasks}, key=lambda a: _first_wave(run, a))
    use = []
    cursor = 0.0
    for agent in agents:
        mine = [t for t in ran if t.agent == agent]
        busy = sum(t.duration or 0.0 for t in mine)
        spans = [timeline.interval(t) for t in mine]
        sequential_spans = []
        for task in sorted(mine, key=lambda t: (t.wave, t.started or 0.0)):
            sequential_spans.append((cursor, cursor + (task.duration or 0.0)))
            cursor += task.duration or 0.0
        use.append(AgentUse(
            agent=agent, busy=busy, utilization=busy / makespan if makespan else 0.0,
            timeline=_bar(spans, makespan), sequential_timeline=_bar(sequential_spans, sequential),
        ))
    return Report(
        run=run.id, status=status or run.status, makespan=makespan, sequential=sequential,
        speedup=sequential / makespan if makespan > 0 else None,
        lower_bound=bound, lower_bound_estimate=run.lower_bound_estimate,
        efficiency=bound / makespan if makespan > 0 else None, agents=run.max_agents,
        tasks=[
            TaskReport(
                id=t.id, agent=t.agent, wave=t.wave, status=t.status, duration=t.duration,
                lock_wait=t.lock_wait, exit_code=t.exit_code, error=t.error, files=t.files,
                rolled_back=t.rolled_back, skipped_because=t.skipped_because,
                attempts=t.attempts, log=t.log,
                **_when(timeline, t, t.id in ran_ids),
            )
            for t in tasks
        ],
        waves=waves, utilization=use,
        failed=[t.id for t in tasks if t.status == "failed"],
        skipped=[t.id for t in tasks if t.status == "skipped"],
    )


def _when(timeline: _Timeline, task: TaskRun, ran: bool) -> dict[str, float]:
    if not ran:
        return {}
    start, end = timeline.interval(task)
    return {"start": start, "end": end}


def _first_wave(run: RunState, agent: str) -> tuple[int, int]:
    order = list(run.tasks)
    return min((t.wave, order.index(t.id)) for t in run.tasks.values() if t.agent == agent)


class _Timeline:
    """Wall-clock times mapped onto the executor's running time: the gaps between a crash and
    its resume are left out, so a resumed run's makespan is the time it actually ran."""

    def __init__(self, sessions: Sequence[Session], ran: Sequence[TaskRun]) -> None:
        starts = [t.started for t in ran if t.started is not None]
        ends = [t.finished for t in ran if t.finished is not None]
        self.origin = min(starts) if starts else 0.0
        self.end = max(ends) if ends else self.origin
        # Gaps: from the end of one session to the start of the next. A session killed with
        # -9 recorded no end: its last recorded task start or end stands in for it.
        stamps = [s for t in ran for s in (t.started, t.finished) if s is not None]
        self.gaps = []
        for a, b in itertools.pairwise(sessions):
            end = a.ended
            if end is None:
                end = max((s for s in stamps if a.started <= s <= b.started), default=a.started)
            self.gaps.append((end, b.started))
        self.length = self.offset(self.end)

    def offset(self, when: float) -> float:
        skipped = sum(
            max(0.0, min(when, end) - start) for start, end in self.gaps if start >= self.origin
        )
        return max(0.0, when - self.origin - skipped)

    def span(self, start: float, end: float) -> float:
        return self.offset(end) - self.offset(start)

    def interval(self, task: TaskRun) -> tuple[float, float]:
        assert task.started is not None and task.finished is not None
        return self.offset(task.started), self.offset(task.finished)


def _bar(spans: Sequence[tuple[float, float]], length: float) -> str:
    """20 cells over ``length`` seconds: a cell is busy when spans cover half of it or more."""
    if length <= 0:
        return "░" * BAR
    cell = length / BAR
    out = []
    for i in range(BAR):
        lo, hi = i * cell, (i + 1) * cell
        covered = sum(max(0.0, min(hi, b) - max(lo, a)) for a, b in spans)
        out.append("█" if covered >= cell / 2 else "░")
    return "".join(out)
