"""Glob overlap benchmark: what deciding one pair of reservations costs (issue 16 part 1).

Run through ``python bench/run.py globs`` (or ``python -m bench.bench_globs``). A fixed, seeded
set of realistic pattern pairs (``src/**/*.ts``, ``tests/unit/test_*.py``, plain directories and
files; some overlapping, most not, as in a lock table) is decided one pair at a time. Every row is
measured in this same run against two anchors, so the ratios hold on whatever machine runs it:

* ``fnmatch.fnmatchcase`` of one path against one pattern (its compiled regex cached);
* ``re.match`` of one path against a regex compiled beforehand.

Rows: one glob/glob pair with the caches warm (the lock manager sees the same patterns again and
again), one pair cold (the segment cache cleared before each pair: every segment meeting
computed), parsing one pattern, and one new glob against a table of 1,000 others — pair by pair,
then the lock manager's way (``ClaimIndex``, what ``blockers`` runs on every transaction: top
names first, each pair's answer cached), cold and warm, beside the same check of a plain path
against 1,000 plain-path locks (the fast path, as an anchor).

Goal (issue 16): one glob/glob pair <= 50 µs median.
"""

from __future__ import annotations

import argparse
import fnmatch
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

GOAL_US = 50.0

_DIRS = ["src", "tests", "lib", "docs", "api", "unit", "components", "models", "utils", "web"]
_FILES = ["*.ts", "*.py", "test_*.py", "*_test.go", "a*", "*b.py", "index.*", "[a-m]*.ts",
          "??.md", "*.[jt]s", "README.md", "users.py", "[!_]*.py", "*.tsx"]


def pattern(rng: random.Random) -> str:
    depth = rng.randint(1, 4)
    parts = []
    for k in range(depth):
        last = k == depth - 1
        roll = rng.random()
        if roll < 0.15:
            parts.append("**")
        elif last and roll < 0.85:
            parts.append(rng.choice(_FILES))
        else:
            parts.append(rng.choice(_DIRS))
    if parts[-1] == "**" and rng.random() < 0.5:
        parts.append(rng.choice(_FILES))
    return "/".join(parts)


def pairs(count: int, seed: int = 16) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(pattern(rng), pattern(rng)) for _ in range(count)]


def _per_call_us(fn: Callable[[], object], repeat: int, batches: int = 5) -> float:
    # The best of a few batches, as timeit advises: on a shared machine the slower batches
    # measure the other processes, not this call.
    best = None
    for _ in range(batches):
        start = time.perf_counter_ns()
        for _ in range(repeat):
            fn()
        elapsed = time.perf_counter_ns() - start
        best = elapsed if best is None else min(best, elapsed)
    assert best is not None
    return best / repeat / 1000


