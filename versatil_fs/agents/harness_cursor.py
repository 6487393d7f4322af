"""Cursor's agent hook protocol.

https://cursor.com/docs/hooks: `.cursor/hooks.json` is `{"version": 1, "hooks": {EVENT:
[{"command": ..., "matcher": ...}]}}` with camelCase events. Every payload has
`conversation_id`, `generation_id`, `hook_event_name` and `workspace_roots`; `preToolUse` /
`postToolUse` add `tool_name`, `tool_input` and `cwd`. The permission events answer
`{"permission": "allow" | "deny" | "ask", "user_message": ..., "agent_message": ...}`;
`postToolUse` and `sessionStart` take `{"additional_context": ...}`.

Exit 2 blocks the action whatever the event; any other non-zero exit is a hook error. Where the
page is silent this reads conservatively, and says so below: the file-writing tools' path field
(`file_path`, or `path` as Cursor's own tool calls name it). Cursor can also run Claude Code's
hooks (its "Third Party Hooks" page): in a repository integrated for both, one Cursor edit may
then come through both adapters.

Silence is exit 0 with nothing printed, as for every harness. Cursor counts an empty reply to a
permission event as a failed hook, and a failed hook lets the tool through unless its entry sets
`failClosed: true` — which `versatil integrate` must therefore never write: several projects
report Cursor's IDE refusing every tool call of a failClosed hook that answered with nothing
(github.com/awslabs/aidlc-workflows#745, github.com/deftai/directive#2779).
"""

from __future__ import annotations

from collections.abc import Mapping

from versatil_fs.agents.harness_payload import (
    WARNING,
    JSONObject,
    absolute_cwd,
    clean,
    lifecycle,
    named_path,
    obj,
    reply_json,
    session,
    spoken,
    text,
    tool_event,
)
from versatil_fs.agents.protocol import BadPayload, HookCall, Reply, Verdict

__all__ = ["CURSOR_EDIT_TOOLS", "CURSOR_SHELL_TOOLS", "parse_cursor", "render_cursor"]

# Cursor's preToolUse tool types (the page's matcher examples: "Shell", "Read", "Write",
# "Delete", "Grep", "Task", "MCP:..."). StrReplace and Edit are the names Cursor's in-place edit
# tool has gone by; listing a name Cursor does not send costs nothing, missing one lets edits
# through unchecked.
CURSOR_EDIT_TOOLS = ("Write", "StrReplace", "Edit", "MultiEdit", "Delete")
CURSOR_SHELL_TOOLS = ("Shell",)

_PHASES = {"preToolUse": "pre", "postToolUse": "post"}
# The page does not list the path field of every file-writing tool: take the first of these
# that is present (conservative: an edit whose path cannot be read is refused as unreadable,
# so the fail policy answers for it, rather than waved through).
_PATH_KEYS = ("file_path", "path", "target_file")


def _cursor_path(tool_input: JSONObject) -> str:
    for key in _PATH_KEYS:
        value = tool_input.get(key)
        if isinstance(value, str):
            return named_path(clean(value, f"tool_input.{key}"), f"tool_input.{key}")
    raise BadPayload("The hook payload's tool_input names no file (file_path or path).")


def _cwd(payload: JSONObject, fallback: str) -> str:
    where = text(payload, "cwd", required=False)
    if where:
        return absolute_cwd(where, fallback)
    # No cwd on session events: the first workspace root is where the agent works.
    roots = payload.get("workspace_roots")
    if isinstance(roots, list) and roots and isinstance(roots[0], str):
        name = "workspace_roots[0]"
        return absolute_cwd(clean(roots[0], name), fallback, name)
    return fallback


def parse_cursor(payload: JSONObject, env: Mapping[str, str], cwd: str) -> HookCall:
    """A Cursor hook call; the session is Cursor's conversation (`conversation_id`; a payload
    that calls it `session_id` is read too). Cursor documents no env file for sessionStart."""
    del env
    name = text(payload, "hook_event_name")
    conversation = text(payload, "conversation_id", required=False)
    session_id = session(conversation or text(payload, "session_id", required=False),
                         "conversation_id")
    where = _cwd(payload, cwd)
    if name in ("sessionStart", "sessionEnd"):
        kind = "session-start" if name == "sessionStart" else "session-end"
        return lifecycle("cursor", kind, session_id, where, payload)
    phase = _PHASES.get(name)
    if phase is None:
        return HookCall("cursor", "other", session_id, where)
    tool = text(payload, "tool_name")
    event = tool_event(phase, tool, CURSOR_EDIT_TOOLS, CURSOR_SHELL_TOOLS)
    paths: tuple[str, ...] = ()
    if event in ("pre-edit", "post-edit"):
        paths = (_cursor_path(obj(payload, "tool_input")),)
    return HookCall("cursor", event, session_id, where, tool=tool, paths=paths)


def render_cursor(call: HookCall | None, verdict: Verdict) -> Reply:
    """Cursor's reply to `verdict` (never silent: the caller answers silence itself)."""
    event = call.event if call is not None else ""
    pre = event in ("pre-edit", "pre-shell")
    if verdict.deny:
        if pre:
            # user_message is shown to the person, agent_message to the model: both need to know
            # which file and who holds it.
            return Reply(stdout=reply_json({
                "permission": "deny",
                "user_message": verdict.deny,
                "agent_message": verdict.deny,
            }))
        # Not a permission event, or no payload to go by: exit 2, which Cursor reads as "deny /
        # block the action" whatever the event (its exit-code table; any other non-zero exit is
        # a hook error, let through unless failClosed).
        return Reply(stderr=verdict.deny + "\n", exit_code=2)
    said = spoken(verdict)
    if pre:
        # agent_message alone, without a "permission": telling the agent something must not
        # grant anything (an explicit "allow" would skip the user's own approval).
        out: dict[str, object] = {"agent_message": said}
        if verdict.warning:
            out["user_message"] = WARNING + verdict.warning
        return Reply(stdout=reply_json(out))
    if event in ("post-edit", "post-shell", "session-start"):
        return Reply(stdout=reply_json({"additional_context": said}))
    # sessionEnd, other events and unreadable payloads: nothing of Cursor's reaches the agent
    # there, so the note goes where Cursor logs hook output.
    return Reply(stderr=said + "\n")
