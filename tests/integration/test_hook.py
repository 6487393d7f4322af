"""The git pre-commit guard, end to end: real repositories, real ``git commit``, real hooks.

Locks are taken as shell leases (they stay in the table without a live process) or by a child
process (a process lease, "while its process PID lives"). Every commit runs the installed hook,
which finds the ``versatil`` console script of this interpreter's environment on PATH.
"""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.helpers import (
    REPO_ROOT,
    Spawner,
    commit_files,
    git,
    lock_agent,
    make_git_repo,
    run_versatil,
    wait_for,
)

from versatil_fs import events, hook
from versatil_fs.locks.holders import write_holder
from versatil_fs.locks.manager import LockManager
from versatil_fs.locks.table import Claim, Grant, Mode, Resource

BIN = str(Path(sys.executable).parent)


@pytest.fixture(autouse=True)
def versatil_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook runs `versatil` from PATH, as it would in the committer's activated venv."""
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.fixture
def repo(git_repo: Path) -> Path:
    """A repository with a few files and the guard installed."""
    names = ("src/a.py", "src/deep/b.py", "docs/guide.md", "free.py", "srcfoo.py")
    commit_files(git_repo, {name: f"# {name}\n" for name in names})
    hook.install(git_repo)
    return git_repo


def shell_lock(repo: Path, *paths: str, agent: str = "Other", mode: Mode = "write") -> Grant:
    """A shell lease: it stays in the lock table without a live process."""
    lease = LockManager(repo=str(repo)).acquire(
        list(paths),
        agent=agent,
        mode=mode,
        owner="shell",
        wait=0,
    )
    return lease.grant


def edit(repo: Path, *names: str) -> None:
    for name in names:
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            handle.write("changed\n")
    git(repo, "add", "--", *names)


