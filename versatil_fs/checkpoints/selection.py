"""What a restore may change: the paths a user names, the files an agent or a wave recorded as
modified, and the refusals (a file write-locked by someone else, or modified by another agent
since the checkpoint) that keep a restore from undoing other people's work.
"""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from versatil_fs import events
from versatil_fs.checkpoints.records import Change, CheckpointRecord, has_surrogates, printable
from versatil_fs.checkpoints.site import Site
from versatil_fs.errors import Refused, UsageError
from versatil_fs.locks.holders import WriteLocks
from versatil_fs.locks.manager import LockManager
from versatil_fs.locks.table import Grant, ancestors
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir

__all__ = [
    "WRITER_SOURCES",
    "Modification",
    "Selection",
    "attribution",
    "covered",
    "history",
    "modifications_since",
    "normalize",
    "record_files_modified",
    "refusal",
    "refuse_locked",
    "select",
    "write_lock_conflicts",
]


# Files modified by agents ----------------------------------------------------------------------
def record_files_modified(
    repo: Repository,
    agent: str,
    paths: builtins.list[str],
    *,
    wave: int | None = None,
    task: str | None = None,
    state: StateDir | None = None,
    source: str | None = None,
    lease: str | None = None,
) -> None:
    """Record that ``agent`` modified ``paths`` (repo-relative POSIX), for ``restore --agent``.

    The run wrapper, the wave executor and the agent hooks call this; a restore by agent or
    wave reads these events back (from the same ``state`` directory: default $VERSATIL_HOME).
    ``source`` says how the writer is known (absent: the caller saw its own writer; the
    monitor logs ``"monitor"`` itself, see :data:`WRITER_SOURCES`), ``lease`` the lock it
    wrote under.
    """
    # The event log is UTF-8 JSON: a name that is not UTF-8 goes in `paths_hex` as its bytes,
    # so that `restore --agent` selects exactly that file (a printable stand-in could name
    # another one).
    extra: dict[str, Any] = {}
    raw = [os.fsencode(p).hex() for p in paths if has_surrogates(p)]
    if raw:
        extra["paths_hex"] = raw
    if source:
        extra["source"] = source
    if lease:
        extra["lease"] = lease
    events.emit(
        "collision-detection",
        "files-modified",
        agent=agent,
        repo=str(repo.common_dir),
        # The worktree, as the monitor names it: the same path in two worktrees is two files.
        worktree=str(repo.toplevel),
        paths=[p for p in paths if not has_surrogates(p)],
        wave=wave,
        task=task,
        state=state,
        **extra,
    )


# Sources of a files-modified event that saw the writer itself: the agent harness hooks (and
# an event without a source: `versatil run` and the wave executor scan what their own child
# processes changed). The monitor ("monitor") only sees that a write happened while a lock
# was held (inotify does not say which process wrote), so its attribution is by lock.
WRITER_SOURCES = frozenset({"", "agent-hook", "run", "wave"})


@dataclass(frozen=True)
class Modification:
    """One ``files-modified`` event: who (agent, wave) modified which paths, and how that is
    known (``source``, ``lease``)."""

    agent: str | None
    wave: int | None
    paths: tuple[str, ...]
    time: float = 0.0
    task: str | None = None
    source: str = ""  # "" for an event without one
    lease: str | None = None
    event: str | None = None  # the monitor's kind of write (modified, created, deleted, ...)

    @property
    def by_writer(self) -> bool:
        """Whether the writer itself is known, not only the lock it wrote under."""
        return self.source in WRITER_SOURCES


