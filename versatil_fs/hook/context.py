"""What git hands a hook: the repository it is working on, the location variables it
exported, and its failures in one sentence.

Every hook versatil installs runs inside a git command, so every one of them needs these: the
pre-commit check (:mod:`versatil_fs.hook.check`) and the installer
(:mod:`versatil_fs.hook.install`) share them.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from versatil_fs import git
from versatil_fs.errors import GitFailed, NotARepository, UsageError
from versatil_fs.repo import Repository

__all__ = ["git_message", "hook_env", "repository", "run_git"]


def repository(start: str | os.PathLike[str]) -> Repository:
    """The repository git is working on: the one around ``start``, unless GIT_DIR says otherwise.

    Git runs hooks at the top of the working tree and exports GIT_DIR for linked worktrees,
    where it matches what :meth:`Repository.find` sees. Only ``git --git-dir=X --work-tree=Y``
    (a bare repository with a detached work tree, as dotfiles setups use) makes them differ;
    then git's own answer is the truth, at one extra subprocess on that rare path only.
    """
    git_dir = os.environ.get("GIT_DIR")
    if not git_dir:
        return Repository.find(start)
    try:
        repo = Repository.find(start)
        if Path(os.path.realpath(git_dir)) == repo.git_dir:
            return repo
    except NotARepository:
        pass
    out = run_git(
        Path(start),
        "rev-parse",
        "--path-format=absolute",
        "--show-toplevel",
        "--git-dir",
        "--git-common-dir",
    )
    top, gdir, common = (Path(os.path.realpath(line)) for line in out.splitlines()[:3])
    return Repository(top, gdir, common)


def hook_env() -> dict[str, str]:
    """The location variables git exported to this hook, handed back to :mod:`versatil_fs.git`
    (which drops them for every other caller): during ``git commit -a`` or ``git commit
    <paths>`` ``GIT_INDEX_FILE`` names the temporary index being committed, and the guard must
    check exactly what is committed. Outside a hook this is whatever the caller exported, as
    before."""
    return {k: v for k, v in os.environ.items() if k in git.LOCATION_VARIABLES}


def run_git(cwd: Path, *args: str) -> str:
    try:
        result = git.run(list(args), cwd=cwd, env=hook_env(), check=False)
    except GitFailed as exc:
        raise UsageError(f"Could not run git: {exc}") from exc
    if result.returncode != 0:
        detail = git_message(cwd, result.stderr)
        raise NotARepository(f"git {' '.join(args)} failed in {cwd}: {detail}")
    return result.stdout.decode(errors="surrogateescape")


def git_message(where: Path, stderr: bytes) -> str:
    text = stderr.decode(errors="replace")
    if "dubious ownership" in text:
        return (
            f"git refuses to work in {where} because the repository belongs to another user "
            f"(dubious ownership); if you trust it, run `git config --global --add "
            f"safe.directory {shlex.quote(str(where))}`."
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # git's own sentence is its first fatal: or error: line; the rest is hints and usage.
    first = next((ln for ln in lines if ln.startswith(("fatal:", "error:"))), None)
    first = first or (lines[0] if lines else "git failed without saying why")
    return first.removeprefix("fatal: ").removeprefix("error: ").rstrip(".") + "."
