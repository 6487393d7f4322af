"""Turning watchdog's events into writes: each event is checked against what the last scan (and
every report since) says the file was, so that each write is reported once, and once its writer
closes the file."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Sequence
from typing import Literal

from versatil_fs import events
from versatil_fs.locks.table import Grant
from versatil_fs.monitor.attribution import LockView
from versatil_fs.monitor.ignore import IgnoreMatcher
from versatil_fs.monitor.inotify import Raw
from versatil_fs.monitor.scan import EventName, TreeScan, changes, in_git_dir, stamp, under
from versatil_fs.monitor.writes import Reporter

__all__ = ["OPEN_GRACE_SECONDS", "TEMPORARY_GRACE_SECONDS", "Tracker", "looks_temporary"]

# A new file whose name looks temporary is reported only if it still exists this much later.
TEMPORARY_GRACE_SECONDS = 0.1
# A file being written is reported when its writer closes it (IN_CLOSE_WRITE), so that
# create-then-write is one report, not two; one that stays open (a log being appended, a chmod,
# an mmap) is reported this long after its first event instead.
OPEN_GRACE_SECONDS = 0.05

# Name shapes that editors and tools use for the temporary half of an atomic save: vim's swap
# and its `4913` probe, emacs lock and auto-save files, JetBrains' safe write, `*.tmp`, `*~`.
_TEMP_SUFFIXES = (".tmp", ".temp", ".swp", ".swx", ".swo", "~", "___jb_tmp___", "___jb_old___")


def looks_temporary(rel: str) -> bool:
    """Whether a file name looks like the temporary half of an editor's atomic save."""
    name = rel.rsplit("/", 1)[-1]
    return (
        name.startswith((".#", "#"))
        or name == "4913"
        or name.endswith(_TEMP_SUFFIXES)
        or (name.startswith(".") and ".tmp" in name)
    )


def _agent(grant: Grant | None) -> str | None:
    return grant.agent if grant is not None else None


