"""The demo's agent-harness chapter: two Claude Code sessions, simulated by the hook calls
Claude Code makes, claim files at the moment of the edit; one is denied, then handed the file
when the other session ends.

Each session is a real harness-like process running the real ``versatil agent-hook claude``
with Claude Code's own payloads (https://code.claude.com/docs/en/hooks), so the session keeper,
the lock table and the denial are exactly what an agent meets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from versatil_fs.demo.stage import Demo

__all__ = ["CHAPTERS", "Session", "chapter_sessions"]

# A harness stand-in: runs the hook command given in argv once per payload line read on stdin,
# and answers with one JSON line (exit code, stdout), as a harness reads a hook's reply.
_HARNESS = r"""
import json, subprocess, sys
command = sys.argv[1:]
for line in sys.stdin:
    done = subprocess.run(command, input=line.encode(), capture_output=True)
    print(json.dumps({"code": done.returncode, "stdout": done.stdout.decode()}), flush=True)
"""


class Session:
    """One simulated Claude Code session in the demo repository."""

    def __init__(self, demo: Demo, session_id: str) -> None:
        self.repo = demo.repo
        self.session_id = session_id
        self.agent = f"claude:{session_id[:8]}"
        hook = [sys.executable, "-m", "versatil_fs", "agent-hook", "claude"]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HARNESS, *hook], cwd=demo.repo, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )
        demo.processes.append(self.proc)

    def _hook(self, event: str, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        payload = {
            "session_id": self.session_id, "transcript_path": str(self.repo / ".t.jsonl"),
            "cwd": str(self.repo), "hook_event_name": event, **fields,
        }
        self.proc.stdin.write(json.dumps(payload) + "\n")
        self.proc.stdin.flush()
        reply: dict[str, Any] = json.loads(self.proc.stdout.readline())
        out = reply["stdout"].strip()
        return json.loads(out).get("hookSpecificOutput", {}) if out else {}

    def start(self) -> str:
        return str(self._hook("SessionStart", source="startup").get("additionalContext", ""))

    def before_edit(self, path: str) -> str | None:
        """The deny reason Claude Code would show the agent, or None: the edit may go ahead."""
        answer = self._hook(
            "PreToolUse", tool_name="Edit", permission_mode="default", tool_use_id="toolu_01",
            tool_input={"file_path": str(self.repo / path), "old_string": "raise",
                        "new_string": "return"},
        )
        if answer.get("permissionDecision") == "deny":
            return str(answer.get("permissionDecisionReason", ""))
        return None

    def edit(self, path: str, text: str) -> None:
        (self.repo / path).write_text(text)
        self._hook(
            "PostToolUse", tool_name="Edit", permission_mode="default", tool_use_id="toolu_01",
            tool_input={"file_path": str(self.repo / path)},
            tool_response={"filePath": str(self.repo / path), "success": True},
        )

    def end(self) -> None:
        self._hook("SessionEnd", reason="exit")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def chapter_sessions(demo: Demo) -> None:
    demo.say("7. Two Claude Code sessions claim files as they edit them, from their own hooks.")
    first = Session(demo, "1a2b3c4d-0000-4000-8000-000000000001")
    second = Session(demo, "5e6f7a8b-0000-4000-8000-000000000002")
    try:
        target = "src/api/auth.py"
        first.start()
        demo.step(f"{first.agent} edits {target}: its PreToolUse hook claims the file, "
                  "silently (no decision, so Claude Code's own permission prompt still applies).")
        if first.before_edit(target) is not None:
            raise RuntimeError("the demo's first session was refused its edit")
        first.edit(target, "def login(user, password):\n    return check(user, password)\n")
        told = second.start()
        if told:
            demo.step(f"{second.agent} starts; Claude Code tells it:")
            demo.say(f"      {told}")
        reason = second.before_edit(target)
        demo.step(f"{second.agent} tries to edit {target}; its edit is denied, and it reads:")
        demo.say(f"      {reason}")
        first.end()
        demo.step(f"{first.agent}'s session ends (SessionEnd): its claims are released at once "
                  "(a crashed harness loses them the same instant: its keeper dies with it).")
        again = second.before_edit(target)
        outcome = "denied" if again else "claimed, the edit goes ahead"
        demo.step(f"{second.agent} tries again: {outcome}.")
        second.end()
    finally:
        first.close()
        second.close()


CHAPTERS: list[Callable[[Demo], None]] = [chapter_sessions]
