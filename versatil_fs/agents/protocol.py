"""What a harness hook call means, as plain data: the one language between the per-harness
adapters (``harnesses.py``) and the decision core.

Stdlib only, on purpose: the hook process imports this before every edit an agent makes, and
its start-up is the latency the agent waits for (see bench/bench_agents.py).

An adapter turns a harness's own payload into a :class:`HookCall` and a :class:`Verdict` back
into that harness's own reply (:class:`Reply`: what to print, where, and the exit code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["HARNESSES", "BadPayload", "Event", "HookCall", "Reply", "Verdict"]

from versatil_fs.agents.wire import HARNESSES  # the one list (wire.py says why it lives there)

# What a hook call is about, whatever the harness calls it:
# - "session-start" / "session-end": the agent's session begins / ends;
# - "pre-edit" / "post-edit": a tool is about to write / has written the files in `paths`;
# - "pre-shell" / "post-shell": a shell tool (no paths known) is about to run / has run;
# - "other": anything else (a read, a search, a prompt) — nothing to decide.
Event = Literal[
    "session-start", "session-end", "pre-edit", "post-edit", "pre-shell", "post-shell", "other"
]


class BadPayload(ValueError):
    """The harness sent something this adapter cannot read (not JSON, a field missing or of the
    wrong type). The message is one sentence, safe to show to the agent."""


@dataclass(frozen=True)
class HookCall:
    """One hook invocation, in harness-neutral terms."""

    harness: str  # one of HARNESSES
    event: Event
    session_id: str  # the harness's session (conversation, task) id; never empty
    cwd: str  # the directory the agent works in (absolute), from the payload or the process
    tool: str = ""  # the harness's tool name, as sent ("Edit", "apply_patch", ...)
    # The files the tool will write (pre-edit) or wrote (post-edit), as sent: absolute, or
    # relative to `cwd`. A move contributes both its source and its destination; a delete its
    # path. Empty for every other event.
    paths: tuple[str, ...] = ()
    agent_id: str = ""  # a subagent's own id inside the session (Claude Code `agent_id`)
    # The file the harness lets a SessionStart hook append `export NAME=value` lines to, so the
    # agent's own shell commands see them (Claude Code's $CLAUDE_ENV_FILE); "" if none.
    env_file: str = ""
    detail: str = ""  # SessionStart `source` / SessionEnd `reason`, for the log


@dataclass(frozen=True)
class Verdict:
    """What versatil has to say about one hook call. All empty: say nothing (exit 0, no
    decision) — an explicit "allow" would skip the user's own permission prompt in some
    harnesses, and a lock guard must never widen what an agent may do."""

    # Non-empty: refuse the tool call; this is the reason shown to the agent (one or two
    # sentences: which file, who holds it, since/until, what to do).
    deny: str = ""
    # Something to tell the agent without refusing anything (who holds what at session start;
    # a shell command that changed files another agent holds).
    context: str = ""
    # versatil itself could not decide and the fail policy let the call through: this says why.
    warning: str = ""

    @property
    def silent(self) -> bool:
        return not (self.deny or self.context or self.warning)


@dataclass(frozen=True)
class Reply:
    """What the hook process does to answer: print `stdout` / `stderr`, exit with `exit_code`."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
