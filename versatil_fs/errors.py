"""One exception tree for every failure a user can act on.

The CLI maps each class to an exit code and prints ``str(error)`` as one sentence on stderr;
anything that is not a ``VersatilError`` is a bug and keeps its traceback (with ``--debug``).
"""

from __future__ import annotations


class VersatilError(Exception):
    """Base of every error versatil-fs raises on purpose."""

    exit_code = 1


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


class Refused(VersatilError):
    """The thing asked for was refused: a conflict, a blocked commit, a failed task."""

    exit_code = 1


class LockConflict(Refused):
    """A lock could not be had within its wait budget; the message names the holder."""


class Deadlock(Refused):
    """Waiting would close a cycle of waiters; the message names the cycle."""
