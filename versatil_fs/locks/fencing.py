"""Fencing tokens where they are checked: the token a caller presents (``VERSATIL_FENCE``),
the files on which a newer lock has superseded it, what the caller's lock was (from the lock
log), and the sentence that refuses it. Used by the commit guards and ``checkpoint restore``.

The rule. A caller presenting token ``F`` is refused for a file it changes when

1. a current write grant covering that file has a token greater than ``F`` (whoever holds it:
   the caller's own agent too, say a second shell that locked again),
2. the grant that had ``F`` is no longer in the table (expired, force-released, unlocked), and
3. that grant's write locks covered the file, as its ``grant`` event in the lock log says; when
   the log no longer holds the event, what it covered is unknown and every file the first two
   conditions name is refused (failing closed), the message saying so.

The second condition keeps a caller whose lease ``F`` still stands from being refused over a
newer lock it took itself (a ``versatil run`` inside a shell lease: both live, both its own);
the third keeps the refusal true to its words ("your lock on src/api/ was superseded"): a file
the caller never locked under ``F`` is left to the guard's own rule (other agents' write
locks). A file no current grant covers is not refused: a lock that superseded ``F`` and has
ended since leaves nothing to defend. Without ``VERSATIL_FENCE`` (unset or empty) nothing is
checked; a value that is not a token (a whole number from 1 up) is a :class:`UsageError`,
exit 2.

Nothing here runs on a commit that presents no token, and the lock log is read only for a
refusal: a guard that lets a commit through pays one dict probe per changed path.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from versatil_fs.errors import UsageError

if TYPE_CHECKING:
    from versatil_fs.locks.table import Claim, Grant
    from versatil_fs.state import StateDir

__all__ = [
    "FENCE_ENV",
    "CallerLock",
    "Superseded",
    "caller_lock",
    "describe",
    "event_fields",
    "presented",
    "superseded",
]

FENCE_ENV = "VERSATIL_FENCE"
_TOKEN = re.compile(r"[0-9]{1,18}")  # a Count fits an int64; tokens start at 1


def presented(environ: Mapping[str, str] | None = None) -> int | None:
    """The token the caller presents in ``$VERSATIL_FENCE``: None when unset or empty.

    Raises :class:`UsageError` for anything but a positive whole number (``jq .fence`` of a
    refusal is ``null``, a typo is a typo): a guard that guessed would wave the caller through.
    """
    raw = (os.environ if environ is None else environ).get(FENCE_ENV)
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if _TOKEN.fullmatch(text) is None or int(text) == 0:
        shown = text if len(text) <= 40 else text[:39] + "…"
        raise UsageError(
            f"{FENCE_ENV} must be the fencing token of a lock (a whole number from 1 up, the "
            f"\"fence\" of `versatil lock --json`), not {shown!r}; unset it to present none."
        )
    return int(text)


@dataclass(frozen=True)
class Superseded:
    """A file the caller changes and the newer write grant that covers it."""

    path: str  # repo-relative, as the caller named it
    change: str  # how the caller changes it ("modified", "restored", ...)
    grant: Grant
    claim: Claim


@dataclass(frozen=True)
class CallerLock:
    """What the lock behind a presented token was, from its ``grant`` event in the lock log
    (``found`` False: the log no longer holds it, pruned or never written)."""

    fence: int
    found: bool = False
    agent: str | None = None
    lease: str = ""
    time: float | None = None
    repo: str | None = None  # the lock space its paths are keyed in
    writes: list[str] = field(default_factory=list)  # its write-locked paths and patterns
    globs: frozenset[str] = frozenset()  # which of them are patterns

    def covers(self, repo_key: str, path: str) -> bool:
        """Did this lock write-lock the repo-relative ``path`` of repository ``repo_key``?"""
        from versatil_fs.locks.table import Resource

        return bool(self.repo) and any(
            Resource(repo=self.repo or "", path=p, glob=p in self.globs).covers(repo_key, path)
            for p in self.writes
        )


def superseded(
    changed: Iterable[tuple[str, str]], grants: Sequence[Grant], repo_key: str, fence: int,
    state: StateDir | None = None,
) -> tuple[list[Superseded], CallerLock | None]:
    """The ``(path, change)`` pairs of ``changed`` on which token ``fence`` is superseded by one
    of ``grants`` (the live ones; see the module's rule), each with the newer grant, and the
    caller's lock as the log of ``state`` recorded it (None when the log was not needed)."""
    if any(g.fence == fence for g in grants):
        return [], None  # the caller's lease still stands: it holds whatever else covers
    newer = [g for g in grants if g.fence > fence]
    if not newer:
        return [], None
    from versatil_fs.locks.holders import WriteLocks

    locks = WriteLocks(newer, repo_key)
    if not locks:
        return [], None
    found: list[Superseded] = []
    for path, change in changed:
        hit = locks.holder(path)
        if hit is not None:
            found.append(Superseded(path, change, *hit))
    if not found:
        return [], None
    # Only now the log (a refusal's cost, never an allowed commit's): what the lock covered.
    mine = caller_lock(fence, state)
    if mine.found:
        found = [item for item in found if mine.covers(repo_key, item.path)]
    return found, mine


def caller_lock(fence: int, state: StateDir | None = None) -> CallerLock:
    """The grant of token ``fence``, as the lock log recorded it."""
    from versatil_fs import events
    from versatil_fs.errors import VersatilError

    # A substring filter first ("fence":41 also matches 410, hence the exact test after): the
    # log can be large, and only the lines naming the token are decoded.
    needle = b'"fence":%d' % fence
    try:
        for event in events.records("locks", state=state, containing=needle):
            if event.kind != "grant" or event.data.get("fence") != fence:
                continue
            data = event.data
            # The structured fields, not `resources`' text: "db:users (write)" could be a
            # path, and read locks never covered a change.
            writes = [p for p in data.get("write_paths", []) if isinstance(p, str)]
            globs = frozenset(p for p in data.get("write_globs", []) if isinstance(p, str))
            return CallerLock(
                fence=fence, found=True, agent=event.agent, lease=str(data.get("lease", "")),
                time=event.time, repo=event.repo, writes=writes, globs=globs,
            )
    except (VersatilError, OSError):
        pass  # an unreadable log: said as "not in the lock log", the refusal stands either way
    return CallerLock(fence=fence)


def describe(mine: CallerLock, files: Sequence[Superseded], repo_key: str) -> str:
    """The sentence for ``files`` (all superseded by one grant): "your lock on src/api/ (fence
    41) was superseded by James (fence 57) at 10:02:03; your changes to those files were made
    without a lock"."""
    newer = files[0].grant
    by = f"superseded by {newer.agent} (fence {newer.fence}) at {_when(newer.acquired_at)}"
    if not mine.found:
        return (
            f"your lock (fence {mine.fence}; its grant is no longer in the lock log, so what it "
            f"covered is unknown) has ended and was {by}; your changes to those files were "
            "made without a lock"
        )
    return (
        f"your lock on {_locked(mine, files, repo_key)} (fence {mine.fence}) was {by}; your "
        "changes to those files were made without a lock"
    )


def event_fields(fence: int, found: Sequence[Superseded]) -> dict[str, Any]:
    """Both tokens for a refusal's event: the presented one and each newer grant's."""
    groups: dict[str, dict[str, Any]] = {}
    for item in found:
        group = groups.setdefault(item.grant.id, {
            "agent": item.grant.agent, "lease": item.grant.id, "fence": item.grant.fence,
            "files": [],
        })
        if len(group["files"]) < 20:
            group["files"].append(item.path)
    return {"fence": fence, "superseded_by": list(groups.values())}


def _locked(mine: CallerLock, files: Sequence[Superseded], repo_key: str) -> str:
    """The caller's write locks that cover ``files``, as the guard names locks: ``src/api/`` for
    a directory, the pattern for a glob."""
    from versatil_fs.locks.table import Resource, in_lock_space

    space = mine.repo or ""
    shown: list[str] = []
    for path in mine.writes:
        resource = Resource(repo=space, path=path, glob=path in mine.globs)
        # In the lock space's terms (a submodule's files sit under its path there).
        covered = [in_lock_space(repo_key, f.path)[1] for f in files
                   if space and resource.covers(repo_key, f.path)]
        if not covered:
            continue
        if path == ".":
            shown.append("the whole repository")
        elif resource.glob or path in covered:
            shown.append(path)
        else:
            shown.append(f"{path}/")
    if not shown:  # not reached: every file listed is one the lock covered
        shown = mine.writes[:] or ["nothing it wrote"]
    return ", ".join(shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")


def _when(ts: float) -> str:
    # As the guard's refusal says times: the date only when it is not today.
    moment = time.localtime(ts)
    if time.strftime("%Y-%m-%d", moment) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", moment)
    return time.strftime("%Y-%m-%d %H:%M:%S", moment)
