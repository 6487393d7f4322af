"""Claude Code's hook protocol, and Codex CLI's, which copies its wire format.

Claude Code: https://code.claude.com/docs/en/hooks ("Hook input", "PreToolUse", "PostToolUse",
"SessionStart", "SessionEnd", "JSON output", "Exit code 2 behavior").
Codex CLI: https://developers.openai.com/codex/hooks, and the schemas it validates against in
github.com/openai/codex codex-rs/hooks/schema/generated/*.json (pre-tool-use, post-tool-use,
session-start) and codex-rs/hooks/src/events/*.rs.

Every hook gets one JSON object on stdin with `session_id`, `cwd` and `hook_event_name`; a tool
event adds `tool_name` and `tool_input`. Inside a subagent the payload also carries `agent_id`
(Claude Code; Codex since its subagent hooks). A reply is exit 0 with one JSON object on stdout,
or exit 2 with the reason on stderr (a refusal where the event can refuse).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from versatil_fs.agents.codex_patch import patch_paths
from versatil_fs.agents.harness_payload import (
    JSONObject,
    absolute_cwd,
    clean,
    context_reply,
    lifecycle,
    named_path,
    obj,
    reply_json,
    session,
    text,
    tool_event,
)
from versatil_fs.agents.protocol import BadPayload, HookCall, Reply, Verdict

__all__ = [
    "CLAUDE_EDIT_TOOLS",
    "CLAUDE_SHELL_TOOLS",
    "CODEX_EDIT_TOOLS",
    "CODEX_SHELL_TOOLS",
    "parse_claude",
    "parse_codex",
    "render_claude",
    "render_codex",
]

# Claude Code's tools that write files and the one that runs a shell ("PreToolUse" input: Write,
# Edit and MultiEdit take `tool_input.file_path`, NotebookEdit `tool_input.notebook_path`, both
# absolute). MultiEdit was folded into Edit; it is still listed so an older Claude Code is covered.
CLAUDE_EDIT_TOOLS = ("Edit", "Write", "MultiEdit", "NotebookEdit")
CLAUDE_SHELL_TOOLS = ("Bash",)
# Codex: every file edit is one `apply_patch` call whose patch text is `tool_input.command`
# (openai/codex #18391, "emit hooks for apply_patch edits"); every shell-like tool (shell,
# exec_command, unified exec) reaches hooks as `Bash` with `tool_input.command`.
CODEX_EDIT_TOOLS = ("apply_patch",)
CODEX_SHELL_TOOLS = ("Bash",)

_PHASES = {"PreToolUse": "pre", "PostToolUse": "post"}


def _claude_paths(tool: str, tool_input: JSONObject) -> tuple[str, ...]:
    key = "notebook_path" if tool == "NotebookEdit" else "file_path"
    return (named_path(text(tool_input, key, where="tool_input."), f"tool_input.{key}"),)


def _codex_paths(tool: str, tool_input: JSONObject) -> tuple[str, ...]:
    del tool  # apply_patch is Codex's only edit tool
    command = tool_input.get("command")
    # Codex sends the raw patch body as a string for both its JSON and its freeform apply_patch
    # calls. The argv form (["apply_patch", "<patch>"]) is what its older local_shell tool
    # produced; it costs nothing to read too, so a Codex that still sends it is not waved through.
    if isinstance(command, list) and command and all(isinstance(p, str) for p in command):
        command = command[-1]
    if not isinstance(command, str):
        raise BadPayload("The hook payload's tool_input.command is not an apply_patch patch.")
    return tuple(clean(p, "patch path") for p in patch_paths(command))


def _parse(
    harness: str,
    payload: JSONObject,
    cwd: str,
    env_file: str,
    edit_tools: tuple[str, ...],
    shell_tools: tuple[str, ...],
    paths_of: Callable[[str, JSONObject], tuple[str, ...]],
) -> HookCall:
    name = text(payload, "hook_event_name")
    session_id = session(text(payload, "session_id"), "session_id")
    where = absolute_cwd(text(payload, "cwd", required=False), cwd)
    agent_id = text(payload, "agent_id", required=False)
    if name == "SessionStart":
        return lifecycle(harness, "session-start", session_id, where, payload,
                         agent_id=agent_id, env_file=env_file)
    if name == "SessionEnd":
        return lifecycle(harness, "session-end", session_id, where, payload, agent_id=agent_id)
    phase = _PHASES.get(name)
    if phase is None:
        return HookCall(harness, "other", session_id, where, agent_id=agent_id)
    tool = text(payload, "tool_name")
    event = tool_event(phase, tool, edit_tools, shell_tools)
    paths: tuple[str, ...] = ()
    if event in ("pre-edit", "post-edit"):
        paths = paths_of(tool, obj(payload, "tool_input"))
    return HookCall(harness, event, session_id, where, tool=tool, paths=paths, agent_id=agent_id)


def parse_claude(payload: JSONObject, env: Mapping[str, str], cwd: str) -> HookCall:
    """A Claude Code hook call. On SessionStart, $CLAUDE_ENV_FILE (set only for SessionStart
    hooks) is the file whose `export` lines Claude Code sources before each Bash command."""
    return _parse("claude", payload, cwd, env.get("CLAUDE_ENV_FILE", ""),
                  CLAUDE_EDIT_TOOLS, CLAUDE_SHELL_TOOLS, _claude_paths)


def parse_codex(payload: JSONObject, env: Mapping[str, str], cwd: str) -> HookCall:
    """A Codex CLI hook call. Codex runs SessionStart hooks with $CODEX_ENV_FILE and, for
    Claude Code compatibility, $CLAUDE_ENV_FILE (codex-rs/hooks/src/events/
    session_start_env_file.rs); whichever it set is the env file. Codex has no SessionEnd."""
    env_file = env.get("CODEX_ENV_FILE") or env.get("CLAUDE_ENV_FILE") or ""
    return _parse("codex", payload, cwd, env_file,
                  CODEX_EDIT_TOOLS, CODEX_SHELL_TOOLS, _codex_paths)


# The hookSpecificOutput event name for each of our events; the events not here (SessionEnd, an
# event versatil does not know, a payload it could not read) have no hook-specific output.
_NATIVE = {
    "pre-edit": "PreToolUse",
    "pre-shell": "PreToolUse",
    "post-edit": "PostToolUse",
    "post-shell": "PostToolUse",
    "session-start": "SessionStart",
}


# Where each harness puts additionalContext in front of the agent. Claude Code: PreToolUse (since
# 2.1.9), PostToolUse and SessionStart. Codex: PostToolUse and SessionStart; its PreToolUse
# parses additionalContext but rejects it as "unsupported" and counts the hook as failed
# (its hooks page; openai/codex#19385), so there the note goes to systemMessage instead.
_CLAUDE_CONTEXT = frozenset({"PreToolUse", "PostToolUse", "SessionStart"})
_CODEX_CONTEXT = frozenset({"PostToolUse", "SessionStart"})


def _render(call: HookCall | None, verdict: Verdict, context_events: frozenset[str]) -> Reply:
    native = _NATIVE.get(call.event, "") if call is not None else ""
    if verdict.deny:
        if native == "PreToolUse":
            # Exit 0 + permissionDecision "deny": the tool call does not run and the reason is
            # shown to the agent ("PreToolUse decision control").
            return Reply(stdout=reply_json({"hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": verdict.deny,
            }}))
        if native == "PostToolUse":
            # The tool already ran: "block" is the only refusal PostToolUse has, and it puts the
            # reason in front of the agent ("PostToolUse decision control").
            return Reply(stdout=reply_json({"decision": "block", "reason": verdict.deny}))
        # No payload to go by (or an event without a decision): exit 2 blocks wherever the event
        # can block, and stderr is the reason ("Exit code 2 behavior").
        return Reply(stderr=verdict.deny + "\n", exit_code=2)
    # SessionEnd (the agent is gone), an event without additionalContext, or a call versatil
    # could not read: systemMessage, shown to the user on every event (common JSON fields), is
    # the channel left. Otherwise hookEventName must name the event being answered, and a
    # warning goes to the user too (they should know the guard let something through).
    return context_reply(native if native in context_events else None, verdict)


def render_claude(call: HookCall | None, verdict: Verdict) -> Reply:
    """Claude Code's reply to `verdict` (never silent: the caller answers silence itself)."""
    return _render(call, verdict, _CLAUDE_CONTEXT)


def render_codex(call: HookCall | None, verdict: Verdict) -> Reply:
    """Codex's reply: Claude Code's fields, which its output schemas accept —
    hookSpecificOutput.permissionDecision "deny" with permissionDecisionReason, "decision":
    "block" for PostToolUse, systemMessage everywhere, exit 2 with a stderr reason blocking
    PreToolUse — except additionalContext before a tool (see above)."""
    return _render(call, verdict, _CODEX_CONTEXT)
