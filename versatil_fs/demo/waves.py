"""The demo's wave chapter: the reference note's auth feature run as a plan, end to end.

Run after the lock chapters of :mod:`versatil_fs.demo.locks` (see :data:`CHAPTERS` here).
On the demo's throwaway repository it shows, in a few seconds of real processes:

* the plan's waves, critical path and lower bound (``versatil wave plan``);
* the plan running in waves with live progress;
* one agent blocked by a lock another agent holds, and handed the directory when it is released;
* one unlocked write caught by the monitor;
* one task failing half-way: only its files rolled back, the task that needs it skipped, the
  others going on;
* the checkpoints made before every wave, and the speedup report with utilization bars.

The plan and its scripted agents are ``versatil_fs/examples/auth``: they ship inside the package
(the source tree's top-level ``examples`` is a link to ``versatil_fs/examples``), so the chapter
runs from a wheel install as from a checkout.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from versatil_fs.waves.executor import WaveExecutor
from versatil_fs.waves.plan import Plan, format_duration
from versatil_fs.waves.progress import Progress
from versatil_fs.waves.records import RunState, TaskRun
from versatil_fs.waves.report import Report, report

if TYPE_CHECKING:
    from versatil_fs.demo.stage import Agent, Demo

__all__ = ["BLOCKED_DIR", "CHAPTERS", "EXAMPLE", "FAILING", "MINUTE", "STRAY", "chapter_waves"]

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "auth" / "plan.yaml"
# Seconds of real time per minute of estimate: the 90-minute critical path runs in ~2.7 s.
MINUTE = "0.03"
FAILING = "connect-api"  # James-Frontend gives up half-way through wiring the UI to the API
STRAY = "backend"  # Marcus-Backend also touches README.md, which nobody locked
BLOCKED_DIR = "app/ui/"


def chapter_waves(demo: Demo) -> None:
    demo.say("8. The auth feature as a plan: nine tasks for seven agents, run in waves.")
    if not EXAMPLE.is_file():
        demo.step(f"(skipped: the example plan {EXAMPLE} is not in this installation)")
        return
    plan = Plan.load(EXAMPLE)
    schedule = plan.schedule(agents=5)
    demo.step("versatil wave plan examples/auth/plan.yaml:")
    for wave in schedule.waves:
        tasks = ", ".join(f"{t} ({plan.task(t).agent})" for t in wave.tasks)
        demo.say(f"      wave {wave.number} ({format_duration(wave.estimate)}): {tasks}")
    demo.say(
        f"      critical path {' -> '.join(schedule.critical_path)}: "
        f"{format_duration(schedule.critical_path_estimate)}; one task at a time "
        f"{format_duration(schedule.total_estimate)}; lower bound "
        f"{format_duration(schedule.lower_bound)}"
    )
    reviewer = demo.agent("Alex-BA", BLOCKED_DIR)
    reviewer.granted()
    demo.step(f"Alex-BA is still reviewing {BLOCKED_DIR} (and holds its lock) as the run starts.")
    demo.step(
        f"{FAILING} will fail half-way; {STRAY} will also edit README.md without a lock. Go:"
    )
    with _monitor(demo.repo) as unlocked, _environment(
        AUTH_MINUTE=MINUTE, AUTH_FAIL=FAILING, AUTH_STRAY=STRAY
    ):
        observer = _progress(demo, reviewer)
        try:
            run = WaveExecutor(plan, repo=demo.repo, observer=observer).run()
        finally:
            observer.close()
    _tell_outcome(demo, run, unlocked)


def _tell_outcome(demo: Demo, run: RunState, unlocked: list[str]) -> None:
    failed = run.tasks[FAILING]
    demo.step(
        f"{FAILING} failed; rolled back only its own files ({', '.join(failed.rolled_back)}): "
        f"{(demo.repo / 'app/ui/api.ts').read_text().splitlines()[0]}"
    )
    skipped = [t for t in run.tasks.values() if t.status == "skipped"]
    for task in skipped:
        demo.step(f"{task.id} ({task.agent}) skipped: {task.skipped_because}; the rest went on.")
    stray = [line for line in unlocked if line.endswith(" README.md")]
    if stray:
        demo.step(f"The monitor caught {STRAY}'s unlocked write: {stray[0]}")
    from versatil_fs.checkpoints import Checkpoints

    mine = [c for c in Checkpoints(demo.repo).list() if run.id in c.message]
    demo.step(f"Checkpoints of this run ({len(mine)}; `versatil checkpoint list`):")
    for record in mine:
        demo.say(f"      {record.id}  {record.message}")
    from versatil_fs.cli.wave import report_lines

    result = report(run)
    lines = report_lines(run, result)
    start = next(i for i, line in enumerate(lines) if line.startswith("Makespan"))
    demo.step("The report (`versatil wave status`):")
    for line in lines[start:]:
        if not line.startswith("The plan's estimates"):  # minutes of agent time, not seconds
            demo.say(f"      {line}" if line else "")
    _picture(demo, result)


def _picture(demo: Demo, result: Report) -> None:
    """The run's picture (`versatil wave report --html`), beside the throwaway repository: in
    the directory `versatil demo --keep` keeps, and outside the repository, so the monitor and
    `git status` never see it."""
    from versatil_fs.waves.picture import html_report

    page = demo.repo.parent / "wave-report.html"
    try:
        page.write_text(html_report(result), encoding="utf-8")
    except OSError as exc:
        demo.step(f"(the picture could not be written to {page}: {exc.strerror or exc})")
        return
    demo.step(f"The picture of this run (`versatil wave report --html`): {page}")
    demo.say("      open it in a browser; `versatil demo --keep` keeps it")


def _progress(demo: Demo, reviewer: Agent) -> Progress:
    """Live progress (rich on a terminal), handing the reviewer's lock over on the first wait."""
    from versatil_fs.cli.wave import PlainProgress, RichProgress

    base: Progress = (
        RichProgress() if sys.stdout.isatty() else PlainProgress(lambda s: demo.say(f"    {s}"))
    )
    return _HandOver(base, reviewer, demo)


