"""Small pieces every command module shares: output helpers and the agent option."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import click
import msgspec

__all__ = [
    "agent_option",
    "echo",
    "echo_json",
    "json_lines_option",
    "json_option",
    "json_requested",
    "restore_options",
    "say_library_notices",
]


# Whether the command being run was given --json: set by the option itself, read by
# cli/app.py's error handling, which then prints a refusal or failure as one JSON object on
# stdout for every command that takes --json (one mechanism, not one per command).
_JSON_REQUESTED: ContextVar[bool] = ContextVar("versatil_json_requested", default=False)


def json_requested() -> ContextVar[bool]:
    """The flag --json sets for this run of the command line (cli/app.py resets it)."""
    return _JSON_REQUESTED


def _remember_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        _JSON_REQUESTED.set(True)
    return value


def _json_flag(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    # Eager: processed before the other options, so a bad --wait after --json is still
    # answered in JSON.
    return click.option(
        "--json", "as_json", is_flag=True, is_eager=True, callback=_remember_json,
        help=help_text + " A refusal or failure is one JSON object too (error, message, "
        "exit_code and the error's data), with the same exit code.",
    )


json_option = _json_flag("Print one JSON object.")
json_lines_option = _json_flag("One JSON object per line.")
agent_option = click.option(
    "--agent",
    metavar="NAME",
    help="Agent name (default: $VERSATIL_AGENT, git config versatil.agent, login name).",
)


def echo_json(value: Any) -> None:
    """Print one JSON document; msgspec Structs are encoded with the same schema as on disk.

    A file name that is not UTF-8 (a str with surrogate escapes, from ``os.fsdecode``) cannot
    be JSON: it goes out in the printable form the event logs use (``\\xff``).
    """
    try:
        document = msgspec.json.encode(value)
    except UnicodeEncodeError:
        from versatil_fs.events import printable

        document = msgspec.json.encode(printable(value))
    sys.stdout.write(document.decode() + "\n")
    sys.stdout.flush()


def echo(line: str = "") -> None:
    click.echo(line)


def restore_options(command: Callable[..., None]) -> Callable[..., None]:
    """The ID argument and options of a restore, shared with ``versatil-daemon``."""
    for decorate in reversed((
        click.argument("checkpoint_id", metavar="ID"),
        click.option(
            "--path", "paths", multiple=True, metavar="P",
            help="Restore only this file or directory (repeatable).",
        ),
        click.option(
            "--agent", metavar="NAME",
            help="Restore only the files this agent modified since the checkpoint (whose "
            "files; the restorer is you: $VERSATIL_AGENT or login).",
        ),
        click.option(
            "--wave", type=click.IntRange(min=0), metavar="N",
            help="Restore only the files wave N modified since the checkpoint.",
        ),
        click.option(
            "--force", is_flag=True,
            help="Overwrite files other agents have write-locked; use a checkpoint made in "
            "another worktree.",
        ),
        json_option,
    )):
        command = decorate(command)
    return command


def say_library_notices() -> None:
    """Print what the library says on its loggers (a prune nobody asked for, a step done but
    not logged) as ``versatil: ...`` lines on stderr: the library only logs, as a library
    should, and its CLI is what shows the user. Called by the commands that can prune
    (checkpoint, wave, run, the daemon's): ``logging`` costs ~10 ms to import, which the lock
    and guard commands do not pay."""
    import logging

    root = logging.getLogger("versatil_fs")
    if any(getattr(h, "versatil_cli", False) for h in root.handlers):
        return  # once per process (the tests' in-process runner calls commands many times)

    class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
        # Whatever sys.stderr is when a line is written: click's test runner swaps it per
        # call, and a handler bound to the stream of its creation would write to a dead one.
        def emit(self, record: logging.LogRecord) -> None:
            self.stream = sys.stderr
            super().emit(record)

    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("versatil: %(message)s"))
    handler.versatil_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
