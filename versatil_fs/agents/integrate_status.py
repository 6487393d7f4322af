"""``versatil integrate --status``: which harnesses run versatil's hook, in this repository and
for the user, and whether the versatil they run still exists."""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from versatil_fs.agents import hook_config as cfg
from versatil_fs.agents import mcp_config as mcpc
from versatil_fs.agents import user_files as files
from versatil_fs.agents.harnesses import HOOKS
from versatil_fs.agents.hook_paths import Scope, config_paths, mcp_path
from versatil_fs.agents.protocol import HARNESSES
from versatil_fs.errors import Refused, UsageError
from versatil_fs.repo import Repository

__all__ = ["Wiring", "status"]


@dataclass(frozen=True)
class Wiring:
    """One harness in one scope, for ``--status``: ``state`` is wired, not wired, stale (it
    points at a versatil that no longer exists, or misses hooks) or unreadable."""

    harness: str
    scope: Scope
    state: str
    path: str
    detail: str = ""
    what: str = "hooks"  # or "mcp": versatil's MCP server entry (this repository's only)


def status(
    harnesses: Iterable[str] = HARNESSES, *, cwd: str | os.PathLike[str] = ".",
    mcp: bool = False,
) -> list[Wiring]:
    """Which harnesses are wired, in this repository (when ``cwd`` is in one) and for the user;
    ``mcp``: also whether this repository registers versatil's MCP server (rows of ``what``
    "mcp")."""
    try:
        root: Path | None = Repository.find(cwd).toplevel
    except UsageError:
        root = None
    found = []
    for harness in harnesses:
        for scope in ("project", "user"):
            if scope == "project" and root is None:
                found.append(Wiring(harness, "project", "not wired", "",
                                    "not in a git repository"))
                continue
            found.append(_wiring(harness, scope, config_paths(harness, scope, root)))
        server_file = mcp_path(harness, root) if mcp and root is not None else None
        if server_file is not None:
            found.append(_server_wiring(harness, server_file))
    return found


def _server_wiring(harness: str, path: Path) -> Wiring:
    """Whether this repository's MCP file for ``harness`` runs versatil's server."""
    def row(state: str, detail: str = "") -> Wiring:
        return Wiring(harness, "project", state, str(path), detail, what="mcp")

    try:
        current = files.read(path)
        if current is None:
            return row("not wired")
        if path.suffix == ".toml":
            argv = mcpc.toml_command(current[0], where=path)
        else:
            argv = mcpc.json_command(cfg.load(current[0], path, harness))
    except Refused as exc:
        return row("unreadable", str(exc))
    if argv is None:
        return row("not wired")
    if not _runs(argv[0]):
        return row("stale", f"points at {argv[0]}, which no longer exists; run `versatil "
                   f"integrate {harness}` again")
    return row("wired", f"runs {shlex.join(argv)}")


def _wiring(harness: str, scope: Scope, paths: tuple[Path, ...]) -> Wiring:
    shown = str(paths[0].parent if harness == "cline" else paths[0])
    try:
        by_event = _installed(harness, paths)
    except Refused as exc:
        return Wiring(harness, scope, "unreadable", shown, str(exc))
    if not by_event:
        return Wiring(harness, scope, "not wired", shown)
    commands = [c for cs in by_event.values() for c in cs]
    gone = sorted({exe for c in commands if not _runs(exe := _executable(c))})
    if gone:
        return Wiring(harness, scope, "stale", shown,
                      f"points at {', '.join(gone)}, which no longer exists; run `versatil "
                      f"integrate {harness}{' --user' if scope == 'user' else ''}` again")
    missing = [spec.event for spec in HOOKS[harness] if spec.event not in by_event]
    if missing:
        return Wiring(harness, scope, "stale", shown,
                      f"misses {', '.join(missing)}; run `versatil integrate {harness}"
                      f"{' --user' if scope == 'user' else ''}` again")
    return Wiring(harness, scope, "wired", shown, f"runs {sorted(set(commands))[0]}")


def _installed(harness: str, paths: tuple[Path, ...]) -> dict[str, list[str]]:
    if harness == "cline":
        found: dict[str, list[str]] = {}
        for path in paths:
            current = files.read(path)
            command = cfg.cline_command(current[0]) if current else None
            if command is not None:
                found[path.name] = [command]
        return found
    current = files.read(paths[0])
    if current is None:
        return {}
    return cfg.commands(cfg.load(current[0], paths[0], harness), harness, cfg.FORMATS[harness])


def _executable(command: str) -> str:
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    return words[0] if words else command


def _runs(executable: str) -> bool:
    if os.path.isabs(executable):
        return os.access(executable, os.X_OK) and os.path.isfile(executable)
    return shutil.which(executable) is not None
