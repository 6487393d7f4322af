"""Agent hook benchmark: what `versatil agent-hook` costs an agent before every edit.

Run through ``python bench/run.py agents`` (or ``python -m bench.bench_agents``). One throwaway
repository and LOCKS live locks of other agents (half process leases, half shell leases) on
other paths. This process plays the harness: it runs each hook as Claude Code does (the
payload on stdin, exit code and stdout read back), so the hooks find it as their harness and
its session keeper answers them. Every row is measured in this same run, interleaved sample by
sample so that a machine's drift touches every row alike:

* ``python -c pass``: the anchor (an interpreter's start; no hook can cost less);
* ``versatil locks``: the anchor for a whole versatil command;
* ``agent-hook PreToolUse``: a new file claimed (one lock transaction in the keeper), the same
  file again (already this session's), and a file another agent holds (denied);
* the in-process fallback (no keeper: ``VERSATIL_HARNESS_PID`` naming no process), and the
  first hook of a harness process (it starts the keeper);
* a killed harness: from ``kill -9`` of a harness holding a claim to the grant of a request
  that was blocked on it;
* ``versatil mcp``: from its spawn to its answer to ``initialize`` (Codex gives an MCP server
  ``startup_timeout_sec`` = 10 s by default), when the ``mcp`` extra is installed.

Goal (issue 14): a PreToolUse decision with 100 live locks at most 60 ms p50 and at most 3x
``python -c pass``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import bench_env

GOAL_MS = 60.0
GOAL_RATIO = 3.0

_ONE_HOOK = r"""
import subprocess, sys, time
hold, argv, payload = sys.argv[1] == "hold", sys.argv[2:-1], sys.argv[-1].encode()
start = time.perf_counter()
done = subprocess.run(argv, input=payload, capture_output=True)
print((time.perf_counter() - start) * 1e3, done.returncode, flush=True)
if hold:
    sys.stdin.read()  # hold the session (and its claim) until killed
"""


def _payload(repo: Path, session: str, path: Path, tool: str = "Write") -> bytes:
    # https://code.claude.com/docs/en/hooks: PreToolUse input for the Write tool.
    return json.dumps({
        "session_id": session, "transcript_path": str(repo / ".t.jsonl"), "cwd": str(repo),
        "permission_mode": "default", "hook_event_name": "PreToolUse", "tool_name": tool,
        "tool_input": {"file_path": str(path), "content": "x"}, "tool_use_id": "toolu_01",
    }).encode()


def run(locks: int, runs: int) -> dict[str, list[float]]:
    """Wall milliseconds of each row, ``runs`` samples each."""
    from versatil_fs.locks.manager import LockManager
    from versatil_fs.state import StateDir

    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="versatil-bench-agents-") as tmp:
        home, repo = Path(tmp) / "home", Path(tmp) / "repo"
        env = bench_env(home, Path(tmp) / "pycache")
        subprocess.run(["git", "init", "-q", str(repo)], env=env, check=True)
        (repo / "src").mkdir()
        for i in range(runs + 10):
            (repo / "src" / f"f{i:03d}.py").write_text("x = 1\n")
        manager = LockManager(repo=repo, state=StateDir(home))
        held = [
            manager.acquire(
                [f"elsewhere/area{j:03d}/"], agent=f"Agent{j:03d}",
                owner="process" if j % 2 == 0 else "shell", ttl=3600,
            )
            for j in range(locks)
        ]
        blocked = manager.acquire(["src/held.py"], agent="Other", owner="shell", ttl=3600)
        versatil = str(Path(sys.executable).with_name("versatil"))
        hook = [versatil, "agent-hook", "claude"]
        session = "bench000-0000-4000-8000-000000000000"

        def call(payload: bytes, expect_silent: bool, extra: dict[str, str] | None = None) -> None:
            done = subprocess.run(
                hook, input=payload, cwd=repo, env={**env, **(extra or {})},
                capture_output=True,
            )
            if done.returncode != 0 or bool(done.stdout) == expect_silent:
                raise RuntimeError(f"agent-hook answered {done!r}")

        call(_payload(repo, session, repo / "src" / "warm.py"), True)  # starts the keeper
        rows: dict[str, Callable[[int], object]] = {
            "python -c pass": lambda i: subprocess.run(
                [sys.executable, "-c", "pass"], env=env, check=True
            ),
            "versatil locks": lambda i: subprocess.run(
                [versatil, "locks"], cwd=repo, env=env, check=True, capture_output=True
            ),
            "agent-hook, a new file claimed": lambda i: call(
                _payload(repo, session, repo / "src" / f"f{i:03d}.py"), True
            ),
            "agent-hook, its own file again": lambda i: call(
                _payload(repo, session, repo / "src" / "warm.py", tool="Edit"), True
            ),
            "agent-hook, denied (held)": lambda i: call(
                _payload(repo, session, repo / "src" / "held.py"), False
            ),
            "agent-hook, in-process (no keeper)": lambda i: call(
                _payload(repo, "fallback-0000", repo / "src" / f"g{i:03d}.py", tool="Edit"),
                True, {"VERSATIL_HARNESS_PID": "none"},
            ),
        }
        for name in rows:
            results[name] = []
        for i in range(runs):
            for name, action in rows.items():
                start = time.perf_counter()
                action(i)
                results[name].append((time.perf_counter() - start) * 1e3)
        results["agent-hook, first of a harness"] = [
            _first_hook(hook, repo, env, i) for i in range(max(3, runs // 3))
        ]
        results["kill -9 harness -> claim free"] = [
            _killed_harness(hook, repo, env, manager, i) for i in range(max(3, runs // 3))
        ]
        if _has_mcp():
            results["versatil mcp, start to initialize"] = [
                _mcp_start(versatil, repo, env) for _ in range(max(3, runs // 3))
            ]
        blocked.release()
        for lease in held:
            lease.release()
        manager.close()
    return results


def _first_hook(hook: list[str], repo: Path, env: dict[str, str], i: int) -> float:
    """The first hook of a new harness process: it starts that harness's keeper."""
    payload = _payload(repo, f"first{i:03d}-0000", repo / "src" / "first.py", tool="Edit")
    done = subprocess.run(
        [sys.executable, "-c", _ONE_HOOK, "once", *hook, payload.decode()], cwd=repo, env=env,
        capture_output=True, text=True, check=True,
    )
    return float(done.stdout.split()[0])


