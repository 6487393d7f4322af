"""Repository discovery and the mapping from any spelling of a path to one resource key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from integration.helpers import environment, git, make_git_repo

from versatil_fs.errors import NotARepository, UsageError
from versatil_fs.locks.manager import LockManager
from versatil_fs.locks.table import Resource
from versatil_fs.repo import Repository, default_agent, parse_named

# A fixed tree, built once per module: hypothesis picks targets and spellings inside it.
DIRS = ["src", "src/api", "src/apis", "docs", "docs/guide"]
FILES = ["src/api/login.py", "src/apis/x.py", "src/main.py", "docs/guide/intro.md", "README.md"]
TARGETS = [".", *DIRS, *FILES, "src/api/new_file.py"]  # a path need not exist yet
CWDS = ["", *DIRS]  # repo-relative directories to stand in ("" = the root)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("tree").resolve()
    env = {
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": str(base / "gitconfig"),
    }
    with environment(env):
        root = make_git_repo(base / "repo", {name: f"{name}\n" for name in FILES})
    # A symlink inside the repository to one of its directories, and one from outside into it.
    (root / "link-to-src").symlink_to("src", target_is_directory=True)
    (base / "outside-link").symlink_to(root / "src" / "api", target_is_directory=True)
    (base / "outside").mkdir()
    (root / "escape").symlink_to(base / "outside", target_is_directory=True)
    return {"base": base, "root": root}


@st.composite
def spellings(draw: st.DrawFn, root: Path, base: Path, target: str) -> tuple[str, Path]:
    """One way to write ``target`` (repo-relative) and the cwd it is meant from."""
    cwd_rel = draw(st.sampled_from(CWDS))
    cwd = root / cwd_rel if cwd_rel else root
    parts = [] if target == "." else target.split("/")
    style = draw(st.sampled_from(["relative", "absolute", "dotdot", "dots", "symlink", "outside"]))
    if style == "absolute":
        return str(root.joinpath(*parts)), cwd
    if style == "symlink" and parts[:1] == ["src"]:
        return str(root.joinpath("link-to-src", *parts[1:])), cwd
    if style == "outside" and parts[:2] == ["src", "api"]:
        return str(base.joinpath("outside-link", *parts[2:])), cwd
    # Relative to cwd: climb out of cwd, then walk down, with optional detours.
    up = [".."] * (len(cwd_rel.split("/")) if cwd_rel else 0)
    walk: list[str] = []
    for part in parts:
        if style == "dotdot" and draw(st.booleans()):
            detour = draw(st.sampled_from(["src", "docs"]))
            walk += [detour, ".."]  # into an existing directory and straight back
        walk.append(part)
        if style == "dots" and draw(st.booleans()):
            walk.append(".")
    text = os.path.join(*up, *walk) if up or walk else "."
    if style == "dots":
        text = "./" + text
    if draw(st.booleans()) and text != "." and (target in DIRS or target == "."):
        text += "/"  # a directory written with its trailing slash
    return text, cwd


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_every_spelling_of_a_path_gives_the_same_resource(
    tree: dict[str, Path], data: st.DataObject
) -> None:
    root, base = tree["root"], tree["base"]
    repo = Repository.find(root)
    target = data.draw(st.sampled_from(TARGETS))
    first, cwd1 = data.draw(spellings(root, base, target))
    second, cwd2 = data.draw(spellings(root, base, target))
    assert repo.relpath(first, cwd=cwd1) == target
    assert repo.relpath(second, cwd=cwd2) == target
    # Through the lock manager, standing in each cwd: one resource, so they conflict.
    one = LockManager(repo=cwd1).resolve(first)
    two = LockManager(repo=cwd2).resolve(second)
    # A file is a file however it is spelled (`file` lets patterns pass beside it).
    is_file = target != "." and target not in DIRS
    assert one == two == Resource(repo=str(root / ".git"), path=target, file=is_file)


def test_a_relative_path_is_read_from_the_current_directory(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (git_repo / "src" / "api").mkdir(parents=True)
    monkeypatch.chdir(git_repo / "src")
    manager = LockManager()  # repo "." = the current directory
    assert manager.resolve("api/login.py") == manager.resolve(git_repo / "src/api/login.py")
    assert manager.resolve("api/login.py").path == "src/api/login.py"
    assert manager.resolve("..").path == "."
    assert Repository.find().toplevel == git_repo


def test_find_from_a_subdirectory_or_a_file(git_repo: Path) -> None:
    (git_repo / "a" / "b").mkdir(parents=True)
    assert Repository.find(git_repo / "a" / "b").toplevel == git_repo
    assert Repository.find(git_repo / "README.md").toplevel == git_repo
    assert Repository.find(git_repo).key == str(git_repo / ".git")


@pytest.mark.parametrize(
    "spelling",
    ["../outside/x.py", "/etc/passwd", "..", "escape/x.py", "escape"],
)
def test_a_path_outside_the_repository_is_a_usage_error(
    tree: dict[str, Path], spelling: str
) -> None:
    repo = Repository.find(tree["root"])
    with pytest.raises(UsageError, match="outside the repository") as caught:
        repo.relpath(spelling, cwd=tree["root"])
    assert caught.value.exit_code == 2
    with pytest.raises(UsageError):
        LockManager(repo=tree["root"]).resolve(spelling)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from(CWDS),
    st.integers(1, 3),
    st.lists(st.sampled_from(["x", "repo", "outside", "src"]), max_size=3),
    st.booleans(),
)
def test_any_spelling_that_leaves_the_repository_is_refused(
    tree: dict[str, Path], cwd_rel: str, extra_ups: int, below: list[str], absolute: bool
) -> None:
    root, base = tree["root"], tree["base"]
    cwd = root / cwd_rel if cwd_rel else root
    depth = len(cwd_rel.split("/")) if cwd_rel else 0
    if absolute:
        spelling = str(base.joinpath("outside", *below))
    else:
        spelling = os.path.join(*([".."] * (depth + extra_ups)), *below)
        if extra_ups == 1 and below[:1] == ["repo"]:
            return  # `../repo/...` from the root climbs out and straight back in
    with pytest.raises(UsageError, match="outside the repository"):
        Repository.find(root).relpath(spelling, cwd=cwd)
    with pytest.raises(UsageError):
        LockManager(repo=cwd).resolve(spelling)


def test_git_internals_and_empty_paths_are_refused(tree: dict[str, Path]) -> None:
    repo = Repository.find(tree["root"])
    with pytest.raises(UsageError, match=r"\.git"):
        repo.relpath(".git/config", cwd=tree["root"])
    with pytest.raises(UsageError, match="empty"):
        repo.relpath("", cwd=tree["root"])


def test_a_directory_that_is_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(NotARepository, match="not inside a git repository") as caught:
        Repository.find(plain)
    assert caught.value.exit_code == 2
    with pytest.raises(NotARepository):
        LockManager(repo=plain).resolve("file.txt")


def test_a_missing_start_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        Repository.find(tmp_path / "nope")


def test_worktrees_of_one_repository_share_one_key(git_repo: Path, tmp_path: Path) -> None:
    worktree = tmp_path / "wt"
    git(git_repo, "worktree", "add", "-q", str(worktree), "-b", "feature")
    main, linked = Repository.find(git_repo), Repository.find(worktree / "README.md")
    assert linked.toplevel == worktree.resolve()
    assert linked.git_dir != main.git_dir
    assert linked.key == main.key == str(git_repo / ".git")
    assert LockManager(repo=worktree).resolve("README.md") == LockManager(repo=git_repo).resolve(
        "README.md"
    )


def test_two_clones_have_different_keys(git_repo: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(git_repo), str(clone))
    assert LockManager(repo=clone).resolve("README.md") != LockManager(repo=git_repo).resolve(
        "README.md"
    )


def test_a_file_in_a_submodule_is_one_resource_from_either_side(
    git_repo: Path, tmp_path: Path
) -> None:
    library = make_git_repo(tmp_path / "library", {"f.py": "x = 1\n"})
    git(git_repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q",
        str(library), "sub")
    from_super = LockManager(repo=git_repo).resolve("sub/f.py")
    from_inside = LockManager(repo=git_repo / "sub").resolve("f.py")
    assert from_super.overlaps(from_inside)


def test_a_submodule_lives_in_its_superprojects_lock_space(git_repo: Path, tmp_path: Path) -> None:
    from versatil_fs.locks.holders import WriteLocks
    from versatil_fs.locks.table import in_lock_space
    from versatil_fs.repo import space_of

    library = make_git_repo(tmp_path / "library", {"f.py": "x = 1\n"})
    git(git_repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q",
        str(library), "libs/sub")
    top = Repository.find(git_repo)
    inner = Repository.find(git_repo / "libs/sub")
    assert top.lock_space() == (top.key, "")
    assert inner.lock_space() == (top.key, "libs/sub")
    assert space_of(inner.key) == (top.key, "libs/sub")
    assert in_lock_space(inner.key, "f.py") == (top.key, "libs/sub/f.py")
    # A lock on the superproject's libs/ covers the submodule's file, asked from inside.
    lock = LockManager(repo=git_repo).resolve("libs")
    assert lock.covers(inner.key, "f.py") and lock.covers(inner.key, ".")
    from versatil_fs.locks.table import Claim, Grant

    grant = Grant(id="18c0ffee000-1-abcdef", agent="A", claims=[Claim(lock)],
                  acquired_at=0.0, expires_at=1.0)
    assert WriteLocks([grant], inner.key).holder("f.py") is not None
    assert WriteLocks([grant], top.key).holder("README.md") is None


def test_a_repository_merely_nested_keeps_its_own_space(git_repo: Path) -> None:
    nested = make_git_repo(git_repo / "vendor" / "nested")  # not a submodule
    repo = Repository.find(nested)
    assert repo.lock_space() == (repo.key, "")


@pytest.mark.parametrize(
    ("path", "word"),
    [("a" * 256, "255"), ("a/" * 2100, "bytes"), ("bad-\udcff", "UTF-8")],
)
def test_paths_that_cannot_be_locked_are_usage_errors(git_repo: Path, path: str, word: str) -> None:
    with pytest.raises(UsageError, match=word):
        LockManager(repo=git_repo).resolve(path)


# Named resources ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("db:users", ("db", "users")),
        ("api:/auth/login", ("api", "/auth/login")),
        ("port:5432", ("port", "5432")),
        ("db:", ("db", "")),
        ("C:\\src\\a.py", None),  # a drive letter is not a kind
        ("c:/src", None),
        ("src/a.py", None),
        (":name", None),
        ("./db:users", None),
    ],
)
def test_parse_named(text: str, expected: tuple[str, str] | None) -> None:
    assert parse_named(text) == expected


@pytest.mark.parametrize("text", ["db:", "db:   ", "port:"])
def test_a_named_resource_with_an_empty_name_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="empty name") as caught:
        LockManager(repo=None).resolve(text)
    assert caught.value.exit_code == 2


@settings(deadline=None)
@given(
    st.sampled_from(["db", "api", "port", "queue.v2"]),
    st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=20),
)
def test_named_resources_need_no_repository(kind: str, name: str) -> None:
    if not name.strip():
        return
    resource = LockManager(repo=None).resolve(f"{kind}:{name}")
    assert resource == Resource(name=f"{kind}:{name}")
    assert not resource.is_path


def test_paths_need_a_repository() -> None:
    with pytest.raises(UsageError, match="repository"):
        LockManager(repo=None).resolve("src/a.py")


# The default agent ----------------------------------------------------------------------------
def test_default_agent_prefers_the_environment_then_git_config(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repository.find(git_repo)
    git(git_repo, "config", "versatil.agent", "Dana-Database")
    assert default_agent(repo) == "Dana-Database"
    monkeypatch.setenv("VERSATIL_AGENT", "Marcus-Backend")
    assert default_agent(repo) == "Marcus-Backend"
    monkeypatch.setenv("VERSATIL_AGENT", "  ")
    assert default_agent(repo) == "Dana-Database"
    git(git_repo, "config", "--unset", "versatil.agent")
    assert default_agent(repo)  # the login name, never empty


def test_an_agent_name_comes_from_this_repository_whatever_git_dir_leaks(
    git_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A hook (or a wrapper) exports GIT_DIR/GIT_WORK_TREE of another repository: the agent's
    # name must still be read from the repository we work in.
    other = make_git_repo(tmp_path / "other")
    git(git_repo, "config", "versatil.agent", "Mine")
    git(other, "config", "versatil.agent", "Theirs")
    mine = Repository.find(git_repo)
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    monkeypatch.delenv("VERSATIL_AGENT", raising=False)
    assert default_agent(mine) == "Mine"
