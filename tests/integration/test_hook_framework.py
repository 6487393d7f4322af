"""Issue 15, items 11-12: the guard and the real pre-commit framework (installed from PyPI with
the test extra): its stash of unstaged files while another agent holds a live write lock on one
of them, its warning at `hook install`, and our hook found wherever it already runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from integration.helpers import Spawner, git, run_versatil
from integration.test_hook import (
    LOCAL_CONFIG,
    assert_committed,
    commit,
    edit,
    pre_commit,
    shell_lock,
)
from integration.test_monitor import start_monitor

from versatil_fs import hook
from versatil_fs.monitor import unlocked_write_count

pytestmark = pytest.mark.usefixtures("pre_commit_env")


@pytest.fixture
def pre_commit_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRE_COMMIT_HOME", str(tmp_path / "pre-commit-home"))


def _with_framework(repo: Path, config: str = LOCAL_CONFIG) -> None:
    (repo / ".pre-commit-config.yaml").write_text(config)
    (repo / "src").mkdir(exist_ok=True)
    (repo / "src" / "a.py").write_text("a = 1\n")
    (repo / "src" / "b.py").write_text("b = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "pre-commit config and files")


def test_a_framework_commit_is_refused_while_it_stashes_a_file_another_agent_holds(
    git_repo: Path,
) -> None:
    """Item 11: Other is writing src/b.py (unstaged) under its lock; Marcus commits src/a.py
    through the framework, which would stash and later re-apply Other's file."""
    _with_framework(git_repo)
    installed = pre_commit(git_repo, "install")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    shell_lock(git_repo, "src/b.py", agent="Other")
    (git_repo / "src" / "b.py").write_text("b = 1\nOther's work in progress\n")
    edit(git_repo, "src/a.py")
    before = git(git_repo, "rev-parse", "HEAD")
    result = commit(git_repo, agent="Marcus")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "stashed" in output and "src/b.py" in output and "Other" in output, output
    assert "native hook" in output, output
    assert git(git_repo, "rev-parse", "HEAD") == before
    # The framework put Other's unstaged work back; nothing of it was lost by the refusal.
    assert (git_repo / "src" / "b.py").read_text() == "b = 1\nOther's work in progress\n"

    # Outside the framework nothing is stashed: the native check lets the same commit through.
    assert run_versatil("hook", "check", cwd=git_repo, env={"VERSATIL_AGENT": "Marcus",
                                                            "PRE_COMMIT": None}).returncode == 0
    # Without the lock, the framework's commit goes through.
    assert run_versatil("unlock", "--agent", "Other", "src/b.py", cwd=git_repo).returncode == 0
    assert_committed(commit(git_repo, agent="Marcus"))


def test_a_framework_commit_with_no_locked_file_stashed_goes_through(git_repo: Path) -> None:
    _with_framework(git_repo)
    assert pre_commit(git_repo, "install").returncode == 0
    shell_lock(git_repo, "docs/", agent="Other")  # locked, but nothing of it is unstaged
    (git_repo / "src" / "b.py").write_text("b = 2\n")  # unstaged, stashed, but unlocked
    edit(git_repo, "src/a.py")
    assert_committed(commit(git_repo, agent="Marcus"))
    assert (git_repo / "src" / "b.py").read_text() == "b = 2\n"


def test_hook_install_warns_when_the_framework_is_configured(git_repo: Path) -> None:
    _with_framework(git_repo, "repos: []\n")
    result = run_versatil("hook", "install", cwd=git_repo)
    assert result.returncode == 0, result.stderr
    said = " ".join((result.stdout + result.stderr).split())
    assert "stashes every unstaged file" in said and "native hook" in said, said


