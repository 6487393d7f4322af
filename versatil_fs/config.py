"""The configuration: its model, where each value comes from, and errors that name the culprit.

Sources, lowest to highest precedence::

    built-in defaults
    ~/.versatil/config.toml           user-wide ($VERSATIL_HOME/config.toml)
    <repository root>/.versatil       per repository, shared with everyone who clones it
    VERSATIL_<SECTION>_<KEY>          environment, e.g. VERSATIL_COLLISION_DETECTION_LOCK_TIMEOUT=10
    overrides                         command-line options, as dotted keys

Every source is validated on its own before any merging, so a broken file is reported even when
a higher source happens to override the broken key: the error names the file, the dotted key and
what was expected, and fixing it never waits for the override to go away.

Environment variables: a ``VERSATIL_*`` name whose remainder starts with a section name
(``COLLISION_DETECTION_``, ``CHECKPOINTS_``, ``PARALLEL_``, ``GUARD_``, ``AGENTS_``) is a
configuration key, and an unknown one is an error rather than a silent no-op (a misspelt variable
would otherwise look as if it worked). Everything else (``VERSATIL_HOME``, ``VERSATIL_AGENT``,
``VERSATIL_FAULT``, ``VERSATIL_DEBUG``...) is not configuration and is ignored. Values are parsed
by the key's type: numbers, booleans (true/false, 1/0, yes/no, on/off) and comma-separated
lists. An empty variable counts as unset, so ``VERSATIL_X= cmd`` switches an override off.
The ``[agents]`` settings of the harness hooks can (``VERSATIL_AGENTS_WAIT_ON_EDIT``,
``VERSATIL_AGENTS_NAMES_CLAUDE``...), per-agent priorities cannot: agent names are case-sensitive
and may hold characters a variable name cannot.

Start-up cost matters (every ``versatil lock`` loads the configuration), so ``tomllib`` is
imported only when a file exists, and the introspection behind error messages only on error.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import Meta

from versatil_fs.errors import ConfigError

if TYPE_CHECKING:
    from versatil_fs.state import StateDir

__all__ = [
    "HARNESSES",
    "AgentSettings",
    "CheckpointSettings",
    "CollisionDetection",
    "Config",
    "Guard",
    "HarnessSettings",
    "Parallel",
    "format_key",
    "format_value",
    "load",
    "parse_key",
]

REPO_FILE = ".versatil"
DEFAULT = "default"
COMMAND_LINE = "command line"

# Upper bounds keep every value finite and JSON-encodable: TOML allows `inf` and integers of
# any size, and an infinite lease expiry would be written to the lock table as `null`.
_MAX_SECONDS = 1e9
_MAX_COUNT = 1_000_000

_Switch = Annotated[bool, Meta(description="true or false")]
_Seconds = Annotated[
    float,
    Meta(gt=0, le=_MAX_SECONDS, description="a number of seconds greater than 0 (at most 1e9)"),
]
_Megabytes = Annotated[
    float,
    Meta(gt=0, le=_MAX_SECONDS, description="a number of megabytes greater than 0 (at most 1e9)"),
]
_Delay = Annotated[
    float, Meta(ge=0, le=_MAX_SECONDS, description="a number of seconds, 0 or more (at most 1e9)")
]
_Attempts = Annotated[
    int, Meta(ge=0, le=_MAX_COUNT, description="a whole number, 0 or more (at most 1000000)")
]
_Count = Annotated[
    int, Meta(ge=1, le=_MAX_COUNT, description="a whole number, 1 or more (at most 1000000)")
]
_Priority = Annotated[
    int,
    Meta(
        ge=-_MAX_COUNT,
        le=_MAX_COUNT,
        description="a whole number between -1000000 and 1000000 (higher goes first)",
    ),
]
# A guarded path must stay inside the repository: not absolute, no `..` segment.
_RepoPath = Annotated[str, Meta(min_length=1, pattern=r"^(?!/)(?!(?:.*/)?\.\.(?:/|$))")]
_RepoPaths = Annotated[
    list[_RepoPath],
    Meta(description='a list of repo-relative paths (such as ["src", "docs/api"], no ".." or "/")'),
]
_Patterns = Annotated[
    list[Annotated[str, Meta(min_length=1)]],
    Meta(description="a list of gitignore-style patterns (non-empty strings)"),
]


class CollisionDetection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: _Switch = True
    lock_timeout: _Seconds = 300.0  # lease lifetime
    retry_attempts: _Attempts = 3
    retry_delay: _Delay = 5.0


class CheckpointSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: _Switch = True
    interval: _Seconds = 60.0
    max_checkpoints: _Count = 10
    auto_recover: _Switch = True
    large_file_mb: _Megabytes = 50.0  # a new file above this size gets a warning


class Parallel(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_concurrent_agents: _Count = 5
    max_concurrent_waves: _Count = 2


def _whole_repository() -> list[str]:
    return ["."]


class Guard(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    paths: _RepoPaths = msgspec.field(default_factory=_whole_repository)
    ignore: _Patterns = msgspec.field(default_factory=list)


class AgentSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    priority: _Priority = 0


# The agent harnesses whose hooks `versatil agent-hook` answers (issue 14).
HARNESSES = ("claude", "codex", "gemini", "cursor", "cline", "copilot")
# An agent name as the lock table holds it: printable, and short enough to show in a column.
_AgentName = Annotated[
    str,
    Meta(
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="an agent name (text without control characters, at most 200 characters)",
    ),
]


class HarnessSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How the agent harness hooks behave: the plain keys of ``[agents]`` (not agent tables).

    In TOML they sit beside the per-agent tables (``[agents] wait_on_edit = 2`` next to
    ``[agents."Dana"] priority = 3``), so these five names cannot be agent names there.
    """

    # Seconds a claim at edit time may queue before the edit is denied.
    wait_on_edit: Annotated[
        float, Meta(ge=0, le=600, description="a number of seconds from 0 to 600")
    ] = 0.0
    # What the hook answers when versatil itself cannot decide (damaged state, a bug).
    on_error: Annotated[
        Literal["allow", "deny"], Meta(description='"allow" or "deny"')
    ] = "allow"
    # The agent name every harness session in this scope uses; empty: derive it.
    name: _AgentName = ""
    # A name per harness (keys among HARNESSES), ahead of `name`.
    names: Annotated[
        dict[str, _AgentName],
        Meta(description="a table of agent names by harness (claude = \"Dana\", ...)"),
    ] = {}
    # Whether a subagent is part of its session's agent or an agent of its own.
    subagents: Annotated[
        Literal["session", "own"], Meta(description='"session" or "own"')
    ] = "session"


