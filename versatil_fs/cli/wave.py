"""``versatil wave plan | run | resume | status``: parse, call the plan and executor, print."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import msgspec

from versatil_fs.cli.common import echo, echo_json, json_option
from versatil_fs.errors import UsageError
from versatil_fs.waves.plan import Plan, Task, format_duration
from versatil_fs.waves.progress import Progress
from versatil_fs.waves.records import RunState, TaskRun
from versatil_fs.waves.report import Report
from versatil_fs.waves.resolve import Schedule

__all__ = [
    "PlainProgress",
    "PlanView",
    "RichProgress",
    "StatusView",
    "bound_lines",
    "event_line",
    "max_agents_option",
    "plan_",
    "plan_lines",
    "progress",
    "report_lines",
    "resume",
    "run_",
    "status",
    "status_lines",
    "wave",
]

max_agents_option = click.option(
    "--max-agents", type=click.IntRange(min=1), metavar="N",
    help="Tasks running at once (default parallel.max_concurrent_agents).",
)


@click.group()
def wave() -> None:
    """Run a plan of tasks in parallel waves, under locks, with checkpoints."""


# plan -------------------------------------------------------------------------------------------
class PlanView(msgspec.Struct, kw_only=True):
    """``wave plan --json``: the plan's tasks wave by wave and what bounds its makespan."""

    version: int = 1
    plan: str
    name: str
    tasks: int
    waves: list[list[Task]]
    schedule: Schedule


@wave.command(name="plan")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@max_agents_option
@json_option
def plan_(file: Path, max_agents: int | None, as_json: bool) -> None:
    """Show the waves of FILE, its critical path and makespan bound, without running it."""
    plan = Plan.load(file)
    agents = max_agents or _configured_agents()
    schedule = plan.schedule(agents=agents)
    if as_json:
        by_id = {t.id: t for t in plan.tasks}
        echo_json(
            PlanView(
                plan=str(file), name=plan.name, tasks=len(plan.tasks),
                waves=[[by_id[t] for t in w.tasks] for w in schedule.waves], schedule=schedule,
            )
        )
        return
    for line in plan_lines(plan, schedule, str(file)):
        echo(line)


def plan_lines(plan: Plan, schedule: Schedule, source: str) -> list[str]:
    """The human form of ``wave plan``; the demo prints it too."""
    by_id = {t.id: t for t in plan.tasks}
    agents = sorted({t.agent for t in plan.tasks})
    title = f"Plan {plan.name} ({source})" if plan.name else f"Plan {source}"
    lines = [
        f"{title}: {len(plan.tasks)} tasks in {len(schedule.waves)} waves, "
        f"{len(agents)} agent{'s' if len(agents) != 1 else ''}",
        "",
    ]
    id_width = max(len(t.id) for t in plan.tasks)
    agent_width = max(len(t.agent) for t in plan.tasks)
    for wave in schedule.waves:
        lines.append(f"Wave {wave.number}  (est. {format_duration(wave.estimate)})")
        for task_id in wave.tasks:
            task = by_id[task_id]
            what = []
            if task.needs:
                what.append("needs " + ", ".join(task.needs))
            if task.writes:
                what.append("writes " + ", ".join(task.writes))
            if task.reads:
                what.append("reads " + ", ".join(task.reads))
            lines.append(
                f"  {task.id:<{id_width}}  {task.agent:<{agent_width}}  "
                f"{format_duration(task.estimate):>7}  {'; '.join(what)}".rstrip()
            )
    lines.append("")
    lines.extend(bound_lines(schedule))
    return lines


def bound_lines(schedule: Schedule) -> list[str]:
    critical = " -> ".join(schedule.critical_path)
    share = schedule.total_estimate / schedule.agents
    reason = (
        "the critical path" if schedule.critical_path_estimate >= share
        else f"total work / {schedule.agents}"
    )
    lines = [
        f"Critical path ({format_duration(schedule.critical_path_estimate)}): {critical}",
        f"One task at a time: {format_duration(schedule.total_estimate)}; "
        f"wave by wave: {format_duration(schedule.barrier_estimate)}",
        f"Lower bound on the makespan with {schedule.agents} agents: "
        f"{format_duration(schedule.lower_bound)} ({reason})",
    ]
    if schedule.unestimated:
        missing = schedule.unestimated
        named = ", ".join(missing[:5]) + ("..." if len(missing) > 5 else "")
        lines.append(f"({len(missing)} of the tasks have no estimate and count as 0: {named})")
    return lines


