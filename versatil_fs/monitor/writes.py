"""What the monitor reports: a :class:`Write`, its two printed forms, how it is attributed and
recorded in the ``collision-detection`` log (:class:`Reporter`), and how it is read back from
there (:func:`writes_from_event`, :func:`unlocked_write_count`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec

from versatil_fs import events
from versatil_fs.locks.table import Grant
from versatil_fs.monitor.attribution import (
    STASH_EVENT,
    LockView,
    RestoreView,
    Restoring,
    StashView,
    lock_held_at,
    stashed_then,
)
from versatil_fs.monitor.scan import EventName
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir

__all__ = [
    "RECENT_WINDOW",
    "STREAM",
    "Reporter",
    "Write",
    "WriteKind",
    "encode_write",
    "recent_unlocked_writes",
    "unlocked_write_count",
    "window_phrase",
    "writes_from_event",
]

WriteKind = Literal["unlocked-write", "locked-write", "restored", "stashed"]
STREAM = "collision-detection"
# The window of the count `versatil locks` shows: an old write nobody can undo any more must
# not keep the count up forever (issue 15, item 3), and the log is never rewritten to reset it.
RECENT_WINDOW = 3600.0


class Write(msgspec.Struct, kw_only=True, omit_defaults=True, rename={"source": "from"}):
    """One reported write: a line of ``versatil monitor --json``.

    ``kind`` is ``locked-write`` when a live write lock covered the path (``agent`` is that
    lock's holder: inotify does not say which process wrote, so this is "written while
    ``agent`` held the lock", not "written by ``agent``"), ``restored`` when a ``checkpoint
    restore`` wrote it (``agent`` is who restored, ``checkpoint`` what), else
    ``stashed`` when the pre-commit framework put back a file it had stashed for a commit, else
    ``unlocked-write`` (``agent`` null); ``attributed`` says what the kind rests on (``lock``,
    ``restore``, ``pre-commit``). ``from`` is the old path of a move; ``rescan`` marks a
    write found by a rescan after an event overflow rather than by its own event.
    """

    kind: WriteKind
    path: str
    event: EventName
    agent: str | None
    time: float
    source: str | None = None
    rescan: bool = False
    checkpoint: str | None = None
    attributed: Literal["lock", "restore", "pre-commit"] | None = None

    def line(self) -> str:
        """The human form: ``12:00:01 unlocked-write modified src/a.py``; a locked write says
        what its attribution rests on, ``(written while Marcus held the lock)``, and a restored
        file who restored which checkpoint.

        A name that is not UTF-8 is shown escaped (``\\xff.txt``), as in :func:`encode_write`.
        """
        clock = time.strftime("%H:%M:%S", time.localtime(self.time))
        moved = f" (from {events.printable(self.source)})" if self.source else ""
        rescan = " [rescan]" if self.rescan else ""
        path = events.printable(self.path)
        if self.kind == "locked-write":
            who = f" (written while {self.agent} held the lock)"
        elif self.kind == "stashed":
            who = " (the pre-commit framework's un-stash)"
        elif self.kind == "restored":
            by = f"{self.agent}'s " if self.agent else ""
            who = f" (by {by}restore of {self.checkpoint})"
        else:
            who = ""
        return f"{clock} {self.kind} {self.event} {path}{moved}{who}{rescan}"


_write_encoder = msgspec.json.Encoder()


def encode_write(write: Write) -> bytes:
    """One JSON line. ``path`` holds what ``os.fsdecode`` gives (surrogate escapes for bytes
    that are not UTF-8), which JSON cannot carry: such a name goes out in its printable form,
    the same one the collision-detection log records."""
    try:
        return _write_encoder.encode(write)
    except UnicodeEncodeError:
        return _write_encoder.encode(events.printable(write))


# Recording --------------------------------------------------------------------------------------
class Reporter:
    """Attributes each write to the write lock covering it, counts it, logs it (when ``record``)
    and hands it to ``sink``; skips the files ``own`` says the monitor itself writes.

    ``look`` stats a repo-relative path (None when it is gone): a write whose lock was released
    before its event arrived is attributed from the file's mtime and the locks log. A log line
    that cannot be written (a full disk) is said once through ``notify``; the write is still
    reported and counted, and the monitor goes on.
    """

    def __init__(
        self,
        repo: Repository,
        state: StateDir,
        locks: LockView,
        *,
        look: Callable[[str], os.stat_result | None],
        sink: Callable[[Write], None] | None,
        notify: Callable[[str], None] | None,
        record: bool,
        own: Callable[[str, os.stat_result | None], bool] | None = None,
    ) -> None:
        self.repo = repo
        self.own = own
        self.state = state
        self.locks = locks
        self.look = look
        self.sink = sink
        self.notify = notify
        self.record = record
        self.root = str(repo.toplevel)
        self.unlocked = 0
        self.locked = 0
        self.restored = 0
        self.restores = RestoreView(state, repo)
        self.followers: Callable[[str], bool] | None = None
        self.stashes = StashView(state, self.root)
        self.stashed = 0
        self._warned = False

    def log(
        self, kind: str, agent: str | None = None, *, strict: bool = False, **data: Any
    ) -> None:
        """One line in the collision-detection log (when recording); ``data`` names the
        working tree itself (``worktree=``), where a reader expects it in the line.

        A write has happened whatever becomes of its line, so a log that cannot be written is
        said once and the monitor goes on; with ``strict`` (its start: nothing happened yet)
        the failure is raised instead, and a monitor that could record nothing refuses.
        """
        if not self.record:
            return
        if strict:
            events.emit(STREAM, kind, agent=agent, repo=self.repo.key, state=self.state, **data)
            return
        events.emit_done(
            STREAM, kind, agent=agent, repo=self.repo.key, state=self.state,
            done="the monitor goes on", warn=self._warn_once, **data,
        )

    def _warn_once(self, sentence: str) -> None:
        if not self._warned:
            self._warned = True
            if self.notify is not None:
                self.notify(sentence)

    def report(
        self,
        rel: str,
        event: EventName,
        *,
        source: str | None = None,
        rescan: bool = False,
        holder: Grant | Literal[False] | None = False,
    ) -> None:
        """Report one write; ``holder`` (when not False) is its lock, already looked up.

        A write to a file the monitor writes itself (``own``) is not reported at all.
        """
        info = self.look(rel) if event != "deleted" else None
        if self.own is not None and self.own(rel, info):
            return
        if self.followers is not None and self.followers(rel):
            return  # a following monitor's output file: it writes it, as we write ours
        now = time.time()
        # A restore's own writes first: a forced restore over a locked file is the restore's
        # write, not the holder's, and `restore --agent` must not take it for theirs.
        restoring = self.restores.restore_of(rel, info.st_mtime if info is not None else None)
        if restoring is not None:
            self._restored(rel, event, restoring, now, source=source, rescan=rescan)
            return
        grant = self.locks.holder(rel, refresh=False) if holder is False else holder
        if grant is None and holder is False:
            grant = self._held_then(rel, info)
        if grant is None and self.stashes.unstash_of(rel) is not None:
            self._stashed(rel, event, now, source=source, rescan=rescan)
            return
        write = (
            self._unlocked(rel, event, now, source=source, rescan=rescan) if grant is None
            else self._locked(rel, event, grant, now, source=source, rescan=rescan)
        )
        if self.sink is not None:
            self.sink(write)

    def _unlocked(
        self, rel: str, event: EventName, now: float, *, source: str | None, rescan: bool
    ) -> Write:
        self.unlocked += 1
        if self.record:
            extra: dict[str, Any] = {}
            if source:
                extra["from"] = source
            if rescan:
                extra["rescan"] = True
            self.log("unlocked-write", path=rel, event=event, worktree=self.root, **extra)
        return Write(
            kind="unlocked-write", path=rel, event=event, agent=None, time=now, source=source,
            rescan=rescan,
        )

    def _locked(
        self, rel: str, event: EventName, grant: Grant, now: float, *, source: str | None,
        rescan: bool,
    ) -> Write:
        self.locked += 1
        # The kind and fields `checkpoint restore --agent` reads back. source "monitor" and
        # attributed "lock": the writer is not known (inotify does not say who wrote), only
        # that this agent held the covering write lock; the writer-known sources are the agent
        # harness hooks' and `versatil run`'s and the wave executor's own scans.
        self.log(
            "files-modified", grant.agent, paths=[rel], wave=None, task=None, event=event,
            source="monitor", attributed="lock", lease=grant.id, worktree=self.root,
        )
        return Write(
            kind="locked-write", path=rel, event=event, agent=grant.agent, time=now,
            source=source, rescan=rescan, attributed="lock",
        )

    def _restored(
        self, rel: str, event: EventName, restoring: Restoring, now: float, *,
        source: str | None, rescan: bool,
    ) -> None:
        self.restored += 1
        write = Write(
            kind="restored", path=rel, event=event, agent=restoring.restorer, time=now,
            source=source, rescan=rescan, checkpoint=restoring.checkpoint, attributed="restore",
        )
        extra: dict[str, Any] = {"from": source} if source else {}
        if rescan:
            extra["rescan"] = True
        self.log(
            "restored", restoring.restorer, path=rel, event=event,
            checkpoint=restoring.checkpoint, safety=restoring.safety, worktree=self.root,
            **extra,
        )
        if self.sink is not None:
            self.sink(write)

    def _stashed(
        self, rel: str, event: EventName, now: float, *, source: str | None, rescan: bool
    ) -> None:
        self.stashed += 1
        write = Write(
            kind="stashed", path=rel, event=event, agent=None, time=now, source=source,
            rescan=rescan, attributed="pre-commit",
        )
        self.log("stashed", path=rel, event=event, worktree=self.root)
        if self.sink is not None:
            self.sink(write)

    def _held_then(self, rel: str, info: os.stat_result | None) -> Grant | None:
        """The write lock that covered ``rel`` when it was written, if it is gone by now.

        Events reach us after the write (a file is reported when its writer closes it), so a
        short task can release its lock before we look: the locks log says who held what,
        when, and the file's mtime (``info``) says when it was written. A deletion leaves no
        time behind and gets no such benefit of the doubt.
        """
        if info is None:
            return None
        return lock_held_at(self.state, self.repo.key, rel, info.st_mtime)


# Reading back -----------------------------------------------------------------------------------
def writes_from_event(event: events.Event) -> list[Write]:
    """The writes a logged event stands for (none for other kinds)."""
    data = event.data
    if event.kind == "unlocked-write":
        return [
            Write(
                kind="unlocked-write", path=str(data.get("path", "")),
                event=data.get("event", "modified"), agent=None, time=event.time,
                source=data.get("from"), rescan=bool(data.get("rescan", False)),
            )
        ]
    if event.kind == "stashed":
        return [
            Write(
                kind="stashed", path=str(data.get("path", "")),
                event=data.get("event", "modified"), agent=None, time=event.time,
                attributed="pre-commit",
            )
        ]
    if event.kind == "restored":
        return [
            Write(
                kind="restored", path=str(data.get("path", "")),
                event=data.get("event", "modified"), agent=event.agent, time=event.time,
                source=data.get("from"), rescan=bool(data.get("rescan", False)),
                checkpoint=data.get("checkpoint"), attributed="restore",
            )
        ]
    if event.kind == "files-modified" and data.get("source") == "monitor":
        return [
            Write(
                kind="locked-write", path=str(path), event=data.get("event", "modified"),
                agent=event.agent, time=event.time, attributed="lock",
            )
            for path in data.get("paths") or []
        ]
    return []


def unlocked_write_count(
    repo: Repository | str | os.PathLike[str],
    *,
    since: float | None = None,
    state: StateDir | None = None,
) -> int:
    """How many unlocked writes the monitor has recorded for ``repo`` (optionally since a time).

    Reads the ``collision-detection`` log; only lines that mention an unlocked write are decoded,
    so a log full of other events costs a substring search per line.
    """
    repository = repo if isinstance(repo, Repository) else Repository.find(repo)
    key = repository.key
    # The pre-commit framework's stash (its checkout before our hook could say so) is not an
    # unlocked write: our hook logs which files it stashed, and those writes are left out.
    stashes = [
        e for e in events.records(STREAM, state=state, containing=b'"framework-stash"')
        if e.kind == STASH_EVENT and e.repo == key
    ]
    count = 0
    for event in events.records(STREAM, state=state, containing=b'"unlocked-write"'):
        if event.kind != "unlocked-write" or event.repo != key:
            continue
        if since is not None and event.time < since:
            continue
        worktree = str(event.data.get("worktree", ""))
        path = str(event.data.get("path", ""))
        if stashes and stashed_then(stashes, worktree, path, event.time):
            continue
        count += 1
    return count


def recent_unlocked_writes(
    repo: Repository | str | os.PathLike[str],
    *,
    window: float = RECENT_WINDOW,
    now: float | None = None,
    state: StateDir | None = None,
) -> int:
    """How many unlocked writes the monitor recorded for ``repo`` in the last ``window``
    seconds (an hour by default): the count ``versatil locks`` shows, with
    :func:`window_phrase` saying over what."""
    if not window > 0:
        raise ValueError(f"window must be a positive number of seconds, not {window!r}")
    start = (time.time() if now is None else now) - window
    return unlocked_write_count(repo, since=start, state=state)


def window_phrase(window: float = RECENT_WINDOW) -> str:
    """``the last hour``, ``the last 10 minutes``, ``the last 2 days``, ``the last 30 s``:
    what a count over ``window`` seconds covers, for the sentence that shows it."""
    for unit, seconds in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if window >= seconds and window % seconds == 0:
            count = int(window // seconds)
            return f"the last {unit}" if count == 1 else f"the last {count} {unit}s"
    return f"the last {window:g} s"
