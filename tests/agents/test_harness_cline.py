"""Cline's adapter against https://docs.cline.bot/features/hooks/hook-reference (fixtures in
payloads/cline/)."""

from __future__ import annotations

import json

import pytest
from harness_cases import documented, payload, stdout_json

from versatil_fs.agents.harnesses import parse, render
from versatil_fs.agents.protocol import BadPayload, HookCall, Verdict

TASK = "1764590400123"
ROOT = "/home/dev/shop"


def call(name: str) -> HookCall:
    return parse("cline", documented("cline", name), {}, "/elsewhere")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pre_tool_use_write_to_file",
         HookCall("cline", "pre-edit", TASK, ROOT, tool="write_to_file", paths=("src/cart.py",))),
        ("pre_tool_use_replace_in_file",
         HookCall("cline", "pre-edit", TASK, ROOT, tool="replace_in_file",
                  paths=("src/cart.py",))),
        ("pre_tool_use_execute_command",
         HookCall("cline", "pre-shell", TASK, ROOT, tool="execute_command")),
        ("post_tool_use_write_to_file",
         HookCall("cline", "post-edit", TASK, ROOT, tool="write_to_file",
                  paths=("src/cart.py",))),
        ("task_start", HookCall("cline", "session-start", TASK, ROOT, detail="start")),
        ("task_resume", HookCall("cline", "session-start", TASK, ROOT, detail="resume")),
        ("task_complete", HookCall("cline", "session-end", TASK, ROOT, detail="complete")),
        ("task_cancel", HookCall("cline", "session-end", TASK, ROOT, detail="cancel")),
        ("user_prompt_submit", HookCall("cline", "other", TASK, ROOT)),
    ],
)
def test_documented_payloads_parse(name: str, expected: HookCall) -> None:
    assert call(name) == expected


def test_an_apply_patch_call_names_the_patch_files() -> None:
    data = payload("cline", "pre_tool_use_write_to_file")
    data["preToolUse"] = {"toolName": "apply_patch", "parameters": {
        "input": "*** Begin Patch\n*** Delete File: old.py\n*** End Patch"}}
    assert parse("cline", json.dumps(data).encode(), {}, "/x").paths == ("old.py",)
    data["preToolUse"]["parameters"] = {}
    with pytest.raises(BadPayload, match=r"no preToolUse\.parameters\.input"):
        parse("cline", json.dumps(data).encode(), {}, "/x")


def test_a_new_rule_call_names_its_rule_file() -> None:
    data = payload("cline", "pre_tool_use_write_to_file")
    data["preToolUse"] = {"toolName": "new_rule", "parameters": {
        "path": ".clinerules/testing.md", "content": "# Testing"}}
    assert parse("cline", json.dumps(data).encode(), {}, "/x").paths == (".clinerules/testing.md",)


@pytest.mark.parametrize("name", ["pre_tool_use_write_to_file", "task_start", None])
def test_deny_is_cancel_with_the_reason_for_the_user_and_the_model(name: str | None) -> None:
    # One reply shape for every Cline hook: even an unreadable payload gets the native refusal.
    target = call(name) if name else None
    reply = render("cline", target, Verdict(deny="held by bob"))
    assert (reply.exit_code, reply.stderr) == (0, "")
    assert stdout_json(reply) == {
        "cancel": True, "errorMessage": "held by bob", "contextModification": "held by bob"}


@pytest.mark.parametrize(
    ("verdict", "said"),
    [(Verdict(context="c"), "c"), (Verdict(warning="w"), "versatil warning: w"),
     (Verdict(context="c", warning="w"), "c\nversatil warning: w")],
)
def test_context_and_warnings_are_a_context_modification(verdict: Verdict, said: str) -> None:
    reply = render("cline", call("post_tool_use_write_to_file"), verdict)
    assert stdout_json(reply) == {"cancel": False, "contextModification": said}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda d: d.pop("taskId"), "no taskId"),
        (lambda d: d.update(hookName=1), "hookName is not a string"),
        (lambda d: d.pop("preToolUse"), "no preToolUse"),
        (lambda d: d["preToolUse"].pop("toolName"), "no preToolUse.toolName"),
        (lambda d: d["preToolUse"].update(parameters="x"), "parameters is not an object"),
        (lambda d: d["preToolUse"]["parameters"].pop("path"), "no preToolUse.parameters.path"),
        (lambda d: d.update(workspaceRoots=["relative"]), "not an absolute path"),
    ],
)
def test_a_broken_payload_is_one_sentence(change: object, says: str) -> None:
    data = payload("cline", "pre_tool_use_write_to_file")
    change(data)  # type: ignore[operator]
    with pytest.raises(BadPayload, match=says):
        parse("cline", json.dumps(data).encode(), {}, "/x")