class _HandOver(Progress):
    """Passes every event on; when a task first queues for a lock, the reviewer releases it."""

    def __init__(self, inner: Progress, reviewer: Agent, demo: Demo) -> None:
        self.inner = inner
        self.reviewer = reviewer
        self.demo = demo
        self.released = False

    def event(self, run: RunState, kind: str, task: TaskRun | None, detail: str) -> None:
        self.inner.event(run, kind, task, detail)
        if kind == "task-waiting" and not self.released:
            self.released = True
            time.sleep(0.3)  # the narrative: the reviewer takes a moment to finish
            self.reviewer.finish()
            who = task.agent if task else "the waiting task"
            self.inner.event(run, "note", None, f"Alex-BA releases {BLOCKED_DIR}: handed to {who}")

    def tick(self, run: RunState) -> None:
        self.inner.tick(run)

    def close(self) -> None:
        self.inner.close()


@contextmanager
def _monitor(repo: Path) -> Iterator[list[str]]:
    """The monitor on the repository for the block; yields the unlocked writes it reports."""
    unlocked: list[str] = []
    try:
        from versatil_fs.monitor import Monitor
        from versatil_fs.repo import Repository
    except ImportError:  # a build without the monitor: the chapter goes on without it
        yield unlocked
        return

    def sink(write: Any) -> None:
        if write.agent is None:
            unlocked.append(write.line())

    monitor = Monitor(Repository.find(repo), sink=sink)
    monitor.take_baseline()
    monitor.start()
    monitor.wait_ready(10)
    try:
        yield unlocked
    finally:
        monitor.stop()


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


CHAPTERS: list[Callable[[Demo], None]] = [chapter_waves]
"""Append these to :data:`versatil_fs.demo.CHAPTERS`."""
