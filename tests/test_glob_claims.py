"""Glob locks in the pure lock core: resources, claims, the conflict index, the write-lock index,
and the witness in a refusal (issue 16 part 1). No disk, except the repositories that
``requests.resolve`` reads a pattern against."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from integration.helpers import git, make_git_repo

from versatil_fs import repo as repo_module
from versatil_fs.errors import UsageError
from versatil_fs.locks import globs, notices
from versatil_fs.locks.holders import WriteLocks
from versatil_fs.locks.requests import resolve
from versatil_fs.locks.table import (
    Claim,
    ClaimIndex,
    Grant,
    Resource,
    Waiter,
    claims_conflict,
)
from versatil_fs.repo import Repository
from versatil_fs.waves.plan import Plan, PlanError
from versatil_fs.waves.resolve import ConflictIndex
from versatil_fs.waves.resolve import resolve as resolve_waves

R = "/r/.git"


def glob(path: str, repo: str = R) -> Resource:
    return Resource(repo=repo, path=path, glob=True)


def plain(path: str, repo: str = R) -> Resource:
    return Resource(repo=repo, path=path)


# Resources ---------------------------------------------------------------------------------------
def test_overlap_of_globs_is_exact_and_names_a_witness() -> None:
    # The two examples that text-as-path matching misses.
    assert glob("src/*.ts").overlaps(glob("src/a*"))
    assert glob("src/*.ts").witness(glob("src/a*")) == "src/a.ts"
    assert glob("src/a*.py").witness(glob("src/*b.py")) == "src/ab.py"
    assert not glob("src/*.ts").overlaps(glob("src/*.py"))
    assert not glob("src/*.ts").overlaps(glob("src/*.ts", repo="/other/.git"))
    # Against plain files and directories, both ways.
    assert glob("src/*.ts").overlaps(plain("src/a.ts"))
    assert plain("src").overlaps(glob("src/**/*.ts"))
    assert plain("src/a.ts").witness(glob("src/*.ts")) == "src/a.ts"
    assert not plain("src/a.py").overlaps(glob("src/*.ts"))
    assert not plain("lib").overlaps(glob("src/**"))
    # A pattern matching a directory covers everything below it (the rule): a
    # directory may be named `a.ts`.
    assert glob("**/*.py").witness(glob("src/*.ts")) == "src/a.ts/a.py"
    # Named resources are never patterns and never meet paths.
    assert not Resource(name="db:*").overlaps(glob("*"))


def test_covers_a_file_under_a_glob() -> None:
    assert glob("src/*.ts").covers(R, "src/a.ts")
    assert glob("src/*").covers(R, "src/api/users.py")
    assert not glob("src/*.ts").covers(R, "src/a.py")
    assert not glob("*.py").covers(R, "src/a.py")  # anchored at the root
    assert glob("**/*.py").covers(R, "src/deep/a.py")


def test_two_plain_paths_keep_the_fast_rule() -> None:
    assert plain("a/b").overlaps(plain("a"))
    assert not plain("a/b").overlaps(plain("a/bc"))
    assert plain("a/b").witness(plain("a")) == "a/b"


def test_a_pattern_nobody_could_reserve_fails_closed() -> None:
    # A hand-edited table: the malformed pattern keeps everyone out of its space.
    assert glob("src/[a").overlaps(plain("lib/x.py"))
    assert glob("src/[a").covers(R, "README")


def test_ignorecase_follows_the_lock_space(monkeypatch: pytest.MonkeyPatch) -> None:
    folded = "/folded/.git"
    assert not glob("src/*.TS", repo=folded).overlaps(plain("src/a.ts", repo=folded))
    monkeypatch.setitem(repo_module._IGNORECASE, folded, True)
    assert glob("src/*.TS", repo=folded).overlaps(plain("src/a.ts", repo=folded))
    assert glob("SRC/*.ts", repo=folded).covers(folded, "src/b.ts")
    assert not glob("src/*.TS").overlaps(plain("src/a.ts"))  # another space: case-sensitive
    grant = _grant("James", glob("SRC/**", repo=folded))
    assert WriteLocks([grant], folded).holder("src/a.py") is not None


def test_core_ignorecase_is_read_from_the_repository(tmp_path: Path) -> None:
    sensitive = make_git_repo(tmp_path / "sensitive")
    insensitive = make_git_repo(tmp_path / "insensitive")
    git(insensitive, "config", "core.ignorecase", "true")
    key_s = Repository.find(sensitive).key
    key_i = Repository.find(insensitive).key
    assert repo_module.ignorecase_of(key_i) is True
    assert repo_module.ignorecase_of(key_s) is False
    found = Repository.find(insensitive)
    upper = resolve("SRC/*.PY", lambda: found, base=insensitive)
    assert upper.overlaps(resolve("src/a.py", lambda: found, base=insensitive))


# Resolving what a user typed ---------------------------------------------------------------------
@pytest.fixture
def tree(tmp_path: Path) -> Path:
    top = make_git_repo(tmp_path / "r")
    (top / "src" / "api").mkdir(parents=True)
    return top


def _resolve(top: Path, spec: str, base: Path | None = None) -> Resource:
    found = Repository.find(top)
    return resolve(spec, lambda: found, base=base or top)


def test_a_pattern_is_a_glob_resource_anchored_at_the_root(tree: Path) -> None:
    found = _resolve(tree, "src/*.ts")
    assert found.glob and found.path == "src/*.ts"
    assert found.repo == Repository.find(tree).key
    # Relative to the caller's directory, like a path; the directory's name escaped.
    assert _resolve(tree, "*.py", base=tree / "src").path == "src/*.py"
    assert _resolve(tree, "**/*.py", base=tree / "src" / "api").path == "src/api/**/*.py"
    assert _resolve(tree, str(tree / "src" / "*.ts")).path == "src/*.ts"
    (tree / "we[ird]").mkdir()
    assert _resolve(tree, "*.c", base=tree / "we[ird]").path == "we\\[ird]/*.c"


def test_one_pattern_spelled_twice_is_one_resource(tree: Path) -> None:
    assert _resolve(tree, "./src//a*") == _resolve(tree, "src/a*")
    assert _resolve(tree, "src/**/**/x*") == _resolve(tree, "src/**/x*")
    assert _resolve(tree, "src/a**b") == _resolve(tree, "src/a*b")


def test_escaped_specials_make_a_plain_path(tree: Path) -> None:
    found = _resolve(tree, "src/a\\*b")
    assert not found.glob and found.path == "src/a*b"
    assert _resolve(tree, "src/[a]") == Resource(repo=found.repo, path="src/[a]", glob=True)
    assert not _resolve(tree, "a\\b").glob  # no special: a backslash stays a backslash


def test_named_resources_are_never_globs(tree: Path) -> None:
    assert _resolve(tree, "db:*") == Resource(name="db:*")


@pytest.mark.parametrize("spec", ["src/[a", "src/*/../x", "src/\\/*"])
def test_a_malformed_pattern_is_one_sentence(tree: Path, spec: str) -> None:
    with pytest.raises(UsageError) as caught:
        _resolve(tree, spec)
    assert "\n" not in str(caught.value) and str(caught.value)[0].isupper()


def test_a_submodule_pattern_is_keyed_under_its_prefix(tmp_path: Path) -> None:
    top = make_git_repo(tmp_path / "top", {"a.txt": "a\n"})
    sub = make_git_repo(tmp_path / "subsrc", {"s.txt": "s\n"})
    git(top, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "libs/sm")
    inner = Repository.find(top / "libs" / "sm")
    found = resolve("*.txt", lambda: inner, base=top / "libs" / "sm")
    assert (found.repo, found.path, found.glob) == (Repository.find(top).key, "libs/sm/*.txt",
                                                     True)


# The conflict index and the write-lock index ----------------------------------------------------
_PATTERNS = ["src/*.ts", "src/a*", "**/*.py", "src/**", "*", "src/[ab]*.ts", "tests/test_*.py",
             "src/?.ts", "**/a", "lib/**/x*"]
_PATHS = [".", "src", "src/a.ts", "src/b.py", "a", "tests/test_a.py", "lib/x", "lib/q/xy",
          "src/a.ts/a.py"]
resources = st.one_of(
    st.builds(glob, st.sampled_from(_PATTERNS), st.sampled_from([R, "/r2/.git"])),
    st.builds(plain, st.sampled_from(_PATHS), st.sampled_from([R, "/r2/.git"])),
    st.builds(Resource, name=st.sampled_from(["db:users", "port:5432"])),
)
claims = st.builds(Claim, resource=resources, mode=st.sampled_from(["read", "write"]))
_FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(st.lists(claims, min_size=1, max_size=6), st.lists(claims, min_size=1, max_size=6))
def test_index_agrees_with_the_pairwise_rule_globs_mixed_in(
    mine: list[Claim], theirs: list[Claim]
) -> None:
    assert ClaimIndex(mine).conflicts(theirs) == claims_conflict(mine, theirs)
    assert ClaimIndex(theirs).conflicts(mine) == claims_conflict(mine, theirs)


@_FAST
@given(claims, claims)
def test_claim_conflicts_agrees_with_glob_overlap(a: Claim, b: Claim) -> None:
    if not (a.resource.is_path and b.resource.is_path) or a.resource.repo != b.resource.repo:
        return
    pa = globs.parse(a.resource.path) if a.resource.glob else globs.plain(a.resource.path)
    pb = globs.parse(b.resource.path) if b.resource.glob else globs.plain(b.resource.path)
    overlapping = globs.overlap(pa, pb) is not None
    writes = "write" in (a.mode, b.mode)
    assert a.conflicts(b) == (overlapping and writes)


@pytest.mark.slow
@settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(claims, min_size=1, max_size=12), st.lists(claims, min_size=1, max_size=12))
def test_index_agrees_with_the_pairwise_rule_many(mine: list[Claim], theirs: list[Claim]) -> None:
    assert ClaimIndex(mine).conflicts(theirs) == claims_conflict(mine, theirs)


def _grant(agent: str, *resources: Resource, mode: str = "write") -> Grant:
    return Grant(id="1-1-abcdef", agent=agent, claims=[Claim(r, mode) for r in resources],  # type: ignore[arg-type]
                 acquired_at=1.0, expires_at=2.0)


def test_write_locks_find_a_file_under_a_glob() -> None:
    james = _grant("James", glob("src/*.ts"))
    dana = _grant("Dana", plain("docs"))
    reader = _grant("Rita", glob("lib/**"), mode="read")
    locks = WriteLocks([james, dana, reader], R)
    assert locks
    assert locks.holder("src/a.ts") == (james, james.claims[0])
    assert locks.holder("docs/x.md") == (dana, dana.claims[0])
    assert locks.holder("src/a.py") is None
    assert locks.holder("lib/x") is None  # a read lock does not hold a file against writers
    assert not WriteLocks([james], R, except_agent="James")


# The witness in a refusal ------------------------------------------------------------------------
def _waiter(agent: str, *resources: Resource) -> Waiter:
    return Waiter(id="1-2-abcdef", agent=agent, claims=[Claim(r) for r in resources], seq=1,
                  since=1.0, deadline=1.0)


def test_a_glob_refusal_names_a_witness() -> None:
    holder = _grant("James", glob("src/*.ts"))
    refused = notices.conflict(_waiter("Marcus", glob("src/a*")), [holder], now=1.0)
    assert str(refused).startswith(
        "`src/*.ts` (James) and `src/a*` (Marcus) both cover src/a.ts: src/*.ts is "
        "write-locked by James (since "
    )
    assert refused.resource == "src/*.ts"
    told = notices.waiting(_waiter("Marcus", plain("src/b.ts")), [holder], budget=5)
    assert "both cover src/b.ts" in told.sentence()


def test_a_plain_refusal_keeps_its_wording() -> None:
    holder = _grant("James", plain("src"))
    refused = notices.conflict(_waiter("Marcus", plain("src/a.py")), [holder], now=1.0)
    assert str(refused).startswith("src is write-locked by James (since ")


# Plans: globs in writes/reads ----------------------------------------------------------------
@_FAST
@given(st.lists(st.lists(claims, min_size=1, max_size=3), min_size=1, max_size=6),
       st.lists(claims, min_size=1, max_size=3))
def test_the_wave_conflict_index_agrees_with_the_lock_rules_globs_mixed_in(
    held: list[list[Claim]], request: list[Claim]
) -> None:
    index: ConflictIndex[int] = ConflictIndex()
    for i, cl in enumerate(held):
        index.add(i, cl)
    expected = {i for i, cl in enumerate(held) if claims_conflict(request, cl)}
    assert index.conflicting(request) == expected
    assert index.any_conflict(request) == bool(expected)


def test_tasks_whose_write_globs_overlap_are_not_run_together() -> None:
    plan = Plan.from_yaml(
        "tasks:\n"
        "  - {id: ts, agent: James, run: 'true', writes: ['src/*.ts']}\n"
        "  - {id: a, agent: Marcus, run: 'true', writes: ['src/a*']}\n"
        "  - {id: py, agent: Dana, run: 'true', writes: ['src/*.py'], reads: ['docs/**']}\n"
    )
    assert resolve_waves(plan.tasks).wave_of == {"ts": 1, "a": 2, "py": 1}


def test_a_malformed_plan_glob_is_refused_at_its_line() -> None:
    with pytest.raises(PlanError) as caught:
        Plan.from_yaml("tasks:\n  - id: t\n    agent: A\n    run: 'true'\n"
                       "    writes: ['src/[a']\n")
    assert "writes[0] 'src/[a' is not a pattern versatil can reserve" in str(caught.value)
    assert ":5" in str(caught.value) or "line 5" in str(caught.value)
