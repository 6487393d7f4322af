"""The pure edits of versatil_fs.agents.hook_config, as properties over generated hook files:
whatever the user's file holds, a second install changes nothing, an install keeps every hook
that is not versatil's in its order, and taking versatil out leaves none of its entries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from versatil_fs.agents import hook_config as cfg
from versatil_fs.agents.harnesses import HOOKS
from versatil_fs.errors import Refused

HERE = "/venv/bin/versatil agent-hook {h}"
COMMANDS = ["lint.sh", "say done", "/old/bin/versatil agent-hook {h}", HERE, "'/a b/x' agent-hook"]

cheap = settings(max_examples=25, deadline=None)


def _handler(harness: str) -> st.SearchStrategy[dict[str, Any]]:
    key = cfg.FORMATS[harness].command_key
    return st.fixed_dictionaries(
        {"type": st.just("command"), key: st.sampled_from(COMMANDS).map(
            lambda c: c.format(h=harness))},
        optional={"timeout": st.integers(1, 60)},
    )


def _entries(harness: str) -> st.SearchStrategy[list[Any]]:
    handler = _handler(harness)
    if cfg.FORMATS[harness].style == "handlers":
        return st.lists(st.one_of(handler, st.integers()), max_size=4)
    group = st.fixed_dictionaries({"hooks": st.lists(handler, max_size=3)},
                                  optional={"matcher": st.sampled_from(["Bash", "Edit|Write"])})
    return st.lists(st.one_of(group, st.just("odd")), max_size=4)


def _documents(harness: str) -> st.SearchStrategy[dict[str, Any]]:
    events = [spec.event for spec in HOOKS[harness]] + ["Stop", "Notification"]
    hooks = st.dictionaries(st.sampled_from(events), _entries(harness), max_size=4)
    return st.fixed_dictionaries({}, optional={"hooks": hooks, "model": st.text(max_size=3),
                                               "version": st.just(1)})


def _others(doc: dict[str, Any], harness: str) -> dict[str, list[Any]]:
    """Every handler that is not versatil's, by event, in order."""
    fmt = cfg.FORMATS[harness]
    found: dict[str, list[Any]] = {}
    for event, entries in doc.get("hooks", {}).items():
        for item in entries if isinstance(entries, list) else ():
            handlers = item.get("hooks", []) if fmt.style == "groups" and isinstance(
                item, dict) else [item]
            found.setdefault(event, []).extend(
                h for h in handlers
                if not (isinstance(h, dict) and cfg.is_ours(h.get(fmt.command_key), harness)))
    return {event: handlers for event, handlers in found.items() if handlers}


@pytest.mark.parametrize("harness", sorted(cfg.FORMATS))
@cheap
@given(data=st.data())
def test_install_is_idempotent_and_keeps_every_other_hook(
    harness: str, data: st.DataObject
) -> None:
    doc = data.draw(_documents(harness))
    fmt = cfg.FORMATS[harness]
    command = HERE.format(h=harness)
    try:
        once = cfg.with_ours(doc, harness, fmt, HOOKS[harness], command, where=Path("f.json"))
    except Refused:
        return
    twice = cfg.with_ours(once, harness, fmt, HOOKS[harness], command, where=Path("f.json"))
    assert cfg.same(once, twice)
    assert cfg.commands(once, harness, fmt) == {s.event: [command] for s in HOOKS[harness]}
    assert _others(once, harness) == _others(doc, harness)
    out = cfg.without_ours(once, harness, fmt)
    assert cfg.commands(out, harness, fmt) == {}
    assert _others(out, harness) == _others(doc, harness)
    assert {k: v for k, v in out.items() if k not in ("hooks", "version")} == {
        k: v for k, v in doc.items() if k not in ("hooks", "version")}


@cheap
@given(raw=st.binary(max_size=200))
def test_any_bytes_load_as_an_object_or_a_refusal(raw: bytes) -> None:
    try:
        doc = cfg.load(raw, Path("settings.json"), "gemini")
    except Refused as refused:
        assert "settings.json" in str(refused)
        return
    assert isinstance(doc, dict)
