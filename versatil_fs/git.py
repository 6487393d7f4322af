"""The one place that runs git: its environment, its runner, its failure.

Every git command versatil runs goes through here, so that all of them see the same
environment and fail the same way. The API:

* :func:`no_git_env` -- ``os.environ`` (or a given mapping) without the variables that would
  point git at another repository, index or working tree than the one we resolved
  (:data:`LOCATION_VARIABLES`), nor the pathspec-magic switches our literal pathspecs clash
  with.
* :func:`environment` -- what every command gets: :func:`no_git_env` plus
  ``GIT_TERMINAL_PROMPT=0`` (never ask a terminal for credentials) and ``GIT_OPTIONAL_LOCKS=0``
  (a read such as ``status`` or ``diff`` never refreshes and rewrites the user's index), then the
  caller's ``env`` overrides. A variable we mean to set (``GIT_INDEX_FILE`` for a private index,
  ``LC_ALL=C`` for output we parse, ``GIT_FLUSH=1`` for a conversation) is passed that way,
  explicitly, never inherited.
* :func:`run` -- ``git <argv>`` in ``cwd`` to completion, bytes in (``input``) and out; a
  :class:`Result`. ``check=True`` (the default) raises :class:`GitFailed` on a non-zero status.
* :func:`output` -- :func:`run`'s stdout, checked.
* :func:`spawn` -- ``git <argv>`` as a running :class:`subprocess.Popen` (bytes pipes) for
  commands read while they run or fed over time: ``fast-import``, a ``check-ignore --stdin``
  conversation, two commands run side by side.
* :func:`finish` -- wait for a spawned command (``communicate(input)``); a :class:`Result`,
  checked like :func:`run`.
* :class:`GitFailed` (defined in :mod:`versatil_fs.errors`) carries ``argv``, ``returncode``
  (negative: killed by that signal; None: git never started) and ``stderr``; its message is one
  sentence. git missing from PATH is a ``GitFailed`` too, never an ``OSError``.

``argv`` is what follows ``git`` (options such as ``-c x=y`` or ``--literal-pathspecs`` first,
as git wants them). Output is bytes: paths are decoded by the caller, with ``surrogateescape``
where a file name may not be UTF-8.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import IO, NamedTuple

from versatil_fs.errors import GitFailed

__all__ = [
    "LOCATION_VARIABLES",
    "GitFailed",
    "Result",
    "environment",
    "finish",
    "no_git_env",
    "output",
    "run",
    "spawn",
]

# Variables git exports to its hooks, and wrappers export, that redirect a command: in a hook
# git sets GIT_DIR and GIT_INDEX_FILE (for `commit -a`, a temporary index; in a submodule or a
# linked worktree, a git directory that is not the one `cwd` finds), `git --work-tree` exports
# GIT_WORK_TREE, and aliases export GIT_PREFIX. Inherited, they would make our commands read or
# write another index or repository than the one we resolved (pre-commit drops them for the
# same reason: pre-commit/pre-commit#300). GIT_CONFIG_* (`git -c` passed on to a hook) and the
# identity variables are kept: they change settings, not which repository is used.
LOCATION_VARIABLES = frozenset({
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_PREFIX", "GIT_COMMON_DIR",
    "GIT_NAMESPACE", "GIT_CEILING_DIRECTORIES", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
})
# A pathspec switch from the environment: git refuses `--literal-pathspecs` together with
# GIT_GLOB_PATHSPECS or GIT_NOGLOB_PATHSPECS ("incompatible"), and GIT_ICASE_PATHSPECS would make
# a literal name match others. Callers that want literal pathspecs say so themselves.
_PATHSPEC_VARIABLES = frozenset({
    "GIT_GLOB_PATHSPECS", "GIT_NOGLOB_PATHSPECS", "GIT_ICASE_PATHSPECS",
    "GIT_LITERAL_PATHSPECS",
})
_DROPPED = LOCATION_VARIABLES | _PATHSPEC_VARIABLES
# Set for every command (see the module docstring); the caller's overrides come after.
_QUIET = {"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}


class Result(NamedTuple):
    """A finished git command."""

    returncode: int
    stdout: bytes
    stderr: bytes


def no_git_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default ``os.environ``) without the variables that redirect git."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k not in _DROPPED}


def environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a git command runs with: :func:`no_git_env`, the quiet settings, then
    ``env`` (the variables the caller sets on purpose)."""
    result = no_git_env()
    result.update(_QUIET)
    if env:
        result.update(env)
    return result


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None = None,
    stdin: IO[bytes] | int | None = subprocess.PIPE,
    stdout: IO[bytes] | int | None = subprocess.PIPE,
    stderr: IO[bytes] | int | None = subprocess.PIPE,
) -> subprocess.Popen[bytes]:
    """Start ``git <argv>`` in ``cwd``; pipes are bytes. ``GitFailed`` if git cannot start."""
    args = [os.fspath(a) for a in argv]
    try:
        return subprocess.Popen(
            ["git", *args], cwd=cwd, env=environment(env), stdin=stdin, stdout=stdout,
            stderr=stderr,
        )
    except FileNotFoundError:
        if cwd is not None and not os.path.isdir(cwd):
            raise GitFailed(args, None, b"", f"Cannot run git in {os.fspath(cwd)}: no such "
                                             "directory.") from None
        raise GitFailed(args, None, b"", "git is not installed (or not on PATH); versatil "
                                         "needs it for this.") from None
    except OSError as exc:
        raise GitFailed(args, None, b"", f"Cannot run git {' '.join(args[:1])} "
                                         f"({exc.strerror or exc}).") from exc


def finish(
    proc: subprocess.Popen[bytes],
    argv: Sequence[str | os.PathLike[str]],
    input: bytes | None = None,
    *,
    check: bool = True,
) -> Result:
    """Wait for a spawned ``git <argv>`` (feeding it ``input``); ``GitFailed`` on a non-zero
    status when ``check``. A pipe the caller did not ask for reads as ``b""``."""
    out, err = proc.communicate(input)
    result = Result(proc.returncode, out or b"", err or b"")
    if check and result.returncode != 0:
        raise GitFailed([os.fspath(a) for a in argv], result.returncode, result.stderr)
    return result


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> Result:
    """Run ``git <argv>`` in ``cwd`` to completion. Without ``input`` its stdin is /dev/null,
    so git never waits on a terminal."""
    stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL
    proc = spawn(argv, cwd=cwd, env=env, stdin=stdin)
    return finish(proc, argv, input, check=check)


def output(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> bytes:
    """The stdout of ``git <argv>``; ``GitFailed`` unless it succeeds."""
    return run(argv, cwd=cwd, input=input, env=env).stdout
