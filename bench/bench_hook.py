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
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.common import bench_env, git, timed

GOAL_MS = 150.0


def _make_repo(repo: Path, env: dict[str, str], files: int) -> None:
    subprocess.run(["git", "init", "-q", str(repo)], env=env, check=True)
    git(repo, env, "config", "commit.gpgsign", "false")
    for i in range(files):
        path = repo / "src" / f"pkg{i // 50:03d}" / f"mod{i:04d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"VALUE = {i}\n")
    git(repo, env, "add", "-A")
    git(repo, env, "commit", "-q", "-m", "base")
    for i in range(files):  # the change every timed commit stages
        path = repo / "src" / f"pkg{i // 50:03d}" / f"mod{i:04d}.py"
        path.write_text(f"VALUE = {i + 1}\n")
    git(repo, env, "add", "-A")


def run(files: int, locks: int, runs: int) -> dict[str, list[float]]:
    """Wall milliseconds of each scenario, ``runs`` samples each."""
    from versatil_fs.locks.manager import LockManager
    from versatil_fs.state import StateDir

    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="versatil-bench-hook-") as tmp:
        home, repo = Path(tmp) / "home", Path(tmp) / "repo"
        env = bench_env(home, Path(tmp) / "pycache")
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
            git(repo, env, "commit", "-q", "-m", "bench")

        def uncommit() -> None:
            git(repo, env, "reset", "-q", "--soft", "HEAD~1")

        def check(expect: int) -> Callable[[], None]:
            def go() -> None:
                code = subprocess.run(
                    [versatil, "hook", "check"], cwd=repo, env=env, capture_output=True
                ).returncode
                if code != expect:
                    raise RuntimeError(f"versatil hook check exited {code}, expected {expect}")

            return go

        check(0)()  # warm-up: fills the bytecode cache
        results["python -c pass"] = timed(
            lambda: subprocess.run([sys.executable, "-c", "pass"], env=env, check=True), runs
        )
        results["git commit, no hook"] = timed(commit, runs, uncommit)
        results["versatil hook check"] = timed(check(0), runs)
        blocker = manager.acquire(["src/pkg000/"], agent="Blocker", owner="shell")
        results["versatil hook check, refused"] = timed(check(1), runs)
        blocker.release()
        subprocess.run(
            [versatil, "hook", "install"], cwd=repo, env=env, check=True, capture_output=True
        )
        results["git commit, with hook"] = timed(commit, runs, uncommit)
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
