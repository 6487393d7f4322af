"""The one git runner: its environment scrubbing and its failures, on real repositories."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from integration.helpers import git_output

from versatil_fs import git
from versatil_fs.errors import GitFailed


def _repo(path: Path) -> Path:
    path.mkdir()
    git_output(path, "init", "-q", "-b", "main")
    return path


def test_a_hooks_git_dir_and_index_do_not_redirect_our_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = _repo(tmp_path / "ours")
    other = _repo(tmp_path / "other")
    # As git exports them to a hook run in another repository (or a submodule).
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    monkeypatch.setenv("GIT_GLOB_PATHSPECS", "1")
    top = git.output(["--literal-pathspecs", "rev-parse", "--show-toplevel"], cwd=ours)
    assert Path(top.decode().strip()) == ours.resolve()
    env = git.no_git_env()
    assert not {"GIT_DIR", "GIT_INDEX_FILE", "GIT_WORK_TREE"} & set(env)
    assert "GIT_CONFIG_NOSYSTEM" in env  # settings are kept, only locations go


def test_an_index_set_on_purpose_is_passed_explicitly(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    (repo / "a.txt").write_text("a\n")
    private = tmp_path / "private-index"
    git.run(["add", "a.txt"], cwd=repo, env={"GIT_INDEX_FILE": str(private)})
    assert private.exists()
    assert git.output(["ls-files"], cwd=repo) == b""  # the user's index is untouched
    listed = git.output(["ls-files"], cwd=repo, env={"GIT_INDEX_FILE": str(private)})
    assert listed == b"a.txt\n"


def test_a_failure_carries_argv_status_and_stderr(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    with pytest.raises(GitFailed) as caught:
        git.run(["rev-parse", "--verify", "no-such-ref"], cwd=repo)
    failure = caught.value
    assert failure.argv == ("rev-parse", "--verify", "no-such-ref")
    assert failure.returncode == 128 and b"fatal" in failure.stderr
    assert str(failure).startswith("git rev-parse --verify failed: fatal:")
    assert git.run(["rev-parse", "--verify", "no-such-ref"], cwd=repo, check=False).returncode


def test_a_spawned_command_streams_and_a_killed_one_names_its_signal(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    proc = git.spawn(["hash-object", "--stdin"], cwd=repo)
    assert len(git.finish(proc, ["hash-object"], b"x\n").stdout.strip()) in (40, 64)
    cat = git.spawn(["cat-file", "--batch"], cwd=repo)
    cat.send_signal(signal.SIGKILL)
    with pytest.raises(GitFailed, match="killed by SIGKILL"):
        git.finish(cat, ["cat-file", "--batch"])


def test_git_missing_from_path_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GitFailed, match="git is not installed") as caught:
        git.run(["version"], cwd=tmp_path)
    assert caught.value.returncode is None
