"""flock.py: the one contention rule, probes that take nothing away, a wait with a timeout."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path

import pytest

from versatil_fs import flock


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def test_try_lock_is_false_while_another_description_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "f.lock"
    a, b = _open(path), _open(path)
    try:
        assert flock.try_lock(a)
        assert not flock.try_lock(b)
        assert not flock.try_lock(b, shared=True)
        flock.unlock(a)
        assert flock.try_lock(b, shared=True)
        assert flock.try_lock(a, shared=True)  # two shared holders
    finally:
        os.close(a)
        os.close(b)


@pytest.mark.parametrize("code", [errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES])
def test_every_contention_errno_means_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    # filelock's rule: some file systems' lock emulation answers EACCES, not EWOULDBLOCK.
    def busy(fd: int, operation: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", busy)
    fd = _open(tmp_path / "f.lock")
    try:
        assert flock.try_lock(fd) is False
        assert flock.probe(fd) is True
    finally:
        os.close(fd)


def test_other_errors_are_failures_not_contention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", broken)
    fd = _open(tmp_path / "f.lock")
    try:
        with pytest.raises(OSError):
            flock.try_lock(fd)
        with pytest.raises(OSError):
            flock.lock_within(lambda: _open(tmp_path / "f.lock"), 0.0)
    finally:
        os.close(fd)


def test_probe_takes_nothing_away(tmp_path: Path) -> None:
    path = tmp_path / "f.lock"
    holder = _open(path)
    try:
        assert not flock.probe_path(path)
        assert not flock.probe_path(path, shared=False)
        flock.lock(holder, shared=True)
        assert not flock.probe_path(path)  # a shared holder is no exclusive holder
        assert flock.probe_path(path, shared=False)
        flock.unlock(holder)
        flock.lock(holder)
        assert flock.probe_path(path)
        flock.unlock(holder)
        probe = _open(path)
        assert not flock.probe(probe)
        assert flock.try_lock(holder)  # the probe's own lock is gone again
        os.close(probe)
    finally:
        os.close(holder)


def test_probe_path_of_a_symlink_or_fifo_is_not_held(tmp_path: Path) -> None:
    target = tmp_path / "real.lock"
    holder = _open(target)
    try:
        flock.lock(holder)
        (tmp_path / "link").symlink_to(target)
        os.mkfifo(tmp_path / "fifo")
        assert flock.probe_path(target)
        assert not flock.probe_path(tmp_path / "link")
        assert not flock.probe_path(tmp_path / "fifo")  # and it did not hang
        assert not flock.probe_path(tmp_path / "missing")
    finally:
        os.close(holder)


def test_lock_within_gives_up_and_lets_go_when_it_finally_gets_it(tmp_path: Path) -> None:
    path = tmp_path / "f.lock"
    holder = _open(path)
    flock.lock(holder)
    opened: list[int] = []

    def opener() -> int:
        opened.append(_open(path))
        return opened[-1]

    assert flock.lock_within(opener, 0.05) is None
    flock.unlock(holder)
    # The abandoned helper thread takes the lock, then closes its descriptor: free again.
    deadline = threading.Event()
    for _ in range(2000):
        if flock.try_lock(holder):
            break
        deadline.wait(0.005)
    else:
        pytest.fail("the abandoned wait never let go of the lock")
    os.close(holder)


def test_lock_within_is_woken_by_the_release(tmp_path: Path) -> None:
    path = tmp_path / "f.lock"
    holder = _open(path)
    flock.lock(holder)
    got: list[int | None] = []
    waiter = threading.Thread(target=lambda: got.append(flock.lock_within(lambda: _open(path), 60)))
    waiter.start()
    flock.unlock(holder)
    waiter.join(30)
    assert got and got[0] is not None
    assert not flock.try_lock(holder)  # the waiter holds it now
    os.close(got[0])
    os.close(holder)
