"""The plan file and the resolver: errors that point at the line, and properties of the waves."""

from __future__ import annotations

import itertools
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from versatil_fs.cli import cli, run_cli
from versatil_fs.locks.table import Claim, Resource, claims_conflict
from versatil_fs.waves.plan import Plan, PlanError, Task, format_duration, parse_duration
from versatil_fs.waves.resolve import ConflictIndex, dependency_cycle, lexical_claims, resolve

# A small alphabet makes ancestors, siblings (`b` / `bc`) and shared files common.
SEGMENTS = st.sampled_from(["a", "b", "bc", "src"])
NAMES = st.sampled_from(["db:users", "db:tokens", "port:5432"])


@st.composite
def specs(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 5)) == 0:
        return draw(NAMES)
    parts = draw(st.lists(SEGMENTS, min_size=0, max_size=3))
    return "/".join(parts) if parts else "."


@st.composite
def task_lists(draw: st.DrawFn, max_size: int = 14) -> list[Task]:
    """Acyclic plans: a task only needs tasks listed before it."""
    count = draw(st.integers(1, max_size))
    tasks = []
    for i in range(count):
        needs = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        tasks.append(
            Task(
                id=f"t{i}",
                agent=draw(st.sampled_from(["Dana", "Marcus", "James"])),
                run="true",
                writes=draw(st.lists(specs(), max_size=2)),
                reads=draw(st.lists(specs(), max_size=2)),
                needs=[f"t{n}" for n in needs],
                estimate=draw(st.one_of(st.none(), st.integers(0, 50).map(float))),
                priority=draw(st.integers(0, 2)),
            )
        )
    # Shuffle the listing: the resolver must not rely on needs coming first.
    return draw(st.permutations(tasks))


def conflict(a: Task, b: Task) -> bool:
    """The lock manager's rule between two claim sets (agents aside, see plan.py)."""
    return claims_conflict(lexical_claims(a), lexical_claims(b))


# Resolver properties --------------------------------------------------------------------------
@settings(max_examples=120, deadline=None)
@given(task_lists())
def test_waves_respect_needs_and_conflicts_and_place_each_task_early(tasks: list[Task]) -> None:
    schedule = resolve(tasks)
    by_id = {t.id: t for t in tasks}
    assert sorted(schedule.wave_of) == sorted(by_id)
    assert all(wave.tasks for wave in schedule.waves)  # no empty wave
    assert all(schedule.wave_of[t] == w.number for w in schedule.waves for t in w.tasks)
    # Every dependency comes in an earlier wave.
    for task in tasks:
        for need in task.needs:
            assert schedule.wave_of[need] < schedule.wave_of[task.id]
    # No two tasks whose claims conflict share a wave.
    for wave in schedule.waves:
        for a, b in itertools.combinations(wave.tasks, 2):
            assert not conflict(by_id[a], by_id[b]), (a, b)
    # A task is pushed past the wave its needs allow only by a conflict in each skipped wave.
    for task in tasks:
        earliest = 1 + max((schedule.wave_of[n] for n in task.needs), default=0)
        for skipped in range(earliest, schedule.wave_of[task.id]):
            others = schedule.waves[skipped - 1].tasks
            assert any(conflict(task, by_id[o]) for o in others), (task.id, skipped)


@settings(max_examples=100, deadline=None)
@given(task_lists())
def test_critical_path_is_the_longest_chain_and_bounds_the_makespan(tasks: list[Task]) -> None:
    schedule = resolve(tasks, agents=3)
    by_id = {t.id: t for t in tasks}
    estimate = {t.id: t.estimate or 0.0 for t in tasks}
    longest: dict[str, float] = {}

    def chain(task_id: str) -> float:  # brute force over the needs DAG
        if task_id not in longest:
            needs = by_id[task_id].needs
            longest[task_id] = estimate[task_id] + max((chain(n) for n in needs), default=0.0)
        return longest[task_id]

    assert schedule.critical_path_estimate == pytest.approx(max(chain(t) for t in by_id))
    path = schedule.critical_path
    for before, after in itertools.pairwise(path):
        assert before in by_id[after].needs
    assert sum(estimate[t] for t in path) == pytest.approx(schedule.critical_path_estimate)
    total = sum(estimate.values())
    assert schedule.lower_bound == pytest.approx(max(schedule.critical_path_estimate, total / 3))
    assert schedule.unestimated == [t.id for t in tasks if t.estimate is None]


