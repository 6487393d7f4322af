"""``versatil run`` with real processes: exit codes, signals, stdin, locks, rollback, monitoring.

The command under the wrapper is a small Python script that talks to the test: it prints one JSON
line when it reaches a point the test must know about (its pid, "edited") and blocks on stdin
until the test tells it to go on. stdin and stdout are the wrapper's own, inherited untouched,
so this is also how a real interactive agent talks through it. Nothing sleeps a fixed time.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import queue
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.helpers import (
    DEFAULT_TIMEOUT,
    Child,
    Spawner,
    assert_one_line_error,
    run_versatil,
    versatil_argv,
    wait_for,
)

from versatil_fs import events
from versatil_fs.checkpoints import Checkpoints
from versatil_fs.locks.manager import LockManager
from versatil_fs.monitor import Election
from versatil_fs.repo import Repository

FILES = {
    "src/a.py": "a = 1\n",
    "src/b.py": "b = 2\n",
    "docs/x.md": "# x\n",
    "README.md": "hello\n",
    ".gitignore": "build/\n*.log\n",
}

# Prints its pid, then waits for a line on stdin; exits with the number on that line.
WAIT_THEN_EXIT = """
import json, os, sys
print(json.dumps({"pid": os.getpid(), "agent": os.environ.get("VERSATIL_AGENT")}), flush=True)
line = sys.stdin.readline()
sys.exit(int(line or 0))
"""

# Reports each of SIGINT, SIGTERM, SIGHUP it receives and exits with 40 + its number.
TRAPS_SIGNALS = """
import json, os, signal, sys
def on(signum, frame):
    print(json.dumps({"signal": signum}), flush=True)
    sys.exit(40 + signum)
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, on)
print(json.dumps({"pid": os.getpid()}), flush=True)
sys.stdin.readline()
"""

# Obeys commands on stdin: `write PATH TEXT`, `exit N`; acknowledges each with a JSON line.
SCRIPTED = """
import json, os, pathlib, sys
print(json.dumps({"pid": os.getpid()}), flush=True)
for line in sys.stdin:
    op, _, rest = line.strip().partition(" ")
    if op == "write":
        path, _, text = rest.partition(" ")
        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(path).write_text(text + "\\n")
    elif op == "delete":
        os.remove(rest)
    elif op == "exit":
        print(json.dumps({"exit": int(rest)}), flush=True)
        sys.exit(int(rest))
    print(json.dumps({"done": line.strip()}), flush=True)
"""


def wrapper(
    spawn: Spawner, repo: Path, *options: str, code: str, env: dict[str, str] | None = None
) -> Child:
    """``versatil run OPTIONS -- python -c CODE`` in its own session, stdio piped to the test."""
    argv = versatil_argv("run", *options, "--", sys.executable, "-c", code)
    return spawn.popen(argv, cwd=repo, env=env, name="versatil run")


def send(child: Child, line: str) -> dict[str, Any]:
    """Send a command to a SCRIPTED child and wait for its acknowledgement."""
    child.send(line)
    reply = child.read_json()
    assert isinstance(reply, dict), reply
    return reply


def process_gone(pid: int) -> bool:
    """Dead: no longer in /proc, or a zombie waiting for whoever adopted it to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def log(kind: str) -> list[events.Event]:
    return [e for e in events.read("collision-detection") if e.kind == kind]


def holders(manager: LockManager) -> list[str]:
    return sorted(g.agent for g in manager.holders())


# Exit codes --------------------------------------------------------------------------------------
def test_exit_code_is_the_commands(repo: Path) -> None:
    assert run_versatil("run", "--agent", "A", "--", "true", cwd=repo).returncode == 0
    failed = run_versatil(
        "run", "--agent", "A", "--", sys.executable, "-c", "raise SystemExit(3)", cwd=repo
    )
    assert failed.returncode == 3
    assert failed.stderr == ""  # a plain failure adds nothing of ours


def test_death_by_signal_is_128_plus_n(repo: Path) -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    result = run_versatil("run", "--agent", "A", "--", sys.executable, "-c", code, cwd=repo)
    assert result.returncode == 128 + signal.SIGTERM


def test_unknown_command_exits_127_and_takes_no_lock(repo: Path, manager: LockManager) -> None:
    result = run_versatil(
        "run", "--agent", "A", "--lock", "src", "--", "no-such-command-xyz", cwd=repo
    )
    line = assert_one_line_error(result, 127)
    assert "no-such-command-xyz: command not found" in line
    assert holders(manager) == []
    assert [e for e in events.read("locks") if e.kind == "grant"] == []


