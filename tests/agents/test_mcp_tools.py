"""The MCP tools' logic without the protocol (versatil_fs.agents.mcp_server.Tools), in this
process: whose locks they take (the hooks' identity rule), and what unlock releases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("mcp")  # the test extra has it; a bare install skips these

from reliability.support import versatil

from versatil_fs.agents.mcp_server import Tools


@pytest.fixture
def tools(git_repo: Path) -> Iterator[Tools]:
    (git_repo / "a.py").write_text("a\n")
    (git_repo / "b.py").write_text("b\n")
    found = Tools("claude", cwd=str(git_repo))
    yield found
    found.close()


def test_the_agent_is_harness_mcp_pid_when_nothing_names_it(tools: Tools) -> None:
    # No VERSATIL_AGENT, no [agents] name, and no harness keeper above this process.
    assert tools.agent() == f"claude:mcp-{tools.pid}"
    assert Tools("", cwd=tools.cwd).agent() == f"mcp-{tools.pid}"


def test_versatil_agent_then_the_configuration_name_the_agent(
    tools: Tools, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (git_repo / ".versatil").write_text(
        '[agents]\nname = "Dana"\n[agents.names]\nclaude = "Dana-C"\n')
    assert tools.agent() == "Dana-C"  # names.<harness> before name
    assert Tools("codex", cwd=tools.cwd).agent() == "Dana"
    monkeypatch.setenv("VERSATIL_AGENT", "Eve")
    assert tools.agent() == "Eve"


def test_a_conflict_is_an_answer_and_unlock_ends_only_what_mcp_took(
    tools: Tools, git_repo: Path
) -> None:
    held = versatil("lock", "b.py", "--agent", "bob", cwd=git_repo)
    assert held.code == 0, held
    refused = tools.lock(["a.py", "b.py"], "write", 0, "")
    assert refused.granted is False and refused.conflict is not None
    assert refused.conflict.holders[0].agent == "bob" and refused.conflict.resource == "b.py"

    granted = tools.lock(["a.py"], "write", 0, "tidy up")
    assert granted.granted and granted.lease
    # The same agent's other lock on a.py (a hook claim would be one) is another grant: an
    # unlock of the MCP lease leaves it alone.
    other = tools.manager.acquire(["a.py"], agent=granted.agent, owner="process")
    assert tools.unlock(["a.py"]).released == ["a.py"]
    view = tools.locks("a.py")
    assert view.path is not None and [e.lease for e in view.path.held_by] == [other.id]
    other.release()
    assert tools.locks("a.py").path.free_for_you  # type: ignore[union-attr]
