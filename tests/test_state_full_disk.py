"""A full disk during an atomic state write, on pyfakefs' disk with a size limit: the case a
real disk cannot give a test cheaply (filling a real file system takes root or a mount).

What a user relies on: the old file is still whole, no temporary file is left beside it, and
the error is one ``StateError`` sentence naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pyfakefs.fake_filesystem import FakeFilesystem

from versatil_fs.errors import StateError
from versatil_fs.state import StateDir


@pytest.fixture
def small_disk(fs: FakeFilesystem) -> tuple[FakeFilesystem, StateDir]:
    os.chmod("/", 0o755)  # pyfakefs makes its root 0777, which the parent check rightly refuses
    fs.create_dir("/srv", perm_bits=0o755)
    fs.create_dir("/srv/home", perm_bits=0o755)
    fs.set_disk_usage(64 * 1024, path="/srv")
    return fs, StateDir(Path("/srv/home/.versatil"))


def test_a_full_disk_leaves_the_old_state_file_whole(
    small_disk: tuple[FakeFilesystem, StateDir],
) -> None:
    _, state = small_disk
    target = state.subdir("waves") / "run.json"
    state.write_atomic(target, b"old state\n", durable=True)
    with pytest.raises(StateError) as raised:
        state.write_atomic(target, b"x" * (128 * 1024), durable=True)
    assert "run.json" in str(raised.value)
    assert "\n" not in str(raised.value).strip()
    assert target.read_bytes() == b"old state\n"
    assert sorted(os.listdir(target.parent)) == ["run.json"]  # no temporary file left behind


def test_a_write_that_fits_after_a_full_disk_succeeds(
    small_disk: tuple[FakeFilesystem, StateDir],
) -> None:
    _, state = small_disk
    target = state.subdir("checkpoints") / "cp.json"
    with pytest.raises(StateError):
        state.write_atomic(target, b"y" * (128 * 1024))
    assert not target.exists()
    state.write_atomic(target, b"fits\n")  # the failed write gave back the space it took
    assert target.read_bytes() == b"fits\n"
