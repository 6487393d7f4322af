"""``versatil completion bash|zsh|fish``: print click's shell completion script.

The script calls ``versatil`` back with ``_VERSATIL_COMPLETE`` set, which click answers before
any command runs; this command only prints it, so installing is one line in the shell's rc.
"""

from __future__ import annotations

import click

from versatil_fs.cli.common import echo

__all__ = ["SHELLS", "completion"]

SHELLS = ("bash", "zsh", "fish")

# Where each shell reads it from, for the help text and the README.
_INSTALL = {
    "bash": 'eval "$(versatil completion bash)"   # in ~/.bashrc',
    "zsh": 'eval "$(versatil completion zsh)"    # in ~/.zshrc',
    "fish": "versatil completion fish > ~/.config/fish/completions/versatil.fish",
}


@click.command()
@click.argument("shell", metavar="SHELL", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish).

    \b
    bash:  eval "$(versatil completion bash)"   in ~/.bashrc
    zsh:   eval "$(versatil completion zsh)"    in ~/.zshrc
    fish:  versatil completion fish > ~/.config/fish/completions/versatil.fish
    """
    from click.shell_completion import get_completion_class

    from versatil_fs.cli.app import cli

    kind = get_completion_class(shell)
    assert kind is not None  # every name in SHELLS is one click knows
    # The variable and program name must be what click derives for `versatil` itself:
    # the script sets _VERSATIL_COMPLETE and runs `versatil`, and the entry point answers.
    echo(kind(cli, {}, "versatil", "_VERSATIL_COMPLETE").source())
