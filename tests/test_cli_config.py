"""`versatil config show`: every effective value with its source, as a table or as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from integration.helpers import tmp_versatil_home

from versatil_fs.cli import cli, run_cli
from versatil_fs.config import Config


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return tmp_versatil_home(tmp_path, monkeypatch)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    # Repository.find resolves symlinks (tmp_path may live under one, as on macOS).
    root = root.resolve()
    monkeypatch.chdir(root / "src")  # any directory inside the working tree will do
    return root


def show(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run_cli(cli, ["config", "show", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table(out: str) -> dict[str, tuple[str, str]]:
    """The rows by key, cut at the header's columns (values may contain spaces)."""
    header, *lines = out.splitlines()
    value_at, source_at = header.index("value"), header.index("source")
    return {
        line[:value_at].strip(): (line[value_at:source_at].strip(), line[source_at:])
        for line in lines
    }


def test_show_prints_every_value_and_its_source(
    repo: Path, home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (home / "config.toml").write_text("[checkpoints]\nmax_checkpoints = 20\n")
    (repo / ".versatil").write_text(
        '[collision_detection]\nlock_timeout = 10\n[agents."Dana-Database"]\npriority = 3\n'
    )
    monkeypatch.setenv("VERSATIL_PARALLEL_MAX_CONCURRENT_AGENTS", "2")

    code, out, err = show(capsys, "--set", "guard.paths=src,docs")

    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["key", "value", "source"]
    # Aligned: every value and every source starts in the same column.
    value_column = lines[0].index("value")
    source_column = lines[0].index("source")
    for line in lines[1:]:
        assert line[value_column - 2 : value_column] == "  " and line[value_column] != " "
        assert line[source_column - 2 : source_column] == "  " and line[source_column] != " "
    rows = table(out)
    assert set(rows) == {*Config().flat(), "agents.Dana-Database.priority"}
    assert rows["collision_detection.lock_timeout"] == ("10.0", str(repo / ".versatil"))
    assert rows["checkpoints.max_checkpoints"] == ("20", str(home / "config.toml"))
    assert rows["parallel.max_concurrent_agents"] == (
        "2",
        "env VERSATIL_PARALLEL_MAX_CONCURRENT_AGENTS",
    )
    assert rows["guard.paths"] == ('["src", "docs"]', "command line")
    assert rows["agents.Dana-Database.priority"] == ("3", str(repo / ".versatil"))
    assert rows["checkpoints.enabled"] == ("true", "default")


def test_show_json_is_one_object_with_config_and_sources(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / ".versatil").write_text("[parallel]\nmax_concurrent_waves = 1\n")

    code, out, err = show(capsys, "--json")

    assert (code, err) == (0, "")
    document = json.loads(out)
    assert set(document) == {"config", "sources"}
    assert document["config"]["parallel"] == {"max_concurrent_agents": 5, "max_concurrent_waves": 1}
    assert document["config"]["agents"] == {
        "wait_on_edit": 0.0, "on_error": "allow", "name": "", "names": {}, "subagents": "session"
    }
    assert document["sources"]["parallel.max_concurrent_waves"] == str(repo / ".versatil")
    assert document["sources"]["parallel.max_concurrent_agents"] == "default"
    assert set(document["sources"]) == set(Config().flat())


def test_outside_a_repository_show_uses_the_user_file_and_defaults(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    (outside / ".versatil").write_text("this would not parse")  # not a repository root
    (home / "config.toml").write_text("[checkpoints]\ninterval = 15\n")
    monkeypatch.chdir(outside)

    code, out, err = show(capsys, "--json")

    assert (code, err) == (0, "")
    document = json.loads(out)
    assert document["config"]["checkpoints"]["interval"] == 15.0
    assert document["sources"]["checkpoints.interval"] == str(home / "config.toml")


def test_dash_c_picks_the_repository(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (repo / ".versatil").write_text("[parallel]\nmax_concurrent_agents = 9\n")
    monkeypatch.chdir(tmp_path)

    code = run_cli(cli, ["-C", str(repo), "config", "show", "--json"])

    assert code == 0
    assert json.loads(capsys.readouterr().out)["config"]["parallel"]["max_concurrent_agents"] == 9


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[collision_detection]\nlock_timeout = "5m"\n', "collision_detection.lock_timeout must"),
        ("[collision_detection]\nlock_timout = 5\n", "unknown key collision_detection.lock_timout"),
        ("[parallel]\nmax_concurrent_agents = \n", "line 2 is not valid TOML"),
    ],
)
def test_bad_config_exits_2_with_one_line_and_no_traceback(
    text: str, fragment: str, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / ".versatil").write_text(text)

    code, out, err = show(capsys)

    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"versatil: {repo / '.versatil'}")
    assert fragment in err
    assert "Traceback" not in err


def test_bad_environment_variable_exits_2(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERSATIL_CHECKPOINTS_ENABLED", "maybe")

    code, _, err = show(capsys)

    assert code == 2
    assert err == (
        "versatil: environment variable VERSATIL_CHECKPOINTS_ENABLED: checkpoints.enabled "
        'must be true or false, got "maybe".\n'
    )


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("nonsense", "should be KEY=VALUE"),
        ("parallel.max_concurrent_agents=0", "parallel.max_concurrent_agents must be"),
        ("parallel.nope=1", "unknown key parallel.nope"),
    ],
)
def test_bad_set_exits_2(
    setting: str, fragment: str, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = show(capsys, "--set", setting)
    assert code == 2
    assert err.count("\n") == 1 and fragment in err


def test_a_real_process_reports_bad_config_in_one_line(repo: Path, home: Path) -> None:
    (repo / ".versatil").write_text("[checkpoints]\nmax_checkpoints = 0\n")
    result = subprocess.run(
        [sys.executable, "-c", "from versatil_fs.cli import main; main()", "config", "show"],
        cwd=repo,
        env={**os.environ, "VERSATIL_HOME": str(home)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"versatil: {repo / '.versatil'}: checkpoints.max_checkpoints must be a whole number, "
        "1 or more (at most 1000000), got 0.\n"
    )
