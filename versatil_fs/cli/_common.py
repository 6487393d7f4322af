"""Small pieces every command module shares: output helpers and the agent option."""

from __future__ import annotations

import sys
from typing import Any

import click
import msgspec

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
agent_option = click.option(
    "--agent",
    metavar="NAME",
    help="Agent name (default: $VERSATIL_AGENT, git config versatil.agent, login name).",
)


def echo_json(value: Any) -> None:
    """Print one JSON document; msgspec Structs are encoded with the same schema as on disk."""
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    sys.stdout.flush()


def echo(line: str = "") -> None:
    click.echo(line)
