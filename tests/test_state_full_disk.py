"""A full disk during an atomic state write, on pyfakefs' disk with a size limit: the case a
real disk cannot give a test cheaply (filling a real file system takes root or a mount).

What a user relies on: the old file is still whole, no temporary file is left beside it, and
the error is one ``StateError`` sentence naming the file.

pyfakefs replaces ``os`` in every loaded module for every thread, so each case runs in a child
interpreter of its own: a helper thread an earlier test left behind (a doorbell, a timed flock
wait) must never find itself on the fake disk.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

_SETUP = """
import os
from pathlib import Path
from pyfakefs.fake_filesystem_unittest import Patcher
from versatil_fs.errors import StateError
from versatil_fs.state import StateDir

with Patcher() as patcher:
    fs = patcher.fs
    os.chmod("/", 0o755)  # pyfakefs makes its root 0777, which the parent check rightly refuses
    fs.create_dir("/srv", perm_bits=0o755)
    fs.create_dir("/srv/home", perm_bits=0o755)
    fs.set_disk_usage(64 * 1024, path="/srv")
    state = StateDir(Path("/srv/home/.versatil"))
"""


def _run(body: str) -> None:
    script = _SETUP + textwrap.indent(textwrap.dedent(body), "    ")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_a_full_disk_leaves_the_old_state_file_whole() -> None:
    _run("""
        target = state.subdir("waves") / "run.json"
        state.write_atomic(target, b"old state\\n", durable=True)
        try:
            state.write_atomic(target, b"x" * (128 * 1024), durable=True)
        except StateError as exc:
            message = str(exc).strip()
        else:
            raise AssertionError("a write larger than the disk succeeded")
        assert "run.json" in message and "\\n" not in message, message
        assert target.read_bytes() == b"old state\\n"
        assert sorted(os.listdir(target.parent)) == ["run.json"], os.listdir(target.parent)
    """)


def test_a_write_that_fits_after_a_full_disk_succeeds() -> None:
    _run("""
        target = state.subdir("checkpoints") / "cp.json"
        try:
            state.write_atomic(target, b"y" * (128 * 1024))
        except StateError:
            pass
        else:
            raise AssertionError("a write larger than the disk succeeded")
        assert not target.exists()
        state.write_atomic(target, b"fits\\n")  # the failed write gave back the space it took
        assert target.read_bytes() == b"fits\\n"
    """)