def commit(
    repo: Path, *args: str, agent: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    if agent is not None:
        full["VERSATIL_AGENT"] = agent
    full.update(env or {})
    return subprocess.run(
        ["git", "commit", "-m", "change", *args],
        cwd=repo,
        env=full,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def assert_refused(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode != 0, f"commit went through:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in result.stderr, f"{text!r} not in:\n{result.stderr}"
    return result.stderr


def assert_committed(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"commit refused:\n{result.stdout}\n{result.stderr}"


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD")


# Allowed and refused -----------------------------------------------------------------------------
def test_own_lock_allows_the_commit(repo: Path) -> None:
    shell_lock(repo, "src/a.py", agent="Marcus")
    edit(repo, "src/a.py")
    assert_committed(commit(repo, agent="Marcus"))


def test_another_agents_lock_refuses_with_who_since_until_and_ways_out(repo: Path) -> None:
    grant = shell_lock(repo, "src/a.py", agent="Other")
    edit(repo, "src/a.py", "free.py")
    before = head(repo)

    err = assert_refused(
        commit(repo, agent="Marcus"),
        "src/a.py (modified): locked by Other",
        time.strftime("since %H:%M:%S", time.localtime(grant.acquired_at)),
        time.strftime("until %H:%M:%S", time.localtime(grant.expires_at)),
        "the committer is Marcus (VERSATIL_AGENT)",
        "wait until Other releases",
        "ask Other",
        "versatil release --agent Other",
        "git commit --no-verify, at your own risk",
    )
    assert "free.py" not in err.replace("srcfoo", "")  # only the locked file is named
    assert head(repo) == before
    [logged] = events.read("collision-detection")
    assert (logged.kind, logged.agent) == ("commit-refused", "Marcus")
    assert logged.data == {"files": ["src/a.py"], "holders": ["Other"]}


def test_a_process_lease_is_held_while_its_process_lives(repo: Path, spawn: Spawner) -> None:
    holder = lock_agent(spawn, repo)
    holder.acquire(["src/a.py"], agent="Dana")
    edit(repo, "src/a.py")

    assert_refused(
        commit(repo, agent="Marcus"),
        "locked by Dana",
        f"while its process {holder.pid} lives",
    )

    holder.kill9()  # the kernel drops its flock: the lease is gone with the process
    assert_committed(commit(repo, agent="Marcus"))


def test_committer_from_git_config_and_env_overrides_it(repo: Path) -> None:
    shell_lock(repo, "src/a.py", agent="Marcus")
    git(repo, "config", "versatil.agent", "Marcus")
    edit(repo, "src/a.py")
    result = commit(repo, agent="James")
    assert_refused(result, "the committer is James (VERSATIL_AGENT)", "locked by Marcus")
    assert_committed(commit(repo))  # git config versatil.agent: Marcus, its own lock


def test_read_locks_of_others_never_block(repo: Path) -> None:
    shell_lock(repo, "src/", agent="Other", mode="read")
    edit(repo, "src/a.py")
    assert_committed(commit(repo, agent="Marcus"))
    edit(repo, "src/deep/b.py")
    assert_committed(commit(repo))  # not even a human


def test_directory_lock_covers_every_file_below_it(repo: Path) -> None:
    shell_lock(repo, "src/", agent="Other")
    edit(repo, "src/deep/b.py")
    assert_refused(
        commit(repo, agent="Marcus"),
        "src/deep/b.py (modified): locked by Other via its lock on src/",
    )
    git(repo, "reset", "-q")
    edit(repo, "srcfoo.py", "docs/guide.md")  # a sibling whose name merely starts with "src"
    assert_committed(commit(repo, agent="Marcus"))


def test_rename_into_a_locked_directory_is_refused(repo: Path) -> None:
    shell_lock(repo, "src/deep/", agent="Other")
    git(repo, "mv", "free.py", "src/deep/free.py")
    assert_refused(commit(repo, agent="Marcus"), "src/deep/free.py (renamed to")


def test_rename_out_of_a_locked_directory_is_refused(repo: Path) -> None:
    shell_lock(repo, "src/deep/", agent="Other")
    git(repo, "mv", "src/deep/b.py", "b.py")
    assert_refused(commit(repo, agent="Marcus"), "src/deep/b.py (renamed from")


def test_deleting_a_locked_file_is_refused(repo: Path) -> None:
    shell_lock(repo, "src/a.py", agent="Other")
    git(repo, "rm", "-q", "src/a.py")
    assert_refused(commit(repo, agent="Marcus"), "src/a.py (deleted): locked by Other")


def test_a_human_committer_is_bound_by_every_write_lock(repo: Path) -> None:
    edit(repo, "src/a.py")
    assert_committed(commit(repo))  # no locks: humans commit freely

    shell_lock(repo, "src/a.py", agent="Marcus")
    edit(repo, "src/a.py")
    assert_refused(
        commit(repo),
        "the committer is a human",
        "locked by Marcus",
        "VERSATIL_AGENT=NAME git commit",
    )
    assert_committed(commit(repo, agent="Marcus"))


def test_commit_all_checks_what_git_commit_a_stages(repo: Path) -> None:
    shell_lock(repo, "src/a.py", agent="Other")
    (repo / "src/a.py").write_text("edited, not staged\n")
    assert_refused(commit(repo, "-a", agent="Marcus"), "src/a.py (modified)")


def test_first_commit_of_an_empty_repository(tmp_path: Path) -> None:
    repo = tmp_path / "fresh"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    hook.install(repo)
    shell_lock(repo, "a.py", agent="Other")
    edit(repo, "a.py", "b.py")
    assert_refused(commit(repo, agent="Marcus"), "a.py (added): locked by Other")
    git(repo, "rm", "-q", "--cached", "a.py")
    assert_committed(commit(repo, agent="Marcus"))


def test_named_resources_and_other_repositories_do_not_block(repo: Path, tmp_path: Path) -> None:
    other = make_git_repo(tmp_path / "other", {"src/a.py": "x\n"})
    shell_lock(other, "src/a.py", agent="Other")  # same path, another repository
    shell_lock(repo, "db:users", agent="Other")
    edit(repo, "src/a.py")
    assert_committed(commit(repo))


def test_an_expired_shell_lease_no_longer_blocks(repo: Path) -> None:
    lease = LockManager(repo=str(repo)).acquire(
        ["src/a.py"], agent="Other", owner="shell", ttl=0.05
    )
    wait_for(lambda: time.time() > lease.grant.expires_at, message="the lease to expire")
    edit(repo, "src/a.py")
    assert_committed(commit(repo, agent="Marcus"))


# The existing hook, hooksPath, worktrees -------------------------------------------------------
FOREIGN_HOOK = (
    b'#!/bin/sh\n# somebody\'s own hook\necho ran >> "$FOREIGN_LOG"\nexit ${FOREIGN_EXIT:-0}'
)


def write_foreign_hook(hooks_dir: Path, content: bytes = FOREIGN_HOOK, mode: int = 0o750) -> Path:
    hooks_dir.mkdir(parents=True, exist_ok=True)
    path = hooks_dir / "pre-commit"
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_an_existing_hook_is_kept_runs_first_and_its_refusal_holds(
    git_repo: Path, tmp_path: Path
) -> None:
    log = tmp_path / "foreign.log"
    write_foreign_hook(git_repo / ".git" / "hooks")
    result = run_versatil("hook", "install", cwd=git_repo)
    assert result.returncode == 0, result.stderr
    assert "kept as pre-commit.versatil-orig" in result.stdout
    env = {"FOREIGN_LOG": str(log)}

    edit(git_repo, "a.py")
    assert_committed(commit(git_repo, agent="Marcus", env=env))
    assert log.read_text() == "ran\n"

    shell_lock(git_repo, "b.py", agent="Other")
    edit(git_repo, "b.py")
    assert_refused(commit(git_repo, agent="Marcus", env=env), "b.py (added): locked by Other")
    assert log.read_text() == "ran\nran\n"  # it ran first, passed, and our check refused

    git(git_repo, "reset", "-q")
    edit(git_repo, "c.py")
    result = commit(git_repo, agent="Marcus", env={**env, "FOREIGN_EXIT": "3"})
    assert result.returncode != 0  # its own refusal still refuses the commit
    assert log.read_text() == "ran\nran\nran\n"


def test_core_hooks_path_is_honoured(git_repo: Path) -> None:
    git(git_repo, "config", "core.hooksPath", ".githooks")
    before = sorted(os.listdir(git_repo / ".git" / "hooks"))
    result = run_versatil("hook", "install", cwd=git_repo / ".git")
    assert result.returncode == 0, result.stderr
    assert (git_repo / ".githooks" / "pre-commit").is_file()
    assert sorted(os.listdir(git_repo / ".git" / "hooks")) == before

    shell_lock(git_repo, "a.py", agent="Other")
    edit(git_repo, "a.py")
    assert_refused(commit(git_repo, agent="Marcus"), "a.py (added): locked by Other")

    assert run_versatil("hook", "uninstall", cwd=git_repo).returncode == 0
    assert not (git_repo / ".githooks").exists()  # we created it, so we take it away


def test_core_hooks_path_with_a_tilde(git_repo: Path) -> None:
    git(git_repo, "config", "core.hooksPath", "~/shared-hooks")
    hook.install(git_repo)
    assert (Path(os.environ["HOME"]) / "shared-hooks" / "pre-commit").is_file()


def test_one_install_guards_every_worktree(git_repo: Path, tmp_path: Path) -> None:
    worktree = tmp_path / "wt"
    git(git_repo, "worktree", "add", "-q", "-b", "feature", str(worktree))
    result = run_versatil("hook", "install", cwd=worktree)  # installed from the worktree...
    assert result.returncode == 0, result.stderr
    assert (git_repo / ".git" / "hooks" / "pre-commit").is_file()  # ...into the common dir

    shell_lock(git_repo, "shared.py", agent="Other")  # locked from the main checkout
    edit(worktree, "shared.py")
    assert_refused(commit(worktree, agent="Marcus"), "shared.py (added): locked by Other")
    edit(git_repo, "shared.py")
    assert_refused(commit(git_repo, agent="Marcus"), "shared.py (added): locked by Other")
    assert_committed(commit(worktree, agent="Other"))


def test_a_bare_repository_with_a_detached_work_tree(tmp_path: Path) -> None:
    # The dotfiles layout: no .git in the work tree; git is told where everything is.
    bare, work = tmp_path / "dots.git", tmp_path / "work"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    work.mkdir()
    where = {"GIT_DIR": str(bare), "GIT_WORK_TREE": str(work)}
    installed = run_versatil("hook", "install", cwd=work, env=where)
    assert installed.returncode == 0, installed.stderr
    assert (bare / "hooks" / "pre-commit").is_file()
    key = os.path.realpath(bare)
    LockManager(repo=None).acquire([Resource(repo=key, path="a.py")], agent="Other", owner="shell")
    (work / "a.py").write_text("x\n")
    git_args = ["git", f"--git-dir={bare}", f"--work-tree={work}"]
    subprocess.run([*git_args, "add", "a.py"], cwd=work, check=True)
    result = subprocess.run(
        [*git_args, "commit", "-m", "dotfiles"],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "VERSATIL_AGENT": "Marcus"},
    )
    assert_refused(result, "a.py (added): locked by Other")


def snapshot(directory: Path) -> dict[str, tuple[int, bytes | str, int]]:
    """Every entry: mode, content (or symlink target) and mtime — what 'unchanged' means."""
    found: dict[str, tuple[int, bytes | str, int]] = {}
    for entry in sorted(directory.iterdir()):
        info = entry.lstat()
        data: bytes | str = os.readlink(entry) if stat.S_ISLNK(info.st_mode) else entry.read_bytes()
        found[entry.name] = (info.st_mode, data, info.st_mtime_ns)
    return found


def test_installing_twice_changes_nothing(git_repo: Path) -> None:
    hooks_dir = git_repo / ".git" / "hooks"
    write_foreign_hook(hooks_dir)
    assert run_versatil("hook", "install", cwd=git_repo).returncode == 0
    once = snapshot(hooks_dir)
    result = run_versatil("hook", "install", cwd=git_repo)
    assert result.returncode == 0, result.stderr
    assert "already installed" in result.stdout
    assert snapshot(hooks_dir) == once


def test_install_leaves_an_edited_copy_alone_unless_forced(git_repo: Path) -> None:
    installed = git_repo / ".git" / "hooks" / "pre-commit"
    hook.install(git_repo)
    installed.write_text(installed.read_text() + "# my tweak\n")
    result = run_versatil("hook", "install", cwd=git_repo)
    assert result.returncode == 0 and "--force" in result.stdout
    assert installed.read_text().endswith("# my tweak\n")
    result = run_versatil("hook", "install", "--force", cwd=git_repo)
    assert result.returncode == 0 and "Rewrote" in result.stdout
    assert installed.read_text() == hook.render_hook(sys.executable)


@pytest.mark.parametrize(
    "content,mode",
    [
        (FOREIGN_HOOK, 0o750),  # no final newline
        (b"#!/usr/bin/env python3\r\n# \xff\xfe not UTF-8\r\nraise SystemExit(0)\r\n", 0o700),
    ],
)
def test_uninstall_restores_the_original_byte_for_byte(
    git_repo: Path, content: bytes, mode: int
) -> None:
    hooks_dir = git_repo / ".git" / "hooks"
    write_foreign_hook(hooks_dir, content, mode)
    before = snapshot(hooks_dir)
    assert run_versatil("hook", "install", cwd=git_repo).returncode == 0
    assert (hooks_dir / "pre-commit").read_bytes() != content
    result = run_versatil("hook", "uninstall", cwd=git_repo)
    assert result.returncode == 0, result.stderr
    assert snapshot(hooks_dir) == before  # bytes, mode, even the mtime


def test_uninstall_restores_a_symlinked_hook_as_a_symlink(git_repo: Path, tmp_path: Path) -> None:
    hooks_dir = git_repo / ".git" / "hooks"
    target = tmp_path / "team-hook"
    target.write_bytes(FOREIGN_HOOK)
    target.chmod(0o755)
    (hooks_dir / "pre-commit").symlink_to("../../../team-hook")
    before = snapshot(hooks_dir)
    hook.install(git_repo)
    assert (hooks_dir / "pre-commit.versatil-orig").is_symlink()
    hook.uninstall(git_repo)
    assert snapshot(hooks_dir) == before


def test_uninstall_without_an_original_leaves_the_directory_as_it_was(git_repo: Path) -> None:
    hooks_dir = git_repo / ".git" / "hooks"
    before = snapshot(hooks_dir)
    hook.install(git_repo)
    hook.uninstall(git_repo)
    assert snapshot(hooks_dir) == before
    result = run_versatil("hook", "uninstall", cwd=git_repo)
    assert result.returncode == 0 and "nothing to do" in result.stdout


def test_uninstall_refuses_to_remove_a_hook_that_is_not_ours(git_repo: Path) -> None:
    path = write_foreign_hook(git_repo / ".git" / "hooks")
    result = run_versatil("hook", "uninstall", cwd=git_repo)
    assert result.returncode == 1
    assert "is not versatil's pre-commit hook" in result.stderr
    assert path.read_bytes() == FOREIGN_HOOK


def test_install_refuses_when_a_saved_original_is_in_the_way(git_repo: Path) -> None:
    hooks_dir = git_repo / ".git" / "hooks"
    write_foreign_hook(hooks_dir)
    (hooks_dir / "pre-commit.versatil-orig").write_text("#!/bin/sh\n# older\n")
    result = run_versatil("hook", "install", cwd=git_repo)
    assert result.returncode == 1
    assert "pre-commit.versatil-orig" in result.stderr
    assert (hooks_dir / "pre-commit").read_bytes() == FOREIGN_HOOK


def test_install_outside_a_repository_is_a_usage_error(tmp_path: Path) -> None:
    result = run_versatil("hook", "install", cwd=tmp_path)
    assert result.returncode == 2
    assert "not inside a git repository" in result.stderr


# Finding versatil --------------------------------------------------------------------------------
def test_the_hook_refuses_clearly_when_versatil_is_not_found(git_repo: Path) -> None:
    installed = git_repo / ".git" / "hooks" / "pre-commit"
    installed.write_text(hook.render_hook(""))  # hooks/pre-commit as shipped: no fallback
    installed.chmod(0o755)
    edit(git_repo, "a.py")
    assert_refused(
        commit(git_repo, env={"PATH": "/usr/bin:/bin"}),
        "'versatil' is not on PATH",
        "versatil hook uninstall",
        "--no-verify",
    )


def test_the_installing_interpreter_is_the_fallback_off_path(git_repo: Path) -> None:
    hook.install(git_repo)
    shell_lock(git_repo, "a.py", agent="Other")
    edit(git_repo, "a.py")
    assert_refused(commit(git_repo, env={"PATH": "/usr/bin:/bin"}), "locked by Other")


def test_hooks_pre_commit_is_the_installed_template() -> None:
    shipped = REPO_ROOT / "hooks" / "pre-commit"
    assert shipped.read_text() == hook.render_hook("")
    assert os.access(shipped, os.X_OK)


# The pre-commit framework -----------------------------------------------------------------------
@pytest.fixture
def pre_commit_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRE_COMMIT_HOME", str(tmp_path / "pre-commit-home"))


def pre_commit(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


LOCAL_CONFIG = """\
repos:
  - repo: local
    hooks:
      - id: versatil-lock-guard
        name: versatil lock guard
        entry: versatil hook check
        language: system
        pass_filenames: false
        always_run: true
"""


@pytest.mark.usefixtures("pre_commit_env")
def test_pre_commit_framework_with_a_local_hook(git_repo: Path) -> None:
    (git_repo / ".pre-commit-config.yaml").write_text(LOCAL_CONFIG)
    git(git_repo, "add", ".pre-commit-config.yaml")
    git(git_repo, "commit", "-q", "-m", "pre-commit config")
    installed = pre_commit(git_repo, "install")
    assert installed.returncode == 0, installed.stdout + installed.stderr

    shell_lock(git_repo, "src/", agent="Other")
    edit(git_repo, "src/a.py")
    ran = pre_commit(git_repo, "run")
    assert ran.returncode == 1
    assert "src/a.py (added): locked by Other" in ran.stdout
    result = commit(git_repo, agent="Marcus")
    assert result.returncode == 1
    assert "locked by Other" in result.stdout + result.stderr
    assert_committed(commit(git_repo, agent="Other"))


@pytest.mark.usefixtures("pre_commit_env")
def test_pre_commit_framework_with_this_project_as_a_remote_repo(
    git_repo: Path, tmp_path: Path
) -> None:
    # A clone stand-in: a repository whose commit holds this project's hook manifest.
    hooks_repo = make_git_repo(
        tmp_path / "versatil-fs",
        {".pre-commit-hooks.yaml": (REPO_ROOT / ".pre-commit-hooks.yaml").read_text()},
    )
    config = (
        "repos:\n"
        f"  - repo: {hooks_repo}\n"
        f"    rev: {head(hooks_repo)}\n"
        "    hooks:\n"
        "      - id: versatil-lock-guard\n"
    )
    (git_repo / ".pre-commit-config.yaml").write_text(config)
    git(git_repo, "add", ".pre-commit-config.yaml")
    git(git_repo, "commit", "-q", "-m", "pre-commit config")

    shell_lock(git_repo, "README.md", agent="Other")
    (git_repo / "README.md").write_text("changed\n")
    git(git_repo, "add", "README.md")
    ran = pre_commit(git_repo, "run")
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "README.md (modified): locked by Other" in ran.stdout
    assert pre_commit(git_repo, "install").returncode == 0
    result = commit(git_repo, agent="Marcus")
    assert result.returncode == 1
    assert "locked by Other" in result.stdout + result.stderr


@pytest.mark.usefixtures("pre_commit_env")
def test_installed_over_the_pre_commit_frameworks_own_hook(git_repo: Path) -> None:
    (git_repo / ".pre-commit-config.yaml").write_text(
        "repos:\n"
        "  - repo: local\n"
        "    hooks:\n"
        "      - id: no-todo\n"
        "        name: no TODO\n"
        "        entry: TODO\n"
        "        language: pygrep\n"
    )
    git(git_repo, "add", ".pre-commit-config.yaml")
    git(git_repo, "commit", "-q", "-m", "pre-commit config")
    assert pre_commit(git_repo, "install").returncode == 0
    framework_hook = (git_repo / ".git" / "hooks" / "pre-commit").read_bytes()
    hook.install(git_repo)

    (git_repo / "a.py").write_text("# TODO\n")
    git(git_repo, "add", "a.py")
    result = commit(git_repo, agent="Marcus")
    assert result.returncode == 1  # the framework's own hook still refuses...
    assert "no TODO" in result.stdout + result.stderr

    (git_repo / "a.py").write_text("done\n")
    git(git_repo, "add", "a.py")
    shell_lock(git_repo, "a.py", agent="Other")
    assert_refused(commit(git_repo, agent="Marcus"), "locked by Other")  # ...and so do we
    assert_committed(commit(git_repo, agent="Other"))

    hook.uninstall(git_repo)
    assert (git_repo / ".git" / "hooks" / "pre-commit").read_bytes() == framework_hook


# Fail closed ------------------------------------------------------------------------------------
def lock_table(versatil_home: Path) -> Path:
    return versatil_home / "logs" / "resource-locks.json"


def test_a_planted_symlink_for_the_lock_table_refuses_the_commit(
    repo: Path, versatil_home: Path, tmp_path: Path
) -> None:
    shell_lock(repo, "docs/", agent="Other")  # creates the state directory
    table = lock_table(versatil_home)
    decoy = tmp_path / "decoy.json"
    decoy.write_text(table.read_text())
    table.unlink()
    table.symlink_to(decoy)
    edit(repo, "free.py")  # not even locked: the guard cannot know that, so it refuses
    err = assert_refused(commit(repo, agent="Marcus"), str(table), "symlink")
    assert len([line for line in err.splitlines() if line.strip()]) == 1


def test_a_lock_table_owned_by_someone_else_refuses_the_commit(
    repo: Path, versatil_home: Path
) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to give the file away")
    shell_lock(repo, "docs/", agent="Other")
    os.chown(lock_table(versatil_home), 54321, 54321)
    edit(repo, "free.py")
    assert_refused(commit(repo, agent="Marcus"), str(lock_table(versatil_home)), "uid 54321")


def test_a_directory_in_place_of_the_lock_table_refuses_the_commit(
    repo: Path, versatil_home: Path
) -> None:
    shell_lock(repo, "docs/", agent="Other")
    table = lock_table(versatil_home)
    table.unlink()
    table.mkdir()
    edit(repo, "free.py")
    result = commit(repo, agent="Marcus")
    if result.returncode != 0:
        # Refused, naming the planted directory; or (the lock store's choice) the directory is
        # damage: moved aside whole, reported, and the table rebuilt from the live holders.
        stderr = assert_refused(result, str(table))
        assert "directory" in stderr or "not a regular file" in stderr, stderr
        return
    assert "moved it aside" in result.stderr, result.stderr
    assert any(p.is_dir() for p in table.parent.glob("resource-locks.json.corrupt-*"))
    edit(repo, "docs/guide.md")
    assert_refused(commit(repo, agent="Marcus"), "docs/guide.md", "Other")


def test_a_damaged_table_is_rebuilt_and_the_locks_still_hold(
    repo: Path, versatil_home: Path
) -> None:
    shell_lock(repo, "src/a.py", agent="Other")
    lock_table(versatil_home).write_text('{"version": 1, "locks": [ {"id": ')  # torn write
    edit(repo, "src/a.py")
    err = assert_refused(commit(repo, agent="Marcus"), "src/a.py (modified): locked by Other")
    assert "moved it aside" in err
    assert list(lock_table(versatil_home).parent.glob("resource-locks.json.corrupt-*"))


def test_a_damaged_table_without_live_locks_lets_the_commit_through(
    repo: Path, versatil_home: Path
) -> None:
    LockManager(repo=str(repo)).acquire(["src/a.py"], agent="Other", owner="shell").release()
    lock_table(versatil_home).write_bytes(b"\x00garbage")
    edit(repo, "src/a.py")
    result = commit(repo, agent="Marcus")
    assert_committed(result)
    assert "moved it aside" in result.stderr


def test_no_state_directory_means_no_locks_and_none_is_created(
    repo: Path, versatil_home: Path
) -> None:
    assert not versatil_home.exists()
    edit(repo, "src/a.py")
    assert_committed(commit(repo))
    assert not versatil_home.exists()


# The check itself --------------------------------------------------------------------------------
def test_check_json_and_exit_codes(repo: Path) -> None:
    shell_lock(repo, "src/", agent="Other")
    edit(repo, "src/a.py", "free.py")
    result = run_versatil("hook", "check", "--json", cwd=repo, env={"VERSATIL_AGENT": "Marcus"})
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["allowed"] is False
    assert report["committer"] == "Marcus"
    assert report["staged"] == 2
    assert [(b["path"], b["agent"], b["lock"]) for b in report["blocked"]] == [
        ("src/a.py", "Other", "src")
    ]
    allowed = run_versatil("hook", "check", cwd=repo, env={"VERSATIL_AGENT": "Other"})
    assert allowed.returncode == 0, allowed.stderr


def test_check_outside_a_repository_is_a_usage_error(tmp_path: Path) -> None:
    result = run_versatil("hook", "check", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_check_imports_neither_gitpython_watchdog_rich_nor_yaml(repo: Path) -> None:
    shell_lock(repo, "src/a.py", agent="Other")  # so the lock manager is loaded too
    edit(repo, "src/a.py")
    code = (
        "import sys; from versatil_fs.cli import run_cli, cli\n"
        "code = run_cli(cli, ['hook', 'check'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'git', 'watchdog', 'rich', 'yaml'})\n"
        "print(code, heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "1 []", result.stdout + result.stderr


def test_parse_name_status_every_kind_and_odd_names() -> None:
    odd = "new\nline \u00e9.py".encode()
    raw = (
        b"M\0mod.py\0A\0"
        + odd
        + b"\0D\0gone.py\0R087\0old dir/x.py\0new dir/x.py\0C100\0src.py\0copy.py\0"
        + b"T\0link\0U\0conflict.py\0M\0latin-\xff.py\0"
    )
    staged = hook.parse_name_status(raw)
    assert [(s.path, s.change) for s in staged] == [
        ("mod.py", "modified"),
        ("new\nline \u00e9.py", "added"),
        ("gone.py", "deleted"),
        ("old dir/x.py", "renamed from"),
        ("new dir/x.py", "renamed to"),
        ("src.py", "copied from"),
        ("copy.py", "copied to"),
        ("link", "type changed"),
        ("conflict.py", "unmerged"),
        (os.fsdecode(b"latin-\xff.py"), "modified"),
    ]
    assert hook.parse_name_status(b"") == []


def grants_strategy(rng: random.Random, repo: str) -> Iterator[Grant]:
    paths = [".", "a", "a/b", "a/b/c.py", "a/bc", "d", "d/e.py", "ab"]
    for i in range(rng.randint(0, 6)):
        claims = [
            Claim(
                Resource(repo=rng.choice([repo, "/elsewhere"]), path=rng.choice(paths))
                if rng.random() < 0.9
                else Resource(name="db:users"),
                "write" if rng.random() < 0.5 else "read",
            )
            for _ in range(rng.randint(1, 3))
        ]
        yield Grant(
            id=str(i),
            agent=rng.choice(["A", "B", "C"]),
            claims=claims,
            acquired_at=0.0,
            expires_at=1.0,
        )


def test_the_indexed_match_agrees_with_write_holder() -> None:
    """find_blocked is write_holder with an index: same decision for every staged path."""
    rng = random.Random(6)
    staged_paths = ["a", "a/b", "a/b/c.py", "a/bc", "a/bc/x", "ab", "d/e.py", "z.py", "a/b/c.py/q"]
    for _ in range(500):
        grants = list(grants_strategy(rng, "/repo"))
        committer = rng.choice([None, "A", "B"])
        staged = [hook.StagedPath(p, "modified") for p in staged_paths]
        blocked = {b.staged.path for b in hook.find_blocked(staged, grants, "/repo", committer)}
        expected = {
            p for p in staged_paths if write_holder(grants, "/repo", p, except_agent=committer)
        }
        assert blocked == expected
