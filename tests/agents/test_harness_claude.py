"""Claude Code's adapter against the payloads and replies https://code.claude.com/docs/en/hooks
documents (fixtures in payloads/claude/, each citing its section)."""

from __future__ import annotations

import json

import pytest
from harness_cases import documented, payload, stdout_json

from versatil_fs.agents.harnesses import parse, render
from versatil_fs.agents.protocol import BadPayload, HookCall, Reply, Verdict

SESSION = "00893aaf-19fa-41d2-8238-13269b9b3ca0"
ROOT = "/home/dev/shop"
CART = f"{ROOT}/src/cart.py"


def call(name: str, env: dict[str, str] | None = None) -> HookCall:
    return parse("claude", documented("claude", name), env or {}, "/elsewhere")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pre_tool_use_write",
         HookCall("claude", "pre-edit", SESSION, ROOT, tool="Write", paths=(CART,))),
        ("pre_tool_use_edit_subagent",
         HookCall("claude", "pre-edit", SESSION, ROOT, tool="Edit", paths=(CART,),
                  agent_id="agent-7f3c")),
        ("pre_tool_use_notebook_edit",
         HookCall("claude", "pre-edit", SESSION, ROOT, tool="NotebookEdit",
                  paths=(f"{ROOT}/notes/analysis.ipynb",))),
        ("pre_tool_use_bash", HookCall("claude", "pre-shell", SESSION, ROOT, tool="Bash")),
        ("pre_tool_use_read", HookCall("claude", "other", SESSION, ROOT, tool="Read")),
        ("post_tool_use_write",
         HookCall("claude", "post-edit", SESSION, ROOT, tool="Write", paths=(CART,))),
        ("post_tool_use_bash", HookCall("claude", "post-shell", SESSION, ROOT, tool="Bash")),
        ("session_start", HookCall("claude", "session-start", SESSION, ROOT, detail="startup")),
        ("session_end",
         HookCall("claude", "session-end", SESSION, ROOT, detail="prompt_input_exit")),
        ("user_prompt_submit", HookCall("claude", "other", SESSION, ROOT)),
    ],
)
def test_documented_payloads_parse(name: str, expected: HookCall) -> None:
    assert call(name) == expected


def test_the_env_file_is_claude_env_file_on_session_start_only() -> None:
    env = {"CLAUDE_ENV_FILE": "/home/dev/.claude/session-env/abc.sh"}
    assert call("session_start", env).env_file == "/home/dev/.claude/session-env/abc.sh"
    assert call("pre_tool_use_write", env).env_file == ""
    assert call("session_start").env_file == ""


def test_a_payload_without_cwd_takes_the_hook_process_cwd() -> None:
    data = payload("claude", "pre_tool_use_write")
    del data["cwd"]
    assert parse("claude", json.dumps(data).encode(), {}, "/proc/cwd").cwd == "/proc/cwd"


def test_deny_before_a_tool_is_permission_decision_deny_with_exit_0() -> None:
    reply = render("claude", call("pre_tool_use_write"), Verdict(deny="src/cart.py is held."))
    assert (reply.exit_code, reply.stderr) == (0, "")
    assert stdout_json(reply) == {"hookSpecificOutput": {
        "hookEventName": "PreToolUse",
        "permissionDecision": "deny",
        "permissionDecisionReason": "src/cart.py is held.",
    }}


def test_deny_after_a_tool_is_decision_block() -> None:
    reply = render("claude", call("post_tool_use_write"), Verdict(deny="held"))
    assert reply.exit_code == 0
    assert stdout_json(reply) == {"decision": "block", "reason": "held"}


@pytest.mark.parametrize("name", ["session_start", "session_end", "user_prompt_submit"])
def test_deny_without_a_permission_decision_is_exit_2_and_stderr(name: str) -> None:
    assert render("claude", call(name), Verdict(deny="no")) == Reply(stderr="no\n", exit_code=2)


def test_deny_for_an_unreadable_payload_is_exit_2_and_stderr() -> None:
    assert render("claude", None, Verdict(deny="cannot check")) == Reply(
        stderr="cannot check\n", exit_code=2)


@pytest.mark.parametrize(
    ("name", "event_name"),
    [
        ("pre_tool_use_write", "PreToolUse"),
        ("pre_tool_use_bash", "PreToolUse"),
        ("post_tool_use_bash", "PostToolUse"),
        ("session_start", "SessionStart"),
    ],
)
def test_context_is_additional_context_for_that_event(name: str, event_name: str) -> None:
    reply = render("claude", call(name), Verdict(context="bob holds src/cart.py"))
    assert (reply.exit_code, reply.stderr) == (0, "")
    assert stdout_json(reply) == {"hookSpecificOutput": {
        "hookEventName": event_name, "additionalContext": "bob holds src/cart.py"}}


def test_a_warning_is_marked_and_also_shown_to_the_user() -> None:
    reply = render("claude", call("pre_tool_use_write"), Verdict(warning="state damaged"))
    assert stdout_json(reply) == {
        "hookSpecificOutput": {"hookEventName": "PreToolUse",
                               "additionalContext": "versatil warning: state damaged"},
        "systemMessage": "versatil warning: state damaged",
    }


def test_context_and_warning_together_both_reach_the_agent() -> None:
    reply = render("claude", call("session_start"), Verdict(context="ctx", warning="w"))
    assert stdout_json(reply)["hookSpecificOutput"]["additionalContext"] == (
        "ctx\nversatil warning: w")


@pytest.mark.parametrize("which", ["session_end", None])
def test_where_no_agent_listens_the_user_is_told(which: str | None) -> None:
    target = call(which) if which else None
    reply = render("claude", target, Verdict(warning="could not release"))
    assert stdout_json(reply) == {"systemMessage": "versatil warning: could not release"}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda d: d.pop("session_id"), "no session_id"),
        (lambda d: d.update(session_id=""), "session_id is empty"),
        (lambda d: d.update(session_id=7), "session_id is not a string"),
        (lambda d: d.pop("hook_event_name"), "no hook_event_name"),
        (lambda d: d.pop("tool_name"), "no tool_name"),
        (lambda d: d.update(tool_input="x"), "tool_input is not an object"),
        (lambda d: d["tool_input"].pop("file_path"), "no tool_input.file_path"),
        (lambda d: d["tool_input"].update(file_path=""), "tool_input.file_path is empty"),
        (lambda d: d["tool_input"].update(file_path="/a\x00b"), "NUL"),
        (lambda d: d["tool_input"].update(file_path="\ud800"), "not valid Unicode"),
        (lambda d: d.update(cwd="relative/dir"), "not an absolute path"),
        (lambda d: d.update(agent_id=["x"]), "agent_id is not a string"),
    ],
)
def test_a_broken_payload_is_one_sentence(change: object, says: str) -> None:
    data = payload("claude", "pre_tool_use_write")
    change(data)  # type: ignore[operator]
    with pytest.raises(BadPayload, match=says) as raised:
        parse("claude", json.dumps(data).encode(), {}, "/x")
    assert "\n" not in str(raised.value)
