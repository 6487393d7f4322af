"""GitHub Copilot's hook protocol (Copilot CLI, and the cloud agent, which reads the same
`.github/hooks/*.json`).

https://docs.github.com/en/copilot/reference/copilot-cli-reference/cli-hooks-reference: a hook
file is `{"version": 1, "hooks": {EVENT: [{"type": "command", "bash": ..., "env": {...},
"timeoutSec": N}]}}`. An event configured in camelCase (`preToolUse`) gets a camelCase payload
without the event's name — `sessionId`, `timestamp`, `cwd`, then `toolName` and `toolArgs`
(preToolUse), plus `toolResult` (postToolUse), `source` (sessionStart), `reason` (sessionEnd).
One configured in PascalCase (`PreToolUse`) gets the VS Code compatible payload instead:
`hook_event_name`, `session_id`, `cwd`, `tool_name`, `tool_input`. Both are read here.
preToolUse answers `{"permissionDecision": "deny", "permissionDecisionReason": ...}`; "empty
output uses default behavior"; the other events' output is not processed. A timeout always lets
the tool call through; a crash or a non-zero exit of a preToolUse hook denies it in the current
reference (so the hook process must answer every failure with exit 0 under `on_error = "allow"`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from versatil_fs.agents.harness_payload import (
    JSONObject,
    absolute_cwd,
    lifecycle,
    named_path,
    reply_json,
    session,
    spoken,
    text,
    tool_event,
)
from versatil_fs.agents.protocol import BadPayload, HookCall, Reply, Verdict

__all__ = [
    "COPILOT_EDIT_TOOLS",
    "COPILOT_SHELL_TOOLS",
    "HOOK_EVENT_ENV",
    "parse_copilot",
    "render_copilot",
]

# "Tool names for hook matching": create and edit write files (`toolArgs.path`), bash and
# powershell run a shell.
COPILOT_EDIT_TOOLS = ("create", "edit")
COPILOT_SHELL_TOOLS = ("bash", "powershell")

# A camelCase payload does not say which event it is for. `versatil integrate` sets this
# variable in each hook's documented `env` to the event it is installed for; without it the event
# is told from the payload's own fields.
HOOK_EVENT_ENV = "VERSATIL_HOOK_EVENT"

_EVENTS = {
    "preToolUse": "pre", "PreToolUse": "pre",
    "postToolUse": "post", "PostToolUse": "post",
    "sessionStart": "session-start", "SessionStart": "session-start",
    "sessionEnd": "session-end", "SessionEnd": "session-end",
}


def _infer(payload: JSONObject) -> str:
    """The camelCase event a payload is for, from the fields only that event documents."""
    if "toolName" in payload:
        if "toolResult" in payload:
            return "postToolUse"
        # postToolUseFailure carries `error`; the tool did not run to completion.
        return "postToolUseFailure" if "error" in payload else "preToolUse"
    if "source" in payload:
        return "sessionStart"
    if "reason" in payload:
        return "sessionEnd"
    return ""


def _args(value: object, where: str) -> JSONObject:
    # toolArgs is documented as `unknown`: the CLI has sent it both as an object and as a JSON
    # string of one.
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise BadPayload(f"The hook payload's {where} is not a JSON object.") from None
    if not isinstance(value, dict):
        raise BadPayload(f"The hook payload's {where} is not an object.")
    return value


def parse_copilot(payload: JSONObject, env: Mapping[str, str], cwd: str) -> HookCall:
    """A Copilot hook call.

    The session is `sessionId` (`session_id` in the VS Code format). A payload without one (the
    cloud agent's, older CLIs') is given a stable id derived from its working directory,
    "cwd-<16 hex of sha256(cwd)>", so every hook of one checkout's session agrees on it; two such
    sessions in the same directory are then one agent. Copilot documents no env file.
    """
    vscode = "hook_event_name" in payload
    if vscode:
        name = text(payload, "hook_event_name")
        keys = ("session_id", "tool_name", "tool_input")
    else:
        name = env.get(HOOK_EVENT_ENV) or _infer(payload)
        keys = ("sessionId", "toolName", "toolArgs")
    where = absolute_cwd(text(payload, "cwd", required=False), cwd)
    session_id = text(payload, keys[0], required=False)
    if not session_id:
        import hashlib  # only this fallback needs it; its OpenSSL binding costs ~2 ms to load

        digest = hashlib.sha256(where.encode("utf-8", "surrogateescape")).hexdigest()
        session_id = "cwd-" + digest[:16]
    session_id = session(session_id, keys[0])
    kind = _EVENTS.get(name, "other")
    if kind in ("session-start", "session-end"):
        return lifecycle("copilot", kind, session_id, where, payload)
    if kind == "other":
        return HookCall("copilot", "other", session_id, where)
    tool = text(payload, keys[1])
    event = tool_event(kind, tool, COPILOT_EDIT_TOOLS, COPILOT_SHELL_TOOLS)
    paths: tuple[str, ...] = ()
    if event in ("pre-edit", "post-edit"):
        args = _args(payload.get(keys[2]), keys[2])
        paths = (named_path(text(args, "path", where=f"{keys[2]}."), f"{keys[2]}.path"),)
    return HookCall("copilot", event, session_id, where, tool=tool, paths=paths)


def render_copilot(call: HookCall | None, verdict: Verdict) -> Reply:
    """Copilot's reply to `verdict` (never silent: the caller answers silence itself)."""
    del call
    if verdict.deny:
        # The one refusal Copilot's command hooks have whatever the event: on preToolUse it blocks
        # the tool and the reason is "shown to the agent"; every other event's output is not
        # processed, so it is also the answer when the payload could not be read. (Exit codes
        # are no substitute: one version of the reference says a failing hook "is logged and
        # skipped", a later one that non-zero exits deny preToolUse; this JSON means the same
        # under both.)
        return Reply(stdout=reply_json({
            "permissionDecision": "deny",
            "permissionDecisionReason": verdict.deny,
        }))
    # No command-hook output reaches Copilot's agent without a decision (additionalContext is
    # documented for notification and subagentStart only): stderr, which Copilot logs.
    return Reply(stderr=spoken(verdict) + "\n")
