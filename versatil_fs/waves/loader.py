"""Loading a plan file: its bytes (a regular file only), YAML to plain data keeping every node's
line, and plain data to a checked :class:`~versatil_fs.waves.plan.Plan`.

Every error names the file, the line and the task, and is a :class:`PlanError` (exit 2).
:meth:`Plan.load <versatil_fs.waves.plan.Plan.load>` and :meth:`Plan.from_yaml
<versatil_fs.waves.plan.Plan.from_yaml>` are the way in; this module is what they call.
"""

from __future__ import annotations

import difflib
import errno
import os
import posixpath
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from versatil_fs.errors import PlanError, UsageError
from versatil_fs.locks import globs
from versatil_fs.repo import parse_named
from versatil_fs.waves.plan import (
    CONTROL,
    SCHEMA_VERSION,
    TASK_ID,
    Defaults,
    Plan,
    Task,
    parse_duration,
    resource_problem,
)
from versatil_fs.waves.resolve import dependency_cycle

__all__ = ["MAX_DEPTH", "Loader", "Where", "read_plan_file"]

_S = TypeVar("_S", bound=msgspec.Struct)


# Loading ----------------------------------------------------------------------------------------
def read_plan_file(source: Path) -> bytes:
    """The bytes of a plan file that must be a regular file.

    Opened with ``O_NONBLOCK`` and checked with ``fstat`` before anything is read: a FIFO (or
    a character device) at the plan's path would otherwise block the read for ever, waiting
    for a writer that never comes. Regular files ignore ``O_NONBLOCK``.
    """
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            raise
        # A socket (or a FIFO with no reader on some systems) cannot be opened at all.
        mode = os.stat(source).st_mode
        raise PlanError(
            f"{source} is {_file_kind(mode)}, not a regular file: give a plan file."
        ) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(21, "Is a directory", str(source))
        if not stat.S_ISREG(mode):
            raise PlanError(
                f"{source} is {_file_kind(mode)}, not a regular file: give a plan file."
            )
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


_PLAN_KEYS = ("version", "name", "description", "defaults", "tasks")
_TASK_KEYS = tuple(Task.__struct_fields__)
_DEFAULT_KEYS = tuple(Defaults.__struct_fields__)
_LIST_KEYS = ("writes", "reads", "needs")
_DURATION_KEYS = ("estimate", "timeout")

Where = tuple[str | int, ...]
# A plan is a mapping of a list of task mappings with short lists in them: five levels. Deeper
# nesting is a mistake or an attack, refused before it can exhaust the stack.
MAX_DEPTH = 32