_HARNESS_KEYS = frozenset(HarnessSettings.__struct_fields__)


# `dict=True` lets a Config carry its sources in a plain `_sources` attribute, outside the encoded
# fields: msgspec.json.encode(config) gives just the configuration. The attribute is not
# annotated because the type checkers' dataclass view of a Struct would make it a field.
class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, dict=True):
    """The effective configuration; ``source_of`` says where each value came from."""

    collision_detection: CollisionDetection = msgspec.field(default_factory=CollisionDetection)
    checkpoints: CheckpointSettings = msgspec.field(default_factory=CheckpointSettings)
    parallel: Parallel = msgspec.field(default_factory=Parallel)
    guard: Guard = msgspec.field(default_factory=Guard)
    agents: dict[str, AgentSettings] = {}
    # The `[agents]` keys that are settings rather than agent names (see HarnessSettings).
    harness: HarnessSettings = msgspec.field(default_factory=HarnessSettings)

    def priority_of(self, agent: str) -> int:
        """The agent's lock-queue priority (higher goes first); 0 when not configured."""
        settings = self.agents.get(agent)
        return settings.priority if settings is not None else 0

    @property
    def default_wait(self) -> float:
        """The default wait budget of a blocked lock request, in seconds.

        A waiter is woken as soon as the lock frees; ``retry_attempts × retry_delay`` only says
        how long it may wait in total before giving up, it is not a polling schedule.
        """
        settings = self.collision_detection
        return settings.retry_attempts * settings.retry_delay

    def source_of(self, dotted_key: str) -> str:
        """``"default"``, a file path, ``"env VERSATIL_X"`` or ``"command line"``."""
        try:
            path = parse_key(dotted_key)
        except ConfigError:
            raise KeyError(f"{dotted_key} is not a configuration key") from None
        if path not in _leaves(self) and not _is_agent_leaf(path) and not _is_names_leaf(path):
            raise KeyError(f"{dotted_key} is not a configuration key")
        sources: dict[tuple[str, ...], str] = getattr(self, "_sources", {})
        return sources.get(path, DEFAULT)

    def sources(self) -> dict[str, str]:
        """Every dotted key of :meth:`flat` mapped to where its value came from."""
        recorded: dict[tuple[str, ...], str] = getattr(self, "_sources", {})
        return {format_key(path): recorded.get(path, DEFAULT) for path in _leaves(self)}

    def flat(self) -> dict[str, Any]:
        """Every effective value by dotted key, e.g. ``{"parallel.max_concurrent_agents": 5}``."""
        return {format_key(path): value for path, value in _leaves(self).items()}


