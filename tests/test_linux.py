"""linux.py: each Linux-only call works here, and each takes its fallback where it cannot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from versatil_fs import flock, linux
from versatil_fs.state import StateDir

needs_linux = pytest.mark.skipif(not linux.IS_LINUX, reason="Linux only")


@needs_linux
def test_rename_exchange_swaps_two_names(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"A")
    b.write_bytes(b"B")
    if not linux.exchange_supported():
        pytest.skip("no RENAME_EXCHANGE on this file system")
    linux.rename_exchange(a, b)
    assert (a.read_bytes(), b.read_bytes()) == (b"B", b"A")
    with pytest.raises(FileNotFoundError):
        linux.rename_exchange(a, tmp_path / "missing")


@needs_linux
def test_a_write_lease_tells_whether_anyone_else_has_the_file_open(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_WRONLY)
    try:
        if not linux.nobody_else_has_open(fd):
            pytest.skip("no write leases on this file system")
        with open(path, "rb"):
            assert not linux.nobody_else_has_open(fd)
    finally:
        os.close(fd)


@needs_linux
def test_proc_scans_find_a_flock_holder_and_an_environment(tmp_path: Path) -> None:
    path = tmp_path / "held.lock"
    path.write_bytes(b"")
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys; f = open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX);"
         " print('ok', flush=True); sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env={**os.environ, "VERSATIL_TEST_MARK": f"mark-{os.getpid()}"},
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ok\n"
        assert linux.flock_holder_pid(path) == child.pid
        mark = f"VERSATIL_TEST_MARK=mark-{os.getpid()}".encode()
        assert linux.pids_with_environ(lambda env: mark in env) == [child.pid]
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(30)
    assert linux.flock_holder_pid(path) is None


@needs_linux
def test_inotify_rings_on_a_rename_into_the_directory(tmp_path: Path) -> None:
    fd = linux.inotify_moved_to(tmp_path)
    if fd is None:
        pytest.skip("no inotify watch available")
    try:
        (tmp_path / "new").write_bytes(b"")
        with pytest.raises(BlockingIOError):
            os.read(fd, 4096)  # a plain write does not ring
        os.rename(tmp_path / "new", tmp_path / "renamed")
        assert os.read(fd, 4096)
    finally:
        os.close(fd)


def test_every_call_has_its_fallback_off_linux(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, versatil_home: Path
) -> None:
    monkeypatch.setattr(linux, "IS_LINUX", False)
    path = tmp_path / "f"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDWR)
    try:
        flock.lock(fd)
        assert linux.flock_holder_pid(path) is None
        assert not linux.nobody_else_has_open(fd)
    finally:
        os.close(fd)
    assert not linux.exchange_supported()
    with pytest.raises(OSError):
        linux.rename_exchange(path, path)
    assert linux.inotify_moved_to(tmp_path) is None
    assert linux.parent_death_signal() is None
    assert linux.pids_with_environ(lambda env: True) == []
    assert linux.fd_target(0) is None
    assert linux.boot_id() == ""
    assert linux.boottime() > 0
    # The lock table's fast write falls back to temp file + rename, whole every time.
    state = StateDir()
    target = state.lock_table
    state.write_swapped(target, b"a long first document\n")
    state.write_swapped(target, b"short\n")
    assert target.read_bytes() == b"short\n"
    assert not target.with_name(f".{target.name}.spare").exists()
