"""The ``versatil`` click application: parse, call the public API, print, map errors to exit
codes. (The entry point, ``versatil_fs.cli.main``, hands ``agent-hook`` off before this loads.)

Subcommand modules are imported only when their command runs (``LazyGroup``), so ``versatil
lock`` never pays for watchdog, yaml or rich; see bench/ for the start-up figures.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from versatil_fs.cli.common import echo_json, json_requested
from versatil_fs.errors import VersatilError

__all__ = ["COMMANDS", "LazyGroup", "cli", "printable_streams", "run_cli"]


# name -> "module:attribute"; the module is imported when the command is looked up.
COMMANDS: dict[str, str] = {
    "lock": "versatil_fs.cli.locks:lock",
    "unlock": "versatil_fs.cli.locks:unlock",
    "release": "versatil_fs.cli.locks:release",
    "locks": "versatil_fs.cli.locks:locks",
    "run": "versatil_fs.cli.run:run",
    "monitor": "versatil_fs.cli.monitor:monitor",
    "checkpoint": "versatil_fs.cli.checkpoint:checkpoint",
    "hook": "versatil_fs.cli.hook:hook",
    "wave": "versatil_fs.cli.wave:wave",
    "logs": "versatil_fs.cli.logs:logs",
    "config": "versatil_fs.cli.config:config",
    "store": "versatil_fs.cli.store:store",
    "demo": "versatil_fs.cli.demo:demo",
    "agent-hook": "versatil_fs.cli.agent_hook:agent_hook",
    "integrate": "versatil_fs.cli.integrate:integrate",
    "who": "versatil_fs.cli.who:who",
    "mcp": "versatil_fs.cli.mcp:mcp",
    "completion": "versatil_fs.cli.completion:completion",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, target in COMMANDS.items() if _available(target))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise  # a missing dependency inside the module is a real error
            return None
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command


def _available(target: str) -> bool:
    # Only for the --help listing: a command whose module is not in this build is not offered.
    import importlib.util

    return importlib.util.find_spec(target.partition(":")[0]) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-C", "directory", type=click.Path(file_okay=False), help="Run as if started in DIRECTORY."
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="versatil-fs", message="versatil %(version)s")
@click.pass_context
def cli(ctx: click.Context, directory: str | None, debug: bool) -> None:
    """Coordinate several coding agents on one git repository."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if directory:
        try:
            os.chdir(directory)
        except OSError as exc:
            raise click.BadParameter(f"cannot enter {directory}: {exc.strerror}.") from exc


def run_cli(group: click.Command, args: list[str] | None = None, prog: str = "versatil") -> int:
    """Run a click command and turn every outcome into an exit code; no tracebacks for users.

    A command given ``--json`` that is refused or fails also prints the error as one JSON
    object on stdout (:func:`_json_error`); the sentence still goes to stderr.
    """
    debug = "--debug" in (args if args is not None else sys.argv[1:])
    wanted = json_requested()
    token = wanted.set(False)
    try:
        return _run(group, args, prog, debug)
    finally:
        wanted.reset(token)


def _json_error(kind: str, message: str, exit_code: int, data: dict[str, Any] | None = None,
                ) -> None:
    """Print a refusal or failure as data, when the command was asked for --json: scripts
    parse stdout, and an empty stdout said nothing about who holds what."""
    if not json_requested().get():
        return
    document = data if data is not None else {
        "error": kind, "message": message, "exit_code": exit_code,
    }
    try:
        echo_json(document)
    except (BrokenPipeError, OSError):
        pass  # the sentence on stderr and the exit code still tell it


def _run(group: click.Command, args: list[str] | None, prog: str, debug: bool) -> int:
    try:
        result = group.main(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        # One sentence, not click's Usage / Try / blank / Error block: scripts and agents
        # read stderr, and the command's --help is one call away.
        where = exc.ctx.command_path if exc.ctx is not None else prog
        message = " ".join(exc.format_message().split()).rstrip(".")
        message = message[:1].lower() + message[1:]
        sentence = f"{where}: {message} (`{where} --help` shows how to call it)."
        _json_error("UsageError", sentence, exc.exit_code)
        print(sentence, file=sys.stderr)
        return exc.exit_code
    except click.ClickException as exc:
        _json_error("UsageError", exc.format_message(), exc.exit_code)
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        print(f"{prog}: interrupted.", file=sys.stderr)
        return 130
    except VersatilError as exc:
        if debug:
            raise
        _json_error(type(exc).__name__, exc.for_cli(), exc.exit_code, exc.as_data())
        print(f"{prog}: {exc.for_cli()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `versatil logs | head`: the reader went away; that is not an error of ours.
        _silence_stdout()
        return 0
    except Exception as exc:
        if debug:
            raise
        # A bug of ours, not the user's: still one sentence, and the way to the traceback.
        sentence = (f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for "
                    "the traceback, and please report it)")
        _json_error("InternalError", sentence, 70)
        print(f"{prog}: {sentence}.", file=sys.stderr)
        return 70
    return result if isinstance(result, int) else 0


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _printable(error: UnicodeError) -> tuple[str, int]:
    """An encoding error handler: a byte of a file name that is not UTF-8 (surrogate escape
    U+DC80..U+DCFF, as ``os.fsdecode`` makes it) prints as ``\\xNN``, the form the event logs
    and ``--json`` use; any other unencodable character as ``\\uNNNN``."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text = error.object[error.start : error.end]
    return "".join(
        f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else f"\\u{ord(c):04x}"
        for c in text
    ), error.end


def printable_streams() -> None:
    # Without this, one file name that is not UTF-8 in any line of output (a lock, a
    # checkpoint's file list, a monitor report) is a UnicodeEncodeError: exit 70 mid-output.
    import codecs
    import io

    codecs.register_error("versatil.printable", _printable)
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="versatil.printable")