def modifications_since(
    repo_key: str, since: float, state: StateDir, worktree: str | None = None
) -> builtins.list[Modification]:
    """The modifications recorded in ``state`` for the repository ``repo_key`` after ``since``
    (in the worktree whose toplevel is ``worktree``, if given; an event that names no worktree
    was written before they were named, and counts for every one)."""
    found = []
    for event in events.read("collision-detection", state=state):
        if event.kind != "files-modified" or event.repo != repo_key or event.time <= since:
            continue
        where = event.data.get("worktree")
        if worktree is not None and isinstance(where, str) and where and where != worktree:
            continue
        raw_paths = builtins.list(event.data.get("paths") or [])
        for encoded in event.data.get("paths_hex") or []:
            with contextlib.suppress(TypeError, ValueError):
                raw_paths.append(os.fsdecode(bytes.fromhex(encoded)))
        wave = event.data.get("wave")
        paths = tuple(_clean_recorded(p) for p in raw_paths if isinstance(p, str) and p)
        found.append(Modification(
            event.agent, wave if isinstance(wave, int) else None, paths, time=event.time,
            task=_text(event.data.get("task")), source=_text(event.data.get("source")) or "",
            lease=_text(event.data.get("lease")), event=_text(event.data.get("event")),
        ))
    return found


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def history(repo_key: str, path: str, state: StateDir,
            worktree: str | None = None) -> builtins.list[Modification]:
    """Every recorded modification of ``path`` in the repository ``repo_key``, oldest first:
    what ``versatil who`` prints. A record of a directory above ``path`` counts (it stands for
    every file below it), and so, when ``path`` is a directory, does one of a file below it."""
    wanted = _clean_recorded(path)
    above = set(ancestors(wanted))
    prefix = "" if wanted == "." else wanted + "/"
    return [m for m in modifications_since(repo_key, 0.0, state, worktree)
            if any(p in above or p.startswith(prefix) for p in m.paths)]


def attribution(
    repo_key: str, since: float, state: StateDir, paths: Iterable[str],
    worktree: str | None = None,
) -> dict[str, builtins.list[Modification]]:
    """For each of ``paths``: the modifications recorded since ``since`` (in ``worktree``)
    that cover it (the path itself or a directory above it), oldest first."""
    mods = modifications_since(repo_key, since, state, worktree)
    found: dict[str, builtins.list[Modification]] = {}
    for path in paths:
        above = set(ancestors(path))
        found[path] = [m for m in mods if any(p in above for p in m.paths)]
    return found


def _clean_recorded(path: str) -> str:
    while path.startswith("./"):
        path = path[2:]
    return path.rstrip("/") or "."


# Selections -------------------------------------------------------------------------------------
def covered(path: str, selection: set[str] | dict[str, str]) -> bool:
    """Whether ``path`` or a directory above it (``.`` included) is in ``selection``."""
    return any(candidate in selection for candidate in ancestors(path))


def normalize(top: Path, raw: str | os.PathLike[str], parents: dict[str, str]) -> str:
    """Repo-relative POSIX path; the last component is kept even if it is a symlink.

    ``parents`` caches resolved directories: the paths of one restore share most of them.
    """
    text = os.fspath(raw)
    if not text:
        raise UsageError("An empty path cannot be restored; name a file or a directory.")
    absolute = Path(os.path.normpath(top / text))
    key = str(absolute.parent)
    if key not in parents:
        parents[key] = os.path.realpath(key)
    parent = Path(parents[key])
    candidate = parent if absolute.name in ("", ".") else parent / absolute.name
    try:
        rel = candidate.relative_to(top)
    except ValueError:
        raise UsageError(f"{printable(text)} is outside the repository {top}.") from None
    if rel.parts and rel.parts[0] == ".git":
        raise UsageError(
            f"{printable(text)} is inside .git; checkpoints do not hold git's own files."
        )
    return rel.as_posix() if rel.parts else "."


@dataclass(frozen=True)
class Selection:
    """What a selective restore chose: the changes, and among them the files whose only
    record for the selected agent / wave is the monitor's (attributed by lock, not by
    writer)."""

    changes: builtins.list[Change]
    by_lock: builtins.list[str]


def select(
    site: Site,
    changes: builtins.list[Change],
    target: CheckpointRecord,
    paths: builtins.list[str] | None,
    agent: str | None,
    wave: int | None,
    force: bool,
) -> Selection:
    """The ``changes`` within the selected ``paths`` and recorded for ``agent`` / ``wave``;
    ``Refused`` (unless ``force``) if another agent modified one of them since ``target``,
    and ``Refused`` if ``agent`` recorded no file at all since then (a misspelt name must not
    look like "nothing to restore")."""
    if paths is not None:
        changes = _within(site.repo.toplevel, changes, target, paths)
    if agent is None and wave is None:
        return Selection(changes, [])
    mods = modifications_since(site.key, target.time, site.state, str(site.repo.toplevel))
    if agent is not None and not any(m.agent == agent and m.paths for m in mods):
        raise _nobody(site, target, agent, mods)

    def chosen(mod: Modification) -> bool:
        return (agent is None or mod.agent == agent) and (wave is None or mod.wave == wave)

    recorded = {p for m in mods if chosen(m) for p in m.paths}
    by_writer = {p for m in mods if chosen(m) and m.by_writer for p in m.paths}
    changes = [c for c in changes if covered(c.path, recorded)]
    if not force:
        others = {p: m.agent or "someone" for m in mods if not chosen(m) for p in m.paths}
        for change in changes:
            who = next((others[a] for a in ancestors(change.path) if a in others), None)
            if who is not None:
                raise refusal(
                    site,
                    f"Not restoring: {printable(change.path)} was also modified by {who} "
                    "after "
                    f"checkpoint {target.id}, so restoring it would undo their work too; "
                    "pass --force to restore it anyway.",
                    target, agent or "", [(change.path, who)],
                )
    by_lock = [c.path for c in changes if not covered(c.path, by_writer)]
    return Selection(changes, by_lock)


