"""A wave run as Chrome trace-event JSON, for Perfetto (ui.perfetto.dev) and chrome://tracing.

Pure: a :class:`~versatil_fs.waves.report.Report` in, the JSON object format out
(``{"traceEvents": [...]}``). Every task that ran is one complete event (``ph: "X"``) from its
start, ``ts``, lasting ``dur``, both in microseconds on the executor's running time (the
report's; the gaps between a crash and its resume are left out). Each agent is one thread
(``tid``) of one process (the run), named by ``thread_name`` metadata events and kept in the
report's order by ``thread_sort_index``; the category is the task's wave, so the viewers can
colour or filter by it. The task's status, files and error are its ``args``; the skipped tasks,
which never ran, are in ``otherData``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from versatil_fs.waves.report import Report

__all__ = ["PID", "trace", "trace_json"]

PID = 1  # the run; one process


def trace(result: Report) -> dict[str, Any]:
    """The trace as a JSON-ready object."""
    agents = [u.agent for u in result.utilization]
    for task in result.tasks:
        if task.agent not in agents:
            agents.append(task.agent)
    tid = {agent: i + 1 for i, agent in enumerate(agents)}
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": PID, "tid": 0,
         "args": {"name": f"wave run {result.run}"}},
    ]
    for agent, number in tid.items():
        events.append({"name": "thread_name", "ph": "M", "pid": PID, "tid": number,
                       "args": {"name": agent}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": PID, "tid": number,
                       "args": {"sort_index": number}})
    for task in result.tasks:
        if task.start is None or task.end is None:
            continue
        start = round(task.start * 1e6)
        events.append({
            "name": task.id, "cat": f"wave {task.wave}", "ph": "X", "pid": PID,
            "tid": tid[task.agent], "ts": start,
            "dur": max(0, round(task.end * 1e6) - start),
            "args": {
                "agent": task.agent, "wave": task.wave, "status": task.status,
                "exit_code": task.exit_code, "lock_wait_s": round(task.lock_wait, 3),
                "files": task.files, "error": task.error, "rolled_back": task.rolled_back,
            },
        })
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "run": result.run, "status": result.status,
            "makespan_s": result.makespan, "lower_bound_s": result.lower_bound,
            "sequential_s": result.sequential, "speedup": result.speedup,
            "failed": result.failed,
            "skipped": {t.id: t.skipped_because for t in result.tasks if t.status == "skipped"},
        },
    }


def trace_json(result: Report) -> str:
    return msgspec.json.encode(trace(result)).decode() + "\n"