_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "collision_detection": CollisionDetection,
    "checkpoints": CheckpointSettings,
    "parallel": Parallel,
    "guard": Guard,
}


def _leaves(config: Config) -> dict[tuple[str, ...], Any]:
    leaves: dict[tuple[str, ...], Any] = {}
    for section in _SECTIONS:
        settings = getattr(config, section)
        for key in settings.__struct_fields__:
            leaves[(section, key)] = getattr(settings, key)
    harness = config.harness
    for key in harness.__struct_fields__:
        if key != "names":
            leaves[("agents", key)] = getattr(harness, key)
        elif not harness.names:
            leaves[("agents", "names")] = {}
    for tool, name in sorted(harness.names.items()):
        leaves[("agents", "names", tool)] = name
    for name, agent in config.agents.items():
        leaves[("agents", name, "priority")] = agent.priority
    return leaves


def _is_agent_leaf(path: tuple[str, ...]) -> bool:
    return len(path) == 3 and path[0] == "agents" and path[2] == "priority"


def _is_names_leaf(path: tuple[str, ...]) -> bool:
    return len(path) == 3 and path[:2] == ("agents", "names") and path[2] in HARNESSES


def _split_agents(table: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The raw ``[agents]`` table as (harness settings, agent tables)."""
    settings = {key: value for key, value in table.items() if key in _HARNESS_KEYS}
    agents = {key: value for key, value in table.items() if key not in _HARNESS_KEYS}
    return settings, agents


# Loading ------------------------------------------------------------------------------------


def load(
    repo_root: Path | None = None,
    *,
    state: StateDir | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """The effective configuration for the repository at ``repo_root``.

    ``repo_root=None`` means no repository: only the user file, the environment and the
    overrides apply. ``env`` defaults to ``os.environ`` (its ``VERSATIL_HOME`` also locates the
    user file when ``state`` is not given). ``overrides`` maps dotted keys to values; ``None``
    values are skipped so a command can pass its unset options straight through, and strings
    are parsed like environment values (``{"guard.paths": "src,docs"}``).
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    if state is None:
        from versatil_fs.state import StateDir

        home = environ.get("VERSATIL_HOME")
        state = StateDir(Path(home).expanduser()) if home else StateDir()

    layers: list[_Layer] = []
    repo_file = Path(repo_root) / REPO_FILE if repo_root is not None else None
    # The user file lives in the state directory and gets its checks (ours, writable by nobody
    # else, a regular file): whoever could plant it could switch collision detection off.
    user_file = state.config_file
    if (layer := _file_layer(user_file, state.read_bytes(user_file, create_dirs=False))):
        layers.append(layer)
    if repo_file is not None and (layer := _file_layer(repo_file, _read_repo_file(repo_file))):
        layers.append(layer)
    layers.append(_env_layer(environ))
    if overrides:
        layers.append(_override_layer(overrides))

    merged: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    for layer in layers:
        layer.validate()
        _merge(merged, layer.data)
        for path in _paths(layer.data):
            sources[path] = layer.source_of(path)

    # Every layer passed validation and the checks are per key, so the merge cannot fail.
    merged["harness"], merged["agents"] = _split_agents(merged.get("agents", {}))
    config = msgspec.convert(merged, Config)
    setattr(config, "_sources", sources)  # noqa: B010 - not a declared field, see Config
    return config


def _merge(into: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        existing = into.get(key)
        if isinstance(value, Mapping) and isinstance(existing, dict):
            _merge(existing, value)
        elif isinstance(value, Mapping):
            into[key] = {}
            _merge(into[key], value)
        else:
            into[key] = value


def _paths(data: Mapping[str, Any]) -> Iterator[tuple[str, ...]]:
    """The leaf keys a validated layer sets (sections hold values, agents hold tables)."""
    for section, table in data.items():
        if section == "agents":
            settings, agents = _split_agents(table)
            for key, value in settings.items():
                if key == "names" and value:
                    yield from (("agents", "names", tool) for tool in value)
                else:
                    yield ("agents", key)
            for name, entry in agents.items():
                for key in entry:
                    yield ("agents", name, key)
        else:
            for key in table:
                yield (section, key)


class _Layer:
    """One source's raw data, and how to name the source of each key in messages."""

    def __init__(
        self,
        data: dict[str, Any],
        label: str,
        origins: dict[tuple[str, ...], str] | None = None,
    ) -> None:
        self.data = data
        self.label = label
        self.origins = origins or {}

    def source_of(self, path: tuple[str, ...]) -> str:
        return self.origins.get(path, self.label)

    def validate(self) -> None:
        # msgspec reports a dict key as `[...]`, so agents are checked one by one to be able
        # to name the agent in the message.
        rest = {key: value for key, value in self.data.items() if key != "agents"}
        if "harness" in rest:  # the field behind [agents]' settings, not a section
            raise self._unknown(("harness",))
        self._convert(rest, Config, ())
        agents = self.data.get("agents", {})
        if not isinstance(agents, Mapping):
            raise self._error(("agents",), agents, None)
        settings, agents = _split_agents(agents)
        names = settings.get("names", {})
        if isinstance(names, Mapping):
            for tool in names:
                if tool not in HARNESSES:
                    raise self._unknown(("agents", "names", tool))
        self._convert(settings, HarnessSettings, ("agents",))
        for name, entry in agents.items():
            if not name.strip():
                raise ConfigError(
                    f"{self._where(('agents',))}: an agent name cannot be empty "
                    f'(write [agents."Name"]).'
                )
            self._convert(entry, AgentSettings, ("agents", name))

    def _convert(self, data: Any, model: type[msgspec.Struct], prefix: tuple[str, ...]) -> None:
        try:
            msgspec.convert(data, model)
        except msgspec.ValidationError as exc:
            raise self._explain(str(exc), prefix) from None

    def _explain(self, message: str, prefix: tuple[str, ...]) -> ConfigError:
        match = re.fullmatch(r"(?P<what>.*?)(?: - at `\$(?P<at>[^`]*)`)?", message, re.DOTALL)
        assert match is not None  # the pattern matches any string
        # `.name` steps are keys; `[N]` steps are list items, reported as the whole list.
        at = re.sub(r"\[[^\]]*\]", "", match["at"] or "")  # `[...]`: inside a list or table
        path = prefix + tuple(re.findall(r"\.([^.]+)", at))
        unknown = re.match(r"Object contains unknown field `(?P<key>.*)`", match["what"])
        if unknown:
            return self._unknown((*path, unknown["key"]))
        return self._error(path, _lookup(self.data, path), match["what"])

    def _where(self, path: tuple[str, ...]) -> str:
        source = self.source_of(path)
        if source.startswith("env "):
            return f"environment variable {source[4:]}"
        return source

    def _spell(self, path: tuple[str, ...], *, like: tuple[str, ...]) -> str:
        """``path`` written the way the user wrote ``like``: a dotted key or a variable name."""
        if self.source_of(like).startswith("env "):
            return "VERSATIL_" + "_".join(path).upper()
        return format_key(path)

    def _unknown(self, path: tuple[str, ...]) -> ConfigError:
        import difflib

        if len(path) == 1:
            known, scope = [*_SECTIONS, "agents"], "the sections are"
        elif path[:2] == ("agents", "names"):
            known, scope = list(HARNESSES), "the harnesses are"
        elif len(path) == 2 and path[0] == "agents":
            known = list(HarnessSettings.__struct_fields__)
            scope = "[agents] has agent tables and"
        elif path[0] == "agents":
            known, scope = list(AgentSettings.__struct_fields__), "an agent has only"
        else:
            known = list(_SECTIONS[path[0]].__struct_fields__)
            scope = f"[{path[0]}] has"
        close = difflib.get_close_matches(path[-1], known, n=1)
        hint = f" (perhaps {self._spell((*path[:-1], close[0]), like=path)})" if close else ""
        return ConfigError(
            f"{self._where(path)}: unknown key {format_key(path)}{hint}; "
            f"{scope} {', '.join(known)}."
        )

    def _error(self, path: tuple[str, ...], value: Any, detail: str | None) -> ConfigError:
        expected = _expected(path) or (detail[0].lower() + detail[1:] if detail else "valid")
        return ConfigError(
            f"{self._where(path)}: {format_key(path)} must be {expected}, "
            f"got {format_value(value)}."
        )


def _lookup(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, Mapping) or key not in data:
            return None
        data = data[key]
    return data


def _expected(path: tuple[str, ...]) -> str | None:
    """What a key accepts, in words: the ``description`` next to its constraint in the model."""
    import typing

    if path == ("agents",):
        return 'a table of agents ([agents."Name"] with priority = N) and agent settings'
    if len(path) == 1:
        return f"a table of settings ([{path[0]}])" if path[0] in _SECTIONS else None
    if path[:2] == ("agents", "names") and len(path) == 3:
        path = ("agents", "name")  # every harness's name is checked like the shared one
    if len(path) == 2 and path[0] == "agents" and path[1] in _HARNESS_KEYS:
        model: type[msgspec.Struct] = HarnessSettings
    elif path[0] == "agents":
        model = AgentSettings
        if len(path) == 2:
            return "a table (priority = N)"
    elif path[0] in _SECTIONS:
        model = _SECTIONS[path[0]]
    else:
        return None
    hint = typing.get_type_hints(model, include_extras=True).get(path[-1])
    for meta in typing.get_args(hint)[1:]:
        if isinstance(meta, Meta) and meta.description:
            return meta.description
    return None


def _read_repo_file(path: Path) -> bytes | None:
    """The bytes of the repository's ``.versatil``, or None when there is none.

    It belongs to the repository, not to the state directory, so its owner is not checked
    (a clone is the cloner's), and a symlink is followed as git checks it out. But it is
    opened ``O_NONBLOCK`` and must be a regular file: a FIFO there would otherwise hang every
    ``versatil lock`` and, through the hook, every ``git commit``.
    """
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read ({exc.strerror or exc}).") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            # A directory named `.versatil` is not ours to read: when the repository is the
            # home directory (a dotfiles repo), the repository file is the state directory.
            return None
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
            raise ConfigError(f"{path} is {kind}, not a configuration file; remove it.")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read ({exc.strerror or exc}).") from None
    finally:
        os.close(fd)


def _file_layer(path: Path, raw: bytes | None) -> _Layer | None:
    if raw is None:
        return None
    import tomllib

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})."
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_message(path, str(exc))) from None
    return _Layer(data, str(path))


