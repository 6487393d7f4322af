"""``versatil checkpoint`` and ``versatil-daemon`` end to end: real git, real processes.

Crash safety is tested by killing real processes with SIGKILL at the named fault points
(``VERSATIL_FAULT``), then checking what a user would find: refs and metadata consistent, no
stray scratch index, and a way back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from integration.helpers import WAIT_AT_START_LINE, StartLine, commit_files
from integration.helpers import git_output as git
from integration.helpers import write_file as write

from versatil_fs import events
from versatil_fs.checkpoints import REF_PREFIX, Checkpoints, record_files_modified
from versatil_fs.cli import cli, run_cli
from versatil_fs.repo import Repository

DAEMON_PRELUDE = "from versatil_fs.cli.daemon import main; main()"
CLI_PRELUDE = "from versatil_fs.cli import main; main()"


# Every test gets its own VERSATIL_HOME and no fault or agent from the caller's shell.
pytestmark = pytest.mark.usefixtures("tester_env")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Test User")
    git(path, "config", "user.email", "test@example.invalid")
    files = {
        "README.md": "hello\n",
        "src/a.py": "a = 1\n",
        "src/b.py": "b = 1\n",
        ".gitignore": "*.log\n",
    }
    commit_files(path, files, message="initial")
    return path.resolve()


def cli_run(
    capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    code = run_cli(cli, list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run(
    cwd: Path, *args: str, prelude: str = CLI_PRELUDE, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", prelude, *args], cwd=cwd, env=full_env, capture_output=True,
        text=True, check=False, timeout=120,
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def refs(repo: Path) -> list[str]:
    out = git(repo, "for-each-ref", "--format=%(refname)", REF_PREFIX)
    return [line[len(REF_PREFIX):] for line in out.splitlines()]


def files_of(root: Path) -> dict[str, bytes]:
    found = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if rel.parts[0] == ".git" or not path.is_file():
            continue
        found[rel.as_posix()] = path.read_bytes()
    return found


def scratch_of(repo: Path) -> Path:
    return Checkpoints(repo).site.scratch


# The command line, in process ---------------------------------------------------------------------
def test_create_list_show_diff_restore_prune_with_json(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo)
    write(repo, "src/a.py", "a = 2\n")
    code, out, _ = cli_run(capsys, "checkpoint", "create", "-m", "first", "--json")
    assert code == 0
    created = json.loads(out)
    cid = created["id"]
    assert created["message"] == "first" and created["version"] == 1

    code, out, _ = cli_run(capsys, "checkpoint", "create", "-m", "plain", "--wave", "3")
    assert code == 0
    second = out.strip()
    assert second.startswith("cp-") and second.endswith("-wave-3")

    code, out, _ = cli_run(capsys, "checkpoint", "list", "--json")
    listing = json.loads(out)
    assert [c["id"] for c in listing["checkpoints"]] == [cid, second]
    assert listing["repo"] == str(repo)
    code, out, _ = cli_run(capsys, "checkpoint", "list", "--tail", "1")
    assert code == 0 and second in out and cid not in out

    code, out, _ = cli_run(capsys, "checkpoint", "show", cid)
    assert code == 0 and "first" in out and "src/a.py" in out
    code, out, _ = cli_run(capsys, "checkpoint", "show", cid, "--json")
    assert json.loads(out)["id"] == cid

    write(repo, "src/a.py", "a = 3\n")
    write(repo, "new.txt", "new\n")
    code, out, _ = cli_run(capsys, "checkpoint", "diff", cid)
    # The agent column (issue 15, item 10): nobody recorded these files.
    assert code == 0 and sorted(out.splitlines()) == ["A new.txt  -", "M src/a.py  -"]
    code, out, _ = cli_run(capsys, "checkpoint", "diff", cid, "--json")
    assert {c["path"]: c["status"] for c in json.loads(out)["changes"]} == {
        "new.txt": "A", "src/a.py": "M"
    }
    code, out, _ = cli_run(capsys, "checkpoint", "diff", cid, "--patch")
    assert "+a = 3" in out

    monkeypatch.chdir(repo / "src")  # --path is relative to where the user stands
    code, out, _ = cli_run(capsys, "checkpoint", "restore", cid, "--path", "a.py", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["changed"] == ["src/a.py"] and result["safety_checkpoint"]
    assert (repo / "src/a.py").read_text() == "a = 2\n"
    assert (repo / "new.txt").exists()

    code, out, _ = cli_run(capsys, "checkpoint", "restore", cid)
    assert code == 0
    assert "removed  new.txt" in out and "Safety checkpoint: cp-" in out
    assert not (repo / "new.txt").exists()

    # Your own and the automatic (safety) ones are kept under separate budgets (issue 15).
    code, out, _ = cli_run(capsys, "checkpoint", "prune", "--keep", "1", "--keep-automatic",
                           "0", "--json")
    pruned = json.loads(out)
    assert pruned["kept"] == 1 and pruned["kept_own"] == 1 and cid in pruned["removed"]
    assert len(refs(repo)) == 1


def test_cli_errors_are_one_sentence_with_the_right_exit_code(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(repo)
    cli_run(capsys, "checkpoint", "create")
    cli_run(capsys, "checkpoint", "create")
    code, _, err = cli_run(capsys, "checkpoint", "show", "cp-nope")
    assert code == 2 and err.count("\n") == 1 and "No checkpoint 'cp-nope'" in err
    code, _, err = cli_run(capsys, "checkpoint", "restore", "cp-")
    assert code == 2 and "matches 2 checkpoints" in err
    code, _, err = cli_run(capsys, "checkpoint", "restore", "cp-", "--wave", "-1")
    assert code == 2
    elsewhere = tmp_path / "not-a-repo"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = cli_run(capsys, "checkpoint", "list")
    assert code == 2 and "not inside a git repository" in err and err.count("\n") == 1
    code, _, err = cli_run(capsys, "-C", str(repo), "checkpoint", "list")
    assert code == 0


def test_real_processes_print_ids_and_one_line_errors(repo: Path, tmp_path: Path) -> None:
    created = run(repo, "checkpoint", "create", "-m", "from a process")
    assert created.returncode == 0, created.stderr
    cid = created.stdout.strip()
    assert refs(repo) == [cid]
    message = one_line_error(run(repo, "checkpoint", "show", "zzz"), 2)
    assert message.startswith("versatil: No checkpoint")
    outside = tmp_path / "outside"
    outside.mkdir()
    one_line_error(run(outside, "checkpoint", "create"), 2)


def test_logs_checkpoints_shows_the_events(repo: Path) -> None:
    cid = run(repo, "checkpoint", "create", "-m", "logged").stdout.strip()
    logged = run(repo, "logs", "checkpoints", "--json")
    if logged.returncode == 2 and "No such command" in logged.stderr:
        pytest.skip("versatil logs is not part of this build")
    kinds = [json.loads(line)["kind"] for line in logged.stdout.splitlines()]
    assert kinds == ["create"]
    assert cid in run(repo, "logs", "checkpoints").stdout


# versatil-daemon ----------------------------------------------------------------------------------
def test_daemon_lists_and_restores_checkpoints(repo: Path) -> None:
    cid = run(repo, "checkpoint", "create").stdout.strip()
    listed = run(repo, "list-checkpoints", prelude=DAEMON_PRELUDE)
    assert listed.returncode == 0 and cid in listed.stdout
    write(repo, "src/a.py", "broken\n")
    restored = run(repo, "restore-checkpoint", cid[:-1], "--json", prelude=DAEMON_PRELUDE)
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["restored"] == ["src/a.py"]
    assert (repo / "src/a.py").read_text() == "a = 1\n"
    message = one_line_error(run(repo, "restore-checkpoint", "nope", prelude=DAEMON_PRELUDE), 2)
    assert message.startswith("versatil-daemon: ")
    # An empty --path is bad input, not "the current directory" (the whole tree, issue 12).
    write(repo, "src/a.py", "broken again\n")
    empty = run(repo, "restore-checkpoint", cid, "--path", "", prelude=DAEMON_PRELUDE)
    assert "--path" in one_line_error(empty, 2)
    assert (repo / "src/a.py").read_text() == "broken again\n"


def test_daemon_release_locks(repo: Path) -> None:
    pytest.importorskip("versatil_fs.locks.manager")
    taken = run(repo, "lock", "--agent", "Dana", "src/a.py")
    assert taken.returncode == 0, taken.stderr
    released = run(repo, "release-locks", "--agent=Dana", prelude=DAEMON_PRELUDE)
    assert released.returncode == 0, released.stderr
    assert "src/a.py" in released.stdout and "Dana" in released.stdout
    again = run(repo, "release-locks", "--agent=Dana", prelude=DAEMON_PRELUDE)
    assert "held no locks" in again.stdout


# Locks held by other agents ---------------------------------------------------------------------
def test_restore_refuses_a_file_locked_by_an_agent_in_another_process(
    repo: Path, spawn: Any
) -> None:
    pytest.importorskip("versatil_fs.locks.manager")
    from integration.helpers import lock_agent

    cid = run(repo, "checkpoint", "create").stdout.strip()
    write(repo, "src/a.py", "Dana's work\n")
    dana = lock_agent(spawn, repo)
    dana.acquire(["src/"], agent="Dana")
    refused = run(repo, "checkpoint", "restore", cid, env={"VERSATIL_AGENT": "James"})
    message = one_line_error(refused, 1)
    assert "src/a.py" in message and "Dana" in message
    assert (repo / "src/a.py").read_text() == "Dana's work\n"
    forced = run(repo, "checkpoint", "restore", cid, "--force",
                 env={"VERSATIL_AGENT": "James"})
    assert forced.returncode == 0, forced.stderr
    assert (repo / "src/a.py").read_text() == "a = 1\n"
    dana.exit()


# Parallel creates -------------------------------------------------------------------------------
@pytest.mark.slow
def test_eight_parallel_creates_all_succeed(repo: Path, tmp_path: Path, spawn: Any) -> None:
    for i in range(50):
        write(repo, f"untracked/{i}.txt", f"{i}\n")
    write(repo, "src/a.py", "a = 'dirty'\n")
    index_before = (repo / ".git/index").read_bytes()
    start = StartLine(tmp_path / "go")
    code = WAIT_AT_START_LINE + textwrap.dedent(f"""
        import os, sys, time
        print("ready", flush=True)
        wait_at_start_line({str(start.path)!r})  # all eight start together
        from versatil_fs.checkpoints import Checkpoints
        print(Checkpoints(".").create("parallel " + sys.argv[1]).id, flush=True)
    """)
    children = [spawn(code, str(i), cwd=repo, name=f"create-{i}") for i in range(8)]
    for child in children:
        assert child.read_line() == "ready"
    start.go()
    ids = [child.read_line(timeout=120) for child in children]
    assert [child.wait(timeout=120) for child in children] == [0] * 8, [
        c.stderr for c in children
    ]
    assert len(set(ids)) == 8
    assert sorted(refs(repo)) == sorted(ids)
    for cid in ids:
        assert git(repo, "show", f"{REF_PREFIX}{cid}:src/a.py") == "a = 'dirty'\n"
    assert (repo / ".git/index").read_bytes() == index_before
    assert git(repo, "stash", "list") == ""
    assert [p for p in scratch_of(repo).iterdir()] == []


# Crashes -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_killed_before_the_commit_leaves_no_ref_no_metadata_and_no_stray_index(
    repo: Path,
) -> None:
    write(repo, "src/a.py", "a = 2\n")
    index_before = (repo / ".git/index").read_bytes()
    killed = run(repo, "checkpoint", "create",
                 env={"VERSATIL_FAULT": "checkpoint.before-commit"})
    assert killed.returncode == -9
    assert refs(repo) == []
    cps = Checkpoints(repo)  # any command sweeps what the dead process left
    assert list(scratch_of(repo).iterdir()) == []
    assert list(cps.site.metadata.glob("*.json")) == []
    assert cps.list() == []
    assert (repo / ".git/index").read_bytes() == index_before
    assert not (repo / ".git/index.lock").exists()
    created = run(repo, "checkpoint", "create")
    assert created.returncode == 0 and refs(repo) == [created.stdout.strip()]


@pytest.mark.slow
def test_killed_before_the_metadata_rename_is_listed_from_its_commit(repo: Path) -> None:
    killed = run(repo, "checkpoint", "create", "-m", "half done", "--wave", "4",
                 env={"VERSATIL_FAULT": "state.before-rename"})
    assert killed.returncode == -9
    (cid,) = refs(repo)
    listed = run(repo, "checkpoint", "list", "--json")
    (record,) = json.loads(listed.stdout)["checkpoints"]
    assert record["id"] == cid and record["recovered"] is True
    assert (record["message"], record["wave"]) == ("half done", 4)
    assert not list(Checkpoints(repo).site.metadata.glob("*.json"))  # no half-written record


@pytest.mark.slow
def test_killed_mid_restore_is_reported_and_undone_with_the_safety_checkpoint(
    repo: Path,
) -> None:
    cid = run(repo, "checkpoint", "create").stdout.strip()
    write(repo, "src/a.py", "a = 'later'\n")
    write(repo, "created.txt", "later\n")
    (repo / "src/b.py").unlink()
    before = files_of(repo)

    killed = run(repo, "checkpoint", "restore", cid,
                 env={"VERSATIL_FAULT": "checkpoint.mid-restore"})
    assert killed.returncode == -9
    assert not (repo / "created.txt").exists()  # removals happened, writes did not
    assert (repo / "src/a.py").read_text() == "a = 'later'\n"

    listing = run(repo, "checkpoint", "list", "--json")
    safety = next(c for c in json.loads(listing.stdout)["checkpoints"] if c["kind"] == "safety")
    assert safety["restore_of"] == cid and safety["restore_complete"] is False
    human = run(repo, "checkpoint", "list")
    assert "was interrupted" in human.stderr and safety["id"] in human.stderr
    assert list(scratch_of(repo).iterdir()) == []

    undone = run(repo, "checkpoint", "restore", safety["id"])
    assert undone.returncode == 0, undone.stderr
    assert files_of(repo) == before
    again = run(repo, "checkpoint", "restore", cid)
    assert again.returncode == 0
    assert (repo / "src/a.py").read_text() == "a = 1\n" and (repo / "src/b.py").exists()


# The story the demo tells ------------------------------------------------------------------------
def test_an_agents_mess_is_rolled_back_while_another_agents_edits_stay(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo)
    the_repo = Repository.find(repo)
    code, out, _ = cli_run(capsys, "checkpoint", "create", "-m", "before wave 1", "--wave", "1")
    cid = out.strip()
    write(repo, "src/a.py", "syntax error (\n")
    write(repo, "src/junk.tmp.py", "junk\n")
    (repo / "src/b.py").unlink()
    record_files_modified(the_repo, "Marcus", ["src/a.py", "src/junk.tmp.py", "src/b.py"],
                          wave=1)
    write(repo, "README.md", "James documented the feature\n")
    record_files_modified(the_repo, "James", ["README.md"], wave=1)

    code, out, err = cli_run(capsys, "checkpoint", "restore", cid, "--agent", "Marcus")
    assert code == 0, err
    assert (repo / "src/a.py").read_text() == "a = 1\n"
    assert (repo / "src/b.py").read_text() == "b = 1\n"
    assert not (repo / "src/junk.tmp.py").exists()
    assert (repo / "README.md").read_text() == "James documented the feature\n"
    (event,) = [e for e in events.read("checkpoints") if e.kind == "restore"]
    # Marcus's files, restored by the caller (issue 15, item 9).
    assert event.data["checkpoint"] == cid and event.agent == "Tester"
    assert event.data["files_of"] == "Marcus"


def test_create_warns_about_gitlinks_and_large_files_and_show_says_so(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo)
    monkeypatch.setenv("VERSATIL_CHECKPOINTS_LARGE_FILE_MB", "0.001")
    nested = repo / "nested"
    nested.mkdir()
    git(nested, "init", "-q")
    write(nested, "x.txt", "x\n")
    git(nested, "add", "x.txt")
    git(nested, "-c", "user.name=n", "-c", "user.email=n@n", "commit", "-qm", "x")
    write(repo, "big.bin", "b" * 4096)
    code, out, err = cli_run(capsys, "checkpoint", "create")
    assert code == 0
    assert "gitlinks" in err and "nested (nested repository)" in err
    assert "big.bin" in err
    code, shown, _ = cli_run(capsys, "checkpoint", "show", out.strip())
    assert "gitlinks  nested" in shown and "note: Stored as gitlinks" in shown
