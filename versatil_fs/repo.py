"""Repository identity and the mapping from what a user typed to a resource key.

A path resource is keyed by the repository's git *common* directory (shared by every worktree of
one repository) and the repo-relative POSIX path after resolving symlinks and ``..``, so
``./src/../src/a.py``, ``/abs/repo/src/a.py``, a symlink to it and the same file in another
worktree all become one key. A submodule's files are keyed in the lock space of its top
superproject (``libs/sm/s.txt`` of the superproject's repository, whether named from inside the
submodule or from outside), so a directory lock above a submodule covers the files in it.

Named resources (``db:users``, ``port:5432``) are machine-wide: a database or a port is shared
by every checkout on the machine.

Discovery reads ``.git`` itself instead of running ``git rev-parse``: it is on the lock path,
where a subprocess costs more than the whole lock transaction.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from versatil_fs import git
from versatil_fs.errors import GitFailed, NotARepository, UsageError

__all__ = [
    "NAME_MAX",
    "PATH_MAX",
    "Repository",
    "check_path_text",
    "default_agent",
    "git_config",
    "ignorecase_of",
    "parse_named",
    "shown",
    "space_of",
]


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
                found = cls(candidate, dotgit, _common_dir(dotgit))
            elif dotgit.is_file():
                git_dir = _read_gitfile(dotgit)
                found = cls(candidate, git_dir, _common_dir(git_dir))
            else:
                continue
            # Worked out now (a few stats, once per tree and process), so that code holding
            # only this repository's key can find its lock space (see space_of).
            found.lock_space()
            return found
        raise NotARepository(
            f"{begin} is not inside a git repository; run versatil from a git working tree "
            "(or pass -C DIR)."
        )

    def relpath(self, path: str | os.PathLike[str], *, cwd: Path | None = None) -> str:
        """The repo-relative POSIX path of ``path`` ("." for the root), symlinks resolved."""
        raw = os.fspath(path)
        if raw == "":
            raise UsageError("An empty path is not a resource; name a file or a directory.")
        check_path_text(raw)
        absolute = Path(raw) if os.path.isabs(raw) else (cwd or Path.cwd()) / raw
        try:
            resolved = Path(os.path.realpath(absolute))
        except OSError as exc:
            raise UsageError(f"{shown(raw)} cannot be used as a path: {exc.strerror}.") from None
        check_path_text(str(resolved), typed=raw)
        try:
            rel = resolved.relative_to(self.toplevel)
        except ValueError:
            # Another worktree of this same repository: the same file there is the same
            # resource (paths are keyed by the shared git common directory).
            sibling = self._sibling_worktree(resolved)
            if sibling is None:
                raise UsageError(
                    f"{raw} is outside the repository {self.toplevel}; lock paths inside it "
                    "(or in another worktree of it) or name a resource as kind:name."
                ) from None
            rel = resolved.relative_to(sibling.toplevel)
        if rel.parts and rel.parts[0] == ".git":
            raise UsageError(f"{raw} is inside .git; versatil does not lock git's own files.")
        return rel.as_posix() if rel.parts else "."

    def _sibling_worktree(self, resolved: Path) -> Repository | None:
        """The other worktree of this repository that holds ``resolved``, if one does.

        Found from the path's own ``.git`` upwards (the file need not exist yet), and kept
        only when it shares our common directory: a worktree of another repository, or a
        repository nested in one of ours, is not the same lock space.
        """
        for candidate in (resolved, *resolved.parents):
            try:
                present = os.path.lexists(candidate / ".git")
            except (OSError, ValueError):
                present = False
            if not present:
                continue
            try:
                found = Repository.find(candidate)
            except (OSError, UsageError):
                return None
            if found.common_dir != self.common_dir or found.toplevel != candidate:
                return None
            return found
        return None

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
            try:
                nested = os.path.lexists(candidate / ".git")
            except (OSError, ValueError):
                nested = False
            if nested:
                return Repository.find(candidate), "/".join(parts[depth:]) or "."
        return self, relpath

    def lock_space(self) -> tuple[str, str]:
        """``(key, prefix)``: the lock space this working tree's paths are keyed in, and where
        the tree sits in it (``""`` for a repository that is not a submodule).

        A submodule's space is its top superproject's, with the submodule's path as prefix,
        so a lock on the superproject's ``libs/`` and one on ``s.txt`` inside submodule
        ``libs/sm`` are comparable (``libs`` covers ``libs/sm/s.txt``). A repository merely
        nested in another's working tree (not a submodule of it) keeps its own space.
        """
        found = _SPACES.get(self.toplevel)
        if found is None:
            found = (self.key, "")
            outer = _superproject(self)
            if outer is not None:
                parent, prefix = outer
                top, above = parent.lock_space()
                found = (top, f"{above}/{prefix}" if above else prefix)
            else:
                # A space's patterns match as its top repository's core.ignorecase says.
                _IGNORECASE[self.key] = _reads_ignorecase(self.common_dir)
            _SPACES[self.toplevel] = found
            _SPACE_OF_KEY[self.key] = found
        return found

    def lock_path(self, relpath: str) -> tuple[str, str]:
        """``(key, path)`` of a path relative to this working tree, in its lock space."""
        key, prefix = self.lock_space()
        if not prefix:
            return key, relpath
        return key, prefix if relpath == "." else f"{prefix}/{relpath}"


# Lock spaces already worked out in this process: by working tree, and by repository key for
# the callers that hold only a key (the commit guard, a restore, the monitor; see space_of).
_SPACES: dict[Path, tuple[str, str]] = {}
_SPACE_OF_KEY: dict[str, tuple[str, str]] = {}


_IGNORECASE: dict[str, bool] = {}


def ignorecase_of(space_key: str) -> bool:
    """Whether the lock space ``space_key``'s repository has ``core.ignorecase`` true, as read
    when :meth:`Repository.lock_space` found it in this process (False otherwise)."""
    return _IGNORECASE.get(space_key, False)


def _reads_ignorecase(common_dir: Path) -> bool:
    """``core.ignorecase`` from the repository's own config file, read here and not through
    ``git config``: this runs on the lock path, where a subprocess costs more than the whole
    lock transaction. git sets it in that file (``git init``/``clone`` probe the filesystem);
    includes and the user's global config are not followed."""
    try:
        text = (common_dir / "config").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    section = ""
    value = False
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if line.startswith("["):
            section = line[1:line.find("]")].strip().lower() if "]" in line else ""
            continue
        if section != "core" or "=" not in line:
            if section == "core" and line.lower() == "ignorecase":
                value = True  # a bare key is true in git's config syntax
            continue
        key, _, raw_value = line.partition("=")
        if key.strip().lower() == "ignorecase":
            value = raw_value.strip().strip('"').lower() in ("true", "yes", "on", "1")
    return value