def _toml_message(path: Path, message: str) -> str:
    match = re.fullmatch(
        r"(?P<what>.*?) \(at (?:line (?P<line>\d+), column \d+|end of document)\)", message
    )
    what = match["what"] if match else message
    what = what[:1].lower() + what[1:]
    if match and match["line"]:
        return f"{path}: line {match['line']} is not valid TOML ({what})."
    return f"{path} is not valid TOML ({what})."


# The environment and the command line ---------------------------------------------------------

# Not configuration keys, whatever they hold; listed so nobody mistakes them for an oversight.
_NOT_CONFIG = frozenset({"VERSATIL_HOME", "VERSATIL_AGENT", "VERSATIL_FAULT", "VERSATIL_DEBUG"})
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _env_layer(environ: Mapping[str, str]) -> _Layer:
    data: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    for name in sorted(environ):
        if not name.startswith("VERSATIL_") or name in _NOT_CONFIG or not environ[name].strip():
            continue
        rest = name[len("VERSATIL_") :]
        if rest.startswith("AGENTS_"):
            path = _agents_variable(name)
            table = data.setdefault("agents", {})
            if len(path) == 3:
                table = table.setdefault("names", {})
            table[path[-1]] = _parse_text(environ[name], path)
            origins[path] = f"env {name}"
            continue
        section = next((s for s in _SECTIONS if rest.startswith(s.upper() + "_")), None)
        if section is None:
            continue
        key = rest[len(section) + 1 :].lower()
        data.setdefault(section, {})[key] = _parse_text(environ[name], (section, key))
        origins[(section, key)] = f"env {name}"
    return _Layer(data, "environment", origins)


