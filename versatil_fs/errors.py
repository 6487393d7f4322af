"""One exception tree for every failure a user can act on.

The CLI maps each class to an exit code and prints ``str(error)`` as one sentence on stderr;
anything that is not a ``VersatilError`` is a bug and keeps its traceback (with ``--debug``).
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "Blocker",
    "CommandNotExecutable",
    "CommandNotFound",
    "ConfigError",
    "DamagedTable",
    "Deadlock",
    "GitFailed",
    "LockConflict",
    "MonitorError",
    "NotARepository",
    "NotRegularFile",
    "PlanError",
    "Refused",
    "RestoreIncomplete",
    "StateError",
    "Stopped",
    "StoreUnavailable",
    "UsageError",
    "VersatilError",
]


class VersatilError(Exception):
    """Base of every error versatil-fs raises on purpose.

    ``cli_message`` is the same sentence in the command line's words, when they differ from
    the Python API's (``--wait`` for ``wait=``); :meth:`for_cli` gives whichever applies.
    """

    exit_code = 1
    cli_message: str | None = None

    def for_cli(self) -> str:
        """The sentence the command line prints (on stderr, and as ``message`` in --json)."""
        return self.cli_message or str(self)

    def details(self) -> dict[str, Any]:
        """The error's own data for ``--json`` (holders, cycle, argv...); none by default."""
        return {}

    def as_data(self) -> dict[str, Any]:
        """The error as one JSON-ready object: what every ``--json`` command prints on stdout
        when it is refused or fails (``error`` is the kind: the class name)."""
        return {
            "error": type(self).__name__, "message": self.for_cli(),
            "exit_code": self.exit_code, **self.details(),
        }


class UsageError(VersatilError):
    """Bad usage or bad input: a malformed file, an unknown id, a path outside the repo."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file or variable that cannot be used as it is."""


class NotARepository(UsageError):
    """The directory is not inside a git working tree."""


class StateError(UsageError):
    """The state directory cannot be used safely (foreign owner, planted symlink, no space)."""


