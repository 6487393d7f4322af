"""``versatil hook install --strict``, end to end: git's reference-transaction hook refusing
branch updates that skip pre-commit (``commit --no-verify``, cherry-pick, rebase, merge, am)
when they change a file another agent write-locks, and staying out of every other ref update.

Every git command here runs the installed hook, which finds ``versatil`` on PATH. Where a test
must show that an update never reached Python, PATH leads first to a ``versatil`` wrapper that
logs each call before running the real one.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from integration.helpers import commit_files, git, make_git_repo, run_versatil

from versatil_fs import hook
from versatil_fs.errors import Refused
from versatil_fs.hook import strict
from versatil_fs.locks.manager import LockManager

BIN = Path(sys.executable).parent
HOOK = strict.STRICT_HOOK_NAME


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The log of every `versatil` the hooks start: a wrapper first on PATH."""
    wrapper_dir = tmp_path / "wrapper"
    wrapper_dir.mkdir()
    log = tmp_path / "versatil-calls.log"
    wrapper = wrapper_dir / "versatil"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {BIN / "versatil"} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    log.touch()
    return log


@pytest.fixture
def repo(git_repo: Path, calls: Path) -> Path:
    """Two branches: `main` (locked.py, free.py) and `side`, whose commit changes locked.py."""
    commit_files(git_repo, {"locked.py": "v1\n", "free.py": "v1\n"}, message="base")
    git(git_repo, "checkout", "-q", "-b", "side")
    commit_files(git_repo, {"locked.py": "side\n"}, message="side changes locked.py")
    git(git_repo, "checkout", "-q", "main")
    commit_files(git_repo, {"free.py": "main\n"}, message="main changes free.py")
    hook.install(git_repo, strict=True)
    return git_repo


def lock(repo: Path, *paths: str, agent: str = "Other") -> None:
    LockManager(repo=str(repo)).acquire(list(paths), agent=agent, owner="shell", wait=0)


def run(repo: Path, *args: str, agent: str | None = "Marcus") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("VERSATIL_AGENT", None)
    if agent is not None:
        env["VERSATIL_AGENT"] = agent
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=60
    )


def refused(result: subprocess.CompletedProcess[str], path: str = "locked.py") -> None:
    assert result.returncode != 0, f"went through:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    assert "versatil: commit refused" in result.stderr, result.stderr
    assert f"{path} (modified): locked by Other" in result.stderr, result.stderr
    assert "core.hooksPath=/dev/null" in result.stderr  # --no-verify is no way out of this one


def ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"refused:\n{result.stdout}\n{result.stderr}"


def head(repo: Path, ref: str = "HEAD") -> str:
    return git(repo, "rev-parse", ref)


def test_commit_no_verify_refused_on_a_locked_file_allowed_on_a_free_one(repo: Path) -> None:
    lock(repo, "locked.py")
    before = head(repo)
    (repo / "locked.py").write_text("mine\n")
    refused(run(repo, "commit", "-qam", "sneak", "--no-verify"))
    assert head(repo) == before  # git aborted the update: the branch did not move
    git(repo, "checkout", "-q", "--", "locked.py")
    (repo / "free.py").write_text("mine\n")
    ok(run(repo, "commit", "-qam", "free", "--no-verify"))
    assert head(repo) != before


def test_the_committers_own_lock_allows(repo: Path) -> None:
    lock(repo, "locked.py", agent="Marcus")
    (repo / "locked.py").write_text("mine\n")
    ok(run(repo, "commit", "-qam", "mine", "--no-verify", agent="Marcus"))
    # A human (no identity anywhere) is bound by every write lock, as the pre-commit guard has it.
    (repo / "locked.py").write_text("human\n")
    result = run(repo, "commit", "-qam", "human", "--no-verify", agent=None)
    assert "locked by Marcus" in result.stderr and result.returncode != 0
    git(repo, "config", "versatil.agent", "Marcus")  # committer from git config, as pre-commit
    ok(run(repo, "commit", "-qam", "config", "--no-verify", agent=None))


