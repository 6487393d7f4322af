"""A stand-in for a coding agent's harness, for end-to-end tests of `versatil agent-hook`.

It is a real, long-lived process (the hooks find it as their harness and its session keeper
watches it), and it runs each hook as Claude Code does (https://code.claude.com/docs/en/hooks):
a shell command, the payload as JSON on stdin (never a TTY), reading back the exit code, stdout
and stderr. The test drives it one hook call at a time over a pipe, so nothing races on time.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from integration.helpers import versatil_argv

__all__ = ["FakeHarness", "HookResult"]

_SCRIPT = r"""
import json, subprocess, sys
command = sys.argv[1]
print("up", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    done = subprocess.run(
        request.get("argv") or ["sh", "-c", command], input=bytes.fromhex(request["stdin"]),
        capture_output=True, cwd=request["cwd"], env=request["env"],
    )
    print(json.dumps({
        "code": done.returncode, "stdout": done.stdout.decode(), "stderr": done.stderr.decode(),
    }), flush=True)
"""


class HookResult:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.code: int = raw["code"]
        self.stdout: str = raw["stdout"]
        self.stderr: str = raw["stderr"]

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout) if self.stdout.strip() else {}

    @property
    def silent(self) -> bool:
        return self.code == 0 and not self.stdout and not self.stderr

    @property
    def denied(self) -> str | None:
        """The deny reason of a Claude Code PreToolUse reply, if it is one."""
        out = self.json.get("hookSpecificOutput", {})
        if out.get("permissionDecision") == "deny":
            return str(out.get("permissionDecisionReason"))
        return None

    @property
    def context(self) -> str:
        return str(self.json.get("hookSpecificOutput", {}).get("additionalContext", ""))

    def __repr__(self) -> str:
        return f"HookResult(code={self.code}, stdout={self.stdout!r}, stderr={self.stderr!r})"


class FakeHarness:
    """One harness process with one session (``session_id``) working in ``cwd``."""

    def __init__(
        self, cwd: Path, session_id: str, *, harness: str = "claude",
        env: dict[str, str] | None = None,
    ) -> None:
        self.cwd = cwd
        self.session_id = session_id
        self.harness = harness
        self.env = {**os.environ, **(env or {})}
        command = shlex.join(versatil_argv("agent-hook", harness))
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SCRIPT, command], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env=self.env,
        )
        assert self.process.stdout is not None and self.process.stdin is not None
        assert self.process.stdout.readline().strip() == "up"

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, stdin: str | bytes, env: dict[str, str] | None = None) -> HookResult:
        """Run the hook with ``stdin`` as its payload, exactly as sent."""
        assert self.process.stdin is not None and self.process.stdout is not None
        raw = stdin.encode() if isinstance(stdin, str) else stdin
        request = {"stdin": raw.hex(), "cwd": str(self.cwd), "env": {**self.env, **(env or {})}}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, "the harness stand-in died"
        return HookResult(json.loads(line))

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> HookResult:
        """Run a command as the harness's shell tool would: a child of the harness process."""
        assert self.process.stdin is not None and self.process.stdout is not None
        request = {"stdin": "", "cwd": str(self.cwd), "env": env or self.env, "argv": argv}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, "the harness stand-in died"
        return HookResult(json.loads(line))

    def call(self, event: str, **fields: Any) -> HookResult:
        payload = {
            "session_id": self.session_id,
            "transcript_path": str(self.cwd / ".transcript.jsonl"),
            "cwd": str(self.cwd),
            "hook_event_name": event,
            **fields,
        }
        if event in ("PreToolUse", "PostToolUse"):
            payload.setdefault("permission_mode", "default")
            payload.setdefault("tool_use_id", "toolu_01ABC")
        return self.send(json.dumps(payload))

    # The calls Claude Code makes -------------------------------------------------------------
    def start(self, env_file: Path | None = None) -> HookResult:
        env = {"CLAUDE_ENV_FILE": str(env_file)} if env_file else None
        payload = {
            "session_id": self.session_id, "transcript_path": str(self.cwd / ".t.jsonl"),
            "cwd": str(self.cwd), "hook_event_name": "SessionStart", "source": "startup",
        }
        return self.send(json.dumps(payload), env=env)

    def before_write(self, path: Path, tool: str = "Write") -> HookResult:
        tool_input: dict[str, Any] = {"file_path": str(path)}
        tool_input.update({"content": "x"} if tool == "Write" else {
            "old_string": "a", "new_string": "b", "replace_all": False,
        })
        return self.call("PreToolUse", tool_name=tool, tool_input=tool_input)

    def after_write(self, path: Path, tool: str = "Write") -> HookResult:
        return self.call(
            "PostToolUse", tool_name=tool, tool_input={"file_path": str(path), "content": "x"},
            tool_response={"filePath": str(path), "success": True},
        )

    def edit(self, path: Path, text: str) -> HookResult:
        """A whole Write as Claude Code does it: PreToolUse, the write if allowed, PostToolUse."""
        before = self.before_write(path)
        if before.denied is not None:
            return before
        path.write_text(text)
        return self.after_write(path)

    def before_bash(self, command: str) -> HookResult:
        return self.call("PreToolUse", tool_name="Bash", tool_input={"command": command})

    def after_bash(self, command: str) -> HookResult:
        return self.call(
            "PostToolUse", tool_name="Bash", tool_input={"command": command},
            tool_response={"stdout": "", "stderr": "", "interrupted": False},
        )

    def end(self, reason: str = "exit") -> HookResult:
        return self.call("SessionEnd", reason=reason)

    # Its end -----------------------------------------------------------------------------------
    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.process.stdout is not None:
            self.process.stdout.close()