def test_lock_refused_exits_1_without_running_the_command(
    repo: Path, manager: LockManager
) -> None:
    with manager.hold(["src/a.py"], agent="Marcus"):
        result = run_versatil(
            "run", "--agent", "James", "--lock", "src/", "--wait", "0", "--",
            sys.executable, "-c", "open('ran', 'w').close()", cwd=repo,
        )
    line = assert_one_line_error(result, 1)
    assert "src/a.py is write-locked by Marcus" in line
    assert not (repo / "ran").exists()


# Running under the locks -------------------------------------------------------------------------
def test_locks_are_held_while_the_command_runs_and_released_after(
    spawn: Spawner, repo: Path, manager: LockManager
) -> None:
    child = wrapper(
        spawn, repo, "--agent", "Marcus", "--lock", "src/api/", "--read", "docs",
        "--lock", "db:users", code=WAIT_THEN_EXIT,
    )
    hello = child.read_json()
    assert hello["agent"] == "Marcus"
    (grant,) = manager.holders()
    assert grant.agent == "Marcus" and grant.pid == child.pid
    assert sorted((str(c.resource), c.mode) for c in grant.claims) == [
        ("db:users", "write"), ("docs", "read"), ("src/api", "write"),
    ]
    child.send("0")
    assert child.wait() == 0
    assert holders(manager) == []


def test_interactive_command_reads_stdin_through_the_wrapper(spawn: Spawner, repo: Path) -> None:
    code = """
import sys
for line in sys.stdin:
    if line.strip() == "quit":
        break
    print("echo:", line.strip().upper(), flush=True)
"""
    child = wrapper(spawn, repo, "--agent", "A", code=code)
    child.send("hello")
    assert child.read_line() == "echo: HELLO"
    child.send("second line")
    assert child.read_line() == "echo: SECOND LINE"
    child.send("quit")
    assert child.wait() == 0


# Signals -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_to_the_wrapper_is_forwarded_once(
    spawn: Spawner, repo: Path, manager: LockManager, signum: int
) -> None:
    child = wrapper(spawn, repo, "--agent", "A", "--lock", "src", code=TRAPS_SIGNALS)
    child.read_json()
    os.kill(child.pid, signum)  # to the wrapper alone, as `kill` or a supervisor would
    assert child.read_json() == {"signal": signum}
    assert child.wait() == 40 + signum
    assert holders(manager) == []


def test_sigterm_kills_a_command_that_does_not_trap_it(
    spawn: Spawner, repo: Path, manager: LockManager
) -> None:
    child = wrapper(spawn, repo, "--agent", "A", "--lock", "src", code=WAIT_THEN_EXIT)
    child.read_json()
    os.kill(child.pid, signal.SIGTERM)
    assert child.wait() == 128 + signal.SIGTERM
    assert holders(manager) == []


class Terminal:
    """A process run on a real pseudo-terminal, as its session's controlling terminal."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()

        def controlling_terminal() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave,
            preexec_fn=controlling_terminal,
        )
        os.close(slave)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                return  # EIO: the terminal's last user is gone
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self.lines.put(line.decode(errors="replace").strip())

    def expect_json(self, timeout: float = DEFAULT_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("no JSON line from the terminal in time") from None
            start = line.find("{")
            if start >= 0:  # the terminal echoes ^C in front of what follows
                return json.loads(line[start:])

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        os.close(self.master)


@pytest.fixture
def terminal(spawn: Spawner) -> Iterator[Any]:
    opened: list[Terminal] = []

    def start(argv: list[str], cwd: Path) -> Terminal:
        term = Terminal(argv, cwd, spawn.env())
        opened.append(term)
        return term

    try:
        yield start
    finally:
        for term in opened:
            term.close()


def test_ctrl_c_at_the_terminal_reaches_the_command_once(repo: Path, terminal: Any) -> None:
    # The terminal delivers Ctrl-C to the whole foreground process group, wrapper and command
    # alike; the wrapper must not send the command a second one (agents quit on a double ^C).
    code = """
import json, os, signal, sys
count = 0
def on_int(signum, frame):
    global count
    count += 1
    print(json.dumps({"sigint": count}), flush=True)
def on_term(signum, frame):
    print(json.dumps({"sigterm": True, "sigints": count}), flush=True)
    sys.exit(0)
signal.signal(signal.SIGINT, on_int)
signal.signal(signal.SIGTERM, on_term)
print(json.dumps({"pid": os.getpid()}), flush=True)
while True:
    signal.pause()