def test_cherry_pick_merge_rebase_and_am_are_refused_on_a_locked_file(
    repo: Path, tmp_path: Path
) -> None:
    lock(repo, "locked.py")
    main = head(repo)
    refused(run(repo, "cherry-pick", "side"))
    run(repo, "cherry-pick", "--abort")
    assert head(repo) == main

    # The merge brings side's change to locked.py into main: whoever lands it is its committer.
    refused(run(repo, "merge", "--no-edit", "side"))
    run(repo, "merge", "--abort")
    assert head(repo) == main

    # Rebasing main onto side: the final update of refs/heads/main brings side's locked.py.
    # (The tree difference counts, not the rebased commits: rebasing side onto main changes
    # only what main brings into side, free.py.)
    refused(run(repo, "rebase", "side", "main"))
    run(repo, "rebase", "--abort")
    assert head(repo) == main
    git(repo, "checkout", "-q", "main")
    patches = tmp_path / "patches"
    git(repo, "format-patch", "-q", "-o", str(patches), "main..side")
    refused(run(repo, "am", *sorted(str(p) for p in patches.iterdir())))
    run(repo, "am", "--abort")
    assert head(repo) == main

    # update-ref without an old value: git hands the hook zeros although the branch exists.
    refused(run(repo, "update-ref", "refs/heads/main", head(repo, "side")))
    assert head(repo) == main


def test_other_refs_never_start_versatil(repo: Path, calls: Path, tmp_path: Path) -> None:
    """Checkpoints (fast-import of refs/versatil/*), a fetch's remote refs, tags and branch
    deletions stop in the hook's shell, even while every file is locked."""
    seen = tmp_path / "seen.log"  # a kept original hook: proof that git did run the hook
    kept = repo / ".git" / "hooks" / f"{HOOK}.versatil-orig"
    kept.write_text(f"#!/bin/sh\ncat >> {seen}\n")
    kept.chmod(0o755)
    lock(repo, "locked.py", "free.py")
    (repo / "free.py").write_text("dirty\n")
    created = run_versatil("checkpoint", "create", "-m", "cp", cwd=repo)
    assert created.returncode == 0, created.stderr
    assert git(repo, "for-each-ref", "refs/versatil/")  # the checkpoint ref was written
    git(repo, "checkout", "-q", "--", "free.py")

    other = make_git_repo(tmp_path / "other")
    commit_files(other, {"locked.py": "theirs\n"}, message="theirs")
    ok(run(repo, "fetch", "-q", str(other), "main:refs/remotes/other/main"))
    ok(run(repo, "tag", "v1", "side"))
    ok(run(repo, "branch", "-D", "side"))  # a deletion changes no file
    lines = calls.read_text().splitlines()
    assert [line for line in lines if "check-refs" in line] == [], lines
    log = seen.read_text()
    for ref in (" refs/versatil/", " refs/remotes/other/main", " refs/tags/v1", " refs/heads/side"):
        assert ref in log, log
    # A new branch at an existing commit changes no file either (git hands it an all-zero old
    # value, as it does an update-ref without one, so versatil looks the branch up).
    ok(run(repo, "branch", "new-branch", "refs/remotes/other/main"))


def test_a_lock_table_that_cannot_be_read_refuses(repo: Path) -> None:
    lock(repo, "elsewhere.py")
    table = Path(os.environ["VERSATIL_HOME"])
    table.chmod(0o777)  # others can write the state directory: nothing in it is trusted
    try:
        (repo / "free.py").write_text("mine\n")
        result = run(repo, "commit", "-qam", "x", "--no-verify")
    finally:
        table.chmod(0o700)
    assert result.returncode != 0 and "cannot be read safely" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_install_strict_keeps_an_existing_hook_and_uninstall_is_byte_exact(
    git_repo: Path, tmp_path: Path
) -> None:
    hooks = git_repo / ".git" / "hooks"
    theirs = hooks / HOOK
    seen = tmp_path / "theirs.log"
    original = f'#!/bin/sh\n# theirs\necho "$1" >> {seen}\ncat >> {seen}\nexit 0\n'
    theirs.write_text(original)
    theirs.chmod(0o750)

    plain = run_versatil("hook", "install", cwd=git_repo)
    assert plain.returncode == 0, plain.stderr
    assert theirs.read_text() == original  # without --strict nothing happens to it

    result = run_versatil("hook", "install", "--strict", cwd=git_repo)
    assert result.returncode == 0, result.stderr
    assert f"kept as {HOOK}.versatil-orig" in result.stdout
    assert strict.STRICT_MARKER in theirs.read_text()
    installed = {p.name: p.read_bytes() for p in hooks.iterdir()}
    again = run_versatil("hook", "install", "--strict", cwd=git_repo)
    assert again.returncode == 0, again.stderr
    assert {p.name: p.read_bytes() for p in hooks.iterdir()} == installed

    commit_files(git_repo, {"x.py": "x\n"})  # the kept hook still sees every state and line
    log = seen.read_text()
    assert "prepared\n" in log and "committed\n" in log and " refs/heads/main\n" in log

    removed = run_versatil("hook", "uninstall", cwd=git_repo)
    assert removed.returncode == 0, removed.stderr
    assert theirs.read_text() == original
    assert stat.S_IMODE(theirs.stat().st_mode) == 0o750
    assert not (hooks / f"{HOOK}.versatil-orig").exists()
    assert not (hooks / "pre-commit").exists()


