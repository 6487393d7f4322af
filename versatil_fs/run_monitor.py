"""The repository's monitor while ``versatil run`` lasts: elected, or standing by to take over.

One observer per working tree (:class:`~versatil_fs.monitor.Election`): a run that wins the
election watches the whole repository for writes nobody locked; one that loses waits on a
thread of its own and takes over if the current observer exits first. The child owns the
terminal, so unlocked writes are summed up in one line once the run ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from versatil_fs.errors import VersatilError
from versatil_fs.repo import Repository

if TYPE_CHECKING:
    from versatil_fs.config import Config
    from versatil_fs.monitor import Election, Monitor, Write

__all__ = ["MONITOR_DELAY", "RunMonitor"]

# The command runs this long before the elected wrapper starts its observer; writes before that
# are found by comparing with the snapshot taken before the command started.
MONITOR_DELAY = 0.1


class RunMonitor:
    """Watching the repository for one run; :meth:`join` before the command, :meth:`stop`
    and :meth:`resign` after it, whatever happened."""

    def __init__(self, repo: Repository, *, config: Config, say: Callable[[str], None]) -> None:
        self.repo = repo
        self.config = config
        self.say = say
        self.election: Election | None = None
        self.monitor: Monitor | None = None
        self._guard = threading.Lock()
        self._finishing = False
        self._unlocked_notes: list[str] = []

    def join(self) -> None:
        """Win the election and watch, or stand by on a thread; raises what setting up raised
        (a full disk, an exhausted inotify limit)."""
        from versatil_fs.monitor import Election

        self.election = Election(self.repo)
        if self.election.try_win():
            self._start(baseline=True)
        else:
            threading.Thread(target=self._stand_by, name="versatil-elect", daemon=True).start()

    def _stand_by(self) -> None:
        """Wait to take over as the repository's monitor (the current one exits)."""
        assert self.election is not None
        try:
            self.election.wait_to_win()
        except VersatilError:
            return
        with self._guard:
            if self._finishing:
                self.election.resign()
                return
            self._start(baseline=False)

    def _start(self, *, baseline: bool) -> None:
        from versatil_fs.monitor import Monitor

        self.monitor = Monitor(self.repo, config=self.config, sink=self._note, notify=self.say)
        if baseline:
            self.monitor.take_baseline()
        self.monitor.start(delay=MONITOR_DELAY if baseline else 0.0)

    def _note(self, write: Write) -> None:
        # The child owns the terminal; unlocked writes are summed up at the end instead.
        if write.kind == "unlocked-write":
            self._unlocked_notes.append(write.path)

    def stop(self) -> int:
        """Stop watching after a final scan and sum up; returns the unlocked writes seen."""
        with self._guard:
            self._finishing = True  # a stand-by thread that wins from now on resigns at once
            monitor = self.monitor
        if monitor is None:
            return 0
        monitor.stop(final_scan=True)
        unlocked = monitor.unlocked
        if self._unlocked_notes:
            distinct = sorted(set(self._unlocked_notes))
            more = f" and {len(distinct) - 5} more" if len(distinct) > 5 else ""
            self.say(
                f"{len(self._unlocked_notes)} unlocked writes in the repository during this "
                f"run: {', '.join(distinct[:5])}{more} (see `versatil logs collision-detection`)"
            )
        return unlocked

    def resign(self) -> None:
        if self.election is not None:
            self.election.resign()
