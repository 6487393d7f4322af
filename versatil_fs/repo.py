"""Repository identity and the mapping from what a user typed to a resource key.

A path resource is keyed by the repository's git *common* directory (shared by every worktree of
one repository) and the repo-relative POSIX path after resolving symlinks and ``..``, so
``./src/../src/a.py``, ``/abs/repo/src/a.py``, a symlink to it and the same file in another
worktree all become one key. Named resources (``db:users``, ``port:5432``) are machine-wide: a
database or a port is shared by every checkout on the machine.

Discovery reads ``.git`` itself instead of running ``git rev-parse``: it is on the lock path,
where a subprocess costs more than the whole lock transaction.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from versatil_fs.errors import NotARepository, UsageError

# `kind:name`: a kind is a short identifier; a single letter followed by ':' is not a kind, so a
# Windows drive path never parses as a named resource.
_NAMED = re.compile(r"^(?P<kind>[A-Za-z][A-Za-z0-9_.-]+):(?P<name>.*)$")


@dataclass(frozen=True)
class Repository:
    """One git working tree: where it is, and which repository it belongs to."""

    toplevel: Path  # the working tree root (resolved)
    git_dir: Path  # this worktree's git directory
    common_dir: Path  # shared by every worktree of the repository: the lock-space key

    @property
    def key(self) -> str:
        return str(self.common_dir)

    @classmethod
    def find(cls, start: str | os.PathLike[str] = ".") -> Repository:
        """The working tree containing ``start``; ``NotARepository`` if there is none."""
        begin = Path(os.path.realpath(start))
        if not begin.exists():
            raise UsageError(f"{start} does not exist.")
        here = begin if begin.is_dir() else begin.parent
        for candidate in (here, *here.parents):
            dotgit = candidate / ".git"
            if dotgit.is_dir():
                return cls(candidate, dotgit, _common_dir(dotgit))
            if dotgit.is_file():
                git_dir = _read_gitfile(dotgit)
                return cls(candidate, git_dir, _common_dir(git_dir))
        raise NotARepository(
            f"{begin} is not inside a git repository; run versatil from a git working tree "
            "(or pass -C DIR)."
        )

    def relpath(self, path: str | os.PathLike[str], *, cwd: Path | None = None) -> str:
        """The repo-relative POSIX path of ``path`` ("." for the root), symlinks resolved."""
        raw = os.fspath(path)
        if raw == "":
            raise UsageError("An empty path is not a resource; name a file or a directory.")
        absolute = Path(raw) if os.path.isabs(raw) else (cwd or Path.cwd()) / raw
        resolved = Path(os.path.realpath(absolute))
        try:
            rel = resolved.relative_to(self.toplevel)
        except ValueError:
            raise UsageError(
                f"{raw} is outside the repository {self.toplevel}; lock paths inside it or "
                "name a resource as kind:name."
            ) from None
        if rel.parts and rel.parts[0] == ".git":
            raise UsageError(f"{raw} is inside .git; versatil does not lock git's own files.")
        return rel.as_posix() if rel.parts else "."

    def innermost(self, relpath: str) -> tuple[Repository, str]:
        """The innermost repository holding ``relpath`` (a submodule or a nested repository
        below this working tree), and the path relative to it.

        A file of a submodule is one resource whether it is named from the superproject
        (``sub/f.py``) or from inside the submodule (``f.py``).
        """
        if relpath == ".":
            return self, relpath
        parts = relpath.split("/")
        # From the path itself (a lock on `sub/` is the whole submodule) up to our root.
        for depth in range(len(parts), 0, -1):
            candidate = self.toplevel.joinpath(*parts[:depth])
            if (candidate / ".git").exists():
                return Repository.find(candidate), "/".join(parts[depth:]) or "."
        return self, relpath


def _read_gitfile(dotgit: Path) -> Path:
    text = dotgit.read_text(encoding="utf-8", errors="replace").strip()
    if not text.startswith("gitdir:"):
        raise NotARepository(f"{dotgit} is not a valid gitfile (expected 'gitdir: PATH').")
    target = Path(text[len("gitdir:") :].strip())
    if not target.is_absolute():
        target = dotgit.parent / target
    return Path(os.path.realpath(target))


def _common_dir(git_dir: Path) -> Path:
    # A linked worktree's git dir holds a `commondir` file pointing at the shared repository.
    commondir = git_dir / "commondir"
    if commondir.is_file():
        target = Path(commondir.read_text(encoding="utf-8").strip())
        if not target.is_absolute():
            target = git_dir / target
        return Path(os.path.realpath(target))
    return Path(os.path.realpath(git_dir))


def parse_named(text: str) -> tuple[str, str] | None:
    """``(kind, name)`` when ``text`` is a named resource such as ``db:users``, else None."""
    match = _NAMED.match(text)
    if not match:
        return None
    return match["kind"], match["name"]


def default_agent(repo: Repository | None = None) -> str:
    """The agent when none is given: $VERSATIL_AGENT, git config versatil.agent, login name."""
    env = os.environ.get("VERSATIL_AGENT", "").strip()
    if env:
        return env
    configured = git_config("versatil.agent", repo)
    if configured:
        return configured
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


def git_config(key: str, repo: Repository | None = None) -> str | None:
    """One git config value, or None (also when git is missing)."""
    cmd = ["git", "config", "--get", key]
    try:
        result = subprocess.run(
            cmd,
            cwd=repo.toplevel if repo else None,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    value = result.stdout.strip()
    return value if result.returncode == 0 and value else None