class Loader:
    """YAML -> Plan, keeping the line of every node so each error can point at it."""

    def __init__(self, source: str, path: str) -> None:
        self.source = source
        self.path = path
        self.lines: dict[Where, int] = {}
        self._done: dict[int, Any] = {}  # id(node) -> its value (nodes live as long as we do)
        self._walking: set[int] = set()

    def error(self, where: Where, message: str, task: str | None = None) -> PlanError:
        line = self._line(where)
        who = f"task {task!r}: " if task else ""
        return PlanError(f"{self.source}:{line}: {who}{message}")

    def _line(self, where: Where) -> int:
        # The nearest node we know: a missing key is reported at the mapping that lacks it.
        while where not in self.lines and where:
            where = where[:-1]
        return self.lines.get(where, 1)

    # YAML nodes -> plain data ----------------------------------------------------------------
    def load(self, text: str) -> Plan:
        import yaml

        try:
            loader = yaml.SafeLoader(text)
            try:
                node = loader.get_single_node()
                data = self._data(loader, node, ()) if node is not None else None
            finally:
                loader.dispose()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            problem = exc.problem or exc.context or "cannot be parsed"
            raise PlanError(f"{self.source}:{line}: not valid YAML: {problem}.") from None
        except yaml.YAMLError as exc:
            raise PlanError(f"{self.source}: not valid YAML: {exc}.") from None
        except RecursionError:
            # PyYAML composes nodes recursively: a plan nested a few hundred levels deep (a
            # JSON-style `[[[[...]]]]` is YAML too) exhausts Python's stack before any node
            # reaches us. No plan is that deep; say so instead of an internal error.
            raise PlanError(
                f"{self.source}: nested too deeply to be a plan (at most {MAX_DEPTH} levels)."
            ) from None
        return self._plan(data)

    def _data(self, loader: Any, node: Any, where: Where) -> Any:
        # An alias is the very node it names: convert each node once and share the result, as
        # PyYAML itself does. Walking it again for every reference would make a 400-byte plan
        # of nested aliases (a "billion laughs") take for ever.
        if len(where) > MAX_DEPTH:
            # Checked here too, not only through RecursionError: a depth just under the
            # stack's limit would otherwise fail later, in code that does not expect it.
            raise self.error(where, f"nested more than {MAX_DEPTH} levels deep; no plan is.")
        key = id(node)
        if key in self._done:
            self.lines.setdefault(where, node.start_mark.line + 1)
            return self._done[key]
        if key in self._walking:
            raise self.error(where, "a YAML alias refers to the node that contains it.")
        self._walking.add(key)
        try:
            value = self._convert_node(loader, node, where)
        finally:
            self._walking.discard(key)
        self._done[key] = value
        return value

    def _convert_node(self, loader: Any, node: Any, where: Where) -> Any:
        import yaml

        self.lines[where] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            merged: list[dict[str, Any]] = []
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    # `<<: *base` supplies keys this mapping does not set itself.
                    value = self._data(loader, value_node, (*where, "<<"))
                    for part in value if isinstance(value, list) else [value]:
                        if not isinstance(part, dict):
                            raise self.error((*where, "<<"), "`<<` must merge a mapping.")
                        merged.append(part)
                    continue
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    self.lines[(*where, str(key))] = key_node.start_mark.line + 1
                    raise self.error((*where, str(key)), f"the key {key!r} is not a name.")
                if key in result:
                    first = self.lines[(*where, key)]
                    self.lines[(*where, key)] = key_node.start_mark.line + 1
                    raise self.error(
                        (*where, key), f"the key {key!r} appears twice (first at line {first})."
                    )
                result[key] = self._data(loader, value_node, (*where, key))
                self.lines[(*where, key)] = key_node.start_mark.line + 1
            for part in merged:
                for key, value in part.items():
                    result.setdefault(key, value)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self._data(loader, item, (*where, i)) for i, item in enumerate(node.value)]
        return loader.construct_object(node, deep=True)

    # Plain data -> Plan ----------------------------------------------------------------------
    def _plan(self, data: Any) -> Plan:
        if data is None:
            raise self.error((), "the plan is empty; it needs a `tasks:` list.")
        if isinstance(data, list):
            data = {"tasks": data}  # a bare list of tasks is a plan too
        if not isinstance(data, dict):
            raise self.error((), f"a plan is a mapping with a `tasks:` list, not {_kind(data)}.")
        self._known_keys(data, (), _PLAN_KEYS, "plan")
        version = data.get("version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION or isinstance(version, bool):
            raise self.error(
                ("version",),
                f"version {version!r} is not a plan version this versatil reads (it reads "
                f"version {SCHEMA_VERSION}).",
            )
        name = self._text(data, "name", "a name")
        description = self._text(data, "description", "a description")
        defaults = self._defaults(data.get("defaults"))
        tasks_data = data.get("tasks")
        if tasks_data is None:
            raise self.error((), "the plan has no `tasks:` list.")
        if not isinstance(tasks_data, list):
            raise self.error(
                ("tasks",), f"`tasks` must be a list of tasks, not {_kind(tasks_data)}."
            )
        if not tasks_data:
            raise self.error(("tasks",), "the `tasks` list is empty.")
        tasks: list[Task] = []
        lines: dict[str, int] = {}
        for index, raw in enumerate(tasks_data):
            task = self._task(raw, index, defaults)
            if task.id in lines:
                raise self.error(
                    ("tasks", index, "id"),
                    f"the task id {task.id!r} is used twice (first at line {lines[task.id]}).",
                    task.id,
                )
            lines[task.id] = self._line(("tasks", index))
            tasks.append(task)
        self._check_needs(tasks)
        plan = Plan(
            name=name, description=description, defaults=defaults, tasks=tasks,
            path=self.path, lines=lines,
        )
        cycle = dependency_cycle(tasks)
        if cycle:
            first = cycle[0]
            index = next(i for i, t in enumerate(tasks) if t.id == first)
            raise self.error(
                ("tasks", index, "needs"),
                f"is in a dependency cycle: {' -> '.join(cycle)}; remove one of these needs.",
                first,
            )
        return plan

    def _text(self, data: dict[str, Any], key: str, what: str) -> str:
        where: Where = (key,)
        value = data.get(key, "")
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.error(where, f"`{key}` must be {what} (a string), not {_kind(value)}.")
        return value

    def _known_keys(
        self, data: dict[str, Any], where: Where, known: Sequence[str], what: str,
        task: str | None = None,
    ) -> None:
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean `{close[0]}`?" if close else (
                    f"; a {what} has: {', '.join(known)}."
                )
                raise self.error((*where, key), f"unknown key `{key}` in the {what}{hint}", task)

    def _defaults(self, raw: Any) -> Defaults:
        where: Where = ("defaults",)
        if raw is None:
            return Defaults()
        if not isinstance(raw, dict):
            raise self.error(where, f"`defaults` must be a mapping, not {_kind(raw)}.")
        self._known_keys(raw, where, _DEFAULT_KEYS, "defaults")
        data = dict(raw)
        for key in _DURATION_KEYS:
            if key in data:
                data[key] = self._duration(data[key], (*where, key), key, None)
        defaults = self._convert(data, Defaults, where, None)
        if defaults.agent is not None and not defaults.agent.strip():
            raise self.error((*where, "agent"), "the default agent is an empty name.")
        return defaults

    def _task(self, raw: Any, index: int, defaults: Defaults) -> Task:
        where: Where = ("tasks", index)
        if not isinstance(raw, dict):
            raise self.error(
                where, f"task {index + 1} must be a mapping with id, agent and run, not "
                f"{_kind(raw)}."
            )
        task_id = raw.get("id")
        if task_id is None:
            raise self.error(where, f"task {index + 1} has no `id`.")
        if not isinstance(task_id, str) or not TASK_ID.fullmatch(task_id):
            raise self.error(
                (*where, "id"),
                f"the task id {task_id!r} is not usable: ids are up to 100 letters, digits and "
                "`_ . : + -`, starting with a letter, digit or `_`.",
            )
        self._known_keys(raw, where, _TASK_KEYS, "task", task_id)
        data = dict(raw)
        for key in _LIST_KEYS:
            if isinstance(data.get(key), str):
                data[key] = [data[key]]  # `needs: schema` means `needs: [schema]`
            elif data.get(key) is None:
                data.pop(key, None)
        for key in _DURATION_KEYS:
            if data.get(key) is not None:
                data[key] = self._duration(data[key], (*where, key), key, task_id)
        if data.get("agent") is None:
            if defaults.agent is None:
                raise self.error(
                    where, "has no `agent` (and the plan sets no `defaults: {agent: ...}`).",
                    task_id,
                )
            data["agent"] = defaults.agent
        if "run" not in data:
            raise self.error(where, "has no `run` command.", task_id)
        data.setdefault("estimate", defaults.estimate)
        data.setdefault("timeout", defaults.timeout)
        data.setdefault("priority", defaults.priority)
        task = self._convert(data, Task, where, task_id)
        self._check_task(task, where)
        return task

    def _convert(
        self, data: dict[str, Any], model: type[_S], where: Where, task: str | None
    ) -> _S:
        try:
            return msgspec.convert(data, model)
        except msgspec.ValidationError as exc:
            message, at = _split_validation(str(exc))
            raise self.error((*where, *at), _explain(message, at), task) from None

    def _duration(self, value: Any, where: Where, key: str, task: str | None) -> float:
        seconds = parse_duration(value)
        if seconds is None:
            raise self.error(
                where,
                f"`{key}` must be a duration: seconds as a number, or like 90s, 10m, 1h30m; "
                f"got {value!r}.",
                task,
            )
        if key == "timeout" and seconds <= 0:
            raise self.error(where, f"`timeout` must be more than 0 seconds, got {value!r}.", task)
        return seconds

    def _check_task(self, task: Task, where: Where) -> None:
        if not task.agent.strip():
            raise self.error((*where, "agent"), "the agent is an empty name.", task.id)
        if CONTROL.search(task.agent):
            raise self.error(
                (*where, "agent"), "the agent name contains a control character.", task.id
            )
        argv = [task.run] if isinstance(task.run, str) else task.run
        if any("\0" in part for part in argv):
            # No command line can hold one: exec would refuse it after the task had started.
            raise self.error((*where, "run"), "the command contains a NUL byte.", task.id)
        if isinstance(task.run, str) and not task.run.strip():
            raise self.error((*where, "run"), "the `run` command is empty.", task.id)
        if isinstance(task.run, list) and (not task.run or not task.run[0]):
            raise self.error((*where, "run"), "the `run` argv list is empty.", task.id)
        for key in ("writes", "reads"):
            for i, spec in enumerate(getattr(task, key)):
                problem = resource_problem(spec) or _pattern_problem(spec)
                if problem:
                    raise self.error((*where, key, i), f"{key}[{i}] {spec!r} {problem}", task.id)

    def _check_needs(self, tasks: list[Task]) -> None:
        ids = [t.id for t in tasks]
        known = set(ids)
        for index, task in enumerate(tasks):
            for i, need in enumerate(task.needs):
                if need not in known:
                    close = difflib.get_close_matches(need, ids, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise self.error(
                        ("tasks", index, "needs", i),
                        f"needs {need!r}, which is not a task in this plan{hint}.",
                        task.id,
                    )


def _pattern_problem(spec: str) -> str | None:
    """Why a glob in ``writes``/``reads`` is malformed (said at its line, before anything
    runs), or None: globs are reserved like paths (issue 16)."""
    if parse_named(spec) is not None or not globs.is_glob(spec):
        return None
    try:
        globs.parse(posixpath.normpath(spec.strip()))
    except UsageError as exc:
        return f"is not a pattern versatil can reserve ({exc})."
    return None


def _split_validation(text: str) -> tuple[str, Where]:
    """msgspec's ``"Expected `str`, got `int` - at `$.writes[0]`"`` -> message and path."""
    match = re.search(r" - at `\$([^`]*)`$", text)
    if not match:
        return text, ()
    parts: list[str | int] = []
    for name, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", match.group(1)):
        parts.append(name if name else int(index))
    return text[: match.start()], tuple(parts)


_TYPE_WORDS = {
    "str": "a string", "int": "a whole number", "float": "a number", "array": "a list",
    "object": "a mapping", "null": "nothing", "bool": "true/false",
    "str | array": "a string or a list of strings",
    "int | null": "a whole number", "float | null": "a number", "str | null": "a string",
}


def _explain(message: str, at: Where) -> str:
    where = _format_where(at)
    match = re.match(r"Expected `([^`]*)`, got `([^`]*)`", message)
    if match:
        expected = _TYPE_WORDS.get(match.group(1), f"`{match.group(1)}`")
        got = _TYPE_WORDS.get(match.group(2), f"`{match.group(2)}`")
        return f"{where} must be {expected}, not {got}."
    return f"{where}: {message[0].lower()}{message[1:]}." if where else f"{message}."


def _format_where(at: Where) -> str:
    text = ""
    for part in at:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return f"`{text}`" if text else ""


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return "nothing" if value is None else type(value).__name__
