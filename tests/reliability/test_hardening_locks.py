"""Issue 12, the lock side: what a planted or damaged state file, a stuck table lock, a stepped
clock, a submodule or an odd file name must never do to the locks.

* Nothing named by a state file is ever unlinked or followed: ids are checked against one
  pattern and every path is rebuilt inside ``run/leases/`` (a table entry that fails the
  check is damage: the table is moved aside and rebuilt from what is live).
* A FIFO where the table should be, or another process holding ``run/table.lock``, never
  hangs a command: the table is set aside, or the command gives up within its wait budget.
* A rebuilt table keeps every waiter's place, and never brings back a partial unlock.
* Waits use the monotonic clock, shell-lease expiry the boot clock (fake clocks injected).
* A directory lock covers the files of a submodule below it, from either side.
* A non-UTF-8, too-long or absurd input gets one sentence, never exit 70.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.helpers import (
    LockAgent,
    Spawner,
    git,
    lock_agent,
    make_git_repo,
    versatil_argv,
    wait_for,
)
from reliability.support import Tally, one_line_problems, versatil, versatil_process

from versatil_fs import Deadlock, LockConflict, LockManager
from versatil_fs.state import StateDir

FILES = {"README.md": "hello\n", "src/important.py": "precious = 1\n", "src/a.py": "a\n"}

GHOST_ID = "18c0ffee000-4242-abcdef"  # a well-formed id of no live process


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_git_repo(tmp_path / "repo", FILES)


@pytest.fixture
def agents(spawn: Spawner, repo: Path) -> Iterator[object]:
    def start(cwd: Path | None = None) -> LockAgent:
        return lock_agent(spawn, cwd or repo)

    yield start


def _table(home: Path) -> Path:
    return home / "logs" / "resource-locks.json"


def _keep(repo: Path) -> None:
    """A shell lease of Keeper's that every rebuild must bring back."""
    kept = versatil("lock", "--agent", "Keeper", "db:kept", cwd=repo)
    assert kept.code == 0, kept


def _kept(repo: Path) -> bool:
    return any(g.agent == "Keeper" for g in LockManager(repo=repo).sweep().locks)


