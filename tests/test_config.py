"""The configuration layer: sources and their precedence, source reporting, and errors that name
the file (or variable) and the key."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from integration.helpers import tmp_versatil_home

from versatil_fs.config import Config, format_key, load, parse_key
from versatil_fs.errors import ConfigError
from versatil_fs.state import StateDir

EXAMPLE = Path(__file__).resolve().parents[1] / ".versatil.example"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """VERSATIL_HOME in tmp_path, and no configuration variables leaking in from the caller."""
    return tmp_versatil_home(tmp_path, monkeypatch)


@pytest.fixture
def home(isolated_env: Path) -> Path:
    return isolated_env


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def user_file(home: Path, text: str) -> Path:
    path = home / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def repo_file(repo: Path, text: str) -> Path:
    path = repo / ".versatil"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(**kwargs: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load(**kwargs)
    message = str(caught.value)
    assert "\n" not in message and message.endswith("."), message
    assert caught.value.exit_code == 2
    return message


# Defaults -------------------------------------------------------------------------------------


def test_defaults_match_the_reference_note(repo: Path) -> None:
    loaded = load(repo, env={})

    assert loaded == Config()
    assert loaded.flat() == {
        "collision_detection.enabled": True,
        "collision_detection.lock_timeout": 300.0,
        "collision_detection.retry_attempts": 3,
        "collision_detection.retry_delay": 5.0,
        "checkpoints.enabled": True,
        "checkpoints.interval": 60.0,
        "checkpoints.max_checkpoints": 10,
        "checkpoints.max_automatic": 20,
        "checkpoints.auto_recover": True,
        "checkpoints.large_file_mb": 50.0,
        "parallel.max_concurrent_agents": 5,
        "parallel.max_concurrent_waves": 2,
        "guard.paths": ["."],
        "guard.ignore": [],
        "store.backend": "local",
        "store.url": "",
        "store.project": "",
        "store.restart_grace": 10.0,
        "agents.wait_on_edit": 0.0,
        "agents.on_error": "allow",
        "agents.name": "",
        "agents.names": {},
        "agents.subagents": "session",
    }
    assert set(loaded.sources().values()) == {"default"}
    assert loaded.default_wait == 15.0
    assert loaded.priority_of("Anyone") == 0


def test_encoding_gives_just_the_configuration(repo: Path, home: Path) -> None:
    repo_file(repo, "[parallel]\nmax_concurrent_agents = 3\n")
    loaded = load(repo, env={"VERSATIL_CHECKPOINTS_ENABLED": "no"})

    encoded = msgspec.json.decode(msgspec.json.encode(loaded))

    assert set(encoded) == {
        "collision_detection", "checkpoints", "parallel", "guard", "store", "agents", "harness"
    }
    assert "sources" not in json.dumps(encoded)
    assert msgspec.json.decode(msgspec.json.encode(loaded), type=Config) == loaded


# Precedence -----------------------------------------------------------------------------------

SOURCES = ("user", "repo", "env", "command line")


@pytest.mark.parametrize(
    "present",
    [combo for n in range(len(SOURCES) + 1) for combo in itertools.combinations(SOURCES, n)],
    ids=lambda combo: "+".join(combo) or "defaults",
)
def test_the_highest_source_that_sets_a_key_wins(
    present: tuple[str, ...], repo: Path, home: Path
) -> None:
    values = {"user": 11.0, "repo": 22.0, "env": 33.0, "command line": 44.0}
    env: dict[str, str] = {}
    overrides: dict[str, Any] = {}
    expected_source = {
        "user": str(home / "config.toml"),
        "repo": str(repo / ".versatil"),
        "env": "env VERSATIL_COLLISION_DETECTION_LOCK_TIMEOUT",
        "command line": "command line",
    }
    if "user" in present:
        user_file(home, "[collision_detection]\nlock_timeout = 11\n")
    if "repo" in present:
        repo_file(repo, "[collision_detection]\nlock_timeout = 22\n")
    if "env" in present:
        env["VERSATIL_COLLISION_DETECTION_LOCK_TIMEOUT"] = "33"
    if "command line" in present:
        overrides["collision_detection.lock_timeout"] = 44

    loaded = load(repo, env=env, overrides=overrides)

    winner = present[-1] if present else None
    key = "collision_detection.lock_timeout"
    assert loaded.collision_detection.lock_timeout == (values[winner] if winner else 300.0)
    assert loaded.source_of(key) == (expected_source[winner] if winner else "default")


def test_keys_from_different_sources_combine(repo: Path, home: Path) -> None:
    user = user_file(home, "[collision_detection]\nretry_attempts = 4\nretry_delay = 0.5\n")
    local = repo_file(
        repo, '[collision_detection]\nlock_timeout = 60\n[agents."Dana-DB"]\npriority = 7\n'
    )
    loaded = load(
        repo,
        env={"VERSATIL_PARALLEL_MAX_CONCURRENT_AGENTS": "3"},
        overrides={"checkpoints.max_checkpoints": 4},
    )

    assert loaded.sources() == {
        "collision_detection.enabled": "default",
        "collision_detection.lock_timeout": str(local),
        "collision_detection.retry_attempts": str(user),
        "collision_detection.retry_delay": str(user),
        "checkpoints.enabled": "default",
        "checkpoints.interval": "default",
        "checkpoints.max_checkpoints": "command line",
        "checkpoints.max_automatic": "default",
        "checkpoints.auto_recover": "default",
        "checkpoints.large_file_mb": "default",
        "parallel.max_concurrent_agents": "env VERSATIL_PARALLEL_MAX_CONCURRENT_AGENTS",
        "parallel.max_concurrent_waves": "default",
        "guard.paths": "default",
        "guard.ignore": "default",
        "store.backend": "default",
        "store.url": "default",
        "store.project": "default",
        "store.restart_grace": "default",
        "agents.wait_on_edit": "default",
        "agents.on_error": "default",
        "agents.name": "default",
        "agents.names": "default",
        "agents.subagents": "default",
        "agents.Dana-DB.priority": str(local),
    }
    assert loaded.default_wait == 2.0
    assert loaded.priority_of("Dana-DB") == 7
    assert loaded.priority_of("dana-db") == 0  # agent names are case-sensitive


def test_repository_file_agents_merge_with_user_file_agents(repo: Path, home: Path) -> None:
    user_file(home, "[agents.Dana]\npriority = 1\n[agents.Marcus]\npriority = 2\n")
    repo_file(repo, "[agents.Dana]\npriority = 9\n")

    loaded = load(repo, env={})

    assert {name: a.priority for name, a in loaded.agents.items()} == {"Dana": 9, "Marcus": 2}
    assert loaded.source_of("agents.Marcus.priority") == str(home / "config.toml")
    assert loaded.source_of("agents.Dana.priority") == str(repo / ".versatil")
    assert loaded.source_of("agents.Nobody.priority") == "default"


def test_no_repository_means_user_file_and_defaults(home: Path) -> None:
    user_file(home, "[checkpoints]\ninterval = 30\n")
    assert load(None, env={}).checkpoints.interval == 30.0


def test_versatil_home_locates_the_user_file(tmp_path: Path, repo: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    user_file(elsewhere, "[parallel]\nmax_concurrent_waves = 7\n")

    from_env = load(repo, env={"VERSATIL_HOME": str(elsewhere)})
    from_state = load(repo, state=StateDir(elsewhere), env={})

    assert from_env.parallel.max_concurrent_waves == 7
    assert from_state.parallel.max_concurrent_waves == 7
    assert load(repo, env={}).parallel.max_concurrent_waves == 2  # os.environ's VERSATIL_HOME


def test_a_directory_named_versatil_is_not_a_config_file(repo: Path) -> None:
    # A dotfiles repository at $HOME has the state directory where the repo file would be.
    (repo / ".versatil").mkdir()
    assert load(repo, env={}) == Config()


# Environment variables ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "text", "key", "value"),
    [
        (
            "VERSATIL_COLLISION_DETECTION_LOCK_TIMEOUT",
            "10",
            "collision_detection.lock_timeout",
            10.0,
        ),
        (
            "VERSATIL_COLLISION_DETECTION_RETRY_DELAY",
            "0.25",
            "collision_detection.retry_delay",
            0.25,
        ),
        (
            "VERSATIL_COLLISION_DETECTION_RETRY_ATTEMPTS",
            " 0 ",
            "collision_detection.retry_attempts",
            0,
        ),
        ("VERSATIL_PARALLEL_MAX_CONCURRENT_AGENTS", "3", "parallel.max_concurrent_agents", 3),
        ("VERSATIL_CHECKPOINTS_ENABLED", "false", "checkpoints.enabled", False),
        ("VERSATIL_CHECKPOINTS_ENABLED", "No", "checkpoints.enabled", False),
        ("VERSATIL_CHECKPOINTS_ENABLED", "0", "checkpoints.enabled", False),
        ("VERSATIL_CHECKPOINTS_AUTO_RECOVER", "off", "checkpoints.auto_recover", False),
        ("VERSATIL_COLLISION_DETECTION_ENABLED", "YES", "collision_detection.enabled", True),
        ("VERSATIL_COLLISION_DETECTION_ENABLED", "1", "collision_detection.enabled", True),
        ("VERSATIL_GUARD_PATHS", "src, docs/api ,", "guard.paths", ["src", "docs/api"]),
        ("VERSATIL_GUARD_IGNORE", "*.log", "guard.ignore", ["*.log"]),
    ],
)
def test_environment_values_are_parsed_by_type(
    variable: str, text: str, key: str, value: Any, repo: Path
) -> None:
    loaded = load(repo, env={variable: text})
    assert loaded.flat()[key] == value
    assert loaded.source_of(key) == f"env {variable}"


def test_variables_that_are_not_configuration_are_ignored(repo: Path) -> None:
    env = {
        "VERSATIL_HOME": "/nonexistent",
        "VERSATIL_AGENT": "Marcus",
        "VERSATIL_FAULT": "state.before-rename",
        "VERSATIL_DEBUG": "1",
        "VERSATIL_SOMETHING_ELSE": "x",
        "VERSATIL_COLLISION_DETECTION": "x",  # a section name alone is no key
        "PARALLEL_MAX_CONCURRENT_AGENTS": "x",
    }
    assert load(repo, state=StateDir(repo / "state"), env=env) == Config()


def test_an_empty_variable_counts_as_unset(repo: Path) -> None:
    repo_file(repo, "[parallel]\nmax_concurrent_agents = 4\n")
    loaded = load(repo, env={"VERSATIL_PARALLEL_MAX_CONCURRENT_AGENTS": ""})
    assert loaded.parallel.max_concurrent_agents == 4


def test_a_misspelt_variable_in_a_section_is_an_error(repo: Path) -> None:
    message = error_of(repo_root=repo, env={"VERSATIL_CHECKPOINTS_INTERVALL": "5"})
    assert message.startswith("environment variable VERSATIL_CHECKPOINTS_INTERVALL: ")
    assert "checkpoints.intervall" in message
    assert "perhaps VERSATIL_CHECKPOINTS_INTERVAL" in message


def test_agent_priorities_cannot_come_from_the_environment(repo: Path) -> None:
    message = error_of(repo_root=repo, env={"VERSATIL_AGENTS_DANA_PRIORITY": "3"})
    assert "VERSATIL_AGENTS_DANA_PRIORITY" in message and "[agents." in message


@pytest.mark.parametrize(
    ("variable", "text", "expected"),
    [
        ("VERSATIL_COLLISION_DETECTION_LOCK_TIMEOUT", "5m", 'got "5m"'),
        ("VERSATIL_COLLISION_DETECTION_LOCK_TIMEOUT", "0", "got 0.0"),
        ("VERSATIL_COLLISION_DETECTION_LOCK_TIMEOUT", "inf", "got inf"),
        ("VERSATIL_COLLISION_DETECTION_LOCK_TIMEOUT", "nan", "got nan"),
        ("VERSATIL_CHECKPOINTS_ENABLED", "maybe", 'got "maybe"'),
        ("VERSATIL_CHECKPOINTS_MAX_CHECKPOINTS", "2.5", 'got "2.5"'),
        ("VERSATIL_PARALLEL_MAX_CONCURRENT_AGENTS", "0", "got 0"),
        ("VERSATIL_GUARD_PATHS", "src,../outside", '"../outside"'),
    ],
)
def test_a_bad_environment_value_names_the_variable_and_key(
    variable: str, text: str, expected: str, repo: Path
) -> None:
    message = error_of(repo_root=repo, env={variable: text})
    key = variable.removeprefix("VERSATIL_").lower()
    section = next(
        s for s in ("collision_detection", "checkpoints", "parallel", "guard") if key.startswith(s)
    )
    dotted = f"{section}.{key[len(section) + 1 :]}"
    assert message.startswith(f"environment variable {variable}: {dotted} must be ")
    assert expected in message


# Command-line overrides -----------------------------------------------------------------------


def test_overrides_take_dotted_keys_skip_none_and_parse_text(repo: Path) -> None:
    loaded = load(
        repo,
        env={},
        overrides={
            "collision_detection.lock_timeout": None,  # an option the user did not give
            "collision_detection.retry_attempts": "7",
            "guard.paths": "src,tests",
            'agents."Dana.DB".priority': 3,
            "checkpoints.enabled": False,
        },
    )
    assert loaded.collision_detection.lock_timeout == 300.0
    assert loaded.source_of("collision_detection.lock_timeout") == "default"
    assert loaded.collision_detection.retry_attempts == 7
    assert loaded.guard.paths == ["src", "tests"]
    assert loaded.priority_of("Dana.DB") == 3
    assert loaded.source_of('agents."Dana.DB".priority') == "command line"
    assert loaded.checkpoints.enabled is False


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"parallel.max_concurrent_waves": -1}, "parallel.max_concurrent_waves must be"),
        ({"parallel.max_concurrent_wave": 1}, "unknown key parallel.max_concurrent_wave"),
        ({"parallel..x": 1}, "is not a configuration key"),
        ({"collision_detection.enabled": "sometimes"}, 'got "sometimes"'),
    ],
)
def test_bad_overrides_name_the_command_line(
    overrides: dict[str, Any], fragment: str, repo: Path
) -> None:
    message = error_of(repo_root=repo, env={}, overrides=overrides)
    assert message.startswith("command line: ")
    assert fragment in message


def test_source_of_an_unknown_key_is_a_key_error() -> None:
    loaded = Config()
    with pytest.raises(KeyError):
        loaded.source_of("collision_detection.nope")
    with pytest.raises(KeyError):
        loaded.source_of("not a key")
    assert loaded.source_of("parallel.max_concurrent_agents") == "default"


# Errors in files ------------------------------------------------------------------------------


def test_the_message_from_the_specification(repo: Path) -> None:
    path = repo_file(repo, '[collision_detection]\nlock_timeout = "5m"\n')
    message = error_of(repo_root=repo, env={})
    assert message.startswith(
        f"{path}: collision_detection.lock_timeout must be a number of seconds"
    )
    assert message.endswith(', got "5m".')


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            "[collision_detection]\nlock_timout = 5\n",
            [
                "unknown key collision_detection.lock_timout",
                "perhaps collision_detection.lock_timeout",
            ],
        ),
        ("[colision_detection]\n", ["unknown key colision_detection", "the sections are"]),
        ("timeout = 5\n", ["unknown key timeout"]),
        ("collision_detection = 5\n", ["collision_detection must be a table", "got 5"]),
        ('[agents."Dana DB"]\nprio = 1\n', ['unknown key agents."Dana DB".prio']),
        ('[agents.Dana]\npriority = "high"\n', ["agents.Dana.priority must be", 'got "high"']),
        ("[agents]\nDana = 3\n", ["agents.Dana must be a table", "got 3"]),
        ("agents = 3\n", ["agents must be a table of agents", "got 3"]),
        ('[agents.""]\npriority = 1\n', ["an agent name cannot be empty"]),
        ("[checkpoints]\nenabled = 1\n", ["checkpoints.enabled must be true or false", "got 1"]),
        ('[guard]\npaths = "src"\n', ["guard.paths must be a list", 'got "src"']),
        ('[guard]\nignore = [""]\n', ["guard.ignore must be a list", 'got [""]']),
    ],
)
def test_unknown_keys_and_wrong_types_name_file_and_key(
    text: str, fragments: list[str], repo: Path
) -> None:
    path = repo_file(repo, text)
    message = error_of(repo_root=repo, env={})
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[collision_detection]\nlock_timeout = \n", 2),
        ("[parallel]\nmax_concurrent_agents = 1\nmax_concurrent_agents = 2\n", 3),
        ("# fine\n\n[guard\n", 3),
        ("[parallel]\nmax_concurrent_agents = 5 5\n", 2),
    ],
)
def test_malformed_toml_names_the_file_and_line(text: str, line: int, repo: Path) -> None:
    path = repo_file(repo, text)
    message = error_of(repo_root=repo, env={})
    assert message.startswith(f"{path}: line {line} is not valid TOML (")


def test_malformed_toml_without_a_line_still_names_the_file(home: Path) -> None:
    path = user_file(home, 'a = "unterminated')
    message = error_of(repo_root=None, env={})
    assert message.startswith(f"{path}") and "not valid TOML" in message


def test_a_file_that_is_not_utf8_names_the_file(repo: Path) -> None:
    (repo / ".versatil").write_bytes(b'[guard]\npaths = ["\xff"]\n')
    assert f"{repo / '.versatil'} is not UTF-8 text" in error_of(repo_root=repo, env={})


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_an_unreadable_file_names_the_file(repo: Path) -> None:
    path = repo_file(repo, "")
    path.chmod(0)
    assert error_of(repo_root=repo, env={}).startswith(f"{path} cannot be read")


def test_a_broken_user_file_is_reported_even_when_overridden(repo: Path, home: Path) -> None:
    # Validating each source on its own means fixing the file never waits on the override.
    path = user_file(home, "[collision_detection]\nlock_timeout = -1\n")
    repo_file(repo, "[collision_detection]\nlock_timeout = 10\n")
    message = error_of(repo_root=repo, env={})
    assert message.startswith(f"{path}: collision_detection.lock_timeout must be")


# A corpus of bad values, and properties ---------------------------------------------------------

BAD_VALUES: dict[str, list[str]] = {
    "collision_detection.enabled": ['"true"', "1", "0.5", "[]"],
    "collision_detection.lock_timeout": ['"5m"', "0", "-1", "inf", "nan", "true", "2e9", "[1]"],
    "collision_detection.retry_attempts": ["-1", "1.5", '"3"', "true", "10000000"],
    "collision_detection.retry_delay": ["-0.5", '"5s"', "-inf", "false"],
    "checkpoints.enabled": ['"no"', "0"],
    "checkpoints.interval": ["0", "-60", '"1m"', "inf"],
    "checkpoints.max_checkpoints": ["0", "-3", "2.0", '"ten"'],
    "checkpoints.max_automatic": ["0", "-1", "2.5", '"lots"'],
    "checkpoints.auto_recover": ['"yes"', "{}"],
    "checkpoints.large_file_mb": ["0", "-1", '"50MB"', "inf", "true"],
    "parallel.max_concurrent_agents": ["0", "-1", "1.5", "true", '"5"'],
    "parallel.max_concurrent_waves": ["0", "99999999999999999999"],
    "guard.paths": ['"."', '["/etc"]', '[".."]', '["src/../.."]', '[""]', "[1]", "1"],
    "guard.ignore": ['"*.log"', "[1]", '[""]', "true"],
    "store.backend": ['"pg"', '"LOCAL"', "true", "1"],
    "store.url": ["1", "[]", '"' + "x" * 4097 + '"'],
    "store.project": ["1", '"a\\u0007b"', '"' + "x" * 201 + '"'],
    "store.restart_grace": ["0", "-1", '"10s"', "inf"],
    "agents.Dana.priority": ['"high"', "1.5", "true", "2000000", "-2000000", "[]"],
    "agents.wait_on_edit": ["-1", "601", "inf", "nan", '"2s"', "true"],
    "agents.on_error": ['"warn"', '"ALLOW"', "true", "0"],
    "agents.name": ["3", '"a\\u0007b"', '"' + "x" * 201 + '"', "[]"],
    "agents.names": ["3", '"Dana"', "[]"],
    "agents.subagents": ['"shared"', "true"],
}


def _toml_for(dotted: str, literal: str) -> str:
    *table, key = parse_key(dotted)
    return f"[{format_key(tuple(table))}]\n{key} = {literal}\n"


@pytest.mark.parametrize(
    ("dotted", "literal"),
    [(key, literal) for key, literals in BAD_VALUES.items() for literal in literals],
)
def test_every_bad_value_names_file_key_and_expectation(
    dotted: str, literal: str, repo: Path
) -> None:
    path = repo_file(repo, _toml_for(dotted, literal))
    message = error_of(repo_root=repo, env={})
    assert message.startswith(f"{path}: {dotted} must be "), message
    assert ", got " in message


def test_the_corpus_covers_every_key() -> None:
    assert set(BAD_VALUES) == {*Config().flat(), "agents.Dana.priority"}


def _toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    assert isinstance(value, list)
    return "[" + ", ".join(_toml_literal(item) for item in value) + "]"


_texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=12)
_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    _texts,
)
_values = st.one_of(_scalars, st.lists(_scalars, max_size=3))


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dotted=st.sampled_from(sorted(BAD_VALUES)), value=_values)
def test_any_value_either_loads_as_written_or_names_file_and_key(
    dotted: str, value: Any, repo: Path
) -> None:
    path = repo_file(repo, _toml_for(dotted, _toml_literal(value)))
    try:
        loaded = load(repo, env={})
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: {dotted} must be "), message
        assert "\n" not in message
        return
    effective = loaded.flat()[dotted]
    assert effective == value
    assert isinstance(effective, bool) == isinstance(value, bool)
    assert loaded.source_of(dotted) == str(path)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    dotted=st.sampled_from(
        [
            key
            for key, v in Config().flat().items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
    ),
    text=_texts,
)
def test_a_non_number_in_the_environment_is_always_refused(
    dotted: str, text: str, repo: Path
) -> None:
    variable = "VERSATIL_" + dotted.replace(".", "_").upper()
    try:
        float(text)
    except ValueError:
        pass
    else:
        return  # a number; covered by the range tests
    if not text.strip():
        return  # empty counts as unset
    message = error_of(repo_root=repo, env={variable: text})
    assert message.startswith(f"environment variable {variable}: {dotted} must be ")


@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4))
def test_dotted_keys_round_trip(parts: list[str]) -> None:
    assert parse_key(format_key(tuple(parts))) == tuple(parts)


# The shipped example ---------------------------------------------------------------------------


def test_the_example_file_parses_and_equals_the_defaults(repo: Path) -> None:
    repo_file(repo, EXAMPLE.read_text(encoding="utf-8"))
    loaded = load(repo, env={})

    assert loaded == Config()
    # Every key is written out, not merely defaulted because it is missing.
    assert set(loaded.sources().values()) == {str(repo / ".versatil")}


def test_the_commented_agent_example_is_valid(repo: Path) -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# [agents."))
    uncommented = [line.removeprefix("# ") for line in lines[start:]]
    repo_file(repo, "\n".join(uncommented) + "\n")

    loaded = load(repo, env={})

    assert loaded.priority_of("Dana-Database") == 10
    assert loaded.priority_of("Maria-QA") == -5


# Start-up cost ---------------------------------------------------------------------------------


def test_loading_without_files_does_not_import_a_toml_parser(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from versatil_fs import config\n"
        "config.load(None, env={})\n"
        "print(sorted(m for m in ('tomllib', 'yaml', 'difflib', 'json') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "VERSATIL_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"