"""
    argv = versatil_argv("run", "--agent", "A", "--", sys.executable, "-c", code)
    term = terminal(argv, repo)
    term.expect_json()
    term.type(b"\x03")
    assert term.expect_json() == {"sigint": 1}
    # A signal sent to the wrapper alone is forwarded; by the time it arrives, a duplicate
    # SIGINT (lower-numbered, so delivered first) would already have been counted.
    os.kill(term.proc.pid, signal.SIGTERM)
    assert term.expect_json() == {"sigterm": True, "sigints": 1}
    assert term.proc.wait(timeout=DEFAULT_TIMEOUT) == 0


def test_kill_9_of_the_wrapper_kills_the_command_and_frees_its_locks(
    spawn: Spawner, repo: Path, manager: LockManager
) -> None:
    child = wrapper(spawn, repo, "--agent", "Marcus", "--lock", "src/a.py", code=WAIT_THEN_EXIT)
    command_pid = child.read_json()["pid"]
    killed_at = time.monotonic()
    os.kill(child.pid, signal.SIGKILL)  # the wrapper only, not its process group
    child.popen.wait(timeout=DEFAULT_TIMEOUT)
    # The command still has the test's stdin pipe open: only PR_SET_PDEATHSIG can end it.
    wait_for(lambda: process_gone(command_pid), timeout=5, message="the command to die")
    assert time.monotonic() - killed_at < 1.0
    lease = manager.acquire(["src/a.py"], agent="James", wait=5)
    assert time.monotonic() - killed_at < 1.0
    lease.release()


def test_kill_9_of_the_command_ends_the_run_with_137_and_releases(
    spawn: Spawner, repo: Path, manager: LockManager
) -> None:
    child = wrapper(spawn, repo, "--agent", "Marcus", "--lock", "src", code=WAIT_THEN_EXIT)
    command_pid = child.read_json()["pid"]
    os.kill(command_pid, signal.SIGKILL)
    assert child.wait() == 128 + signal.SIGKILL
    assert holders(manager) == []


# Two wrappers, one file --------------------------------------------------------------------------
def test_second_wrapper_waits_and_starts_when_the_first_ends(
    spawn: Spawner, repo: Path, manager: LockManager
) -> None:
    first_code = """
