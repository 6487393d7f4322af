"""Who holds the write lock on a path: the queries on granted write locks that the commit guard,
restores, the edit-time hooks, ``versatil run`` and wave tasks ask, path by path. Pure.

:mod:`versatil_fs.locks.table` decides whether two requests may hold at once; this module
answers, for locks already granted, which one covers a given file, and where a holder's files
can be, indexed so that asking once per file of a large commit stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterable

from versatil_fs.errors import UsageError
from versatil_fs.locks.glob_pairs import pattern_covers
from versatil_fs.locks.table import Claim, Grant, ancestors, in_lock_space, path_contains
from versatil_fs.repo import ignorecase_of

__all__ = ["WriteLocks", "WriteScope", "write_holder"]


class WriteLocks:
    """The write locks on one repository's paths, indexed for "who holds this path?".

    Asked once per staged file by the commit guard and once per restored file by a restore:
    a few dict probes per path (:func:`ancestors`) instead of a scan of every grant. Glob
    write locks are few beside them and asked in turn, each a match of its parsed pattern.
    """

    def __init__(
        self, grants: Iterable[Grant], repo: str, *, except_agent: str | None = None
    ) -> None:
        self._by_path: dict[str, tuple[Grant, Claim]] = {}
        self._globs: list[tuple[Grant, Claim]] = []
        # Paths are asked relative to `repo`; locks are keyed in its lock space (a submodule's
        # in its superproject's, under the submodule's path).
        key, self._prefix = in_lock_space(repo, ".")
        self._prefix = "" if self._prefix == "." else self._prefix
        self._ignorecase = ignorecase_of(key)
        for grant in grants:
            if except_agent is not None and grant.agent == except_agent:
                continue
            for claim in grant.claims:
                resource = claim.resource
                if claim.mode == "write" and resource.is_path and resource.repo == key:
                    if resource.glob:
                        self._globs.append((grant, claim))
                    else:
                        self._by_path.setdefault(resource.path, (grant, claim))

    def __bool__(self) -> bool:
        return bool(self._by_path) or bool(self._globs)

    def holder(self, path: str) -> tuple[Grant, Claim] | None:
        """The write lock covering the repo-relative ``path``, if any."""
        if not self._by_path and not self._globs:
            return None
        if self._prefix:
            path = self._prefix if path == "." else f"{self._prefix}/{path}"
        if self._by_path:
            for candidate in ancestors(path):
                hit = self._by_path.get(candidate)
                if hit is not None:
                    return hit
        for grant, claim in self._globs:
            if pattern_covers(claim.resource.path, path, self._ignorecase):
                return grant, claim
        return None


class WriteScope:
    """Where the files a holder of ``claims`` may write are, for the scans of ``versatil run``
    and wave tasks (what a command modified, what a failure rolls back).

    ``roots`` are the repo-relative paths to list files under: each plain write path, and for
    a glob its literal leading directories (``src`` for ``src/**/*.ts``, ``.`` for ``*.py``),
    since git lists files by path, not by pattern. ``only_covered`` keeps the files found
    there that a write claim covers: a glob owns only what it matches, and a file beside it
    (another agent's, perhaps) is neither recorded as this holder's nor rolled back.
    """

    def __init__(self, claims: Iterable[Claim]) -> None:
        writes = [c.resource for c in claims if c.mode == "write" and c.resource.is_path]
        self._plain = [r.path for r in writes if not r.glob]
        self._globs = [(r.path, ignorecase_of(r.repo)) for r in writes if r.glob]
        self.roots = sorted({*self._plain, *(_root(p) for p, _ in self._globs)})

    def covers(self, path: str) -> bool:
        return any(path_contains(p, path) for p in self._plain) or any(
            pattern_covers(pattern, path, fold) for pattern, fold in self._globs
        )

    def only_covered(self, files: Iterable[str]) -> list[str]:
        if not self._globs:
            return list(files)  # every file under a plain root is covered by it
        return [f for f in files if self.covers(f)]


def _root(pattern: str) -> str:
    """The literal directories a pattern starts with (``.`` when it starts with a wildcard)."""
    from versatil_fs.locks import globs

    try:
        segments = globs.parse(pattern).segments
    except UsageError:
        return "."  # fail closed: look everywhere (see glob_pairs)
    names: list[str] = []
    for segment in segments[:-1]:  # the last one names what matches, never a directory above
        if segment.literal is None:
            break
        names.append(segment.literal)
    return "/".join(names) or "."


def write_holder(
    grants: Iterable[Grant], repo: str, path: str, *, except_agent: str | None = None
) -> tuple[Grant, Claim] | None:
    """The write lock of another agent that covers ``path`` (repo-relative), if any."""
    return WriteLocks(grants, repo, except_agent=except_agent).holder(path)
