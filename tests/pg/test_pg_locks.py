"""The lock manager's own tests, run again on the PostgreSQL store.

The test functions are those of tests/integration/test_locks.py and test_locks_cli.py (imported,
so pytest collects them here too); the autouse fixture puts this test and every child process it
starts on the PostgreSQL store (``VERSATIL_STORE_*``), each test in a project of its own. The
ones left out are about the local store's own files (a damaged ``resource-locks.json``, its
rebuild from holder files, a reader of the table file).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from integration.helpers import Spawner, wait_for
from integration.test_locks import (  # noqa: F401 - fixtures and tests collected here
    FILES,
    _chaos,
    _threads,
    agents,
    holders_of,
    lock_events,
    test_a_holder_that_exits_without_releasing_frees_its_locks,
    test_a_newcomer_does_not_overtake_a_queued_request,
    test_a_release_hands_the_lock_to_the_waiter_promptly,
    test_a_request_is_granted_all_at_once_or_not_at_all,
    test_a_stream_of_readers_does_not_starve_a_queued_writer,
    test_a_waiter_closing_a_cycle_is_refused_at_once,
    test_a_waiter_that_gives_up_leaves_the_queue,
    test_hold_releases_on_exit_even_after_an_error,
    test_kill_9_hand_off_is_prompt_every_time,
    test_kill_9_of_a_holder_grants_the_waiter_within_a_second,
    test_no_deadlock_is_reported_without_a_cycle,
    test_readers_share_and_a_writer_waits_for_all_of_them,
    test_release_agent_frees_a_live_holders_locks,
    test_the_queue_is_listed_in_grant_order,
    test_the_same_agent_never_blocks_itself,
    test_two_worktrees_of_one_repository_block_each_other,
    test_unlock_releases_part_of_a_lease,
    test_waiters_are_granted_by_priority_then_arrival,
    wait_queued,
)
from integration.test_locks_cli import (  # noqa: F401
    test_a_shell_lease_expires_after_its_ttl,
    test_a_shell_lock_outlives_the_command_and_blocks_other_agents,
    test_unlock_frees_the_lock_and_a_waiting_process_is_granted_promptly,
)

from versatil_fs import LockManager


def test_threads_sharing_one_lock_manager_exclude_each_other_on_postgres(
    spawn: Spawner, repo: Path, tmp_path: Path
) -> None:
    """Fewer rounds than test_locks' (each is a few round trips to the server); the soak below."""
    _threads(spawn, repo, tmp_path, rounds=30)


@pytest.mark.slow
def test_threads_sharing_one_lock_manager_exclude_each_other_on_postgres_soak(
    spawn: Spawner, repo: Path, tmp_path: Path
) -> None:
    _threads(spawn, repo, tmp_path, rounds=300)


@pytest.mark.slow
def test_holders_killed_at_random_moments_never_break_exclusion_on_postgres(
    spawn: Spawner, repo: Path, tmp_path: Path
) -> None:
    _chaos(spawn, repo, tmp_path, workers=4, kills=8)


def test_a_killed_waiter_leaves_the_queue_once_the_server_sees_it_gone(
    agents: object, manager: LockManager  # noqa: F811 - the fixture imported above
) -> None:
    """test_locks' version, except the first look after the kill: the server learns of a death
    when it reads the dead connection's end, a moment after the process is reaped (the kernel
    drops a flock within the exit itself)."""
    holder, first, second = agents(), agents(), agents()  # type: ignore[operator]
    holder.acquire(["db:users"], agent="Holder")
    first.request(["db:users"], agent="First", wait=30)
    wait_queued(manager, "First")
    second.request(["db:users"], agent="Second", wait=30)
    wait_queued(manager, "Second")
    first.kill9()
    wait_for(lambda: [w.agent for w in manager.sweep().waiters] == ["Second"], timeout=5)
    wait_for(lambda: [e.agent for e in lock_events("waiter-gone")] == ["First"])
    holder.release()
    assert second.reply()["ok"]
    assert holders_of(manager, "db:users") == ["Second"]


@pytest.fixture(autouse=True)
def _on_postgres(pg_env: dict[str, str]) -> None:
    """Every test here, and its children, on the PostgreSQL store."""
