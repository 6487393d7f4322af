"""Loading the configuration: where each value comes from, and errors that name the culprit.

The model (every section and key, with its type, bounds and default) is
:mod:`versatil_fs.config_model`; its public names are re-exported here, so callers use
``versatil_fs.config`` for both.

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
(``COLLISION_DETECTION_``, ``CHECKPOINTS_``, ``PARALLEL_``, ``GUARD_``, ``STORE_``,
``AGENTS_``) is a
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

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import Meta

from versatil_fs.config_model import (
    DEFAULT,
    HARNESS_KEYS,
    HARNESSES,
    SECTIONS,
    AgentSettings,
    CheckpointSettings,
    CollisionDetection,
    Config,
    Guard,
    HarnessSettings,
    Parallel,
    StoreSettings,
    format_key,
    format_value,
    is_agent_leaf,
    leaves,
    parse_key,
    split_agents,
)
from versatil_fs.errors import ConfigError, VersatilError

if TYPE_CHECKING:
    from versatil_fs.state import StateDir

# The model's names are re-exported: `versatil_fs.config` is where callers find the configuration.
__all__ = [
    "DEFAULT",
    "HARNESSES",
    "AgentSettings",
    "CheckpointSettings",
    "CollisionDetection",
    "Config",
    "Guard",
    "HarnessSettings",
    "Parallel",
    "StoreSettings",
    "format_key",
    "format_value",
    "load",
    "parse_key",
    "store_backend",
]

REPO_FILE = ".versatil"
COMMAND_LINE = "command line"


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
    merged["harness"], merged["agents"] = split_agents(merged.get("agents", {}))
    config = msgspec.convert(merged, Config)
    setattr(config, "_sources", sources)  # noqa: B010 - not a declared field, see Config
    return config


def store_backend(
    repo_root: Path | None, *, state: StateDir, env: Mapping[str, str] | None = None
) -> str:
    """``store.backend`` as the sources set it (the highest wins), nothing else validated.

    What a configuration that does not load still says about where the lock table is: a
    broken key elsewhere must not stop ``versatil locks`` or the commit guard from reading the
    local table, but must not send a PostgreSQL user's commands to the local one either.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    found = "local"
    user_file = state.config_file
    sources: list[tuple[Path, bytes | None]] = []
    try:
        sources.append((user_file, state.read_bytes(user_file, create_dirs=False)))
    except VersatilError:
        pass
    if repo_root is not None:
        try:
            repo_file = Path(repo_root) / REPO_FILE
            sources.append((repo_file, _read_repo_file(repo_file)))
        except ConfigError:
            pass
    for path, raw in sources:
        try:
            layer = _file_layer(path, raw)
        except ConfigError:
            continue
        section = layer.data.get("store") if layer is not None else None
        if isinstance(section, Mapping) and isinstance(section.get("backend"), str):
            found = section["backend"]
    variable = environ.get("VERSATIL_STORE_BACKEND", "").strip()
    return variable or found


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
            settings, agents = split_agents(table)
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
        settings, agents = split_agents(agents)
        names = settings.get("names", {})
        if isinstance(names, Mapping):
            for tool, value in names.items():
                if tool not in HARNESSES:
                    raise self._unknown(("agents", "names", tool))
                # One by one, to name the harness: msgspec reports a table's key as `[...]`.
                try:
                    msgspec.convert({"names": {tool: value}}, HarnessSettings)
                except msgspec.ValidationError:
                    raise self._error(("agents", "names", tool), value, None) from None
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
            known, scope = [*SECTIONS, "agents"], "the sections are"
        elif path[:2] == ("agents", "names"):
            known, scope = list(HARNESSES), "the harnesses are"
        elif len(path) == 2 and path[0] == "agents":
            known = list(HarnessSettings.__struct_fields__)
            scope = "[agents] has agent tables and"
        elif path[0] == "agents":
            known, scope = list(AgentSettings.__struct_fields__), "an agent has only"
        else:
            known = list(SECTIONS[path[0]].__struct_fields__)
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
        return f"a table of settings ([{path[0]}])" if path[0] in SECTIONS else None
    if path[:2] == ("agents", "names") and len(path) == 3:
        path = ("agents", "name")  # every harness's name is checked like the shared one
    if len(path) == 2 and path[0] == "agents" and path[1] in HARNESS_KEYS:
        model: type[msgspec.Struct] = HarnessSettings
    elif path[0] == "agents":
        model = AgentSettings
        if len(path) == 2:
            return "a table (priority = N)"
    elif path[0] in SECTIONS:
        model = SECTIONS[path[0]]
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
        section = next((s for s in SECTIONS if rest.startswith(s.upper() + "_")), None)
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
    if key in HARNESS_KEYS and key != "names":
        return ("agents", key)
    import difflib

    known = [f"VERSATIL_AGENTS_{k.upper()}" for k in HARNESS_KEYS if k != "names"]
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
    default = _LEAF_DEFAULTS.get(path, 0 if is_agent_leaf(path) else "")
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


_LEAF_DEFAULTS: dict[tuple[str, ...], Any] = leaves(Config())
