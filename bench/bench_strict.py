"""Strict guard benchmark: what ``versatil hook install --strict`` (git's reference-transaction
hook) adds to a commit that skips pre-commit, and to a checkpoint.

Run through ``python bench/run.py strict`` (or ``python -m bench.bench_strict``). One throwaway
repository with FILES tracked files and LOCKS live locks (half held by this process as process
leases, so each costs a liveness probe, half shell leases), none covering the committed file, so
every commit goes through after the full check. Every row is measured in this same run, and the
ratios are against the row without the hook:

* ``git commit --no-verify`` (one modified file) without any hook, then with the strict hook:
  its branch update reaches ``versatil hook check-refs``;
* ``Checkpoints.create`` in-process (one ``git fast-import`` updating ``refs/versatil/*``)
  without, then with the strict hook: that update must stop in the hook's shell.

Goal (issue 17): the strict hook adds at most 150 ms to ``git commit --no-verify`` with 100 live
locks; for a checkpoint, the cost of one ``sh`` start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import bench_env, git, timed

GOAL_MS = 150.0


def run(files: int, locks: int, runs: int) -> dict[str, list[float]]:
    """Wall milliseconds of each scenario, ``runs`` samples each."""
    from versatil_fs import hook
    from versatil_fs.checkpoints import Checkpoints
    from versatil_fs.locks.manager import LockManager
    from versatil_fs.state import StateDir

    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="versatil-bench-strict-") as tmp:
        home, repo = Path(tmp) / "home", Path(tmp) / "repo"
        env = bench_env(home, Path(tmp) / "pycache")
        saved_env = dict(os.environ)
        os.environ.update(env)  # the in-process checkpoint's git (and its hook) inherit it
        try:
            subprocess.run(["git", "init", "-q", str(repo)], env=env, check=True)
            git(repo, env, "config", "commit.gpgsign", "false")
            for i in range(files):
                path = repo / "src" / f"pkg{i // 50:03d}" / f"mod{i:04d}.py"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"VALUE = {i}\n")
            git(repo, env, "add", "-A")
            git(repo, env, "commit", "-q", "-m", "base")
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
            target = repo / "src" / "pkg000" / "mod0000.py"
            counter = iter(range(1, 10**9))  # 0 is the committed value

            def commit() -> None:
                target.write_text(f"VALUE = {next(counter)}\n")
                git(repo, env, "commit", "-q", "--no-verify", "-am", "bench")

            checkpoints = Checkpoints(repo)

            def checkpoint() -> None:
                checkpoints.create("bench", prune=False)

            commit()  # warm-up
            results["git commit --no-verify"] = timed(commit, runs)
            results["checkpoint create"] = timed(checkpoint, runs)
            hook.install(repo, strict=True)
            commit()  # warm-up: fills the bytecode cache of the hook's versatil
            results["git commit --no-verify, strict hook"] = timed(commit, runs)
            results["checkpoint create, strict hook"] = timed(checkpoint, runs)
            for lease in held:
                lease.release()
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench strict")
    parser.add_argument("--files", type=int, default=1000, help="tracked files")
    parser.add_argument("--locks", type=int, default=100, help="live locks")
    parser.add_argument("--runs", type=int, default=15, help="samples per row")
    args = parser.parse_args(argv)
    results = run(args.files, args.locks, args.runs)
    print(
        f"Strict guard (reference-transaction), {args.files} files, {args.locks} live locks "
        f"(wall ms over {args.runs} runs)"
    )
    print(f"  {'command':<40}{'p50':>8}{'min':>8}{'max':>8}   p50 / same without the hook")
    for name, samples in results.items():
        anchor = statistics.median(results[name.removesuffix(", strict hook")])
        p50 = statistics.median(samples)
        print(
            f"  {name:<40}{p50:>8.1f}{min(samples):>8.1f}{max(samples):>8.1f}   "
            f"{p50 / anchor:>5.2f}x"
        )

    def added(name: str) -> float:
        return statistics.median(results[f"{name}, strict hook"]) - statistics.median(
            results[name]
        )

    commit_added = added("git commit --no-verify")
    verdict = "met" if commit_added <= GOAL_MS else "NOT met"
    print(
        f"  goal: the strict hook adds <= {GOAL_MS:.0f} ms to git commit --no-verify: {verdict} "
        f"({commit_added:.1f} ms); to a checkpoint it adds {added('checkpoint create'):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
