"""Issue 15, item 8: the user's own checkpoints and the ones versatil makes on its own are
pruned under separate budgets, and a prune says what it removed.

The story of the issue: a user's "before agents" checkpoint, then restores (safety checkpoints)
and a wave run's checkpoints; with one budget for all of them the user's was pruned silently.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from integration.helpers import commit_files
from integration.helpers import write_file as write
from reliability.support import versatil

from versatil_fs import events
from versatil_fs.checkpoints import Checkpoints

pytestmark = pytest.mark.usefixtures("tester_env")


@pytest.fixture
def repo(git_repo: Path) -> Path:
    repo = commit_files(git_repo, {"src/a.py": "a = 1\n", "README.md": "hello\n"})
    (repo / ".versatil").write_text("[checkpoints]\nmax_checkpoints = 2\nmax_automatic = 3\n")
    return repo


def test_automatic_checkpoints_never_push_out_the_users_own(repo: Path) -> None:
    made = versatil("checkpoint", "create", "-m", "before agents", cwd=repo)
    assert made.code == 0, made.err
    mine = made.out.strip()
    cps = Checkpoints(repo)
    waves = [cps.create(f"before wave {n}", wave=n, agent="wave-executor", kind="wave").id
             for n in range(1, 4)]
    safety = []
    for i in range(3):
        write(repo, "src/a.py", f"edit {i}\n")
        restored = versatil("checkpoint", "restore", mine, cwd=repo)
        assert restored.code == 0, restored.err
        safety.append(json.loads(versatil("checkpoint", "list", "--json", cwd=repo).out)
                      ["checkpoints"][-1]["id"])
        # Each automatic checkpoint pruned is said so on stderr, one line each.
        pruned = [line for line in restored.err.splitlines() if "pruned checkpoint" in line]
        assert len(pruned) == 1 and "automatic" in pruned[0], restored.err
        assert "over checkpoints.max_automatic" in pruned[0]
    left = [r.id for r in cps.list()]
    assert mine in left  # the user's own: its budget is not the automatic ones'
    assert left == [mine, *safety]  # the newest 3 automatic ones
    assert not set(waves) & set(left)
    removed = [i for e in events.read("checkpoints") if e.kind == "prune"
               for i in e.data["removed"]]
    assert removed == waves


def test_the_users_own_are_pruned_under_max_checkpoints_with_a_line_each(repo: Path) -> None:
    ids = []
    for i in range(3):
        made = versatil("checkpoint", "create", "-m", f"mine {i}", cwd=repo)
        assert made.code == 0, made.err
        ids.append(made.out.strip())
    assert made.err.splitlines() == [
        f"versatil: pruned checkpoint {ids[0]} (your own, checkpoint, over "
        "checkpoints.max_checkpoints): mine 0"
    ]
    run_one = Checkpoints(repo).create("before versatil run: x", kind="run", prune=False)
    pruned = versatil("checkpoint", "prune", "--keep", "1", "--keep-automatic", "0", cwd=repo)
    assert pruned.code == 0, pruned.err
    assert pruned.out.splitlines() == [
        f"pruned checkpoint {ids[1]} (your own, checkpoint, over checkpoints.max_checkpoints)"
        ": mine 1",
        f"pruned checkpoint {run_one.id} (automatic, run, over checkpoints.max_automatic): "
        "before versatil run: x",
        "Removed 2 checkpoint(s); 1 of your own and 0 automatic kept.",
    ]


def test_the_api_returns_and_logs_what_a_prune_removed(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cps = Checkpoints(repo)
    old = cps.create("old", prune=False)
    cps.create("newer", prune=False)
    cps.create("newest", prune=False)
    with caplog.at_level(logging.DEBUG, logger="versatil_fs.checkpoints"):
        result = cps.prune()
    assert result.removed == [old.id] and result.kept_own == 2
    (entry,) = result.entries
    assert (entry.id, entry.budget, entry.message) == (old.id, "max_checkpoints", "old")
    assert any(old.id in r.getMessage() for r in caplog.records)


def test_a_legacy_wave_checkpoint_counts_as_automatic(repo: Path) -> None:
    cps = Checkpoints(repo)
    mine = cps.create("mine", prune=False)
    # Made by an older versatil: kind "checkpoint", but the wave executor's agent.
    legacy = [cps.create(f"before wave {n} of wave run r", wave=n, agent="wave-executor",
                         prune=False) for n in range(4)]
    result = cps.prune()
    assert result.removed == [legacy[0].id]
    assert mine.id in [r.id for r in cps.list()]


def test_the_safety_checkpoint_of_an_unfinished_restore_is_never_pruned(repo: Path) -> None:
    cps = Checkpoints(repo)
    mine = cps.create("mine", prune=False)
    write(repo, "src/a.py", "edited\n")
    safety_id = cps.restore(mine.id, prune=False).safety_checkpoint
    assert safety_id is not None
    # As a restore killed part-way leaves it (see test_crash_points): not finished.
    safety = cps.show(safety_id)
    safety.restore_complete = False
    cps.site.write_record(safety)
    later = cps.create("later run", kind="run", prune=False)
    result = cps.prune(keep_automatic=0)
    assert result.removed == [later.id]
    assert safety_id in [r.id for r in cps.list()]