@settings(max_examples=120, deadline=None)
@given(task_lists(max_size=10), st.data())
def test_a_cycle_is_always_found_and_is_a_real_cycle(
    tasks: list[Task], data: st.DataObject
) -> None:
    assert dependency_cycle(tasks) is None
    # Close a cycle: some task needs one of its own transitive dependents (or itself).
    by_id = {t.id: t for t in tasks}
    dependents: dict[str, set[str]] = {t.id: set() for t in tasks}
    for task in tasks:
        for need in task.needs:
            dependents[need].add(task.id)

    def below(task_id: str) -> set[str]:
        seen, todo = {task_id}, [task_id]
        while todo:
            for nxt in dependents[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    victim = data.draw(st.sampled_from(sorted(by_id)))
    target = data.draw(st.sampled_from(sorted(below(victim))))
    by_id[victim].needs = [*by_id[victim].needs, target]
    cycle = dependency_cycle(tasks)
    assert cycle is not None and cycle[0] == cycle[-1]
    for task_id, needed in itertools.pairwise(cycle):
        assert needed in by_id[task_id].needs
    with pytest.raises(PlanError, match="dependency cycle"):
        resolve(tasks)


claims = st.builds(
    Claim,
    st.one_of(
        st.builds(lambda n: Resource(name=n), NAMES),
        st.builds(lambda r, p: Resource(repo=r, path=p), st.sampled_from(["r1", "r2"]),
                  specs().filter(lambda s: ":" not in s)),
    ),
    st.sampled_from(["read", "write"]),
)


@settings(max_examples=250, deadline=None)
@given(st.lists(st.lists(claims, max_size=3), max_size=6), st.lists(claims, max_size=3))
def test_conflict_index_answers_like_the_lock_rules(
    held: list[list[Claim]], request: list[Claim]
) -> None:
    index: ConflictIndex[int] = ConflictIndex()
    for i, cl in enumerate(held):
        index.add(i, cl)
    expected = {i for i, cl in enumerate(held) if claims_conflict(request, cl)}
    assert index.conflicting(request) == expected
    assert index.any_conflict(request) == bool(expected)


def test_the_resolver_uses_the_claims_it_is_given() -> None:
    # Two spellings that only the lock manager can tell are one file (a symlink, say).
    a = Task(id="a", agent="A", run="true", writes=["link.py"])
    b = Task(id="b", agent="B", run="true", writes=["real.py"])
    assert len(resolve([a, b]).waves) == 1
    same = [Claim(Resource(repo="r", path="real.py"))]
    assert len(resolve([a, b], claims={"a": same, "b": same}).waves) == 2


def test_same_agent_tasks_writing_one_file_are_still_separated() -> None:
    a = Task(id="a", agent="Maria", run="true", writes=["tests/"])
    b = Task(id="b", agent="Maria", run="true", writes=["tests/e2e.py"])
    assert resolve([a, b]).wave_of == {"a": 1, "b": 2}


def test_priority_decides_who_goes_first_among_conflicting_tasks() -> None:
    low = Task(id="low", agent="A", run="true", writes=["f"])
    high = Task(id="high", agent="B", run="true", writes=["f"], priority=5)
    assert resolve([low, high]).wave_of == {"high": 1, "low": 2}


def test_a_thousand_tasks_resolve() -> None:
    import random

    rng = random.Random(7)
    tasks = []
    for i in range(1000):
        needs = [f"t{rng.randrange(i)}" for _ in range(rng.randint(0, 3))] if i else []
        tasks.append(Task(
            id=f"t{i}", agent=f"agent{i % 7}", run="true", needs=sorted(set(needs)),
            writes=[f"src/m{rng.randrange(200)}/f{rng.randrange(5)}.py"],
            reads=[f"src/m{rng.randrange(200)}"], estimate=float(rng.randint(1, 60)),
        ))
    # How fast is the bench's business (bench/bench_waves.py holds it to 100 ms): a wall-clock
    # limit here failed on a loaded machine, not on slow code.
    schedule = resolve(tasks)
    assert len(schedule.wave_of) == 1000
    assert all(schedule.wave_of[n] < schedule.wave_of[t.id] for t in tasks for n in t.needs)


def test_a_long_chain_does_not_hit_the_recursion_limit() -> None:
    tasks = [Task(id=f"t{i}", agent="A", run="true", needs=[f"t{i - 1}"] if i else [])
             for i in range(5000)]
    assert len(resolve(tasks).waves) == 5000
    tasks[0].needs = ["t4999"]
    assert dependency_cycle(tasks) is not None


# The plan file ---------------------------------------------------------------------------------
def write_plan(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


GOOD = """
    version: 1
    name: auth
    defaults:
      agent: Dana-Database
      timeout: 5m
    tasks:
      - id: schema
        run: python3 agents/dana.py
        writes: app/db/schema.sql
        estimate: 10m
      - id: api
        agent: Marcus-Backend
        run: [python3, agents/marcus.py, login]
        writes: [app/api/]
        reads: [app/db/schema.sql, "db:users"]
        needs: schema
        estimate: 1h30m
        priority: 2
        timeout: 90
"""


def test_a_plan_loads_with_defaults_applied(tmp_path: Path) -> None:
    plan = Plan.load(write_plan(tmp_path, GOOD))
    schema, api = plan.tasks
    assert schema.agent == "Dana-Database" and schema.timeout == 300.0
    assert schema.writes == ["app/db/schema.sql"] and schema.estimate == 600.0
    assert api.agent == "Marcus-Backend" and api.needs == ["schema"] and api.timeout == 90.0
    assert api.command == ["python3", "agents/marcus.py", "login"]
    assert schema.command == ["/bin/sh", "-c", "python3 agents/dana.py"]
    assert plan.lines == {"schema": 7, "api": 11}
    assert [[t.id for t in w] for w in plan.waves()] == [["schema"], ["api"]]


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("tasks:\n  - id: a\n    agent: A\n    run: x\n    wirtes: [f]\n", 5,
         "task 'a': unknown key `wirtes` in the task; did you mean `writes`?"),
        ("tasks:\n  - id: a\n    agent: A\n    run: x\n    writes: [f, 3]\n", 5,
         "task 'a': `writes[1]` must be a string, not a whole number."),
        ("tasks:\n  - id: a\n    agent: A\n    run: x\n  - id: a\n    agent: B\n    run: y\n", 5,
         "task 'a': the task id 'a' is used twice (first at line 2)."),
        ("tasks:\n  - id: a\n    agent: A\n    run: x\n    needs: [b]\n"
         "  - id: b\n    agent: B\n    run: y\n    needs: [c]\n"
         "  - id: c\n    agent: C\n    run: y\n    needs: [a]\n", 5,
         "task 'a': is in a dependency cycle: a -> b -> c -> a"),
        ("tasks:\n  - id: a\n    agent: A\n    run: x\n    needs: [a]\n", 5,
         "task 'a': is in a dependency cycle: a -> a"),
        ("tasks:\n  - id: a\n    agent: A\n    run: x\n  - id: b\n    agent: B\n    run: y\n"
         "    needs:\n      - a\n      - aa\n", 10,
         "task 'b': needs 'aa', which is not a task in this plan (did you mean 'a'?)."),
        ("tasks:\n  - id: a\n    run: x\n", 2,
         "task 'a': has no `agent` (and the plan sets no `defaults: {agent: ...}`)."),
        ("tasks:\n  - id: a\n    agent: A\n", 2, "task 'a': has no `run` command."),
        ("tasks:\n  - agent: A\n    run: x\n", 2, "task 1 has no `id`."),
        ("tasks:\n  - id: a b\n    agent: A\n    run: x\n", 2, "the task id 'a b' is not usable"),
        ("tasks:\n  - id: a\n    agent: A\n    run: x\n    estimate: soon\n", 5,
         "task 'a': `estimate` must be a duration"),
        ("tasks:\n  - id: a\n    agent: A\n    run: x\n    timeout: 0\n", 5,
         "task 'a': `timeout` must be more than 0 seconds"),
        ("tasks:\n  - id: a\n    agent: A\n    run: x\n    priority: high\n", 5,
         "task 'a': `priority` must be a whole number, not a string."),
        ("tasks:\n  - id: a\n    agent: A\n    run: x\n    writes: [../etc]\n", 5,
         "task 'a': writes[0] '../etc' leaves the repository"),
        ("tasks:\n  - id: a\n    agent: A\n    run: x\n    reads: [/etc/passwd]\n", 5,
         "task 'a': reads[0] '/etc/passwd' is absolute"),
        ("tasks:\n  - id: a\n    agent: A\n    run: []\n", 4,
         "task 'a': the `run` argv list is empty."),
        ("tasks:\n  - id: a\n    agent: A\n    run: {x: 1}\n", 4,
         "task 'a': `run` must be a string or a list of strings, not a mapping."),
        ("tasks:\n  - id: a\n    agent: A\n    run: x\n    run: y\n", 5,
         "the key 'run' appears twice (first at line 4)."),
        ("version: 2\ntasks: []\n", 1, "version 2 is not a plan version"),
        ("tasks: []\n", 1, "the `tasks` list is empty."),
        ("task:\n  - id: a\n", 1, "unknown key `task` in the plan; did you mean `tasks`?"),
        ("tasks:\n  - [a, b]\n", 2, "task 1 must be a mapping"),
        ("tasks: [\n", 2, "not valid YAML"),
        ("", 1, "the plan is empty"),
        ("defaults:\n  agent: A\n  timeout: -1\ntasks: []\n", 3, "`timeout` must be a duration"),
    ],
)
def test_plan_errors_name_the_file_line_and_task(
    tmp_path: Path, text: str, line: int, expected: str
) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(PlanError) as caught:
        Plan.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert expected in message


