"""Each harness's own hook protocol, on both sides of the one decision core: :func:`parse` turns
the JSON a harness writes on a hook's stdin into a :class:`HookCall`, :func:`render` turns a
:class:`Verdict` into the reply that harness reads back (stdout, stderr, exit code), and
:data:`HOOKS` says which events `versatil integrate` must wire for it.

Stdlib only (json, re, dataclasses): the lean `versatil agent-hook` process imports this before
every edit an agent makes. Nothing here does I/O; everything is a pure function of its inputs.

Harnesses change fast, so every protocol detail cites the page it was read from. Where a page is
silent the conservative reading is taken and the comment says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from versatil_fs.agents.codex_patch import patch_paths
from versatil_fs.agents.protocol import HARNESSES, BadPayload, Event, HookCall, Reply, Verdict

__all__ = [
    "EDIT_TOOLS",
    "HOOKS",
    "MAX_PAYLOAD",
    "SHELL_TOOLS",
    "HookSpec",
    "parse",
    "render",
]

# A payload over 16 MiB is refused before it is decoded: the hook runs before every edit, and a
# huge payload (a Write of a generated file, a runaway patch) must neither make the agent wait
# while it is parsed nor hold hundreds of MiB of Python objects. 16 MiB is far above any edit a
# human would review; the fail policy answers for the rest.
MAX_PAYLOAD = 16 * 1024 * 1024


@dataclass(frozen=True)
class HookSpec:
    """One hook `versatil integrate` installs for a harness.

    `event` is the harness's own event name ("PreToolUse", "BeforeTool", "preToolUse");
    `matcher` the tool-name matcher where the harness's config has one (None: the hook runs for
    every tool of that event, or the event takes no matcher); `timeout` in seconds where the
    config takes one (the integrate side converts to the config's unit: Gemini CLI's `timeout`
    is in milliseconds).
    """

    event: str
    matcher: str | None = None
    timeout: int | None = None


# --- the tools that write files and the shell tools, per harness ----------------------------

# Claude Code: https://code.claude.com/docs/en/hooks ("PreToolUse" -> tool input per tool:
# Write/Edit take `file_path`, NotebookEdit `notebook_path`). MultiEdit was folded into Edit; it
# is still matched so an older Claude Code is covered too.
_CLAUDE_EDIT = ("Edit", "Write", "MultiEdit", "NotebookEdit")
_CLAUDE_SHELL = ("Bash",)
# Codex CLI: https://developers.openai.com/codex/hooks — file edits arrive as `apply_patch`, the
# shell as `Bash` (codex-rs/hooks).
_CODEX_EDIT = ("apply_patch",)
_CODEX_SHELL = ("Bash",)
# Gemini CLI: https://geminicli.com/docs/tools/file-system (write_file, replace: `file_path`)
# and https://geminicli.com/docs/tools/shell (run_shell_command).
_GEMINI_EDIT = ("write_file", "replace")
_GEMINI_SHELL = ("run_shell_command",)
# Cursor: https://cursor.com/docs/agent/hooks (preToolUse tool names).
_CURSOR_EDIT = ("Write", "Edit", "Delete")
_CURSOR_SHELL = ("Shell",)
# Cline: https://docs.cline.bot/exploring-clines-tools/cline-tools-guide
_CLINE_EDIT = ("write_to_file", "replace_in_file", "apply_patch")
_CLINE_SHELL = ("execute_command",)
# GitHub Copilot CLI: https://docs.github.com/en/copilot/reference/hooks-configuration
_COPILOT_EDIT = ("edit", "create")
_COPILOT_SHELL = ("bash", "powershell")

EDIT_TOOLS: dict[str, tuple[str, ...]] = {
    "claude": _CLAUDE_EDIT,
    "codex": _CODEX_EDIT,
    "gemini": _GEMINI_EDIT,
    "cursor": _CURSOR_EDIT,
    "cline": _CLINE_EDIT,
    "copilot": _COPILOT_EDIT,
}
SHELL_TOOLS: dict[str, tuple[str, ...]] = {
    "claude": _CLAUDE_SHELL,
    "codex": _CODEX_SHELL,
    "gemini": _GEMINI_SHELL,
    "cursor": _CURSOR_SHELL,
    "cline": _CLINE_SHELL,
    "copilot": _COPILOT_SHELL,
}


def _matcher(harness: str) -> str:
    return "|".join(EDIT_TOOLS[harness] + SHELL_TOOLS[harness])


HOOKS: dict[str, tuple[HookSpec, ...]] = {
    "claude": (
        HookSpec("SessionStart"),
        HookSpec("PreToolUse", _matcher("claude"), 10),
        HookSpec("PostToolUse", _matcher("claude"), 10),
        HookSpec("SessionEnd", None, 2),
    ),
    "codex": (
        HookSpec("SessionStart"),
        HookSpec("PreToolUse", _matcher("codex"), 10),
        HookSpec("PostToolUse", _matcher("codex"), 10),
    ),
    "gemini": (
        HookSpec("SessionStart"),
        HookSpec("BeforeTool", _matcher("gemini"), 10),
        HookSpec("AfterTool", _matcher("gemini"), 10),
        HookSpec("SessionEnd"),
    ),
    "cursor": (
        HookSpec("sessionStart"),
        HookSpec("preToolUse", _matcher("cursor"), 10),
        HookSpec("postToolUse", _matcher("cursor"), 10),
        HookSpec("sessionEnd"),
    ),
    "cline": (
        HookSpec("TaskStart"),
        HookSpec("TaskResume"),
        HookSpec("PreToolUse"),
        HookSpec("PostToolUse"),
        HookSpec("TaskComplete"),
        HookSpec("TaskCancel"),
    ),
    "copilot": (
        HookSpec("sessionStart"),
        HookSpec("preToolUse", None, 10),
        HookSpec("postToolUse", None, 10),
        HookSpec("sessionEnd"),
    ),
}


# --- reading a payload ------------------------------------------------------------------------

_JSONObject = dict[str, object]


def _load(raw: bytes) -> _JSONObject:
    if len(raw) > MAX_PAYLOAD:
        raise BadPayload(f"The hook payload is {len(raw)} bytes, over the {MAX_PAYLOAD} allowed.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPayload("The hook payload is not UTF-8 text.") from None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError and an integer too long to convert; RecursionError a
        # payload nested deeper than the parser's stack.
        raise BadPayload("The hook payload is not valid JSON.") from None
    if not isinstance(value, dict):
        raise BadPayload("The hook payload is not a JSON object.")
    return value


def _clean(value: str, field: str) -> str:
    # A lone surrogate (JSON allows "\ud800") cannot be encoded for the file system or printed,
    # and a NUL cannot be in a path or an id: refuse them here, as one sentence, rather than let
    # them raise deep in the core.
    if "\x00" in value:
        raise BadPayload(f"The hook payload's {field} contains a NUL character.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadPayload(f"The hook payload's {field} is not valid Unicode text.") from None
    return value


def _str(obj: _JSONObject, key: str, *, where: str = "", required: bool = True) -> str:
    field = f"{where}{key}"
    value = obj.get(key)
    if value is None:
        if required:
            raise BadPayload(f"The hook payload has no {field}.")
        return ""
    if not isinstance(value, str):
        raise BadPayload(f"The hook payload's {field} is not a string.")
    return _clean(value, field)


def _obj(obj: _JSONObject, key: str, *, where: str = "", required: bool = True) -> _JSONObject:
    field = f"{where}{key}"
    value = obj.get(key)
    if value is None:
        if required:
            raise BadPayload(f"The hook payload has no {field}.")
        return {}
    if not isinstance(value, dict):
        raise BadPayload(f"The hook payload's {field} is not an object.")
    return value


def _tool_event(phase: str, tool: str, harness: str) -> Event:
    if tool in EDIT_TOOLS[harness]:
        return "pre-edit" if phase == "pre" else "post-edit"
    if tool in SHELL_TOOLS[harness]:
        return "pre-shell" if phase == "pre" else "post-shell"
    return "other"


def _session(value: str, field: str) -> str:
    if not value:
        raise BadPayload(f"The hook payload's {field} is empty.")
    return value


# --- Claude Code and Codex (Codex copies Claude Code's wire format) ---------------------------

# https://code.claude.com/docs/en/hooks ("Hook input"): every event has session_id, cwd and
# hook_event_name; tool events add tool_name and tool_input.
_CLAUDE_EVENTS: dict[str, str] = {
    "PreToolUse": "pre",
    "PostToolUse": "post",
    "SessionStart": "session-start",
    "SessionEnd": "session-end",
}


def _claude_paths(tool: str, tool_input: _JSONObject) -> tuple[str, ...]:
    if tool == "NotebookEdit":
        return (_str(tool_input, "notebook_path", where="tool_input."),)
    return (_str(tool_input, "file_path", where="tool_input."),)


def _codex_paths(tool: str, tool_input: _JSONObject) -> tuple[str, ...]:
    command = tool_input.get("command")
    if isinstance(command, list) and all(isinstance(part, str) for part in command):
        # The argv form, ["apply_patch", "<patch>"]: the patch is the last argument.
        if len(command) < 2:
            raise BadPayload("The hook payload's tool_input.command has no patch.")
        command = command[-1]
    if not isinstance(command, str):
        raise BadPayload("The hook payload's tool_input.command is not a patch.")
    return tuple(_clean(p, "patch path") for p in patch_paths(command))


def _parse_claude_like(
    harness: str,
    payload: _JSONObject,
    env: Mapping[str, str],
    cwd: str,
    paths_of: Callable[[str, _JSONObject], tuple[str, ...]],
) -> HookCall:
    name = _str(payload, "hook_event_name")
    session_id = _session(_str(payload, "session_id"), "session_id")
    where = _str(payload, "cwd", required=False) or cwd
    agent_id = _str(payload, "agent_id", required=False)
    kind = _CLAUDE_EVENTS.get(name, "other")
    if kind == "session-start":
        return HookCall(
            harness, "session-start", session_id, where, agent_id=agent_id,
            env_file=env.get("CLAUDE_ENV_FILE", "") if harness == "claude" else "",
            detail=_str(payload, "source", required=False),
        )
    if kind == "session-end":
        return HookCall(harness, "session-end", session_id, where, agent_id=agent_id,
                        detail=_str(payload, "reason", required=False))
    if kind not in ("pre", "post"):
        return HookCall(harness, "other", session_id, where, agent_id=agent_id)
    tool = _str(payload, "tool_name")
    event = _tool_event(kind, tool, harness)
    paths: tuple[str, ...] = ()
    if event in ("pre-edit", "post-edit"):
        paths = paths_of(tool, _obj(payload, "tool_input"))
    return HookCall(harness, event, session_id, where, tool=tool, paths=paths, agent_id=agent_id)


def _parse_claude(payload: _JSONObject, env: Mapping[str, str], cwd: str) -> HookCall:
    return _parse_claude_like("claude", payload, env, cwd, _claude_paths)


def _parse_codex(payload: _JSONObject, env: Mapping[str, str], cwd: str) -> HookCall:
    return _parse_claude_like("codex", payload, env, cwd, _codex_paths)


_PARSERS: dict[str, Callable[[_JSONObject, Mapping[str, str], str], HookCall]] = {
    "claude": _parse_claude,
    "codex": _parse_codex,
}


def parse(harness: str, raw: bytes, env: Mapping[str, str], cwd: str) -> HookCall:
    """What one hook call of `harness` is about, read from the bytes it wrote on stdin.

    `env` is the hook process's environment (Claude Code's $CLAUDE_ENV_FILE comes from there),
    `cwd` the hook process's working directory, used when the payload names none. Paths are kept
    exactly as sent (absolute, or relative to the call's cwd). A tool that writes files gives
    "pre-edit"/"post-edit" with its paths, a shell tool "pre-shell"/"post-shell", anything else
    "other".

    Raises :class:`BadPayload` (one sentence) and nothing else, whatever the bytes: for a payload
    over :data:`MAX_PAYLOAD`, not UTF-8, not JSON, not an object, a required field missing or of
    the wrong type, or an unknown harness.
    """
    parser = _PARSERS.get(harness)
    if parser is None:
        raise BadPayload(f"Unknown harness {harness!r}; versatil knows {', '.join(HARNESSES)}.")
    return parser(_load(raw), env, cwd)


# --- answering --------------------------------------------------------------------------------

_WARNING = "versatil warning: "


def _json(obj: object) -> str:
    # ensure_ascii: the reply is read by the harness through a pipe whose encoding versatil does
    # not choose; ASCII JSON is the same text in every one.
    return json.dumps(obj, ensure_ascii=True) + "\n"


_CLAUDE_EVENT_NAMES: dict[str, str] = {
    "pre-edit": "PreToolUse",
    "pre-shell": "PreToolUse",
    "post-edit": "PostToolUse",
    "post-shell": "PostToolUse",
    "session-start": "SessionStart",
}


def _render_claude(call: HookCall | None, verdict: Verdict) -> Reply:
    name = _CLAUDE_EVENT_NAMES.get(call.event, "") if call is not None else ""
    if verdict.deny:
        if name == "PreToolUse":
            return Reply(stdout=_json({"hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": verdict.deny,
            }}))
        # Unknown event (the payload could not be read) or an event without a permission
        # decision: exit 2 blocks where blocking is possible, and stderr is the reason.
        return Reply(stderr=verdict.deny + "\n", exit_code=2)
    parts = [verdict.context] if verdict.context else []
    if verdict.warning:
        parts.append(_WARNING + verdict.warning)
    text = "\n".join(parts)
    out: dict[str, object] = {}
    if name:
        out["hookSpecificOutput"] = {"hookEventName": name, "additionalContext": text}
    if verdict.warning:
        # systemMessage: shown to the user, whatever the event — they should know the guard let
        # something through unchecked.
        out["systemMessage"] = _WARNING + verdict.warning
    if not out:
        return Reply(stderr=text + "\n")
    return Reply(stdout=_json(out))


_RENDERERS: dict[str, Callable[[HookCall | None, Verdict], Reply]] = {
    "claude": _render_claude,
    "codex": _render_claude,
}


def render(harness: str, call: HookCall | None, verdict: Verdict) -> Reply:
    """The reply `harness` reads for `verdict` on `call` (None when the payload could not be
    read: the fail policy still answers, in the harness's event-independent form).

    A silent verdict is always ``Reply()``: exit 0, nothing printed, no decision — never an
    explicit "allow", which would skip the user's own permission prompt. A deny is the harness's
    native refusal for that event; context is said to the agent through the harness's channel for
    it; a warning likewise, marked as versatil's own.
    """
    if verdict.silent:
        return Reply()
    renderer = _RENDERERS.get(harness)
    if renderer is None:
        # An unknown harness has no native form: exit 2 + stderr is the most widely understood
        # refusal, and stderr with exit 0 the least intrusive note.
        if verdict.deny:
            return Reply(stderr=verdict.deny + "\n", exit_code=2)
        return Reply(stderr=(verdict.context or _WARNING + verdict.warning) + "\n")
    return renderer(call, verdict)
