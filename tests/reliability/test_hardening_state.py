"""Issue 12, the state side: another user never gets in, nothing hangs on a planted FIFO, names
that are not UTF-8 are reported, and git's refusals are one sentence.

* Items 8 and 9: a state directory, or a directory or file in it, that anyone but its owner can
  write is refused with one sentence naming the path and the ``chmod`` that fixes it, as are
  parents of the state directory that another user can write without the sticky bit and state
  files (``config.toml``, event logs) that belong to someone else. The attacks run as a real
  other user (uid 12345, via ``setuid`` in the child) where the suite runs as root.
* Item 11: a FIFO planted as a state file or as the repository's ``.versatil`` gets one
  sentence (or is set aside as damage), never a hang.
* Item 13: ``versatil monitor`` reports a file whose name is not UTF-8 (escaped as ``\\xff``)
  and keeps running; ``hook check`` handles such a staged name, with and without ``--json``.
* Item 17: the monitor's set-up on a full disk is one sentence, not an internal error.
* Item 18: a repository git refuses for dubious ownership is one sentence naming
  ``safe.directory``; a refusal inside a submodule names the repository.
* Item 19: the README says what the guard does not cover.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from integration.helpers import (
    REPO_ROOT,
    Child,
    Spawner,
    git,
    lock_agent,
    make_git_repo,
    versatil_argv,
    wait_for,
)
from reliability.support import Result, Tally, one_line_problems, versatil, versatil_process

from versatil_fs import state as state_module
from versatil_fs.errors import NotRegularFile, StateError
from versatil_fs.state import StateDir

OTHER_UID = 12345
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
BUDGET = 20.0  # seconds a command may take before it counts as hung

FILES = {"src/a.py": "a = 1\n", "docs/guide.md": "# guide\n"}

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root to act as another user")


def _as_other_user() -> None:  # pragma: no cover - runs in the child
    os.setgroups([])
    os.setgid(OTHER_UID)
    os.setuid(OTHER_UID)


def _rename_as_other_user(source: Path, target: Path) -> subprocess.CompletedProcess[str]:
    """``mv`` run as uid 12345: a real other user on this machine (this interpreter may live
    where that user cannot read it)."""
    return subprocess.run(
        ["mv", "-T", str(source), str(target)], preexec_fn=_as_other_user,
        capture_output=True, text=True, timeout=BUDGET, check=False, cwd="/",
    )


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A directory under /tmp that another user can traverse (0711; pytest's are 0700), with
    VERSATIL_HOME at ``shared/home``, created by versatil itself."""
    base = Path(tempfile.mkdtemp(prefix="versatil-shared-", dir="/tmp"))
    base.chmod(0o711)
    monkeypatch.setenv("VERSATIL_HOME", str(base / "home"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_git_repo(tmp_path / "repo", FILES)


@pytest.fixture
def home(versatil_home: Path, repo: Path) -> Path:
    """The test's state directory, created by a first ordinary command."""
    result = versatil("locks", cwd=repo)
    assert result.code == 0, result
    return versatil_home


def _refused(result: Result, tally: Tally, *mentions: str, codes: tuple[int, ...] = (2,)) -> None:
    tally.outcome(result)
    problems = one_line_problems(result, codes, mentions)
    assert not problems, f"{problems}\n{result}"


def _intrude(repo: Path, tally: Tally, *resources: str) -> Result:
    """Another agent asks for what the holder holds; a grant is an overlap."""
    result = versatil_process("lock", "--agent", "Intruder", "--wait", "0", *resources, cwd=repo)
    tally.outcome(result)
    if result.code == 0:
        tally.overlaps += 1
    return result


# Item 8: a state directory others can write -------------------------------------------------
@needs_root
@pytest.mark.parametrize(
    "opening",
    ["world-writable home", "home writable by another user's group", "world-writable leases"],
)
def test_another_user_cannot_steal_a_held_lock_through_a_writable_state_directory(
    opening: str, shared: Path, repo: Path, spawn: Spawner, tally: Tally
) -> None:
    home = shared / "home"
    holder = lock_agent(spawn, repo)
    holder.acquire(["src/a.py"], agent="Holder")
    # The careless chmod: after it, the other user can rename what is inside.
    if opening == "world-writable home":
        home.chmod(0o777)
        victim, opened = home / "run", home
    elif opening == "home writable by another user's group":
        os.chown(home, -1, OTHER_UID)
        home.chmod(0o770)
        victim, opened = home / "run", home
    else:
        home.chmod(0o711)
        (home / "run").chmod(0o711)
        (home / "run" / "leases").chmod(0o777)
        (victim,) = (home / "run" / "leases").glob("*.lease")
        opened = home / "run" / "leases"
    tally.attack()
    stolen = _rename_as_other_user(victim, victim.with_name(victim.name + ".stolen"))
    assert stolen.returncode == 0, f"the attack itself failed: {stolen.stderr}"
    result = _intrude(repo, tally, "src/a.py")
    _refused(result, tally, str(opened), "chmod 700")


@needs_root
def test_a_parent_another_user_can_write_is_refused_unless_sticky(
    shared: Path, repo: Path, tally: Tally, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = shared / "public"
    public.mkdir()
    public.chmod(0o777)  # world-writable, no sticky bit: anyone may rename our home away
    monkeypatch.setenv("VERSATIL_HOME", str(public / "home"))
    tally.attack()
    _refused(versatil("lock", "--agent", "A", "db:users", cwd=repo), tally, str(public), "sticky")
    assert not (public / "home").exists(), "the state directory was created there anyway"
    public.chmod(0o1777)  # like /tmp: nobody else can rename our entry in it
    assert versatil("lock", "--agent", "A", "db:users", cwd=repo).code == 0
    # And the attack the refusal prevents: a holder's home renamed by the other user.
    public.chmod(0o777)
    tally.attack()
    renamed = _rename_as_other_user(public / "home", public / "stolen")
    assert renamed.returncode == 0, renamed.stderr
    _refused(_intrude(repo, tally, "db:users"), tally, str(public))


@needs_root
def test_a_parent_that_belongs_to_another_user_is_refused(
    shared: Path, repo: Path, tally: Tally, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = shared / "theirs"
    theirs.mkdir()
    os.chown(theirs, OTHER_UID, OTHER_UID)  # they own it, so they can rename what is in it
    monkeypatch.setenv("VERSATIL_HOME", str(theirs / "home"))
    tally.attack()
    _refused(versatil("locks", cwd=repo), tally, str(theirs), f"uid {OTHER_UID}")


@needs_root
def test_a_parent_symlink_that_belongs_to_another_user_is_refused(
    shared: Path, repo: Path, tally: Tally, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = shared / "mine"
    mine.mkdir()
    link = shared / "link"
    link.symlink_to(mine)
    os.chown(link, OTHER_UID, OTHER_UID, follow_symlinks=False)  # theirs to retarget
    monkeypatch.setenv("VERSATIL_HOME", str(link / "home"))
    tally.attack()
    _refused(versatil("locks", cwd=repo), tally, str(link), "symlink")
    os.chown(link, 0, 0, follow_symlinks=False)
    assert versatil("locks", cwd=repo).code == 0  # a link of our own is fine


@pytest.mark.parametrize(
    ("where", "mode", "fix"),
    [
        ("logs", 0o770, "chmod 700"),
        ("run", 0o777, "chmod 700"),
        ("logs/resource-locks.json", 0o666, "chmod 600"),
        ("logs/locks.jsonl", 0o620, "chmod 600"),
    ],
)
def test_anything_in_the_state_directory_others_can_write_is_refused(
    where: str, mode: int, fix: str, home: Path, repo: Path, tally: Tally
) -> None:
    assert versatil("lock", "--agent", "A", "--ttl", "600", "db:x", cwd=repo).code == 0
    target = home / where
    target.chmod(mode)
    tally.attack()
    if where.endswith(".jsonl"):
        # Reading the log is refused; a lock whose event cannot be logged is still granted,
        # with a warning (the manager's rule), so the read is what is checked here.
        result = versatil("logs", "locks", cwd=repo)
    else:
        result = versatil("lock", "--agent", "B", "db:y", cwd=repo)
    _refused(result, tally, str(target), fix)


def test_a_later_chmod_is_seen_by_a_long_lived_process(home: Path) -> None:
    sd = StateDir()
    assert sd.read_bytes(sd.lock_table) is not None
    # A file is checked on its descriptor at every read: a chmod is seen at once.
    sd.lock_table.chmod(0o666)
    with pytest.raises(StateError, match="chmod 600"):
        sd.read_bytes(sd.lock_table)
    sd.lock_table.chmod(0o600)
    # A directory's check is trusted for RECHECK_SECONDS, then looked at again.
    sd.logs.chmod(0o777)
    sd._checked_at -= state_module.RECHECK_SECONDS + 1  # as if that much time had passed
    with pytest.raises(StateError, match="chmod 700"):
        sd.read_bytes(sd.lock_table)


def test_state_the_tool_creates_passes_its_own_checks_with_a_group_umask(
    versatil_home: Path, repo: Path
) -> None:
    # umask 002 is the default for users with a private group (Debian, Ubuntu): everything
    # versatil creates must still be private, or it would refuse its own files.
    before = os.umask(0o002)
    try:
        for args in (("lock", "--agent", "A", "src/"), ("locks",), ("logs", "locks")):
            result = versatil(*args, cwd=repo)
            assert result.code == 0, result
    finally:
        os.umask(before)
    for path in versatil_home.rglob("*"):
        assert not os.lstat(path).st_mode & 0o022, f"{path} is {oct(os.lstat(path).st_mode)}"


# Item 9: files read from the state directory ------------------------------------------------
@needs_root
def test_a_config_file_planted_by_another_user_is_refused(
    home: Path, repo: Path, tally: Tally
) -> None:
    config = home / "config.toml"
    config.write_text(
        "[collision_detection]\nenabled = false\n[checkpoints]\nmax_checkpoints = 1\n"
    )
    config.chmod(0o600)
    os.chown(config, OTHER_UID, OTHER_UID)
    tally.attack()
    _refused(versatil("config", "show", cwd=repo), tally, str(config), f"uid {OTHER_UID}")
    _refused(versatil("lock", "--agent", "A", "db:x", cwd=repo), tally, str(config))


@pytest.mark.parametrize("mode", [0o666, 0o620])
def test_a_config_file_others_can_write_is_refused(
    mode: int, home: Path, repo: Path, tally: Tally
) -> None:
    config = home / "config.toml"
    config.write_text("[collision_detection]\nenabled = false\n")
    config.chmod(mode)
    tally.attack()
    _refused(versatil("config", "show", cwd=repo), tally, str(config), "chmod 600")


@needs_root
def test_an_event_log_that_belongs_to_another_user_is_refused(
    home: Path, repo: Path, tally: Tally
) -> None:
    assert versatil("lock", "--agent", "A", "db:x", cwd=repo).code == 0
    log = home / "logs" / "locks.jsonl"
    os.chown(log, OTHER_UID, OTHER_UID)
    tally.attack()
    _refused(versatil("logs", "locks", cwd=repo), tally, str(log), f"uid {OTHER_UID}")


@pytest.mark.parametrize("opening", ["mode 0666", "another owner"])
def test_checkpoint_metadata_others_could_have_written_is_not_trusted(
    opening: str, home: Path, repo: Path, tally: Tally
) -> None:
    created = versatil("checkpoint", "create", "-m", "before", cwd=repo)
    assert created.code == 0, created
    (metadata,) = home.glob("checkpoints/*/*.json")
    if opening == "mode 0666":
        metadata.chmod(0o666)
    elif IS_ROOT:
        os.chown(metadata, OTHER_UID, OTHER_UID)
    else:
        pytest.skip("needs root to act as another user")
    tally.attack()
    result = tally.outcome(versatil("checkpoint", "list", cwd=repo))
    # Refused, or (the checkpoint module's choice) reported and skipped as damaged: either
    # way it names the file, and nothing read from it is used.
    assert str(metadata) in result.err, result
    assert "Traceback" not in result.err and "internal error" not in result.err, result


def test_config_show_does_not_create_the_state_directory(versatil_home: Path, repo: Path) -> None:
    assert versatil("config", "show", cwd=repo).code == 0
    assert not versatil_home.exists()


# Item 11: FIFOs and other non-regular files ---------------------------------------------------
def _run_with_budget(args: list[str], cwd: Path, tally: Tally) -> Result:
    proc = subprocess.Popen(
        versatil_argv(*args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )
    if tally.hung(proc, BUDGET):
        pytest.fail(f"versatil {' '.join(args)} hung on a FIFO")
    out, err = proc.communicate()
    return tally.outcome(Result(proc.returncode, out, err))


@pytest.mark.parametrize(
    ("fifo", "args", "codes"),
    [
        ("config.toml", ["lock", "--agent", "A", "db:x"], (2,)),
        ("config.toml", ["hook", "check"], (0, 1, 2)),  # the guard needs no configuration
        ("logs/locks.jsonl", ["logs", "locks"], (2,)),
        ("logs/collision-detection.jsonl", ["locks"], (2,)),
        ("logs/resource-locks.json", ["locks"], (0, 2)),
        ("logs/resource-locks.json", ["lock", "--agent", "A", "db:x"], (0, 2)),
        ("logs/resource-locks.json", ["hook", "check"], (0, 1, 2)),
    ],
)
def test_a_fifo_in_the_state_directory_never_hangs(
    fifo: str, args: list[str], codes: tuple[int, ...], home: Path, repo: Path, tally: Tally
) -> None:
    path = home / fifo
    path.unlink(missing_ok=True)
    os.mkfifo(path, 0o600)
    tally.attack()
    result = _run_with_budget(args, repo, tally)
    assert result.code in codes, result
    assert "Traceback" not in result.err and "internal error" not in result.err, result
    if result.code == 2:
        _refused(result, tally, str(path))


def test_a_fifo_as_the_repository_file_never_hangs(home: Path, repo: Path, tally: Tally) -> None:
    os.mkfifo(repo / ".versatil", 0o644)
    for args in (["lock", "--agent", "A", "src/a.py"], ["config", "show"], ["hook", "check"]):
        tally.attack()
        result = _run_with_budget(args, repo, tally)
        if args[0] == "hook" and result.code == 0:
            continue  # the guard reads no configuration: not hanging is what counts
        _refused(result, tally, str(repo / ".versatil"), "FIFO", codes=(1, 2))


@contextlib.contextmanager
def _alarm(seconds: int) -> Iterator[None]:
    """Turn a hang into a failure (SIGALRM interrupts a blocking open)."""

    def hung(signum: int, frame: object) -> None:
        raise AssertionError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("operation", ["read", "append", "lock file", "size"])
def test_state_dir_helpers_refuse_a_fifo_without_blocking(
    operation: str, versatil_home: Path
) -> None:
    sd = StateDir()
    path = sd.subdir("logs") / "planted"
    os.mkfifo(path, 0o600)
    calls: dict[str, Callable[[], object]] = {
        "read": lambda: sd.read_bytes(path),
        "append": lambda: sd.append_line(path, b"{}"),
        "lock file": lambda: sd.open_lock_file(path),
        "size": lambda: sd.size(path),
    }
    with _alarm(10), pytest.raises(NotRegularFile, match="FIFO"):
        calls[operation]()


def test_a_directory_where_a_state_file_belongs_is_refused(versatil_home: Path) -> None:
    sd = StateDir()
    (sd.subdir("logs") / "locks.jsonl").mkdir()
    with pytest.raises(NotRegularFile, match="directory"):
        sd.read_bytes(sd.event_log("locks"))
    with pytest.raises(NotRegularFile, match="directory"):
        sd.append_line(sd.event_log("locks"), b"{}")


def test_a_fifo_as_the_global_excludes_file_does_not_hang_the_monitor(
    repo: Path, spawn: Spawner, tally: Tally
) -> None:
    # guard.ignore makes the monitor copy the user's global excludes into a file of its own.
    excludes = Path(os.environ["XDG_CONFIG_HOME"]) / "git" / "ignore"
    excludes.parent.mkdir(parents=True)
    os.mkfifo(excludes, 0o600)
    tally.attack()
    child = spawn.popen(versatil_argv("monitor"), cwd=repo, name="monitor",
                        env={"VERSATIL_GUARD_IGNORE": "*.log"})
    try:
        wait_for(lambda: "watching" in child.stderr or not child.alive, timeout=BUDGET,
                 message="the monitor to start")
    except AssertionError:
        tally.hangs += 1
        raise
    assert child.alive, child.stderr


# Item 13: names that are not UTF-8 ----------------------------------------------------------
def _read_writes(child: Child, expected: set[str]) -> list[dict[str, object]]:
    """The monitor's JSON lines until every path of ``expected`` was reported (in any order:
    a file in a new directory is found by scanning it, after later events)."""
    seen: list[dict[str, object]] = []
    while not expected <= {str(w.get("path")) for w in seen}:
        seen.append(json.loads(child.read_line()))
    return seen


def _create(repo: Path, name: bytes, data: bytes = b"x\n") -> None:
    path = os.path.join(os.fsencode(repo), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def test_the_monitor_reports_names_that_are_not_utf8_and_keeps_running(
    repo: Path, spawn: Spawner, tally: Tally, versatil_home: Path
) -> None:
    child = spawn.popen(versatil_argv("monitor", "--json"), cwd=repo, name="monitor")
    wait_for(lambda: "watching" in child.stderr, message="the monitor to start watching")
    tally.attack(3)
    _create(repo, b"\xff.txt")  # a plain file
    _create(repo, b"dir-\xfe/x.txt")  # a file in a directory whose name is not UTF-8
    _create(repo, b"ok.txt")
    os.rename(os.path.join(os.fsencode(repo), b"ok.txt"), os.path.join(os.fsencode(repo), b"\xe9"))
    _create(repo, b"after.txt")
    try:
        writes = _read_writes(child, {"\\xff.txt", "dir-\\xfe/x.txt", "\\xe9", "after.txt"})
    except AssertionError:
        if not child.alive:
            tally.internal_errors += 1
        raise AssertionError(f"the monitor did not report them all: {child.stderr}") from None
    assert child.alive, f"the monitor died: {child.stderr}"
    assert all(w["kind"] == "unlocked-write" for w in writes), writes
    log = (versatil_home / "logs" / "collision-detection.jsonl").read_text()
    assert '"path":"\\\\xff.txt"' in log


def test_the_monitor_prints_names_that_are_not_utf8_as_lines(
    repo: Path, spawn: Spawner, tally: Tally
) -> None:
    child = spawn.popen(versatil_argv("monitor"), cwd=repo, name="monitor")
    wait_for(lambda: "watching" in child.stderr, message="the monitor to start watching")
    tally.attack()
    _create(repo, b"\xff\xfe.bin")
    _create(repo, b"after.txt")
    lines: list[str] = []
    # Both, in either order: one batch of events may be reported sorted.
    while not (any("after.txt" in x for x in lines) and any("\\xff\\xfe.bin" in x for x in lines)):
        lines.append(child.read_line())
    assert child.alive, child.stderr


@pytest.mark.parametrize("as_json", [False, True])
def test_hook_check_handles_a_staged_name_that_is_not_utf8(
    as_json: bool, repo: Path, tally: Tally
) -> None:
    assert versatil("lock", "--agent", "Other", "src/", cwd=repo).code == 0
    _create(repo, b"src/\xff.py")
    _create(repo, b"free-\xfe.txt")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    tally.attack()
    args = ["hook", "check", *(["--json"] if as_json else [])]
    result = tally.outcome(versatil_process(*args, cwd=repo, env={"VERSATIL_AGENT": "Me"}))
    assert result.code == 1, result
    assert "Traceback" not in result.err and "internal error" not in result.err, result
    if as_json:
        answer = json.loads(result.out)
        assert [b["path"] for b in answer["blocked"]] == ["src/\\xff.py"], answer
    else:
        assert "src/\\xff.py (added): locked by Other" in result.err, result.err
    logged = versatil("logs", "collision-detection", cwd=repo)
    assert "src/\\xff.py" in logged.out, logged


# Item 17: the monitor's set-up on a full disk -------------------------------------------------
def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True, check=False).returncode == 0


@pytest.fixture
def full_home(home: Path, tmp_path: Path) -> Iterator[Path]:
    """The state directory on a 64 KiB tmpfs, filled up (its files copied in first)."""
    saved = tmp_path / "home-copy"
    shutil.copytree(home, saved, symlinks=True)
    if not IS_ROOT or not _mount("-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(home)):
        pytest.skip("cannot mount a tmpfs here")
    try:
        shutil.copytree(saved, home, symlinks=True, dirs_exist_ok=True)
        with open(home / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * 4096)
        yield home
    finally:
        if subprocess.run(["umount", str(home)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(home)], capture_output=True, check=False)


@pytest.mark.parametrize(
    "args",
    [["run", "--agent", "A", "--", "true"], ["run", "--agent", "A", "--lock", "src/", "--",
                                             "sh", "-c", "echo b > src/b.py"]],
)
def test_a_full_disk_at_monitor_set_up_is_one_sentence(
    args: list[str], full_home: Path, repo: Path, tally: Tally
) -> None:
    tally.attack()
    result = tally.outcome(versatil_process(*args, cwd=repo))
    assert result.code != 70 and "Traceback" not in result.err, result
    assert "internal error" not in result.err, result
    if result.code == 2:
        assert "full" in result.err, result


def test_a_foreground_monitor_on_a_full_disk_is_one_sentence(
    full_home: Path, repo: Path, spawn: Spawner, tally: Tally
) -> None:
    tally.attack()
    child = spawn.popen(versatil_argv("monitor"), cwd=repo, name="monitor")
    code = child.wait()
    result = tally.outcome(Result(code, "", child.stderr))
    _refused(result, tally, "disk is full")


# Item 18: git's refusals ----------------------------------------------------------------------
def test_hook_check_in_a_repository_of_dubious_ownership_is_one_sentence(
    repo: Path, home: Path, tally: Tally
) -> None:
    env = {"GIT_TEST_ASSUME_DIFFERENT_OWNER": "1"}
    probe = subprocess.run(["git", "rev-parse", "--git-dir"], cwd=repo, capture_output=True,
                           env={**os.environ, **env}, check=False)
    if probe.returncode == 0:
        pytest.skip("this git does not check ownership (older than 2.35.2)")
    tally.attack()
    result = tally.outcome(versatil_process("hook", "check", cwd=repo, env=env))
    _refused(result, tally, "safe.directory", str(repo), codes=(1,))
    tally.attack()
    result = tally.outcome(versatil_process("hook", "install", cwd=repo, env=env))
    _refused(result, tally, "safe.directory", codes=(2,))


@needs_root
def test_hook_check_in_a_repository_owned_by_another_user_is_one_sentence(
    repo: Path, home: Path, tally: Tally
) -> None:
    os.chown(repo, OTHER_UID, OTHER_UID)
    probe = subprocess.run(["git", "rev-parse", "--git-dir"], cwd=repo, capture_output=True,
                           check=False)
    if probe.returncode == 0:
        pytest.skip("this git does not check ownership (older than 2.35.2)")
    tally.attack()
    result = tally.outcome(versatil_process("hook", "check", cwd=repo))
    _refused(result, tally, "safe.directory", "dubious ownership", codes=(1,))


def test_a_refusal_inside_a_submodule_names_the_repository(
    tmp_path: Path, home: Path, tally: Tally
) -> None:
    sub = make_git_repo(tmp_path / "sub", {"s.txt": "s\n"})
    sup = make_git_repo(tmp_path / "sup", {"a.txt": "a\n"})
    git(sup, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "libs/sm")
    git(sup, "commit", "-qm", "submodule")
    inner = sup / "libs" / "sm"
    assert versatil("lock", "--agent", "Other", "libs/sm/s.txt", cwd=sup).code == 0
    (inner / "s.txt").write_text("changed\n")
    git(inner, "add", "s.txt")
    tally.attack()
    result = tally.outcome(versatil_process("hook", "check", cwd=inner,
                                            env={"VERSATIL_AGENT": "Me"}))
    assert result.code == 1, result
    first = result.err.splitlines()[0]
    assert str(inner) in first and str(sup) in first, first


# Item 19: what the guard covers, said in the README -----------------------------------------
def test_the_readme_says_what_the_guard_does_not_cover() -> None:
    text = " ".join((REPO_ROOT / "README.md").read_text().split())
    for phrase in ("git commit", "cherry-pick", "--no-verify", "VERSATIL_AGENT", "login name",
                   "not authenticated", "chmod 700"):
        assert phrase in text, f"the README does not mention {phrase!r}"


def test_the_docs_name_the_state_modes(versatil_home: Path) -> None:
    # The module docstring is the reference for what is refused; keep it saying so.
    doc = state_module.__doc__ or ""
    assert "writable by anyone but its owner" in doc and "sticky" in doc
    assert stat.S_IWGRP & 0o020  # the group write bit is among those refused


def test_cli_output_streams_print_names_that_are_not_utf8_escaped(tmp_path: Path) -> None:
    # The safety net under every command's text output: a surrogate escape that reaches
    # stdout or stderr prints as \xNN instead of raising UnicodeEncodeError (exit 70).
    code = (
        "import sys; from versatil_fs.cli import printable_streams; printable_streams(); "
        "print('src/\\udcff.py'); print('\\udcfe', file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"src/\\xff.py\n" and done.stderr == b"\\xfe\n", done


def test_echo_json_escapes_names_that_are_not_utf8(capsys: pytest.CaptureFixture[str]) -> None:
    from versatil_fs.cli.common import echo_json

    echo_json({"paths": ["ok.py", "\udcff.py"]})
    assert json.loads(capsys.readouterr().out) == {"paths": ["ok.py", "\\xff.py"]}


def test_the_monitor_keeps_going_past_a_path_it_cannot_look_at(repo: Path) -> None:
    from versatil_fs.monitor import Monitor
    from versatil_fs.repo import Repository

    notices: list[str] = []
    monitor = Monitor(Repository.find(repo), notify=notices.append, record=False)
    try:
        too_long = "/".join(["d" * 250] * 20) + "/x.txt"  # past PATH_MAX: ENAMETOOLONG
        assert monitor.tracker.stat(too_long) is None
        assert monitor.tracker.stat(too_long) is None
        assert len(notices) == 1 and "cannot look at" in notices[0], notices
    finally:
        monitor.matcher.close()
