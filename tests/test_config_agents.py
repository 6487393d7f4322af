"""The `[agents]` settings of the harness hooks (issue 14): beside the per-agent tables in the
files, `VERSATIL_AGENTS_*` in the environment, listed by `config show` with their sources."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from integration.helpers import tmp_versatil_home

from versatil_fs.cli import cli, run_cli
from versatil_fs.config import HARNESSES, Config, load
from versatil_fs.errors import ConfigError


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return tmp_versatil_home(tmp_path, monkeypatch)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    root = root.resolve()
    monkeypatch.chdir(root)
    return root


def error_of(repo: Path, env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load(repo, env=env)
    message = str(caught.value)
    assert "\n" not in message and message.endswith("."), message
    return message


def test_defaults() -> None:
    harness = Config().harness
    assert (harness.wait_on_edit, harness.on_error, harness.name, harness.names) == (
        0.0, "allow", "", {}
    )
    assert harness.subagents == "session"


def test_settings_sit_beside_agent_tables_and_merge_across_files(repo: Path, home: Path) -> None:
    user = home / "config.toml"
    user.write_text('[agents]\non_error = "deny"\nnames = { codex = "Marcus" }\n')
    local = repo / ".versatil"
    local.write_text(
        '[agents]\nwait_on_edit = 2.5\nname = "Dana"\n[agents.names]\nclaude = "Dana-C"\n'
        '[agents."Dana-DB"]\npriority = 4\n'
    )

    loaded = load(repo, env={})

    assert loaded.harness.wait_on_edit == 2.5
    assert loaded.harness.on_error == "deny"
    assert loaded.harness.name == "Dana"
    assert loaded.harness.names == {"claude": "Dana-C", "codex": "Marcus"}
    assert loaded.harness.subagents == "session"
    assert set(loaded.agents) == {"Dana-DB"} and loaded.priority_of("Dana-DB") == 4
    assert loaded.source_of("agents.on_error") == str(user)
    assert loaded.source_of("agents.wait_on_edit") == str(local)
    assert loaded.source_of("agents.names.codex") == str(user)
    assert loaded.source_of("agents.names.claude") == str(local)
    assert loaded.source_of("agents.names.gemini") == "default"
    assert loaded.source_of("agents.subagents") == "default"


def test_environment_sets_every_setting_and_each_harness_name(repo: Path) -> None:
    (repo / ".versatil").write_text('[agents]\nwait_on_edit = 1\nnames = { claude = "x" }\n')
    env = {
        "VERSATIL_AGENTS_WAIT_ON_EDIT": "7.5",
        "VERSATIL_AGENTS_ON_ERROR": "deny",
        "VERSATIL_AGENTS_NAME": "Dana",
        "VERSATIL_AGENTS_NAMES_CLAUDE": "Dana-C",
        "VERSATIL_AGENTS_NAMES_COPILOT": "Dana-P",
        "VERSATIL_AGENTS_SUBAGENTS": "own",
        "VERSATIL_AGENT": "not configuration",
    }

    loaded = load(repo, env=env)

    assert loaded.harness.wait_on_edit == 7.5
    assert loaded.harness.on_error == "deny"
    assert loaded.harness.name == "Dana"
    assert loaded.harness.names == {"claude": "Dana-C", "copilot": "Dana-P"}
    assert loaded.harness.subagents == "own"
    assert loaded.source_of("agents.wait_on_edit") == "env VERSATIL_AGENTS_WAIT_ON_EDIT"
    assert loaded.source_of("agents.names.claude") == "env VERSATIL_AGENTS_NAMES_CLAUDE"
    # An empty variable is unset, as for every other key.
    unset = load(repo, env={"VERSATIL_AGENTS_WAIT_ON_EDIT": " "})
    assert unset.harness.wait_on_edit == 1.0


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"VERSATIL_AGENTS_WAIT_ON_EDIT": "601"},
            "VERSATIL_AGENTS_WAIT_ON_EDIT: agents.wait_on_edit must be a number of seconds "
            "from 0 to 600, got 601",
        ),
        ({"VERSATIL_AGENTS_WAIT_ON_EDIT": "soon"}, "must be a number of seconds from 0 to 600"),
        ({"VERSATIL_AGENTS_ON_ERROR": "warn"}, 'agents.on_error must be "allow" or "deny"'),
        ({"VERSATIL_AGENTS_SUBAGENTS": "x"}, 'agents.subagents must be "session" or "own"'),
        ({"VERSATIL_AGENTS_WAIT_ON_EIDT": "1"}, "perhaps VERSATIL_AGENTS_WAIT_ON_EDIT"),
        ({"VERSATIL_AGENTS_NAMES_VIM": "x"}, "NAMES_VIM is not a configuration key"),
        ({"VERSATIL_AGENTS_DANA_PRIORITY": "3"}, 'set [agents."Name"] priority'),
        ({"VERSATIL_AGENTS_NAMES_CURSOR": "x" * 201}, "agents.names.cursor must be an agent name"),
    ],
)
def test_bad_environment_values_name_the_variable(
    repo: Path, env: dict[str, str], expected: str
) -> None:
    message = error_of(repo, env)
    assert message.startswith("environment variable VERSATIL_AGENTS_"), message
    assert expected in message, message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[agents.names]\nvim = "x"\n', "unknown key agents.names.vim; the harnesses are claude"),
        ('[agents.names]\nclaud = "x"\n', "(perhaps agents.names.claude)"),
        ('[agents]\nwait_on_edit = -1\n', "agents.wait_on_edit must be a number of seconds"),
        ('[agents]\nname = "a\\u0000b"\n', "agents.name must be an agent name"),
        ("[harness]\nname = 1\n", "unknown key harness"),
        ("[agents.names]\nclaude = 3\n", "agents.names.claude must be an agent name"),
        ('[agents]\nnames = { codex = "a\\nb" }\n', 'agents.names.codex must be an agent name'),
    ],
)
def test_bad_file_values_name_the_file_and_key(repo: Path, text: str, expected: str) -> None:
    (repo / ".versatil").write_text(text)
    message = error_of(repo, {})
    assert message.startswith(f"{repo / '.versatil'}: "), message
    assert expected in message, message


def test_every_harness_has_a_variable(repo: Path) -> None:
    env = {f"VERSATIL_AGENTS_NAMES_{tool.upper()}": f"n-{tool}" for tool in HARNESSES}
    assert load(repo, env=env).harness.names == {tool: f"n-{tool}" for tool in HARNESSES}


def test_config_show_lists_them_with_their_sources(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (repo / ".versatil").write_text('[agents]\non_error = "deny"\nnames = { claude = "Dana" }\n')
    monkeypatch.setenv("VERSATIL_AGENTS_WAIT_ON_EDIT", "3")

    assert run_cli(cli, ["config", "show"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()}
    assert rows["agents.on_error"] == ['"deny"', str(repo / ".versatil")]
    assert rows["agents.wait_on_edit"] == ["3.0", "env", "VERSATIL_AGENTS_WAIT_ON_EDIT"]
    assert rows["agents.names.claude"] == ['"Dana"', str(repo / ".versatil")]
    assert rows["agents.subagents"] == ['"session"', "default"]

    assert run_cli(cli, ["config", "show", "--json", "--set", "agents.subagents=own"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["config"]["agents"] == {
        "wait_on_edit": 3.0, "on_error": "deny", "name": "", "names": {"claude": "Dana"},
        "subagents": "own",
    }
    assert "harness" not in document["config"]
    assert document["sources"]["agents.subagents"] == "command line"
