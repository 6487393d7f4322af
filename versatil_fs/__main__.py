"""``python -m versatil_fs``: the ``versatil`` command, for a hook configuration written where
no ``versatil`` script is on the PATH."""

from versatil_fs.cli import main

__all__: list[str] = []

main()
