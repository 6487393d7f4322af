"""`versatil integrate` as the Python API does it: each harness's hook file, on real files.

Every harness gets a config that already has other hooks, copied from that harness's documented
examples (cited at each one): install keeps them (and the key order, and the file's layout and
mode), a second install writes nothing, remove puts back the very bytes.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from versatil_fs.agents import hook_config as cfg
from versatil_fs.agents import integrate as wiring
from versatil_fs.agents.harnesses import HOOKS
from versatil_fs.errors import Refused


@pytest.fixture(autouse=True)
def _no_harness_homes(monkeypatch: pytest.MonkeyPatch) -> None:
    # The harnesses' own overrides of their home directories: a developer's real one must never
    # be the one a test writes to.
    for name in ("CLAUDE_CONFIG_DIR", "CODEX_HOME", "GEMINI_CLI_HOME", "COPILOT_HOME"):
        monkeypatch.delenv(name, raising=False)


# Configs as the harnesses document them, with hooks of their own -------------------------------
DOCUMENTED: dict[str, tuple[str, str]] = {
    # https://code.claude.com/docs/en/hooks ("Configuration", and the Bash-logging and
    # formatting examples of https://code.claude.com/docs/en/hooks-guide), beside settings.
    "claude": (".claude/settings.json", """\
{
  "permissions": {
    "allow": [
      "Bash(npm run lint)"
    ]
  },
  "hooks": {
    "PreToolUse": [
      {
        "matcher": "Bash",
        "hooks": [
          {
            "type": "command",
            "command": "jq -r '.tool_input.command' >> ~/.claude/bash-command-log.txt"
          }
        ]
      }
    ],
    "PostToolUse": [
      {
        "matcher": "Edit|Write",
        "hooks": [
          {
            "type": "command",
            "command": "\\"$CLAUDE_PROJECT_DIR\\"/.claude/hooks/format.sh"
          }
        ]
      }
    ]
  },
  "model": "sonnet"
}
"""),
    # https://developers.openai.com/codex/hooks (the hooks.json example: SessionStart with a
    # statusMessage, a Bash PreToolUse policy, Stop).
    "codex": (".codex/hooks.json", """\
{
  "hooks": {
    "SessionStart": [
      {
        "matcher": "startup|resume",
        "hooks": [
          {
            "type": "command",
            "command": "python3 ~/.codex/hooks/session_start.py",
            "statusMessage": "Loading session notes"
          }
        ]
      }
    ],
    "PreToolUse": [
      {
        "matcher": "Bash",
        "hooks": [
          {
            "type": "command",
            "command": "/usr/bin/python3 \\"$(git rev-parse --show-toplevel)/.codex/policy.py\\"",
            "statusMessage": "Checking Bash command"
          }
        ]
      }
    ],
    "Stop": [
      {
        "hooks": [
          {
            "type": "command",
            "command": "/usr/bin/python3 \\"$(git rev-parse --show-toplevel)/.codex/stop.py\\"",
            "timeout": 30
          }
        ]
      }
    ]
  }
}
"""),
    # https://geminicli.com/docs/hooks (the "Configuration schema" example), beside general
    # settings, indented with four spaces as Gemini CLI's own writes are not.
    "gemini": (".gemini/settings.json", """\
{
    "general": {
        "vimMode": true
    },
    "hooks": {
        "BeforeTool": [
            {
                "matcher": "write_file|replace",
                "hooks": [
                    {
                        "name": "security-check",
                        "type": "command",
                        "command": "$GEMINI_PROJECT_DIR/.gemini/hooks/security.sh",
                        "timeout": 5000
                    }
                ]
            }
        ]
    }
}
"""),
    # https://cursor.com/docs/agent/hooks (hooks.json: version 1, a shell audit and a formatter).
    "cursor": (".cursor/hooks.json", """\
{
  "version": 1,
  "hooks": {
    "beforeShellExecution": [
      {
        "command": "./hooks/audit.sh"
      }
    ],
    "afterFileEdit": [
      {
        "command": "./hooks/format.sh"
      }
    ]
  }
}
"""),
    # https://docs.github.com/en/copilot/reference/hooks-configuration (the preToolUse example:
    # bash + powershell, cwd, timeoutSec), in versatil's own file name, tab-indented.
    "copilot": (".github/hooks/versatil.json", """\
{
\t"version": 1,
\t"hooks": {
\t\t"preToolUse": [
\t\t\t{
\t\t\t\t"type": "command",
\t\t\t\t"bash": "./scripts/security-check.sh",
\t\t\t\t"powershell": "./scripts/security-check.ps1",
\t\t\t\t"cwd": "scripts",
\t\t\t\t"timeoutSec": 15
\t\t\t}
\t\t]
\t}
}"""),
}


def _write(path: Path, text: str, mode: int = 0o640) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path.read_bytes()


def _tree(root: Path) -> list[str]:
    """Every path below ``root`` but .git's."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.relative_to(root).parts[0] != ".git")