import json, sys, time
print(json.dumps({"ready": True}), flush=True)
sys.stdin.readline()
print(json.dumps({"ended": time.time()}), flush=True)
"""
    second_code = "import json, time; print(json.dumps({'started': time.time()}), flush=True)"
    first = wrapper(spawn, repo, "--agent", "Marcus", "--lock", "src/a.py", code=first_code)
    first.read_json()
    second = wrapper(
        spawn, repo, "--agent", "James", "--lock", "src/", "--wait", "60", code=second_code
    )
    wait_for(lambda: [w.agent for w in manager.snapshot().waiters] == ["James"])
    assert not second.has_output()
    first.send("")
    ended = first.read_json()["ended"]
    started = second.read_json()["started"]
    assert first.wait() == 0 and second.wait() == 0
    assert started > ended
    # Woken by the kernel when the first wrapper's lease goes, not by a poll: what is left is
    # the first wrapper's clean-up and the second command's own start-up.
    assert started - ended < 1.0


def test_ctrl_c_while_waiting_for_a_lock_gives_up_without_running(
    spawn: Spawner, repo: Path, manager: LockManager
) -> None:
    with manager.hold(["src/a.py"], agent="Marcus"):
        waiting = wrapper(
            spawn, repo, "--agent", "James", "--lock", "src/a.py", "--wait", "60",
            code="open('ran', 'w').close()",
        )
        wait_for(lambda: [w.agent for w in manager.snapshot().waiters] == ["James"])
        os.kill(waiting.pid, signal.SIGINT)
        assert waiting.wait() == 128 + signal.SIGINT
        assert "interrupted (SIGINT) while waiting for locks" in waiting.stderr
        # Its place in the queue went with its process.
        assert manager.snapshot().waiters == []
    assert not (repo / "ran").exists()


# Checkpoints and rollback ------------------------------------------------------------------------
def test_rollback_on_failure_restores_only_what_the_run_changed(
    spawn: Spawner, repo: Path
) -> None:
    child = wrapper(
        spawn, repo, "--agent", "Marcus", "--lock", "src", "--rollback-on-failure",
        code=SCRIPTED,
    )
    child.read_json()
    send(child, "write src/a.py broken")
    send(child, "write src/new.py half-done")
    send(child, "delete src/b.py")
    # Meanwhile another agent edits files outside Marcus's lock.
    (repo / "docs" / "x.md").write_text("James was here\n")
    (repo / "docs" / "new.md").write_text("James's new page\n")
    child.send("exit 4")
    assert child.read_json() == {"exit": 4}
    assert child.wait() == 4
    assert (repo / "src" / "a.py").read_text() == "a = 1\n"
    assert (repo / "src" / "b.py").read_text() == "b = 2\n"
    assert not (repo / "src" / "new.py").exists()
    assert (repo / "docs" / "x.md").read_text() == "James was here\n"
    assert (repo / "docs" / "new.md").read_text() == "James's new page\n"
    assert "rolled back 3 files Marcus changed: src/a.py, src/b.py, src/new.py" in child.stderr
    recorded = [e for e in log("files-modified") if e.data.get("source") != "monitor"]
    assert [(e.agent, e.data["paths"]) for e in recorded] == [
        ("Marcus", ["src/a.py", "src/b.py", "src/new.py"])
    ]
    # The rollback itself can be undone: its safety checkpoint holds the failed state.
    kinds = [r.kind for r in Checkpoints(repo).list()]
    assert kinds.count("safety") == 1


def test_success_keeps_the_changes_and_records_them(spawn: Spawner, repo: Path) -> None:
    child = wrapper(
        spawn, repo, "--agent", "Marcus", "--lock", "src", "--rollback-on-failure",
        code=SCRIPTED,
    )
    child.read_json()
    send(child, "write src/a.py improved")
    child.send("exit 0")
    child.read_json()
    assert child.wait() == 0
    assert (repo / "src" / "a.py").read_text() == "improved\n"
    assert "rolled back" not in child.stderr
    recorded = [e for e in log("files-modified") if e.data.get("source") != "monitor"]
    assert [(e.agent, e.data["paths"]) for e in recorded] == [("Marcus", ["src/a.py"])]


def test_checkpoint_before_and_every_interval(spawn: Spawner, repo: Path) -> None:
    child = wrapper(
        spawn, repo, "--agent", "Marcus", "--lock", "src", "--checkpoint", code=WAIT_THEN_EXIT,
        env={"VERSATIL_CHECKPOINTS_INTERVAL": "0.2"},
    )
    child.read_json()
    checkpoints = Checkpoints(repo)
    wait_for(lambda: len(checkpoints.list()) >= 3, message="two periodic checkpoints")
    child.send("0")
    assert child.wait() == 0
    messages = [r.message for r in checkpoints.list()]
    assert messages[0].startswith("before versatil run:")
    assert all(m.startswith("during versatil run:") for m in messages[1:])
    assert "checkpoint" in child.stderr


# Watching what the run writes --------------------------------------------------------------------
def test_run_reports_unlocked_writes_and_attributes_locked_ones(
    spawn: Spawner, repo: Path
) -> None:
    child = wrapper(spawn, repo, "--agent", "Marcus", "--lock", "src", code=SCRIPTED)
    child.read_json()
    send(child, "write src/a.py under-the-lock")
    send(child, "write docs/new.md outside-the-lock")
    wait_for(lambda: log("unlocked-write"), message="the unlocked write to be logged")
    child.send("exit 0")
    child.read_json()
    assert child.wait() == 0
    assert [e.data["path"] for e in log("unlocked-write")] == ["docs/new.md"]
    by_monitor = [e for e in log("files-modified") if e.data.get("source") == "monitor"]
    assert [(e.agent, e.data["paths"]) for e in by_monitor] == [("Marcus", ["src/a.py"])]
    assert "1 unlocked writes in the repository during this run: docs/new.md" in child.stderr


def test_two_runs_report_each_write_once_and_hand_over(spawn: Spawner, repo: Path) -> None:
    first = wrapper(spawn, repo, "--agent", "Marcus", code=SCRIPTED)
    first.read_json()
    wait_for(lambda: [e.pid for e in log("monitor-started")] == [first.pid])
    second = wrapper(spawn, repo, "--agent", "James", code=SCRIPTED)
    second.read_json()
    send(second, "write docs/one.md from-james")
    send(first, "write docs/two.md from-marcus")
    wait_for(lambda: len(log("unlocked-write")) >= 2)
    send(first, "write docs/sentinel.md last")
    wait_for(lambda: "docs/sentinel.md" in [e.data["path"] for e in log("unlocked-write")])
    assert sorted(e.data["path"] for e in log("unlocked-write")) == [
        "docs/one.md", "docs/sentinel.md", "docs/two.md",
    ]
    assert {e.pid for e in log("unlocked-write")} == {first.pid}
    # The observing run ends: the other takes over at once and reports from then on.
    first.send("exit 0")
    assert first.wait() == 0
    wait_for(lambda: second.pid in [e.pid for e in log("monitor-started")])
    assert Election(Repository.find(repo)).holder_pid() == second.pid
    send(second, "write docs/three.md after-hand-over")
    wait_for(lambda: "docs/three.md" in [e.data["path"] for e in log("unlocked-write")])
    second.send("exit 0")
    assert second.wait() == 0
    paths = [e.data["path"] for e in log("unlocked-write")]
    assert sorted(paths) == sorted(set(paths))
