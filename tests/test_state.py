"""The state directory: permissions, refusal of planted files, complete-or-absent writes."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from integration.helpers import assert_one_line_error, run_versatil

from versatil_fs import faults, state
from versatil_fs.errors import StateError
from versatil_fs.state import StateDir


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_home_comes_from_versatil_home(versatil_home: Path) -> None:
    assert state.home() == versatil_home
    assert StateDir().root == versatil_home


def test_home_defaults_to_dot_versatil(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VERSATIL_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert state.home() == tmp_path / ".versatil"


def test_directories_are_created_0700_and_files_0600(versatil_home: Path) -> None:
    os.umask(0o000)  # even with a permissive umask
    try:
        sd = StateDir()
        sd.write_atomic(sd.lock_table, b"{}")
        sd.write_atomic(sd.subdir("checkpoints") / "meta.json", b"{}", durable=True)
        sd.append_line(sd.event_log("locks"), b"{}")
        os.close(sd.open_lock_file(sd.table_lock))
    finally:
        os.umask(0o022)
    assert _mode(versatil_home) == 0o700
    for path in versatil_home.rglob("*"):
        expected = 0o700 if path.is_dir() else 0o600
        assert _mode(path) == expected, f"{path} is {oct(_mode(path))}"


def test_a_whole_lock_session_leaves_only_private_files(
    git_repo: Path, versatil_home: Path
) -> None:
    from versatil_fs import LockManager

    manager = LockManager(repo=git_repo)
    with manager.hold(["README.md", "db:users"], agent="Dana"):
        manager.acquire(["src/"], agent="Marcus", owner="shell").release()
    assert _mode(versatil_home) == 0o700
    seen = 0
    for path in versatil_home.rglob("*"):
        seen += 1
        expected = 0o700 if path.is_dir() else 0o600
        assert _mode(path) == expected, f"{path} is {oct(_mode(path))}"
    assert seen >= 5


def test_the_cli_creates_home_0700(git_repo: Path, versatil_home: Path) -> None:
    result = run_versatil("locks", cwd=git_repo)
    assert result.returncode == 0, result.stderr
    assert _mode(versatil_home) == 0o700
    for path in versatil_home.rglob("*"):
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path


# Planted symlinks and foreign files -------------------------------------------------------------
def test_a_symlink_as_the_logs_directory_is_refused(versatil_home: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "attacker-logs"
    elsewhere.mkdir()
    versatil_home.mkdir(mode=0o700)
    (versatil_home / "logs").symlink_to(elsewhere, target_is_directory=True)
    sd = StateDir()
    with pytest.raises(StateError, match="symlink") as caught:
        sd.append_line(sd.event_log("locks"), b"{}")
    assert caught.value.exit_code == 2
    with pytest.raises(StateError, match="symlink"):
        StateDir().write_atomic(StateDir().lock_table, b"{}")
    assert list(elsewhere.iterdir()) == []  # nothing was written through the link


def test_a_symlink_as_the_lock_table_is_refused(versatil_home: Path, tmp_path: Path) -> None:
    target = tmp_path / "victim.json"
    target.write_text('{"version": 1}')
    sd = StateDir()
    sd.ensure_dir(sd.logs)
    sd.lock_table.symlink_to(target)
    with pytest.raises(StateError, match="symlink"):
        sd.read_bytes(sd.lock_table)
    assert target.read_text() == '{"version": 1}'


def test_a_symlinked_state_directory_is_refused(versatil_home: Path, tmp_path: Path) -> None:
    real = tmp_path / "real-home"
    real.mkdir(mode=0o700)
    versatil_home.symlink_to(real, target_is_directory=True)
    with pytest.raises(StateError, match="symlink"):
        StateDir().ensure_dir(StateDir().logs)


@pytest.mark.parametrize("planted", ["logs", "logs/resource-locks.json"])
def test_the_cli_refuses_a_planted_symlink_in_one_line(
    git_repo: Path, versatil_home: Path, tmp_path: Path, planted: str
) -> None:
    versatil_home.mkdir(mode=0o700)
    (versatil_home / "logs").mkdir(mode=0o700) if planted != "logs" else None
    decoy = tmp_path / "decoy"
    if planted == "logs":
        decoy.mkdir()
    else:
        decoy.write_text("{}")
    (versatil_home / planted).symlink_to(decoy)
    for args in (["locks"], ["lock", "--agent", "A", "README.md"]):
        result = run_versatil(*args, cwd=git_repo)
        line = assert_one_line_error(result, 2)
        assert "symlink" in line and str(versatil_home) in line, line


def test_a_file_that_belongs_to_someone_else_is_refused(versatil_home: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to give a file away")
    sd = StateDir()
    sd.write_atomic(sd.lock_table, b"{}")
    os.chown(sd.lock_table, 4242, 4242)
    with pytest.raises(StateError, match="uid 4242"):
        StateDir().read_bytes(StateDir().lock_table)
    os.chown(sd.logs, 4242, 4242)
    with pytest.raises(StateError, match="uid 4242"):
        StateDir().ensure_dir(StateDir().logs)


def test_a_file_where_a_directory_belongs_is_refused(versatil_home: Path) -> None:
    versatil_home.mkdir(mode=0o700)
    (versatil_home / "logs").write_text("not a directory")
    with pytest.raises(StateError, match="directory"):
        StateDir().ensure_dir(StateDir().logs)


def test_paths_outside_the_state_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="outside"):
        StateDir().ensure_dir(tmp_path / "elsewhere")


# Complete-or-absent writes ---------------------------------------------------------------------
def test_write_atomic_replaces_the_whole_file(versatil_home: Path) -> None:
    sd = StateDir()
    target = sd.logs / "doc.json"
    sd.write_atomic(target, b"old")
    sd.write_atomic(target, b"new and longer")
    assert target.read_bytes() == b"new and longer"
    assert _leftovers(sd.logs) == []


class _OsWith:
    """The os module as seen by versatil_fs.state, with some functions replaced."""

    def __init__(self, **replaced: object) -> None:
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)


def _disk_full(*args: object, **kwargs: object) -> int:
    raise OSError(errno.ENOSPC, "No space left on device")


def _crash(name: str) -> None:
    raise RuntimeError("crash in the middle")


@pytest.mark.parametrize("where", ["write", "fsync", "rename", "fault-point"])
def test_write_atomic_leaves_no_temp_file_on_failure(versatil_home: Path, where: str) -> None:
    sd = StateDir()
    target = sd.logs / "doc.json"
    sd.write_atomic(target, b"old")
    with pytest.MonkeyPatch.context() as patch:
        if where == "fault-point":
            patch.setattr(faults, "point", _crash)
        else:
            name = "replace" if where == "rename" else where
            patch.setattr(state, "os", _OsWith(**{name: _disk_full}))
        with pytest.raises((StateError, RuntimeError)) as caught:
            sd.write_atomic(target, b"new", durable=True)
    if where == "fault-point":
        assert caught.type is RuntimeError
    else:
        assert caught.type is StateError and "disk is full" in str(caught.value)
    assert target.read_bytes() == b"old"
    assert _leftovers(sd.logs) == []


def test_write_swapped_replaces_the_whole_document(versatil_home: Path) -> None:
    sd = StateDir()
    if not hasattr(sd, "write_swapped"):
        pytest.skip("no write_swapped in this version")
    target = sd.lock_table
    sd.write_swapped(target, b"first, a long document\n")
    sd.write_swapped(target, b"short\n")
    assert target.read_bytes() == b"short\n"
    sd.write_swapped(target, b"third, longer again\n")
    assert target.read_bytes() == b"third, longer again\n"
    assert _mode(target) == 0o600


def test_a_crash_before_the_rename_leaves_the_old_table(
    git_repo: Path, versatil_home: Path
) -> None:
    """SIGKILL at the fault point inside the table write: the table still parses afterwards."""
    import subprocess
    import sys

    import msgspec

    from versatil_fs import LockManager

    manager = LockManager(repo=git_repo)
    manager.acquire(["db:before"], agent="A", owner="shell")
    before = StateDir().lock_table.read_bytes()
    code = (
        "from versatil_fs import LockManager;"
        "LockManager(repo='.').acquire(['db:after'], agent='B', owner='shell')"
    )
    env = dict(os.environ, VERSATIL_FAULT="state.before-rename")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=git_repo, env=env, capture_output=True, timeout=60,
        check=False,
    )
    assert result.returncode == -9, result.stderr
    after = StateDir().lock_table.read_bytes()
    assert after == before
    msgspec.json.decode(after)
    # And locking goes on, without reporting damage.
    lease = manager.acquire(["db:after"], agent="C", wait=0)
    lease.release()
    assert not list(StateDir().logs.glob("resource-locks.json.corrupt-*"))


# Moving a damaged file aside -------------------------------------------------------------------
def test_move_aside_renames_with_a_timestamp_and_reports_once(
    versatil_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    sd = StateDir()
    sd.write_atomic(sd.lock_table, b"garbage")
    moved = sd.move_aside(sd.lock_table, "not valid JSON")
    assert not sd.lock_table.exists()
    assert moved.read_bytes() == b"garbage"
    assert moved.name.startswith("resource-locks.json.corrupt-")
    err = capfd.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "not valid JSON" in err and moved.name in err
    # A second mover (another process that saw the same damage) finds nothing and stays quiet.
    sd.move_aside(sd.lock_table, "not valid JSON")
    assert capfd.readouterr().err == ""


def test_move_aside_never_overwrites_an_earlier_copy(
    versatil_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import time as real_time

    class FrozenClock:
        def __getattr__(self, name: str) -> object:
            return getattr(real_time, name)

        def gmtime(self, *args: object) -> real_time.struct_time:
            return real_time.gmtime(1_800_000_000)  # both moves in the same second

    sd = StateDir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(state, "time", FrozenClock())
        sd.write_atomic(sd.lock_table, b"first damage")
        first = sd.move_aside(sd.lock_table, "bad")
        sd.write_atomic(sd.lock_table, b"second damage")
        second = sd.move_aside(sd.lock_table, "bad")
    copies = sorted(p.read_bytes() for p in sd.logs.glob("resource-locks.json.corrupt-*"))
    assert copies == [b"first damage", b"second damage"], (first, second)