def _configured_agents() -> int:
    from versatil_fs import config
    from versatil_fs.repo import Repository

    try:
        root: Path | None = Repository.find(".").toplevel
    except UsageError:
        root = None  # planning needs no repository; use the user's and built-in settings
    return config.load(root).parallel.max_concurrent_agents


# run / resume / status --------------------------------------------------------------------------
@wave.command(name="run")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@max_agents_option
@click.option(
    "--max-waves", type=click.IntRange(min=1), metavar="N",
    help="Waves in flight at once (default parallel.max_concurrent_waves).",
)
@click.option(
    "--lock-wait", type=click.FloatRange(min=0), metavar="S",
    help="Seconds a task may wait for its locks before it fails.",
)
@json_option
def run_(
    file: Path, max_agents: int | None, max_waves: int | None, lock_wait: float | None,
    as_json: bool,
) -> int:
    """Run the plan in FILE: tasks in parallel under locks, a checkpoint before every wave.

    Exits 0 when every task succeeded, 1 when one failed, 130 when interrupted (resumable).
    """
    from versatil_fs.waves.executor import WaveExecutor

    plan = Plan.load(file)
    with progress(quiet=as_json) as observer:
        executor = WaveExecutor(
            plan, max_agents=max_agents, max_waves=max_waves, lock_wait=lock_wait,
            observer=observer,
        )
        run = executor.run()
    return _conclude(run, as_json)


@wave.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@max_agents_option
@click.option(
    "--lock-wait", type=click.FloatRange(min=0), metavar="S",
    help="Seconds a task may wait for its locks before it fails.",
)
@click.option(
    "--retry-failed", is_flag=True,
    help="Also go on with a run that ended failed: run its failed tasks (already rolled back) "
    "and the tasks skipped because of them again.",
)
@json_option
def resume(run_id: str | None, max_agents: int | None, lock_wait: float | None,
           retry_failed: bool, as_json: bool) -> int:
    """Go on with an interrupted run (default: the latest of this repository).

    Tasks that were running are rolled back and run again; finished tasks never are, except
    with --retry-failed the failed ones and those skipped because of them.
    """
    from versatil_fs.waves.executor import WaveExecutor

    with progress(quiet=as_json) as observer:
        run = WaveExecutor.resume(
            run_id, max_agents=max_agents, lock_wait=lock_wait, observer=observer,
            retry_failed=retry_failed,
        )
    return _conclude(run, as_json)


def _conclude(run: RunState, as_json: bool) -> int:
    from versatil_fs.waves.report import report

    if run.status == "running":  # interrupted: resumable
        result = report(run, status="interrupted")
        if as_json:
            echo_json(result)
        else:
            echo(f"Interrupted; go on with: versatil wave resume {run.id}")
        return 130
    result = report(run)
    if as_json:
        echo_json(result)
    else:
        for line in report_lines(run, result):
            echo(line)
    return 0 if run.status == "succeeded" else 1


class StatusView(msgspec.Struct, kw_only=True):
    """``wave status --json``: the run's recorded state, its live status and its report."""

    version: int = 1
    status: str  # running, interrupted, succeeded or failed
    run: RunState
    report: Report


@wave.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@json_option
def status(run_id: str | None, as_json: bool) -> None:
    """Where a run is (default: the latest of this repository), and its report once done."""
    from versatil_fs.repo import Repository
    from versatil_fs.waves.report import report
    from versatil_fs.waves.store import RunStore, effective_status

    store = RunStore()
    if run_id is None:
        here = Repository.find(".")
        runs = store.runs(here.key)
        if not runs:
            if as_json:
                echo_json({"version": 1, "status": None, "run": None})
            else:
                echo("No wave runs in this repository yet; start one with `versatil wave run`.")
            return
        run = runs[-1]
    else:
        run = store.load(run_id)
    state = effective_status(run, store)
    result = report(run, status=state)
    if as_json:
        echo_json(StatusView(status=state, run=run, report=result))
        return
    for line in status_lines(run, state):
        echo(line)
    if state in ("succeeded", "failed"):
        echo("")
        for line in report_lines(run, result):
            echo(line)
    elif state == "interrupted":
        echo("")
        echo(f"The executor is gone; go on with: versatil wave resume {run.id}")


