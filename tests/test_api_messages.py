"""A LockConflict raised through the Python API names the API's parameter; the command line's
sentence names --wait (issue 15, item 17)."""

from __future__ import annotations

from pathlib import Path

import pytest

from versatil_fs import LockConflict, LockManager


def test_the_api_names_wait_and_the_cli_names_the_option(versatil_home: Path) -> None:
    first, second = LockManager(), LockManager()
    held = first.acquire(["db:users"], agent="alice")
    with pytest.raises(LockConflict) as caught:
        second.acquire(["db:users"], agent="bob", wait=0)
    api, cli = str(caught.value), caught.value.for_cli()
    # Before: "(--wait 0). Wait longer with --wait" through the API too.
    assert "not waiting (wait=0). Pass a longer wait=, or ask alice to release." in api
    assert "--wait" not in api
    assert "not waiting (--wait 0). Wait longer with --wait, or ask alice to release." in cli
    assert caught.value.as_data()["message"] == cli
    held.release()
    first.close()
    second.close()


def test_a_conflict_after_waiting_says_how_long(versatil_home: Path) -> None:
    first, second = LockManager(), LockManager()
    held = first.acquire(["db:users"], agent="alice")
    with pytest.raises(LockConflict) as caught:
        second.acquire(["db:users"], agent="bob", wait=0.1)
    assert "gave up after" in str(caught.value) and "Pass a longer wait=" in str(caught.value)
    assert "Wait longer with --wait" in caught.value.for_cli()
    held.release()
    first.close()
    second.close()
