"""A lock outlives ``versatil run`` with its last descendant, on the PostgreSQL store too: the
reliability suite's tests, run again with the locks on the server (the descendants hold the
liveness session's socket, inherited, instead of a flocked holder file)."""

from __future__ import annotations

import pytest
from reliability.support import Tally
from reliability.test_hardening_processes import (  # noqa: F401 - tests collected here
    FILES,
    repo,
    test_a_command_that_exits_leaving_a_process_behind_leaves_it_the_lock,
    test_kill_9_of_versatil_run_leaves_the_lock_with_its_last_descendant,
)


@pytest.fixture
def tally() -> Tally:
    """A tally of this module's own (the reliability suite's session tally lives in its
    conftest, which does not reach this directory); the tests' assertions are what count."""
    return Tally()


@pytest.fixture(autouse=True)
def _on_postgres(pg_env: dict[str, str]) -> None:
    """Every test here, and its children, on the PostgreSQL store."""
