"""Fencing tokens reach the user: `lock --json`, `locks --json`, `VERSATIL_FENCE` in `run` and
wave tasks, and the commit guards and `checkpoint restore` refusing a superseded token.

End to end: real repositories, real `git commit` running the installed hooks (which find the
`versatil` of this interpreter's environment on PATH), real `versatil` processes. A lease ends
by its own record (a 1 s shell lease gone from the table, waited for by polling the table) or by
`versatil release --agent`, never by a bare sleep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from integration.helpers import commit_files, git, run_versatil, wait_for
from reliability.support import versatil

from versatil_fs import events, hook
from versatil_fs.locks.manager import LockManager
from versatil_fs.waves.executor import WaveExecutor
from versatil_fs.waves.plan import Plan

BIN = str(Path(sys.executable).parent)


@pytest.fixture(autouse=True)
def versatil_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.fixture
def repo(git_repo: Path) -> Path:
    commit_files(git_repo, {"src/api/a.py": "a\n", "src/api/b.py": "b\n", "docs/x.md": "x\n"})
    hook.install(git_repo)
    return git_repo


def shell_lock(repo: Path, *resources: str, agent: str, ttl: float = 300) -> dict[str, Any]:
    """`versatil lock --json` as a script runs it: the grant, its fence included."""
    done = run_versatil("lock", "--agent", agent, "--ttl", str(ttl), "--json", *resources,
                        cwd=repo)
    assert done.returncode == 0, done.stderr
    grant: dict[str, Any] = json.loads(done.stdout)
    return grant


def live_fences(repo: Path) -> set[int]:
    return {g.fence for g in LockManager(repo=str(repo)).holders()}


def edit_and_stage(repo: Path, *names: str) -> None:
    for name in names:
        with (repo / name).open("a") as handle:
            handle.write("changed\n")
    git(repo, "add", "--", *names)


def commit(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "commit", "-q", "-m", "change", *args], cwd=repo,
        env={**os.environ, **env}, capture_output=True, text=True, check=False, timeout=120,
    )


def refusals(kind: str, stream: str = "collision-detection") -> list[events.Event]:
    return [e for e in events.read(stream) if e.kind == kind]


# Where the token is shown -----------------------------------------------------------------------
def test_lock_json_locks_json_and_the_lock_line_carry_the_fence(repo: Path) -> None:
    first = shell_lock(repo, "src/api/", agent="Marcus")
    said = versatil("lock", "--agent", "James", "docs/x.md", cwd=repo)
    assert said.code == 0, said
    listing = json.loads(versatil("locks", "--json", cwd=repo).out)
    fences = {g["agent"]: g["fence"] for g in listing["locks"]}
    assert fences["Marcus"] == first["fence"] >= 1
    assert fences["James"] > first["fence"]
    assert f"fence {fences['James']})." in said.out  # "Locked ... (lease ID, fence N)."
    assert listing["fence"] == fences["James"]  # the last token granted


# VERSATIL_FENCE in the commands that run under locks ------------------------------------------
def test_run_exports_its_own_lease_fence_and_without_locks_none(repo: Path) -> None:
    show = ["--", "sh", "-c", 'echo "fence=${VERSATIL_FENCE-unset}"']
    done = run_versatil("run", "--agent", "Dana", "--lock", "src/api/a.py", *show, cwd=repo)
    assert done.returncode == 0, done.stderr
    [grant] = [e for e in events.read("locks") if e.kind == "grant" and e.agent == "Dana"]
    assert done.stdout.strip() == f"fence={grant.data['fence']}"
    bare = run_versatil("run", "--agent", "Dana", *show, cwd=repo)
    assert bare.stdout.strip() == "fence=unset"


def test_a_stale_token_in_the_shell_does_not_stop_a_run_rolling_back_its_own_files(
    repo: Path,
) -> None:
    # The token is the caller's claim at the guard and `checkpoint restore`; the run's own
    # rollback is made under the run's own lease, whatever the shell exported.
    stale = shell_lock(repo, "src/api/", agent="Dana")
    assert versatil("release", "--agent", "Dana", cwd=repo).code == 0
    done = run_versatil(
        "run", "--agent", "Dana", "--lock", "src/api/a.py", "--rollback-on-failure", "--",
        "sh", "-c", 'echo "$VERSATIL_FENCE" > ../fence-seen; echo broken >> src/api/a.py; exit 3',
        cwd=repo, env={"VERSATIL_FENCE": str(stale["fence"])},
    )
    assert done.returncode == 3, done.stderr
    assert (repo / "src/api/a.py").read_text() == "a\n"  # rolled back
    assert int((repo.parent / "fence-seen").read_text()) > stale["fence"]  # its own token


def test_a_wave_task_exports_its_own_lease_fence(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "seen"
    out.mkdir()
    plan = repo / "plan.yaml"
    plan.write_text(yaml.safe_dump({"tasks": [
        {"id": "a", "agent": "Ana", "writes": ["src/api/a.py"],
         "run": f'echo "${{VERSATIL_FENCE-unset}}" > {out}/a'},
        {"id": "b", "agent": "Ben", "writes": ["docs/"],
         "run": f'echo "${{VERSATIL_FENCE-unset}}" > {out}/b'},
        {"id": "c", "agent": "Cy", "run": f'echo "${{VERSATIL_FENCE-unset}}" > {out}/c'},
    ]}, sort_keys=False))
    run = WaveExecutor(Plan.load(plan), repo=repo).run()
    assert {t.status for t in run.tasks.values()} == {"succeeded"}
    granted = {e.agent: e.data["fence"] for e in events.read("locks") if e.kind == "grant"}
    assert (out / "a").read_text().strip() == str(granted["Ana"])
    assert (out / "b").read_text().strip() == str(granted["Ben"])
    assert granted["Ana"] != granted["Ben"]
    assert (out / "c").read_text().strip() == "unset"  # no locks, no token


# The commit guards ----------------------------------------------------------------------------
def test_an_expired_shell_lease_is_refused_once_another_agent_locked_its_files(
    repo: Path,
) -> None:
    mine = shell_lock(repo, "src/api/", agent="Marcus", ttl=1)
    edit_and_stage(repo, "src/api/a.py")
    # The lease's own record ends it: polled until the table no longer holds it.
    wait_for(lambda: mine["fence"] not in live_fences(repo), message="the 1 s lease to expire")
    theirs = shell_lock(repo, "src/api/a.py", agent="James")
    env = {"VERSATIL_AGENT": "Marcus", "VERSATIL_FENCE": str(mine["fence"])}
    refused = commit(repo, env)
    assert refused.returncode == 1, refused
    assert (
        f"your lock on src/api/ (fence {mine['fence']}) was superseded by James "
        f"(fence {theirs['fence']}) at "
    ) in refused.stderr
    assert "your changes to those files were made without a lock" in refused.stderr
    assert "  src/api/a.py (modified)" in refused.stderr
    # Said once: the file is not listed again under James's write lock.
    assert refused.stderr.count("src/api/a.py (") == 1
    [event] = refusals("commit-refused")
    assert event.data["fence"] == mine["fence"]
    assert event.data["superseded_by"] == [{
        "agent": "James", "lease": theirs["id"], "fence": theirs["fence"],
        "files": ["src/api/a.py"],
    }]
    checked = versatil("hook", "check", "--json", cwd=repo, env=env)
    assert checked.code == 1
    shown = json.loads(checked.out)
    assert shown["fence"] == mine["fence"] and not shown["allowed"]
    assert [(s["path"], s["agent"], s["fence"]) for s in shown["superseded"]] == [
        ("src/api/a.py", "James", theirs["fence"])]
    # Once James has released, no current lock covers the file: nothing to defend.
    assert versatil("unlock", "--agent", "James", "src/api/a.py", cwd=repo).code == 0
    done = commit(repo, env)
    assert done.returncode == 0, done.stderr


def test_a_force_released_token_is_refused_even_against_its_own_agents_new_lock(
    repo: Path,
) -> None:
    old = shell_lock(repo, "src/api/", agent="Marcus")
    assert versatil("release", "--agent", "Marcus", cwd=repo).code == 0
    new = shell_lock(repo, "src/api/a.py", agent="Marcus")  # another of Marcus's shells
    edit_and_stage(repo, "src/api/a.py")
    # The guard's own rule lets Marcus commit his locked file; the stale token does not.
    stale = commit(repo, {"VERSATIL_AGENT": "Marcus", "VERSATIL_FENCE": str(old["fence"])})
    assert stale.returncode == 1
    assert f"superseded by Marcus (fence {new['fence']})" in stale.stderr
    current = commit(repo, {"VERSATIL_AGENT": "Marcus", "VERSATIL_FENCE": str(new["fence"])})
    assert current.returncode == 0, current.stderr


def test_a_live_lease_is_not_superseded_by_a_newer_lock_of_its_own(repo: Path) -> None:
    outer = shell_lock(repo, "src/api/", agent="Marcus")
    shell_lock(repo, "src/api/a.py", agent="Marcus")  # newer, overlapping, both live
    edit_and_stage(repo, "src/api/a.py", "docs/x.md")
    done = commit(repo, {"VERSATIL_AGENT": "Marcus", "VERSATIL_FENCE": str(outer["fence"])})
    assert done.returncode == 0, done.stderr


def test_only_files_the_superseded_lock_covered_are_refused(repo: Path) -> None:
    old = shell_lock(repo, "docs/", "src/api/*.py", agent="Marcus")  # a glob among them
    assert versatil("release", "--agent", "Marcus", cwd=repo).code == 0
    new = shell_lock(repo, "docs/", agent="Marcus")
    other = shell_lock(repo, "src/", agent="Marcus")  # newer too, on what it never locked
    (repo / "src/new.py").write_text("new\n")
    git(repo, "add", "src/new.py")
    edit_and_stage(repo, "docs/x.md", "src/api/b.py")
    refused = commit(repo, {"VERSATIL_AGENT": "Marcus", "VERSATIL_FENCE": str(old["fence"])})
    assert refused.returncode == 1
    # docs/x.md and src/api/b.py were under the old lock (the latter through its pattern);
    # src/new.py never was: the guard's own rule leaves it to Marcus's newer lock.
    assert (
        f"your lock on docs/ (fence {old['fence']}) was superseded by Marcus "
        f"(fence {new['fence']})"
    ) in refused.stderr
    assert (
        f"your lock on src/api/*.py (fence {old['fence']}) was superseded by Marcus "
        f"(fence {other['fence']})"
    ) in refused.stderr
    assert "  docs/x.md (modified)" in refused.stderr
    assert "  src/api/b.py (modified)" in refused.stderr
    assert "src/new.py" not in refused.stderr
    git(repo, "reset", "-q", "--", "docs/x.md", "src/api/b.py")
    done = commit(repo, {"VERSATIL_AGENT": "Marcus", "VERSATIL_FENCE": str(old["fence"])})
    assert done.returncode == 0, done.stderr


def test_a_token_whose_grant_left_the_lock_log_is_said_plainly(repo: Path) -> None:
    mine = shell_lock(repo, "src/api/", agent="Marcus")
    assert versatil("release", "--agent", "Marcus", cwd=repo).code == 0
    theirs = shell_lock(repo, "src/api/", agent="James")
    log = Path(os.environ["VERSATIL_HOME"]) / "logs" / "locks.jsonl"
    log.write_bytes(b"")  # pruned: the grant of the token is no longer there
    edit_and_stage(repo, "src/api/b.py")
    refused = commit(repo, {"VERSATIL_FENCE": str(mine["fence"])})
    assert refused.returncode == 1
    assert (
        f"your lock (fence {mine['fence']}; its grant is no longer in the lock log, so what "
        f"it covered is unknown) has ended and was superseded by James (fence "
        f"{theirs['fence']})"
    ) in refused.stderr


def test_the_strict_guard_refuses_a_superseded_token_under_no_verify(repo: Path) -> None:
    hook.install(repo, strict=True)
    mine = shell_lock(repo, "src/api/a.py", agent="Marcus")
    assert versatil("release", "--agent", "Marcus", cwd=repo).code == 0
    theirs = shell_lock(repo, "src/api/a.py", agent="Marcus")
    edit_and_stage(repo, "src/api/a.py")
    head = git(repo, "rev-parse", "HEAD")
    refused = commit(repo, {"VERSATIL_AGENT": "Marcus", "VERSATIL_FENCE": str(mine["fence"])},
                     "--no-verify")
    assert refused.returncode != 0
    assert f"superseded by Marcus (fence {theirs['fence']})" in refused.stderr
    assert git(repo, "rev-parse", "HEAD") == head


@pytest.mark.parametrize("value", ["null", "-3"])  # the rest: tests/test_fencing.py
def test_a_value_that_is_not_a_token_is_exit_2_in_one_sentence(repo: Path, value: str) -> None:
    edit_and_stage(repo, "docs/x.md")
    checked = run_versatil("hook", "check", cwd=repo, env={"VERSATIL_FENCE": value})
    assert checked.returncode == 2
    [line] = checked.stderr.splitlines()
    assert "VERSATIL_FENCE must be the fencing token of a lock" in line
    assert "Traceback" not in checked.stderr
    restored = versatil("checkpoint", "restore", "cp-nope", cwd=repo,
                        env={"VERSATIL_FENCE": value})
    assert restored.code == 2 and "VERSATIL_FENCE must be" in restored.err


def test_an_empty_token_is_no_token(repo: Path) -> None:
    edit_and_stage(repo, "docs/x.md")
    done = commit(repo, {"VERSATIL_FENCE": " "})
    assert done.returncode == 0, done.stderr


# checkpoint restore ---------------------------------------------------------------------------
def test_restore_refuses_a_superseded_token_force_or_not(repo: Path) -> None:
    made = versatil("checkpoint", "create", "-m", "before", "--json", cwd=repo)
    assert made.code == 0, made
    checkpoint = json.loads(made.out)["id"]
    mine = shell_lock(repo, "src/api/", agent="Marcus")
    (repo / "src/api/a.py").write_text("edited\n")
    assert versatil("release", "--agent", "Marcus", cwd=repo).code == 0  # Marcus runs on
    theirs = shell_lock(repo, "src/api/a.py", agent="James")
    env = {"VERSATIL_AGENT": "Marcus", "VERSATIL_FENCE": str(mine["fence"])}
    for force in ([], ["--force"]):
        refused = versatil("checkpoint", "restore", checkpoint, "--path", "src/api", *force,
                           cwd=repo, env=env)
        assert refused.code == 1, refused
        assert (
            f"your lock on src/api/ (fence {mine['fence']}) was superseded by James "
            f"(fence {theirs['fence']}) at "
        ) in refused.err
        assert len(refused.err_lines) == 1
    assert (repo / "src/api/a.py").read_text() == "edited\n"  # nothing was written
    logged = refusals("restore-refused", "checkpoints")
    assert len(logged) == 2
    assert all(e.data["fence"] == mine["fence"] for e in logged)
    assert logged[0].data["superseded_by"][0]["fence"] == theirs["fence"]
    # Without a token the caller is one without a lock: James's lock refuses, --force lifts it.
    forced = versatil("checkpoint", "restore", checkpoint, "--path", "src/api", "--force",
                      cwd=repo, env={"VERSATIL_AGENT": "Marcus"})
    assert forced.code == 0, forced
    assert (repo / "src/api/a.py").read_text() == "a\n"
