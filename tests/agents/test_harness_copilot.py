"""GitHub Copilot's adapter against
https://docs.github.com/en/copilot/reference/copilot-cli-reference/cli-hooks-reference
(fixtures in payloads/copilot/)."""

from __future__ import annotations

import hashlib
import json

import pytest
from harness_cases import documented, payload, stdout_json

from versatil_fs.agents.harnesses import HOOK_EVENT_ENV, HOOKS, parse, render
from versatil_fs.agents.protocol import BadPayload, HookCall, Reply, Verdict

SESSION = "6f1d2c3b-4a59-4e8f-9d0c-1b2a3c4d5e6f"
ROOT = "/home/dev/shop"


def call(name: str, event: str = "") -> HookCall:
    env = {HOOK_EVENT_ENV: event} if event else {}
    return parse("copilot", documented("copilot", name), env, "/elsewhere")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pre_tool_use_edit",
         HookCall("copilot", "pre-edit", SESSION, ROOT, tool="edit", paths=("src/cart.py",))),
        ("pre_tool_use_create_args_string",
         HookCall("copilot", "pre-edit", SESSION, ROOT, tool="create",
                  paths=("src/basket.py",))),
        ("pre_tool_use_bash", HookCall("copilot", "pre-shell", SESSION, ROOT, tool="bash")),
        ("post_tool_use_edit",
         HookCall("copilot", "post-edit", SESSION, ROOT, tool="edit", paths=("src/cart.py",))),
        ("session_start", HookCall("copilot", "session-start", SESSION, ROOT, detail="new")),
        ("session_end", HookCall("copilot", "session-end", SESSION, ROOT, detail="user_exit")),
        ("pre_tool_use_vscode",
         HookCall("copilot", "pre-edit", SESSION, ROOT, tool="edit", paths=("src/cart.py",))),
    ],
)
def test_documented_payloads_parse(name: str, expected: HookCall) -> None:
    # Told by its fields alone, and told by the event `versatil integrate` names in `env`.
    assert call(name) == expected
    installed_for = {"pre": "preToolUse", "post": "postToolUse"}.get(name.split("_")[0])
    installed_for = installed_for or {"session_start": "sessionStart",
                                      "session_end": "sessionEnd"}[name]
    assert call(name, installed_for) == expected


def test_the_installed_env_decides_the_event_over_the_fields() -> None:
    # A preToolUse payload the hook of postToolUse received is what its config says it is.
    assert call("pre_tool_use_edit", "postToolUse").event == "post-edit"
    assert call("session_start", "userPromptSubmitted").event == "other"


def test_each_installed_copilot_hook_names_its_event_in_env() -> None:
    for spec in HOOKS["copilot"]:
        assert dict(spec.env) == {HOOK_EVENT_ENV: spec.event}


def test_a_payload_without_a_session_gets_a_stable_one_from_its_cwd() -> None:
    first = call("pre_tool_use_no_session")
    digest = hashlib.sha256(ROOT.encode()).hexdigest()[:16]
    assert first.session_id == f"cwd-{digest}"
    assert call("pre_tool_use_no_session") == first


@pytest.mark.parametrize("name", ["pre_tool_use_edit", "session_start", None])
def test_deny_is_permission_decision_deny_whatever_the_event(name: str | None) -> None:
    target = call(name) if name else None
    reply = render("copilot", target, Verdict(deny="held by bob"))
    assert (reply.exit_code, reply.stderr) == (0, "")
    assert stdout_json(reply) == {
        "permissionDecision": "deny", "permissionDecisionReason": "held by bob"}


@pytest.mark.parametrize("name", ["pre_tool_use_edit", "post_tool_use_edit", "session_start"])
def test_context_has_no_agent_channel_and_goes_to_stderr_with_exit_0(name: str) -> None:
    assert render("copilot", call(name), Verdict(warning="w")) == Reply(
        stderr="versatil warning: w\n")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda d: d.update(sessionId=5), "sessionId is not a string"),
        (lambda d: d.pop("toolName"), "no toolName"),  # then it is not a tool event at all
        (lambda d: d.update(toolArgs="{not json"), "toolArgs is not a JSON object"),
        (lambda d: d.update(toolArgs=[1]), "toolArgs is not an object"),
        (lambda d: d.update(toolArgs={}), "no toolArgs.path"),
        (lambda d: d.update(cwd="shop"), "not an absolute path"),
    ],
)
def test_a_broken_payload_is_one_sentence(change: object, says: str) -> None:
    data = payload("copilot", "pre_tool_use_edit")
    change(data)  # type: ignore[operator]
    with pytest.raises(BadPayload, match=says):
        parse("copilot", json.dumps(data).encode(), {HOOK_EVENT_ENV: "preToolUse"}, "/x")
