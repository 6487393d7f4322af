"""Checkpoints through the Python API, on real git repositories in tmp_path.

Each test states what a user would notice: their index, HEAD, stash and files untouched by a
create; exactly the selected files changed by a restore (checked file by file, mtimes included);
a refusal that names the file and the agent.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest
from integration.helpers import commit_files
from integration.helpers import git_output as git
from integration.helpers import write_file as write

from versatil_fs import events
from versatil_fs.checkpoints import (
    REF_PREFIX,
    CheckpointRecord,
    Checkpoints,
    checkpoint,
    record_files_modified,
    write_lock_conflicts,
)
from versatil_fs.checkpoints.apply import remove_path
from versatil_fs.errors import NotARepository, Refused, UsageError
from versatil_fs.locks.table import Claim, Grant, Mode, Resource
from versatil_fs.repo import Repository

# Fixtures and helpers ---------------------------------------------------------------------------
# Every test gets its own VERSATIL_HOME and no fault or agent from the caller's shell.
pytestmark = pytest.mark.usefixtures("tester_env")


INITIAL_FILES = {
    "README.md": "hello\n",
    ".gitignore": "*.log\nbuild/\n",
    "src/a.py": "a = 1\n",
    "src/b.py": "b = 1\n",
    "docs/guide.md": "guide\n",
}


def init_repo(path: Path, *, commit: bool = True) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Test User")
    git(path, "config", "user.email", "test@example.invalid")
    git(path, "config", "commit.gpgSign", "false")
    if commit:
        commit_files(path, INITIAL_FILES, message="initial")
    return path.resolve()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "repo")


def tree_state(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every file under ``root`` but .git: kind, mode, content or link target, mtime."""
    state: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root and ".git" in dirnames:
            dirnames.remove(".git")
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            info = os.lstat(full)
            if stat.S_ISLNK(info.st_mode):
                state[rel] = ("link", os.readlink(full))
            else:
                with open(full, "rb") as handle:
                    content = handle.read()
                state[rel] = ("file", info.st_mode & 0o777, content, info.st_mtime_ns)
    return state


def content_state(root: Path) -> dict[str, tuple[Any, ...]]:
    """Like :func:`tree_state` without mtimes: what a restore must bring back."""
    return {k: v[:3] for k, v in tree_state(root).items()}


def user_view(root: Path) -> dict[str, Any]:
    """What `create` must never change: index bytes and mtime, HEAD, branch, stash, refs."""
    index = root / ".git" / "index"
    return {
        "index": index.read_bytes() if index.exists() else None,
        "index_mtime": index.stat().st_mtime_ns if index.exists() else None,
        "HEAD": (root / ".git" / "HEAD").read_text(),
        "head_commit": subprocess.run(
            ["git", "rev-parse", "-q", "--verify", "HEAD"], cwd=root, capture_output=True,
            text=True, check=False,
        ).stdout,
        "stash": git(root, "stash", "list"),
        "branches": git(root, "for-each-ref", "refs/heads", "refs/stash"),
        "status": git(root, "--no-optional-locks", "status", "--porcelain", "-z", "-uall"),
        "git_dir_files": sorted(
            p.name for p in (root / ".git").iterdir() if not p.name.startswith("objects")
        ),
    }


def checkpoint_refs(root: Path) -> list[str]:
    out = git(root, "for-each-ref", "--format=%(refname)", REF_PREFIX)
    return [line[len(REF_PREFIX):] for line in out.splitlines()]


def metadata_dir(cps: Checkpoints) -> Path:
    return cps.site.metadata


# Pure helpers -------------------------------------------------------------------------------------
def _grant(agent: str, mode: Mode, resource: Resource) -> Grant:
    return Grant(id=agent, agent=agent, claims=[Claim(resource, mode)], acquired_at=0.0,
                 expires_at=1.0)


def test_write_lock_conflicts_only_counts_other_agents_write_locks_in_this_repo() -> None:
    grants = [
        _grant("Dana", "write", Resource(repo="/r/.git", path="src")),
        _grant("Reader", "read", Resource(repo="/r/.git", path="docs")),
        _grant("Elsewhere", "write", Resource(repo="/other/.git", path="docs")),
        _grant("Named", "write", Resource(name="db:users")),
        _grant("Me", "write", Resource(repo="/r/.git", path=".")),
    ]
    paths = ["src/a.py", "docs/guide.md", "README.md"]
    assert write_lock_conflicts(grants, paths, repo_key="/r/.git", agent="Me") == [
        ("src/a.py", "Dana")
    ]
    whole = [_grant("Ops", "write", Resource(repo="/r/.git", path="."))]
    assert [a for _, a in write_lock_conflicts(whole, paths, repo_key="/r/.git", agent="Me")] == [
        "Ops", "Ops", "Ops"
    ]


# Create -----------------------------------------------------------------------------------------
def test_create_holds_tracked_and_untracked_files_but_not_ignored_ones(repo: Path) -> None:
    write(repo, "src/a.py", "a = 2\n")
    write(repo, "new.txt", "untracked\n")
    write(repo, "debug.log", "ignored\n")
    git(repo, "add", "src/a.py")
    record = Checkpoints(repo).create("work in progress")
    listed = git(repo, "ls-tree", "-r", "--name-only", record.commit).split()
    assert sorted(listed) == sorted(
        [".gitignore", "README.md", "docs/guide.md", "new.txt", "src/a.py", "src/b.py"]
    )
    assert git(repo, "show", f"{record.commit}:src/a.py") == "a = 2\n"
    assert record.files == 6
    assert record.parent == git(repo, "rev-parse", "HEAD").strip()
    assert sorted(record.files_modified) == ["new.txt", "src/a.py"]
    assert record.message == "work in progress"
    assert record.agent == "Tester"


