"""Each harness's own hook protocol, on both sides of the one decision core: :func:`parse` turns
the JSON a harness writes on a hook's stdin into a :class:`HookCall`, :func:`render` turns a
:class:`Verdict` into the reply that harness reads back (stdout, stderr, exit code), and
:data:`HOOKS` says which events `versatil integrate` must install for it.

One module per harness holds its details, each citing the page it was read from
(`harness_claude` for Claude Code and Codex, `harness_gemini`, `harness_cursor`, `harness_cline`,
`harness_copilot`); `codex_patch` reads apply_patch patches. All of it is stdlib only and pure:
the lean `versatil agent-hook` process imports it before every edit an agent makes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from versatil_fs.agents.harness_claude import (
    CLAUDE_EDIT_TOOLS,
    CLAUDE_SHELL_TOOLS,
    CODEX_EDIT_TOOLS,
    CODEX_SHELL_TOOLS,
    parse_claude,
    parse_codex,
    render_claude,
    render_codex,
)
from versatil_fs.agents.harness_cline import (
    CLINE_EDIT_TOOLS,
    CLINE_SHELL_TOOLS,
    parse_cline,
    render_cline,
)
from versatil_fs.agents.harness_copilot import (
    COPILOT_EDIT_TOOLS,
    COPILOT_SHELL_TOOLS,
    HOOK_EVENT_ENV,
    parse_copilot,
    render_copilot,
)
from versatil_fs.agents.harness_cursor import (
    CURSOR_EDIT_TOOLS,
    CURSOR_SHELL_TOOLS,
    parse_cursor,
    render_cursor,
)
from versatil_fs.agents.harness_gemini import (
    GEMINI_EDIT_TOOLS,
    GEMINI_SHELL_TOOLS,
    parse_gemini,
    render_gemini,
)
from versatil_fs.agents.harness_payload import MAX_PAYLOAD, JSONObject, load, spoken
from versatil_fs.agents.protocol import HARNESSES, BadPayload, HookCall, Reply, Verdict

__all__ = [
    "EDIT_TOOLS",
    "HOOKS",
    "HOOK_EVENT_ENV",
    "MAX_PAYLOAD",
    "SHELL_TOOLS",
    "HookSpec",
    "hooks_for",
    "parse",
    "render",
]


@dataclass(frozen=True)
class HookSpec:
    """One hook `versatil integrate` installs for a harness.

    - `event`: the harness's own event name ("PreToolUse", "BeforeTool", "preToolUse"; for
      Cline, the hook file's name);
    - `matcher`: the tool-name matcher, where the harness's config has one for that event (None:
      no matcher, the hook runs for every tool or the event takes none);
    - `timeout`: seconds, where the config takes a timeout (None: leave the harness's default).
      Gemini CLI's `timeout` is in milliseconds: write :attr:`timeout_ms` there;
    - `env`: variables the hook entry must set, where the config has an `env` (Copilot: which
      event a camelCase payload is for, since the payload does not say).
    """

    event: str
    matcher: str | None = None
    timeout: int | None = None
    env: tuple[tuple[str, str], ...] = ()

    @property
    def timeout_ms(self) -> int | None:
        return None if self.timeout is None else self.timeout * 1000


# The documented tools that write files (their paths become the call's `paths`) and the shell
# tools (no paths; what they changed is seen after the fact), per harness.
EDIT_TOOLS: dict[str, tuple[str, ...]] = {
    "claude": CLAUDE_EDIT_TOOLS,
    "codex": CODEX_EDIT_TOOLS,
    "gemini": GEMINI_EDIT_TOOLS,
    "cursor": CURSOR_EDIT_TOOLS,
    "cline": CLINE_EDIT_TOOLS,
    "copilot": COPILOT_EDIT_TOOLS,
}
SHELL_TOOLS: dict[str, tuple[str, ...]] = {
    "claude": CLAUDE_SHELL_TOOLS,
    "codex": CODEX_SHELL_TOOLS,
    "gemini": GEMINI_SHELL_TOOLS,
    "cursor": CURSOR_SHELL_TOOLS,
    "cline": CLINE_SHELL_TOOLS,
    "copilot": COPILOT_SHELL_TOOLS,
}


def _tools(harness: str) -> str:
    return "|".join(EDIT_TOOLS[harness] + SHELL_TOOLS[harness])


# A pre-edit hook that hangs holds the agent up until the harness's timeout, and every harness
# then lets the edit through: 10 s is far above a decision (tens of ms) and well below the
# defaults (60-600 s) a stuck hook would otherwise cost. SessionEnd gets 2 s: Claude Code gives
# its SessionEnd hooks about 1.5 s before it exits, and a release is one transaction.
_TOOL_TIMEOUT = 10
_START_TIMEOUT = 10
_END_TIMEOUT = 2


def _copilot(event: str, timeout: int) -> HookSpec:
    return HookSpec(event, None, timeout, ((HOOK_EVENT_ENV, event),))


HOOKS: dict[str, tuple[HookSpec, ...]] = {
    # https://code.claude.com/docs/en/hooks: matchers apply to PreToolUse/PostToolUse (tool
    # names) and SessionStart (its source); None on SessionStart/SessionEnd means every source
    # and every reason.
    "claude": (
        HookSpec("SessionStart", None, _START_TIMEOUT),
        HookSpec("PreToolUse", _tools("claude"), _TOOL_TIMEOUT),
        HookSpec("PostToolUse", _tools("claude"), _TOOL_TIMEOUT),
        HookSpec("SessionEnd", None, _END_TIMEOUT),
    ),
    # https://developers.openai.com/codex/hooks: same file shape as Claude Code's. Codex has no
    # SessionEnd event: its session's claims end with the Codex process (the keeper) or their TTL.
    "codex": (
        HookSpec("SessionStart", None, _START_TIMEOUT),
        HookSpec("PreToolUse", _tools("codex"), _TOOL_TIMEOUT),
        HookSpec("PostToolUse", _tools("codex"), _TOOL_TIMEOUT),
    ),
    # https://geminicli.com/docs/hooks/reference: the matcher is a regular expression for tool
    # events; SessionEnd is best effort (the CLI does not wait for it).
    "gemini": (
        HookSpec("SessionStart", None, _START_TIMEOUT),
        HookSpec("BeforeTool", _tools("gemini"), _TOOL_TIMEOUT),
        HookSpec("AfterTool", _tools("gemini"), _TOOL_TIMEOUT),
        HookSpec("SessionEnd", None, _END_TIMEOUT),
    ),
    # https://cursor.com/docs/hooks: `matcher` filters preToolUse/postToolUse by tool
    # type. No timeout is written: the page's unit for it is not certain, Cursor's default holds.
    "cursor": (
        HookSpec("sessionStart"),
        HookSpec("preToolUse", _tools("cursor")),
        HookSpec("postToolUse", _tools("cursor")),
        HookSpec("sessionEnd"),
    ),
    # https://docs.cline.bot/features/hooks/hook-reference: one executable per event, named after
    # it, no matcher, a fixed 30 s timeout. The task is the session (see harness_cline).
    "cline": (
        HookSpec("TaskStart"),
        HookSpec("TaskResume"),
        HookSpec("PreToolUse"),
        HookSpec("PostToolUse"),
        HookSpec("TaskComplete"),
        HookSpec("TaskCancel"),
    ),
    # https://docs.github.com/en/copilot/reference/copilot-cli-reference/cli-hooks-reference:
    # preToolUse/postToolUse take no matcher (every tool comes through); `timeoutSec` in seconds.
    "copilot": (
        _copilot("sessionStart", _START_TIMEOUT),
        _copilot("preToolUse", _TOOL_TIMEOUT),
        _copilot("postToolUse", _TOOL_TIMEOUT),
        _copilot("sessionEnd", _END_TIMEOUT),
    ),
}

_Parser = Callable[[JSONObject, Mapping[str, str], str], HookCall]
_Renderer = Callable[[HookCall | None, Verdict], Reply]

_ADAPTERS: dict[str, tuple[_Parser, _Renderer]] = {
    "claude": (parse_claude, render_claude),
    "codex": (parse_codex, render_codex),
    "gemini": (parse_gemini, render_gemini),
    "cursor": (parse_cursor, render_cursor),
    "cline": (parse_cline, render_cline),
    "copilot": (parse_copilot, render_copilot),
}


def _adapter(harness: str) -> tuple[_Parser, _Renderer]:
    adapter = _ADAPTERS.get(harness)
    if adapter is None:
        raise BadPayload(f"Unknown harness {harness!r}; versatil knows {', '.join(HARNESSES)}.")
    return adapter


def parse(harness: str, raw: bytes, env: Mapping[str, str], cwd: str) -> HookCall:
    """What one hook call of `harness` is about, read from the bytes it wrote on stdin.

    `env` is the hook process's environment (Claude Code's $CLAUDE_ENV_FILE comes from there),
    `cwd` the hook process's working directory, used when the payload names none. Paths are kept
    exactly as sent (absolute, or relative to the call's cwd). A tool that writes files gives
    "pre-edit"/"post-edit" with its paths, a shell tool "pre-shell"/"post-shell", anything else
    "other". `session_id` is the harness's session (Cursor: conversation; Cline: task) id.

    Raises :class:`BadPayload` (one sentence) and nothing else, whatever the bytes: for a payload
    over :data:`MAX_PAYLOAD` (refused before it is decoded), not UTF-8, not JSON, not an object,
    a required field missing or of the wrong type, a malformed patch, or an unknown harness.
    """
    parser, _ = _adapter(harness)
    return parser(load(raw), env, cwd)


def render(harness: str, call: HookCall | None, verdict: Verdict) -> Reply:
    """The reply `harness` reads for `verdict` on `call` (None when the payload could not be
    read: the fail policy still answers, in the harness's event-independent form).

    A silent verdict is always ``Reply()``: exit 0, nothing printed, no decision — never an
    explicit "allow", which would skip the user's own permission prompt. A deny is the harness's
    native refusal for that event; context is said to the agent through the harness's channel for
    that event (or the closest documented one); a warning likewise, marked "versatil warning: ".
    For an unknown harness: a deny is exit 2 with the reason on stderr (the most widely read
    refusal), anything else goes to stderr with exit 0.
    """
    if verdict.silent:
        return Reply()
    adapter = _ADAPTERS.get(harness)
    if adapter is None:
        if verdict.deny:
            return Reply(stderr=verdict.deny + "\n", exit_code=2)
        return Reply(stderr=spoken(verdict) + "\n")
    return adapter[1](call, verdict)


def hooks_for(harness: str, wait_on_edit: float) -> tuple[HookSpec, ...]:
    """:data:`HOOKS` for ``harness``, with the before-a-tool timeout raised to cover
    ``[agents] wait_on_edit``: a harness that times a hook out lets the edit through, so a claim
    allowed to queue for 30 s needs a hook allowed to run for longer than that."""
    wanted = _TOOL_TIMEOUT + math.ceil(wait_on_edit)
    return tuple(
        replace(spec, timeout=max(spec.timeout, wanted))
        if spec.timeout is not None and spec.event in _BEFORE_TOOL else spec
        for spec in HOOKS[harness]
    )


# The harnesses' own names of the event before a tool runs.
_BEFORE_TOOL = frozenset({"PreToolUse", "BeforeTool", "preToolUse"})
