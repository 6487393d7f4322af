"""`versatil integrate` as a user runs it: output, exit codes, bad input, one real process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from reliability.support import one_line_problems, versatil, versatil_process

from versatil_fs.agents.protocol import HARNESSES


@pytest.fixture(autouse=True)
def _no_harness_homes(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLAUDE_CONFIG_DIR", "CODEX_HOME", "GEMINI_CLI_HOME", "COPILOT_HOME"):
        monkeypatch.delenv(name, raising=False)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] != ".git"}


def test_install_status_and_remove_from_the_command_line(git_repo: Path) -> None:
    settings = git_repo / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text('{\n  "model": "sonnet"\n}\n')
    before = _tree(git_repo)

    servers = git_repo / ".mcp.json"  # the MCP server too, in this repository's scope
    wired = versatil("integrate", "claude", cwd=git_repo)
    assert wired.code == 0, wired
    assert wired.out.splitlines() == [
        f"claude: wired in this repository: {settings}.",
        f"claude: MCP server wired in this repository: {servers}.",
        "  (Claude Code reads hooks when a session starts; a running session asks you to review "
        "the change in /hooks.)",
        "  (Claude Code asks you to approve a project's MCP servers before it starts them.)",
    ] and not wired.err

    again = versatil("integrate", "claude", cwd=git_repo)
    assert again.out == (f"claude: already wired in {settings}; nothing changed.\n"
                         f"claude: MCP server already wired in {servers}; nothing changed.\n")

    shown = versatil("integrate", "--status", cwd=git_repo)
    assert shown.code == 0, shown
    lines = shown.out.splitlines()
    assert lines[0].split() == ["HARNESS", "SCOPE", "STATE", "FILE"]
    assert len(lines) == 1 + 2 * len(HARNESSES) + 4  # and the MCP rows of claude, codex,
    # gemini and cursor
    claude_here = next(line for line in lines if line.startswith("claude") and "this repo" in line)
    assert claude_here.split()[3:5] == ["wired", str(settings)]

    as_json = versatil("integrate", "--status", "--json", cwd=git_repo)
    rows = json.loads(as_json.out)["wiring"]
    assert {(r["harness"], r["scope"]): r["state"] for r in rows}[("claude", "project")] == "wired"
    assert {r["state"] for r in rows if r["harness"] != "claude"} == {"not wired"}

    removed = versatil("integrate", "claude", "--remove", cwd=git_repo)
    assert removed.code == 0, removed
    assert removed.out == (f"claude: put {settings} back as it was before versatil.\n"
                           f"claude: removed {servers}, which versatil had created.\n")
    assert _tree(git_repo) == before


def test_all_says_each_harness_once(git_repo: Path) -> None:
    result = versatil("integrate", "all", "--json", cwd=git_repo)
    assert result.code == 0, result
    changes = json.loads(result.out)["changes"]
    assert {c["harness"] for c in changes} == set(HARNESSES)
    assert {c["action"] for c in changes} == {"wired"}
    text = versatil("integrate", "all", "--remove", cwd=git_repo)
    assert text.code == 0, text
    # Each harness once, its hooks and its MCP server (where it has one) one after the other.
    said = [line.split(":")[0] for line in text.out.splitlines()]
    assert list(dict.fromkeys(said)) == list(HARNESSES)
    assert "cline: removed its 6 hook files from" in text.out


@pytest.mark.parametrize(("args", "code", "mentions"), [
    (("integrate", "vscode"), 2, ["vscode", "claude"]),
    (("integrate",), 2, ["--status"]),
    (("integrate", "claude", "--status", "--remove"), 2, ["--status"]),
    (("integrate", "claude", "--bogus"), 2, ["--bogus"]),
])
def test_bad_usage_is_one_sentence_and_exit_2(
    git_repo: Path, args: tuple[str, ...], code: int, mentions: list[str]
) -> None:
    result = versatil(*args, cwd=git_repo)
    assert not one_line_problems(result, [code], mentions), result
    assert _tree(git_repo) == {"README.md": (git_repo / "README.md").read_bytes()}


def test_the_project_scope_needs_a_repository(tmp_path: Path) -> None:
    result = versatil("integrate", "codex", cwd=tmp_path)
    assert not one_line_problems(result, [2], ["not inside a git repository"]), result
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_json_is_refused_naming_it(git_repo: Path) -> None:
    hooks = git_repo / ".cursor" / "hooks.json"
    hooks.parent.mkdir()
    hooks.write_text('{"version": 1, "hooks": {')
    result = versatil("integrate", "cursor", cwd=git_repo)
    assert not one_line_problems(result, [1], [str(hooks), "not valid JSON"]), result
    assert hooks.read_text() == '{"version": 1, "hooks": {'


def test_someone_elses_cline_hook_is_left_alone(git_repo: Path) -> None:
    hook = git_repo / ".clinerules" / "hooks" / "PostToolUse"
    hook.parent.mkdir(parents=True)
    hook.write_text("#!/usr/bin/env bash\necho '{\"cancel\": false}'\n")
    hook.chmod(0o755)
    result = versatil("integrate", "cline", cwd=git_repo)
    assert not one_line_problems(result, [1], [str(hook), "agent-hook cline"]), result
    assert sorted(p.name for p in hook.parent.iterdir()) == ["PostToolUse"]


def test_user_scope_under_home(git_repo: Path) -> None:
    home = Path(os.environ["HOME"])
    result = versatil("integrate", "gemini", "--user", cwd=git_repo)
    assert result.code == 0, result
    settings = home / ".gemini" / "settings.json"
    assert result.out == f"gemini: wired in your user settings: {settings}.\n"
    entry = json.loads(settings.read_text())["hooks"]["BeforeTool"][0]
    assert entry["hooks"][0]["timeout"] % 1000 == 0  # Gemini CLI counts milliseconds
    assert not (git_repo / ".gemini").exists()
    assert versatil("integrate", "gemini", "--user", "--remove", cwd=git_repo).code == 0
    assert list(home.iterdir()) == []


def test_a_real_versatil_process_wires_every_harness_and_unwires_them(git_repo: Path) -> None:
    before = _tree(git_repo)
    wired = versatil_process("integrate", "all", cwd=git_repo, timeout=60)
    assert wired.code == 0 and not wired.err, wired
    status = versatil_process("integrate", "--status", "--json", cwd=git_repo, timeout=60)
    rows = json.loads(status.out)["wiring"]
    here = {r["harness"]: r for r in rows if r["scope"] == "project"}
    assert {h: r["state"] for h, r in here.items()} == dict.fromkeys(HARNESSES, "wired"), rows
    removed = versatil_process("integrate", "all", "--remove", cwd=git_repo, timeout=60)
    assert removed.code == 0 and not removed.err, removed
    assert _tree(git_repo) == before
    assert sorted(str(p.relative_to(git_repo)) for p in git_repo.iterdir()) == [".git",
                                                                                "README.md"]


def test_the_before_edit_timeout_covers_wait_on_edit(tmp_path: Path) -> None:
    # A harness that times a hook out lets the edit through: a claim allowed to queue for 30 s
    # needs a PreToolUse hook allowed to run longer than that.
    from integration.helpers import make_git_repo, run_versatil

    repo = make_git_repo(tmp_path / "r", {"a.py": "a\n"})
    (repo / ".versatil").write_text("[agents]\nwait_on_edit = 30\n")
    assert run_versatil("integrate", "claude", cwd=repo).returncode == 0
    hooks = json.loads((repo / ".claude" / "settings.json").read_text())["hooks"]
    assert hooks["PreToolUse"][0]["hooks"][0]["timeout"] == 40
    assert hooks["PostToolUse"][0]["hooks"][0]["timeout"] == 10
