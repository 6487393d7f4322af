"""Each harness's MCP server registration, as data: where versatil's ``versatil`` server entry
goes in the project's file, and the pure edits that put it in or take it out. No I/O:
:mod:`versatil_fs.agents.integrate` reads and writes, and keeps what ``--remove`` needs.

Three harnesses keep their MCP servers in a JSON ``mcpServers`` object (Claude Code's
``.mcp.json``, Gemini CLI's ``.gemini/settings.json`` beside its hooks, Cursor's
``.cursor/mcp.json``); Codex in TOML (``[mcp_servers.<name>]`` in ``.codex/config.toml``). The
entry is named ``versatil`` and runs ``<versatil> mcp --harness <harness>``; it is recognised as
versatil's by that command (:func:`is_ours`), so a user's own server named ``versatil`` is
refused, never overwritten.

The TOML file is edited as text so that the rest of it stays byte for byte (comments, order,
layout): only the lines of the ``[mcp_servers.versatil]`` table (and its sub-tables) are
replaced, or the table is appended. The edit is then checked by parsing both versions
(``tomllib``): everything but versatil's table must read the same, or the file is refused (a
``versatil`` server defined with dotted keys or inline, a multi-line string that looks like a
table header). No TOML library that keeps formatting is needed for one table.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from versatil_fs.errors import Refused

__all__ = [
    "DOCS",
    "SERVER",
    "is_ours",
    "json_command",
    "json_with",
    "json_without",
    "toml_command",
    "toml_with",
    "toml_without",
]

SERVER = "versatil"

# Where each harness reads a project's MCP servers (the file is hook_paths.mcp_path's).
DOCS: dict[str, str] = {
    # "project scope": .mcp.json at the project root, {"mcpServers": {name: {command, args,
    # env}}}; Claude Code asks each user to approve a project's servers before first use.
    "claude": "https://code.claude.com/docs/en/mcp",
    # [mcp_servers.<name>] command/args in ~/.codex/config.toml, or .codex/config.toml in a
    # trusted project; startup_timeout_sec defaults to 10 s.
    "codex": "https://developers.openai.com/codex/mcp",
    # "mcpServers" in settings.json (~/.gemini/ or the project's .gemini/): command, args, env,
    # cwd, timeout, trust.
    "gemini": "https://geminicli.com/docs/tools/mcp-server",
    # .cursor/mcp.json in the project (~/.cursor/mcp.json globally): {"mcpServers": {...}}.
    "cursor": "https://cursor.com/docs/mcp",
}


def is_ours(entry: object) -> bool:
    """Whether a server entry runs ``versatil mcp`` (whichever versatil): the one mark of
    versatil's entry, so an older install at another path is found and replaced."""
    if not isinstance(entry, dict):
        return False
    command, args = entry.get("command"), entry.get("args")
    if not isinstance(command, str) or not isinstance(args, list):
        return False
    words = [str(a) for a in args]
    if "mcp" not in words:
        return False
    return os.path.basename(command) == "versatil" or "versatil_fs" in words


def _entry(argv: Sequence[str]) -> dict[str, Any]:
    return {"command": argv[0], "args": list(argv[1:])}


# JSON: {"mcpServers": {"versatil": {...}}} -------------------------------------------------------
def json_with(doc: dict[str, Any], argv: Sequence[str], *, where: Path) -> dict[str, Any]:
    """``doc`` with versatil's server entry (in the place of an earlier one, else last)."""
    new: dict[str, Any] = json.loads(json.dumps(doc))
    servers = new.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise Refused(f"{where}: its \"mcpServers\" is not a JSON object, so versatil cannot "
                      "add its server; fix it by hand, then run the command again.")
    current = servers.get(SERVER)
    if current is not None and not is_ours(current):
        raise Refused(f"{where} already has an MCP server named {SERVER!r} that is not "
                      "versatil's; rename it, then run the command again.")
    servers[SERVER] = _entry(argv)  # an existing key keeps its place in the object
    return new


def json_without(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` without versatil's server entry; an ``mcpServers`` it leaves empty goes too."""
    new: dict[str, Any] = json.loads(json.dumps(doc))
    servers = new.get("mcpServers")
    if isinstance(servers, dict) and is_ours(servers.get(SERVER)):
        del servers[SERVER]
        if not servers:
            del new["mcpServers"]
    return new


def json_command(doc: dict[str, Any]) -> list[str] | None:
    """The argv of versatil's server entry in ``doc``, or None."""
    servers = doc.get("mcpServers")
    entry = servers.get(SERVER) if isinstance(servers, dict) else None
    if not is_ours(entry):
        return None
    assert isinstance(entry, dict)
    return [entry["command"], *map(str, entry["args"])]


# TOML: [mcp_servers.versatil] ---------------------------------------------------------------------
_HEADER = re.compile(r"^\s*\[")
_OURS = re.compile(r"""^\s*\[\s*mcp_servers\s*\.\s*(?:versatil|"versatil"|'versatil')\s*[\].]""")


def _parse(text: str, where: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise Refused(f"{where} is not valid TOML ({exc}); fix it, then run `versatil "
                      "integrate codex` again.") from None


