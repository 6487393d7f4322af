"""Who an agent session is: its agent name, and the harness process whose life is the
session's.

Stdlib only: the hook process finds its harness here before every call.

**The agent name** (issue 14's rule, in this order): ``VERSATIL_AGENT`` in the harness's
environment; else ``[agents] names.<harness>``, then ``[agents] name`` in the configuration;
else ``<harness>:<first 8 characters of the session id>`` (``claude:1a2b3c4d``). A subagent
(Claude Code's ``agent_id``) is part of its session's agent, unless ``[agents] subagents =
"own"`` makes it ``<agent>/<first 8 of agent_id>``.

**The harness process.** Every harness documented in :mod:`versatil_fs.agents.harnesses` runs
its hooks as child processes (usually through a shell: ``sh -c "<command>"``), so the harness
is the hook's nearest ancestor that is not a shell or a launcher (:data:`LAUNCHERS`), found
through ``/proc/<pid>/stat``. The pid is paired with the process's start time, so a pid reused
after the harness died never passes for it. ``VERSATIL_HARNESS_PID`` names it outright, for a
harness that runs hooks through a long-lived helper whose life is not the session's. Where
there is no ``/proc`` (not Linux) no harness is found and the hook decides in-process with
time-limited leases instead (see :mod:`versatil_fs.agents.client`).

What the harness process is, per harness (each page documents hooks as commands the harness
runs with the payload on stdin; the process tree is what a hook sees above it):

* Claude Code (https://code.claude.com/docs/en/hooks): the ``claude`` process of the session;
  it exits with the session, so its keeper and claims end with it.
* Codex CLI (https://developers.openai.com/codex/hooks): the ``codex`` process; Codex has no
  session-end event, so this is how a Codex session's claims end.
* Gemini CLI (https://geminicli.com/docs/hooks/reference): the ``gemini`` (node) process.
* Cursor (https://cursor.com/docs/hooks) and Cline
  (https://docs.cline.bot/features/hooks/hook-reference): the editor's agent/extension host,
  which hosts several conversations or tasks: each is a session of its own (by
  ``conversation_id`` / ``taskId``) ended by its own end event, and all of them end when the
  editor's process does.
* GitHub Copilot CLI (https://docs.github.com/en/copilot/reference/hooks-configuration): the
  ``copilot`` process.
"""

from __future__ import annotations

import os

from versatil_fs import linux

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["LAUNCHERS", "agent_name", "ancestors", "find_harness", "short_id"]

# Programs that stand between a harness and its hook without being it: shells, and launchers
# that exec or wait for the command they are given.
LAUNCHERS = frozenset({
    "sh", "bash", "dash", "zsh", "fish", "ksh", "mksh", "ash", "busybox", "tcsh", "csh",
    "env", "timeout", "nice", "nohup", "stdbuf", "setsid", "time", "xargs", "sudo", "doas",
    "uv", "uvx", "pipx", "versatil",
})
_MAX_DEPTH = 32  # a chain of launchers deeper than this is not a hook's


def find_harness(env: Mapping[str, str]) -> tuple[int, int] | None:
    """``(pid, start)`` of the harness process running this hook, or None if none is found."""
    named = env.get("VERSATIL_HARNESS_PID", "").strip()
    if named:
        if not named.isdigit():
            return None
        info = linux.process_info(int(named))
        return (int(named), info[1]) if info is not None else None
    for pid, start, name in _chain():
        if name in LAUNCHERS or (name.startswith("python") and _runs_versatil(pid)):
            continue
        return pid, start
    return None


def ancestors() -> list[tuple[int, int]]:
    """``(pid, start)`` of each process above this one, nearest first, up to (not with) init."""
    return [(pid, start) for pid, start, _ in _chain()]


def _chain() -> list[tuple[int, int, str]]:
    found = []
    pid = os.getppid()
    for _ in range(_MAX_DEPTH):
        if pid <= 1:
            break  # init (or none): an orphan's harness is already gone
        info = linux.process_info(pid)
        if info is None:
            break
        parent, start, name = info
        found.append((pid, start, name))
        pid = parent
    return found


def _runs_versatil(pid: int) -> bool:
    # `python -m versatil_fs agent-hook` (a configuration written where no `versatil` script
    # was on the PATH), or the `versatil` script run by an explicit interpreter, is a launcher
    # too; any other Python program is a harness. Only the program's own position counts (the
    # module after -m, the code after -c, or the script), never its later arguments.
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            args = handle.read(65536).split(b"\0")[1:]
    except OSError:
        return False
    while args and args[0].startswith(b"-") and args[0] not in (b"-m", b"-c"):
        args = args[1:]  # interpreter options (-u, -X dev, ...) before the program
    if not args:
        return False
    if args[0] in (b"-m", b"-c"):
        if len(args) < 2:
            return False
        return args[1] == b"versatil_fs" if args[0] == b"-m" else b"versatil_fs" in args[1]
    return args[0] == b"versatil" or args[0].endswith(b"/versatil")


def short_id(text: str) -> str:
    """The first 8 characters of an id that can stand in an agent name (letters, digits,
    ``-`` and ``_``; anything else dropped), or ``session`` if none is left."""
    kept = "".join(c for c in text if c.isascii() and (c.isalnum() or c in "-_"))
    return kept[:8] or "session"


def agent_name(
    harness: str,
    session_id: str,
    agent_id: str,
    env: Mapping[str, str],
    *,
    name: str = "",
    names: Mapping[str, str] | None = None,
    subagents: str = "session",
) -> str:
    """The agent a hook call acts for (the rule in the module docstring)."""
    base = (
        env.get("VERSATIL_AGENT", "").strip()
        or (names or {}).get(harness, "").strip()
        or name.strip()
        or f"{harness}:{short_id(session_id)}"
    )
    if subagents == "own" and agent_id:
        return f"{base}/{short_id(agent_id)}"
    return base
