"""Reading a hook payload and writing a hook reply, the parts every harness adapter shares.

Pure functions over bytes, JSON values and strings (stdlib only: the lean hook process imports
this before every edit). Each reader raises :class:`BadPayload` with one sentence naming the field,
and nothing else, whatever the input.
"""

from __future__ import annotations

import json
import os.path
from collections.abc import Mapping, Sequence

from versatil_fs.agents import wire
from versatil_fs.agents.protocol import BadPayload, Event, HookCall, Reply, Verdict

__all__ = [
    "MAX_PAYLOAD",
    "WARNING",
    "JSONObject",
    "absolute_cwd",
    "clean",
    "context_reply",
    "lifecycle",
    "load",
    "named_path",
    "obj",
    "reply_json",
    "session",
    "spoken",
    "text",
    "tool_event",
]

MAX_PAYLOAD = wire.MAX_PAYLOAD  # refused before it is decoded: wire.py says why

# How versatil marks a warning it gives the agent (the fail policy let a call through unchecked).
WARNING = "versatil warning: "

JSONObject = Mapping[str, object]


def load(raw: bytes) -> JSONObject:
    """The JSON object `raw` holds (UTF-8, at most :data:`MAX_PAYLOAD` bytes)."""
    if len(raw) > MAX_PAYLOAD:
        raise BadPayload(f"The hook payload is {len(raw)} bytes, over the {MAX_PAYLOAD} allowed.")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPayload("The hook payload is not UTF-8 text.") from None
    try:
        value = json.loads(decoded)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError and an integer too long to convert; RecursionError a
        # payload nested deeper than the parser's stack.
        raise BadPayload("The hook payload is not valid JSON.") from None
    if not isinstance(value, dict):
        raise BadPayload("The hook payload is not a JSON object.")
    return value


def clean(value: str, name: str) -> str:
    """`value`, refused if it cannot name a file or an id.

    A lone surrogate (JSON allows "\\ud800") cannot be encoded for the file system or printed,
    and a NUL cannot be in a path or an id: refuse them here, as one sentence, rather than let
    them raise deep in the core.
    """
    if "\x00" in value:
        raise BadPayload(f"The hook payload's {name} contains a NUL character.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadPayload(f"The hook payload's {name} is not valid Unicode text.") from None
    return value


def text(payload: JSONObject, key: str, *, where: str = "", required: bool = True) -> str:
    """The string at `key` ("" when it is absent and not `required`); `where` prefixes the
    field's name in the message ("tool_input.")."""
    name = f"{where}{key}"
    value = payload.get(key)
    if value is None:
        if required:
            raise BadPayload(f"The hook payload has no {name}.")
        return ""
    if not isinstance(value, str):
        raise BadPayload(f"The hook payload's {name} is not a string.")
    return clean(value, name)


def obj(payload: JSONObject, key: str, *, where: str = "", required: bool = True) -> JSONObject:
    """The object at `key` ({} when it is absent and not `required`)."""
    name = f"{where}{key}"
    value = payload.get(key)
    if value is None:
        if required:
            raise BadPayload(f"The hook payload has no {name}.")
        return {}
    if not isinstance(value, dict):
        raise BadPayload(f"The hook payload's {name} is not an object.")
    return value


def session(value: str, name: str) -> str:
    """A session id, which must not be empty (it names the session's agent and its lease)."""
    if not value.strip():
        raise BadPayload(f"The hook payload's {name} is empty.")
    return value


def absolute_cwd(value: str, fallback: str, name: str = "cwd") -> str:
    """The payload's working directory, or the hook process's when the payload has none."""
    if not value:
        return fallback
    if not os.path.isabs(value):
        raise BadPayload(f"The hook payload's {name} is not an absolute path.")
    return value


def named_path(value: str, name: str) -> str:
    """A path a tool names, kept exactly as sent; it must not be empty."""
    if not value:
        raise BadPayload(f"The hook payload's {name} is empty.")
    return value


def tool_event(
    phase: str, tool: str, edit_tools: Sequence[str], shell_tools: Sequence[str]
) -> Event:
    """What a tool call is about: `phase` is "pre" or "post"."""
    if tool in edit_tools:
        return "pre-edit" if phase == "pre" else "post-edit"
    if tool in shell_tools:
        return "pre-shell" if phase == "pre" else "post-shell"
    return "other"


def spoken(verdict: Verdict) -> str:
    """What a non-refusing verdict says to the agent: the context, then the warning, marked."""
    parts = [verdict.context] if verdict.context else []
    if verdict.warning:
        parts.append(WARNING + verdict.warning)
    return "\n".join(parts)


def reply_json(value: object) -> str:
    """One line of JSON for stdout. ASCII only: the harness reads it through a pipe whose
    encoding versatil does not choose, and escaped JSON is the same text in every one."""
    return json.dumps(value, ensure_ascii=True) + "\n"


def lifecycle(
    harness: str, kind: str, session_id: str, where: str, payload: JSONObject, *,
    agent_id: str = "", env_file: str = "",
) -> HookCall:
    """The call for a session's start or end (``kind``), its ``source`` / ``reason`` kept as
    the call's detail."""
    key = "source" if kind == "session-start" else "reason"
    event: Event = "session-start" if kind == "session-start" else "session-end"
    return HookCall(harness, event, session_id, where, agent_id=agent_id, env_file=env_file,
                    detail=text(payload, key, required=False))


def context_reply(native: str | None, verdict: Verdict) -> Reply:
    """Claude Code's shape of telling the agent something (Gemini CLI and Codex share it):
    ``hookSpecificOutput.additionalContext`` for the ``native`` event that has it, a warning
    also shown to the user as ``systemMessage``; with no such event (``None``), only a
    ``systemMessage``, the channel every event has."""
    said = spoken(verdict)
    if native is None:
        return Reply(stdout=reply_json({"systemMessage": said}))
    out: dict[str, object] = {
        "hookSpecificOutput": {"hookEventName": native, "additionalContext": said},
    }
    if verdict.warning:
        out["systemMessage"] = WARNING + verdict.warning
    return Reply(stdout=reply_json(out))
