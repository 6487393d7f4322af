"""End to end: agent sessions claiming files at the moment of the edit, inside their harness.

Each harness is a real long-lived process (tests/integration/agent_harness.py) running real
`versatil agent-hook` processes as Claude Code does; the session keeper, the lock table and the
checkpoints are the real ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.agent_harness import FakeHarness, HookResult
from integration.helpers import CLI_PRELUDE, git, make_git_repo, run_versatil, wait_for

SESSION_A = "aaaaaaaa-1111-4111-8111-111111111111"
SESSION_B = "bbbbbbbb-2222-4222-8222-222222222222"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_git_repo(tmp_path / "project", {"a.py": "a = 1\n", "b.py": "b = 1\n",
                                                  "src/c.py": "c = 1\n"})


@pytest.fixture
def harnesses(project: Path) -> Iterator[list[FakeHarness]]:
    started: list[FakeHarness] = []
    yield started
    for harness in started:
        harness.close()


def _open(harnesses: list[FakeHarness], project: Path, session: str, **kw: object) -> FakeHarness:
    harness = FakeHarness(project, session, **kw)  # type: ignore[arg-type]
    harnesses.append(harness)
    return harness


def _locks(project: Path) -> list[dict[str, object]]:
    result = run_versatil("locks", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout)["locks"])


def _held_by(project: Path) -> dict[str, str]:
    return {
        claim["resource"]["path"]: lock["agent"]  # type: ignore[index]
        for lock in _locks(project) for claim in lock["claims"]  # type: ignore[attr-defined]
    }


def test_two_sessions_race_for_one_file_and_the_second_gets_it_when_the_first_ends(
    project: Path, harnesses: list[FakeHarness]
) -> None:
    first = _open(harnesses, project, SESSION_A)
    second = _open(harnesses, project, SESSION_B)
    target = project / "a.py"

    claimed = first.before_write(target)
    assert claimed.silent, claimed  # nothing stands against it: no decision at all
    assert _held_by(project) == {"a.py": "claude:aaaaaaaa"}
    lock = _locks(project)[0]
    assert lock["session"] == f"claude {SESSION_A}"

    denied = second.before_write(target)
    assert denied.code == 0
    reason = denied.denied
    assert reason is not None, denied
    assert "a.py" in reason and "claude:aaaaaaaa" in reason and "versatil locks" in reason
    # The same session asks again (a second edit of its own file): still silent.
    assert first.before_write(target, tool="Edit").silent

    assert first.end().silent
    assert _held_by(project) == {}
    assert second.before_write(target).silent
    assert _held_by(project) == {"a.py": "claude:bbbbbbbb"}


def test_a_killed_harness_frees_its_claims(
    project: Path, harnesses: list[FakeHarness]
) -> None:
    first = _open(harnesses, project, SESSION_A)
    second = _open(harnesses, project, SESSION_B)
    assert first.before_write(project / "a.py").silent
    assert second.before_write(project / "a.py").denied

    first.kill()
    # The keeper watches the harness through a pidfd and ends with it; the kernel drops the
    # flock that proved the claim alive. (bench/ measures how fast; here only that it ends.)
    wait_for(lambda: not _locks(project), timeout=10, message="the killed session's claim to end")
    assert second.before_write(project / "a.py").silent


def test_a_directory_lock_from_a_shell_denies_an_edit_below_it(
    project: Path, harnesses: list[FakeHarness]
) -> None:
    assert run_versatil("lock", "--agent", "Marcus", "src/", cwd=project).returncode == 0
    session = _open(harnesses, project, SESSION_A)
    result = session.before_write(project / "src" / "c.py")
    reason = result.denied
    assert reason is not None and "src/c.py" in reason and "Marcus" in reason
    assert "lock on src" in reason
    assert run_versatil("unlock", "--agent", "Marcus", "src/", cwd=project).returncode == 0
    assert session.before_write(project / "src" / "c.py").silent


def test_paths_outside_the_repository_are_left_alone(
    project: Path, tmp_path: Path, harnesses: list[FakeHarness]
) -> None:
    session = _open(harnesses, project, SESSION_A)
    assert session.before_write(tmp_path / "elsewhere.txt").silent
    assert session.before_write(project / ".git" / "config").silent
    assert _locks(project) == []


def test_restore_by_agent_rolls_back_exactly_one_sessions_edits(
    project: Path, harnesses: list[FakeHarness]
) -> None:
    made = run_versatil("checkpoint", "create", "-m", "before the agents", "--json", cwd=project)
    assert made.returncode == 0, made.stderr
    checkpoint = json.loads(made.stdout)["id"]
    first = _open(harnesses, project, SESSION_A)
    second = _open(harnesses, project, SESSION_B)
    assert first.edit(project / "a.py", "a = 'first'\n").silent
    assert second.edit(project / "b.py", "b = 'second'\n").silent
    assert first.end().silent

    restored = run_versatil(
        "checkpoint", "restore", checkpoint, "--agent", "claude:aaaaaaaa", cwd=project
    )
    assert restored.returncode == 0, restored.stderr
    assert (project / "a.py").read_text() == "a = 1\n"
    assert (project / "b.py").read_text() == "b = 'second'\n"


def test_a_shell_command_that_writes_a_held_file_is_reported_and_not_attributed(
    project: Path, harnesses: list[FakeHarness]
) -> None:
    holder = _open(harnesses, project, SESSION_A)
    shell = _open(harnesses, project, SESSION_B)
    assert holder.before_write(project / "a.py").silent
    command = "echo x >> a.py; echo y >> b.py"
    assert shell.before_bash(command).silent
    (project / "a.py").write_text("clobbered\n")
    (project / "b.py").write_text("b = 2\n")
    after = shell.after_bash(command)
    assert after.code == 0
    assert "a.py (claude:aaaaaaaa)" in after.context, after
    assert "b.py" not in after.context
    log = run_versatil("logs", "collision-detection", "--json", cwd=project)
    assert log.returncode == 0, log.stderr
    records = [json.loads(line) for line in log.stdout.splitlines() if line.strip()]
    modified = [r for r in records if r["kind"] == "files-modified"]
    assert [(r["agent"], r["data"]["paths"]) for r in modified] == [("claude:bbbbbbbb", ["b.py"])]
    collisions = [r for r in records if r["kind"] == "collision"]
    assert [(r["agent"], r["data"]["path"], r["data"]["holder"]) for r in collisions] == [
        ("claude:bbbbbbbb", "a.py", "claude:aaaaaaaa")
    ]


def test_session_start_names_the_held_files_and_stamps_the_agent_for_its_shell(
    project: Path, tmp_path: Path, harnesses: list[FakeHarness]
) -> None:
    holder = _open(harnesses, project, SESSION_A)
    assert holder.before_write(project / "a.py").silent
    newcomer = _open(harnesses, project, SESSION_B)
    env_file = tmp_path / "claude-env.sh"
    env_file.write_text("")
    started = newcomer.start(env_file=env_file)
    assert started.code == 0
    assert "a.py (claude:aaaaaaaa)" in started.context
    assert env_file.read_text() == "export VERSATIL_AGENT=claude:bbbbbbbb\n"
    # Its own commit passes the guard as itself: the guard refuses another agent's file only.
    assert run_versatil("hook", "install", cwd=project).returncode == 0
    (project / "b.py").write_text("b = 3\n")
    git(project, "add", "b.py")
    env = {**os.environ, "VERSATIL_AGENT": "claude:bbbbbbbb"}
    done = subprocess.run(
        ["git", "commit", "-qm", "b"], cwd=project, env=env, capture_output=True, text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_versatil_agent_in_the_harness_environment_names_the_agent(
    project: Path, harnesses: list[FakeHarness]
) -> None:
    session = _open(harnesses, project, SESSION_A, env={"VERSATIL_AGENT": "Dana"})
    assert session.before_write(project / "a.py").silent
    assert _held_by(project) == {"a.py": "Dana"}


@pytest.mark.parametrize(
    "payload",
    [
        "not json at all",
        "[1, 2, 3]",
        json.dumps({"hook_event_name": "PreToolUse"}),  # no session_id, no tool
        json.dumps({"session_id": 7, "hook_event_name": "PreToolUse", "tool_name": "Write",
                    "tool_input": {"file_path": 3}, "cwd": "/"}),
        b'{"session_id": "\xff\xfe", "hook_event_name": "PreToolUse"}',
    ],
    ids=["not-json", "not-an-object", "fields-missing", "wrong-types", "not-utf8"],
)
def test_bad_payloads_get_the_fail_policy_never_a_traceback(
    project: Path, harnesses: list[FakeHarness], payload: str | bytes
) -> None:
    session = _open(harnesses, project, SESSION_A)
    result = session.send(payload)
    assert result.code == 0, result
    assert "Traceback" not in result.stdout + result.stderr
    assert "versatil" in result.stdout + result.stderr  # the warning says who let it through
    assert _locks(project) == []


def test_on_error_deny_refuses_what_cannot_be_checked(
    project: Path, harnesses: list[FakeHarness]
) -> None:
    (project / ".versatil").write_text("[agents]\non_error = \"deny\"\n")
    session = _open(harnesses, project, SESSION_A)
    result = session.send("not json at all")
    assert "Traceback" not in result.stdout + result.stderr
    # Unreadable, so no event to answer in its own form: exit 2 and the reason on stderr, which
    # Claude Code reads as a refusal (https://code.claude.com/docs/en/hooks, "Exit code 2").
    assert result.code == 2, result
    assert "on_error" in result.stderr


def test_a_huge_payload_is_refused_without_reading_it_whole(
    project: Path, harnesses: list[FakeHarness]
) -> None:
    session = _open(harnesses, project, SESSION_A)
    huge = json.dumps({
        "session_id": SESSION_A, "cwd": str(project), "hook_event_name": "PreToolUse",
        "tool_name": "Write",
        "tool_input": {"file_path": str(project / "a.py"), "content": "x" * (17 << 20)},
    })
    result = session.send(huge)
    assert result.code == 0 and "Traceback" not in result.stderr
    assert _locks(project) == []


def test_without_a_harness_process_the_hook_decides_in_process_with_a_lifetime(
    project: Path, harnesses: list[FakeHarness]
) -> None:
    # VERSATIL_HARNESS_PID naming no process: no keeper can stand for the session, so the
    # claims are shell leases carrying the session, ended by SessionEnd (or their lifetime).
    env = {"VERSATIL_HARNESS_PID": "not-a-pid"}
    first = _open(harnesses, project, SESSION_A, env=env)
    second = _open(harnesses, project, SESSION_B, env=env)
    assert first.before_write(project / "a.py").silent
    locks = _locks(project)
    assert [(lock["owner"], lock["session"]) for lock in locks] == [
        ("shell", f"claude {SESSION_A}")
    ]
    assert second.before_write(project / "a.py").denied
    # A second edit of the same file by the same session takes no second lease.
    assert first.before_write(project / "a.py", tool="Edit").silent
    assert len(_locks(project)) == 1
    assert first.end().silent
    assert _locks(project) == []


CODEX_PATCH = (
    # The apply_patch grammar Codex sends in tool_input.command
    # (https://developers.openai.com/codex/hooks; tests/agents/payloads/codex/).
    "*** Begin Patch\n"
    "*** Add File: docs/release notes.md\n+# Release notes\n"
    "*** Update File: src/cart.py\n*** Move to: src/basket.py\n@@ def total():\n"
    "-    return 0\n+    return 1\n"
    "*** Delete File: src/legacy.py\n"
    "*** Update File: README.md\n@@\n-Shop\n+Shop (basket)\n"
    "*** End Patch\n"
)


def test_a_codex_patch_claims_every_file_it_adds_updates_deletes_and_moves(
    tmp_path: Path, harnesses: list[FakeHarness]
) -> None:
    shop = make_git_repo(tmp_path / "shop", {
        "src/cart.py": "def total():\n    return 0\n", "src/legacy.py": "old\n",
        "README.md": "Shop\n",
    })
    assert run_versatil("lock", "--agent", "Marcus", "src/basket.py", cwd=shop).returncode == 0
    codex = _open(harnesses, shop, "019a6c0e-5f0d-7c52-b2e4-1b8a2f0e9c11", harness="codex")

    def patch() -> HookResult:
        return codex.call("PreToolUse", tool_name="apply_patch",
                          tool_input={"command": CODEX_PATCH}, turn_id="019a6c0e-6a11")

    denied = patch()
    assert denied.code in (0, 2), denied
    text = denied.stdout + denied.stderr
    assert "src/basket.py" in text and "Marcus" in text
    assert _held_by(shop) == {"src/basket.py": "Marcus"}  # all or nothing: nothing claimed

    assert run_versatil("unlock", "--agent", "Marcus", "src/basket.py", cwd=shop).returncode == 0
    assert patch().silent
    assert _held_by(shop) == {
        path: "codex:019a6c0e" for path in
        ("README.md", "docs/release notes.md", "src/basket.py", "src/cart.py", "src/legacy.py")
    }


def test_the_demo_chapter_shows_a_denied_session_handed_the_file(tmp_path: Path) -> None:
    from versatil_fs.demo.agents import chapter_sessions
    from versatil_fs.demo.stage import Demo, make_repo

    make_repo(tmp_path / "demo")
    lines: list[str] = []
    demo = Demo(repo=tmp_path / "demo", out=lines.append)
    try:
        chapter_sessions(demo)
    finally:
        for proc in demo.processes:
            if proc.poll() is None:
                proc.kill()
    text = "\n".join(lines)
    assert "versatil denied this edit: src/api/auth.py" in text
    assert "claude:1a2b3c4d holds it" in text
    assert text.rstrip().endswith("claude:5e6f7a8b tries again: claimed, the edit goes ahead.")


def _keeper_pids(harness_pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"versatil_fs.agents.keeper" in argv and str(harness_pid).encode() in argv:
            found.append(int(entry))
    return found


def test_a_killed_keeper_loses_its_claims_and_the_next_hook_starts_another(
    project: Path, harnesses: list[FakeHarness]
) -> None:
    session = _open(harnesses, project, SESSION_A)
    assert session.before_write(project / "a.py").silent
    [keeper] = _keeper_pids(session.pid)
    os.kill(keeper, 9)
    # No claim outlives the process that proved it alive: nothing is stuck.
    wait_for(lambda: not _locks(project), timeout=10, message="the dead keeper's claims to end")
    assert session.before_write(project / "a.py").silent
    assert _held_by(project) == {"a.py": "claude:aaaaaaaa"}
    assert len(_keeper_pids(session.pid)) == 1


def test_an_agents_own_commit_passes_the_guard_as_its_session_without_versatil_agent(
    project: Path, harnesses: list[FakeHarness]
) -> None:
    # Codex gives a SessionStart hook no way to set the agent's environment: its `git commit`
    # (run by the agent, below the harness) is named by the session keeper instead.
    assert run_versatil("hook", "install", cwd=project).returncode == 0
    mine = _open(harnesses, project, SESSION_A, harness="codex")
    other = _open(harnesses, project, SESSION_B)
    assert mine.call("PreToolUse", tool_name="apply_patch", tool_input={
        "command": "*** Begin Patch\n*** Update File: a.py\n@@\n-a = 1\n+a = 2\n*** End Patch\n",
    }).silent
    assert other.before_write(project / "b.py").silent
    (project / "a.py").write_text("a = 2\n")
    (project / "b.py").write_text("b = 2\n")
    git(project, "add", "a.py")
    env = {k: v for k, v in os.environ.items() if k != "VERSATIL_AGENT"}
    own = mine.run(["git", "commit", "-qm", "a"], env=env)
    assert own.code == 0, own
    git(project, "add", "b.py")
    theirs = mine.run(["git", "commit", "-qm", "b"], env=env)
    assert theirs.code == 1 and "claude:bbbbbbbb" in theirs.stderr, theirs


def test_agent_hook_run_by_hand_explains_itself(project: Path) -> None:
    import pty

    assert run_versatil("agent-hook", cwd=project).returncode == 2
    unknown = run_versatil("agent-hook", "vim", cwd=project, input="{}")
    assert unknown.returncode == 2 and "name one harness" in unknown.stderr
    # At a terminal (a person typing the command) it says what it is instead of waiting.
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.chdir(project)
        os.execv(sys.executable, [sys.executable, "-c", CLI_PRELUDE, "agent-hook", "claude"])
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2
    assert b"not meant to be run by hand" in output


# One documented "before a file edit" payload per harness (tests/agents/payloads/, each citing
# the harness's page), moved into this test's repository and sessions by plain text
# replacement: everything else is byte for byte what the harness documents. (Codex's patch
# paths are exercised by test_a_codex_patch_claims_every_file_...)
DOCUMENTED_EDITS = {
    "claude": "pre_tool_use_write",
    "gemini": "before_tool_write_file",
    "cursor": "pre_tool_use_write",
    "cline": "pre_tool_use_write_to_file",
    "copilot": "pre_tool_use_edit",
}


@pytest.mark.parametrize("harness", sorted(DOCUMENTED_EDITS))
def test_each_harness_claims_and_denies_with_its_documented_payload(
    project: Path, harnesses: list[FakeHarness], harness: str
) -> None:
    from agents.harness_cases import payload

    from versatil_fs.agents.harnesses import parse

    documented = payload(harness, DOCUMENTED_EDITS[harness])
    text = json.dumps(documented)
    call = parse(harness, text.encode(), {}, "/")
    assert call.event == "pre-edit" and call.paths, call

    def moved(session: str) -> str:
        out = text
        for path in call.paths:  # the paths first: they may start with the cwd
            out = out.replace(json.dumps(path)[1:-1], str(project / "a.py")
                              if path.startswith("/") else "a.py")
        out = out.replace(call.cwd, str(project))
        assert call.session_id in out, "the documented session id must appear in the payload"
        return out.replace(call.session_id, session)

    first_id, second_id = "11111111" + call.session_id[8:], "22222222" + call.session_id[8:]
    first = _open(harnesses, project, first_id, harness=harness)
    second = _open(harnesses, project, second_id, harness=harness)
    claimed = first.send(moved(first_id))
    assert claimed.silent, claimed
    holder = f"{harness}:11111111"
    assert _held_by(project) == {"a.py": holder}
    denied = second.send(moved(second_id))
    assert not denied.silent and denied.code in (0, 2), denied
    said = denied.stdout + denied.stderr
    assert "versatil denied this edit" in said and holder in said, denied


@pytest.mark.parametrize(("setting", "agent"), [
    ("", "claude:aaaaaaaa"), ('subagents = "own"\n', "claude:aaaaaaaa/5f3e9a1c"),
])
def test_a_subagent_is_its_sessions_agent_unless_configured_otherwise(
    project: Path, harnesses: list[FakeHarness], setting: str, agent: str
) -> None:
    if setting:
        (project / ".versatil").write_text("[agents]\n" + setting)
    session = _open(harnesses, project, SESSION_A)
    # Inside a subagent Claude Code adds `agent_id` (and `agent_type`) to the payload
    # (https://code.claude.com/docs/en/hooks, "Common input fields").
    result = session.call(
        "PreToolUse", tool_name="Write", agent_id="5f3e9a1c-77aa-4bbb-8ccc-0123456789ab",
        agent_type="general-purpose",
        tool_input={"file_path": str(project / "a.py"), "content": "x"},
    )
    assert result.silent, result
    assert _held_by(project) == {"a.py": agent}


def test_a_configured_name_per_harness_names_the_agent(
    project: Path, harnesses: list[FakeHarness]
) -> None:
    (project / ".versatil").write_text('[agents]\nnames.claude = "Dana"\n')
    session = _open(harnesses, project, SESSION_A)
    assert session.before_write(project / "a.py").silent
    assert _held_by(project) == {"a.py": "Dana"}
