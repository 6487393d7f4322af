"""Issue 12, checkpoints: nothing a restore overwrites is lost, no state file steers a restore,
every file a restore writes is whole, and bad refs, bad names and bad input get one sentence.

Each test runs real git in a repository of its own and real ``versatil`` commands (in this
process through ``run_cli``, or as a real process where a kill or a file-size limit is the
point), counting every attack it tries and every violation it finds in the session tally.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest
from integration.helpers import git, make_git_repo, versatil_argv, wait_for
from reliability.support import (
    Tally,
    one_line_problems,
    versatil,
    versatil_process,
    working_files,
)

from versatil_fs.checkpoints import REF_PREFIX, Checkpoints, record_files_modified
from versatil_fs.checkpoints import apply as checkpoints_module
from versatil_fs.checkpoints.site import RepoGit
from versatil_fs.state import StateDir

FILES = {
    "README.md": "hello\n",
    "src/a.py": "a = 1\n",
    "src/b.py": "b = 1\n",
    ".gitignore": "*.log\n",
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_git_repo(tmp_path / "repo", FILES)


def _create(repo: Path, message: str = "cp") -> str:
    made = versatil("checkpoint", "create", "-m", message, "--json", cwd=repo)
    assert made.code == 0, made
    return str(json.loads(made.out)["id"])


def _listing(repo: Path) -> list[dict[str, object]]:
    listed = versatil("checkpoint", "list", "--json", cwd=repo)
    assert listed.code == 0, listed
    return list(json.loads(listed.out)["checkpoints"])


def _safety(repo: Path) -> str:
    (newest,) = [c for c in _listing(repo) if c["kind"] == "safety"][-1:]
    return str(newest["id"])


def _metadata(checkpoint_id: str) -> Path:
    (found,) = StateDir().root.glob(f"checkpoints/*/{checkpoint_id}.json")
    return found


def _blob(repo: Path, checkpoint_id: str, path: str) -> bytes:
    shown = subprocess.run(["git", "show", f"{REF_PREFIX}{checkpoint_id}:{path}"], cwd=repo,
                           capture_output=True, check=False)
    return shown.stdout if shown.returncode == 0 else b"<missing>"


def _lost_if(tally: Tally, condition: bool, what: str) -> list[str]:
    return list(tally.lost([what] if condition else []))


# 1. Checkpoint metadata steers nothing -------------------------------------------------------
def _plant_tree(repo: Path, victim: str, donor: str) -> None:
    """Point ``victim``'s metadata at ``donor``'s tree (the commit and id left as they are)."""
    path = _metadata(victim)
    record = json.loads(path.read_bytes())
    record["tree"] = json.loads(_metadata(donor).read_bytes())["tree"]
    path.write_text(json.dumps(record))


def test_a_metadata_tree_that_is_not_the_commits_is_damage_not_an_instruction(
    repo: Path, tally: Tally
) -> None:
    tally.attack()
    (repo / "src/a.py").write_text("a = 'at the checkpoint'\n")
    victim = _create(repo, "victim")
    (repo / "src/a.py").write_text("a = 'planted'\n")
    (repo / "planted.txt").write_text("planted\n")
    donor = _create(repo, "donor")
    (repo / "src/a.py").write_text("a = 'now'\n")
    _plant_tree(repo, victim, donor)

    result = tally.outcome(versatil("checkpoint", "restore", victim, cwd=repo))
    assert result.code == 0, result
    assert result.err.count("moved it aside") == 1, result
    # The commit's tree was restored, not the one the metadata named.
    wrong = (repo / "src/a.py").read_text() != "a = 'at the checkpoint'\n"
    wrong |= (repo / "planted.txt").exists()
    assert _lost_if(tally, wrong, "restored the planted tree") == []
    # The record was rebuilt from git and is read quietly from now on.
    again = versatil("checkpoint", "show", victim, cwd=repo)
    assert again.code == 0 and again.err == "", again


@pytest.mark.parametrize("field,value", [
    ("id", "../../../../victim"),  # an id that is a path
    ("tree", "0" * 40),  # a tree that does not exist
    ("commit", "0" * 40),  # another commit
])
def test_planted_metadata_fields_are_damage(
    field: str, value: str, repo: Path, tally: Tally
) -> None:
    tally.attack()
    (repo / "src/a.py").write_text("a = 'kept'\n")
    victim = _create(repo, "victim")
    path = _metadata(victim)
    record = json.loads(path.read_bytes())
    record[field] = value
    path.write_text(json.dumps(record))
    (repo / "src/a.py").write_text("a = 'edited'\n")
    result = tally.outcome(versatil("checkpoint", "restore", victim, cwd=repo))
    assert result.code == 0, result
    assert result.err.count("moved it aside") == 1, result
    assert (repo / "src/a.py").read_text() == "a = 'kept'\n"


def test_a_ref_whose_name_is_not_a_checkpoint_id_is_moved_aside(repo: Path, tally: Tally) -> None:
    """An id is one strict pattern: ``sub/cp-...`` or ``evil`` under the prefix is not one, and
    its metadata path (``sub/cp-....json``, planted by anyone) is never opened."""
    tally.attack(2)
    good = _create(repo, "good")
    commit = git(repo, "rev-parse", REF_PREFIX + good)
    git(repo, "update-ref", REF_PREFIX + "evil", commit)
    git(repo, "update-ref", REF_PREFIX + "sub/" + good, commit)
    result = tally.outcome(versatil("checkpoint", "list", cwd=repo))
    assert result.code == 0, result
    assert [line for line in result.err_lines if "not a checkpoint" in line] == result.err_lines
    assert len(result.err_lines) == 2, result
    assert [c["id"] for c in _listing(repo)] == [good]
    kept = git(repo, "for-each-ref", "--format=%(refname)", "refs/versatil/damaged/")
    assert sorted(kept.splitlines()) == ["refs/versatil/damaged/evil",
                                         f"refs/versatil/damaged/sub/{good}"]


# 2. Files git is told not to look at ---------------------------------------------------------
@pytest.mark.parametrize("flags", [
    ("--assume-unchanged",), ("--skip-worktree",), ("--assume-unchanged", "--skip-worktree"),
])
def test_a_restore_saves_edits_git_was_told_to_ignore(
    flags: tuple[str, ...], repo: Path, tally: Tally
) -> None:
    target = _create(repo, "clean")
    for flag in flags:
        git(repo, "update-index", flag, "src/a.py")
    (repo / "src/a.py").write_text("a = 'edit git does not see'\n")
    result = tally.outcome(versatil("checkpoint", "restore", target, cwd=repo))
    assert result.code == 0, result
    assert (repo / "src/a.py").read_text() == "a = 1\n"
    safety = _safety(repo)
    saved = _blob(repo, safety, "src/a.py")
    assert _lost_if(tally, saved != b"a = 'edit git does not see'\n",
                    f"src/a.py (the safety checkpoint has {saved!r})") == []
    undo = tally.outcome(versatil("checkpoint", "restore", safety, cwd=repo))
    assert undo.code == 0, undo
    assert (repo / "src/a.py").read_text() == "a = 'edit git does not see'\n"


def test_a_checkpoint_of_a_sparse_checkout_does_not_record_absent_files_as_deleted(
    repo: Path,
) -> None:
    git(repo, "update-index", "--skip-worktree", "src/b.py")
    (repo / "src/b.py").unlink()  # outside the sparse checkout: absent, not deleted
    cp = _create(repo, "sparse")
    assert _blob(repo, cp, "src/b.py") == b"b = 1\n"
    diff = versatil("checkpoint", "diff", cp, cwd=repo)
    assert diff.code == 0 and "src/b.py" not in diff.out, diff


# 3. Content git ignores now ------------------------------------------------------------------
def test_a_restore_saves_a_file_ignored_since_the_checkpoint(repo: Path, tally: Tally) -> None:
    tally.attack()
    (repo / "gen.txt").write_text("at the checkpoint\n")
    target = _create(repo)
    (repo / ".gitignore").write_text("*.log\ngen.txt\n")
    (repo / "gen.txt").write_text("edited since, and ignored now\n")
    result = tally.outcome(versatil("checkpoint", "restore", target, cwd=repo))
    assert result.code == 0, result
    assert (repo / "gen.txt").read_text() == "at the checkpoint\n"
    safety = _safety(repo)
    saved = _blob(repo, safety, "gen.txt")
    assert _lost_if(tally, saved != b"edited since, and ignored now\n", "gen.txt") == []
    assert versatil("checkpoint", "restore", safety, cwd=repo).code == 0
    assert (repo / "gen.txt").read_text() == "edited since, and ignored now\n"


def test_a_partial_restore_saves_the_ignored_file_it_overwrites(
    repo: Path, tally: Tally
) -> None:
    tally.attack()
    (repo / "src/gen.py").write_text("at the checkpoint\n")
    target = _create(repo)
    (repo / "src/.gitignore").write_text("gen.py\n")
    (repo / "src/gen.py").write_text("ignored work\n")
    result = tally.outcome(versatil("checkpoint", "restore", target, "--path", "gen.py",
                                    cwd=repo / "src"))
    assert result.code == 0, result
    assert (repo / "src/gen.py").read_text() == "at the checkpoint\n"
    assert (repo / "src/.gitignore").exists()  # outside the selection: left alone
    saved = _blob(repo, _safety(repo), "src/gen.py")
    assert _lost_if(tally, saved != b"ignored work\n", "src/gen.py") == []


def test_a_restore_saves_an_ignored_directory_where_the_checkpoint_has_a_file(
    repo: Path, tally: Tally
) -> None:
    tally.attack()
    (repo / "out").write_text("a file at the checkpoint\n")
    target = _create(repo)
    (repo / "out").unlink()
    (repo / "out" / "deep").mkdir(parents=True)
    (repo / "out" / "deep" / "build.log").write_text("ignored work\n")
    (repo / "out" / "x.log").write_text("more ignored work\n")
    result = tally.outcome(versatil("checkpoint", "restore", target, cwd=repo))
    assert result.code == 0, result
    assert (repo / "out").read_text() == "a file at the checkpoint\n"
    safety = _safety(repo)
    lost = [p for p, want in (("out/deep/build.log", b"ignored work\n"),
                              ("out/x.log", b"more ignored work\n"))
            if _blob(repo, safety, p) != want]
    assert tally.lost(lost) == []
    assert versatil("checkpoint", "restore", safety, cwd=repo).code == 0
    assert (repo / "out" / "deep" / "build.log").read_text() == "ignored work\n"


def test_a_restore_saves_an_ignored_file_where_the_checkpoint_has_a_directory(
    repo: Path, tally: Tally
) -> None:
    tally.attack()
    (repo / "cache").mkdir()
    (repo / "cache" / "keep.txt").write_text("in a directory at the checkpoint\n")
    target = _create(repo)
    (repo / "cache" / "keep.txt").unlink()
    (repo / "cache").rmdir()
    (repo / "cache").write_text("an ignored file now\n")
    (repo / ".gitignore").write_text("*.log\ncache\n")
    result = tally.outcome(versatil("checkpoint", "restore", target, cwd=repo))
    assert result.code == 0, result
    assert (repo / "cache" / "keep.txt").read_text() == "in a directory at the checkpoint\n"
    saved = _blob(repo, _safety(repo), "cache")
    assert _lost_if(tally, saved != b"an ignored file now\n", "cache") == []


def test_a_restore_refuses_to_overwrite_what_it_cannot_save(repo: Path, tally: Tally) -> None:
    """git will not add a file named ``.GIT``: the ignored directory holding one cannot go into
    the safety checkpoint, so the restore refuses (exit 1, naming it) unless --force."""
    tally.attack()
    (repo / ".gitignore").write_text("*.log\nout/\n")  # directories named out only
    (repo / "out").write_text("a file at the checkpoint\n")
    target = _create(repo)
    (repo / "out").unlink()
    (repo / "out").mkdir()
    (repo / "out" / ".GIT").write_text("unaddable\n")
    (repo / "out" / "work.log").write_text("ignored work\n")
    before = working_files(repo)
    result = tally.outcome(versatil("checkpoint", "restore", target, cwd=repo))
    assert one_line_problems(result, (1,), ["out", "--force"]) == [], result
    assert tally.lost([p for p in before if working_files(repo).get(p) != before[p]]) == []
    forced = tally.outcome(versatil("checkpoint", "restore", target, "--force", cwd=repo))
    assert forced.code == 0, forced
    assert (repo / "out").read_text() == "a file at the checkpoint\n"


@pytest.mark.parametrize("had", ["vendor", "vendor/lib.py"])
def test_a_restore_never_replaces_an_ignored_nested_repository(
    had: str, repo: Path, tally: Tally
) -> None:
    """The checkpoint had a file where an ignored repository stands now, or a file that is now
    inside one: the repository's files are not the checkpoint's to overwrite."""
    tally.attack()
    (repo / had).parent.mkdir(parents=True, exist_ok=True)
    (repo / had).write_text("a file at the checkpoint\n")
    target = _create(repo)
    (repo / had).unlink()
    make_git_repo(repo / "vendor", {"lib.py": "nested work\n"})
    (repo / ".gitignore").write_text("*.log\nvendor/\n")
    result = tally.outcome(versatil("checkpoint", "restore", target, cwd=repo))
    assert result.code == 0, result
    assert (repo / "vendor" / "lib.py").read_text() == "nested work\n"
    assert "vendor" in result.out and "skipped" in result.out, result


# 4. Every file a restore writes is whole -----------------------------------------------------
BIG = 1_500_000


def _big_world(repo: Path) -> tuple[str, dict[str, bytes], dict[str, bytes]]:
    """A checkpoint with large files, then every one of them rewritten: (id, theirs, ours)."""
    rng = random.Random(12)
    for i in range(6):
        (repo / f"data/f{i}.bin").parent.mkdir(exist_ok=True)
        (repo / f"data/f{i}.bin").write_bytes(rng.randbytes(BIG // 3))
    (repo / "big.bin").write_bytes(rng.randbytes(BIG))
    os.symlink("data/f0.bin", repo / "link")
    (repo / "tool.sh").write_text("#!/bin/sh\necho hi\n")
    (repo / "tool.sh").chmod(0o755)
    target = _create(repo, "big")
    theirs = working_files(repo)
    for i in range(6):
        (repo / f"data/f{i}.bin").write_bytes(b"new %d\n" % i)
    (repo / "big.bin").write_bytes(b"small now\n")
    (repo / "link").unlink()
    (repo / "link").write_text("a file now\n")
    (repo / "tool.sh").unlink()
    return target, theirs, working_files(repo)


def _torn(now: dict[str, bytes], before: dict[str, bytes], target: dict[str, bytes]) -> list[str]:
    return [p for p in sorted(set(now) | set(before) | set(target))
            if now.get(p) not in (before.get(p), target.get(p))]


def _modes_kept(repo: Path) -> list[str]:
    problems = []
    if not os.access(repo / "tool.sh", os.X_OK):
        problems.append("tool.sh lost its executable bit")
    if not (repo / "link").is_symlink():
        problems.append("link is not a symlink")
    return problems


@pytest.mark.parametrize("fault", [
    "checkpoint.mid-restore", "checkpoint.mid-write:1", "checkpoint.mid-write:4",
])
def test_a_restore_killed_between_files_leaves_each_file_whole(
    fault: str, repo: Path, tally: Tally
) -> None:
    target, theirs, ours = _big_world(repo)
    result = versatil_process("checkpoint", "restore", target, cwd=repo,
                              env={"VERSATIL_FAULT": fault})
    assert tally.killed(result.code), result
    torn = _torn(working_files(repo), ours, theirs)
    assert tally.lost(torn) == []
    # No staging directory is left for git (or a user) to trip over once the next restore ran.
    again = tally.outcome(versatil("checkpoint", "restore", target, cwd=repo))
    assert again.code == 0, again
    assert working_files(repo) == theirs
    assert _modes_kept(repo) == []
    assert list((repo / ".git").glob("versatil-restore-*")) == []


def test_a_restore_on_a_full_disk_changes_no_file(repo: Path, tally: Tally) -> None:
    """A file-size limit below big.bin's size: git is stopped writing it (SIGXFSZ)."""
    target, theirs, ours = _big_world(repo)

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (BIG // 2, BIG // 2))

    result = tally.outcome(versatil_process("checkpoint", "restore", target, cwd=repo,
                                            preexec_fn=limited))
    problems = one_line_problems(result, (1, 2), ["changed nothing"])
    assert problems == [], f"{problems}\n{result}"
    now = working_files(repo)
    assert tally.lost(_torn(now, ours, theirs)) == []
    assert tally.lost([p for p in ours if now.get(p) != ours[p]]) == []
    assert list((repo / ".git").glob("versatil-restore-*")) == []
    assert not any("interrupted" in line for line in versatil(
        "checkpoint", "list", cwd=repo).err_lines)


def test_a_restore_that_fails_part_way_names_what_it_did_and_the_way_back(
    repo: Path, tally: Tally, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, theirs, ours = _big_world(repo)
    real = checkpoints_module.move_into_place
    calls = []

    def fail_third(source: bytes, final: bytes) -> None:
        calls.append(final)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(source, final)

    monkeypatch.setattr(checkpoints_module, "move_into_place", fail_third)
    result = tally.outcome(versatil("checkpoint", "restore", target, cwd=repo))
    monkeypatch.undo()
    problems = one_line_problems(result, (1,), ["stopped part-way", "No space left",
                                                "restored 2", "undoes"])
    assert problems == [], f"{problems}\n{result}"
    assert tally.lost(_torn(working_files(repo), ours, theirs)) == []
    safety = _safety(repo)
    assert safety in result.err
    undo = tally.outcome(versatil("checkpoint", "restore", safety, cwd=repo))
    assert undo.code == 0, undo
    assert working_files(repo) == ours


def _writing(repo: Path, proc: subprocess.Popen[bytes], stale: set[Path],
             ours: dict[str, bytes]) -> bool:
    """The restore has started writing (a staging directory of its own, or a file changed in
    place), or it has ended."""
    if proc.poll() is not None or set((repo / ".git").glob("versatil-restore-*")) - stale:
        return True
    return any((repo / rel).lstat().st_size != len(data) for rel, data in ours.items()
               if (repo / rel).exists())


@pytest.mark.slow
def test_random_kills_of_a_restore_never_leave_a_torn_file(repo: Path, tally: Tally) -> None:
    target, theirs, ours = _big_world(repo)
    rng = random.Random(4)
    rounds = 30
    for _ in range(rounds):
        # Back to "ours" each round: every path of either side written afresh.
        for rel in set(ours) | set(theirs):
            (repo / rel).unlink(missing_ok=True)
        for rel, data in ours.items():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_bytes(data)
        stale = set((repo / ".git").glob("versatil-restore-*"))  # a killed round's
        # Every round makes a safety checkpoint: keep them all, and the target.
        env = {**os.environ, "VERSATIL_CHECKPOINTS_MAX_CHECKPOINTS": "1000"}
        proc = subprocess.Popen(versatil_argv("checkpoint", "restore", target), cwd=repo,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env=env)
        wait_for(lambda p=proc, s=stale: _writing(repo, p, s, ours), interval=0.001)
        time.sleep(rng.uniform(0, 0.04))  # a random moment while it writes is the point
        with_kill = proc.poll() is None
        if with_kill:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        tally.killed(proc.returncode if with_kill else 0)
        assert tally.lost(_torn(working_files(repo), ours, theirs)) == []
    done = versatil("checkpoint", "restore", target, cwd=repo)
    assert done.code == 0, done
    assert working_files(repo) == theirs


# 5. An empty path is bad input ---------------------------------------------------------------
@pytest.mark.parametrize("paths", [("",), ("src/a.py", ""), ("", "")])
def test_an_empty_path_is_bad_input(paths: tuple[str, ...], repo: Path, tally: Tally) -> None:
    target = _create(repo)
    (repo / "src/a.py").write_text("a = 'edited'\n")
    (repo / "new.txt").write_text("new\n")
    before = working_files(repo)
    args = [a for p in paths for a in ("--path", p)]
    result = tally.outcome(versatil("checkpoint", "restore", target, *args, cwd=repo))
    tally.bad_inputs += 1
    problems = one_line_problems(result, (2,), ["--path"])
    assert problems == [], f"{problems}\n{result}"
    assert tally.lost([p for p in before if working_files(repo).get(p) != before[p]]) == []


# 6. A damaged ref is reported once and skipped -----------------------------------------------
def _plant_ref(repo: Path, kind: str) -> str:
    name = "cp-20200101-000000-dead"
    if kind == "blob":
        oid = git(repo, "hash-object", "-w", "README.md")
    elif kind == "tree":
        oid = git(repo, "rev-parse", "HEAD^{tree}")
    elif kind == "tag":
        git(repo, "tag", "-a", "-m", "t", "annotated")
        oid = git(repo, "rev-parse", "annotated")
    else:  # a ref naming an object that does not exist (git update-ref would refuse it)
        path = repo / ".git" / REF_PREFIX / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("1" * 40 + "\n")
        return name
    git(repo, "update-ref", REF_PREFIX + name, oid)
    return name


@pytest.mark.parametrize("kind", ["blob", "tree", "tag", "missing"])
def test_one_bad_ref_does_not_break_the_others(kind: str, repo: Path, tally: Tally) -> None:
    tally.attack()
    good = _create(repo, "good")
    bad = _plant_ref(repo, kind)
    (repo / "src/a.py").write_text("a = 'edited'\n")
    listed = tally.outcome(versatil("checkpoint", "list", cwd=repo))
    assert listed.code == 0, listed
    assert len(listed.err_lines) == 1 and bad in listed.err, listed
    assert good in listed.out and bad not in listed.out
    # Reported once: the next commands say nothing about it.
    made = tally.outcome(versatil("checkpoint", "create", "-m", "after", cwd=repo))
    assert made.code == 0 and made.err == "", made
    restored = tally.outcome(versatil("checkpoint", "restore", good, cwd=repo))
    assert restored.code == 0 and restored.err == "", restored
    assert (repo / "src/a.py").read_text() == "a = 1\n"


def test_a_bad_ref_does_not_make_a_pruning_create_fail(repo: Path, tally: Tally) -> None:
    """With max_checkpoints reached, every create prunes, listing every ref."""
    tally.attack()
    env = {"VERSATIL_CHECKPOINTS_MAX_CHECKPOINTS": "1"}
    _create(repo, "old")
    _plant_ref(repo, "blob")
    made = tally.outcome(versatil("checkpoint", "create", "-m", "new", cwd=repo, env=env))
    assert made.code == 0, made
    # The damage, then the prune that followed, one line each (issue 15: never silent).
    assert len(made.err_lines) == 2 and "not a checkpoint" in made.err_lines[0], made
    assert made.err_lines[1].startswith("versatil: pruned checkpoint "), made
    assert [c["message"] for c in _listing(repo)] == ["new"]


def test_a_bad_ref_does_not_break_a_rollback(repo: Path, tally: Tally) -> None:
    tally.attack()
    _plant_ref(repo, "blob")
    result = tally.outcome(versatil_process(
        "run", "--agent", "R", "--no-monitor", "--lock", "src", "--rollback-on-failure", "--",
        "sh", "-c", "echo broken > src/a.py; exit 3", cwd=repo))
    assert result.code == 3, result
    assert (repo / "src/a.py").read_text() == "a = 1\n"
    assert sum("not a checkpoint" in line for line in result.err_lines) == 1, result


# 13. File names that are not UTF-8 -----------------------------------------------------------
def test_a_file_name_that_is_not_utf8_round_trips(repo: Path, tally: Tally) -> None:
    tally.attack()
    name = os.fsdecode(b"caf\xe9-\xff.txt")  # Latin-1 bytes: not UTF-8
    (repo / name).write_bytes(b"latin-1 named\n")
    made = tally.outcome(versatil("checkpoint", "create", "-m", "bytes", "--json", cwd=repo))
    assert made.code == 0 and made.err == "", made
    cp = json.loads(made.out)["id"]
    # JSON (--json and the metadata file) holds it printable, as every log and command does;
    # the restore below takes its bytes from the commit.
    assert json.loads(made.out)["files_modified"] == ["caf\\xe9-\\xff.txt"]
    assert json.loads(_metadata(cp).read_bytes())["files_modified"] == ["caf\\xe9-\\xff.txt"]
    for args in (("list",), ("list", "--json"), ("show", cp), ("show", cp, "--json"),
                 ("diff", cp)):
        shown = tally.outcome(versatil("checkpoint", *args, cwd=repo))
        assert shown.code == 0 and shown.err == "", (args, shown)
    (repo / name).unlink()
    diff = tally.outcome(versatil("checkpoint", "diff", cp, cwd=repo))
    assert diff.code == 0 and "caf\\xe9-\\xff.txt" in diff.out, diff
    restored = tally.outcome(versatil("checkpoint", "restore", cp, cwd=repo))
    assert restored.code == 0 and restored.err == "", restored
    assert (repo / name).read_bytes() == b"latin-1 named\n"
    # --path with those bytes, and its removal by a restore of the safety checkpoint.
    (repo / name).write_bytes(b"changed\n")
    one = tally.outcome(versatil("checkpoint", "restore", cp, "--path", name, cwd=repo))
    assert one.code == 0, one
    assert (repo / name).read_bytes() == b"latin-1 named\n"


def test_a_non_utf8_name_recorded_as_modified_is_restored_by_agent(
    repo: Path, tally: Tally
) -> None:
    tally.attack()
    name = os.fsdecode(b"\xff\xfe.dat")
    (repo / name).write_bytes(b"before\n")
    cp = _create(repo)
    (repo / name).write_bytes(b"Ann's change\n")
    record_files_modified(Checkpoints(repo).repo, "Ann", [name, "src/a.py"])
    result = tally.outcome(versatil("checkpoint", "restore", cp, "--agent", "Ann", cwd=repo))
    assert result.code == 0, result
    assert (repo / name).read_bytes() == b"before\n"


def test_a_non_utf8_name_on_an_unborn_branch(tmp_path: Path, tally: Tally) -> None:
    tally.attack()
    repo = tmp_path / "fresh"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    name = os.fsdecode(b"new\x80.txt")
    (repo / name).write_bytes(b"first\n")
    cp = _create(repo)
    (repo / name).write_bytes(b"second\n")
    result = tally.outcome(versatil("checkpoint", "restore", cp, cwd=repo))
    assert result.code == 0 and result.err == "", result
    assert (repo / name).read_bytes() == b"first\n"


def test_a_non_utf8_message_and_agent(repo: Path, tally: Tally) -> None:
    tally.attack()
    message, agent = os.fsdecode(b"step \xe9"), os.fsdecode(b"ag\xffent")
    made = tally.outcome(versatil("checkpoint", "create", "-m", message, "--agent", agent,
                                  "--json", cwd=repo))
    assert made.code == 0, made
    cp = json.loads(made.out)["id"]
    listed = tally.outcome(versatil("checkpoint", "list", cwd=repo))
    assert listed.code == 0 and "step \\xe9" in listed.out, listed
    assert Checkpoints(repo).show(cp).message == "step \\xe9"  # as JSON holds it
    commit = subprocess.run(["git", "cat-file", "commit", REF_PREFIX + cp], cwd=repo,
                            capture_output=True, check=True).stdout
    assert b"step \xe9\n" in commit and b"ag\xffent" in commit  # the bytes themselves


# 18 (and 13). Create is all or nothing, and says what is true ---------------------------------
def _full_disk_for_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    real = StateDir.write_atomic

    def write_atomic(self: StateDir, path: Path, data: bytes, *, durable: bool = False) -> None:
        if path.parent.parent.name == "checkpoints" and path.suffix == ".json":
            from versatil_fs.state import state_error

            cause = OSError(28, "No space left on device")
            raise state_error(path, cause) from cause
        real(self, path, data, durable=durable)

    monkeypatch.setattr(StateDir, "write_atomic", write_atomic)


def test_a_create_whose_metadata_cannot_be_written_leaves_no_checkpoint(
    repo: Path, tally: Tally, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _create(repo)
    _full_disk_for_metadata(monkeypatch)
    result = tally.outcome(versatil("checkpoint", "create", "-m", "no room", cwd=repo))
    monkeypatch.undo()
    assert one_line_problems(result, (1, 2), ["full"]) == [], result
    refs = git(repo, "for-each-ref", "--format=%(refname)", REF_PREFIX).splitlines()
    told_nothing = "nothing was changed" in result.err
    assert not (told_nothing and len(refs) != 1), f"{refs} after {result}"
    assert refs == [REF_PREFIX + first]


def test_a_create_that_cannot_undo_its_ref_says_the_checkpoint_exists(
    repo: Path, tally: Tally, monkeypatch: pytest.MonkeyPatch
) -> None:
    _full_disk_for_metadata(monkeypatch)
    real_spawn = RepoGit.spawn

    def spawn(self: RepoGit, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
        if args[:2] == ("update-ref", "-d"):
            args = ("update-ref", "-d", "refs/no/such/ref", "1" * 40)  # fails
        return real_spawn(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(RepoGit, "spawn", spawn)
    result = tally.outcome(versatil("checkpoint", "create", "-m", "half", cwd=repo))
    monkeypatch.undo()
    assert one_line_problems(result, (1, 2), ["was made", "list"]) == [], result
    assert "nothing was changed" not in result.err
    listed = versatil("checkpoint", "list", cwd=repo)
    assert listed.code == 0 and "rebuilt from git" in listed.out, listed


def test_a_restore_whose_last_record_cannot_be_written_says_it_restored(
    repo: Path, tally: Tally, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = _create(repo)
    (repo / "src/a.py").write_text("a = 'edited'\n")
    real = StateDir.write_atomic

    def write_atomic(self: StateDir, path: Path, data: bytes, *, durable: bool = False) -> None:
        if b'"restore_complete": true' in data:  # the record saying the restore finished
            from versatil_fs.state import state_error

            cause = OSError(28, "No space left on device")
            raise state_error(path, cause) from cause
        real(self, path, data, durable=durable)

    monkeypatch.setattr(StateDir, "write_atomic", write_atomic)
    result = tally.outcome(versatil("checkpoint", "restore", target, cwd=repo))
    monkeypatch.undo()
    assert (repo / "src/a.py").read_text() == "a = 1\n"
    told_nothing = result.code != 0 or "nothing was changed" in result.err
    assert not told_nothing, result
    assert "restored" in result.err and "No space left" in result.err, result


def test_a_wave_number_too_big_for_an_id_is_bad_input(repo: Path, tally: Tally) -> None:
    tally.bad_inputs += 1
    result = tally.outcome(versatil("checkpoint", "create", "--wave", "1" + "0" * 30, cwd=repo))
    assert one_line_problems(result, (2,), ["wave"]) == [], result
    assert git(repo, "for-each-ref", REF_PREFIX) == ""


def test_state_errors_do_not_hide_behind_damage(repo: Path) -> None:
    """A metadata file that is a symlink is refused (one sentence), not followed."""
    cp = _create(repo)
    path = _metadata(cp)
    outside = repo.parent / "outside.json"
    outside.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(outside)
    result = versatil("checkpoint", "show", cp, cwd=repo)
    assert one_line_problems(result, (2,), ["symlink"]) == [], result
