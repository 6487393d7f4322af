"""``versatil wave plan | run | resume | status``: parse, call the plan and executor, print.

What is printed is :mod:`versatil_fs.cli.wave_text`'s; the live progress of a run is
:mod:`versatil_fs.cli.wave_progress`'s.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click
import msgspec

from versatil_fs.cli.common import echo, echo_json, json_option, say_library_notices
from versatil_fs.cli.wave_progress import PlainProgress, RichProgress, progress
from versatil_fs.cli.wave_text import markdown, plan_lines, report_lines, status_lines
from versatil_fs.errors import UsageError
from versatil_fs.waves.plan import Plan, Task
from versatil_fs.waves.records import RunState
from versatil_fs.waves.report import Report
from versatil_fs.waves.resolve import Schedule

if TYPE_CHECKING:
    from versatil_fs.waves.store import RunStore

__all__ = [
    # What the demo draws a run with (they live in wave_progress and wave_text).
    "PlainProgress",
    "PlanView",
    "RichProgress",
    "StatusView",
    "max_agents_option",
    "plan_",
    "report_",
    "report_lines",
    "resume",
    "run_",
    "status",
    "wave",
]

report_option = click.option(
    "--report", "report_file", type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.html",
    help="At the end, also write the run's picture (as `wave report --html`) to FILE.html.",
)

max_agents_option = click.option(
    "--max-agents", type=click.IntRange(min=1), metavar="N",
    help="Tasks running at once (default parallel.max_concurrent_agents).",
)


@click.group()
def wave() -> None:
    """Run a plan of tasks in parallel waves, under locks, with checkpoints."""
    say_library_notices()


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
@report_option
@json_option
def run_(
    file: Path, max_agents: int | None, max_waves: int | None, lock_wait: float | None,
    report_file: Path | None, as_json: bool,
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
    return _conclude(run, as_json, report_file)


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
@report_option
@json_option
def resume(run_id: str | None, max_agents: int | None, lock_wait: float | None,
           retry_failed: bool, report_file: Path | None, as_json: bool) -> int:
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
    return _conclude(run, as_json, report_file)


def _conclude(run: RunState, as_json: bool, report_file: Path | None = None) -> int:
    from versatil_fs.waves.picture import html_report
    from versatil_fs.waves.report import report

    if report_file is not None:
        # Written first: an interrupted or failed run is the one most worth looking at.
        state = "interrupted" if run.status == "running" else None
        _write(report_file, html_report(report(run, status=state)), "the HTML report", as_json)
    if run.status == "running":  # interrupted: resumable
        result = report(run, status="interrupted")
        if as_json:
            echo_json(result)
        # Else the progress said so already ("Interrupted: ... resume with: versatil wave
        # resume X", the run-interrupted event): once is enough.
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
    from versatil_fs.waves.report import report
    from versatil_fs.waves.store import RunStore, effective_status

    store = RunStore()
    run = _find_run(store, run_id)
    if run is None:
        if as_json:
            echo_json({"version": 1, "status": None, "run": None})
        else:
            echo(NO_RUNS)
        return
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


NO_RUNS = "No wave runs in this repository yet; start one with `versatil wave run`."


def _find_run(store: RunStore, run_id: str | None) -> RunState | None:
    """The run named (any unique prefix of its id), or this repository's latest (None: none)."""
    from versatil_fs.repo import Repository

    if run_id is not None:
        return store.load(run_id)
    runs = store.runs(Repository.find(".").key)
    return runs[-1] if runs else None


# report -----------------------------------------------------------------------------------------
@wave.command(name="report")
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option(
    "--html", "html_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
    help="Write the run's picture to FILE: one self-contained HTML page (no network, no "
    "JavaScript) with a timeline of its tasks by agent, coloured by wave, failed ones marked.",
)
@click.option(
    "--trace", "trace_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
    help="Write the run as Chrome trace-event JSON to FILE, for ui.perfetto.dev or "
    "chrome://tracing (one track per agent).",
)
@click.option(
    "--markdown", "as_markdown", is_flag=True,
    help="Print a Markdown summary table; with $GITHUB_STEP_SUMMARY set, append it there too.",
)
@json_option
def report_(run_id: str | None, html_file: Path | None, trace_file: Path | None,
            as_markdown: bool, as_json: bool) -> None:
    """A run's report (default: the latest of this repository), as text, a picture or a trace.

    Without an option it prints the report `wave status` prints once a run is done.
    """
    from versatil_fs.waves.picture import html_report
    from versatil_fs.waves.report import report
    from versatil_fs.waves.store import RunStore, effective_status
    from versatil_fs.waves.trace import trace_json

    store = RunStore()
    run = _find_run(store, run_id)
    if run is None:
        raise UsageError(NO_RUNS)
    result = report(run, status=effective_status(run, store))
    if html_file is not None:
        _write(html_file, html_report(result), "the HTML report", as_json)
    if trace_file is not None:
        _write(trace_file, trace_json(result), "the trace", as_json)
    if as_markdown:
        text = markdown(result)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            _append(Path(summary), text)
        if not as_json:
            click.echo(text, nl=False)
    if as_json:
        echo_json(result)
    elif html_file is None and trace_file is None and not as_markdown:
        for line in report_lines(run, result):
            echo(line)


def _write(path: Path, text: str, what: str, quiet: bool) -> None:
    """Write a whole file or none: a temporary name beside it, then renamed over it, so a
    browser or a CI upload never reads half a report."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise UsageError(
            f"Cannot write {what} to {path}: {exc.strerror or exc}."
        ) from None
    if not quiet:
        echo(f"Wrote {what}: {path.resolve()}")


def _append(path: Path, text: str) -> None:
    try:
        with path.open("a", encoding="utf-8") as out:
            out.write(text + "\n")
    except OSError as exc:
        raise UsageError(
            f"Cannot append the summary to $GITHUB_STEP_SUMMARY ({path}): "
            f"{exc.strerror or exc}."
        ) from None


# Rendering --------------------------------------------------------------------------------------
