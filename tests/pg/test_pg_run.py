"""``versatil run`` on the PostgreSQL store: its tests, run again with the locks on the server
(the command inherits the liveness session's socket instead of a flocked holder file)."""

from __future__ import annotations

import pytest
from integration.test_runner import (  # noqa: F401 - tests collected here
    FILES,
    test_kill_9_of_the_command_ends_the_run_with_137_and_releases,
    test_kill_9_of_the_wrapper_kills_the_command_and_frees_its_locks,
    test_lock_refused_exits_1_without_running_the_command,
    test_locks_are_held_while_the_command_runs_and_released_after,
    test_second_wrapper_waits_and_starts_when_the_first_ends,
)


@pytest.fixture(autouse=True)
def _on_postgres(pg_env: dict[str, str]) -> None:
    """Every test here, and its children, on the PostgreSQL store."""
