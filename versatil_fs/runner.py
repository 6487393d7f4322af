"""The run wrapper: ``versatil run --agent NAME --lock RES... -- CMD``.

It takes every lock at once (waiting in the queue), runs CMD with ``VERSATIL_AGENT`` and
``VERSATIL_FENCE`` (the lease's fencing token, when it took locks) set and the terminal
untouched, watches what it writes, releases everything once CMD (and whatever it started) has
ended, however it ends, and exits with CMD's code (128+N when signal N killed it,
127 when CMD cannot be found, 1 when the locks were refused and CMD never ran).

Choices, and why:

* **The terminal is the child's.** stdin, stdout and stderr are inherited, not piped, and the
  child stays in our process group, so an interactive agent (``claude``) reads the keyboard,
  draws its screen and receives Ctrl-C / Ctrl-Z from the terminal exactly as without us.
* **Signals are forwarded once.** SIGINT, SIGTERM and SIGHUP are blocked in every thread and
  taken with ``sigwaitinfo`` by one thread, which sees who sent each: one the terminal sent
  (``si_code == SI_KERNEL``) went to the whole foreground process group, child included, so it
  is not sent again (a second Ctrl-C would make many agents quit); one sent with ``kill`` to the
  wrapper alone is forwarded to the child. The wrapper itself never dies of them: it waits for
  the child and exits with the child's code. (A ``kill`` to the whole process group reaches the
  child twice: from the sender and from us; siginfo cannot tell the two apart.)
* **A lock is held for exactly as long as any process started under it lives.** The child
  inherits the lease's flocked holder descriptor (``pass_fds``), and so does everything it
  starts, however it detaches (a subshell, ``setsid``, ``nohup``, a double fork): a flock
  belongs to the open file description, which all of them share, so the kernel keeps the
  locks while any of them holds it, and waiters stay blocked. If the wrapper is killed with
  ``kill -9`` the locks therefore stay with the processes still running and end, for the next
  waiter within a moment, when the last of them exits. Chosen over the alternatives because
  it needs nothing the wrapper must survive to do: a child subreaper that kills every
  descendant dies with the wrapper, a process group does not hold ``setsid`` children, and
  cgroups need a delegation we rarely have. A pipe's write end travels beside the descriptor;
  its read end, which only the wrapper holds, reads end-of-file once they have all exited,
  which is how the wrapper knows whether the command left processes behind: if it did, it
  exits with the command's code but leaves them the locks (not released, not rolled back,
  said in one line). Both descriptors are listed in ``$VERSATIL_LEASE_FDS``. **The gap:** a
  program that closes the descriptors it inherited (daemons closing everything above 2,
  Python's ``subprocess`` by default) takes its own children out from under the lock, unless
  it passes those two on.
* **The command itself dies with the wrapper.** The child asks the kernel for
  ``PR_SET_PDEATHSIG = SIGKILL`` before ``exec``: its outcome can no longer be recorded,
  so it must not go on. SIGKILL rather than SIGTERM because a child that traps SIGTERM would
  keep running. The signal reaches the direct child only; what it started keeps the locks
  as above.
* **A name nobody gave is said aloud.** Without ``--agent`` or ``$VERSATIL_AGENT`` the agent
  is ``git config versatil.agent`` or the login name, the same for every such run, and the
  lock manager never makes an agent wait for itself: a run with locks warns in one line.
* **What the run modified** is every file under its write locks whose signature (mode, size,
  mtime, inode) differs between start and end: deterministic, and independent of whether this
  process or another is the repository's elected monitor. Those files go to the
  ``collision-detection`` log (``files-modified``) for ``checkpoint restore --agent``, and are
  what ``--rollback-on-failure`` restores — nothing else, so other agents' work stays.
* **Start-up stays cheap.** Without locks no lock manager is built; watchdog is imported only
  when the run is the elected monitor *and* the command is still running after a moment:
  a short command is covered by a snapshot before it and a scan after it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from versatil_fs.errors import (  # CommandNot*: re-exported, the classes moved to errors.py
    CommandNotExecutable,
    CommandNotFound,
    NotARepository,
    UsageError,
    VersatilError,
)
from versatil_fs.locks.fencing import FENCE_ENV
from versatil_fs.processes import (  # re-exported: they lived here, the waves import them
    FORWARDED,
    INHERITED,
    LEASE_FDS,
    SI_KERNEL,
    ProcessTree,
    SignalRouter,
    child_setup,
    exit_code_of,
    signal_exit_code,
)
from versatil_fs.repo import Repository, default_agent, git_config
from versatil_fs.run_files import RunFiles
from versatil_fs.run_monitor import MONITOR_DELAY, RunMonitor

if TYPE_CHECKING:
    from versatil_fs.config import Config
    from versatil_fs.locks.holders import WriteScope
    from versatil_fs.locks.manager import Lease, LockManager

__all__ = [
    "DESCENDANT_GRACE",
    "FORWARDED",
    "LEASE_FDS",
    "MONITOR_DELAY",
    "SI_KERNEL",
    "CommandNotExecutable",
    "CommandNotFound",
    "ProcessTree",
    "RunResult",
    "exit_code_of",
    "run",
    "signal_exit_code",
]

# Once the command has exited, how long the processes it started may take to exit as well
# (a shell's last children are often a moment behind it) before the locks are left to them.
DESCENDANT_GRACE = 0.1


@dataclass
class RunResult:
    """How a run ended, for the Python API (the CLI only uses ``exit_code``)."""

    exit_code: int
    agent: str
    files_modified: list[str] = field(default_factory=list)
    checkpoint: str | None = None
    rolled_back: list[str] = field(default_factory=list)
    safety_checkpoint: str | None = None
    unlocked_writes: int = 0  # seen by this run's own monitor, when it was the elected one
    # The command left processes running, and the locks to them: they end when those exit.
    locks_left_running: bool = False



def run(
    command: Sequence[str],
    *,
    agent: str | None = None,
    writes: Sequence[str] = (),
    reads: Sequence[str] = (),
    wait: float | None = None,
    checkpoint: bool = False,
    rollback_on_failure: bool = False,
    monitor: bool = True,
    cwd: str | os.PathLike[str] | None = None,
    err: TextIO | None = None,
) -> RunResult:
    """Run ``command`` under the locks, as ``versatil run`` does; see the module notes.

    Raises :class:`LockConflict` / :class:`Deadlock` (nothing ran), :class:`CommandNotFound`
    (exit 127) and :class:`CommandNotExecutable` (126). Signal forwarding needs the main
    thread; from another thread the child is still run, but signals reach only the caller.
    """
    return _Run(
        list(command), agent=agent, writes=list(writes), reads=list(reads), wait=wait,
        checkpoint=checkpoint, rollback=rollback_on_failure, monitor=monitor,
        cwd=Path(cwd).absolute() if cwd is not None else Path.cwd(), err=err or sys.stderr,
    ).execute()


class _Run:
    def __init__(
        self,
        command: list[str],
        *,
        agent: str | None,
        writes: list[str],
        reads: list[str],
        wait: float | None,
        checkpoint: bool,
        rollback: bool,
        monitor: bool,
        cwd: Path,
        err: TextIO,
    ) -> None:
        if not command:
            raise UsageError("Nothing to run: give the command after `--`.")
        if wait is not None and wait < 0:
            raise UsageError(f"--wait must be zero or more seconds, got {wait}.")
        self.command = command
        self.writes, self.reads = writes, reads
        self.wait = wait
        self.want_checkpoint = checkpoint or rollback  # a rollback needs something to go back to
        self.rollback = rollback
        self.want_monitor = monitor
        self.cwd = cwd
        self.err = err
        self.repo = _find_repo(cwd)
        self.agent, defaulted_from = _agent_name(agent, self.repo)
        if defaulted_from and (writes or reads):
            # Every run that names no agent gets this same name, and the lock manager never
            # makes an agent wait for itself: two such runs would not exclude each other.
            self.say(
                f"no agent name given (--agent or $VERSATIL_AGENT): running as {self.agent!r} "
                f"from {defaulted_from}, and runs under one name never exclude each other"
            )
        self._config: Config | None = None
        self.manager: LockManager | None = None
        self.lease: Lease | None = None
        self.tree: ProcessTree | None = None
        self.handed_over = False  # the locks were left to processes the command started
        self.locked_paths: list[str] = []
        self.write_scope: WriteScope | None = None
        self.files: RunFiles | None = None
        self.watch: RunMonitor | None = None

    # Helpers ------------------------------------------------------------------------------
    @property
    def config(self) -> Config:
        if self._config is None:
            from versatil_fs import config

            self._config = config.load(self.repo.toplevel if self.repo else None)
        return self._config

    def say(self, message: str) -> None:
        self.err.write(f"versatil: {message}\n")
        self.err.flush()

    # The whole run ------------------------------------------------------------------------
    def execute(self) -> RunResult:
        executable = _resolve_command(self.command[0], self.cwd)
        result = RunResult(exit_code=1, agent=self.agent)
        with SignalRouter(self.say) as signals:
            try:
                self._acquire()
                signals.acquired()
                self._prepare()
                if signals.pending is not None:
                    # Asked to stop before the command started: do not start it.
                    result.exit_code = signal_exit_code(signals.pending)
                    return result
                child = self._spawn(executable, signals)
                signals.running(child)
                if self.files is not None:
                    self.files.start_periodic_checkpoints()
                returncode = child.wait()
                signals.finishing()
                result.exit_code = exit_code_of(returncode)
                self._check_descendants()
                result.locks_left_running = self.handed_over
            finally:
                if self.tree is not None:
                    self.tree.close()
                self._finish(result)
        return result

    def _check_descendants(self) -> None:
        """Whether processes the command started outlive it; if so the locks stay theirs."""
        if self.tree is None or self.tree.empty(DESCENDANT_GRACE):
            return
        self.handed_over = True
        self.say(
            "the command exited, but processes it started are still running: its locks stay "
            f"held until the last of them exits (`versatil release --agent "
            f"{shlex.quote(self.agent)}` "
            "frees them, leaving those processes unguarded)"
        )

    def _acquire(self) -> None:
        if not (self.writes or self.reads):
            return
        if not self.config.collision_detection.enabled:
            self.say("collision detection is disabled (collision_detection.enabled = false); "
                     "running without locks")
            return
        from versatil_fs.locks.holders import WriteScope
        from versatil_fs.locks.manager import LockManager

        manager = self.manager = LockManager(repo=self.cwd, config=self.config)
        # Told once, the moment the request starts to wait, naming whom it waits for.
        self.lease = manager.acquire(
            self.writes, reads=self.reads, agent=self.agent, wait=self.wait,
            owner="process", on_wait=lambda waiting: self.say(waiting.sentence()),
        )
        # Where its write locks' files are: a glob's literal directories (git lists files by
        # path), the files found there kept only when a lock covers them (see WriteScope).
        self.write_scope = WriteScope(self.lease.claims)
        self.locked_paths = self.write_scope.roots

    def _prepare(self) -> None:
        """Everything that must exist before the command starts: checkpoint, snapshots."""
        if self.repo is None:
            return
        files = self.files = RunFiles(
            self.repo, agent=self.agent, command=self.command, config=self.config, say=self.say
        )
        if self.want_checkpoint and not files.take_checkpoint():
            self.want_checkpoint = self.rollback = False
        if self.locked_paths or self.want_monitor:
            files.scan_before(self.locked_paths, scope=self.write_scope)
        if self.want_monitor:
            self.watch = RunMonitor(self.repo, config=self.config, say=self.say)
            try:
                self.watch.join()
            except (OSError, VersatilError) as exc:
                # Watching is a help, not the run's purpose: a full disk or an exhausted
                # inotify limit while setting it up must not keep the command from running.
                detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                self.say(f"not watching the repository for unlocked writes during this run "
                         f"({detail})")
                self.want_monitor = False

    # The child ----------------------------------------------------------------------------
    def _spawn(self, executable: str, signals: SignalRouter) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["VERSATIL_AGENT"] = self.agent
        if self.lease is not None:
            # The run's own token, for the commit guard and restore: a command whose locks
            # were taken from it (`versatil release --force`) is refused once another agent's
            # newer lock covers its files. Without locks of its own an enclosing lease's token,
            # like its descriptors, goes on unchanged.
            env[FENCE_ENV] = str(self.lease.fence)
        lease_fd = self.manager.lease_descriptor() if self.manager and self.lease else None
        if lease_fd is not None:
            self.tree = ProcessTree(lease_fd)
            self.tree.export(env)
        try:
            child = subprocess.Popen(
                [executable, *self.command[1:]],
                cwd=self.cwd, env=env, close_fds=True, restore_signals=True,
                # Without locks of our own, an enclosing lease's descriptors still go on.
                pass_fds=self.tree.pass_fds if self.tree else INHERITED,
                preexec_fn=child_setup(signals.child_mask),
            )
        except FileNotFoundError as exc:
            raise CommandNotFound(f"{self.command[0]}: command not found.") from exc
        except PermissionError as exc:
            raise CommandNotExecutable(
                f"{self.command[0]}: permission denied (is it executable?)."
            ) from exc
        except OSError as exc:
            raise CommandNotExecutable(
                f"{self.command[0]}: cannot run it ({exc.strerror or exc})."
            ) from exc
        if self.tree is not None:
            self.tree.started()
        return child

    # However it ended ---------------------------------------------------------------------
    def _finish(self, result: RunResult) -> None:
        """Record, roll back if asked, release, stop watching: each step even if one fails.

        The locks go as soon as the run's own work is settled (its files recorded and, on
        failure, rolled back under the locks), before the monitor's final scan: the next agent
        queued for them starts that much sooner, and a write it makes is still attributed to
        it by the lock table.
        """
        files = self.files
        if files is not None:
            files.stop_periodic_checkpoints()
        try:
            try:
                if files is not None:
                    self._settle_files(files, result)
            finally:
                self._release()
        finally:
            try:
                if self.watch is not None:
                    result.unlocked_writes = self.watch.stop()
            finally:
                if files is not None:
                    files.close()
                if self.watch is not None:
                    self.watch.resign()

    def _settle_files(self, files: RunFiles, result: RunResult) -> None:
        """What the command modified, recorded; rolled back when it failed and asked to be."""
        result.files_modified = files.record_modified()
        result.checkpoint = files.checkpoint_id
        if not (self.rollback and result.exit_code != 0 and files.checkpoint_id):
            return
        if self.handed_over:
            self.say(f"the command failed (exit {result.exit_code}), but its files "
                     "are not rolled back: processes it started may still write")
            return
        restored = files.roll_back(result.exit_code, result.files_modified)
        if restored is not None:
            result.rolled_back = restored.changed
            result.safety_checkpoint = restored.safety_checkpoint

    def _release(self) -> None:
        if self.handed_over and self.manager is not None:
            self.manager.hand_over()
        elif self.lease is not None:
            try:
                self.lease.release()
            except VersatilError as exc:
                # A full disk: the table keeps the grant, but its flock goes with this
                # process, so it is dead and reclaimed at the next look. The command's
                # exit code stays the run's.
                self.say(f"the locks end as this process exits; releasing them in "
                         f"the table failed: {exc}")


def _agent_name(given: str | None, repo: Repository | None) -> tuple[str, str]:
    """The run's agent, and where it came from when nobody named it ("" when somebody did:
    ``--agent`` or ``$VERSATIL_AGENT``, which each agent's own environment sets)."""
    if given:
        return given, ""
    if os.environ.get("VERSATIL_AGENT", "").strip():
        return default_agent(repo), ""
    configured = git_config("versatil.agent", repo)
    if configured:
        return configured, "git config versatil.agent"
    return default_agent(repo), "the login name"


def _find_repo(cwd: Path) -> Repository | None:
    try:
        return Repository.find(cwd)
    except NotARepository:
        return None


def _resolve_command(name: str, cwd: Path) -> str:
    """The program to execute, found as ``execvp`` would; errors say what a shell would."""
    if "/" in name:
        path = Path(name) if os.path.isabs(name) else cwd / name
        if not path.exists():
            raise CommandNotFound(f"{name}: command not found (no such file).")
        if path.is_dir() or not os.access(path, os.X_OK):
            raise CommandNotExecutable(f"{name}: permission denied (is it executable?).")
        return str(path)
    found = shutil.which(name, path=os.environ.get("PATH", os.defpath))
    if found is None:
        raise CommandNotFound(f"{name}: command not found.")
    return found