def _agents_variable(name: str) -> tuple[str, ...]:
    """The key a ``VERSATIL_AGENTS_*`` variable sets: a harness setting, or a harness's name."""
    key = name[len("VERSATIL_AGENTS_") :].lower()
    if key.startswith("names_") and key[len("names_") :] in HARNESSES:
        return ("agents", "names", key[len("names_") :])
    if key in _HARNESS_KEYS and key != "names":
        return ("agents", key)
    import difflib

    known = [f"VERSATIL_AGENTS_{k.upper()}" for k in _HARNESS_KEYS if k != "names"]
    known += [f"VERSATIL_AGENTS_NAMES_{tool.upper()}" for tool in HARNESSES]
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f"perhaps {close[0]}; " if close else ""
    raise ConfigError(
        f"environment variable {name} is not a configuration key ({hint}the [agents] settings "
        f"are wait_on_edit, on_error, name, names.HARNESS and subagents); per-agent priorities "
        f'cannot be set from the environment: set [agents."Name"] priority in {REPO_FILE} or '
        "config.toml."
    )


def _override_layer(overrides: Mapping[str, Any]) -> _Layer:
    data: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        try:
            path = parse_key(dotted)
        except ConfigError as exc:
            raise ConfigError(f"{COMMAND_LINE}: {exc}") from None
        table = data
        for key in path[:-1]:
            nested = table.setdefault(key, {})
            if not isinstance(nested, dict):
                raise ConfigError(f"{COMMAND_LINE}: {dotted} is set twice, as a value and a table.")
            table = nested
        table[path[-1]] = _parse_text(value, path) if isinstance(value, str) else value
    return _Layer(data, COMMAND_LINE)