def space_of(repo_key: str) -> tuple[str, str]:
    """``(key, prefix)`` of the lock space of the repository ``repo_key``, as found by a
    :meth:`Repository.lock_space` call in this process (its own key and no prefix otherwise)."""
    return _SPACE_OF_KEY.get(repo_key, (repo_key, ""))


def _superproject(repo: Repository) -> tuple[Repository, str] | None:
    """The repository ``repo`` is a submodule of, and its path there, if it is one."""
    for candidate in repo.toplevel.parents:
        try:
            if not os.path.lexists(candidate / ".git"):
                continue
            outer = Repository.find(candidate)
        except (OSError, UsageError):
            return None
        prefix = repo.toplevel.relative_to(outer.toplevel).as_posix()
        # Absorbed (what `git submodule add` makes): the git dir lives in the superproject's
        # modules/. Otherwise a submodule is a path .gitmodules lists.
        if outer.common_dir / "modules" in repo.common_dir.parents:
            return outer, prefix
        return (outer, prefix) if prefix in _gitmodules_paths(outer.toplevel) else None
    return None


def _gitmodules_paths(toplevel: Path) -> set[str]:
    try:
        text = (toplevel / ".gitmodules").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    found = set()
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "path":
            found.add(value.strip().strip('"').rstrip("/"))
    return found


# Linux's limits: a name of at most 255 bytes, a path of at most 4,095. Longer ones make every
# system call fail, so they are refused up front in one sentence.
NAME_MAX = 255
PATH_MAX = 4095


def shown(text: str) -> str:
    """``text`` printable whatever bytes it holds (undecodable bytes as \\xNN)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_path_text(text: str, *, typed: str | None = None) -> None:
    """Refuse a path that cannot be locked: not UTF-8 (the lock table is JSON, which holds only
    text) or longer than the system allows."""
    name = shown(typed if typed is not None else text)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(
            f"{name} is not valid UTF-8, and versatil only locks paths whose names are (the "
            "lock table is JSON); rename it, or lock the directory that holds it."
        ) from None
    if len(data) > PATH_MAX:
        raise UsageError(
            f"The path {name[:60]}... is {len(data)} bytes long; paths are at most {PATH_MAX}."
        )
    longest = max((len(part) for part in data.split(b"/")), default=0)
    if longest > NAME_MAX:
        raise UsageError(
            f"The path {name[:60]}... has a name of {longest} bytes; a file or directory name "
            f"is at most {NAME_MAX}."
        )


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
    """One git config value, or None (also when git is missing).

    Run through :mod:`versatil_fs.git`: a ``GIT_DIR`` leaking from a hook's environment must not
    make us read another repository's ``versatil.agent``. A value that is not UTF-8 keeps its
    bytes as surrogates, for the agent-name check to refuse in one sentence.
    """
    try:
        result = git.run(["config", "--get", key], cwd=repo.toplevel if repo else None,
                         check=False)
    except GitFailed:
        return None
    value = result.stdout.decode("utf-8", "surrogateescape").strip()
    return value if result.returncode == 0 and value else None
