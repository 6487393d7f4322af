"""Wave executor benchmark: how close real runs come to the best any schedule could do.

Run through ``python bench/run.py waves`` (or ``python -m bench.bench_waves``). Each plan is made
of sleeping tasks (``sleep D``, estimate D, each writing its own file so it takes a real lock and
its files are snapshotted) and runs end to end in a throwaway repository with checkpoints on, as
a user would run it. Measured in the same run:

* per plan (a chain, a wide fan, stacked diamonds, a random DAG of 200 tasks): the makespan
  against the lower bound ``max(critical path, total work / agents)``; goal: within 5%;
* per-task scheduling overhead: a chain of ``true`` tasks, checkpoints off, start to start;
* one checkpoint (made before every wave, on the critical path of a chain);
* the resolver on 1,000 tasks; goal: 100 ms.

:func:`simulate` runs the scheduler's ready-task rule on the same plans with zero overhead (the
``sim`` column: what the rule alone loses, the rest is overhead), and the table after it compares
window rules and orders (``--simulate`` prints only that, in a second); the executor's module
docstring says which rule it uses and why.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RESOLVER_GOAL_MS = 100.0
MAKESPAN_GOAL = 1.05


def _tasks(spec: list[tuple[str, float, list[str]]]) -> list[object]:
    from versatil_fs.waves.plan import Task

    return [
        Task(id=tid, agent=f"agent-{i % 7}", run=["sleep", f"{d:.3f}"], writes=[f"out/{tid}"],
             needs=needs, estimate=d)
        for i, (tid, d, needs) in enumerate(spec)
    ]


def chain(unit: float, n: int = 8) -> list[tuple[str, float, list[str]]]:
    return [(f"c{i}", unit, [f"c{i - 1}"] if i else []) for i in range(n)]


def fan(unit: float, width: int = 30, seed: int = 1) -> list[tuple[str, float, list[str]]]:
    rng = random.Random(seed)
    middle = [(f"f{i}", round(unit * rng.uniform(0.5, 1.5), 3), ["root"]) for i in range(width)]
    return [("root", unit, []), *middle, ("sink", unit, [m[0] for m in middle])]


def diamonds(unit: float, levels: int = 3, width: int = 4) -> list[tuple[str, float, list[str]]]:
    spec: list[tuple[str, float, list[str]]] = [("d0", unit, [])]
    top = "d0"
    for level in range(levels):
        sides = [f"d{level}-{i}" for i in range(width)]
        spec += [(s, unit, [top]) for s in sides]
        top = f"d{level + 1}"
        spec.append((top, unit, sides))
    return spec


def random_dag(
    unit: float, n: int = 200, seed: int = 7
) -> list[tuple[str, float, list[str]]]:
    rng = random.Random(seed)
    spec = []
    for i in range(n):
        needs = sorted({f"r{rng.randrange(i)}" for _ in range(rng.randint(0, 2))}) if i else []
        spec.append((f"r{i}", round(unit * rng.uniform(0.2, 1.0), 3), needs))
    return spec


def tight_bound(spec: list[tuple[str, float, list[str]]], agents: int) -> float:
    """A lower bound at least as tight as ``max(critical path, work / agents)``.

    For tasks t and u (u a descendant of t), every task strictly between them starts after t
    ends and ends before u starts, so on ``agents`` slots the makespan is at least
    ``head(t) + d(t) + work(between) / agents + d(u) + tail(u)``, where head is the longest
    chain before a task and tail the longest after it. A fan (root -> many -> sink) is the
    shape where this beats the simple bound: the root and the sink each run alone.
    """
    duration = {t: d for t, d, _ in spec}
    needs = {t: n for t, _, n in spec}
    order = [t for t, _, _ in spec]  # the generators list needs first
    head: dict[str, float] = {}
    for t in order:
        head[t] = max((head[n] + duration[n] for n in needs[t]), default=0.0)
    dependents: dict[str, list[str]] = {t: [] for t in order}
    for t in order:
        for n in needs[t]:
            dependents[n].append(t)
    tail: dict[str, float] = {}
    below: dict[str, set[str]] = {}  # strict descendants
    for t in reversed(order):
        tail[t] = max((tail[d] + duration[d] for d in dependents[t]), default=0.0)
        below[t] = set().union(*([{d} | below[d] for d in dependents[t]] or [set()]))
    above: dict[str, set[str]] = {}  # strict ancestors
    for t in order:
        above[t] = set().union(*([{n} | above[n] for n in needs[t]] or [set()]))
    total = sum(duration.values())
    bound = max(max(head[t] + duration[t] + tail[t] for t in order), total / agents)
    for t in order:
        for u in below[t]:
            between = below[t] & above[u]
            work = sum(duration[x] for x in between)
            bound = max(bound, head[t] + duration[t] + work / agents + duration[u] + tail[u])
    return bound


# The scheduler's ready-task rule, simulated -----------------------------------------------------
# Window rules: may a ready task of `wave` start, given the waves of the tasks running (wave ->
# how many), the lowest wave with a task not done, and max_concurrent_waves?
def _window_running(in_flight: dict[int, int], wave: int, lowest: int, limit: int) -> bool:
    from versatil_fs.waves.schedule import admits

    return admits(in_flight, wave, limit)  # the executor's own rule


def _window_not_done(in_flight: dict[int, int], wave: int, lowest: int, limit: int) -> bool:
    return wave < lowest + limit  # the rule before: within `limit` of the lowest wave not done


def _window_consecutive(in_flight: dict[int, int], wave: int, lowest: int, limit: int) -> bool:
    waves = [*in_flight, wave]  # the running waves must fit in `limit` consecutive numbers
    return max(waves) - min(waves) < limit


def _window_none(in_flight: dict[int, int], wave: int, lowest: int, limit: int) -> bool:
    return True


WINDOWS = {  # name -> rule; the first is the executor's
    "waves with a task running": _window_running,
    "W from lowest wave not done": _window_not_done,  # the rule before
    "W consecutive running waves": _window_consecutive,
    "no window": _window_none,
}
ORDERS = ("critical path first", "lowest wave first")  # the first is the executor's


def simulate(
    spec: list[tuple[str, float, list[str]]], agents: int, max_waves: int, *,
    window: str = next(iter(WINDOWS)), order: str = ORDERS[0],
) -> float:
    """The makespan of the executor's scheduling rule with zero overhead: every task takes its
    estimate, starts the instant the rule lets it, and nothing else costs time.

    Waves come from the executor's resolver and the ready order from ``executor.ranks``, so
    only the window rule (``WINDOWS``) and the order (``ORDERS``) vary. The bench plans'
    tasks write files of their own, so no conflicts hold tasks back beyond their needs.
    """
    import heapq

    from versatil_fs.waves.plan import Plan
    from versatil_fs.waves.schedule import ranks

    plan = Plan(tasks=_tasks(spec))  # type: ignore[arg-type]
    schedule = plan.schedule(agents=agents)
    wave_of = schedule.wave_of
    rank = ranks(plan.tasks, schedule)
    if order == ORDERS[0]:
        key = rank.__getitem__
    else:
        def key(t: str) -> tuple[int, tuple[int, float, int, int]]:
            return wave_of[t], rank[t]
    admits = WINDOWS[window]
    duration = {t: d for t, d, _ in spec}
    needs = {t: n for t, _, n in spec}
    pending = {t for t, _, _ in spec}
    running: dict[str, float] = {}
    done: set[str] = set()
    ends: list[tuple[float, str]] = []
    now = 0.0
    while pending or running:
        ready = sorted((t for t in pending if all(n in done for n in needs[t])), key=key)
        in_flight: dict[int, int] = {}
        for t in running:
            in_flight[wave_of[t]] = in_flight.get(wave_of[t], 0) + 1
        lowest = min(wave_of[t] for t in (*pending, *running))
        for t in ready:
            if len(running) == agents:
                break
            if not admits(in_flight, wave_of[t], lowest, max_waves):
                continue
            pending.discard(t)
            running[t] = now + duration[t]
            in_flight[wave_of[t]] = in_flight.get(wave_of[t], 0) + 1
            heapq.heappush(ends, (running[t], t))
        now, t = heapq.heappop(ends)
        finished = [t]
        while ends and ends[0][0] <= now + 1e-9:  # ends that coincide but for rounding
            finished.append(heapq.heappop(ends)[1])
        for t in finished:
            del running[t]
            done.add(t)
    return now


def simulation_table(plans: dict[str, list[tuple[str, float, list[str]]]], agents: int,
                     max_waves: int = 2) -> list[str]:
    """Makespan / tight bound for every window rule and order, on each plan."""
    lines = [f"Simulated scheduling rules (zero overhead, {agents} agents, W = {max_waves}; "
             "makespan / tight bound; the executor's rule first)"]
    names = list(plans)
    lines.append(f"  {'window':<29}{'order':<21}" + "".join(f"{n[:8]:>9}" for n in names))
    tight = {n: tight_bound(plans[n], agents) for n in names}
    for window in WINDOWS:
        for order in ORDERS if window != "no window" else ORDERS[:1]:
            cells = [
                simulate(plans[n], agents, max_waves, window=window, order=order) / tight[n]
                for n in names
            ]
            lines.append(f"  {window:<29}{order:<21}" + "".join(f"{c:>9.3f}" for c in cells))
    return lines


@contextmanager
def _world() -> Iterator[Path]:
    """A throwaway repository and state directory; VERSATIL_HOME points at it meanwhile."""
    saved = os.environ.get("VERSATIL_HOME")
    with tempfile.TemporaryDirectory(prefix="versatil-bench-waves-") as tmp:
        repo = Path(tmp) / "repo"
        os.environ["VERSATIL_HOME"] = str(Path(tmp) / "home")
        env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x.invalid",
               "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x.invalid"}
        repo.mkdir()
        (repo / "README.md").write_text("bench\n")
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "base"]):
            subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
        try:
            yield repo
        finally:
            if saved is None:
                os.environ.pop("VERSATIL_HOME", None)
            else:
                os.environ["VERSATIL_HOME"] = saved


def run_plan(
    repo: Path, spec: list[tuple[str, float, list[str]]], agents: int, *,
    checkpoints: bool = True, max_waves: int | None = None,
) -> tuple[float, float, dict[str, float], int]:
    """(makespan, lower bound from the estimates, the durations tasks took, waves)."""
    from versatil_fs.waves.executor import WaveExecutor
    from versatil_fs.waves.plan import Plan
    from versatil_fs.waves.report import report

    os.environ["VERSATIL_CHECKPOINTS_ENABLED"] = "true" if checkpoints else "false"
    try:
        plan = Plan(tasks=_tasks(spec))  # type: ignore[arg-type]
        executor = WaveExecutor(plan, repo=repo, max_agents=agents, max_waves=max_waves)
        run = executor.run()
    finally:
        os.environ.pop("VERSATIL_CHECKPOINTS_ENABLED", None)
    if run.status != "succeeded":
        failed = {t.id: t.error for t in run.tasks.values() if t.status != "succeeded"}
        raise RuntimeError(f"bench plan failed: {failed}")
    result = report(run)
    took = {t.id: t.duration or 0.0 for t in result.tasks}
    return result.makespan, executor.schedule.lower_bound, took, len(run.waves)


def scheduling_overhead(repo: Path, n: int = 30) -> float:
    """Milliseconds from one task's end to the next one's end, for `true` tasks in a chain."""
    from versatil_fs.waves.executor import WaveExecutor
    from versatil_fs.waves.plan import Plan, Task
    from versatil_fs.waves.report import report

    tasks = [Task(id=f"t{i}", agent="A", run=["true"], writes=[f"out/t{i}"],
                  needs=[f"t{i - 1}"] if i else []) for i in range(n)]
    os.environ["VERSATIL_CHECKPOINTS_ENABLED"] = "false"
    try:
        run = WaveExecutor(Plan(tasks=tasks), repo=repo, max_agents=1).run()
    finally:
        os.environ.pop("VERSATIL_CHECKPOINTS_ENABLED", None)
    return report(run).makespan / n * 1e3


def checkpoint_ms(repo: Path, runs: int = 5) -> float:
    from versatil_fs.checkpoints import Checkpoints

    api = Checkpoints(repo)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        api.create("bench", prune=False)
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def resolver_ms(n: int = 1000, runs: int = 7) -> float:
    from versatil_fs.waves.plan import Task
    from versatil_fs.waves.resolve import resolve

    rng = random.Random(3)
    tasks = []
    for i in range(n):
        needs = sorted({f"t{rng.randrange(i)}" for _ in range(rng.randint(0, 3))}) if i else []
        tasks.append(Task(
            id=f"t{i}", agent=f"agent{i % 9}", run="true", needs=needs,
            writes=[f"src/m{rng.randrange(150)}/f{rng.randrange(6)}.py"],
            reads=[f"src/m{rng.randrange(150)}", "db:users"] if i % 5 == 0 else [],
            estimate=float(rng.randint(1, 60)),
        ))
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        resolve(tasks, agents=5)
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench waves")
    parser.add_argument("--unit", type=float, default=1.0,
                        help="seconds of the typical sleeping task (default 1.0)")
    parser.add_argument("--agents", type=int, default=5, help="max concurrent agents")
    parser.add_argument("--simulate", action="store_true",
                        help="only compare the simulated scheduling rules (a second, no runs)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from versatil_fs.config import Parallel

    default_waves = Parallel().max_concurrent_waves
    dag = random_dag(args.unit * 0.5)
    simulated = {
        "chain": chain(args.unit), "fan": fan(args.unit), "diamonds": diamonds(args.unit),
        "random": dag,
        **{f"seed {s}": random_dag(args.unit * 0.5, seed=s) for s in (1, 2, 3)},
    }
    if args.simulate:
        print("\n".join(simulation_table(simulated, args.agents, default_waves)))
        return 0
    plans: dict[str, tuple[list[tuple[str, float, list[str]]], int | None]] = {
        "chain of 8": (chain(args.unit), None),
        "fan 1 -> 30 -> 1": (fan(args.unit), None),
        "3 stacked diamonds x4": (diamonds(args.unit), None),
        "random DAG, 200 tasks": (dag, None),
        "  same, waves unbounded": (dag, len(dag)),
    }
    print(f"Wave executor, sleeping tasks, {args.agents} agents, checkpoints on "
          f"(seconds; goal: makespan within {MAKESPAN_GOAL - 1:.0%} of the lower bound)")
    print(f"  {'plan':<24}{'waves':>6}{'bound':>8}{'tight':>8}{'makespan':>10}"
          f"{'/bound':>8}{'/tight':>8}{'/took':>8}{'sim':>7}")
    worst = 0.0
    with _world() as repo:
        for name, (spec, max_waves) in plans.items():
            makespan, bound, took, waves = run_plan(
                repo, spec, args.agents, max_waves=max_waves
            )
            tight = tight_bound(spec, args.agents)
            actual = tight_bound([(t, took[t], n) for t, _, n in spec], args.agents)
            sim = simulate(spec, args.agents, max_waves or default_waves) / tight
            worst = max(worst, makespan / tight)
            print(f"  {name:<24}{waves:>6}{bound:>8.2f}{tight:>8.2f}{makespan:>10.2f}"
                  f"{makespan / bound:>8.3f}{makespan / tight:>8.3f}{makespan / actual:>8.3f}"
                  f"{sim:>7.3f}")
        print("  bound: max(critical path, work / agents), as `wave plan` reports it from the "
              "estimates.\n  tight: also the cut between two tasks (see tight_bound): a fan's "
              "root and sink run alone.\n  /took: against the tight bound of the durations the "
              "tasks really took (a `sleep`\n  process lives a few ms longer than its "
              "estimate). Default max_concurrent_waves = 2.\n  sim: the same rule simulated with "
              "zero overhead (what scheduling alone loses; see below).")
        overhead = scheduling_overhead(repo)
        checkpoint = checkpoint_ms(repo)
    resolver = resolver_ms()
    print()
    print("\n".join(simulation_table(simulated, args.agents, default_waves)))
    verdict = "met" if worst <= MAKESPAN_GOAL else "NOT met"
    print(f"  goal: makespan <= {MAKESPAN_GOAL:.2f} x tight bound: {verdict} "
          f"(worst {worst:.3f})")
    print(f"  per-task scheduling overhead (end to end of the next, a chain of `true`, "
          f"checkpoints off): {overhead:.1f} ms")
    print(f"  one checkpoint (made before every wave): {checkpoint:.1f} ms")
    verdict = "met" if resolver <= RESOLVER_GOAL_MS else "NOT met"
    print(f"  resolver, 1,000 tasks: {resolver:.1f} ms (goal <= {RESOLVER_GOAL_MS:.0f} ms: "
          f"{verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