def _nobody(site: Site, target: CheckpointRecord, agent: str,
            mods: builtins.list[Modification]) -> Refused:
    names = sorted({m.agent for m in mods if m.agent and m.paths})
    if names:
        having = f"agents with files recorded since then: {', '.join(names)}"
    else:
        having = "no agent has files recorded since then"
    return Refused(
        f"Not restoring: {printable(agent)} has no files recorded as modified since "
        f"checkpoint {target.id}; {having}."
    )


def _within(top: Path, changes: builtins.list[Change], target: CheckpointRecord,
            paths: builtins.list[str]) -> builtins.list[Change]:
    # Sets of paths and their ancestors keep this linear in the number of changes: restoring
    # 1,000 paths must not compare every path with every change.
    selected = {p.strip("/") or "." for p in paths}
    touched = {a for c in changes for a in ancestors(c.path)}
    for path in selected:
        if path not in touched and not os.path.lexists(top / path):
            raise UsageError(
                f"{printable(path)} is neither in the working tree nor in checkpoint "
                f"{target.id}."
            )
    return [c for c in changes if covered(c.path, selected)]


# Refusals ---------------------------------------------------------------------------------------
def write_lock_conflicts(
    grants: Iterable[Grant], paths: Iterable[str], *, repo_key: str, agent: str
) -> builtins.list[tuple[str, str]]:
    """``(path, holder)`` for each path write-locked by an agent other than ``agent``.

    Read locks do not protect against a restore: a reader expects the file to change under it no
    more than under any other writer, and only writers lose work when it is overwritten.
    """
    locks = WriteLocks(grants, repo_key, except_agent=agent)
    conflicts = []
    for path in paths:
        hit = locks.holder(path)
        if hit is not None:
            conflicts.append((path, hit[0].agent))
    return conflicts


def refuse_locked(
    site: Site, changes: Iterable[Change], target: CheckpointRecord, restorer: str,
    files_of: str | None = None,
) -> None:
    """``Refused`` if a path of ``changes`` is write-locked by an agent other than
    ``restorer`` (and ``files_of``, the agent whose files are rolled back: its own locks
    cover exactly the files being put back), in the lock table of the site's state
    directory."""
    # The lock table of this state directory: one given to Checkpoints(state=...) is where
    # its callers (a wave executor with its own state) take their locks.
    grants = LockManager(repo=str(site.repo.toplevel), state=site.state).holders()
    if files_of is not None:
        grants = [g for g in grants if g.agent != files_of]
    conflicts = write_lock_conflicts(
        grants, [c.path for c in changes], repo_key=site.key, agent=restorer
    )
    if not conflicts:
        return
    path, holder = conflicts[0]
    more = f" (and {len(conflicts) - 1} more locked files)" if len(conflicts) > 1 else ""
    raise refusal(
        site,
        f"Not restoring: {printable(path)} is write-locked by {holder}{more}; wait until "
        f"{holder} "
        "releases it, or pass --force to overwrite it.",
        target, restorer, conflicts,
    )


def refusal(
    site: Site,
    message: str,
    target: CheckpointRecord,
    restorer: str,
    conflicts: builtins.list[tuple[str, str]],
) -> Refused:
    """The ``Refused`` to raise, its ``restore-refused`` event logged."""
    site.emit_done(
        "checkpoints", "restore-refused", agent=restorer or None, repo=site.key,
        checkpoint=target.id, conflicts=[f"{p} ({a})" for p, a in conflicts[:20]],
    )
    return Refused(message)