# Rendering --------------------------------------------------------------------------------------
def status_lines(run: RunState, state: str) -> list[str]:
    import time

    counts = run.counts()
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.created))
    lines = [
        f"Wave run {run.id}: {state}",
        f"  plan {run.plan_file or '-'} in {run.repo}, started {created}"
        + (f", resumed {len(run.sessions) - 1}x" if len(run.sessions) > 1 else ""),
        f"  waves done {run.waves_done()}/{len(run.waves)}; tasks: {summary}",
        "",
    ]
    width = max(len(t) for t in run.tasks)
    now = time.time()
    for task in run.tasks.values():
        if task.status == "running" and task.started is not None:
            took = f"{format_duration(now - task.started)} so far"
        else:
            took = format_duration(task.duration) if task.duration is not None else ""
        note = task.error or task.skipped_because
        if task.status == "running" and task.exited is not None:
            # Its exit is on disk, its outcome not yet: resume settles it, never re-runs it.
            took = format_duration(max(0.0, task.exited - (task.started or task.exited)))
            note = f"exited ({task.exit_code}); not run again by resume, only settled"
        lines.append(
            f"  {task.id:<{width}}  wave {task.wave:<3} {task.agent:<16} {task.status:<10} "
            f"{took:>8}  {note}".rstrip()
        )
    return lines


def report_lines(run: RunState, result: Report) -> list[str]:
    """The end-of-run report: tasks, waves, speedup, the lower bound and utilization bars."""
    counts = run.counts()
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    lines = [f"Wave run {run.id}: {result.status} ({summary})", ""]
    width = max(4, *(len(t.id) for t in result.tasks))
    agent_width = max(5, *(len(t.agent) for t in result.tasks))
    lines.append(
        f"  {'task':<{width}}  {'agent':<{agent_width}}  wave  {'status':<9}  {'time':>7}  "
        f"{'locks':>6}  files"
    )
    for task in result.tasks:
        lines.append(
            f"  {task.id:<{width}}  {task.agent:<{agent_width}}  {task.wave:>4}  "
            f"{task.status:<9}  {format_duration(task.duration):>7}  "
            f"{format_duration(task.lock_wait) if task.duration is not None else '-':>6}  "
            f"{len(task.files) if task.duration is not None else '-'}"
        )
    lines.append("")
    lines.append("  waves: " + " · ".join(
        f"{w.number}: {format_duration(w.duration)}" for w in result.waves
    ))
    for task in result.tasks:
        if task.status == "failed":
            rolled = (
                f"; rolled back {', '.join(task.rolled_back[:6])}"
                + ("..." if len(task.rolled_back) > 6 else "")
                if task.rolled_back
                else "" if "rollback failed" in task.error else "; nothing to roll back"
            )
            lines.append(f"  failed: {task.id} ({task.agent}): {task.error}{rolled}")
            if task.log:
                lines.append(f"          log: {task.log}")
    for task in result.tasks:
        if task.status == "skipped":
            lines.append(f"  skipped: {task.id} ({task.agent}): {task.skipped_because}")
    lines.append("")
    if result.speedup is not None:
        lines.append(
            f"Makespan {format_duration(result.makespan)}; one after another "
            f"{format_duration(result.sequential)}: {result.speedup:.2f}x faster"
        )
    if result.efficiency is not None:
        lines.append(
            f"Lower bound {format_duration(result.lower_bound)} (critical path, or the work "
            f"shared by {result.agents} agents): the run took {1 / result.efficiency:.2f}x "
            f"the least possible ({result.efficiency:.0%} efficient)"
            if result.efficiency > 0 else
            f"Lower bound {format_duration(result.lower_bound)}"
        )
    if result.lower_bound_estimate:
        estimate = format_duration(result.lower_bound_estimate)
        lines.append(f"The plan's estimates bounded it at {estimate}")
    if result.utilization and result.sequential > 0:
        name_width = max(len(u.agent) for u in result.utilization) + 1
        lines.append("")
        lines.append(f"One after another ({format_duration(result.sequential)}):")
        for use in result.utilization:
            idle = 1 - use.busy / result.sequential
            lines.append(f"  {use.agent + ':':<{name_width}} {use.sequential_timeline} "
                         f"({idle:.0%} idle)")
        lines.append(f"In waves ({format_duration(result.makespan)}):")
        for use in result.utilization:
            lines.append(f"  {use.agent + ':':<{name_width}} {use.timeline} "
                         f"({1 - use.utilization:.0%} idle)")
    return lines


# Live progress ----------------------------------------------------------------------------------
@contextlib.contextmanager
def progress(*, quiet: bool = False) -> Iterator[Progress]:
    """Rich live progress on a terminal, one plain line per transition otherwise."""
    if quiet:
        yield Progress()
        return
    observer: Progress = RichProgress() if sys.stdout.isatty() else PlainProgress(echo)
    try:
        yield observer
    finally:
        observer.close()


