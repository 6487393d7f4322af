"""The plan model: tasks, defaults, the rules every plan is held to, and durations. Loading a plan
file is :mod:`versatil_fs.waves.loader`'s; ordering its tasks into waves is the resolver's.

A plan is a YAML file of tasks::

    version: 1
    name: auth
    defaults: {timeout: 10m}
    tasks:
      - id: schema
        agent: Dana-Database
        run: python3 agents/dana.py schema      # a shell string, or an argv list
        writes: [app/db/schema.sql]             # paths (repo-relative) or kind:name resources
        reads: [docs/auth-contract.md]
        needs: [contract]                       # task ids
        estimate: 10m                           # seconds, or 90s / 10m / 1h30m
        priority: 0                             # higher is placed and started first
        timeout: 5m                             # a task running longer fails

Every error names the file, the line and the task, and is a :class:`PlanError` (exit 2).

The resolver (:func:`resolve`) gives each task a wave: after the waves of everything it needs,
and never beside a task whose claims conflict with its own. Conflict means exactly what it means
to the lock manager (:meth:`~versatil_fs.locks.table.Claim.conflicts`: the resources overlap and
one side writes) except for one thing: two tasks of the *same* agent conflict too. The lock
manager never makes an agent wait for itself, so nothing at run time would keep one agent's two
tasks from writing the same file at once; the plan has to.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from versatil_fs.errors import PlanError  # re-exported: the class moved to errors.py
from versatil_fs.locks.table import Claim
from versatil_fs.repo import parse_named
from versatil_fs.waves.resolve import (
    SCHEMA_VERSION,
    Schedule,
    dependency_cycle,
    resolve,
)

__all__ = [
    "CONTROL",
    "SCHEMA_VERSION",
    "TASK_ID",
    "Defaults",
    "Plan",
    "PlanError",
    "Task",
    "format_duration",
    "parse_duration",
    "plan_problem",
    "resource_problem",
]

CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # not in a name printed on one line, or passed on
TASK_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:+-]{0,99}$")


# The model --------------------------------------------------------------------------------------
class Defaults(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Values every task gets unless it sets its own."""

    agent: str | None = None
    estimate: float | None = None
    timeout: float | None = None
    priority: int = 0


