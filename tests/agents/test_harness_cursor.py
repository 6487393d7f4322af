"""Cursor's adapter against https://cursor.com/docs/agent/hooks (fixtures in payloads/cursor/)."""

from __future__ import annotations

import json

import pytest
from harness_cases import documented, payload, stdout_json

from versatil_fs.agents.harnesses import parse, render
from versatil_fs.agents.protocol import BadPayload, HookCall, Reply, Verdict

SESSION = "c0ffee12-3456-7890-abcd-ef0123456789"
ROOT = "/home/dev/shop"


def call(name: str) -> HookCall:
    return parse("cursor", documented("cursor", name), {}, "/elsewhere")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pre_tool_use_write",
         HookCall("cursor", "pre-edit", SESSION, ROOT, tool="Write", paths=("src/cart.py",))),
        ("pre_tool_use_delete",
         HookCall("cursor", "pre-edit", SESSION, ROOT, tool="Delete",
                  paths=(f"{ROOT}/src/legacy.py",))),
        ("pre_tool_use_shell", HookCall("cursor", "pre-shell", SESSION, ROOT, tool="Shell")),
        ("post_tool_use_write",
         HookCall("cursor", "post-edit", SESSION, ROOT, tool="Write", paths=("src/cart.py",))),
        # Session events carry no cwd: the first workspace root stands for it.
        ("session_start", HookCall("cursor", "session-start", SESSION, ROOT)),
        ("session_end", HookCall("cursor", "session-end", SESSION, ROOT, detail="completed")),
        ("before_submit_prompt", HookCall("cursor", "other", SESSION, ROOT)),
    ],
)
def test_documented_payloads_parse(name: str, expected: HookCall) -> None:
    assert call(name) == expected


def test_deny_is_permission_deny_with_a_message_for_the_user_and_the_agent() -> None:
    reply = render("cursor", call("pre_tool_use_write"), Verdict(deny="held by bob"))
    assert (reply.exit_code, reply.stderr) == (0, "")
    assert stdout_json(reply) == {
        "permission": "deny", "user_message": "held by bob", "agent_message": "held by bob"}


@pytest.mark.parametrize("name", ["post_tool_use_write", "session_start", None])
def test_deny_outside_a_permission_event_is_exit_2(name: str | None) -> None:
    target = call(name) if name else None
    assert render("cursor", target, Verdict(deny="no")) == Reply(stderr="no\n", exit_code=2)


def test_context_before_a_tool_is_an_agent_message_and_grants_nothing() -> None:
    reply = stdout_json(render("cursor", call("pre_tool_use_shell"), Verdict(context="c")))
    assert reply == {"agent_message": "c"}


def test_a_warning_before_a_tool_is_also_shown_to_the_user() -> None:
    reply = stdout_json(render("cursor", call("pre_tool_use_write"), Verdict(warning="w")))
    assert reply == {"agent_message": "versatil warning: w", "user_message": "versatil warning: w"}


@pytest.mark.parametrize("name", ["post_tool_use_write", "session_start"])
def test_context_after_a_tool_and_at_session_start_is_additional_context(name: str) -> None:
    assert stdout_json(render("cursor", call(name), Verdict(context="c"))) == {
        "additional_context": "c"}


@pytest.mark.parametrize("name", ["session_end", None])
def test_context_nobody_can_read_goes_to_stderr_with_exit_0(name: str | None) -> None:
    target = call(name) if name else None
    assert render("cursor", target, Verdict(context="c")) == Reply(stderr="c\n")


def test_a_payload_with_session_id_and_no_conversation_id_is_read() -> None:
    data = payload("cursor", "session_start")
    del data["conversation_id"]
    assert parse("cursor", json.dumps(data).encode(), {}, "/x").session_id == SESSION


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda d: d.pop("conversation_id"), "conversation_id is empty"),
        (lambda d: d.update(conversation_id={}), "conversation_id is not a string"),
        (lambda d: d.update(tool_input={"contents": "x"}), "names no file"),
        (lambda d: d.update(tool_input={"file_path": ""}), "file_path is empty"),
        (lambda d: d.update(cwd="shop"), "not an absolute path"),
    ],
)
def test_a_broken_payload_is_one_sentence(change: object, says: str) -> None:
    data = payload("cursor", "pre_tool_use_write")
    change(data)  # type: ignore[operator]
    with pytest.raises(BadPayload, match=says):
        parse("cursor", json.dumps(data).encode(), {}, "/x")
