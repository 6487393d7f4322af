"""Codex CLI's adapter against the payloads its hook schemas define
(https://developers.openai.com/codex/hooks; github.com/openai/codex
codex-rs/hooks/schema/generated/*.json), fixtures in payloads/codex/."""

from __future__ import annotations

import json

import pytest
from harness_cases import documented, payload, stdout_json

from versatil_fs.agents.harnesses import parse, render
from versatil_fs.agents.protocol import BadPayload, HookCall, Reply, Verdict

SESSION = "019a6c0e-5f0d-7c52-b2e4-1b8a2f0e9c11"
ROOT = "/home/dev/shop"
PATCHED = ("docs/release notes.md", "src/cart.py", "src/basket.py", "src/legacy.py", "README.md")


def call(name: str, env: dict[str, str] | None = None) -> HookCall:
    return parse("codex", documented("codex", name), env or {}, "/elsewhere")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # The patch adds, updates and moves, and deletes: every path, a move's both ends.
        ("pre_tool_use_apply_patch",
         HookCall("codex", "pre-edit", SESSION, ROOT, tool="apply_patch", paths=PATCHED)),
        ("post_tool_use_apply_patch",
         HookCall("codex", "post-edit", SESSION, ROOT, tool="apply_patch", paths=PATCHED)),
        ("pre_tool_use_subagent",
         HookCall("codex", "pre-edit", SESSION, ROOT, tool="apply_patch", paths=("notes.txt",),
                  agent_id="sub-1")),
        ("pre_tool_use_bash", HookCall("codex", "pre-shell", SESSION, ROOT, tool="Bash")),
        ("session_start", HookCall("codex", "session-start", SESSION, ROOT, detail="startup")),
        ("stop", HookCall("codex", "other", SESSION, ROOT)),
    ],
)
def test_documented_payloads_parse(name: str, expected: HookCall) -> None:
    assert call(name) == expected


def test_the_patch_is_also_read_from_the_argv_form() -> None:
    data = payload("codex", "pre_tool_use_apply_patch")
    data["tool_input"]["command"] = ["apply_patch", data["tool_input"]["command"]]
    assert parse("codex", json.dumps(data).encode(), {}, "/x").paths == PATCHED


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CODEX_ENV_FILE": "/tmp/codex-env"}, "/tmp/codex-env"),
        ({"CLAUDE_ENV_FILE": "/tmp/claude-env"}, "/tmp/claude-env"),
        ({"CODEX_ENV_FILE": "/tmp/a", "CLAUDE_ENV_FILE": "/tmp/b"}, "/tmp/a"),
        ({}, ""),
    ],
)
def test_the_session_start_env_file_is_the_one_codex_set(
    env: dict[str, str], expected: str
) -> None:
    assert call("session_start", env).env_file == expected


def test_deny_is_permission_decision_deny_which_codex_blocks_on() -> None:
    reply = render("codex", call("pre_tool_use_apply_patch"), Verdict(deny="held"))
    assert (reply.exit_code, reply.stderr) == (0, "")
    assert stdout_json(reply) == {"hookSpecificOutput": {
        "hookEventName": "PreToolUse", "permissionDecision": "deny",
        "permissionDecisionReason": "held"}}


def test_deny_for_an_unreadable_payload_is_exit_2_with_a_reason_on_stderr() -> None:
    # Codex treats exit 2 without a stderr reason as a failed hook, not a block: the reason
    # must be there.
    assert render("codex", None, Verdict(deny="cannot check")) == Reply(
        stderr="cannot check\n", exit_code=2)


@pytest.mark.parametrize(
    ("name", "event_name"),
    [("post_tool_use_apply_patch", "PostToolUse"), ("session_start", "SessionStart")],
)
def test_context_is_additional_context(name: str, event_name: str) -> None:
    assert stdout_json(render("codex", call(name), Verdict(context="c"))) == {
        "hookSpecificOutput": {"hookEventName": event_name, "additionalContext": "c"}}


def test_before_a_tool_context_is_a_system_message_since_codex_rejects_additional_context() -> None:
    # openai/codex#19385: "PreToolUse hook returned unsupported additionalContext".
    for name in ("pre_tool_use_bash", "pre_tool_use_apply_patch"):
        assert stdout_json(render("codex", call(name), Verdict(warning="w"))) == {
            "systemMessage": "versatil warning: w"}


def test_a_warning_after_a_tool_is_marked_for_agent_and_user() -> None:
    reply = stdout_json(render("codex", call("post_tool_use_apply_patch"), Verdict(warning="w")))
    assert reply["systemMessage"] == "versatil warning: w"
    assert reply["hookSpecificOutput"]["additionalContext"] == "versatil warning: w"


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("echo hi", "Begin Patch"),
        ({"patch": "x"}, "not an apply_patch patch"),
        (["apply_patch"], "Begin Patch"),
        ([], "not an apply_patch patch"),
        ("*** Begin Patch\n*** Update File: a\n*** End Patch", "changes nothing"),
        ("*** Begin Patch\n*** Delete File: a\x00b\n*** End Patch", "NUL"),
    ],
)
def test_a_bad_patch_is_one_sentence(command: object, says: str) -> None:
    data = payload("codex", "pre_tool_use_apply_patch")
    data["tool_input"]["command"] = command
    with pytest.raises(BadPayload, match=says):
        parse("codex", json.dumps(data).encode(), {}, "/x")
