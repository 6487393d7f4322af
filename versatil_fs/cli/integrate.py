"""``versatil integrate HARNESS [--user] [--remove]`` and ``versatil integrate --status``."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import click

from versatil_fs.cli.common import echo, echo_json, json_option
from versatil_fs.errors import UsageError

__all__ = ["integrate"]


@click.command()
@click.argument("harness", required=False, metavar="[HARNESS]")
@click.option(
    "--user", is_flag=True, help="Wire the user's settings (under $HOME), not this repository's."
)
@click.option("--remove", is_flag=True, help="Take versatil out: the file goes back as it was.")
@click.option("--status", is_flag=True, help="Show which harnesses are wired, here and for you.")
@json_option
def integrate(harness: str | None, user: bool, remove: bool, status: bool, as_json: bool) -> None:
    """Wire versatil's edit-time lock guard into a coding agent's hooks.

    HARNESS is claude, codex, gemini, cursor, cline, copilot or all. The hook each harness runs
    is `versatil agent-hook HARNESS`, at the absolute path of this versatil. Other hooks in the
    file are kept; installing twice changes nothing; --remove puts the file back byte for byte
    (only versatil's entries go if you edited the file since). In this repository it also
    registers `versatil mcp` as the harness's MCP server (claude, codex, gemini, cursor).
    """
    from versatil_fs.agents import integrate as wiring
    from versatil_fs.agents.protocol import HARNESSES

    if status:
        if remove or user:
            raise UsageError(
                "--status shows both scopes and changes nothing; drop --remove and --user."
            )
        rows = wiring.status(wiring.harnesses_named(harness) if harness else HARNESSES,
                             mcp=True)
        if as_json:
            echo_json({"wiring": [dataclasses.asdict(row) for row in rows]})
            return
        _table(rows)
        return
    if harness is None:
        raise UsageError(
            f"Name a harness to wire ({', '.join(HARNESSES)} or all), or use --status."
        )
    names = wiring.harnesses_named(harness)
    changes = (wiring.remove if remove else wiring.install)(names, user=user, mcp=True)
    if as_json:
        echo_json({"changes": [dataclasses.asdict(change) for change in changes]})
        return
    for line in dict.fromkeys(_lines(changes)):  # Cline's six files say one thing once
        echo(line)


# Cline has one file per hook: one line for all six when they all went the same way.
_CLINE = {
    "wired": "wired {n} hook files in {d}",
    "rewired": "rewired {n} hook files in {d}",
    "unchanged": "already wired in {d}; nothing changed",
    "deleted": "removed its {n} hook files from {d}",
    "absent": "not wired in {d}",
}


def _lines(changes: Sequence[object]) -> list[str]:
    from versatil_fs.agents.integrate import Change

    lines = []
    by_harness: dict[str, list[Change]] = {}
    for change in changes:
        assert isinstance(change, Change)
        by_harness.setdefault(change.harness, []).append(change)
    for harness, group in by_harness.items():
        notes = dict.fromkeys(c.note for c in group if c.note)  # the hooks', the MCP server's
        actions = {c.action for c in group}
        if harness == "cline" and len(actions) == 1 and actions <= _CLINE.keys():
            directory = os.path.dirname(group[0].path)
            said = _CLINE[group[0].action].format(n=len(group), d=directory)
            lines.append(f"cline: {said}.")
        else:
            lines.extend(change.message for change in group)
        lines.extend(f"  ({note}.)" for note in notes)
    return lines


def _table(rows: Sequence[object]) -> None:
    from versatil_fs.agents.integrate import Wiring

    header = ("HARNESS", "SCOPE", "STATE", "FILE")
    cells = []
    for row in rows:
        assert isinstance(row, Wiring)
        scope = "this repo" if row.scope == "project" else "user"
        where = row.path or "-"
        harness = f"{row.harness} (mcp)" if row.what == "mcp" else row.harness
        cells.append((harness, scope, row.state, where + (f"  ({row.detail})" if row.detail
                                                               and row.state != "wired" else "")))
    widths = [max(len(r[i]) for r in (header, *cells)) for i in range(3)]
    for r in (header, *cells):
        echo("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3])
