"""A stand-in for an agent harness that both runs hooks and starts an MCP server, as Claude Code
does: one long-lived process, parent of each hook process (fed JSON on stdin, never a TTY) and
of `versatil mcp`, to which it speaks with the official SDK's own stdio client
(`mcp.client.stdio` and `ClientSession`, a client nobody here wrote).

The test drives it one request at a time over a pipe (JSON lines), so nothing races on time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from integration.helpers import versatil_argv

__all__ = ["McpHarness"]

_SCRIPT = r"""
import json, os, subprocess, sys
import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

hook_argv, server_argv, cwd = json.loads(sys.argv[1])

async def main():
    params = StdioServerParameters(command=server_argv[0], args=server_argv[1:], cwd=cwd,
                                   env=dict(os.environ))
    stdin = anyio.wrap_file(sys.stdin)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            print(json.dumps({"up": True}), flush=True)
            async for line in stdin:
                request = json.loads(line)
                if request["op"] == "hook":
                    done = subprocess.run(hook_argv, input=request["payload"].encode(),
                                          capture_output=True, cwd=cwd)
                    answer = {"code": done.returncode, "stdout": done.stdout.decode(),
                              "stderr": done.stderr.decode()}
                else:
                    result = await session.call_tool(request["tool"], request["args"])
                    answer = {"is_error": bool(result.is_error),
                              "structured": result.structured_content,
                              "text": result.content[0].text if result.content else ""}
                print(json.dumps(answer), flush=True)
    # The server may have been killed: nothing to wait for.

try:
    anyio.run(main)
finally:
    sys.stdout.flush()
    os._exit(0)
"""


class McpHarness:
    """One harness process, one Claude Code session ``session_id``, working in ``cwd``."""

    def __init__(self, cwd: Path, session_id: str, harness: str = "claude") -> None:
        self.cwd = cwd
        self.session_id = session_id
        spec = json.dumps([versatil_argv("agent-hook", harness),
                           versatil_argv("mcp", "--harness", harness), str(cwd)])
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SCRIPT, spec], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, cwd=cwd,
        )
        assert json.loads(self._read()) == {"up": True}

    def _read(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the harness stand-in died"
        return line

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(self._read())
        return answer

    def tool(self, name: str, **args: Any) -> dict[str, Any]:
        return self._ask({"op": "tool", "tool": name, "args": args})

    def hook(self, event: str, **fields: Any) -> dict[str, Any]:
        payload = {
            "session_id": self.session_id, "transcript_path": str(self.cwd / ".t.jsonl"),
            "cwd": str(self.cwd), "hook_event_name": event, **fields,
        }
        if event in ("PreToolUse", "PostToolUse"):
            payload.setdefault("permission_mode", "default")
            payload.setdefault("tool_use_id", "toolu_01ABC")
        return self._ask({"op": "hook", "payload": json.dumps(payload)})

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
