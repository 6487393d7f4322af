"""``versatil wave plan | run | resume | status``: parse, call the plan and executor, print."""

from __future__ import annotations

from pathlib import Path

import click
import msgspec

from versatil_fs.cli._common import echo, echo_json, json_option
from versatil_fs.errors import UsageError
from versatil_fs.plan import Plan, Schedule, Task, format_duration

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
