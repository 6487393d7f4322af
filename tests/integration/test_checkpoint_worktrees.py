"""Issue 15, item 6: every checkpoint records the worktree it was made in; `list` shows this
worktree's (`--all` every worktree's, with a column), and `diff` / `restore` of another
worktree's checkpoint needs --force and says so, naming both worktrees.

Real git repositories with a linked worktree (`git worktree add`), the CLI as a user runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from integration.helpers import commit_files, git
from integration.helpers import write_file as write
from reliability.support import versatil

from versatil_fs.checkpoints import Checkpoints
from versatil_fs.state import StateDir

pytestmark = pytest.mark.usefixtures("tester_env")


@pytest.fixture
def trees(git_repo: Path, tmp_path: Path) -> tuple[Path, Path]:
    main = commit_files(git_repo, {"f.txt": "main's\n", "README.md": "hello\n"})
    wt2 = tmp_path / "wt2"
    git(main, "worktree", "add", "-q", "-b", "other", str(wt2))
    write(wt2, "f.txt", "wt2's branch\n")
    git(wt2, "commit", "-q", "-am", "wt2's change")
    return main, wt2.resolve()


def _create(where: Path, message: str) -> str:
    made = versatil("checkpoint", "create", "-m", message, cwd=where)
    assert made.code == 0, made.err
    return made.out.strip()


def test_list_shows_this_worktrees_checkpoints_and_all_with_a_column(
    trees: tuple[Path, Path],
) -> None:
    main, wt2 = trees
    in_main = _create(main, "made in main")
    in_wt2 = _create(wt2, "made in wt2")
    listed = versatil("checkpoint", "list", cwd=wt2)
    assert listed.code == 0 and in_wt2 in listed.out and in_main not in listed.out
    assert in_main in versatil("checkpoint", "list", cwd=main).out
    every = versatil("checkpoint", "list", "--all", cwd=wt2).out.splitlines()
    assert [line.split()[0] for line in every] == [in_main, in_wt2]
    assert every[0].endswith(f"[{main}]") and every[1].endswith(f"[{wt2}]")
    as_json = json.loads(versatil("checkpoint", "list", "--json", cwd=wt2).out)
    (record,) = as_json["checkpoints"]
    assert record["worktree"] == str((main / ".git" / "worktrees" / "wt2").resolve())
    assert record["worktree_path"] == str(wt2)
    shown = versatil("checkpoint", "show", in_main, cwd=wt2).out
    assert f"worktree  {main} (not this one)" in shown


def test_restoring_another_worktrees_checkpoint_needs_force_and_says_so(
    trees: tuple[Path, Path],
) -> None:
    main, wt2 = trees
    in_main = _create(main, "made in main")
    refused = versatil("checkpoint", "restore", in_main, "--path", "f.txt", cwd=wt2)
    assert refused.code == 1 and refused.out == ""
    assert len(refused.err.strip().splitlines()) == 1
    assert str(main) in refused.err and str(wt2) in refused.err and "--force" in refused.err
    assert (wt2 / "f.txt").read_text() == "wt2's branch\n"
    compared = versatil("checkpoint", "diff", in_main, cwd=wt2)
    assert compared.code == 1 and str(main) in compared.err and str(wt2) in compared.err
    forced = versatil("checkpoint", "restore", in_main, "--path", "f.txt", "--force", cwd=wt2)
    assert forced.code == 0, forced.err
    assert str(main) in forced.err and str(wt2) in forced.err
    assert (wt2 / "f.txt").read_text() == "main's\n"
    diffed = versatil("checkpoint", "diff", in_main, "--force", cwd=wt2)
    assert diffed.code == 0 and str(main) in diffed.err


def test_a_record_without_a_worktree_is_the_main_worktrees(trees: tuple[Path, Path]) -> None:
    main, wt2 = trees
    old = _create(main, "made by an older versatil")
    # What an older versatil wrote: no worktree field in the metadata file.
    site = Checkpoints(main).site
    path = site.metadata / f"{old}.json"
    data = json.loads(path.read_text())
    del data["worktree"]
    StateDir().write_atomic(path, json.dumps(data).encode())
    assert old in versatil("checkpoint", "list", cwd=main).out
    assert old not in versatil("checkpoint", "list", cwd=wt2).out
    write(main, "f.txt", "changed in main\n")
    assert versatil("checkpoint", "restore", old, cwd=main).code == 0
    assert (main / "f.txt").read_text() == "main's\n"
    assert versatil("checkpoint", "restore", old, "--path", "f.txt", cwd=wt2).code == 1


def test_files_recorded_in_another_worktree_are_not_this_worktrees(
    trees: tuple[Path, Path],
) -> None:
    from versatil_fs.checkpoints import record_files_modified
    from versatil_fs.repo import Repository

    main, wt2 = trees
    in_wt2 = _create(wt2, "before Marcus")
    write(wt2, "f.txt", "wt2 edited by a human\n")
    # Marcus worked on f.txt in main: the same path in wt2 is another file.
    record_files_modified(Repository.find(main), "Marcus", ["f.txt"])
    refused = versatil("checkpoint", "restore", in_wt2, "--agent", "Marcus", cwd=wt2)
    assert refused.code == 1 and "Marcus has no files recorded" in refused.err, refused.err
    assert (wt2 / "f.txt").read_text() == "wt2 edited by a human\n"
    assert "No recorded writes of f.txt" in versatil("who", "f.txt", cwd=wt2).out
    assert "Marcus" in versatil("who", "f.txt", cwd=main).out
    assert versatil("checkpoint", "diff", in_wt2, cwd=wt2).out == "M f.txt  -\n"
