"""Wave execution: a plan's tasks run in parallel under locks, wave by wave.

Import from the module that holds a thing (this package imports nothing, so that reading a
plan does not load the executor and its process handling):

* :mod:`~versatil_fs.waves.plan` — the plan model and its loader (``Plan.load``);
* :mod:`~versatil_fs.waves.resolve` — the pure resolver (waves, critical path, lower bound);
* :mod:`~versatil_fs.waves.records` — the run records (``TaskRun``, ``Session``, ``RunState``);
* :mod:`~versatil_fs.waves.store` — the run store, the write-ahead file and the journal;
* :mod:`~versatil_fs.waves.schedule` — the pure scheduling rule (ranks, waves in flight);
* :mod:`~versatil_fs.waves.report` — the pure report of a run;
* :mod:`~versatil_fs.waves.progress` — the progress listener the CLI and the demo draw;
* :mod:`~versatil_fs.waves.tasks` — a task's processes, and those it leaves;
* :mod:`~versatil_fs.waves.interrupt` — stopping a run part-way (Ctrl-C, SIGTERM);
* :mod:`~versatil_fs.waves.executor` — ``WaveExecutor``, which runs and resumes plans.
"""

from __future__ import annotations

__all__: list[str] = []
