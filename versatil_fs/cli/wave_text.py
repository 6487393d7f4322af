"""The text ``versatil wave`` prints: a plan's waves and bound, a run's status, its report.

Pure formatting of what the resolver, the run store and the report computed (the demo prints
the same lines); the commands in :mod:`versatil_fs.cli.wave` choose which to print.
"""

from __future__ import annotations

import html
import time

from versatil_fs.waves.plan import Plan, format_duration
from versatil_fs.waves.records import RunState
from versatil_fs.waves.report import Report
from versatil_fs.waves.resolve import Schedule

__all__ = ["bound_lines", "markdown", "plan_lines", "report_lines", "status_lines"]


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


def status_lines(run: RunState, state: str) -> list[str]:
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
    lines.extend(_task_table(result))
    lines.append("")
    lines.append("  waves: " + " · ".join(
        f"{w.number}: {format_duration(w.duration)}" for w in result.waves
    ))
    lines.extend(_what_went_wrong(result))
    lines.append("")
    lines.extend(_speed_lines(result))
    lines.extend(_utilization_lines(result))
    return lines


def _task_table(result: Report) -> list[str]:
    """One row per task: agent, wave, status, time, time in the lock queue, files written."""
    width = max(4, *(len(t.id) for t in result.tasks))
    agent_width = max(5, *(len(t.agent) for t in result.tasks))
    lines = [
        f"  {'task':<{width}}  {'agent':<{agent_width}}  wave  {'status':<9}  {'time':>7}  "
        f"{'locks':>6}  files"
    ]
    for task in result.tasks:
        lines.append(
            f"  {task.id:<{width}}  {task.agent:<{agent_width}}  {task.wave:>4}  "
            f"{task.status:<9}  {format_duration(task.duration):>7}  "
            f"{format_duration(task.lock_wait) if task.duration is not None else '-':>6}  "
            f"{len(task.files) if task.duration is not None else '-'}"
        )
    return lines


def _what_went_wrong(result: Report) -> list[str]:
    """The failed tasks (their error, what was rolled back, their log), then the skipped."""
    lines = []
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
    return lines


def _speed_lines(result: Report) -> list[str]:
    """The makespan against one task after another, and against the lower bound."""
    lines = []
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
    return lines


def _utilization_lines(result: Report) -> list[str]:
    """Each agent's timeline, one after another and in waves, and how idle it was."""
    if not (result.utilization and result.sequential > 0):
        return []
    name_width = max(len(u.agent) for u in result.utilization) + 1
    lines = ["", f"One after another ({format_duration(result.sequential)}):"]
    for use in result.utilization:
        idle = 1 - use.busy / result.sequential
        lines.append(f"  {use.agent + ':':<{name_width}} {use.sequential_timeline} "
                     f"({idle:.0%} idle)")
    lines.append(f"In waves ({format_duration(result.makespan)}):")
    for use in result.utilization:
        lines.append(f"  {use.agent + ':':<{name_width}} {use.timeline} "
                     f"({1 - use.utilization:.0%} idle)")
    return lines


_MARK = {"succeeded": "✅", "failed": "❌", "skipped": "⏭️"}


def markdown(result: Report) -> str:
    """``wave report --markdown``: the run's figures and one table row per task, for a CI
    summary (GitHub renders ``$GITHUB_STEP_SUMMARY`` as Markdown)."""
    lines = [f"### Wave run {_cell(result.run)}: {_cell(result.status)}", ""]
    lines += ["| | |", "|---|---|", f"| Makespan | {format_duration(result.makespan)} |"]
    lines.append(f"| Lower bound | {format_duration(result.lower_bound)}"
                 + (f" ({result.efficiency:.0%} efficient)" if result.efficiency else "") + " |")
    if result.speedup is not None:
        lines.append(f"| One after another | {format_duration(result.sequential)} "
                     f"({result.speedup:.2f}x faster in waves) |")
    lines.append(f"| Agents | {result.agents} at once |")
    lines += ["", "| Task | Agent | Wave | Status | Time | Files | Note |",
              "|---|---|---:|---|---:|---:|---|"]
    for task in result.tasks:
        ran = task.duration is not None
        note = task.error or task.skipped_because
        lines.append(
            f"| {_cell(task.id)} | {_cell(task.agent)} | {task.wave} | "
            f"{_MARK.get(task.status, '')} {_cell(task.status)} | "
            f"{format_duration(task.duration)} | {len(task.files) if ran else '-'} | "
            f"{_cell(note)} |"
        )
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """A table cell's text: HTML escaped (GitHub renders inline HTML), pipes escaped, one
    line."""
    flat = " ".join(text.split())
    return html.escape(flat, quote=False).replace("|", "\\|")