def run(count: int, repeat: int) -> dict[str, list[float]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from versatil_fs.locks import glob_segments, globs

    chosen = pairs(count)
    parsed = [(globs.parse(a), globs.parse(b)) for a, b in chosen]
    paths = [globs.overlap(a, b) or "src/api/users.py" for a, b in parsed]
    regexes = [re.compile(fnmatch.translate(a)) for a, _ in chosen]
    rows: dict[str, list[float]] = {
        "anchor: fnmatchcase, one path": [],
        "anchor: re.match, compiled": [],
        "overlap, one pair, warm": [],
        "overlap, one pair, cold": [],
        "parse, one pattern (segs cached)": [],
    }
    def cold(pa: globs.Pattern, pb: globs.Pattern) -> None:
        glob_segments.clear_caches()
        globs.overlap(pa, pb)

    def parse_cold(text: str) -> None:
        globs.parse.cache_clear()
        globs.parse(text)

    for (ta, _), (pa, pb), path, rx in zip(chosen, parsed, paths, regexes, strict=True):
        rows["anchor: fnmatchcase, one path"].append(
            _per_call_us(partial(fnmatch.fnmatchcase, path, ta), repeat))
        rows["anchor: re.match, compiled"].append(_per_call_us(partial(rx.match, path), repeat))
        rows["overlap, one pair, warm"].append(
            _per_call_us(partial(globs.overlap, pa, pb), repeat))
        # Cold: every segment meeting of the pair computed again (parsed patterns kept); the
        # cost of clearing the caches is measured and taken off.
        clear = _per_call_us(glob_segments.clear_caches, repeat)
        rows["overlap, one pair, cold"].append(
            max(_per_call_us(partial(cold, pa, pb), repeat) - clear, 0.0))
        clear = _per_call_us(globs.parse.cache_clear, repeat)
        rows["parse, one pattern (segs cached)"].append(
            max(_per_call_us(partial(parse_cold, ta), repeat) - clear, 0.0))
    # One new reservation checked against a table of 1,000 glob reservations.
    rng = random.Random(1000)
    table = [globs.parse(pattern(rng)) for _ in range(1000)]
    news = [globs.parse(pattern(rng)) for _ in range(20)]
    warm: list[float] = []
    cold_runs: list[float] = []

    def check_table(new: globs.Pattern) -> None:
        for g in table:
            globs.overlap(new, g)

    def check_table_cold(new: globs.Pattern) -> None:
        glob_segments.clear_caches()
        check_table(new)

    for new in news:
        cold_runs.append(_per_call_us(partial(check_table_cold, new), 1))
        warm.append(_per_call_us(partial(check_table, new), 1))
    rows["one glob vs 1,000 globs, cold"] = cold_runs
    rows["one glob vs 1,000 globs, warm"] = warm
    rows.update(_table_rows(table, news))
    overlapping = [(a, b) for a, b in chosen if globs.overlap(a, b) is not None]
    rows["_overlapping"] = [float(len(overlapping))]
    # What matching one pattern's text as a path against the other (other tools' way) misses.
    rows["_missed"] = [float(sum(not (a == b or fnmatch.fnmatchcase(a, b)
                                      or fnmatch.fnmatchcase(b, a)) for a, b in overlapping))]
    return rows


def _table_rows(table: list[object], news: list[object]) -> dict[str, list[float]]:
    """A request checked against a lock table of 1,000 glob locks, the lock manager's way
    (``ClaimIndex``, as ``blockers`` runs it on every transaction), beside the same check
    against 1,000 plain-path locks (the fast path, its anchor)."""
    from versatil_fs.locks import glob_pairs, glob_segments, globs
    from versatil_fs.locks.table import Claim, ClaimIndex, Resource

    repo = "/bench/.git"
    glob_claims = [[Claim(Resource(repo=repo, path=p.text, glob=True))]  # type: ignore[attr-defined]
                   for p in table]
    rng = random.Random(7)
    plain_claims = [[Claim(Resource(repo=repo, path="/".join(
        rng.choice(_DIRS) for _ in range(rng.randint(1, 4)))))] for _ in range(1000)]
    requests = [[Claim(Resource(repo=repo, path=p.text, glob=True))]  # type: ignore[attr-defined]
                for p in news]

    def check(request: list[Claim], held: list[list[Claim]]) -> None:
        index = ClaimIndex(request)
        for claims in held:
            index.conflicts(claims)

    def check_cold(request: list[Claim]) -> None:
        glob_pairs.pair_witness.cache_clear()
        glob_segments.clear_caches()
        globs.parse.cache_clear()
        check(request, glob_claims)

    rows: dict[str, list[float]] = {
        "anchor: 1 path vs 1,000 plain locks": [], "ClaimIndex: 1 glob vs 1,000 plain": [],
        "ClaimIndex: 1 glob vs 1,000 globs, cold": [],
        "ClaimIndex: 1 glob vs 1,000 globs, warm": [],
    }
    plain_requests = [[Claim(Resource(repo=repo, path=f"{rng.choice(_DIRS)}/x.py"))]
                      for _ in news]
    for request, plain_request in zip(requests, plain_requests, strict=True):
        rows["anchor: 1 path vs 1,000 plain locks"].append(
            _per_call_us(partial(check, plain_request, plain_claims), 3))
        rows["ClaimIndex: 1 glob vs 1,000 plain"].append(
            _per_call_us(partial(check, request, plain_claims), 3))
        rows["ClaimIndex: 1 glob vs 1,000 globs, cold"].append(
            _per_call_us(partial(check_cold, request), 1, batches=3))
        rows["ClaimIndex: 1 glob vs 1,000 globs, warm"].append(
            _per_call_us(partial(check, request, glob_claims), 3))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench globs")
    parser.add_argument("--pairs", type=int, default=400, help="pattern pairs")
    parser.add_argument("--repeat", type=int, default=50, help="calls per sample")
    args = parser.parse_args(argv)
    rows = run(args.pairs, args.repeat)
    overlapping = int(rows.pop("_overlapping")[0])
    missed = int(rows.pop("_missed")[0])
    fn_anchor = statistics.median(rows["anchor: fnmatchcase, one path"])
    re_anchor = statistics.median(rows["anchor: re.match, compiled"])
    print(f"Glob overlap, {args.pairs} seeded pairs ({overlapping} overlapping), "
          f"µs per call (best of 5 batches), median over pairs")
    print(f"  {'row':<34}{'p50':>10}{'p90':>10}   p50/fnmatch   p50/re.match")
    for name, samples in rows.items():
        p50 = statistics.median(samples)
        p90 = statistics.quantiles(samples, n=10)[-1] if len(samples) > 1 else p50
        print(f"  {name:<34}{p50:>10.2f}{p90:>10.2f}   {p50 / fn_anchor:>10.1f}x"
              f"   {p50 / re_anchor:>11.1f}x")
    cold = statistics.median(rows["overlap, one pair, cold"])
    warm = statistics.median(rows["overlap, one pair, warm"])
    verdict = "met" if max(cold, warm) <= GOAL_US else "NOT met"
    print(f"  goal: one glob/glob pair <= {GOAL_US:.0f} µs median: {verdict} "
          f"(cold {cold:.1f} µs, warm {warm:.1f} µs)")
    print(f"  text-as-path matching (fnmatch of one pattern's text against the other) misses "
          f"{missed} of the {overlapping} overlapping pairs ({missed / max(overlapping, 1):.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
