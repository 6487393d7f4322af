"""`versatil mcp` end to end, through the official SDK's own client over real stdio.

The server is a real `versatil mcp` process; the client is `mcp.client.stdio.stdio_client` and
`ClientSession` (a client nobody here wrote). Locks taken through it are seen by `versatil lock`
from a shell, a `kill -9` of the server frees them (synchronised on the process's exit through
a pidfd, then checked), and a session's hook claims and MCP locks belong to one agent.
"""

from __future__ import annotations

import json
import os
import select
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")  # the test extra has it; a bare install skips these

import anyio
from integration.helpers import make_git_repo, versatil_argv
from integration.mcp_harness import McpHarness
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from reliability.support import versatil, versatil_process

SESSION = "5f0c2a9e-7b1d-4c3e-9a8f-1d2e3f4a5b6c"
TOOLS = {"lock", "unlock", "locks", "checkpoint_create", "checkpoint_list", "checkpoint_diff",
         "checkpoint_restore", "wave_status"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_git_repo(tmp_path / "repo", {"a.py": "a = 1\n", "b.py": "b = 2\n"})


def _with_server(cwd: Path, body: Callable[[ClientSession], Awaitable[None]]) -> None:
    """Start `versatil mcp --harness claude` in ``cwd`` with the SDK's client, run ``body``."""
    argv = versatil_argv("mcp", "--harness", "claude")

    async def main() -> None:
        params = StdioServerParameters(command=argv[0], args=argv[1:], cwd=cwd,
                                       env=dict(os.environ))
        with anyio.fail_after(120):  # a hang fails the test; no timing is asserted
            async with stdio_client(params) as (read, write), ClientSession(
                read, write
            ) as session:
                await session.initialize()
                await body(session)

    anyio.run(main)


async def _call(session: ClientSession, tool: str, **args: Any) -> tuple[bool, Any, str]:
    result = await session.call_tool(tool, args)
    text = result.content[0].text if result.content else ""
    return bool(result.is_error), result.structured_content, text


def _kill_9(pid: int) -> None:
    """SIGKILL process ``pid`` and block until it has exited: through a pidfd opened first, so
    neither the signal nor the wait can reach another process that reused the pid (its parent,
    the harness, reaps it at once). The deadline only detects a hang."""
    fd = os.pidfd_open(pid)
    try:
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        ready, _, _ = select.select([fd], [], [], 60)
        assert ready, f"process {pid} did not exit"
    finally:
        os.close(fd)


def test_tools_schemas_locks_conflicts_and_errors(project: Path) -> None:
    seen: dict[str, Any] = {}

    async def body(session: ClientSession) -> None:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert set(tools) == TOOLS
        lock_schema = tools["lock"].input_schema
        assert lock_schema["required"] == ["resources"]
        props = lock_schema["properties"]
        assert props["resources"]["type"] == "array" and props["resources"]["minItems"] == 1
        assert props["mode"]["enum"] == ["write", "read"] and props["mode"]["default"] == "write"
        assert props["wait_seconds"]["default"] == 0 and props["reason"]["default"] == ""
        assert tools["checkpoint_restore"].input_schema["required"] == ["id"]
        assert tools["lock"].output_schema is not None  # structured results, typed

        error, granted, _ = await _call(session, "lock", resources=["a.py"], reason="refactor")
        assert not error and granted["granted"] and granted["resources"] == ["a.py"]
        assert isinstance(granted["fence"], int) and granted["fence"] >= 1
        seen["agent"] = granted["agent"]
        # A Ctrl-C at the harness's terminal reaches its whole process group: the server lives
        # on with its locks (the harness ends it by closing its stdin). An ignored signal is
        # discarded when it is sent, so the next call is answered by the same server.
        error, view, _ = await _call(session, "locks")
        [server] = {e["pid"] for e in view["locks"] if e["mine"]}
        os.kill(server, signal.SIGINT)
        error, view, _ = await _call(session, "locks", path="a.py")
        assert not error and view["path"]["held_by"][0]["lease"] == granted["lease"]
        assert view["path"]["held_by"][0]["fence"] == granted["fence"]  # the same grant's
        # From a shell, another agent is refused, naming the MCP session's agent.
        shell = versatil("lock", "a.py", "--agent", "bob", "--wait", "0", cwd=project)
        seen["shell"] = shell
        # The reverse: bob holds b.py; the MCP lock is refused as data, not as an error.
        assert versatil("lock", "b.py", "--agent", "bob", cwd=project).code == 0
        error, refused, _ = await _call(session, "lock", resources=["b.py", "a.py"])
        assert not error and refused["granted"] is False and refused["lease"] is None
        conflict = refused["conflict"]
        assert conflict["resource"] == "b.py" and conflict["holders"][0]["agent"] == "bob"
        assert conflict["since"] > 0 and conflict["until"] > conflict["since"]  # a shell lease
        assert "bob" in conflict["message"]
        error, view, _ = await _call(session, "locks", path="b.py")
        assert not error and view["path"]["free_for_you"] is False
        assert [e["agent"] for e in view["path"]["held_by"]] == ["bob"]
        error, view, _ = await _call(session, "locks", path="a.py")
        assert view["path"]["free_for_you"] is True and view["path"]["held_by"][0]["mine"]

        # Errors an agent can act on: a tool error carrying versatil's sentence.
        error, _, text = await _call(session, "checkpoint_diff", id="cp-nope")
        assert error and "No checkpoint 'cp-nope'" in text and "Traceback" not in text
        error, _, text = await _call(session, "unlock", resources=["README.md"])
        assert error and "holds no lock on README.md" in text
        error, _, text = await _call(session, "lock", resources=["../outside.py"])
        assert error and "../outside.py is outside the repository" in text
        assert "Traceback" not in text and len(text.splitlines()) == 1

        # A checkpoint through MCP, the diff after an edit.
        error, made, _ = await _call(session, "checkpoint_create", message="before")
        assert not error and made["agent"] == seen["agent"]
        (project / "a.py").write_text("a = 3\n")
        error, diff, _ = await _call(session, "checkpoint_diff", id=made["id"])
        assert not error and diff["changes"] == [{"status": "M", "path": "a.py"}]
        error, listed, _ = await _call(session, "checkpoint_list")
        assert [c["id"] for c in listed["checkpoints"]] == [made["id"]]
        error, restored, _ = await _call(session, "checkpoint_restore", id=made["id"],
                                         paths=["a.py"])
        assert not error and restored["restored"] == ["a.py"]
        assert (project / "a.py").read_text() == "a = 1\n"
        error, waves, _ = await _call(session, "wave_status")
        assert not error and waves == {"run": None, "status": None, "counts": {}, "tasks": []}

        error, released, _ = await _call(session, "unlock", resources=["a.py"])
        assert not error and released["released"] == ["a.py"]
        seen["after"] = versatil("lock", "a.py", "--agent", "bob", "--wait", "0", cwd=project)

    _with_server(project, body)
    # No harness session above the server: the agent is <harness>:mcp-<pid>.
    assert seen["agent"].startswith("claude:mcp-")
    shell = seen["shell"]
    assert shell.code == 1 and seen["agent"] in shell.err and "a.py" in shell.err
    assert seen["after"].code == 0, seen["after"]


def test_a_session_is_one_agent_and_kill_9_of_the_server_frees_its_locks(
    project: Path,
) -> None:
    harness = McpHarness(project, SESSION)
    try:
        assert harness.hook("SessionStart", source="startup")["code"] == 0
        locked = harness.tool("lock", resources=["a.py", "b.py"])
        assert not locked["is_error"], locked
        agent = locked["structured"]["agent"]
        # The agent of the session that started the server: the hooks' name, from its keeper.
        assert agent == f"claude:{SESSION[:8]}"
        # The session's own edit of a file it locked through MCP is not denied: one agent.
        before = harness.hook("PreToolUse", tool_name="Write",
                              tool_input={"file_path": str(project / "a.py"), "content": "x"})
        assert before == {"code": 0, "stdout": "", "stderr": ""}
        # `versatil lock` from a shell (a real process) is refused, naming the session's agent.
        refused = versatil_process("lock", "b.py", "--agent", "bob", "--wait", "0", cwd=project)
        assert refused.code == 1 and agent in refused.err and "b.py" in refused.err

        table = json.loads(versatil("locks", "--json", cwd=project).out)
        [server] = {g["pid"] for g in table["locks"] if g["session"].startswith("claude mcp-")}
        _kill_9(server)
        # The kernel dropped the server's flock: its locks are gone at the next look. The hook's
        # claim on a.py is the keeper's, which lives on with the harness.
        freed = versatil_process("lock", "b.py", "--agent", "bob", "--wait", "0", cwd=project)
        assert freed.code == 0, freed
        still = versatil("lock", "a.py", "--agent", "bob", "--wait", "0", cwd=project)
        assert still.code == 1 and agent in still.err
        assert harness.hook("SessionEnd", reason="exit")["code"] == 0
    finally:
        harness.close()


def test_versatil_mcp_without_the_sdk_says_how_to_install_it(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mcp" else real(name, *a))
    result = versatil("mcp", cwd=project)
    assert result.code == 2
    assert result.err.strip() == ("versatil: versatil mcp needs the MCP SDK, an optional extra: "
                                  "pip install 'versatil-fs[mcp]'.")
    bad = versatil("mcp", "--harness", "vscode", cwd=project)
    assert bad.code == 2 and "vscode" in bad.err and len(bad.err.strip().splitlines()) == 1


def test_versatil_mcp_at_a_terminal_says_what_it_is_for(project: Path) -> None:
    import pty
    import subprocess

    leader, follower = pty.openpty()
    try:
        done = subprocess.run(versatil_argv("mcp"), stdin=follower, capture_output=True,
                              text=True, cwd=project, timeout=60)
    finally:
        os.close(leader)
        os.close(follower)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "versatil: versatil mcp speaks MCP on stdin and stdout for a harness to start "
        "(`versatil integrate HARNESS` registers it); it is not meant to be run by hand."
    ]