def _ours(doc: dict[str, object], harness: str) -> dict[str, list[str]]:
    return cfg.commands(doc, harness, cfg.FORMATS[harness])


@pytest.mark.parametrize("harness", sorted(DOCUMENTED))
def test_install_keeps_the_documented_hooks_and_remove_puts_back_the_bytes(
    git_repo: Path, harness: str
) -> None:
    rel, text = DOCUMENTED[harness]
    path = git_repo / rel
    original = _write(path, text)
    before = json.loads(original)

    [change] = wiring.install([harness], cwd=git_repo)
    assert change.action == "wired" and change.path == str(path)
    after = json.loads(path.read_bytes())
    # Every hook the user had is still there, in its place; top-level keys keep their order.
    assert list(after) == list(before) + [k for k in after if k not in before]
    for event, entries in before["hooks"].items():
        kept = [e for e in after["hooks"][event] if not _ours({"hooks": {event: [e]}}, harness)]
        assert kept == entries, event
    command = wiring.hook_command(harness)
    assert _ours(after, harness) == {spec.event: [command] for spec in HOOKS[harness]}
    if harness == "copilot":  # which event a call is for travels in the entry's env
        envs = {event: [h.get("env", {}) for h in entries if cfg.is_ours(h.get("bash"), harness)]
                for event, entries in after["hooks"].items()}
        assert envs == {spec.event: [dict(spec.env)] for spec in HOOKS[harness]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    # The layout is the file's own: its indent, and no final newline where it had none.
    assert path.read_bytes().endswith(b"\n") == original.endswith(b"\n")
    indent = original.split(b"\n")[1][: len(original.split(b"\n")[1]) -
                                       len(original.split(b"\n")[1].lstrip())]
    assert path.read_bytes().split(b"\n")[1].startswith(indent)
    assert not path.read_bytes().split(b"\n")[1].startswith(indent + indent[:1])

    installed = path.read_bytes()
    inode = path.stat().st_ino
    [again] = wiring.install([harness], cwd=git_repo)
    assert again.action == "unchanged"
    assert path.read_bytes() == installed and path.stat().st_ino == inode  # not even rewritten

    [removed] = wiring.remove([harness], cwd=git_repo)
    assert removed.action == "restored"
    assert path.read_bytes() == original
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize("harness", ["claude", "codex", "gemini", "cursor", "copilot", "cline"])
def test_a_file_versatil_created_goes_with_its_directories(git_repo: Path, harness: str) -> None:
    (git_repo / ".github").mkdir()  # the user's: it stays
    (git_repo / ".github" / "workflows.yml").write_text("on: push\n")
    # Cline's rules directory (https://docs.cline.bot/customization/cline-rules), the user's too.
    (git_repo / ".clinerules").mkdir()
    (git_repo / ".clinerules" / "typescript.md").write_text("Use TypeScript.\n")
    before = _tree(git_repo)
    changes = wiring.install([harness], cwd=git_repo)
    paths = [Path(c.path) for c in changes]
    assert all(p.is_file() for p in paths)
    if harness == "cline":
        assert sorted(p.name for p in paths) == sorted(s.event for s in HOOKS["cline"])
        assert all(os.access(p, os.X_OK) for p in paths)
        assert all(cfg.cline_command(p.read_bytes()) == wiring.hook_command("cline")
                   for p in paths)
    wiring.remove([harness], cwd=git_repo)
    assert _tree(git_repo) == before


def test_remove_after_the_user_edited_the_file_keeps_their_edit(git_repo: Path) -> None:
    rel, text = DOCUMENTED["claude"]
    path = git_repo / rel
    _write(path, text)
    wiring.install(["claude"], cwd=git_repo)
    doc = json.loads(path.read_text())
    doc["hooks"]["Stop"] = [{"hooks": [{"type": "command", "command": "say done"}]}]
    doc["model"] = "opus"
    path.write_text(json.dumps(doc, indent=2) + "\n")

    [change] = wiring.remove(["claude"], cwd=git_repo)
    assert change.action == "cleaned" and "only versatil's entries" in change.message
    left = json.loads(path.read_text())
    expected = json.loads(text)
    expected["hooks"]["Stop"] = doc["hooks"]["Stop"]
    expected["model"] = "opus"
    assert cfg.same(left, expected)


def test_an_edit_between_two_installs_is_not_undone_by_remove(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rel, text = DOCUMENTED["cursor"]
    path = git_repo / rel
    _write(path, text)
    wiring.install(["cursor"], cwd=git_repo)
    doc = json.loads(path.read_text())
    doc["hooks"]["stop"] = [{"command": "./hooks/audit-stop.sh"}]
    path.write_text(json.dumps(doc, indent=2) + "\n")
    # versatil moved: the second install rewires to the new path over the user's edit.
    monkeypatch.setattr(wiring, "hook_command", lambda h: f"/new/bin/versatil agent-hook {h}")
    [change] = wiring.install(["cursor"], cwd=git_repo)
    assert change.action == "rewired"
    wiring.remove(["cursor"], cwd=git_repo)
    left = json.loads(path.read_text())
    assert left["hooks"]["stop"] == [{"command": "./hooks/audit-stop.sh"}]
    assert not _ours(left, "cursor")


def test_an_older_versatil_entry_is_replaced_where_it_was(git_repo: Path) -> None:
    path = git_repo / ".claude" / "settings.json"
    old = "/old/venv/bin/versatil agent-hook claude"
    doc = {"hooks": {"PreToolUse": [
        {"matcher": "Bash", "hooks": [{"type": "command", "command": "lint.sh"}]},
        {"matcher": "Edit|Write", "hooks": [{"type": "command", "command": old}]},
        {"matcher": "Read", "hooks": [{"type": "command", "command": "audit.sh"}]},
    ]}}
    _write(path, json.dumps(doc, indent=2) + "\n")
    [change] = wiring.install(["claude"], cwd=git_repo)
    assert change.action == "rewired" and old in change.message
    groups = json.loads(path.read_text())["hooks"]["PreToolUse"]
    assert [g["hooks"][0]["command"] for g in groups] == [
        "lint.sh", wiring.hook_command("claude"), "audit.sh"]
    assert old not in path.read_text()


def test_without_a_record_remove_takes_out_only_versatils_entries(
    git_repo: Path, versatil_home: Path
) -> None:
    rel, text = DOCUMENTED["codex"]
    path = git_repo / rel
    _write(path, text)
    wiring.install(["codex"], cwd=git_repo)
    for record in (versatil_home / "integrations").glob("*.json"):
        record.unlink()  # a wiped state directory, or a file wired by hand
    [change] = wiring.remove(["codex"], cwd=git_repo)
    assert change.action == "cleaned"
    assert cfg.same(json.loads(path.read_text()), json.loads(text))


def test_a_damaged_record_is_set_aside_and_remove_still_cleans(
    git_repo: Path, versatil_home: Path
) -> None:
    wiring.install(["gemini"], cwd=git_repo)
    [record] = (versatil_home / "integrations").glob("*.json")
    record.write_text("{not json")
    [change] = wiring.remove(["gemini"], cwd=git_repo)
    assert "damaged" in change.message
    assert not _ours(json.loads((git_repo / ".gemini/settings.json").read_text()), "gemini")


@pytest.mark.parametrize(("harness", "text", "words"), [
    ("claude", '{"hooks": {"PreToolUse": [}\n', "not valid JSON"),
    ("gemini", '{\n  // my settings\n  "general": {"vimMode": true}\n}\n', "has comments"),
    ("codex", '{"hooks": {}, "hooks": {"Stop": []}}\n', "twice"),
    ("cursor", '[1, 2]\n', "not a JSON object"),
    ("copilot", '{"version": 1, "hooks": []}\n', '"hooks" is not a JSON object'),
    ("claude", '{"hooks": {"PreToolUse": {"matcher": "Bash"}}}\n', "is not a list"),
])
def test_a_file_versatil_cannot_rewrite_losslessly_is_refused_untouched(
    git_repo: Path, versatil_home: Path, harness: str, text: str, words: str
) -> None:
    path = git_repo / DOCUMENTED[harness][0]
    original = _write(path, text)
    with pytest.raises(Refused) as refused:
        wiring.install([harness], cwd=git_repo)
    assert words in str(refused.value) and str(path) in str(refused.value)
    assert path.read_bytes() == original
    assert not list((versatil_home / "integrations").glob("*.json"))
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file


def test_all_is_refused_whole_when_one_harness_must_be(git_repo: Path) -> None:
    hook = git_repo / ".clinerules" / "hooks" / "PreToolUse"
    _write(hook, "#!/bin/sh\necho '{\"cancel\": false}'\n", 0o755)
    before = _tree(git_repo)
    with pytest.raises(Refused) as refused:
        wiring.install(wiring.harnesses_named("all"), cwd=git_repo)
    assert "not versatil's" in str(refused.value) and "agent-hook cline" in str(refused.value)
    assert _tree(git_repo) == before


def test_a_symlinked_config_is_refused(git_repo: Path, tmp_path: Path) -> None:
    real = tmp_path / "dotfiles-settings.json"
    real.write_text("{}\n")
    (git_repo / ".claude").mkdir()
    (git_repo / ".claude" / "settings.json").symlink_to(real)
    with pytest.raises(Refused, match="symlink"):
        wiring.install(["claude"], cwd=git_repo)
    assert real.read_text() == "{}\n"


def test_clinerules_as_a_file_is_refused(git_repo: Path) -> None:
    (git_repo / ".clinerules").write_text("Always write tests.\n")
    with pytest.raises(Refused, match="not a directory"):
        wiring.install(["cline"], cwd=git_repo)
    assert (git_repo / ".clinerules").read_text() == "Always write tests.\n"


def test_user_scope_writes_under_home_and_honours_the_harness_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Path(os.environ["HOME"])
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir()
    monkeypatch.setenv("CODEX_HOME", str(codex_home))
    changes = wiring.install(wiring.harnesses_named("all"), user=True, cwd=tmp_path)
    wrote = {c.path for c in changes}
    assert str(home / ".claude" / "settings.json") in wrote
    assert str(codex_home / "hooks.json") in wrote
    assert str(home / ".gemini" / "settings.json") in wrote
    assert str(home / ".cursor" / "hooks.json") in wrote
    assert str(home / "Documents" / "Cline" / "Hooks" / "PreToolUse") in wrote
    assert str(home / ".copilot" / "hooks" / "versatil.json") in wrote
    states = {(w.harness, w.scope): w.state for w in wiring.status(cwd=tmp_path)}
    assert all(states[(h, "user")] == "wired" for h in wiring.harnesses_named("all"))
    assert all(states[(h, "project")] == "not wired" for h in wiring.harnesses_named("all"))
    wiring.remove(wiring.harnesses_named("all"), user=True, cwd=tmp_path)
    assert sorted(p.name for p in home.iterdir()) == []  # ~/Documents too: versatil made it
    assert list(codex_home.iterdir()) == []


def test_status_tells_wired_stale_and_not_wired(git_repo: Path) -> None:
    wiring.install(["claude"], cwd=git_repo)
    gone = "/nowhere/bin/versatil agent-hook codex"
    _write(git_repo / ".codex" / "hooks.json", json.dumps({"hooks": {"PreToolUse": [
        {"hooks": [{"type": "command", "command": gone}]}]}}))
    _write(git_repo / ".cursor" / "hooks.json", "{oops")
    rows = {(w.harness, w.scope): w for w in wiring.status(cwd=git_repo)}
    assert rows[("claude", "project")].state == "wired"
    assert rows[("codex", "project")].state == "stale"
    assert "/nowhere/bin/versatil" in rows[("codex", "project")].detail
    assert rows[("cursor", "project")].state == "unreadable"
    assert rows[("gemini", "project")].state == "not wired"
    assert rows[("claude", "user")].state == "not wired"


def test_hook_command_runs_this_versatil_by_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "my bin" / "versatil"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr("sys.argv", [str(script), "integrate", "claude"])
    assert wiring.hook_command("claude") == f"'{script}' agent-hook claude"
    monkeypatch.setattr("sys.argv", ["-c"])
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    command = wiring.hook_command("codex")
    assert command.endswith("-m versatil_fs agent-hook codex") and os.path.isabs(command.split()[0])


@pytest.mark.parametrize("text", [
    '{"a": 1, "b": [1, 2]}',  # one line, default separators
    '{"a":1,"b":[1,2]}\n',  # compact
    '{\n    "a": "caf\\u00e9"\n}\n',  # ASCII escapes, four spaces
    '{\n\t"a": "café"\n}',  # tab, raw UTF-8, no final newline
    '{\r\n  "a": [\r\n    "x\\ny"\r\n  ]\r\n}\r\n',  # saved on Windows; a newline in a string
])
def test_the_layout_is_found_again_exactly(text: str) -> None:
    data = text.encode()
    doc = json.loads(data)
    assert cfg.encode(doc, cfg.detect_style(data, doc)) == data


def test_is_ours_needs_agent_hook_and_the_harness() -> None:
    assert cfg.is_ours("'/a b/versatil' agent-hook claude", "claude")
    assert cfg.is_ours("/usr/bin/python3 -m versatil_fs agent-hook gemini", "gemini")
    assert not cfg.is_ours("/bin/versatil agent-hook codex", "claude")
    assert not cfg.is_ours("echo agent-hook", "claude")
    assert not cfg.is_ours(None, "claude")


def test_a_failed_rewrite_keeps_the_record_that_restores_the_bytes(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rel, text = DOCUMENTED["claude"]
    path = git_repo / rel
    original = _write(path, text)
    wiring.install(["claude"], cwd=git_repo)
    monkeypatch.setattr(wiring, "hook_command", lambda h: f"/new/bin/versatil agent-hook {h}")

    def full_disk(*args: object, **kwargs: object) -> None:
        raise Refused(f"Could not write {path}: the disk is full (nothing was changed).")

    with monkeypatch.context() as patch:
        patch.setattr(wiring.files, "write", full_disk)
        with pytest.raises(Refused, match="disk is full"):
            wiring.install(["claude"], cwd=git_repo)
    [change] = wiring.remove(["claude"], cwd=git_repo)
    assert change.action == "restored" and path.read_bytes() == original


def test_cline_hook_files_are_executable_whatever_the_umask(git_repo: Path) -> None:
    old = os.umask(0o177)
    try:
        changes = wiring.install(["cline"], cwd=git_repo)
    finally:
        os.umask(old)
    assert {stat.S_IMODE(Path(c.path).stat().st_mode) for c in changes} == {0o700}


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to someone else")
def test_a_rewrite_by_root_keeps_the_files_owner(git_repo: Path) -> None:
    rel, text = DOCUMENTED["gemini"]
    path = git_repo / rel
    _write(path, text)
    os.chown(path, 4321, 8765)
    wiring.install(["gemini"], cwd=git_repo)
    assert (path.stat().st_uid, path.stat().st_gid) == (4321, 8765)
    wiring.remove(["gemini"], cwd=git_repo)
    assert (path.stat().st_uid, path.stat().st_gid) == (4321, 8765)
    assert path.read_text() == text


def test_remove_all_is_refused_whole_when_one_file_went_bad(git_repo: Path) -> None:
    wiring.install(wiring.harnesses_named("all"), cwd=git_repo)
    (git_repo / ".gemini" / "settings.json").write_text('{"hooks": ')
    before = _tree(git_repo)
    with pytest.raises(Refused, match="not valid JSON"):
        wiring.remove(wiring.harnesses_named("all"), cwd=git_repo)
    assert _tree(git_repo) == before
    assert all(w.state == "wired" for w in wiring.status(cwd=git_repo)
               if w.scope == "project" and w.harness != "gemini")
