"""The live progress of a running plan: a rich panel on a terminal, one plain line per
transition in logs and pipes; both are :class:`~versatil_fs.waves.progress.Progress` listeners.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from versatil_fs.cli.common import echo
from versatil_fs.waves.plan import format_duration
from versatil_fs.waves.progress import Progress
from versatil_fs.waves.records import RunState, TaskRun

__all__ = ["PlainProgress", "RichProgress", "event_line", "progress"]


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
            # waves.progress.wave_done: a colon follows "done" only when a task did not succeed.
            return f"✓ {detail}" if ":" not in detail else f"✗ {detail}"
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
        self.out = out
        self.started = time.monotonic()

    def event(self, run: RunState, kind: str, task: TaskRun | None, detail: str) -> None:
        line = event_line(run, kind, task, detail)
        if line is not None:
            self.out(f"[{time.monotonic() - self.started:7.1f}s] {line}")


class RichProgress(Progress):
    """A live panel (one line per running task, waves done, elapsed) under scrolling events."""

    def __init__(self) -> None:
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
        if kind == "wave-done":
            style = "green" if line.startswith("✓") else "bold yellow"
        self.console.print(Text(line, style=style))

    def tick(self, run: RunState) -> None:
        self.run = run

    def _render(self) -> Any:
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