def test_a_missing_plan_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="no such plan file"):
        Plan.load(tmp_path / "nope.yaml")


def test_a_bare_list_of_tasks_and_yaml_anchors_are_accepted(tmp_path: Path) -> None:
    path = write_plan(tmp_path, """
        - &base {id: a, agent: A, run: x, estimate: 1m}
        - <<: *base
          id: b
          needs: [a]
    """)
    plan = Plan.load(path)
    assert [(t.id, t.agent, t.estimate, t.needs) for t in plan.tasks] == [
        ("a", "A", 60.0, []), ("b", "A", 60.0, ["a"])
    ]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90.0), (1.5, 1.5), ("90s", 90.0), ("10m", 600.0), ("1h30m", 5400.0), ("1h 30m", 5400.0),
     ("500ms", 0.5), ("2", 2.0), ("1.5h", 5400.0), ("soon", None), ("10x", None), ("", None),
     (True, None), (-1, None), ("m", None), ([1], None)],
)
def test_durations(value: object, seconds: float | None) -> None:
    assert parse_duration(value) == seconds


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0.25, 4.26, 42, 600, 630, 5400, None)] == [
        "250ms", "4.3s", "42s", "10m", "10m 30s", "1h 30m", "-"
    ]


# The command --------------------------------------------------------------------------------
def test_wave_plan_prints_waves_critical_path_and_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_plan(tmp_path, GOOD)
    assert run_cli(cli, ["wave", "plan", str(path), "--max-agents", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 tasks in 2 waves" in out
    assert "Wave 1" in out and "Wave 2" in out
    assert "Critical path (1h 40m): schema -> api" in out
    assert "Lower bound on the makespan with 2 agents: 1h 40m (the critical path)" in out


def test_wave_plan_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    path = write_plan(tmp_path, GOOD)
    assert run_cli(cli, ["wave", "plan", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [[t["id"] for t in wave] for wave in doc["waves"]] == [["schema"], ["api"]]
    assert doc["schedule"]["critical_path"] == ["schema", "api"]
    assert doc["schedule"]["lower_bound"] == 6000.0


def test_wave_plan_error_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("tasks:\n  - id: a\n    agent: A\n    run: x\n    needs: [a]\n")
    assert run_cli(cli, ["wave", "plan", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"versatil: {path}:5: task 'a': is in a dependency cycle: a -> a; "
                   "remove one of these needs."]


def test_a_billion_laughs_of_yaml_aliases_is_read_in_linear_time(tmp_path: Path) -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdef", "bcdefg", strict=True):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 10)}]")
    lines.append("tasks: [*g, *g]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    with pytest.raises(PlanError, match="unknown key `a`"):
        Plan.load(path)
    assert time.perf_counter() - started < 2.0
    path.write_text("a: &a [x, *a]\ntasks: *a\n")
    with pytest.raises(PlanError, match="alias refers to the node that contains it"):
        Plan.load(path)