def _edit_table(home: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit the table by hand, under its lock: a process mid-transaction (a waiter's second
    look) must not read the file half-written, nor write its own copy over the edit."""
    fd = os.open(home / "run" / "table.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = _table(home)
        document = json.loads(path.read_bytes())
        edit(document)
        path.write_text(json.dumps(document))
    finally:
        os.close(fd)


def _add_entry(home: Path, entry: dict[str, object], where: str = "locks") -> None:
    _edit_table(home, lambda document: document[where].append(entry))


def _grant(**fields: object) -> dict[str, object]:
    now = time.time()
    entry: dict[str, object] = {
        "id": GHOST_ID, "agent": "Ghost", "owner": "process", "pid": 1,
        "claims": [{"resource": {"name": "db:ghost"}, "mode": "write"}],
        "acquired_at": now - 10, "expires_at": now + 300,
    }
    entry.update(fields)
    return entry


def _moved_aside(home: Path) -> list[Path]:
    return sorted(_table(home).parent.glob("resource-locks.json.corrupt-*"))


# 1. Never act on a path read from a state file ----------------------------------------------
def _plant(kind: str, repo: Path, home: Path, tmp: Path) -> tuple[list[Path], bool]:
    """Plant one attack; returns the victim files and whether the table must be set aside."""
    leases = home / "run" / "leases"
    if kind == "absolute-lease-file":
        victim = tmp / "victim.txt"
        victim.write_text("do not delete\n")
        _add_entry(home, _grant(lease_file=str(victim)))
        return [victim], True
    if kind == "cwd-relative-lease-file":
        _add_entry(home, _grant(lease_file="src/important.py"))
        return [repo / "src/important.py"], True
    if kind == "dotdot-shell-id":
        # "../../../../victim-..." from run/leases: the directory above the state directory's.
        name = f"victim-{os.getpid()}-{time.monotonic_ns()}"
        ident = f"../../../../{name}"
        victims = [Path(os.path.normpath(leases / f"{ident}.{k}")) for k in ("shell", "pending")]
        for victim in victims:
            victim.write_text("do not delete\n")
        _add_entry(home, _grant(id=ident, owner="shell", expires_at=time.time() - 1))
        return victims, True
    if kind == "symlinked-lease-file":
        victim = tmp / "victim.txt"
        victim.write_text("do not delete\n")
        link = leases / f"{GHOST_ID}.lease"
        link.symlink_to(victim)
        _add_entry(home, _grant(holder=GHOST_ID, lease_file=str(link)))
        return [victim, link], False
    if kind == "dotdot-inside-lease-file":
        # Well-formed as a path ending in <id>.lease, but outside run/leases: never used.
        elsewhere = tmp / "elsewhere"
        elsewhere.mkdir()
        victim = elsewhere / f"{GHOST_ID}.lease"
        victim.write_text("do not delete\n")
        sneaky = f"{leases}/{os.path.relpath(victim, leases)}"  # run/leases/../../..
        _add_entry(home, _grant(lease_file=sneaky))
        return [victim], False
    if kind == "holder-file-record":
        # A live holder file (flocked by us) whose record names a victim as its lease file;
        # the table is damaged so that the next command rebuilds it from that record.
        victim = tmp / "elsewhere" / f"{GHOST_ID}.lease"
        victim.parent.mkdir()
        victim.write_text("do not delete\n")
        holder = leases / f"{GHOST_ID}.lease"
        record = {"pid": 1, "grants": [_grant(lease_file=str(victim))], "waiters": []}
        holder.write_text(json.dumps(record))
        fd = os.open(holder, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)  # kept for the test's life: the holder "lives"
        _held.append(fd)
        _table(home).write_text("{ damaged")
        return [victim], True
    raise AssertionError(kind)


_held: list[int] = []


@pytest.fixture(autouse=True)
def _release_held() -> Iterator[None]:
    yield
    while _held:
        os.close(_held.pop())


ATTACKS = [
    "absolute-lease-file", "cwd-relative-lease-file", "dotdot-shell-id",
    "symlinked-lease-file", "dotdot-inside-lease-file", "holder-file-record",
]


@pytest.mark.parametrize("command", ["locks", "lock"])
@pytest.mark.parametrize("kind", ATTACKS)
def test_a_path_in_a_state_file_is_never_unlinked(
    kind: str, command: str, repo: Path, versatil_home: Path, tmp_path: Path, tally: Tally
) -> None:
    _keep(repo)
    victims, damaged = _plant(kind, repo, versatil_home, tmp_path)
    before = {v: os.readlink(v) if v.is_symlink() else v.read_bytes() for v in victims}
    tally.attack()
    # `lock` asks for what the planted entry holds, so a dead holder's entry is reclaimed.
    args = ["locks"]
    if command == "lock":
        args = ["lock", "--agent", "Probe", "--wait", "0", "db:ghost"]
    result = tally.outcome(versatil(*args, cwd=repo))
    lost = [
        str(v) for v in victims
        if not os.path.lexists(v)
        or (os.readlink(v) if v.is_symlink() else v.read_bytes()) != before[v]
    ]
    tally.lost(lost)
    assert lost == [], f"{kind}: {command} removed {lost}\n{result}"
    # The record of a live holder file stands (re-attached to that file): it blocks `lock`.
    live_ghost = kind == "holder-file-record" and command == "lock"
    assert result.code == (1 if live_ghost else 0), result
    assert "Traceback" not in result.err
    if damaged:
        assert len(_moved_aside(versatil_home)) == 1, result
        assert "moved it aside" in result.err
    assert _kept(repo), "the rebuilt table lost Keeper's lease"
    if kind == "holder-file-record":
        # The record is re-attached to the file it came from (alive): its lock stands.
        table = LockManager(repo=repo).sweep()
        assert [g.holder for g in table.locks if g.agent == "Ghost"] == [GHOST_ID]


HOSTILE = [
    "../../../../canary", "../canary", "canary", "./canary", "/CANARY/canary",
    "canary/../canary", "18c0ffee000-4242-abcdef/../../../../canary", "canary\n",
]


def test_no_field_of_a_forged_entry_reaches_a_file(
    repo: Path, versatil_home: Path, tmp_path: Path, tally: Tally
) -> None:
    """Every hostile string in every field that could name a file (id, holder, lease file), of
    grants and waiters, process and shell: no canary it could name is touched."""
    leases = versatil_home / "run" / "leases"
    leases.mkdir(parents=True, exist_ok=True)
    canaries: set[Path] = set()
    for text in HOSTILE:
        for base in (repo, leases, tmp_path):
            for suffix in ("", ".shell", ".pending", ".lease"):
                raw = text.replace("/CANARY", str(tmp_path)) + suffix
                target = Path(os.path.normpath(base / raw.strip()))
                if target.parent.is_dir() and not target.exists():
                    target.write_text("canary\n")
                    canaries.add(target)
    assert len(canaries) > 10
    for text in HOSTILE:
        text = text.replace("/CANARY", str(tmp_path))
        for where, owner, field in [
            (w, o, f) for w in ("locks", "waiters") for o in ("process", "shell")
            for f in ("id", "holder", "lease_file")
        ]:
            _table(versatil_home).unlink(missing_ok=True)
            _keep(repo)
            entry = _grant(owner=owner, expires_at=time.time() - 1, **{field: text})
            if where == "waiters":
                del entry["acquired_at"], entry["expires_at"]
                entry.update(seq=1, since=time.time() - 5, deadline=time.time() + 60)
            _add_entry(versatil_home, entry, where)
            tally.attack()
            for args in (["locks"], ["lock", "--agent", "Probe", "--wait", "0", "db:ghost"]):
                result = tally.outcome(versatil(*args, cwd=repo))
                assert result.code == 0 and "Traceback" not in result.err, (text, field, result)
            lost = [str(c) for c in canaries if not c.exists()]
            tally.lost(lost)
            assert lost == [], (text, where, owner, field)
            assert _kept(repo)
            versatil("unlock", "--agent", "Probe", "db:ghost", cwd=repo)


def test_the_sweep_removes_only_stale_holder_files_we_made(
    repo: Path, versatil_home: Path, tmp_path: Path, tally: Tally
) -> None:
    _keep(repo)
    leases = versatil_home / "run" / "leases"
    victim = tmp_path / "victim.txt"
    victim.write_text("do not delete\n")
    stale = leases / "18c0ffee001-4243-abcdef.lease"  # ours, its process gone: swept
    stale.write_text("")
    planted = {
        "notes.txt": lambda p: p.write_text("mine\n"),
        "victim.lease": lambda p: p.write_text("not an id\n"),
        "18c0ffee002-4244-abcdef.lease": lambda p: p.symlink_to(victim),
        "18c0ffee003-4245-abcdef.lease": lambda p: os.mkfifo(p),
        "18c0ffee004-4246-abcdef.shell": lambda p: p.mkdir(),
    }
    for name, make in planted.items():
        make(leases / name)
    tally.attack(len(planted))
    proc = subprocess.Popen(
        versatil_argv("locks"), cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    hung = tally.hung(proc, 20)
    assert not hung, "versatil locks hung on a planted holder file"
    _out, err = proc.communicate()
    assert proc.returncode == 0, err
    left = sorted(p.name for p in leases.iterdir())
    missing = [name for name in planted if name not in left]
    tally.lost(missing + ([] if victim.exists() else [str(victim)]))
    assert missing == [] and victim.read_text() == "do not delete\n"
    assert not stale.exists()
    assert _kept(repo)


def test_a_table_written_before_holder_ids_still_counts_its_live_locks(
    agents: object, repo: Path, versatil_home: Path
) -> None:
    """Records without `holder` (an older versatil) name their holder file by `lease_file`: its
    file name gives the id, checked like any other, so an upgrade drops no live lock."""
    holder, waiter = agents(), agents()  # type: ignore[operator]
    holder.acquire(["db:a"], agent="Old")
    waiter.request(["db:a"], agent="OldWaiter", wait=60)
    manager = LockManager(repo=repo)
    wait_for(lambda: [w.agent for w in manager.sweep().waiters] == ["OldWaiter"])

    def drop_holders(document: dict[str, Any]) -> None:
        for entry in [*document["locks"], *document["waiters"]]:
            entry.pop("holder", None)

    _edit_table(versatil_home, drop_holders)
    table = LockManager(repo=repo).sweep()
    assert _moved_aside(versatil_home) == []
    assert [g.agent for g in table.locks] == ["Old"]
    assert [w.agent for w in table.waiters] == ["OldWaiter"]
    holder.release()
    assert waiter.reply().get("ok")


# 11. A FIFO for a table, a table lock held by another process -------------------------------
@pytest.mark.parametrize("args", [["locks"], ["lock", "--wait", "0", "db:x"], ["hook", "check"]])
def test_a_fifo_for_a_table_is_moved_aside_not_read(
    args: list[str], repo: Path, versatil_home: Path, tally: Tally
) -> None:
    _keep(repo)
    table = _table(versatil_home)
    table.unlink()
    os.mkfifo(table, 0o600)
    tally.attack()
    proc = subprocess.Popen(
        versatil_argv(*args), cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    hung = tally.hung(proc, 20)
    assert not hung, f"versatil {' '.join(args)} hung on a FIFO"
    _out, err = proc.communicate()
    assert proc.returncode in (0, 1, 2) and "Traceback" not in err, err
    assert proc.returncode == 0, err
    assert table.is_file()
    assert len(_moved_aside(versatil_home)) == 1
    assert _kept(repo)


@pytest.mark.parametrize("args", [["locks"], ["lock", "--wait", "0", "db:x"]])
def test_a_directory_for_a_table_is_one_sentence(
    args: list[str], repo: Path, versatil_home: Path, tally: Tally
) -> None:
    _keep(repo)
    table = _table(versatil_home)
    table.unlink()
    table.mkdir()
    (table / "mine.txt").write_text("not versatil's\n")
    tally.attack()
    result = tally.outcome(versatil_process(*args, cwd=repo, timeout=30))
    assert one_line_problems(result, (2,), ["resource-locks.json", "directory"]) == [], result
    assert (table / "mine.txt").read_text() == "not versatil's\n"


def test_a_fifo_for_a_holder_file_or_shell_record_never_blocks(
    repo: Path, versatil_home: Path, tally: Tally
) -> None:
    """The rebuild reads every shell record and live holder file: none may be a FIFO read."""
    _keep(repo)
    leases = versatil_home / "run" / "leases"
    os.mkfifo(leases / "18c0ffee005-4247-abcdef.shell")
    os.mkfifo(leases / "18c0ffee006-4248-abcdef.pending")
    _table(versatil_home).write_text("garbage")  # so that the next command rebuilds
    tally.attack(2)
    proc = subprocess.Popen(
        versatil_argv("locks"), cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    assert not tally.hung(proc, 20), "a FIFO in run/leases hung the rebuild"
    _out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert _kept(repo)


@pytest.fixture
def table_lock_held(versatil_home: Path, repo: Path) -> Iterator[int]:
    """This test process holds run/table.lock, as a stopped versatil command would."""
    _keep(repo)
    path = StateDir().table_lock
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield fd
    finally:
        os.close(fd)


@pytest.mark.parametrize("args", [["lock", "--wait", "0", "db:x"], ["lock", "--wait", "1", "db:y"]])
def test_a_held_table_lock_is_waited_for_no_longer_than_the_budget(
    args: list[str], table_lock_held: int, repo: Path, tally: Tally
) -> None:
    tally.attack()
    proc = subprocess.Popen(
        versatil_argv(*args), cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    hung = tally.hung(proc, 15)  # the budget is a second at most; 15 s is a hang
    assert not hung, f"versatil {' '.join(args)} waited on the table lock past its budget"
    _out, err = proc.communicate()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, err
    assert "busy" in err and "table.lock" in err and str(os.getpid()) in err, err
    # Let go: the same command now works.
    fcntl.flock(table_lock_held, fcntl.LOCK_UN)
    again = versatil_process(*args, cwd=repo)
    assert again.code == 0, again


@pytest.mark.slow
@pytest.mark.parametrize("args", [["locks"], ["hook", "check"], ["unlock", "db:kept"]])
def test_commands_without_a_wait_budget_give_up_on_a_held_table_lock(
    args: list[str], table_lock_held: int, repo: Path, tally: Tally
) -> None:
    tally.attack()
    proc = subprocess.Popen(
        versatil_argv(*args), cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "VERSATIL_AGENT": "Keeper"},
    )
    assert not tally.hung(proc, 30), f"versatil {' '.join(args)} hung on a held table lock"
    _out, err = proc.communicate()
    assert proc.returncode == 1 and "busy" in err and "Traceback" not in err, err


# 10. A rebuild keeps every waiter's place ---------------------------------------------------
def test_a_rebuilt_table_keeps_each_waiters_place(
    agents: object, repo: Path, versatil_home: Path, tally: Tally
) -> None:
    manager = LockManager(repo=repo)
    for _ in range(5):  # numbers handed out before: a renumbering rebuild would differ
        manager.acquire(["db:warm-up"], agent="Warm", wait=0).release()
    holder, early, late = agents(), agents(), agents()  # type: ignore[operator]
    holder.acquire(["src/a.py"], agent="Holder")
    early.request(["src/a.py"], agent="Early", wait=60)
    wait_for(lambda: [w.agent for w in manager.sweep().waiters] == ["Early"])
    _table(versatil_home).write_text("garbage")
    tally.attack()
    late.request(["src/a.py"], agent="Late", wait=60)
    wait_for(lambda: [w.agent for w in manager.sweep().waiters] == ["Early", "Late"])
    holder.release()
    first = early.reply()
    assert first.get("ok"), f"Early lost its place: {first}"
    early.release()
    assert late.reply().get("ok")


@pytest.mark.slow
def test_queue_order_survives_repeated_rebuilds(
    agents: object, repo: Path, versatil_home: Path, tmp_path: Path, tally: Tally
) -> None:
    """Waiters arrive one by one with the table damaged between arrivals: they are granted in
    arrival order, and none is told it would deadlock."""
    manager = LockManager(repo=repo)
    holder = agents()  # type: ignore[operator]
    waiters = [agents() for _ in range(5)]  # type: ignore[operator]
    record = tmp_path / "order.txt"
    for round_ in range(3):
        record.write_text("")
        holder.acquire(["db:a"], agent="Holder")
        names = []
        for index, waiter in enumerate(waiters):
            name = f"W{round_}-{index}"
            waiter.request(["db:a"], agent=name, wait=60, record=str(record), release_after=True)
            names.append(name)
            wait_for(lambda n=names: [w.agent for w in manager.sweep().waiters] == n)
            _table(versatil_home).write_text("garbage")
            tally.attack()
        holder.release()
        replies = [w.reply() for w in waiters]
        false_deadlocks = [r for r in replies if r.get("error") == "Deadlock"]
        tally.queue_jumps += len(false_deadlocks)
        assert all(r.get("ok") for r in replies), replies
        granted = record.read_text().split()
        tally.queue_jumps += sum(1 for a, b in zip(granted, names, strict=False) if a != b)
        assert granted == names


def test_no_false_deadlock_after_a_rebuild(
    agents: object, repo: Path, versatil_home: Path
) -> None:
    manager = LockManager(repo=repo)
    holder, waiter = agents(), agents()  # type: ignore[operator]
    holder.acquire(["db:a"], agent="A")
    for _ in range(5):
        manager.acquire(["db:warm-up"], agent="Warm", wait=0).release()
    waiter.request(["db:a"], agent="B", wait=60)
    wait_for(lambda: [w.agent for w in manager.sweep().waiters] == ["B"])
    _table(versatil_home).write_text("garbage")
    with pytest.raises(LockConflict):  # C queues behind B, then gives up: no Deadlock
        manager.acquire(["db:a"], agent="C", wait=0.3)
    holder.release()
    assert waiter.reply().get("ok")


# 16. A partial unlock is never resurrected --------------------------------------------------
def test_a_partial_unlock_survives_the_holders_next_lock_and_a_rebuild(
    agents: object, repo: Path, versatil_home: Path
) -> None:
    manager = LockManager(repo=repo)
    holder = agents()  # type: ignore[operator]
    holder.acquire(["src/a.py", "db:users"], agent="Marcus")
    manager.unlock(["db:users"], agent="Marcus")  # from a shell, as Marcus
    holder.acquire(["db:other"], agent="Marcus")  # the holder publishes its records again
    _table(versatil_home).write_text("garbage")
    mine = manager.acquire(["db:users"], agent="Other", wait=0)  # must not conflict
    claims = {
        str(c.resource) for g in manager.sweep().locks if g.agent == "Marcus"
        for c in g.claims
    }
    assert claims == {"src/a.py", "db:other"}
    mine.release()


# 14. Waits and expiry are not fooled by a stepped wall clock --------------------------------
# A child whose wall clock (time.time, what every part of versatil read) steps once the first
# look at the table is done: back an hour, or forward two.
STEPPED = textwrap.dedent(
    """
    import sys, time
    from versatil_fs.locks import manager as manager_module
    step = float(sys.argv[1])
    real, offset = time.time, [0.0]
    time.time = lambda: real() + offset[0]
    decide = manager_module.LockManager._decide
    def stepping(self, *args, **kwargs):
        try:
            return decide(self, *args, **kwargs)
        finally:
            offset[0] = step
    manager_module.LockManager._decide = stepping
    if sys.argv[2] == "now":
        offset[0] = step
    if len(sys.argv) > 3 and sys.argv[3] == "reboot":
        from versatil_fs.locks import clock
        clock.CLOCK.boot_id = lambda: "00000000-0000-0000-0000-000000000000"
    from versatil_fs.cli import main
    sys.argv = ["versatil", *sys.argv[4:]]
    main()
    """
)


def _stepped(step: float, when: str, *args: str, cwd: Path, reboot: bool = False) -> list[str]:
    return [sys.executable, "-c", STEPPED, str(step), when, "reboot" if reboot else "-", *args]


def test_a_clock_set_back_does_not_stretch_a_wait(repo: Path, tally: Tally) -> None:
    _keep(repo)
    started = time.monotonic()
    proc = subprocess.Popen(
        _stepped(-3600, "later", "lock", "--wait", "1", "db:kept", cwd=repo), cwd=repo,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert not tally.hung(proc, 20), "a clock set back an hour stretched --wait 1"
    _out, err = proc.communicate()
    assert proc.returncode == 1 and "Keeper" in err, err
    assert time.monotonic() - started < 20


def test_a_clock_set_forward_does_not_end_a_shell_lease(repo: Path, tally: Tally) -> None:
    kept = versatil("lock", "--agent", "Keeper", "--ttl", "3600", "db:hour", cwd=repo)
    assert kept.code == 0, kept
    tally.attack()
    result = subprocess.run(
        _stepped(7200, "now", "lock", "--agent", "Other", "--wait", "0", "db:hour", cwd=repo),
        cwd=repo, capture_output=True, text=True, timeout=60, check=False,
    )
    if result.returncode == 0:
        tally.overlaps += 1
    assert result.returncode == 1 and "Keeper" in result.stderr, result.stderr
    assert _kept(repo)


def test_after_a_reboot_expiry_falls_back_to_the_wall_clock(repo: Path) -> None:
    kept = versatil("lock", "--agent", "Keeper", "--ttl", "3600", "db:hour", cwd=repo)
    assert kept.code == 0, kept
    result = subprocess.run(
        _stepped(7200, "now", "lock", "--agent", "Other", "--wait", "0", "db:hour", cwd=repo,
                 reboot=True),
        cwd=repo, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr  # another boot: two hours on, it expired


# 12. A directory lock covers a submodule's files, from either side --------------------------
@pytest.fixture
def superproject(tmp_path: Path) -> Path:
    sub = make_git_repo(tmp_path / "sub-origin", {"s.txt": "sub\n"})
    top = make_git_repo(tmp_path / "super", {"README.md": "top\n", "libs/keep.txt": "k\n"})
    git(top, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "libs/sm")
    git(top, "commit", "-q", "-m", "submodule")
    return top


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("", "libs/"), ("", "libs/sm/s.txt")),
        (("", "libs/"), ("libs/sm", "s.txt")),
        (("", "."), ("libs/sm", ".")),
        (("libs/sm", "s.txt"), ("", "libs")),
        (("libs/sm", "."), ("", "libs/sm/s.txt")),
    ],
)
def test_a_directory_lock_covers_a_submodule(
    superproject: Path, first: tuple[str, str], second: tuple[str, str], tally: Tally
) -> None:
    where, what = first
    taken = versatil("lock", "--agent", "A", what, cwd=superproject / where)
    assert taken.code == 0, taken
    where, what = second
    result = versatil("lock", "--agent", "B", "--wait", "0", what, cwd=superproject / where)
    if result.code == 0:
        tally.overlaps += 1
    assert result.code == 1 and "A" in result.err, result


def test_a_nested_submodule_is_covered_from_the_top(tmp_path: Path, tally: Tally) -> None:
    inner = make_git_repo(tmp_path / "inner-origin", {"deep.txt": "deep\n"})
    middle = make_git_repo(tmp_path / "middle-origin", {"m.txt": "m\n"})
    git(middle, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(inner), "in")
    git(middle, "commit", "-q", "-m", "inner")
    top = make_git_repo(tmp_path / "top", {"README.md": "top\n"})
    git(top, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(middle), "mid")
    git(top, "-c", "protocol.file.allow=always", "submodule", "update", "-q", "--init",
        "--recursive")
    assert (top / "mid/in/deep.txt").exists()
    assert versatil("lock", "--agent", "A", "deep.txt", cwd=top / "mid/in").code == 0
    for where, what in (("", "mid"), ("mid", "in"), ("", "mid/in/deep.txt"), ("", ".")):
        result = versatil("lock", "--agent", "B", "--wait", "0", what, cwd=top / where)
        if result.code == 0:
            tally.overlaps += 1
        assert result.code == 1 and "A" in result.err, (where, what, result)
    assert versatil("lock", "--agent", "B", "--wait", "0", "README.md", cwd=top).code == 0


def test_the_commit_guard_in_a_submodule_sees_a_lock_above_it(superproject: Path) -> None:
    sm = superproject / "libs/sm"
    assert versatil("lock", "--agent", "A", "libs", cwd=superproject).code == 0
    (sm / "s.txt").write_text("changed\n")
    git(sm, "add", "s.txt")
    check = versatil_process("hook", "check", cwd=sm, env={"VERSATIL_AGENT": "B"})
    assert check.code == 1 and "s.txt" in check.err + check.out, check


# 13, 17. Bad input: one sentence, never exit 70 ---------------------------------------------
def test_bad_lock_paths_are_one_sentence(repo: Path, tally: Tally) -> None:
    odd = os.fsencode(repo) + b"/src/odd-\xff.txt"
    with open(odd, "wb") as handle:
        handle.write(b"x\n")
    cases = {
        "non-utf8": (os.fsdecode(odd), "UTF-8"),
        "4096-char path": ("src/" + "a/" * 2046 + "x", "bytes"),
        "300-char name": ("src/" + "n" * 300, "255"),
        "non-utf8 agent": ("db:x", "UTF-8"),
    }
    for name, (path, word) in cases.items():
        tally.bad_inputs += 1
        agent = "\udcff" if name == "non-utf8 agent" else "Probe"
        result = tally.outcome(versatil("lock", "--agent", agent, path, cwd=repo))
        problems = one_line_problems(result, (2,), [word])
        assert problems == [], f"{name}: {problems}\n{result}"
    for option in (["--priority", str(10**30)], ["--ttl", "1e308"], ["--wait", "1e308"]):
        tally.bad_inputs += 1
        result = tally.outcome(versatil("lock", *option, "db:x", cwd=repo))
        assert one_line_problems(result, (2,), []) == [], (option, result)
    assert LockManager(repo=repo).sweep().locks == []


def test_the_guard_never_crashes_on_a_non_utf8_staged_name(repo: Path, tally: Tally) -> None:
    odd = os.fsencode(repo) + b"/src/odd-\xfe.txt"
    with open(odd, "wb") as handle:
        handle.write(b"x\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    tally.bad_inputs += 1
    free = tally.outcome(versatil_process("hook", "check", cwd=repo))
    assert free.code == 0, free
    assert versatil("lock", "--agent", "A", "src", cwd=repo).code == 0
    blocked = tally.outcome(
        versatil_process("hook", "check", cwd=repo, env={"VERSATIL_AGENT": "B"})
    )
    assert blocked.code == 1 and "Traceback" not in blocked.err, blocked


@pytest.mark.parametrize(
    "field",
    [
        ("expires_at", "1e308"), ("expires_at", "1e400"), ("expires_at", "-5"),
        ("acquired_at", "NaN"), ("ttl", "0"), ("pid", "-1"), ("priority", "1e30"),
    ],
)
def test_an_out_of_range_number_in_the_table_is_damage(
    field: tuple[str, str], repo: Path, versatil_home: Path, tally: Tally
) -> None:
    _keep(repo)
    name, value = field
    _add_entry(versatil_home, _grant(owner="shell", **{name: "@@"}))
    path = _table(versatil_home)
    path.write_text(path.read_text().replace('"@@"', value))
    tally.bad_inputs += 1
    for args in (["locks"], ["lock", "--agent", "Probe", "db:probe"]):
        result = tally.outcome(versatil(*args, cwd=repo))
        assert result.code == 0 and "Traceback" not in result.err, result
    assert len(_moved_aside(versatil_home)) == 1
    assert _kept(repo)
    with pytest.raises(LockConflict):
        LockManager(repo=repo).acquire(["db:probe"], agent="Other", wait=0)


def test_deadlock_is_still_reported(agents: object, repo: Path) -> None:
    """The queue-number change keeps real cycles found."""
    manager = LockManager(repo=repo)
    one = agents()  # type: ignore[operator]
    one.acquire(["db:1"], agent="One")
    mine = manager.acquire(["db:2"], agent="Two")
    one.request(["db:2"], agent="One", wait=30)
    wait_for(lambda: [w.agent for w in manager.sweep().waiters] == ["One"])
    with pytest.raises(Deadlock):
        manager.acquire(["db:1"], agent="Two", wait=30)
    mine.release()
    assert one.reply().get("ok")