class Tracker:
    """The files of the guarded tree as last reported (:attr:`files`), and the files held back
    (:attr:`pending`: open for writing, or temporary-looking -> when to report them anyway).

    ``reporter`` is built with :meth:`stat` as its ``look``: see :meth:`bind`.
    """

    def __init__(
        self,
        root: str,
        guards: Sequence[str],
        matcher: IgnoreMatcher,
        locks: LockView,
        *,
        notify: Callable[[str], None] | None,
    ) -> None:
        self.root = root
        self.guards = guards
        self.matcher = matcher
        self.locks = locks
        self.notify = notify
        self.files: TreeScan = {}
        self.pending: dict[str, float] = {}
        self._unseeable: set[str] = set()  # paths lstat refused (see stat), said once each
        self._reporter: Reporter | None = None

    def bind(self, reporter: Reporter) -> None:
        self._reporter = reporter

    def _report(
        self, rel: str, event: EventName, *, source: str | None = None,
        holder: Grant | Literal[False] | None = False,
    ) -> None:
        assert self._reporter is not None, "bind() a reporter first"
        self._reporter.report(rel, event, source=source, holder=holder)

    def replace(self, fresh: TreeScan) -> list[tuple[str, EventName]]:
        """Take ``fresh`` (a new scan) as what the tree is; return what changed since."""
        found = changes(self.files, fresh)
        self.pending.clear()
        self.files = fresh
        return found

    def deadline(self) -> float | None:
        """When the first held-back file is due (monotonic), if any."""
        return min(self.pending.values()) if self.pending else None

    # Paths ---------------------------------------------------------------------------------
    def rel(self, path: str) -> str | None:
        """The guarded repo-relative path, or None for the root, .git and unguarded paths."""
        root = self.root
        if not path.startswith(root) or len(path) <= len(root) + 1 or path[len(root)] != "/":
            return None
        rel = path[len(root) + 1 :]
        if in_git_dir(rel) or not under(rel, self.guards):
            return None
        nested = self.matcher.nested
        if nested and any(rel.startswith(n + "/") for n in nested):
            return None  # inside a nested repository: not part of this tree
        return rel

    def stat(self, rel: str) -> os.stat_result | None:
        """``lstat`` of a repo-relative path; None when it is gone, a directory, or unseeable."""
        try:
            info = os.lstat(os.path.join(self.root, rel))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            # A name too long for the kernel to look up, a directory we may not enter: the
            # file cannot be compared with the last scan. Said once per path, then skipped;
            # a monitor that stopped here would report nothing more at all.
            if rel not in self._unseeable:
                self._unseeable.add(rel)
                if self.notify is not None:
                    self.notify(
                        f"cannot look at {events.printable(rel)} ({exc.strerror or exc}); "
                        "its writes are not reported"
                    )
            return None
        return None if stat.S_ISDIR(info.st_mode) else info

    # Events --------------------------------------------------------------------------------
    def process(self, raws: list[Raw]) -> None:
        """Report the writes a batch of events stands for."""
        # Who may be reported: asked of git for the whole batch at once.
        candidates: list[str] = []
        for raw in raws:
            for path in (raw.src, raw.dest):
                rel = self.rel(path) if path else None
                if rel is not None:
                    candidates.append(rel)
                    if rel.rsplit("/", 1)[-1] == ".gitignore":
                        self.matcher.reset()  # its rules changed; git must reread them
        ignored = self.matcher.ignored(candidates) if candidates else set()

        def visible(path: str) -> str | None:
            rel = self.rel(path) if path else None
            return rel if rel is not None and rel not in ignored else None

        for raw in raws:
            if raw.kind == "moved":
                self._moved(visible(raw.src), visible(raw.dest))
            elif raw.kind == "dir-deleted":
                rel = self.rel(raw.src)
                if rel is not None:
                    self._vanished_below(rel)
            elif raw.kind == "deleted":
                rel = visible(raw.src)
                if rel is not None:
                    self._deleted(rel)
            else:
                rel = visible(raw.src)
                if rel is not None:
                    self._changed(rel, closed=raw.kind == "closed")

    def flush(self, *, force: bool = False) -> None:
        """Report the held-back files that are due (all of them with ``force``)."""
        if not self.pending:
            return
        now = time.monotonic()
        due = [p for p, when in self.pending.items() if force or when <= now]
        for path in due:
            del self.pending[path]
            self._changed(path, closed=True, hold=False)

    def _changed(self, rel: str, *, closed: bool, hold: bool = True) -> None:
        info = self.stat(rel)
        if info is None:
            self.pending.pop(rel, None)
            return  # already gone: its delete or move event follows
        now_stamp = stamp(info)
        before = self.files.get(rel)
        if before == now_stamp:
            self.pending.pop(rel, None)
            return  # this write was reported already (IN_MODIFY then IN_CLOSE_WRITE, a rescan)
        if hold:
            now = time.monotonic()
            if not closed:
                self.pending.setdefault(rel, now + OPEN_GRACE_SECONDS)
                return
            if before is None and looks_temporary(rel):
                # Possibly the temporary half of an atomic save: report it only if it stays.
                self.pending[rel] = max(
                    self.pending.get(rel, 0.0), now + TEMPORARY_GRACE_SECONDS
                )
                return
        self.pending.pop(rel, None)
        self.files[rel] = now_stamp
        self._report(rel, "created" if before is None else "modified")

    def _deleted(self, rel: str) -> None:
        self.pending.pop(rel, None)
        if self.stat(rel) is not None:
            self._changed(rel, closed=True)  # replaced already
            return
        if self.files.pop(rel, None) is not None:
            self._report(rel, "deleted")

    def _vanished_below(self, rel: str) -> None:
        # A directory moved out of view or deleted as a whole: its files get no events of their
        # own, so every known file below it that is gone now is reported deleted.
        prefix = rel + "/"
        for path in [p for p in self.files if p.startswith(prefix)]:
            if self.stat(path) is None:
                del self.files[path]
                self._report(path, "deleted")

    def _moved(self, src: str | None, dest: str | None) -> None:
        known_src = src is not None and src in self.files and self.stat(src) is None
        if src is not None:
            self.pending.pop(src, None)
        if dest is not None and self._moved_to(src, dest, known_src=known_src):
            return
        if known_src:
            assert src is not None
            del self.files[src]
            self._report(src, "deleted")

    def _moved_to(self, src: str | None, dest: str, *, known_src: bool) -> bool:
        """Report a move whose destination is visible; False when there is nothing to report
        for ``dest`` (it is gone, or unchanged and not a real rename)."""
        info = self.stat(dest)
        if info is None:
            return False
        self.pending.pop(dest, None)
        before = self.files.get(dest)
        now_stamp = stamp(info)
        if before == now_stamp and not known_src:
            return False
        self.files[dest] = now_stamp
        if known_src:
            assert src is not None
            # A real rename: one line, for the new path; a separate deletion only if the old
            # path is guarded by someone else's lock (or by none).
            self.files.pop(src, None)
            src_holder = self.locks.holder(src, refresh=False)
            dest_holder = self.locks.holder(dest, refresh=False)
            self._report(dest, "moved", source=src, holder=dest_holder)
            if _agent(src_holder) != _agent(dest_holder):
                self._report(src, "deleted", holder=src_holder)
            return True
        # The temporary half of an atomic save was never reported: this is a write to the
        # target, created or modified.
        self._report(dest, "created" if before is None else "modified")
        return True