def event_line(run: RunState, kind: str, task: TaskRun | None, detail: str) -> str | None:
    """One line for a transition (None: not worth a line)."""
    if task is None:
        if kind == "note":
            return detail
        if kind in ("run-start", "resume"):
            verb = "Resuming" if kind == "resume" else "Running"
            return (f"{verb} wave run {run.id}: {detail} (up to {run.max_agents} tasks at once, "
                    f"{run.max_waves} waves in flight)")
        if kind == "wave-start":
            return f"▶ {detail}"
        if kind == "wave-done":
            return f"✓ {detail} done"
        if kind == "run-interrupted":
            return f"Interrupted: running tasks stopped and rolled back; {detail}"
        return None
    who = f"{task.id} ({task.agent})"
    if kind == "task-start":
        return f"  start    {who}" + (f", after {format_duration(task.lock_wait)} in the lock "
                                       "queue" if task.lock_wait >= 0.5 else "")
    if kind == "task-waiting":
        return f"  waiting  {who} for its locks"
    if kind == "task-done":
        return f"  done     {who} in {format_duration(task.duration)}, {_count(task.files)}"
    if kind == "task-failed":
        rolled = f"; rolled back {_count(task.rolled_back)}" if task.rolled_back else ""
        return f"  FAILED   {who}: {detail}{rolled} (log: {task.log})" if task.log else (
            f"  FAILED   {who}: {detail}{rolled}"
        )
    if kind == "task-skipped":
        return f"  skipped  {who}: {detail}"
    if kind in ("task-interrupted", "rollback"):
        return f"  stopped  {who}: {detail}"
    return None


def _count(files: list[str]) -> str:
    return "1 file" if len(files) == 1 else f"{len(files)} files"


class PlainProgress(Progress):
    """One line per transition, prefixed with the elapsed time: for logs and pipes."""

    def __init__(self, out: Callable[[str], None]) -> None:
        import time

        self.out = out
        self.started = time.monotonic()

    def event(self, run: RunState, kind: str, task: TaskRun | None, detail: str) -> None:
        import time

        line = event_line(run, kind, task, detail)
        if line is not None:
            self.out(f"[{time.monotonic() - self.started:7.1f}s] {line}")


class RichProgress(Progress):
    """A live panel (one line per running task, waves done, elapsed) under scrolling events."""

    def __init__(self) -> None:
        import time

        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        self.started = time.monotonic()
        self.run: RunState | None = None
        self.live = Live(
            console=self.console, get_renderable=self._render, refresh_per_second=8,
            transient=True,
        )
        self.live.start()

    def event(self, run: RunState, kind: str, task: TaskRun | None, detail: str) -> None:
        from rich.text import Text

        self.run = run
        line = event_line(run, kind, task, detail)
        if line is None:
            return
        style = {"task-failed": "bold red", "task-done": "green", "task-skipped": "yellow",
                 "wave-start": "bold cyan", "task-waiting": "magenta"}.get(kind, "")
        self.console.print(Text(line, style=style))

    def tick(self, run: RunState) -> None:
        self.run = run

    def _render(self) -> Any:
        import time

        from rich.table import Table
        from rich.text import Text

        run = self.run
        elapsed = time.monotonic() - self.started
        grid = Table.grid(padding=(0, 2))
        if run is None:
            grid.add_row(Text(f"starting… {elapsed:.1f}s", style="dim"))
            return grid
        counts = run.counts()
        finished = sum(counts.get(s, 0) for s in ("succeeded", "failed", "skipped"))
        grid.add_row(Text(
            f"waves {run.waves_done()}/{len(run.waves)} · tasks {finished}/{len(run.tasks)} · "
            f"{counts.get('failed', 0)} failed · elapsed {elapsed:.1f}s", style="bold",
        ))
        now = time.time()
        for task in list(run.tasks.values()):
            if task.status == "running" and task.started is not None:
                grid.add_row(Text(
                    f"  ⏵ {task.agent:<18} {task.id:<24} wave {task.wave:<3} "
                    f"{now - task.started:6.1f}s", style="cyan",
                ))
            elif task.status == "waiting":
                grid.add_row(Text(
                    f"  … {task.agent:<18} {task.id:<24} wave {task.wave:<3} waiting for locks",
                    style="magenta",
                ))
        return grid

    def close(self) -> None:
        self.live.stop()