def test_install_after_pre_commit_install_moved_ours_to_legacy(git_repo: Path) -> None:
    """Item 12: `versatil hook install`, `pre-commit install` (ours -> pre-commit.legacy),
    `versatil hook install` again: the guard must not run twice per commit."""
    _with_framework(git_repo, "repos: []\n")
    hooks = git_repo / ".git" / "hooks"
    hook.install(git_repo)
    assert pre_commit(git_repo, "install").returncode == 0
    assert (hooks / "pre-commit.legacy").is_file()
    framework_hook = (hooks / "pre-commit").read_bytes()
    said = hook.install(git_repo)
    assert "pre-commit.legacy" in said and "already" in said, said
    assert (hooks / "pre-commit").read_bytes() == framework_hook
    assert not (hooks / "pre-commit.versatil-orig").exists()
    _guard_runs_once(git_repo)


def test_install_when_the_framework_config_runs_the_guard(git_repo: Path) -> None:
    """Item 12: the framework's config already runs `versatil hook check`."""
    _with_framework(git_repo)
    hooks = git_repo / ".git" / "hooks"
    assert pre_commit(git_repo, "install").returncode == 0
    framework_hook = (hooks / "pre-commit").read_bytes()
    said = hook.install(git_repo)
    assert ".pre-commit-config.yaml" in said and "already" in said, said
    assert (hooks / "pre-commit").read_bytes() == framework_hook
    _guard_runs_once(git_repo)


def _guard_runs_once(repo: Path) -> None:
    """A refused commit prints the guard's refusal exactly once."""
    shell_lock(repo, "src/a.py", agent="Other")
    edit(repo, "src/a.py")
    result = commit(repo, agent="Marcus")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert output.count("versatil: commit refused") == 1, output


def test_the_frameworks_stash_and_unstash_are_not_unlocked_writes(
    spawn: Spawner, git_repo: Path
) -> None:
    """Item 3: a framework commit stashes src/b.py and puts it back; the monitor reports the
    un-stash as `stashed`, and neither counts as an unlocked write."""
    _with_framework(git_repo)
    assert pre_commit(git_repo, "install").returncode == 0
    (git_repo / "src" / "b.py").write_text("b = 2\n")  # unstaged: the framework stashes it
    (git_repo / "docs").mkdir()  # where the monitor's sentinels go
    monitor = start_monitor(spawn, git_repo)
    edit(git_repo, "src/a.py")
    assert [w["path"] for w in monitor.until("src/a.py")] == ["src/a.py"]
    before = unlocked_write_count(git_repo)
    assert_committed(commit(git_repo, agent="Marcus"))
    assert (git_repo / "src" / "b.py").read_text() == "b = 2\n"
    lines = monitor.sentinel()
    kinds = [(w["kind"], w["path"]) for w in lines if w["path"] == "src/b.py"]
    # The stash (before our hook could say) is printed as it happened; the un-stash is known.
    assert kinds[-1] == ("stashed", "src/b.py"), lines
    assert unlocked_write_count(git_repo) == before + 1  # the sentinel only


def test_uninstall_takes_ours_out_of_pre_commit_legacy(git_repo: Path) -> None:
    """After `pre-commit install` moved ours to pre-commit.legacy, uninstall removes it there
    and puts back the hook ours had replaced, where the framework runs it."""
    _with_framework(git_repo, "repos: []\n")
    hooks = git_repo / ".git" / "hooks"
    (hooks / "pre-commit").write_text("#!/bin/sh\n# the team's own hook\nexit 0\n")
    (hooks / "pre-commit").chmod(0o755)
    hook.install(git_repo)  # the team's hook is kept as pre-commit.versatil-orig
    assert pre_commit(git_repo, "install").returncode == 0
    framework_hook = (hooks / "pre-commit").read_bytes()
    said = hook.uninstall(git_repo)
    assert "pre-commit.legacy" in said, said
    assert (hooks / "pre-commit").read_bytes() == framework_hook
    assert "# the team's own hook" in (hooks / "pre-commit.legacy").read_text()
    assert not (hooks / "pre-commit.versatil-orig").exists()
