"""`versatil integrate` registering versatil's MCP server, as the Python API does it (mcp=True,
what the command line passes), on real files that already configure other servers.

Each file is copied from the shape its harness documents (cited in
versatil_fs/agents/mcp_config.py's DOCS): install keeps the other servers and the file's
layout, a second install writes nothing, remove puts back the very bytes.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from versatil_fs.agents import integrate as wiring
from versatil_fs.errors import Refused


@pytest.fixture(autouse=True)
def _no_harness_homes(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLAUDE_CONFIG_DIR", "CODEX_HOME", "GEMINI_CLI_HOME", "COPILOT_HOME"):
        monkeypatch.delenv(name, raising=False)


def _write(path: Path, text: str) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
    return path.read_bytes()


# https://code.claude.com/docs/en/mcp: a project's .mcp.json, with a server of its own.
CLAUDE_MCP = """\
{
    "mcpServers": {
        "filesystem": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"],
            "env": {"DEBUG": "${DEBUG:-false}"}
        }
    }
}
"""

# https://developers.openai.com/codex/mcp: [mcp_servers.<name>] tables in config.toml, among the
# project's other settings, with comments versatil must keep.
CODEX_CONFIG = """\
# Project settings for Codex.
model = "gpt-5-codex"  # the team's model

[mcp_servers.docs]
command = "docs-server"
args = ["--port", "0"]
startup_timeout_sec = 20

[mcp_servers.docs.env]
TOKEN_FILE = "~/.docs-token"

