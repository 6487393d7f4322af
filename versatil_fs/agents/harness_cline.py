"""Cline's hook protocol.

https://docs.cline.bot/features/hooks/hook-reference (github.com/cline/cline
docs/features/hooks/hook-reference.mdx): a hook is an executable file named after its event
(`PreToolUse`, `PostToolUse`, `TaskStart`, ...) in `.clinerules/hooks/`. Every payload has
`clineVersion`, `hookName`, `timestamp`, `taskId`, `workspaceRoots` and `userId`, plus one object
named after the hook (`preToolUse: {toolName, parameters}`, `postToolUse: {toolName, parameters,
result, success, executionTimeMs}`). The reply is the last JSON object on stdout:
`{"cancel": bool, "contextModification": str, "errorMessage": str}`; "only `cancel: true` can
halt a task", every other failure (exit code, bad JSON, timeout) lets the task go on.
Tools: https://docs.cline.bot/exploring-clines-tools/cline-tools-guide (`write_to_file` and
`replace_in_file` take `path`, relative to the workspace; `execute_command` runs a shell).

Cline has tasks, not sessions: the session is the task (`taskId`). TaskStart and TaskResume
start it; TaskComplete and TaskCancel end it, so a finished or cancelled task holds no claims
while VS Code (the process the keeper watches) stays open. A task continued after completion
claims its files again on its next edit.
"""

from __future__ import annotations

from collections.abc import Mapping

from versatil_fs.agents.codex_patch import patch_paths
from versatil_fs.agents.harness_payload import (
    JSONObject,
    absolute_cwd,
    clean,
    named_path,
    obj,
    reply_json,
    session,
    spoken,
    text,
    tool_event,
)
from versatil_fs.agents.protocol import Event, HookCall, Reply, Verdict

__all__ = ["CLINE_EDIT_TOOLS", "CLINE_SHELL_TOOLS", "parse_cline", "render_cline"]

# Cline's file-writing tools (src/shared/tools.ts, ClineDefaultTool): write_to_file,
# replace_in_file and new_rule (a .clinerules file; the same handler, WriteToFileToolHandler,
# reads `path`), and apply_patch, the Codex-format patch tool Cline gives models trained on it,
# whose patch is its `input` parameter (ApplyPatchHandler: block.params.input).
CLINE_EDIT_TOOLS = ("write_to_file", "replace_in_file", "new_rule", "apply_patch")
CLINE_SHELL_TOOLS = ("execute_command",)

_SESSION: dict[str, Event] = {
    "TaskStart": "session-start",
    "TaskResume": "session-start",
    "TaskComplete": "session-end",
    "TaskCancel": "session-end",
}
_TOOL_HOOKS = {"PreToolUse": ("pre", "preToolUse"), "PostToolUse": ("post", "postToolUse")}


def _paths(tool: str, parameters: JSONObject, where: str) -> tuple[str, ...]:
    if tool != "apply_patch":
        return (named_path(text(parameters, "path", where=where), f"{where}path"),)
    patch = text(parameters, "input", where=where)
    return tuple(clean(p, "patch path") for p in patch_paths(patch))


def _cwd(payload: JSONObject, fallback: str) -> str:
    roots = payload.get("workspaceRoots")
    if isinstance(roots, list) and roots and isinstance(roots[0], str):
        return absolute_cwd(clean(roots[0], "workspaceRoots[0]"), fallback, "workspaceRoots[0]")
    return fallback


def parse_cline(payload: JSONObject, env: Mapping[str, str], cwd: str) -> HookCall:
    """A Cline hook call. Cline documents no env file for TaskStart."""
    del env
    name = text(payload, "hookName")
    session_id = session(text(payload, "taskId"), "taskId")
    where = _cwd(payload, cwd)
    lifecycle = _SESSION.get(name)
    if lifecycle is not None:
        # detail: "TaskResume" -> "resume", for the log.
        return HookCall("cline", lifecycle, session_id, where, detail=name[4:].lower())
    hook = _TOOL_HOOKS.get(name)
    if hook is None:
        return HookCall("cline", "other", session_id, where)
    phase, key = hook
    body = obj(payload, key)
    tool = text(body, "toolName", where=f"{key}.")
    event = tool_event(phase, tool, CLINE_EDIT_TOOLS, CLINE_SHELL_TOOLS)
    paths: tuple[str, ...] = ()
    if event in ("pre-edit", "post-edit"):
        paths = _paths(tool, obj(body, "parameters", where=f"{key}."), f"{key}.parameters.")
    return HookCall("cline", event, session_id, where, tool=tool, paths=paths)


def render_cline(call: HookCall | None, verdict: Verdict) -> Reply:
    """Cline's reply to `verdict` (never silent: the caller answers silence itself). Cline's
    reply has one shape for every hook, so an unreadable payload is answered the same way."""
    del call
    if verdict.deny:
        # cancel stops the tool (and pauses the task until the user resumes it); errorMessage is
        # what the user sees, contextModification what the model sees on its next request.
        return Reply(stdout=reply_json({
            "cancel": True,
            "errorMessage": verdict.deny,
            "contextModification": verdict.deny,
        }))
    # "cancel" is required; false here only means "not refused" — Cline hooks cannot approve.
    return Reply(stdout=reply_json({"cancel": False, "contextModification": spoken(verdict)}))