class Task(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """One unit of work: a command run as ``agent`` under locks on ``writes`` and ``reads``."""

    id: str
    agent: str
    run: str | list[str]
    writes: list[str] = []
    reads: list[str] = []
    needs: list[str] = []
    estimate: float | None = None  # seconds
    priority: int = 0
    timeout: float | None = None  # seconds

    @property
    def command(self) -> list[str]:
        """The argv to execute: a shell string runs under ``/bin/sh -c``."""
        return ["/bin/sh", "-c", self.run] if isinstance(self.run, str) else list(self.run)

    def describe_run(self) -> str:
        return self.run if isinstance(self.run, str) else " ".join(self.run)


class Plan(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A loaded plan: the tasks with defaults applied, and where each was written.

    ``path`` and ``lines`` (task id -> line) are filled by the loader and are not plan-file keys.
    """

    version: int = SCHEMA_VERSION
    name: str = ""
    description: str = ""
    defaults: Defaults = msgspec.field(default_factory=Defaults)
    tasks: list[Task] = []
    path: str = ""
    lines: dict[str, int] = {}

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Plan:
        """Read and check a plan file; :class:`PlanError` says what is wrong and where."""
        # Imported here, not at the top: the loader builds this model, so it imports this module.
        from versatil_fs.waves.loader import read_plan_file

        source = Path(path)
        try:
            text = read_plan_file(source).decode("utf-8")
        except FileNotFoundError:
            raise PlanError(f"{path}: no such plan file.") from None
        except IsADirectoryError:
            raise PlanError(f"{path} is a directory, not a plan file.") from None
        except UnicodeDecodeError as exc:
            raise PlanError(f"{path}: not UTF-8 text ({exc.reason}).") from None
        except OSError as exc:
            raise PlanError(f"{path}: cannot be read ({exc.strerror}).") from None
        return cls.from_yaml(text, source=str(path), path=str(source.absolute()))

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<plan>", path: str = "") -> Plan:
        """Parse a plan from YAML text; ``source`` is the name errors use."""
        from versatil_fs.waves.loader import Loader  # see load(): the loader imports this module

        return Loader(source, path).load(text)

    @property
    def directory(self) -> Path | None:
        """The directory of the plan file (None for a plan that did not come from a file)."""
        return Path(self.path).parent if self.path else None

    def task(self, task_id: str) -> Task:
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise PlanError(f"{self.path or 'the plan'} has no task {task_id!r}.")

    def schedule(
        self, *, agents: int = 5, claims: Mapping[str, Sequence[Claim]] | None = None
    ) -> Schedule:
        """The waves, critical path and lower bound for ``agents`` parallel slots."""
        return resolve(self.tasks, claims=claims, agents=agents)

    def waves(self) -> list[list[Task]]:
        """The tasks, wave by wave (``plan.waves()[0]`` is wave 1)."""
        by_id = {task.id: task for task in self.tasks}
        return [[by_id[t] for t in wave.tasks] for wave in self.schedule().waves]


# Rules every plan is held to (the loader applies them too) ------------------------------------
_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h)")

def plan_problem(plan: Plan) -> str | None:
    """What makes an already-built plan one the loader would have refused, or None.

    For plans that come back from somewhere else than a plan file (a wave run's state): their
    ids name log files and markers and their paths name what is locked and rolled back, so
    they are held to the plan file's rules again rather than trusted.
    """
    seen: set[str] = set()
    for task in plan.tasks:
        if not TASK_ID.fullmatch(task.id):
            return f"the task id {task.id!r} is not a plan's task id"
        if task.id in seen:
            return f"the task id {task.id!r} is used twice"
        seen.add(task.id)
        if not task.agent.strip() or (isinstance(task.run, str) and not task.run.strip()) or (
            isinstance(task.run, list) and (not task.run or not task.run[0])
        ):
            return f"task {task.id!r} has an empty agent or command"
        argv = [task.run] if isinstance(task.run, str) else task.run
        if CONTROL.search(task.agent) or any("\0" in part for part in argv):
            return f"task {task.id!r} has a control character in its agent or command"
        for spec in (*task.writes, *task.reads):
            problem = resource_problem(spec)
            if problem:
                return f"task {task.id!r}: {spec!r} {problem}"
        for value in (task.estimate, task.timeout):
            if value is not None and not (math.isfinite(value) and value >= 0):
                return f"task {task.id!r} has a duration of {value}"
    for task in plan.tasks:
        missing = [n for n in task.needs if n not in seen]
        if missing:
            return f"task {task.id!r} needs {missing[0]!r}, which is not a task of the plan"
    if not plan.tasks:
        return "the plan has no tasks"
    if dependency_cycle(plan.tasks):
        return "the plan's needs form a cycle"
    return None


def parse_duration(value: Any) -> float | None:
    """Seconds from ``90``, ``1.5``, ``"90s"``, ``"10m"``, ``"1h30m"``, ``"500ms"``; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if not text:
            return None
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    return None
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text):
                return None
    else:
        return None
    if not math.isfinite(seconds) or seconds < 0 or seconds > 1e9:
        return None
    return seconds


def format_duration(seconds: float | None) -> str:
    """``42s``, ``12m``, ``1h 30m``, ``1.2s``, ``350ms`` — short and stable for tables."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes = seconds / 60
    if minutes < 60:
        whole = round(seconds)
        return f"{whole // 60}m" + (f" {whole % 60:02d}s" if whole % 60 else "")
    whole = round(minutes)
    return f"{whole // 60}h" + (f" {whole % 60:02d}m" if whole % 60 else "")


def resource_problem(spec: str) -> str | None:
    """Why a writes/reads entry cannot be a resource, or None."""
    if not spec.strip():
        return "is empty; name a path or a kind:name resource."
    if "\0" in spec:
        return "contains a NUL byte, which no path or name can."
    if parse_named(spec) is not None:
        return None
    if spec.startswith("/"):
        return "is absolute; paths in a plan are relative to the repository root."
    normal = posixpath.normpath(spec)
    if normal == ".." or normal.startswith("../"):
        return "leaves the repository; paths in a plan are relative to its root."
    if normal == ".git" or normal.startswith(".git/"):
        return "is inside .git; versatil does not lock git's own files."
    return None