[sandbox_workspace_write]
network_access = false
"""


def test_claude_keeps_the_other_servers_and_remove_puts_back_the_bytes(git_repo: Path) -> None:
    path = git_repo / ".mcp.json"
    original = _write(path, CLAUDE_MCP)
    changes = wiring.install(["claude"], cwd=git_repo, mcp=True)
    assert [(c.path, c.action) for c in changes] == [
        (str(git_repo / ".claude" / "settings.json"), "wired"), (str(path), "wired"),
    ]
    doc = json.loads(path.read_bytes())
    assert list(doc["mcpServers"]) == ["filesystem", "versatil"]
    assert doc["mcpServers"]["filesystem"] == json.loads(CLAUDE_MCP)["mcpServers"]["filesystem"]
    entry = doc["mcpServers"]["versatil"]
    assert entry["args"] == ["mcp", "--harness", "claude"]
    assert Path(entry["command"]).is_absolute()
    assert path.read_text().startswith('{\n    "mcpServers": {\n        "filesystem"')  # layout
    installed = path.read_bytes()

    again = wiring.install(["claude"], cwd=git_repo, mcp=True)
    assert {c.action for c in again} == {"unchanged"}
    assert path.read_bytes() == installed

    removed = wiring.remove(["claude"], cwd=git_repo, mcp=True)
    assert [c.action for c in removed if c.path == str(path)] == ["restored"]
    assert path.read_bytes() == original


def test_codex_appends_one_table_and_keeps_the_rest_byte_for_byte(git_repo: Path) -> None:
    path = git_repo / ".codex" / "config.toml"
    original = _write(path, CODEX_CONFIG)
    wiring.install(["codex"], cwd=git_repo, mcp=True)
    after = path.read_bytes()
    assert after.startswith(original)  # nothing of the user's moved, comments included
    added = after[len(original):].decode()
    assert added.startswith("\n[mcp_servers.versatil]\n")
    doc = tomllib.loads(after.decode())
    assert doc["mcp_servers"]["docs"]["env"] == {"TOKEN_FILE": "~/.docs-token"}
    assert doc["mcp_servers"]["versatil"]["args"] == ["mcp", "--harness", "codex"]
    assert doc["sandbox_workspace_write"] == {"network_access": False}

    assert {c.action for c in wiring.install(["codex"], cwd=git_repo, mcp=True)} == {"unchanged"}
    assert path.read_bytes() == after
    wiring.remove(["codex"], cwd=git_repo, mcp=True)
    assert path.read_bytes() == original


def test_codex_replaces_an_older_versatil_table_where_it_was(git_repo: Path) -> None:
    # An install from a versatil at another path, then the user's own table after it: the new
    # table takes the old one's place, the user's stays where it is.
    path = git_repo / ".codex" / "config.toml"
    _write(path, CODEX_CONFIG.replace("[sandbox_workspace_write]", (
        '[mcp_servers.versatil]\ncommand = "/old/bin/versatil"\nargs = ["mcp", "--harness", '
        '"codex"]\n\n[mcp_servers.versatil.env]\nX = "1"\n\n[sandbox_workspace_write]')))
    [_, change] = wiring.install(["codex"], cwd=git_repo, mcp=True)
    assert change.action == "rewired" and "/old/bin/versatil" in change.message
    text = path.read_text()
    assert "/old/bin/versatil" not in text and "[mcp_servers.versatil.env]" not in text
    assert text.index("[mcp_servers.docs]") < text.index("[mcp_servers.versatil]") < text.index(
        "[sandbox_workspace_write]")
    assert text.endswith("[sandbox_workspace_write]\nnetwork_access = false\n")


def test_codex_remove_after_the_user_edited_the_file_keeps_their_edit(git_repo: Path) -> None:
    path = git_repo / ".codex" / "config.toml"
    _write(path, CODEX_CONFIG)
    wiring.install(["codex"], cwd=git_repo, mcp=True)
    path.write_text(path.read_text().replace('model = "gpt-5-codex"', 'model = "o4"'))
    [_, change] = wiring.remove(["codex"], cwd=git_repo, mcp=True)
    assert change.action == "cleaned"
    assert path.read_text() == CODEX_CONFIG.replace('model = "gpt-5-codex"', 'model = "o4"')


def test_codex_refuses_a_file_it_cannot_edit_as_one_table(git_repo: Path) -> None:
    # A versatil server set with dotted keys: another [mcp_servers.versatil] header would
    # redefine it. Refused with one sentence, and no file touched (the hooks' either).
    path = git_repo / ".codex" / "config.toml"
    text = 'mcp_servers.versatil.command = "versatil"\nmcp_servers.versatil.args = ["mcp"]\n'
    original = _write(path, text)
    with pytest.raises(Refused, match=r"cannot edit as one \[mcp_servers.versatil\] table"):
        wiring.install(["codex"], cwd=git_repo, mcp=True)
    assert path.read_bytes() == original
    assert not (git_repo / ".codex" / "hooks.json").exists()


def test_a_server_of_the_users_named_versatil_is_never_overwritten(git_repo: Path) -> None:
    path = git_repo / ".cursor" / "mcp.json"
    original = _write(path, '{"mcpServers": {"versatil": {"command": "my-own-tool"}}}\n')
    with pytest.raises(Refused, match="not versatil's"):
        wiring.install(["cursor"], cwd=git_repo, mcp=True)
    assert path.read_bytes() == original


def test_gemini_keeps_hooks_and_servers_in_one_settings_file(git_repo: Path) -> None:
    # https://geminicli.com/docs/tools/mcp-server: mcpServers in .gemini/settings.json, the
    # same file as its hooks (https://geminicli.com/docs/hooks/reference).
    path = git_repo / ".gemini" / "settings.json"
    original = _write(path, json.dumps({
        "theme": "GitHub",
        "mcpServers": {"pythonTools": {"command": "python", "args": ["-m", "my_tools"],
                                       "cwd": "./tools", "timeout": 30000}},
    }, indent=2) + "\n")
    [change] = wiring.install(["gemini"], cwd=git_repo, mcp=True)
    assert change.action == "wired"
    doc = json.loads(path.read_bytes())
    assert list(doc["mcpServers"]) == ["pythonTools", "versatil"]
    assert doc["hooks"]["BeforeTool"]
    wiring.remove(["gemini"], cwd=git_repo, mcp=True)
    assert path.read_bytes() == original


def test_a_created_file_goes_with_its_directory_and_status_tells(git_repo: Path) -> None:
    rows = {(r.harness, r.what): r.state for r in wiring.status(["cursor"], cwd=git_repo,
                                                                 mcp=True)}
    assert rows[("cursor", "mcp")] == "not wired"
    wiring.install(["cursor"], cwd=git_repo, mcp=True)
    assert (git_repo / ".cursor" / "mcp.json").is_file()
    rows = {(r.harness, r.what): r.state for r in wiring.status(["cursor"], cwd=git_repo,
                                                                 mcp=True)}
    assert rows[("cursor", "mcp")] == "wired"
    wiring.remove(["cursor"], cwd=git_repo, mcp=True)
    assert not (git_repo / ".cursor").exists()


def test_a_stale_server_entry_is_told_and_rewired(git_repo: Path) -> None:
    path = git_repo / ".mcp.json"
    _write(path, json.dumps({"mcpServers": {"versatil": {
        "command": "/gone/bin/versatil", "args": ["mcp", "--harness", "claude"]}}}))
    [row] = [r for r in wiring.status(["claude"], cwd=git_repo, mcp=True) if r.what == "mcp"]
    assert row.state == "stale" and "/gone/bin/versatil" in row.detail
    [_, change] = wiring.install(["claude"], cwd=git_repo, mcp=True)
    assert change.action == "rewired"
    assert json.loads(path.read_bytes())["mcpServers"]["versatil"]["command"] != (
        "/gone/bin/versatil")


def test_without_mcp_the_hooks_alone_are_wired(git_repo: Path) -> None:
    changes = wiring.install(["claude", "codex"], cwd=git_repo)
    assert not (git_repo / ".mcp.json").exists()
    assert not (git_repo / ".codex" / "config.toml").exists()
    assert len(changes) == 2
