"""The configuration model: every section and key, its type, bounds, default and description.

:class:`Config` is the effective configuration (``source_of`` says where each value came from);
:mod:`versatil_fs.config` loads it from the files, the environment and the command line. Dotted
keys are written and parsed here (``agents."Dana.DB".priority``), as messages and
``config show`` spell them. The constraints carry a ``description``: the words an error uses for
what a key accepts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from versatil_fs.errors import ConfigError

__all__ = [
    "DEFAULT",
    "HARNESSES",
    "HARNESS_KEYS",
    "SECTIONS",
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
    "is_agent_leaf",
    "leaves",
    "parse_key",
    "split_agents",
]

DEFAULT = "default"  # the source of a value nobody set

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
    max_checkpoints: _Count = 10  # the user's own, per worktree
    max_automatic: _Count = 20  # safety, wave, run and periodic ones, per worktree
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


class StoreSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where the lock table lives: this machine's state directory, or a PostgreSQL server that
    agents on several machines share (README "Several machines")."""

    backend: Annotated[
        Literal["local", "postgres"], Meta(description='"local" or "postgres"')
    ] = "local"
    # A libpq URL or key=value string (postgresql://user:secret@host/db); its password is never
    # printed (config show, errors).
    url: Annotated[
        str, Meta(max_length=4096, description="a libpq connection URL (postgresql://...)")
    ] = ""
    # The lock space's name on the server; empty: derived from the `origin` remote URL.
    project: Annotated[
        str,
        Meta(
            max_length=200,
            pattern=r"^[^\x00-\x1f\x7f]*$",
            description="a project name (text without control characters, at most 200)",
        ),
    ] = ""
    # How long after the server (re)started a process lease whose liveness key nobody holds
    # still counts as live: the time its process gets to reconnect and take the key again.
    restart_grace: _Seconds = 10.0


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


HARNESS_KEYS = frozenset(HarnessSettings.__struct_fields__)


# `dict=True` lets a Config carry its sources in a plain `_sources` attribute, outside the encoded
# fields: msgspec.json.encode(config) gives just the configuration. The attribute is not
# annotated because the type checkers' dataclass view of a Struct would make it a field.
class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, dict=True):
    """The effective configuration; ``source_of`` says where each value came from."""

    collision_detection: CollisionDetection = msgspec.field(default_factory=CollisionDetection)
    checkpoints: CheckpointSettings = msgspec.field(default_factory=CheckpointSettings)
    parallel: Parallel = msgspec.field(default_factory=Parallel)
    guard: Guard = msgspec.field(default_factory=Guard)
    store: StoreSettings = msgspec.field(default_factory=StoreSettings)
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
        if path not in leaves(self) and not is_agent_leaf(path) and not _is_names_leaf(path):
            raise KeyError(f"{dotted_key} is not a configuration key")
        sources: dict[tuple[str, ...], str] = getattr(self, "_sources", {})
        return sources.get(path, DEFAULT)

    def sources(self) -> dict[str, str]:
        """Every dotted key of :meth:`flat` mapped to where its value came from."""
        recorded: dict[tuple[str, ...], str] = getattr(self, "_sources", {})
        return {format_key(path): recorded.get(path, DEFAULT) for path in leaves(self)}

    def flat(self) -> dict[str, Any]:
        """Every effective value by dotted key, e.g. ``{"parallel.max_concurrent_agents": 5}``."""
        return {format_key(path): value for path, value in leaves(self).items()}


SECTIONS: dict[str, type[msgspec.Struct]] = {
    "collision_detection": CollisionDetection,
    "checkpoints": CheckpointSettings,
    "parallel": Parallel,
    "guard": Guard,
    "store": StoreSettings,
}


def leaves(config: Config) -> dict[tuple[str, ...], Any]:
    """Every value of ``config`` by key path, in the order ``config show`` lists them."""
    found: dict[tuple[str, ...], Any] = {}
    for section in SECTIONS:
        settings = getattr(config, section)
        for key in settings.__struct_fields__:
            found[(section, key)] = getattr(settings, key)
    harness = config.harness
    for key in harness.__struct_fields__:
        if key != "names":
            found[("agents", key)] = getattr(harness, key)
        elif not harness.names:
            found[("agents", "names")] = {}
    for tool, name in sorted(harness.names.items()):
        found[("agents", "names", tool)] = name
    for name, agent in config.agents.items():
        found[("agents", name, "priority")] = agent.priority
    return found


def is_agent_leaf(path: tuple[str, ...]) -> bool:
    return len(path) == 3 and path[0] == "agents" and path[2] == "priority"


def _is_names_leaf(path: tuple[str, ...]) -> bool:
    return len(path) == 3 and path[:2] == ("agents", "names") and path[2] in HARNESSES


def split_agents(table: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The raw ``[agents]`` table as (harness settings, agent tables)."""
    settings = {key: value for key, value in table.items() if key in HARNESS_KEYS}
    agents = {key: value for key, value in table.items() if key not in HARNESS_KEYS}
    return settings, agents


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