def test_create_never_touches_index_head_branch_stash_or_files(repo: Path) -> None:
    write(repo, "src/a.py", "a = 2\n")
    git(repo, "add", "src/a.py")
    write(repo, "src/a.py", "a = 3\n")  # staged and unstaged changes differ
    write(repo, "src/b.py", "b = 2\n")
    write(repo, "untracked/n.txt", "n\n")
    before, files_before = user_view(repo), tree_state(repo)
    Checkpoints(repo).create("snapshot")
    assert user_view(repo) == before
    assert tree_state(repo) == files_before


def test_create_works_while_another_process_holds_the_index_lock(repo: Path) -> None:
    lock = repo / ".git" / "index.lock"
    lock.write_text("held by someone else")
    write(repo, "src/a.py", "a = 5\n")
    record = Checkpoints(repo).create("during a commit")
    assert git(repo, "show", f"{record.commit}:src/a.py") == "a = 5\n"
    assert lock.read_text() == "held by someone else"


def test_create_on_an_unborn_branch_has_no_parent_and_can_be_restored(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "fresh", commit=False)
    write(repo, "first.txt", "1\n")
    cps = Checkpoints(repo)
    record = cps.create("before the first commit")
    assert record.parent is None
    assert record.files == 1
    assert record.files_modified == ["first.txt"]
    assert not (repo / ".git" / "index").exists()  # still no index of the user's
    write(repo, "first.txt", "changed\n")
    write(repo, "second.txt", "2\n")
    cps.restore(record.id)
    assert content_state(repo) == {"first.txt": ("file", 0o644, b"1\n")}


def test_metadata_is_a_versioned_private_json_record(repo: Path) -> None:
    cps = Checkpoints(repo)
    record = cps.create("m", wave=2, agent="Marcus", tasks={"t1": "done", "t2": "failed"},
                        tests_run=["tests/test_x.py"], errors=["t2: exit 1"])
    path = metadata_dir(cps) / f"{record.id}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    on_disk = msgspec.json.decode(path.read_bytes(), type=CheckpointRecord)
    assert on_disk == record
    assert on_disk.version == 1
    assert (on_disk.wave, on_disk.agent, on_disk.tasks) == (2, "Marcus", {"t1": "done",
                                                                          "t2": "failed"})
    assert on_disk.tests_run == ["tests/test_x.py"] and on_disk.errors == ["t2: exit 1"]
    assert record.id.startswith("cp-") and record.id.endswith("-wave-2")
    assert not [p for p in metadata_dir(cps).iterdir() if p.name.endswith(".tmp")]


def test_ids_are_unique_and_sort_by_time(repo: Path) -> None:
    cps = Checkpoints(repo)
    made = [cps.create(str(i), prune=False).id for i in range(5)]
    assert len(set(made)) == 5
    assert [r.id for r in cps.list()] == made
    stamps = [i.split("-")[1] + i.split("-")[2] for i in made]
    assert stamps == sorted(stamps)


def test_checkpoint_one_liner(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo / "src")
    record = checkpoint("migration-step1")
    assert record.message == "migration-step1"
    assert [r.id for r in Checkpoints(repo).list()] == [record.id]


def test_not_a_git_repository_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(NotARepository) as caught:
        Checkpoints(tmp_path)
    assert caught.value.exit_code == 2


def test_create_emits_a_checkpoint_event(repo: Path) -> None:
    record = Checkpoints(repo).create("logged", wave=1)
    (event,) = events.read("checkpoints")
    assert event.kind == "create"
    assert event.data["id"] == record.id and event.data["wave"] == 1
    assert event.repo == str(Repository.find(repo).common_dir)


def test_large_new_file_is_reported(repo: Path) -> None:
    write(repo, "big.bin", "x" * 4096)
    write(repo, "small.txt", "x")
    record = Checkpoints(repo, large_file_mb=0.002).create()
    assert record.large_files == {"big.bin": 4096}
    assert any("big.bin" in w and "MB" in w for w in record.warnings)