def _parse_text(text: str, path: tuple[str, ...]) -> Any:
    """A value typed as text, parsed by the type of its key's default.

    Text that does not parse is returned as is, so validation reports it with the key's
    expected form instead of a second, differently worded error.
    """
    text = text.strip()
    default = _LEAF_DEFAULTS.get(path, 0 if _is_agent_leaf(path) else "")
    if isinstance(default, bool):
        lowered = text.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else text
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            return text
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            return text
    if isinstance(default, list):
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


_LEAF_DEFAULTS: dict[tuple[str, ...], Any] = _leaves(Config())


# Keys and values as users write them ---------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_KEY_PART = re.compile(r'"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[A-Za-z0-9_-]+)')


def format_key(path: tuple[str, ...]) -> str:
    """A dotted key, quoting parts as TOML does: ``agents."Dana.DB".priority``."""
    return ".".join(part if _BARE_KEY.fullmatch(part) else _quote(part) for part in path)


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def parse_key(dotted: str) -> tuple[str, ...]:
    """The parts of a dotted key; parts with dots or spaces are double-quoted as in TOML."""
    parts: list[str] = []
    position = 0
    while True:
        match = _KEY_PART.match(dotted, position)
        if match is None:
            raise ConfigError(
                f"{dotted!r} is not a configuration key (write section.key, e.g. "
                f"collision_detection.lock_timeout, quoting names with dots: "
                f'agents."Dana.DB".priority).'
            )
        quoted = match["quoted"]
        parts.append(re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else match["bare"])
        position = match.end()
        if position == len(dotted):
            return tuple(parts)
        if dotted[position] != ".":
            raise ConfigError(
                f"{dotted!r} is not a configuration key (expected a dot after "
                f"{dotted[:position]!r})."
            )
        position += 1


def format_value(value: Any, *, limit: int = 80) -> str:
    """A value as it would be written in TOML (shortened past ``limit`` characters)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        import json

        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, float) and not math.isfinite(value):
        text = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    elif isinstance(value, int | float):
        text = repr(value)
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(format_value(item, limit=limit) for item in value) + "]"
    elif isinstance(value, Mapping):
        text = "a table" if value else "{}"
    elif value is None:
        text = "nothing"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
