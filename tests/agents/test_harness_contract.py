"""What every harness adapter promises, whatever the harness: any bytes give a HookCall or a
one-sentence BadPayload (never another exception), a huge payload is refused before it is
decoded, silence is Reply(), and no reply ever says "allow"."""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness_cases import documented, json_values, names, payload
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from versatil_fs.agents.harnesses import EDIT_TOOLS, HOOKS, MAX_PAYLOAD, SHELL_TOOLS, parse, render
from versatil_fs.agents.protocol import HARNESSES, BadPayload, HookCall, Reply, Verdict

ALL = [(harness, name) for harness in HARNESSES for name in names(harness)]
VERDICTS = [Verdict(deny="d"), Verdict(context="c"), Verdict(warning="w"),
            Verdict(context="c", warning="w")]


def test_every_harness_has_documented_payloads_tables_and_hooks() -> None:
    for harness in HARNESSES:
        assert len(names(harness)) >= 5, harness
        assert EDIT_TOOLS[harness] and SHELL_TOOLS[harness], harness
        assert HOOKS[harness], harness


def _one_sentence(error: BadPayload) -> None:
    message = str(error)
    assert message and "\n" not in message and message.endswith("."), message


def _outcome(harness: str, raw: bytes) -> HookCall | None:
    try:
        found = parse(harness, raw, {}, "/fallback")
    except BadPayload as error:
        _one_sentence(error)
        return None
    assert found.harness == harness and found.session_id.strip()
    assert found.cwd.startswith("/")
    assert all(isinstance(p, str) and p for p in found.paths)
    assert bool(found.paths) == (found.event in ("pre-edit", "post-edit"))
    return found


@pytest.mark.parametrize("harness", HARNESSES)
@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b"null", "not a JSON object"),
        (b"[" * 100_000, "not valid JSON"),  # deeper than the parser's stack
        (b"1" * 5000, "not valid JSON"),  # an integer too long to convert
    ],
)
def test_unreadable_bytes_are_one_sentence(harness: str, raw: bytes, says: str) -> None:
    with pytest.raises(BadPayload, match=says) as raised:
        parse(harness, raw, {}, "/x")
    _one_sentence(raised.value)


@pytest.mark.parametrize("harness", HARNESSES)
def test_a_payload_over_16_mib_is_refused_before_it_is_decoded(harness: str) -> None:
    # Not even valid UTF-8 or JSON: the size alone refuses it, so it was never decoded.
    raw = b"\xff" * (MAX_PAYLOAD + 1)
    with pytest.raises(BadPayload, match="over the 16777216 allowed") as raised:
        parse(harness, raw, {}, "/x")
    _one_sentence(raised.value)


def test_a_documented_payload_just_under_the_limit_is_read() -> None:
    data = payload("claude", "pre_tool_use_write")
    data["tool_input"]["content"] = ""
    room = MAX_PAYLOAD - len(json.dumps(data).encode())
    data["tool_input"]["content"] = "x" * room
    raw = json.dumps(data).encode()
    assert len(raw) == MAX_PAYLOAD
    assert parse("claude", raw, {}, "/x").paths == ("/home/dev/shop/src/cart.py",)


def test_an_unknown_harness_is_one_sentence_naming_the_known_ones() -> None:
    with pytest.raises(BadPayload, match=r"Unknown harness 'aider'.*claude, codex") as raised:
        parse("aider", documented("claude", "pre_tool_use_write"), {}, "/x")
    _one_sentence(raised.value)


@pytest.mark.parametrize(("harness", "name"), ALL)
def test_every_documented_payload_parses(harness: str, name: str) -> None:
    assert _outcome(harness, documented(harness, name)) is not None


@pytest.mark.parametrize(("harness", "name"), ALL)
def test_silence_is_always_exit_0_and_nothing_printed(harness: str, name: str) -> None:
    assert render(harness, parse(harness, documented(harness, name), {}, "/x"), Verdict()) == (
        Reply())


@pytest.mark.parametrize("harness", [*HARNESSES, "unknown"])
def test_silence_for_an_unreadable_payload_is_nothing_too(harness: str) -> None:
    assert render(harness, None, Verdict()) == Reply()


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize(("harness", "name"), ALL)
@pytest.mark.parametrize("verdict", VERDICTS)
def test_no_reply_ever_allows_anything(harness: str, name: str, verdict: Verdict) -> None:
    # An explicit "allow"/"approve" would skip the user's own permission prompt.
    reply = render(harness, parse(harness, documented(harness, name), {}, "/x"), verdict)
    said = _strings(json.loads(reply.stdout)) if reply.stdout else []
    assert not {"allow", "approve", "ask"} & set(said), reply
    assert reply.exit_code in (0, 2)
    assert (reply.exit_code == 2) <= bool(verdict.deny)
    assert reply.stdout or reply.stderr  # something is said: the verdict was not silent


@pytest.mark.parametrize("harness", [*HARNESSES, "unknown"])
@pytest.mark.parametrize("verdict", VERDICTS)
def test_an_unreadable_payload_still_gets_an_answer(harness: str, verdict: Verdict) -> None:
    reply = render(harness, None, verdict)
    text = reply.stdout + reply.stderr
    assert ("d" if verdict.deny else "c" if verdict.context else "w") in text
    if reply.stdout:
        json.loads(reply.stdout)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(harness=st.sampled_from(HARNESSES), raw=st.binary(max_size=200))
def test_any_bytes_give_a_hook_call_or_bad_payload(harness: str, raw: bytes) -> None:
    _outcome(harness, raw)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(harness=st.sampled_from(HARNESSES), value=json_values)
def test_any_json_value_gives_a_hook_call_or_bad_payload(harness: str, value: object) -> None:
    _outcome(harness, json.dumps(value).encode())


def _paths_of(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths_of(inner, (*path, key))
    return found


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=st.sampled_from(ALL),
    pick=st.integers(min_value=0),
    value=json_values,
    drop=st.booleans(),
)
def test_a_documented_payload_with_any_field_broken_gives_a_call_or_bad_payload(
    case: tuple[str, str], pick: int, value: object, drop: bool
) -> None:
    """The sharpest fuzz: real payloads with one field (at any depth) replaced or removed."""
    harness, name = case
    data = payload(harness, name)
    where = _paths_of(data)[1:]
    target = where[pick % len(where)]
    holder: Any = data
    for key in target[:-1]:
        holder = holder[key]
    if drop:
        del holder[target[-1]]
    else:
        holder[target[-1]] = value
    found = _outcome(harness, json.dumps(data).encode())
    if found is not None:
        for verdict in VERDICTS:
            render(harness, found, verdict)