class NotRegularFile(StateError):
    """A state file is a FIFO, a device, a socket or a directory instead of a regular file.

    Raised before anything is read from it (it is opened ``O_NONBLOCK`` and checked with
    ``fstat``), so it never hangs. The lock store treats such a table as damaged (moved aside,
    rebuilt); everywhere else it is one sentence and exit 2. ``path`` names the file.
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path

    def details(self) -> dict[str, Any]:
        return {"path": self.path}


class StoreUnavailable(UsageError):
    """The lock store's server cannot be reached or used (down, restarting, refusing us).

    The message names the server by its URL with the password hidden; ``url`` holds that
    same safe form for ``--json``.
    """

    def __init__(self, message: str, url: str = "") -> None:
        super().__init__(message)
        self.url = url

    def details(self) -> dict[str, Any]:
        return {"url": self.url}


class Refused(VersatilError):
    """The thing asked for was refused: a conflict, a blocked commit, a failed task."""

    exit_code = 1


@dataclass(frozen=True)
class Blocker:
    """Who stood in a request's way: an agent and the id of its lease (or of its queued
    request, when ``queued``: a waiter ahead in the queue holds nothing yet)."""

    agent: str
    lease: str
    queued: bool = False


class LockConflict(Refused):
    """A lock could not be had within its wait budget; the message names the holder.

    As data: ``holders`` (the :class:`Blocker` s in the way, first the one the message names),
    ``resource`` (the contested resource), ``since`` (wall-clock seconds: when that holder got
    it, or started waiting) and ``until`` (when a shell lease expires; None while the holding
    process lives, or when unknown). All empty for a busy table or a lock not held at all.

    ``str()`` names the Python API's parameter (``wait=``); ``cli_message``, when given, is
    the sentence the command line prints instead (naming ``--wait``).
    """

    def __init__(
        self,
        message: str,
        *,
        holders: Sequence[Blocker] = (),
        resource: str = "",
        since: float | None = None,
        until: float | None = None,
        cli_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.holders = tuple(holders)
        self.resource = resource
        self.since = since
        self.until = until
        self.cli_message = cli_message

    def details(self) -> dict[str, Any]:
        return {
            "holders": [asdict(holder) for holder in self.holders],
            "resource": self.resource, "since": self.since, "until": self.until,
        }


class Deadlock(Refused):
    """Waiting would close a cycle of waiters; the message names the cycle, and ``cycle``
    lists its agents in waiting order, each waiting for the next, closed by the first again
    (``["a", "b", "a"]``: the message's ``a -> b -> a``)."""

    def __init__(self, message: str, *, cycle: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.cycle = list(cycle)

    def details(self) -> dict[str, Any]:
        return {"cycle": list(self.cycle)}


class DamagedTable(Exception):
    """The lock table file did not parse; carries why, for the one report the user sees."""


class Stopped(Exception):
    """A wave run was interrupted while a task waited for its locks or its start record.

    Internal to the wave executor, like :class:`DamagedTable`: the task it stops is recorded
    as not started, and the user sees the interrupted run, never this exception.
    """


class PlanError(UsageError):
    """A plan that cannot be run as written; the message names the file, line and task."""


class MonitorError(VersatilError):
    """The monitor cannot watch (no git, no inotify, an unreadable repository)."""


class CommandNotFound(VersatilError):
    """The command to run does not exist (exit 127, as a shell would)."""

    exit_code = 127


class CommandNotExecutable(VersatilError):
    """The command exists but cannot be executed (exit 126, as a shell would)."""

    exit_code = 126


class GitFailed(VersatilError):
    """A git command failed for a reason outside our control (a broken repository, full disk).

    ``argv`` is the command after ``git``, ``returncode`` its exit status (negative: the signal
    that killed it; None: it never ran), ``stderr`` what it said. ``str()`` is one sentence
    built from them unless a ``message`` is given.
    """

    def __init__(
        self,
        argv: Sequence[str] = (),
        returncode: int | None = None,
        stderr: bytes = b"",
        message: str | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(message if message is not None else _git_sentence(self))

    def details(self) -> dict[str, Any]:
        return {
            "argv": list(self.argv), "returncode": self.returncode,
            "stderr": self.stderr.decode("utf-8", "replace"),
        }


def _git_sentence(exc: GitFailed) -> str:
    # Named by its subcommand and first argument: the options before it (`-c key=value`,
    # `--literal-pathspecs`) are ours, not what the user needs to read.
    words = list(exc.argv)
    while words and words[0].startswith("-"):
        del words[: 2 if words[0] in ("-c", "-C") else 1]
    command = "git " + " ".join(words[:2])
    if exc.returncode is not None and exc.returncode < 0:
        # Killed by a signal, so git said nothing: name the signal, and what SIGXFSZ means.
        try:
            name = signal.Signals(-exc.returncode).name
        except ValueError:
            name = f"signal {-exc.returncode}"
        hint = (" (it reached the file-size limit: is the disk or a quota full?)"
                if -exc.returncode == signal.SIGXFSZ else "")
        return f"{command} was killed by {name}{hint}."
    detail = " ".join(
        line.strip() for line in exc.stderr.decode("utf-8", "replace").splitlines()
        if line.strip() and not line.startswith("hint:")
    )
    return f"{command} failed: {detail or 'no message'}".rstrip(".")


class RestoreIncomplete(VersatilError):
    """A restore stopped part-way: the message names what was and was not restored, and the
    safety checkpoint that undoes it."""

    def __init__(self, message: str, *, restored: list[str], not_restored: list[str],
                 safety: str | None) -> None:
        super().__init__(message)
        self.restored = restored
        self.not_restored = not_restored
        self.safety = safety

    def details(self) -> dict[str, Any]:
        return {
            "restored": list(self.restored), "not_restored": list(self.not_restored),
            "safety": self.safety,
        }
