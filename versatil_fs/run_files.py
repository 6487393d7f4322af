"""What ``versatil run`` does to the working tree's files, and undoing it when the command fails.

A checkpoint before the command (and every ``checkpoints.interval`` while it runs), the files
it modified under its write locks (a tree scan before and after, the one rule of
:mod:`versatil_fs.monitor.scan`), recorded for ``checkpoint restore --agent``, and, with
``--rollback-on-failure``, those files and nothing else put back, so other agents' work stays.
:mod:`versatil_fs.runner` decides when each happens; this module only does it.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from versatil_fs.errors import VersatilError
from versatil_fs.repo import Repository

if TYPE_CHECKING:
    from versatil_fs.checkpoints import Checkpoints, RestoreResult
    from versatil_fs.config import Config
    from versatil_fs.locks.holders import WriteScope
    from versatil_fs.monitor import IgnoreMatcher
    from versatil_fs.monitor.scan import TreeScan

__all__ = ["RunFiles", "short_command"]


def short_command(command: Sequence[str]) -> str:
    """The command as a shell would show it, cut to 200 characters for a checkpoint message."""
    text = shlex.join(command)
    return text if len(text) <= 200 else text[:197] + "..."


class RunFiles:
    """One run's files: its checkpoints, what it modified, and rolling that back.

    ``say`` prints one line on the run's stderr: every step here is a help to the run, not its
    purpose, so a failure is said and the run goes on with the command's own exit code.
    """

    def __init__(self, repo: Repository, *, agent: str, command: Sequence[str], config: Config,
                 say: Callable[[str], None]) -> None:
        self.repo = repo
        self.agent = agent
        self.label = short_command(command)
        self.config = config
        self.say = say
        self.checkpoints: Checkpoints | None = None
        self.checkpoint_id: str | None = None
        self.matcher: IgnoreMatcher | None = None
        self.locked_paths: list[str] = []
        self.scope: WriteScope | None = None
        self.before: TreeScan | None = None
        self._periodic_stop = threading.Event()
        self._periodic: threading.Thread | None = None

    # Before the command ---------------------------------------------------------------------
    def take_checkpoint(self) -> bool:
        """The checkpoint a rollback goes back to; False when checkpoints are disabled."""
        if not self.config.checkpoints.enabled:
            self.say("checkpoints are disabled (checkpoints.enabled = false): no checkpoint "
                     "is taken and nothing can be rolled back")
            return False
        from versatil_fs.checkpoints import Checkpoints

        self.checkpoints = Checkpoints(self.repo.toplevel)
        record = self.checkpoints.create(f"before versatil run: {self.label}", agent=self.agent,
                                         kind="run")
        self.checkpoint_id = record.id
        self.say(f"checkpoint {record.id} taken before the command")
        return True

    def scan_before(self, locked_paths: list[str], *, scope: WriteScope | None = None) -> None:
        """The signatures of the files under the write locks, to compare with at the end
        (``scope``: which of the files found under ``locked_paths`` the locks cover)."""
        from versatil_fs.monitor.ignore import IgnoreMatcher
        from versatil_fs.monitor.scan import scan

        self.matcher = IgnoreMatcher(self.repo, self.config.guard.ignore)
        self.locked_paths = locked_paths
        self.scope = scope
        if locked_paths:
            self.before = scan(self.repo.toplevel, locked_paths, self.matcher)

    # While it runs --------------------------------------------------------------------------
    def start_periodic_checkpoints(self) -> None:
        if self.checkpoints is None:
            return
        interval = self.config.checkpoints.interval
        self._periodic = threading.Thread(
            target=self._checkpoint_every, args=(interval,), name="versatil-checkpoint",
            daemon=True,
        )
        self._periodic.start()

    def stop_periodic_checkpoints(self) -> None:
        self._periodic_stop.set()
        if self._periodic is not None:
            self._periodic.join()

    def _checkpoint_every(self, interval: float) -> None:
        assert self.checkpoints is not None
        while not self._periodic_stop.wait(interval):
            try:
                # Not pruned here: pruning could drop the checkpoint a rollback goes back to.
                self.checkpoints.create(
                    f"during versatil run: {self.label}", agent=self.agent, prune=False,
                    kind="periodic",
                )
            except VersatilError as exc:
                self.say(f"periodic checkpoint failed: {exc}")

    # Once it has ended ----------------------------------------------------------------------
    def record_modified(self) -> list[str]:
        """The files the command modified under its write locks, recorded in the
        ``collision-detection`` log for ``checkpoint restore --agent``."""
        if self.before is None or self.matcher is None:
            return []
        from versatil_fs.monitor.scan import modified, scan

        after = scan(self.repo.toplevel, self.locked_paths, self.matcher)
        files = modified(self.before, after)
        if self.scope is not None:
            files = self.scope.only_covered(files)  # a glob's files, not its neighbours
        if files:
            from versatil_fs.checkpoints import record_files_modified

            try:
                record_files_modified(self.repo, self.agent, files)
            except VersatilError as exc:
                # The command has run and its files are changed: a full disk on the
                # log must not replace its exit code with one saying nothing was.
                self.say(
                    f"the command's changes stand, but the files it modified could "
                    f"not be recorded for `checkpoint restore --agent`: {exc}"
                )
        return files

    def roll_back(self, exit_code: int, files: list[str]) -> RestoreResult | None:
        """Put ``files`` back as they were at the checkpoint; None when nothing was restored."""
        assert self.checkpoints is not None and self.checkpoint_id is not None
        if not files:
            self.say(f"the command failed (exit {exit_code}); it changed no file under "
                     "its locks, so there is nothing to roll back")
            return None
        try:
            # Still under our locks: nobody can have started on these files in between.
            restored = self.checkpoints.restore(self.checkpoint_id, paths=files, by=self.agent)
        except VersatilError as exc:
            self.say(f"the command failed (exit {exit_code}) and rolling back its "
                     f"files failed: {exc}")
            return None
        shown = ", ".join(restored.changed[:10])
        more = len(restored.changed) - 10
        undo = (
            f"; undo with `versatil checkpoint restore {restored.safety_checkpoint}`"
            if restored.safety_checkpoint else ""
        )
        self.say(
            f"the command failed (exit {exit_code}); rolled back {len(restored.changed)} "
            f"files {self.agent} changed: {shown}{f' and {more} more' if more > 0 else ''}{undo}"
        )
        return restored

    def close(self) -> None:
        if self.matcher is not None:
            self.matcher.close()