def _decode(data: bytes, where: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(f"{where} is not UTF-8 text, so versatil leaves it alone.") from None


def _others(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without versatil's server (and without an ``mcp_servers`` left empty)."""
    rest = dict(doc)
    servers = rest.get("mcp_servers")
    if isinstance(servers, dict) and SERVER in servers:
        servers = {k: v for k, v in servers.items() if k != SERVER}
        if servers:
            rest["mcp_servers"] = servers
        else:
            del rest["mcp_servers"]
    return rest


def _blocks(lines: list[str]) -> list[tuple[int, int]]:
    """``(start, end)`` line ranges of versatil's table and its sub-tables: from each header
    to the next header that is not versatil's, without the blank lines before that one."""
    found = []
    i = 0
    while i < len(lines):
        if not _OURS.match(lines[i]):
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not (_HEADER.match(lines[end]) and not _OURS.match(
                lines[end])):
            end += 1
        stop = end
        while stop > i + 1 and not lines[stop - 1].strip():
            stop -= 1
        found.append((i, stop))
        i = end
    return found


def _quote(text: str) -> str:
    # A JSON string is a TOML basic string (json.dumps escapes ", \\ and control characters,
    # and \\uXXXX means the same in both).
    return json.dumps(text, ensure_ascii=False)


def _table(argv: Sequence[str], eol: str) -> list[str]:
    return [
        f"[mcp_servers.{SERVER}]{eol}",
        f"command = {_quote(argv[0])}{eol}",
        f"args = [{', '.join(_quote(a) for a in argv[1:])}]{eol}",
    ]


def _check(before: dict[str, Any], text: str, where: Path) -> dict[str, Any]:
    try:
        after = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        after = None
    if after is None or _others(after) != _others(before):
        raise Refused(
            f"{where} defines its MCP servers in a way versatil cannot edit as one "
            f"[mcp_servers.{SERVER}] table without changing the rest; edit it by hand "
            f"(`versatil mcp --harness codex` is the server's command)."
        )
    return after


def toml_with(data: bytes, argv: Sequence[str], *, where: Path) -> bytes:
    """The file with versatil's ``[mcp_servers.versatil]`` table, the rest byte for byte."""
    text = _decode(data, where)
    before = _parse(text, where)
    current = before.get("mcp_servers", {}).get(SERVER) if isinstance(
        before.get("mcp_servers"), dict) else None
    if current is not None and not is_ours(current):
        raise Refused(f"{where} already has an MCP server named {SERVER!r} that is not "
                      "versatil's; rename it, then run the command again.")
    eol = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    blocks = _blocks(lines)
    table = _table(argv, eol)
    if blocks:
        first = blocks[0][0]
        for start, stop in reversed(blocks):
            del lines[start:stop]
        lines[first:first] = table
        new = "".join(lines)
    else:
        new = text
        if new and not new.endswith(("\n", "\r")):
            new += eol
        if new.strip():
            new += eol  # one blank line between the user's last table and versatil's
        new += "".join(table)
    after = _check(before, new, where)
    if after.get("mcp_servers", {}).get(SERVER) != _entry(argv):
        raise Refused(f"{where}: versatil's [mcp_servers.{SERVER}] table did not read back "
                      "as written; edit it by hand.")
    return new.encode("utf-8")


def toml_without(data: bytes, *, where: Path) -> bytes | None:
    """The file without versatil's table (None when it has none of versatil's)."""
    text = _decode(data, where)
    before = _parse(text, where)
    servers = before.get("mcp_servers")
    if not isinstance(servers, dict) or not is_ours(servers.get(SERVER)):
        return None
    lines = text.splitlines(keepends=True)
    blocks = _blocks(lines)
    if not blocks:
        return None  # versatil's entry, but not as a table of its own: left to the user
    for start, stop in reversed(blocks):
        del lines[start:stop]
        # The blank line an install put before an appended table goes with it.
        if start == len(lines) and start > 0 and not lines[start - 1].strip():
            del lines[start - 1]
    new = "".join(lines)
    _check(before, new, where)
    return new.encode("utf-8")


def toml_command(data: bytes, *, where: Path) -> list[str] | None:
    """The argv of versatil's server in the TOML file, or None."""
    doc = _parse(_decode(data, where), where)
    servers = doc.get("mcp_servers")
    entry = servers.get(SERVER) if isinstance(servers, dict) else None
    if not is_ours(entry):
        return None
    assert isinstance(entry, dict)
    return [entry["command"], *map(str, entry["args"])]
