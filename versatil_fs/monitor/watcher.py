"""The monitor: one watchdog observer per working tree, reporting every unlocked write.

A *write* is a create, modify, delete or move of a guarded (``guard.paths``), non-ignored file.
A write that a live ``write`` lock covers is attributed to that lock's agent (a *locked write*,
logged as ``files-modified`` so ``checkpoint restore --agent`` can use it); any other is an
*unlocked write*: a ``collision-detection`` event, a line on the monitor's output and a count
in ``versatil locks`` (:func:`unlocked_write_count`).

How it stays complete and reports each write once:

* **One observer per repository** (per working tree: linked worktrees share locks, not files).
  Every candidate (``versatil monitor``, each ``versatil run``) takes part in an election: a
  non-blocking ``flock`` on ``run/monitors/<tree>.lock`` in the state directory. The winner
  observes and logs; the others wait in a blocking ``flock`` and take over the moment it
  exits, however it exits (the kernel drops the lock). A foreground monitor that lost the
  election prints what the winner logs, so its output is the same.
* **A scan of every reported file** (size, mtime, inode, mode), listed by ``git ls-files``.
  Each event is checked against it, and a file being written is reported when its writer
  closes it: create-then-write, or ``IN_MODIFY`` then ``IN_CLOSE_WRITE``, is one report, and
  whether a write is a creation or a modification comes from what the file was, not from
  which inotify flags arrived.
* **Rescans.** watchdog 7.1 keeps ``IN_Q_OVERFLOW`` to itself: it re-adds its watches and
  queues nothing, so a burst past the kernel queue (16,384 events) loses writes silently. We
  hook the watch group's overflow callback and rescan against the last scan, reporting what
  changed and saying that a rescan happened. A watch that cannot be added (the
  ``max_user_watches`` limit) switches the monitor to a rescan every second as well.
* **Editor saves.** An atomic save (write a temporary file, rename it over the target) arrives
  as a move whose ``dest_path`` is the target; it is reported once, as a write to the target.
  A new file with a temporary-looking name is held back briefly so that the temporary file of a
  slower save (one that fsyncs) is not reported on its own.
* **What is never reported**: the monitor's own output (its stdout and stderr redirected to a
  file in the tree, the state directory inside the tree: ``own_files``), anything under a
  ``.git`` directory, files git ignores — asked
  of git itself (``git check-ignore --stdin`` in one long-lived process for new paths, ``git
  ls-files --exclude-standard`` for scans), plus the extra patterns of ``guard.ignore``, which
  git reads like a global excludes file (so, like ``.gitignore``, they never hide a tracked
  file) — and the contents of nested repositories and submodules. Ignored directories are not
  even watched.

What it does not guarantee: a write is attributed to whoever holds the covering lock, not to the
process that wrote it (inotify does not say who wrote). Between one elected monitor's exit and
its successor's watches being in place (milliseconds), writes can go unseen: the successor has no
scan of what the tree looked like before. And a file rewritten with the same size within one
timestamp tick of the previous report looks unchanged (kernels without multigrain timestamps
keep mtime to the jiffy): the two writes are reported as one.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from versatil_fs.monitor.attribution import LockView
from versatil_fs.monitor.ignore import IgnoreMatcher, MonitorError
from versatil_fs.monitor.inotify import (
    LIMIT,
    OVERFLOW,
    STOP,
    Handler,
    Raw,
    event_filter,
    make_observer,
)
from versatil_fs.monitor.own_files import FollowerOutputs, OwnFiles
from versatil_fs.monitor.scan import TreeScan, in_git_dir, normalize_guards, scan, under
from versatil_fs.monitor.tracking import Tracker
from versatil_fs.monitor.writes import Reporter, Write
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir

if TYPE_CHECKING:
    from versatil_fs.config import Config

__all__ = ["LIMIT_RESCAN_SECONDS", "MAX_BATCH", "SETTLE_SECONDS", "Monitor"]

# Wait this long after the first event of a batch for the rest of it: an editor's
# write-temp-then-rename takes microseconds, and seeing both in one batch is what lets the
# temporary file go unreported. A tenth of the 10 ms p99 detection budget.
SETTLE_SECONDS = 0.001
# After the watch limit is hit, directories without a watch are caught by rescans this often.
LIMIT_RESCAN_SECONDS = 1.0
# Largest batch handled at once; the rest waits for the next turn of the loop.
MAX_BATCH = 20_000


class Monitor:
    """Watches the guarded paths of one repository and reports every write.

    ``sink`` receives each :class:`Write` (in the monitor's thread); ``notify`` receives the
    sentences worth telling a person (a rescan and why). With ``record`` (the default) every
    write also goes to the ``collision-detection`` log: only the elected monitor of a
    repository should record, or a write would be counted twice.

    Call :meth:`take_baseline` before starting something whose writes must all be seen, then
    :meth:`start`; :meth:`stop` reports what is still pending (and, with ``final_scan``, any
    write whose event has not arrived yet) before it returns.

    Its parts: :attr:`tracker` (events -> writes, against the last scan), :attr:`reporter`
    (attribution, counting, the log), :attr:`locks` (the live write locks), :attr:`matcher`
    (git's ignore rules plus ``guard.ignore``).
    """

    def __init__(
        self,
        repo: Repository,
        *,
        config: Config | None = None,
        state: StateDir | None = None,
        sink: Callable[[Write], None] | None = None,
        notify: Callable[[str], None] | None = None,
        record: bool = True,
    ) -> None:
        self.repo = repo
        self.state = state or StateDir()
        if config is None:
            from versatil_fs import config as config_module

            config = config_module.load(repo.toplevel, state=self.state)
        self.guards = normalize_guards(config.guard.paths)
        self.matcher = IgnoreMatcher(repo, config.guard.ignore, state=self.state)
        manager = None
        if config.store.backend != "local":
            # Locks taken on other machines, or here, live on the server: ask the store.
            from versatil_fs.locks.manager import LockManager

            manager = LockManager(repo=repo, state=self.state, config=config)
        self.locks = LockView(self.state, repo.key, manager=manager)
        self.notify = notify
        self.root = str(repo.toplevel)
        self.tracker = Tracker(self.root, self.guards, self.matcher, self.locks, notify=notify)
        own = OwnFiles(self.root, self.state)
        self.reporter = Reporter(
            repo, self.state, self.locks, look=self.tracker.stat, sink=sink, notify=notify,
            record=record, own=own if own else None,
        )
        if record:  # the observing monitor: the ones following it announce their outputs
            self.reporter.followers = FollowerOutputs(self.state, self.root)
        self.tracker.bind(self.reporter)
        self.has_baseline = False
        self.rescans = 0
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._final_scan = True
        self._thread: threading.Thread | None = None
        self._observer: Any = None
        self._limit_hit = False
        self._next_poll: float | None = None

    @property
    def unlocked(self) -> int:
        """Unlocked writes reported so far."""
        return self.reporter.unlocked

    @property
    def locked(self) -> int:
        """Locked writes reported so far."""
        return self.reporter.locked

    @property
    def files(self) -> TreeScan:
        """The guarded files as last reported."""
        return self.tracker.files

    # Life cycle ---------------------------------------------------------------------------
    def take_baseline(self) -> None:
        """Scan the guarded tree now: every later change will be reported."""
        self.tracker.files = scan(self.repo.toplevel, self.guards, self.matcher)
        self.has_baseline = True

    def start(self, *, delay: float = 0.0) -> None:
        """Start watching in a background thread.

        ``delay`` postpones starting the observer (importing watchdog, adding watches): a
        short command is then covered by the baseline and the final scan alone, which is what
        keeps ``versatil run -- true`` cheap. Needs a baseline when ``delay`` is used.
        """
        self._thread = threading.Thread(
            target=self._run, args=(delay,), name="versatil-monitor", daemon=True
        )
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the watches are in place; raises what made the monitor fail."""
        self.ready.wait(timeout)
        if self.failure is not None:
            raise self.failure
        return self.ready.is_set()

    def stop(self, *, final_scan: bool = True) -> None:
        """Report what is pending, optionally rescan for writes not yet seen, and stop."""
        self._final_scan = final_scan
        self._stopping.set()
        self._queue.put(STOP)
        if self._thread is not None:
            self._thread.join()
        self.matcher.close()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # The worker ---------------------------------------------------------------------------
    def _run(self, delay: float) -> None:
        try:
            if not self.has_baseline:
                self.take_baseline()
            if delay > 0 and self._stopping.wait(delay):
                self._finish()
                return
            self._start_observer()
            # Writes between the baseline and the watches: found by comparing.
            self._rescan(None)
            self._log_life("monitor-started")
            self.ready.set()
            self._loop()
        except BaseException as exc:  # reported to whoever waits on us
            self.failure = exc
            self.ready.set()
            if self.notify is not None:
                self.notify(f"the monitor stopped: {exc}")
        finally:
            self._stop_observer()
            if self.ready.is_set() and self.failure is None:
                self._log_life("monitor-stopped")

    def _log_life(self, kind: str) -> None:
        # Who watched the repository when: `versatil logs collision-detection` shows the
        # hand-overs, and tests synchronise on them. A start that cannot be logged fails the
        # monitor (one sentence), as it always did; a stop that cannot is said and passes.
        self.reporter.log(
            kind, strict=kind == "monitor-started", worktree=self.root, guards=self.guards,
            unlocked=self.unlocked, locked=self.locked, rescans=self.rescans,
        )

    def _loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self._timeout())
            except queue.Empty:
                first = None  # a deadline passed: a held-back file, or a periodic rescan
            if first is STOP:
                self._finish()
                return
            batch = [] if first is None else [first]
            if isinstance(first, Raw):
                batch += self._rest_of_batch()
            stop = STOP in batch
            self._handle(b for b in batch if b is not STOP)
            if stop:
                self._finish()
                return

    def _rest_of_batch(self) -> list[Any]:
        batch: list[Any] = []
        deadline = time.monotonic() + SETTLE_SECONDS
        while len(batch) < MAX_BATCH - 1:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining) if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            batch.append(item)
        return batch

    def _timeout(self) -> float | None:
        deadlines = [d for d in (self.tracker.deadline(), self._next_poll) if d is not None]
        if not deadlines:
            return None
        return max(0.0005, min(deadlines) - time.monotonic())

    def _finish(self) -> None:
        self.locks.refresh()
        leftovers: list[Any] = []
        while True:
            try:
                leftovers.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self._handle(x for x in leftovers if x is not STOP)
        self._stop_observer()
        self.tracker.flush(force=True)
        if self._final_scan:
            self._rescan(None)

    def _handle(self, items: Iterable[Any]) -> None:
        # One look at the lock table per batch: a lock taken before a write is in the table
        # before the write's event can be in this batch.
        self.locks.refresh()
        raws: list[Raw] = []
        overflow = first_limit = False
        for item in items:
            if item is OVERFLOW:
                overflow = True
            elif item is LIMIT:
                first_limit = first_limit or not self._limit_hit
                self._limit_hit = True
            elif isinstance(item, Raw):
                raws.append(item)
        if raws:
            self.tracker.process(raws)
        # Events queued after an overflow are compared with the rescanned tree, so each
        # write is still reported once.
        if overflow:
            self._rescan("the inotify event queue overflowed")
        elif first_limit:
            self._rescan(
                "the inotify watch limit (fs.inotify.max_user_watches) was reached, so some "
                "directories have no watch; rescanning every "
                f"{LIMIT_RESCAN_SECONDS:g} s from now on"
            )
        elif self._next_poll is not None and time.monotonic() >= self._next_poll:
            self._rescan(None, periodic=True)
        self.tracker.flush()

    def _rescan(self, reason: str | None, *, periodic: bool = False) -> None:
        """Compare the tree with the last scan and report the differences."""
        fresh = scan(self.repo.toplevel, self.guards, self.matcher)
        self.locks.refresh()
        if reason is not None:
            self.rescans += 1
            if self.notify is not None:
                self.notify(f"{reason}; rescanning the guarded paths for writes it may have lost")
        changes = self.tracker.replace(fresh)
        for path, event in changes:
            self.reporter.report(path, event, rescan=reason is not None or periodic)
        if reason is not None:
            self.reporter.log(
                "rescan", worktree=self.root, reason=reason, changes=len(changes)
            )
            if self.notify is not None:
                self.notify(f"rescan done: {len(changes)} writes found and reported")
        if self._limit_hit:
            self._next_poll = time.monotonic() + LIMIT_RESCAN_SECONDS

    # watchdog -----------------------------------------------------------------------------
    def _start_observer(self) -> None:
        observer = make_observer(self._queue, self.prune)
        for root, recursive in self._watch_roots():
            try:
                observer.schedule(
                    Handler(self._queue), root, recursive=recursive,
                    event_filter=event_filter(),
                )
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    self._queue.put(LIMIT)
                    continue
                raise MonitorError(f"Cannot watch {root}: {exc.strerror or exc}.") from exc
        try:
            observer.start()
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise MonitorError(f"Cannot start watching: {exc.strerror or exc}.") from exc
            # No inotify at all (instance or watch limit): rescans every second instead.
            self._queue.put(LIMIT)
            return
        self._observer = observer

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=10)

    def _watch_roots(self) -> list[tuple[str, bool]]:
        roots: list[tuple[str, bool]] = []
        for guard in self.guards:
            full = self.repo.toplevel if guard == "." else self.repo.toplevel / guard
            # A guarded file, or a path that does not exist yet: watch the nearest directory
            # above it that does, so its creation is seen too.
            while full != self.repo.toplevel and not full.is_dir():
                full = full.parent
            entry = (str(full), True)
            if entry not in roots:
                roots.append(entry)
        return roots

    def prune(self, path: str) -> bool:
        """Whether a directory needs no watch: .git, ignored, or off every guarded path."""
        if path == self.root:
            return False
        rel = self._rel_any(path)
        if rel is None or in_git_dir(rel):
            return True
        if not under(rel, self.guards) and not any(
            g.startswith(rel + "/") for g in self.guards
        ):
            return True
        if os.path.lexists(os.path.join(path, ".git")):
            return True  # a nested repository or a submodule: not part of this tree
        return self.matcher.is_ignored(rel + "/")

    def _rel_any(self, path: str) -> str | None:
        root = self.root
        if path.startswith(root + "/"):
            return path[len(root) + 1 :]
        return None
