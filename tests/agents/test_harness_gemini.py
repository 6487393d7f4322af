"""Gemini CLI's adapter against https://geminicli.com/docs/hooks/reference (fixtures in
payloads/gemini/)."""

from __future__ import annotations

import json

import pytest
from harness_cases import documented, payload, stdout_json

from versatil_fs.agents.harnesses import parse, render
from versatil_fs.agents.protocol import BadPayload, HookCall, Reply, Verdict

SESSION = "b5f1c2d3-4e5f-6a7b-8c9d-0e1f2a3b4c5d"
ROOT = "/home/dev/shop"
CART = f"{ROOT}/src/cart.py"


def call(name: str) -> HookCall:
    return parse("gemini", documented("gemini", name), {}, "/elsewhere")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("before_tool_write_file",
         HookCall("gemini", "pre-edit", SESSION, ROOT, tool="write_file", paths=(CART,))),
        ("before_tool_replace",
         HookCall("gemini", "pre-edit", SESSION, ROOT, tool="replace", paths=(CART,))),
        ("before_tool_shell",
         HookCall("gemini", "pre-shell", SESSION, ROOT, tool="run_shell_command")),
        ("after_tool_replace",
         HookCall("gemini", "post-edit", SESSION, ROOT, tool="replace", paths=(CART,))),
        ("after_tool_shell",
         HookCall("gemini", "post-shell", SESSION, ROOT, tool="run_shell_command")),
        ("session_start", HookCall("gemini", "session-start", SESSION, ROOT, detail="startup")),
        ("session_end", HookCall("gemini", "session-end", SESSION, ROOT, detail="exit")),
        ("before_agent", HookCall("gemini", "other", SESSION, ROOT)),
    ],
)
def test_documented_payloads_parse(name: str, expected: HookCall) -> None:
    assert call(name) == expected


def test_deny_before_a_tool_is_decision_deny_with_the_reason_for_the_agent() -> None:
    reply = render("gemini", call("before_tool_replace"), Verdict(deny="held by bob"))
    assert (reply.exit_code, reply.stderr) == (0, "")
    assert stdout_json(reply) == {"decision": "deny", "reason": "held by bob"}


@pytest.mark.parametrize("name", ["after_tool_replace", "session_start", None])
def test_deny_elsewhere_is_exit_2_with_stderr(name: str | None) -> None:
    target = call(name) if name else None
    assert render("gemini", target, Verdict(deny="no")) == Reply(stderr="no\n", exit_code=2)


@pytest.mark.parametrize(
    ("name", "event_name"),
    [("after_tool_shell", "AfterTool"), ("after_tool_replace", "AfterTool"),
     ("session_start", "SessionStart")],
)
def test_context_is_additional_context_where_gemini_reads_it(name: str, event_name: str) -> None:
    assert stdout_json(render("gemini", call(name), Verdict(context="c"))) == {
        "hookSpecificOutput": {"hookEventName": event_name, "additionalContext": "c"}}


@pytest.mark.parametrize("name", ["before_tool_replace", "session_end", None])
def test_context_without_an_agent_channel_is_a_system_message(name: str | None) -> None:
    target = call(name) if name else None
    assert stdout_json(render("gemini", target, Verdict(warning="w"))) == {
        "systemMessage": "versatil warning: w"}


def test_a_warning_after_a_tool_reaches_agent_and_user() -> None:
    assert stdout_json(render("gemini", call("after_tool_shell"), Verdict(warning="w"))) == {
        "hookSpecificOutput": {"hookEventName": "AfterTool",
                               "additionalContext": "versatil warning: w"},
        "systemMessage": "versatil warning: w",
    }


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda d: d.pop("session_id"), "no session_id"),
        (lambda d: d.update(hook_event_name=None), "no hook_event_name"),
        (lambda d: d.update(tool_input=[]), "tool_input is not an object"),
        (lambda d: d["tool_input"].pop("file_path"), "no tool_input.file_path"),
        (lambda d: d["tool_input"].update(file_path=3), "file_path is not a string"),
    ],
)
def test_a_broken_payload_is_one_sentence(change: object, says: str) -> None:
    data = payload("gemini", "before_tool_write_file")
    change(data)  # type: ignore[operator]
    with pytest.raises(BadPayload, match=says):
        parse("gemini", json.dumps(data).encode(), {}, "/x")
