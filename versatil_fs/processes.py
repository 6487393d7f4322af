"""The command's process tree and its signals, for ``versatil run`` and the wave executor.

What it guarantees:

* **The lease's descriptor reaches every descendant.** :class:`ProcessTree` hands the child
  the lease's flocked holder descriptor and the write end of a pipe (``pass_fds``, listed in
  ``$VERSATIL_LEASE_FDS``), and so does everything the child starts, however it detaches; the
  kernel keeps the locks while any of them lives, and the pipe's read end reads end-of-file
  once they have all exited. Enclosing leases' descriptors we inherited (:data:`INHERITED`)
  are passed on with ours.
* **The direct child dies with its parent.** :func:`child_setup` asks for
  ``PR_SET_PDEATHSIG = SIGKILL`` between fork and exec (and checks the parent did not die
  before that), and puts the child's signal mask back.
* **Signals are forwarded once.** :class:`SignalRouter` takes SIGINT, SIGTERM and SIGHUP in one
  thread with ``sigwaitinfo``; one the terminal sent to the whole process group
  (``si_code == SI_KERNEL``) is not sent to the child again, one sent to the parent alone is.
* **Exit codes are a shell's**: 128+N for death by signal N (:func:`exit_code_of`,
  :func:`signal_exit_code`), the one place they are computed.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from versatil_fs import linux

__all__ = [
    "FORWARDED",
    "INHERITED",
    "LEASE_FDS",
    "SI_KERNEL",
    "ProcessTree",
    "SignalRouter",
    "child_setup",
    "exit_code_of",
    "inherited_lease_fds",
    "process_group",
    "signal_exit_code",
]

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SI_KERNEL = 0x80  # siginfo si_code of a signal the kernel itself sent (the terminal driver)
# The descriptors every process started under a lease inherits and should pass on to its own
# children (a program that closes inherited descriptors takes its children out of the lease).
LEASE_FDS = "VERSATIL_LEASE_FDS"


def exit_code_of(returncode: int) -> int:
    """A shell's exit status for a child's ``returncode``: 128+N for death by signal N."""
    return signal_exit_code(-returncode) if returncode < 0 else returncode


def signal_exit_code(signum: int) -> int:
    """The exit status of a process that signal ``signum`` ended (or stopped): 128+N, as a
    shell reports it; the one place the wrapper and the wave executor compute it."""
    return 128 + signum


class ProcessTree:
    """The processes started under a lease, kept under it by two inherited descriptors.

    * The lease's holder descriptor (:meth:`LockManager.lease_descriptor`): its flock proves
      the lease alive, and it belongs to the open file description every inheriting process
      shares, so the kernel keeps the locks while any of them lives, whoever else dies.
    * The write end of a pipe whose read end only we hold: it reads end-of-file once every
      process that inherited the write end has exited, which is how we learn that the command
      left nothing running (no /proc scan, no PID to trust).

    Both are listed in ``$VERSATIL_LEASE_FDS`` for programs that close inherited descriptors
    and want their children kept under the lease (they pass both on). We are such a program
    ourselves: the descriptors of enclosing leases that we inherited (a ``versatil run``
    inside a wave task or inside another run) are passed on with ours, so that what the inner
    command starts stays under the outer locks too.
    """

    def __init__(self, lease_fd: int | None) -> None:
        # os.pipe() descriptors are close-on-exec: only the child we start gets the write end
        # (pass_fds), never a git or a checkpoint process of ours.
        self._read, self._write = os.pipe()
        self._write_open = True
        self.lease_fd = lease_fd

    @property
    def pass_fds(self) -> tuple[int, ...]:
        # With no lock of our own: the pipe alone, to know when they are gone.
        own = (self._write,) if self.lease_fd is None else (self.lease_fd, self._write)
        return (*own, *(fd for fd in INHERITED if fd not in own))

    def export(self, env: dict[str, str]) -> None:
        env[LEASE_FDS] = " ".join(str(fd) for fd in self.pass_fds)

    def started(self) -> None:
        """The child has its copies: ours of the write end must go, or no end-of-file comes."""
        if self._write_open:
            os.close(self._write)
            self._write_open = False

    def empty(self, timeout: float = 0.0) -> bool:
        """Whether every process that inherited the pipe has exited (waits up to ``timeout``)."""
        self.started()
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return False
            try:
                if not os.read(self._read, 4096):
                    return True
            except BlockingIOError:
                pass
            # A descendant wrote to it (nobody should): drained, go on waiting for the end.

    def close(self) -> None:
        self.started()
        if self._read >= 0:
            os.close(self._read)
            self._read = -1


def inherited_lease_fds() -> tuple[int, ...]:
    """The enclosing leases' descriptors listed in ``$VERSATIL_LEASE_FDS`` that we really hold.

    Read once, when this module is imported, before this process opens descriptors of its
    own: a number the parent listed but closed before starting us could otherwise be one of
    ours by now. Only a holder file (``run/leases/*.lease``) or a pipe is passed on.
    """
    found: list[int] = []
    for word in os.environ.get(LEASE_FDS, "").split():
        if not word.isdigit() or int(word) <= 2:
            continue
        fd = int(word)
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISREG(mode):
                target = os.readlink(f"/proc/self/fd/{fd}")
                if not (target.endswith(".lease") and "/run/leases/" in target):
                    continue
            elif not stat.S_ISFIFO(mode):
                continue
        except OSError:
            continue  # closed, or no /proc to tell what it is: not passed on
        found.append(fd)
    return tuple(found)


INHERITED = inherited_lease_fds()


# Signals ----------------------------------------------------------------------------------------
def child_setup(mask: set[int | signal.Signals] | None) -> Callable[[], None]:
    """What the child does between fork and exec: its signal mask back, and die with us."""
    parent = os.getpid()
    die_with_parent = linux.parent_death_signal()  # resolved before the fork: it allocates

    def setup() -> None:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if die_with_parent is not None:
            with contextlib.suppress(OSError):  # refused: the getppid check below still holds
                die_with_parent(signal.SIGKILL)
            # The wrapper may have died before the line above: then no signal will ever come.
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)

    return setup


class SignalRouter:
    """Receives SIGINT/SIGTERM/SIGHUP for the wrapper in one thread, with the sender's siginfo.

    Phases: while the locks are awaited a signal ends the wrapper at once (128+N; nothing is
    held that the kernel will not release); before the child starts it is remembered and the
    child is not started; while the child runs it is forwarded (see the module notes); while
    the wrapper cleans up the first is ignored and a second ends it at once.
    """

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        self.active = (
            threading.current_thread() is threading.main_thread()
            and hasattr(signal, "sigwaitinfo")
        )
        self.child_mask: set[int | signal.Signals] | None = None
        self.pending: int | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._phase = "acquire"
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def __enter__(self) -> SignalRouter:
        if self.active:
            # Before any thread exists, so every thread we start inherits the blocked mask and
            # the kernel can only hand these signals to sigwaitinfo below.
            self.child_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
            threading.Thread(target=self._loop, name="versatil-signals", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.active and self.child_mask is not None:
            # Signals that arrive from now on are the caller's again.
            signal.pthread_sigmask(signal.SIG_SETMASK, self.child_mask)

    def running(self, child: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._child, self._phase = child, "running"

    def finishing(self) -> None:
        with self._lock:
            self._phase = "finishing"

    def _loop(self) -> None:
        wanted = set(FORWARDED)
        while not self._stop.is_set():
            # A timeout only so that the thread ends after the run; signals wake it at once.
            info = signal.sigtimedwait(wanted, 0.25)
            if info is None or self._stop.is_set():
                continue
            self._deliver(info)

    def _deliver(self, info: Any) -> None:
        signum = int(info.si_signo)
        with self._lock:
            phase, child = self._phase, self._child
            if phase == "acquire":
                self._say(f"interrupted ({signal.Signals(signum).name}) while waiting for "
                              "locks; the command was not run")
                os._exit(signal_exit_code(signum))
            if phase == "acquire-done" or child is None:
                self.pending = signum
                return
            if phase == "finishing":
                if self.pending is not None:
                    os._exit(signal_exit_code(signum))
                self.pending = signum
                return
        if info.si_code == SI_KERNEL and os.getpgid(0) == process_group(child.pid):
            return  # the terminal sent it to our whole process group: the child has it
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    def acquired(self) -> None:
        with self._lock:
            self._phase = "acquire-done"


def process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