def test_install_strict_honours_core_hooks_path(git_repo: Path) -> None:
    git(git_repo, "config", "core.hooksPath", ".githooks")
    hook.install(git_repo, strict=True)
    assert (git_repo / ".githooks" / HOOK).is_file()
    assert not (git_repo / ".git" / "hooks" / HOOK).exists()
    lock(git_repo, "README.md")
    (git_repo / "README.md").write_text("mine\n")
    result = run(git_repo, "commit", "-qam", "x", "--no-verify")
    assert result.returncode != 0 and "README.md (modified): locked by Other" in result.stderr
    hook.uninstall(git_repo)
    assert not (git_repo / ".githooks").exists() or not any((git_repo / ".githooks").iterdir())


def test_install_strict_with_an_old_git_says_so(
    git_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "oldgit"
    fake.mkdir()
    real = subprocess.run(["sh", "-c", "command -v git"], capture_output=True, text=True).stdout
    (fake / "git").write_text(
        '#!/bin/sh\n[ "$1" = version ] && { echo "git version 2.27.1"; exit 0; }\n'
        f'exec {real.strip()} "$@"\n'
    )
    (fake / "git").chmod(0o755)
    env = {"PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    result = run_versatil("hook", "install", "--strict", cwd=git_repo, env=env)
    assert result.returncode == 1, result.stderr
    assert "needs git 2.28 or newer" in result.stderr and "2.27.1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (git_repo / ".git" / "hooks" / HOOK).exists()


def test_parse_updates_reads_git_lines_and_refuses_anything_else() -> None:
    zero, one = "0" * 40, "1" * 40
    assert strict.parse_updates(f"{zero} {one} refs/heads/main\n".encode()) == [
        strict.RefUpdate(zero, one, "refs/heads/main")
    ]
    assert strict.parse_updates(f"{zero} {one} refs/heads/main\n".encode())[0].creates
    for bad in (b"garbage\n", f"{one} {one}\n".encode(), f"{one} xyz refs/heads/a\n".encode()):
        with pytest.raises(Refused):
            strict.parse_updates(bad)


def test_check_refs_on_unreadable_input_refuses_in_one_sentence(git_repo: Path) -> None:
    result = run_versatil("hook", "check-refs", cwd=git_repo, input="not a ref line\n")
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is not '<old> <new> <ref>'" in lines[0], result.stderr
    extra = run_versatil("hook", "check-refs", "x", cwd=git_repo, input="")
    assert extra.returncode == 2 and "takes no arguments" in extra.stderr


def test_a_root_commit_is_all_new(tmp_path: Path, calls: Path) -> None:
    """The first commit of a repository (or of an orphan branch) creates its branch, and every
    file in it is new: checked, not waved through as a branch creation."""
    repo = tmp_path / "fresh"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    hook.install(repo, strict=True)
    (repo / "locked.py").write_text("v1\n")
    git(repo, "add", "locked.py")
    lock(repo, "locked.py")
    result = run(repo, "commit", "-qm", "first", "--no-verify")
    assert result.returncode != 0 and "locked.py (added): locked by Other" in result.stderr
    assert git(repo, "rev-parse", "-q", "--verify", "refs/heads/main", check=False) == ""


def test_off_path_the_installing_interpreter_checks_and_without_it_the_update_is_refused(
    repo: Path,
) -> None:
    lock(repo, "locked.py")
    env_path = "/usr/bin:/bin"  # no versatil: the hook falls back to INSTALL_PYTHON
    (repo / "locked.py").write_text("mine\n")
    result = subprocess.run(
        ["git", "commit", "-qam", "x", "--no-verify"], cwd=repo, capture_output=True, text=True,
        env={**os.environ, "PATH": env_path, "VERSATIL_AGENT": "Marcus"}, timeout=60,
    )
    refused(result)
    installed = repo / ".git" / "hooks" / HOOK
    installed.write_text(strict.render_strict_hook(""))  # no fallback interpreter either
    result = subprocess.run(
        ["git", "commit", "-qam", "x", "--no-verify"], cwd=repo, capture_output=True, text=True,
        env={**os.environ, "PATH": env_path}, timeout=60,
    )
    assert result.returncode != 0 and "'versatil' is not on PATH" in result.stderr
    # ... while the refs that never reach versatil still work without it.
    tagged = subprocess.run(["git", "tag", "v2"], cwd=repo, capture_output=True, text=True,
                            env={**os.environ, "PATH": env_path}, timeout=60)
    assert tagged.returncode == 0, tagged.stderr
