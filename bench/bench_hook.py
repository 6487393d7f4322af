"""Pre-commit guard benchmark: what `versatil hook check` adds to every `git commit`.

Run through ``python bench/run.py hook`` (or ``python -m bench.bench_hook``). One throwaway
repository with FILES staged modifications and LOCKS live locks (half held by this process as
process leases, so each costs a liveness probe, half shell leases), none covering a staged file
so the commit goes through. Every row is measured in this same run, so the ratios hold on
whatever machine runs it:

* ``git commit`` with no hook: the anchor;
* ``versatil hook check`` alone, allowed and refused (one more lock covering a staged directory);
* ``git commit`` with the hook installed.

Goal (issue 6): the check takes at most 150 ms wall for 1,000 staged files and 100 live locks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

GOAL_MS = 150.0


def _env(home: Path, pycache: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Start-up is most of the check's time, so measure it as users get it: with compiled
    # bytecode. A sandbox that sets PYTHONDONTWRITEBYTECODE would otherwise have every run
    # compile every module from source; the prefix keeps the bytecode out of the source tree.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        PYTHONPYCACHEPREFIX=str(pycache),
        VERSATIL_HOME=str(home),
        # The hook finds `versatil` on PATH, as it would in the venv of whoever commits.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@example.invalid",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@example.invalid",
        GIT_CONFIG_NOSYSTEM="1",
    )
    env.pop("VERSATIL_AGENT", None)  # a human commits: every write lock counts
    return env


def _git(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def _make_repo(repo: Path, env: dict[str, str], files: int) -> None:
    subprocess.run(["git", "init", "-q", str(repo)], env=env, check=True)
    _git(repo, env, "config", "commit.gpgsign", "false")
    for i in range(files):
        path = repo / "src" / f"pkg{i // 50:03d}" / f"mod{i:04d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"VALUE = {i}\n")
    _git(repo, env, "add", "-A")
    _git(repo, env, "commit", "-q", "-m", "base")
    for i in range(files):  # the change every timed commit stages
        path = repo / "src" / f"pkg{i // 50:03d}" / f"mod{i:04d}.py"
        path.write_text(f"VALUE = {i + 1}\n")
    _git(repo, env, "add", "-A")


def _time(
    action: Callable[[], object], runs: int, after: Callable[[], object] | None = None
) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1e3)
        if after is not None:
            after()  # untimed: put the staged change back for the next commit
    return samples


def run(files: int, locks: int, runs: int) -> dict[str, list[float]]:
    """Wall milliseconds of each scenario, ``runs`` samples each."""
    from versatil_fs.locks.manager import LockManager
    from versatil_fs.state import StateDir

    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="versatil-bench-hook-") as tmp:
        home, repo = Path(tmp) / "home", Path(tmp) / "repo"
        env = _env(home, Path(tmp) / "pycache")
        _make_repo(repo, env, files)
        manager = LockManager(repo=repo, state=StateDir(home))
        held = [
            manager.acquire(
                [f"elsewhere/area{j:03d}/"],
                agent=f"Agent{j:03d}",
                owner="process" if j % 2 == 0 else "shell",
                ttl=3600,
            )
            for j in range(locks)
        ]
        versatil = str(Path(sys.executable).with_name("versatil"))

        def commit() -> None:
            _git(repo, env, "commit", "-q", "-m", "bench")

        def uncommit() -> None:
            _git(repo, env, "reset", "-q", "--soft", "HEAD~1")

        def check(expect: int) -> Callable[[], None]:
            def go() -> None:
                code = subprocess.run(
                    [versatil, "hook", "check"], cwd=repo, env=env, capture_output=True
                ).returncode
                if code != expect:
                    raise RuntimeError(f"versatil hook check exited {code}, expected {expect}")

            return go

        check(0)()  # warm-up: fills the bytecode cache
        results["python -c pass"] = _time(
            lambda: subprocess.run([sys.executable, "-c", "pass"], env=env, check=True), runs
        )
        results["git commit, no hook"] = _time(commit, runs, uncommit)
        results["versatil hook check"] = _time(check(0), runs)
        blocker = manager.acquire(["src/pkg000/"], agent="Blocker", owner="shell")
        results["versatil hook check, refused"] = _time(check(1), runs)
        blocker.release()
        subprocess.run(
            [versatil, "hook", "install"], cwd=repo, env=env, check=True, capture_output=True
        )
        results["git commit, with hook"] = _time(commit, runs, uncommit)
        for lease in held:
            lease.release()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench hook")
    parser.add_argument("--files", type=int, default=1000, help="staged files")
    parser.add_argument("--locks", type=int, default=100, help="live locks")
    parser.add_argument("--runs", type=int, default=15, help="samples per row")
    args = parser.parse_args(argv)
    results = run(args.files, args.locks, args.runs)
    anchor = statistics.median(results["git commit, no hook"])
    print(
        f"Pre-commit guard, {args.files} staged files, {args.locks} live locks "
        f"(wall ms over {args.runs} runs)"
    )
    print(f"  {'command':<32}{'p50':>8}{'min':>8}{'max':>8}   p50 / git commit without hook")
    for name, samples in results.items():
        p50 = statistics.median(samples)
        print(
            f"  {name:<32}{p50:>8.1f}{min(samples):>8.1f}{max(samples):>8.1f}   "
            f"{p50 / anchor:>5.1f}x"
        )
    check = statistics.median(results["versatil hook check"])
    added = statistics.median(results["git commit, with hook"]) - anchor
    verdict = "met" if check <= GOAL_MS else "NOT met"
    print(
        f"  goal: versatil hook check <= {GOAL_MS:.0f} ms: {verdict} ({check:.1f} ms); "
        f"the hook adds {added:.1f} ms to a commit"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
