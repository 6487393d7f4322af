"""Where each harness reads its hooks, in this repository and for the user, and what each one
still asks of the user before a new hook runs. Every location cites the page it was read from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from versatil_fs.agents.harnesses import HOOKS
from versatil_fs.errors import UsageError

__all__ = ["MCP_NOTES", "NOTES", "Scope", "base", "config_paths", "mcp_path"]

Scope = Literal["project", "user"]


def _env_dir(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().absolute() if value else default


def base(harness: str, scope: Scope, root: Path) -> Path:
    """The directory a harness's hook file (or Cline's hook directory) hangs below; versatil
    never creates or removes this one itself."""
    return root if scope == "project" else Path.home()


def config_paths(harness: str, scope: Scope, root: Path | None = None) -> tuple[Path, ...]:
    """The files versatil writes for ``harness`` in ``scope`` (``root``: the repository's top
    level, for the project scope). One JSON file, or Cline's one file per hook."""
    home = Path.home()
    if scope == "project":
        if root is None:
            raise UsageError("The project scope needs a repository.")
        base = {
            "claude": root / ".claude" / "settings.json",
            "codex": root / ".codex" / "hooks.json",
            "gemini": root / ".gemini" / "settings.json",
            "cursor": root / ".cursor" / "hooks.json",
            "cline": root / ".clinerules" / "hooks",
            "copilot": root / ".github" / "hooks" / "versatil.json",
        }[harness]
    else:
        base = {
            # https://code.claude.com/docs/en/settings: ~/.claude/settings.json; CLAUDE_CONFIG_DIR
            # moves ~/.claude.
            "claude": _env_dir("CLAUDE_CONFIG_DIR", home / ".claude") / "settings.json",
            # https://developers.openai.com/codex/hooks: ~/.codex/hooks.json ($CODEX_HOME).
            "codex": _env_dir("CODEX_HOME", home / ".codex") / "hooks.json",
            # packages/core/src/utils/paths.ts: GEMINI_CLI_HOME stands in for the home directory.
            "gemini": _env_dir("GEMINI_CLI_HOME", home) / ".gemini" / "settings.json",
            "cursor": home / ".cursor" / "hooks.json",
            # https://docs.cline.bot/customization/hooks: global hooks in ~/Documents/Cline/Hooks/
            # (older releases said ~/Documents/Cline/Rules/Hooks/; the current docs and
            # src/core/storage/disk.ts use Hooks/ directly).
            "cline": home / "Documents" / "Cline" / "Hooks",
            # https://docs.github.com/en/copilot/reference/hooks-reference: *.json in
            # ~/.copilot/hooks/ ($COPILOT_HOME/hooks/).
            "copilot": _env_dir("COPILOT_HOME", home / ".copilot") / "hooks" / "versatil.json",
        }[harness]
    if harness == "cline":
        return tuple(base / spec.event for spec in HOOKS["cline"])
    return (base,)


# What each harness still asks of the user before a new hook runs, said once after an install.
NOTES: dict[tuple[str, Scope], str] = {
    # https://code.claude.com/docs/en/hooks ("Configuration": hooks are snapshotted at start-up;
    # a change made outside Claude Code is applied after review in /hooks).
    **{("claude", scope): "Claude Code reads hooks when a session starts; a running session "
       "asks you to review the change in /hooks" for scope in ("project", "user")},
    # https://developers.openai.com/codex/hooks ("Review and trust hooks"; project hooks load
    # only when the project's .codex/ layer is trusted).
    ("codex", "project"): "Codex runs a new or changed hook only once you trust it in /hooks, "
    "and a project's hooks only in a project you trust",
    ("codex", "user"): "Codex runs a new or changed hook only once you trust it in /hooks",
    # https://geminicli.com/docs/hooks ("Security": project hooks are fingerprinted).
    ("gemini", "project"): "Gemini CLI warns you once before a new project hook first runs",
    # https://docs.cline.bot/customization/hooks ("Enabling hooks" in Cline's settings).
    **{("cline", scope): "Cline runs hooks only with Hooks enabled in its settings" for scope in
       ("project", "user")},
    # https://docs.github.com/en/copilot/how-tos/copilot-cli/customize-copilot/use-hooks: the
    # cloud agent reads .github/hooks from the default branch.
    ("copilot", "project"): "Copilot CLI reads it from the working tree; the cloud agent only "
    "once it is on the default branch",
}


def mcp_path(harness: str, root: Path) -> Path | None:
    """The project file where ``harness`` reads its MCP servers (``root``: the repository's
    top level), or None for a harness without one there (Cline keeps its MCP servers in the
    editor's global storage, Copilot CLI in the user's ``~/.copilot``). Each location is cited
    in :data:`versatil_fs.agents.mcp_config.DOCS`. Gemini CLI's is its hooks file."""
    return {
        "claude": root / ".mcp.json",
        "codex": root / ".codex" / "config.toml",
        "gemini": root / ".gemini" / "settings.json",
        "cursor": root / ".cursor" / "mcp.json",
    }.get(harness)


# What each harness asks before it starts a project's new MCP server, said after an install.
MCP_NOTES: dict[str, str] = {
    # https://code.claude.com/docs/en/mcp ("project scope": approval before first use).
    "claude": "Claude Code asks you to approve a project's MCP servers before it starts them",
    # https://developers.openai.com/codex/mcp: a project's config.toml loads when trusted.
    "codex": "Codex starts a project's MCP servers only in a project you trust",
    "gemini": "Gemini CLI starts it with its next session (/mcp lists it)",
    "cursor": "Cursor asks you to enable a project's new MCP server in its MCP settings",
}