def _killed_harness(
    hook: list[str], repo: Path, env: dict[str, str], manager: object, i: int
) -> float:
    """From kill -9 of a harness holding a claim to the grant of a request blocked on it."""
    from versatil_fs.locks.manager import LockManager

    assert isinstance(manager, LockManager)
    target = repo / "src" / f"killed{i:03d}.py"
    payload = _payload(repo, f"killed{i:03d}-0000", target).decode()
    harness = subprocess.Popen(
        [sys.executable, "-c", _ONE_HOOK, "hold", *hook, payload],
        cwd=repo, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert harness.stdout is not None
    harness.stdout.readline()  # the claim is taken
    start = time.perf_counter()
    os.kill(harness.pid, signal.SIGKILL)
    lease = manager.acquire([str(target)], agent="Waiter", wait=10)
    elapsed = (time.perf_counter() - start) * 1e3
    lease.release()
    harness.wait()
    return elapsed


def _has_mcp() -> bool:
    import importlib.util

    return importlib.util.find_spec("mcp") is not None


def _mcp_start(versatil: str, repo: Path, env: dict[str, str]) -> float:
    """Spawn ``versatil mcp`` and time its answer to the MCP ``initialize`` request (the stdio
    transport: one JSON-RPC message per line)."""
    request = json.dumps({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "bench", "version": "1"}},
    })
    start = time.perf_counter()
    server = subprocess.Popen(
        [versatil, "mcp", "--harness", "claude"], cwd=repo, env=env, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write(request + "\n")
    server.stdin.flush()
    answer = server.stdout.readline()
    elapsed = (time.perf_counter() - start) * 1e3
    server.stdin.close()
    server.wait(timeout=30)
    if '"result"' not in answer:
        raise RuntimeError(f"versatil mcp answered {answer!r}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench agents")
    parser.add_argument("--locks", type=int, default=100, help="live locks of other agents")
    parser.add_argument("--runs", type=int, default=30, help="samples per row")
    args = parser.parse_args(argv)
    results = run(args.locks, args.runs)
    python = statistics.median(results["python -c pass"])
    locks = statistics.median(results["versatil locks"])
    print(f"Agent hook (Claude Code PreToolUse), {args.locks} live locks "
          f"(wall ms over {args.runs} runs)")
    print(f"  {'row':<38}{'p50':>8}{'min':>8}{'max':>8}   p50 / python   p50 / versatil locks")
    for name, samples in results.items():
        p50 = statistics.median(samples)
        print(
            f"  {name:<38}{p50:>8.1f}{min(samples):>8.1f}{max(samples):>8.1f}   "
            f"{p50 / python:>11.2f}x   {p50 / locks:>17.2f}x"
        )
    decision = statistics.median(results["agent-hook, a new file claimed"])
    met = decision <= GOAL_MS and decision <= GOAL_RATIO * python
    print(
        f"  goal: a PreToolUse decision <= {GOAL_MS:.0f} ms and <= {GOAL_RATIO:.0f}x python: "
        f"{'met' if met else 'NOT met'} ({decision:.1f} ms, {decision / python:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
