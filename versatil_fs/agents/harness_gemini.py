"""Gemini CLI's hook protocol.

https://geminicli.com/docs/hooks/reference (github.com/google-gemini/gemini-cli
docs/hooks/reference.md): every hook gets `session_id`, `transcript_path`, `cwd`,
`hook_event_name` and `timestamp`; BeforeTool / AfterTool add `tool_name` and `tool_input`;
SessionStart adds `source`, SessionEnd `reason`. Exit 0 means stdout is one JSON object; exit 2
blocks with stderr as the reason; any other exit is a warning and the CLI goes on.
Tools: https://geminicli.com/docs/tools/file-system (`write_file` and `replace` take
`file_path`, absolute) and https://geminicli.com/docs/tools/shell (`run_shell_command`).
"""

from __future__ import annotations

from collections.abc import Mapping

from versatil_fs.agents.harness_payload import (
    JSONObject,
    absolute_cwd,
    context_reply,
    lifecycle,
    named_path,
    obj,
    reply_json,
    session,
    text,
    tool_event,
)
from versatil_fs.agents.protocol import HookCall, Reply, Verdict

__all__ = ["GEMINI_EDIT_TOOLS", "GEMINI_SHELL_TOOLS", "parse_gemini", "render_gemini"]

GEMINI_EDIT_TOOLS = ("write_file", "replace")
GEMINI_SHELL_TOOLS = ("run_shell_command",)

_PHASES = {"BeforeTool": "pre", "AfterTool": "post"}


def parse_gemini(payload: JSONObject, env: Mapping[str, str], cwd: str) -> HookCall:
    """A Gemini CLI hook call. Gemini CLI documents no env file for SessionStart."""
    del env
    name = text(payload, "hook_event_name")
    session_id = session(text(payload, "session_id"), "session_id")
    where = absolute_cwd(text(payload, "cwd", required=False), cwd)
    if name in ("SessionStart", "SessionEnd"):
        kind = "session-start" if name == "SessionStart" else "session-end"
        return lifecycle("gemini", kind, session_id, where, payload)
    phase = _PHASES.get(name)
    if phase is None:
        return HookCall("gemini", "other", session_id, where)
    tool = text(payload, "tool_name")
    event = tool_event(phase, tool, GEMINI_EDIT_TOOLS, GEMINI_SHELL_TOOLS)
    paths: tuple[str, ...] = ()
    if event in ("pre-edit", "post-edit"):
        tool_input = obj(payload, "tool_input")
        paths = (named_path(text(tool_input, "file_path", where="tool_input."),
                            "tool_input.file_path"),)
    return HookCall("gemini", event, session_id, where, tool=tool, paths=paths)


# Where Gemini CLI reads additionalContext from hookSpecificOutput: AfterTool ("appended to the
# tool result for the agent") and SessionStart ("injected as the first turn in history"); its
# BeforeTool output has no such field (packages/core/src/hooks/types.ts: AfterToolOutput,
# SessionStartOutput, BeforeToolOutput).
_CONTEXT = {"post-edit": "AfterTool", "post-shell": "AfterTool", "session-start": "SessionStart"}


def render_gemini(call: HookCall | None, verdict: Verdict) -> Reply:
    """Gemini CLI's reply to `verdict` (never silent: the caller answers silence itself)."""
    event = call.event if call is not None else ""
    if verdict.deny:
        if event in ("pre-edit", "pre-shell"):
            # BeforeTool: "decision": "deny" stops the tool and `reason` goes to the agent as the
            # tool's error, so it can retry or do something else.
            return Reply(stdout=reply_json({"decision": "deny", "reason": verdict.deny}))
        # Anything else (no payload to go by, a tool that already ran): exit 2 is the documented
        # block of every event, with stderr as the reason.
        return Reply(stderr=verdict.deny + "\n", exit_code=2)
    # BeforeTool, SessionEnd and unreadable payloads have no channel to the agent; the closest
    # documented one is systemMessage, "displayed immediately to the user".
    return context_reply(_CONTEXT.get(event), verdict)