def test_large_file_size_comes_from_the_configuration(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(repo, "big.bin", "x" * 2048)
    write(repo, ".versatil", "[checkpoints]\nlarge_file_mb = 0.001\n")
    assert Checkpoints(repo).create().large_files == {"big.bin": 2048}
    monkeypatch.setenv("VERSATIL_CHECKPOINTS_LARGE_FILE_MB", "1")
    assert Checkpoints(repo).create().large_files == {}
    monkeypatch.setenv("VERSATIL_CHECKPOINTS_LARGE_FILE_MB", "lots")
    with pytest.raises(UsageError, match="megabytes"):
        Checkpoints(repo).create()


def test_an_edit_in_the_same_second_as_the_index_write_is_not_missed(repo: Path) -> None:
    # Git's racy-clean rule: an entry whose file is not older than the index file is compared
    # by content. The private copy must keep the index's mtime or this edit would look clean.
    git(repo, "config", "core.trustctime", "false")
    target = write(repo, "src/a.py", "a = 1\n")
    stamp = 1_700_000_000
    os.utime(target, (stamp, stamp))
    git(repo, "add", "src/a.py")  # the entry records mtime == stamp
    target.write_text("a = 9\n")  # same size, same inode
    os.utime(target, (stamp, stamp))
    os.utime(repo / ".git" / "index", (stamp, stamp))  # written "in the same second"
    record = Checkpoints(repo).create()
    assert git(repo, "show", f"{record.commit}:src/a.py") == "a = 9\n"


def test_index_version_4_and_split_index(repo: Path) -> None:
    git(repo, "update-index", "--index-version", "4")
    write(repo, "src/a.py", "a = 4\n")
    record = Checkpoints(repo).create()
    assert git(repo, "show", f"{record.commit}:src/a.py") == "a = 4\n"

    git(repo, "update-index", "--split-index")
    write(repo, "staged.txt", "s\n")
    git(repo, "add", "staged.txt")
    write(repo, "src/b.py", "b = 4\n")
    before = user_view(repo)
    shared = sorted((repo / ".git").glob("sharedindex.*"))
    record = Checkpoints(repo).create()
    assert git(repo, "show", f"{record.commit}:staged.txt") == "s\n"
    assert git(repo, "show", f"{record.commit}:src/b.py") == "b = 4\n"
    assert user_view(repo) == before
    assert sorted((repo / ".git").glob("sharedindex.*")) == shared


# Awkward file names, modes, links, nested repositories ------------------------------------------
AWKWARD = ["with space.txt", "new\nline.txt", "ünïcödé/名前.md", "*.py", ":colon", "-dash"]


def test_awkward_names_exec_bits_and_symlinks_survive_a_round_trip(repo: Path) -> None:
    for name in AWKWARD:
        write(repo, name, f"content of {name}\n")
    script = write(repo, "run.sh", "#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    os.symlink("src/a.py", repo / "link-to-a")
    os.symlink("docs", repo / "link-to-docs")
    cps = Checkpoints(repo)
    record = cps.create("awkward")
    expected = content_state(repo)

    for name in AWKWARD:
        (repo / name).unlink()
    script.chmod(0o644)
    (repo / "link-to-a").unlink()
    write(repo, "link-to-a", "now a regular file\n")
    (repo / "link-to-docs").unlink()
    os.symlink("src", repo / "link-to-docs")
    write(repo, "extra\nname", "created after\n")

    result = cps.restore(record.id)
    assert content_state(repo) == expected
    assert "extra\nname" in result.removed
    assert os.readlink(repo / "link-to-a") == "src/a.py"
    assert os.stat(repo / "run.sh").st_mode & 0o111


def test_the_checkpoint_tree_is_the_tree_add_and_write_tree_give(
    repo: Path, tmp_path: Path
) -> None:
    """The commit is built by fast-import from HEAD's tree plus the changed paths; whatever the
    mix of changes, its tree must be the one `add -A` + `write-tree` on a copy of the index
    gives."""
    for name in [*AWKWARD, 'quote".txt', "back\\slash.txt", "tab\tname.txt"]:
        write(repo, name, f"content of {name}\n")
    write(repo, "src/new/deep/er/file.py", "deep\n")
    (repo / "src" / "b.py").unlink()
    (repo / "docs" / "guide.md").unlink()
    (repo / "docs").rmdir()
    write(repo, "docs", "a file where a directory was\n")
    (repo / "README.md").unlink()
    write(repo, "README.md/inner.txt", "a directory where a file was\n")
    write(repo, "src/a.py", "staged\n")
    git(repo, "add", "src/a.py")
    write(repo, "src/a.py", "changed again after staging\n")
    write(repo, "run.sh", "#!/bin/sh\n").chmod(0o755)
    os.symlink("src/a.py", repo / "link")
    head = git(repo, "rev-parse", "HEAD")

    record = Checkpoints(repo).create("a mix of changes")

    index = tmp_path / "index"
    index.write_bytes((repo / ".git" / "index").read_bytes())
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    subprocess.run(["git", "add", "-A"], cwd=repo, env=env, check=True, capture_output=True)
    tree = subprocess.run(["git", "write-tree"], cwd=repo, env=env, check=True,
                          capture_output=True, text=True).stdout.strip()
    assert record.tree == tree
    assert git(repo, "rev-parse", f"{record.commit}^{{tree}}").strip() == tree
    assert git(repo, "rev-parse", f"{record.commit}^").strip() == head.strip() == record.parent
    assert git(repo, "rev-parse", REF_PREFIX + record.id).strip() == record.commit


def test_a_sha256_repository_round_trips(tmp_path: Path) -> None:
    root = tmp_path / "sha256"
    root.mkdir()
    git(root, "init", "-q", "--object-format=sha256")
    commit_files(root, INITIAL_FILES, message="initial")
    write(root, "src/new/file.py", "new\n")
    cps = Checkpoints(root)
    record = cps.create("sha256")
    expected = content_state(root)
    assert len(record.commit) == len(record.tree) == 64
    write(root, "src/a.py", "changed\n")
    (root / "src" / "new" / "file.py").unlink()
    cps.restore(record.id)
    assert content_state(root) == expected


def test_an_id_drawn_twice_is_drawn_again_and_the_existing_ref_never_moves(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import versatil_fs.checkpoints.create as module

    cps = Checkpoints(repo)
    first = cps.create("first")
    draws = iter([first.id])  # the next create draws the same id once
    real = module.new_id
    monkeypatch.setattr(module, "new_id", lambda started, wave: next(draws, real(started, wave)))
    write(repo, "src/a.py", "changed\n")
    second = cps.create("second")
    assert second.id != first.id
    assert git(repo, "rev-parse", REF_PREFIX + first.id).strip() == first.commit
    assert git(repo, "rev-parse", REF_PREFIX + second.id).strip() == second.commit
    assert [r.id for r in cps.list()] == [first.id, second.id]
    assert not list((repo / ".git").glob("fast_import_crash_*"))


def test_a_checkpoint_writes_its_trees_and_commit_as_one_pack(repo: Path) -> None:
    """20 new files two directories deep: 20 new blobs (stored loose by `git add`), and 42 new
    trees plus the commit, which fast-import writes as one pack rather than 43 files."""
    def loose() -> int:
        counts = dict(line.split(": ") for line in git(repo, "count-objects", "-v").splitlines())
        return int(counts["count"])

    def packs() -> int:
        return len(list((repo / ".git" / "objects" / "pack").glob("*.pack")))

    for i in range(20):
        write(repo, f"pkg/m{i}/deep/f.py", f"value = {i}\n")
    loose_before, packs_before = loose(), packs()
    record = Checkpoints(repo).create("many new files and trees")
    assert loose() - loose_before == 20
    assert packs() - packs_before == 1
    assert record.files == len(INITIAL_FILES) + 20


def test_partial_restore_of_a_name_that_looks_like_a_pattern(repo: Path) -> None:
    write(repo, "*.py", "star\n")
    cps = Checkpoints(repo)
    record = cps.create()
    write(repo, "*.py", "changed star\n")
    write(repo, "src/a.py", "a = 99\n")
    result = cps.restore(record.id, paths=["*.py"])
    assert result.changed == ["*.py"]
    assert (repo / "*.py").read_text() == "star\n"
    assert (repo / "src/a.py").read_text() == "a = 99\n"


def test_submodules_and_nested_repositories_are_gitlinks_and_left_alone(
    repo: Path, tmp_path: Path
) -> None:
    nested = init_repo(repo / "vendor" / "nested")
    cps = Checkpoints(repo)
    record = cps.create("with a nested repository")
    assert record.gitlinks == ["vendor/nested"]
    assert any("gitlink" in w and "vendor/nested" in w for w in record.warnings)

    write(nested, "README.md", "changed inside the nested repository\n")
    git(nested, "commit", "-qam", "moved on")
    write(repo, "src/a.py", "a = 2\n")
    result = cps.restore(record.id)
    assert result.skipped == ["vendor/nested"]
    assert (nested / "README.md").read_text() == "changed inside the nested repository\n"
    assert (repo / "src/a.py").read_text() == "a = 1\n"

    # A nested repository created after the checkpoint is not deleted by a full restore.
    later = init_repo(repo / "later")
    result = cps.restore(record.id)
    assert "later" in result.skipped
    assert (later / "README.md").exists()


def test_type_changes_between_file_and_directory(repo: Path) -> None:
    cps = Checkpoints(repo)
    record = cps.create()
    expected = content_state(repo)
    (repo / "docs" / "guide.md").unlink()
    (repo / "docs").rmdir()
    write(repo, "docs", "now a file\n")
    (repo / "README.md").unlink()
    write(repo, "README.md/inner.txt", "now a directory\n")
    cps.restore(record.id)
    assert content_state(repo) == expected


def test_works_in_a_linked_worktree(repo: Path, tmp_path: Path) -> None:
    git(repo, "worktree", "add", "-q", str(tmp_path / "wt"), "-b", "feature")
    wt = (tmp_path / "wt").resolve()
    write(wt, "src/a.py", "a = 'worktree'\n")
    cps = Checkpoints(wt)
    record = cps.create("in a worktree")
    assert git(repo, "show", f"{record.commit}:src/a.py") == "a = 'worktree'\n"
    assert record.parent == git(wt, "rev-parse", "HEAD").strip()
    # Same repository, same checkpoints, wherever you stand.
    assert [r.id for r in Checkpoints(repo).list()] == [record.id]


# Restore: full ------------------------------------------------------------------------------------
def test_full_restore_brings_back_the_tree_and_keeps_ignored_files_and_the_index(
    repo: Path,
) -> None:
    write(repo, "src/a.py", "a = 2\n")
    write(repo, "notes.txt", "untracked then\n")
    cps = Checkpoints(repo)
    record = cps.create("good state")
    expected = content_state(repo)
    git(repo, "add", "-A")
    index_before = (repo / ".git" / "index").read_bytes()
    head_before = git(repo, "rev-parse", "HEAD")

    write(repo, "src/a.py", "a = broken\n")
    (repo / "src/b.py").unlink()
    (repo / "notes.txt").unlink()
    write(repo, "src/new_module.py", "created\n")
    write(repo, "deep/new/dir/file.txt", "created\n")
    write(repo, "app.log", "ignored, kept\n")
    write(repo, "build/out.bin", "ignored, kept\n")

    result = cps.restore(record.id)
    after = content_state(repo)
    assert after.pop("app.log") == ("file", 0o644, b"ignored, kept\n")
    assert after.pop("build/out.bin") == ("file", 0o644, b"ignored, kept\n")
    assert after == expected
    assert not (repo / "deep").exists()  # directories emptied by the restore are removed
    assert sorted(result.removed) == ["deep/new/dir/file.txt", "src/new_module.py"]
    assert sorted(result.restored) == ["notes.txt", "src/a.py", "src/b.py"]
    assert (repo / ".git" / "index").read_bytes() == index_before
    assert git(repo, "rev-parse", "HEAD") == head_before


def test_every_restore_can_be_undone_with_its_safety_checkpoint(repo: Path) -> None:
    cps = Checkpoints(repo)
    record = cps.create("old")
    write(repo, "src/a.py", "a = 'newer work'\n")
    write(repo, "fresh.txt", "fresh\n")
    (repo / "docs/guide.md").unlink()
    newer = content_state(repo)

    result = cps.restore(record.id)
    assert result.safety_checkpoint is not None
    safety = cps.show(result.safety_checkpoint)
    assert safety.kind == "safety" and safety.restore_of == record.id
    assert safety.restore_complete is True
    cps.restore(result.safety_checkpoint)
    assert content_state(repo) == newer


def test_restore_with_nothing_to_change_makes_no_safety_checkpoint(repo: Path) -> None:
    cps = Checkpoints(repo)
    record = cps.create()
    result = cps.restore(record.id)
    assert result.safety_checkpoint is None and result.changed == []
    assert len(cps.list()) == 1


# Restore: partial -------------------------------------------------------------------------------
def test_restore_by_path_changes_exactly_those_files(repo: Path) -> None:
    cps = Checkpoints(repo)
    record = cps.create()
    write(repo, "src/a.py", "a = 2\n")
    (repo / "src/b.py").unlink()
    write(repo, "src/c.py", "created\n")
    write(repo, "docs/guide.md", "edited elsewhere\n")
    write(repo, "README.md", "also edited\n")
    before = tree_state(repo)

    result = cps.restore(record.id, paths=["src", "README.md"])
    assert sorted(result.changed) == ["README.md", "src/a.py", "src/b.py", "src/c.py"]
    after = tree_state(repo)
    for path in ("src/a.py", "src/b.py", "src/c.py", "README.md"):
        before.pop(path, None)
        after.pop(path, None)
    assert after == before  # docs/guide.md and the rest: same content, same mtime
    assert (repo / "src/a.py").read_text() == "a = 1\n"
    assert (repo / "src/b.py").read_text() == "b = 1\n"
    assert not (repo / "src/c.py").exists()
    assert (repo / "docs/guide.md").read_text() == "edited elsewhere\n"


def test_restore_by_path_accepts_absolute_and_dotted_spellings(repo: Path) -> None:
    cps = Checkpoints(repo)
    record = cps.create()
    write(repo, "src/a.py", "a = 2\n")
    cps.restore(record.id, paths=[str(repo / "src" / ".." / "src" / "a.py")])
    assert (repo / "src/a.py").read_text() == "a = 1\n"


def test_restore_path_errors(repo: Path, tmp_path: Path) -> None:
    cps = Checkpoints(repo)
    record = cps.create()
    with pytest.raises(UsageError, match="neither in the working tree nor in checkpoint"):
        cps.restore(record.id, paths=["no/such/file.py"])
    with pytest.raises(UsageError, match="outside the repository"):
        cps.restore(record.id, paths=[str(tmp_path)])
    with pytest.raises(UsageError, match=r"inside \.git"):
        cps.restore(record.id, paths=[".git/config"])


def test_restore_by_agent_rolls_back_only_that_agents_files(repo: Path) -> None:
    the_repo = Repository.find(repo)
    script = write(repo, "tools/run.sh", "#!/bin/sh\n")
    script.chmod(0o755)
    os.symlink("a.py", repo / "src" / "alias.py")
    cps = Checkpoints(repo)
    record = cps.create("before wave 1", wave=1)

    # Marcus: edits, a new file, a deletion, an exec bit and a symlink retargeted.
    write(repo, "src/a.py", "a = 'marcus broke it'\n")
    write(repo, "src/marcus_new.py", "new\n")
    (repo / "src/b.py").unlink()
    script.chmod(0o644)
    (repo / "src/alias.py").unlink()
    os.symlink("b.py", repo / "src" / "alias.py")
    record_files_modified(
        the_repo, "Marcus",
        ["src/a.py", "src/marcus_new.py", "src/b.py", "tools/run.sh", "src/alias.py"],
        wave=1,
    )
    # James works at the same time on other files; his edits must stay.
    write(repo, "docs/guide.md", "james's docs\n")
    write(repo, "docs/new.md", "james's new page\n")
    record_files_modified(the_repo, "James", ["docs/guide.md", "docs/new.md"], wave=1)
    james_before = {k: v for k, v in tree_state(repo).items() if k.startswith("docs/")}

    result = cps.restore(record.id, agent="Marcus")
    assert sorted(result.changed) == [
        "src/a.py", "src/alias.py", "src/b.py", "src/marcus_new.py", "tools/run.sh"
    ]
    assert (repo / "src/a.py").read_text() == "a = 1\n"
    assert (repo / "src/b.py").read_text() == "b = 1\n"
    assert not (repo / "src/marcus_new.py").exists()
    assert os.stat(repo / "tools/run.sh").st_mode & 0o111
    assert os.readlink(repo / "src/alias.py") == "a.py"
    james_after = {k: v for k, v in tree_state(repo).items() if k.startswith("docs/")}
    assert james_after == james_before


def test_restore_by_agent_ignores_edits_recorded_before_the_checkpoint(repo: Path) -> None:
    the_repo = Repository.find(repo)
    write(repo, "src/a.py", "a = 'before'\n")
    record_files_modified(the_repo, "Marcus", ["src/a.py"])
    cps = Checkpoints(repo)
    record = cps.create()
    write(repo, "src/b.py", "b = 'after'\n")
    record_files_modified(the_repo, "Marcus", ["src/b.py"])
    write(repo, "src/a.py", "a = 'after too, but not recorded'\n")
    result = cps.restore(record.id, agent="Marcus")
    assert result.changed == ["src/b.py"]
    assert (repo / "src/a.py").read_text() == "a = 'after too, but not recorded'\n"


def test_restore_by_wave_and_by_directory_records(repo: Path) -> None:
    the_repo = Repository.find(repo)
    cps = Checkpoints(repo)
    record = cps.create(wave=2)
    write(repo, "src/a.py", "wave 2\n")
    write(repo, "src/gen/x.py", "generated by wave 2\n")
    record_files_modified(the_repo, "Dana", ["src/a.py"], wave=2, task="t1")
    record_files_modified(the_repo, "Dana", ["src/gen/"], wave=2, task="t2")
    write(repo, "docs/guide.md", "wave 3\n")
    record_files_modified(the_repo, "Maria", ["docs/guide.md"], wave=3)
    result = cps.restore(record.id, wave=2)
    assert sorted(result.changed) == ["src/a.py", "src/gen/x.py"]
    assert (repo / "docs/guide.md").read_text() == "wave 3\n"
    assert not (repo / "src/gen").exists()


def test_selections_intersect(repo: Path) -> None:
    the_repo = Repository.find(repo)
    cps = Checkpoints(repo)
    record = cps.create()
    write(repo, "src/a.py", "x\n")
    write(repo, "docs/guide.md", "x\n")
    record_files_modified(the_repo, "Marcus", ["src/a.py", "docs/guide.md"], wave=1)
    result = cps.restore(record.id, agent="Marcus", paths=["docs"])
    assert result.changed == ["docs/guide.md"]
    assert (repo / "src/a.py").read_text() == "x\n"


def test_restore_by_agent_refuses_a_file_another_agent_also_changed(repo: Path) -> None:
    the_repo = Repository.find(repo)
    cps = Checkpoints(repo)
    record = cps.create()
    write(repo, "src/a.py", "both touched it\n")
    record_files_modified(the_repo, "Marcus", ["src/a.py"])
    record_files_modified(the_repo, "James", ["src/a.py"])
    with pytest.raises(Refused, match=r"src/a\.py was also modified by James"):
        cps.restore(record.id, agent="Marcus")
    assert (repo / "src/a.py").read_text() == "both touched it\n"
    assert len(cps.list()) == 1  # refused before making a safety checkpoint
    cps.restore(record.id, agent="Marcus", force=True)
    assert (repo / "src/a.py").read_text() == "a = 1\n"


def test_restore_by_agent_with_nothing_recorded_is_refused_and_changes_nothing(
    repo: Path,
) -> None:
    cps = Checkpoints(repo)
    record = cps.create()
    write(repo, "src/a.py", "unrecorded\n")
    # A misspelt name must not pass for "nothing to restore" (issue 15, item 9).
    with pytest.raises(Refused, match="Nobody has no files recorded"):
        cps.restore(record.id, agent="Nobody")
    assert (repo / "src/a.py").read_text() == "unrecorded\n"
    assert len(cps.list()) == 1


# Restore: write locks held by other agents --------------------------------------------------------
def _lock_manager(repo: Path) -> Any:
    manager_module = pytest.importorskip("versatil_fs.locks.manager")
    return manager_module.LockManager(repo=str(repo))


def test_restore_refuses_a_file_write_locked_by_another_agent(repo: Path) -> None:
    manager = _lock_manager(repo)
    cps = Checkpoints(repo)
    record = cps.create()
    write(repo, "src/a.py", "Other's work in progress\n")
    write(repo, "README.md", "mine\n")
    lease = manager.acquire(["src/a.py"], agent="Other", mode="write")
    try:
        before = tree_state(repo)
        with pytest.raises(Refused) as caught:
            cps.restore(record.id, by="Me")
        message = str(caught.value)
        assert "src/a.py" in message and "Other" in message and "--force" in message
        assert caught.value.exit_code == 1
        assert tree_state(repo) == before
        assert len(cps.list()) == 1

        # Its own lock never blocks an agent, and a path selection can go around the lock.
        cps.restore(record.id, paths=["README.md"], by="Me")
        assert (repo / "README.md").read_text() == "hello\n"
        cps.restore(record.id, by="Other")
        assert (repo / "src/a.py").read_text() == "a = 1\n"
    finally:
        lease.release()
    assert [e.kind for e in events.read("checkpoints")].count("restore-refused") == 1


def test_force_overwrites_a_locked_file_and_read_locks_never_block(repo: Path) -> None:
    manager = _lock_manager(repo)
    cps = Checkpoints(repo)
    record = cps.create()
    write(repo, "src/a.py", "locked\n")
    write(repo, "docs/guide.md", "read-locked\n")
    held = [
        manager.acquire(["src/"], agent="Other", mode="write"),
        manager.acquire(["docs/"], agent="Reader", mode="read"),
    ]
    try:
        cps.restore(record.id, paths=["docs"], by="Me")
        assert (repo / "docs/guide.md").read_text() == "guide\n"
        with pytest.raises(Refused, match="Other"):
            cps.restore(record.id, by="Me")
        cps.restore(record.id, by="Me", force=True)
        assert (repo / "src/a.py").read_text() == "a = 1\n"
    finally:
        for lease in held:
            lease.release()


# Ids ----------------------------------------------------------------------------------------------
def test_unknown_and_ambiguous_ids_are_usage_errors_naming_candidates(repo: Path) -> None:
    cps = Checkpoints(repo)
    first = cps.create("one", prune=False)
    second = cps.create("two", prune=False)
    with pytest.raises(UsageError, match="No checkpoint 'nope'") as caught:
        cps.show("nope")
    assert caught.value.exit_code == 2
    with pytest.raises(UsageError) as caught:
        cps.show("cp-")
    assert first.id in str(caught.value) and second.id in str(caught.value)
    shared = next(i for i, (a, b) in enumerate(zip(first.id, second.id, strict=False)) if a != b)
    assert cps.show(second.id[: shared + 1]).id == second.id  # a unique prefix is enough
    assert cps.show(REF_PREFIX + first.id).id == first.id
    assert cps.show(first.id[3:]).id == first.id  # the "cp-" may be left out


# Diff -------------------------------------------------------------------------------------------
def test_diff_lists_what_changed_since_the_checkpoint(repo: Path) -> None:
    cps = Checkpoints(repo)
    record = cps.create()
    write(repo, "src/a.py", "a = 2\n")
    (repo / "src/b.py").unlink()
    write(repo, "new file.txt", "n\n")
    before = user_view(repo)
    changes = {c.path: c.status for c in cps.diff(record.id)}
    assert changes == {"src/a.py": "M", "src/b.py": "D", "new file.txt": "A"}
    patch = cps.diff_patch(record.id).decode()
    assert "+a = 2" in patch and "-b = 1" in patch
    assert user_view(repo) == before


# Prune ------------------------------------------------------------------------------------------
def test_create_prunes_to_max_checkpoints_oldest_first(repo: Path) -> None:
    cps = Checkpoints(repo)
    made = [cps.create(str(i)).id for i in range(12)]
    assert [r.id for r in cps.list()] == made[2:]
    assert sorted(checkpoint_refs(repo)) == sorted(made[2:])
    assert sorted(p.stem for p in metadata_dir(cps).glob("*.json")) == sorted(made[2:])
    pruned = [e for e in events.read("checkpoints") if e.kind == "prune"]
    assert [i for e in pruned for i in e.data["removed"]] == made[:2]


def test_prune_keep_and_configured_max(repo: Path) -> None:
    cps = Checkpoints(repo)
    made = [cps.create(str(i), prune=False).id for i in range(5)]
    result = cps.prune(keep=2)
    assert result.removed == made[:3] and result.kept == 2
    assert sorted(checkpoint_refs(repo)) == sorted(made[3:])
    with pytest.raises(UsageError):
        cps.prune(keep=-1)

    (repo / ".versatil").write_text("[checkpoints]\nmax_checkpoints = 3\n")
    configured = Checkpoints(repo)
    pytest.importorskip("versatil_fs.config")
    assert configured.max_checkpoints() == 3
    for i in range(3):
        configured.create(f"more {i}")
    assert len(configured.list()) == 3
    assert cps.prune(keep=0).kept == 0
    assert checkpoint_refs(repo) == []


def test_prune_removes_orphaned_metadata(repo: Path) -> None:
    cps = Checkpoints(repo)
    record = cps.create()
    git(repo, "update-ref", "-d", REF_PREFIX + record.id)  # deleted by hand
    assert (metadata_dir(cps) / f"{record.id}.json").exists()
    cps.prune()
    assert not (metadata_dir(cps) / f"{record.id}.json").exists()


# Damaged or missing metadata ----------------------------------------------------------------------
def test_damaged_metadata_is_moved_aside_and_rebuilt_from_the_commit(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cps = Checkpoints(repo)
    record = cps.create("keep me", wave=3, agent="Dana")
    path = metadata_dir(cps) / f"{record.id}.json"
    path.write_bytes(b"{not json")
    (listed,) = cps.list()
    assert listed.recovered is True
    assert (listed.id, listed.message, listed.wave, listed.agent) == (
        record.id, "keep me", 3, "Dana"
    )
    assert listed.commit == record.commit and listed.tree == record.tree
    assert abs(listed.time - record.time) < 1e-6
    assert "moved it aside" in capsys.readouterr().err
    assert list(metadata_dir(cps).glob(f"{record.id}.json.corrupt-*"))
    rebuilt = msgspec.json.decode(path.read_bytes(), type=CheckpointRecord)
    assert rebuilt.recovered is True
    # Restoring a rebuilt checkpoint works like any other.
    write(repo, "src/a.py", "changed\n")
    cps.restore(record.id)
    assert (repo / "src/a.py").read_text() == "a = 1\n"


def test_missing_metadata_is_listed_from_the_ref(repo: Path) -> None:
    cps = Checkpoints(repo)
    record = cps.create("lost metadata")
    (metadata_dir(cps) / f"{record.id}.json").unlink()
    (listed,) = cps.list()
    assert listed.recovered and listed.message == "lost metadata"
    assert listed.files is None


def test_scratch_directories_of_dead_processes_are_swept(repo: Path) -> None:
    cps = Checkpoints(repo)
    scratch = metadata_dir(cps) / "scratch"
    scratch.mkdir(exist_ok=True)
    (scratch / "12345-dead").mkdir()
    (scratch / "12345-dead" / "index").write_bytes(b"stale")
    (scratch / "12345-dead.lock").write_bytes(b"")  # nobody holds its flock
    Checkpoints(repo).create()
    assert list(scratch.iterdir()) == []


def test_prune_removes_metadata_temporaries_of_dead_writers(repo: Path) -> None:
    cps = Checkpoints(repo)
    record = cps.create()
    stale = metadata_dir(cps) / f".{record.id}.json.999.1.tmp"
    fresh = metadata_dir(cps) / ".cp-other.json.998.1.tmp"
    stale.write_bytes(b"{half")
    fresh.write_bytes(b"{being written")
    os.utime(stale, (1, 1))
    cps.prune()
    assert not stale.exists()
    assert fresh.exists()  # a writer may still be busy with it


def test_a_state_directory_given_to_checkpoints_is_the_one_its_locks_and_events_use(
    repo: Path, tmp_path: Path
) -> None:
    # Checkpoints(state=X) once asked the lock manager of the default state directory and
    # logged to $VERSATIL_HOME: a file write-locked in X was overwritten without refusal.
    from versatil_fs.locks.manager import LockManager
    from versatil_fs.state import StateDir

    other = StateDir(tmp_path / "other-state")
    cps = Checkpoints(repo, state=other)
    record = cps.create("in the other state")
    write(repo, "src/a.py", "Other's work in progress\n")
    lease = LockManager(repo=str(repo), state=other).acquire(
        ["src/a.py"], agent="Other", mode="write"
    )
    try:
        with pytest.raises(Refused, match="write-locked by Other"):
            cps.restore(record.id, by="Me")
        assert (repo / "src/a.py").read_text() == "Other's work in progress\n"
    finally:
        lease.release()
    kinds = [e.kind for e in events.read("checkpoints", state=other)]
    assert kinds == ["create", "restore-refused"]
    assert events.read("checkpoints") == []  # nothing went to $VERSATIL_HOME


def test_restore_by_agent_reads_the_modifications_recorded_in_its_own_state(
    repo: Path, tmp_path: Path
) -> None:
    from versatil_fs.state import StateDir

    other = StateDir(tmp_path / "other-state")
    cps = Checkpoints(repo, state=other)
    record = cps.create()
    write(repo, "src/a.py", "Marcus's attempt\n")
    write(repo, "src/b.py", "someone else's\n")
    record_files_modified(cps.repo, "Marcus", ["src/a.py"], state=other)
    result = cps.restore(record.id, agent="Marcus")
    assert result.changed == ["src/a.py"]
    assert (repo / "src/b.py").read_text() == "someone else's\n"
    assert events.read("collision-detection") == []


def test_a_removal_never_follows_a_symlink_out_of_the_repository(
    repo: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("not the repository's\n")
    os.symlink(outside, repo / "escape")
    remove_path(Checkpoints(repo).repo.toplevel, "escape/precious.txt")
    assert (outside / "precious.txt").read_text() == "not the repository's\n"


def test_restore_for_an_agent_is_not_blocked_by_that_agents_own_locks(repo: Path) -> None:
    manager = _lock_manager(repo)
    the_repo = Repository.find(repo)
    cps = Checkpoints(repo)
    record = cps.create()
    write(repo, "src/a.py", "Marcus's failed attempt\n")
    record_files_modified(the_repo, "Marcus", ["src/a.py"])
    lease = manager.acquire(["src/"], agent="Marcus", mode="write")
    try:
        result = cps.restore(record.id, agent="Marcus")
        assert result.changed == ["src/a.py"]
        assert (repo / "src/a.py").read_text() == "a = 1\n"
    finally:
        lease.release()


def test_restore_without_pruning_keeps_the_oldest_checkpoints(repo: Path) -> None:
    cps = Checkpoints(repo)
    made = [cps.create(str(i), prune=False).id for i in range(10)]
    write(repo, "src/a.py", "changed\n")
    result = cps.restore(made[0], prune=False)
    assert [r.id for r in cps.list()] == [*made, result.safety_checkpoint]
    write(repo, "src/a.py", "changed again\n")
    cps.restore(made[0])  # the default prunes afterwards: the safety checkpoints are
    # automatic, under their own budget, so none of the user's 10 goes (issue 15, item 8)
    assert [r.id for r in cps.list()][:10] == made and len(cps.list()) == 12


def test_a_real_submodule_is_a_gitlink_and_its_checkout_is_left_alone(
    repo: Path, tmp_path: Path
) -> None:
    upstream = init_repo(tmp_path / "upstream")
    subprocess.run(
        ["git", "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(upstream),
         "libs/upstream"],
        cwd=repo, check=True, capture_output=True,
    )
    git(repo, "commit", "-qm", "add a submodule")
    cps = Checkpoints(repo)
    record = cps.create("with a submodule")
    assert record.gitlinks == ["libs/upstream"]
    assert "libs/upstream" in record.warnings[0] and "nested" not in record.warnings[0]
    sub = repo / "libs" / "upstream"
    write(sub, "README.md", "edited inside the submodule\n")
    write(repo, "README.md", "edited outside\n")
    result = cps.restore(record.id)
    assert result.changed == ["README.md"]
    assert (sub / "README.md").read_text() == "edited inside the submodule\n"


def test_a_hook_environment_never_redirects_a_checkpoint_or_a_restore(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What git exports to a hook (another repository's GIT_DIR and index) and a user's pathspec
    # switch: every command goes through git.py's no_git_env, so none of them applies.
    other = init_repo(tmp_path / "other")
    before = user_view(other)
    git(repo, "update-index", "--assume-unchanged", "src/b.py")  # re-added by pathspec
    write(repo, "src/b.py", "edited behind an assume-unchanged flag\n")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    monkeypatch.setenv("GIT_GLOB_PATHSPECS", "1")
    cps = Checkpoints(repo)
    record = cps.create("in a hook")
    assert "src/b.py" in record.files_modified
    write(repo, "src/a.py", "changed\n")
    assert cps.restore(record.id).changed == ["src/a.py"]
    assert (repo / "src/a.py").read_text() == "a = 1\n"
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_INDEX_FILE")
    monkeypatch.delenv("GIT_WORK_TREE")
    assert user_view(other) == before
    assert checkpoint_refs(other) == []
