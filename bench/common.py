"""What the benchmarks share: the environment their child processes run in, git, a timer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["bench_env", "git", "timed"]


def bench_env(home: Path, pycache: Path) -> dict[str, str]:
    """The environment of a benchmark's processes: its own state directory, git identity, the
    venv's `versatil` first on PATH (as in whoever commits), no VERSATIL_AGENT (a human: every
    write lock counts)."""
    env = dict(os.environ)
    # Start-up is most of a command's time, so measure it as users get it: with compiled
    # bytecode. A sandbox that sets PYTHONDONTWRITEBYTECODE would otherwise have every run
    # compile every module from source; the prefix keeps the bytecode out of the source tree.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("VERSATIL_AGENT", None)
    env.update(
        PYTHONPYCACHEPREFIX=str(pycache),
        VERSATIL_HOME=str(home),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@example.invalid",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@example.invalid",
        GIT_CONFIG_NOSYSTEM="1",
    )
    return env


def git(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def timed(
    action: Callable[[], object], runs: int, after: Callable[[], object] | None = None
) -> list[float]:
    """Wall milliseconds of ``runs`` calls of ``action``; ``after`` runs untimed after each."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1e3)
        if after is not None:
            after()
    return samples
