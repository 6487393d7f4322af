"""The lock manager across real processes: exclusion, hand-off, crashes, queue order, damage.

Every process here is a real ``python`` child (see ``integration.helpers.lock_agent``) that
takes and releases locks on command; the test synchronises on what the children print and on the
lock table itself (a waiter is "queued" once ``LockManager.sweep()`` lists it), never on sleeps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from integration.helpers import (
    WAIT_AT_START_LINE,
    LockAgent,
    Spawner,
    StartLine,
    git,
    lock_agent,
    wait_for,
)

from versatil_fs import Deadlock, LockConflict, LockManager, UsageError, events
from versatil_fs.locks.table import Table, conflicts
from versatil_fs.state import StateDir

FILES = {
    "src/a.py": "a = 1\n",
    "src/b.py": "b = 2\n",
    "src/api/login.py": "login\n",
    "docs/x.md": "# x\n",
    "README.md": "hello\n",
}


@pytest.fixture
def agents(spawn: Spawner, repo: Path) -> Iterator[object]:
    """``agents()`` starts a lock-agent child in ``repo`` (or ``cwd=``); all killed at the end."""

    def start(cwd: Path | None = None, **kwargs: object) -> LockAgent:
        return lock_agent(spawn, cwd or repo, **kwargs)  # type: ignore[arg-type]

    yield start


def queued(manager: LockManager, *names: str) -> bool:
    """Whether every named agent currently has a request waiting in the queue."""
    waiting = {w.agent for w in manager.sweep().waiters}
    return all(name in waiting for name in names)


def wait_queued(manager: LockManager, *names: str) -> None:
    """Wait until every named agent has a request in the queue."""
    wait_for(
        lambda: queued(manager, *names),
        message=lambda: f"{names} to be queued; table: {manager.sweep()}",
    )


def holders_of(manager: LockManager, resource: str) -> list[str]:
    wanted = manager.resolve(resource)
    return sorted(
        g.agent for g in manager.sweep().locks
        if any(c.resource.overlaps(wanted) for c in g.claims)
    )


def lock_events(kind: str) -> list[events.Event]:
    return [e for e in events.read("locks") if e.kind == kind]


def assert_no_conflicting_grants(table: Table) -> None:
    for i, a in enumerate(table.locks):
        for b in table.locks[i + 1 :]:
            assert not conflicts(a, b), f"two conflicting grants in the table:\n{a}\n{b}"


# Many processes, one witness per resource -------------------------------------------------------
WORKER = WAIT_AT_START_LINE + r"""
import json, os, random, sys, time
from pathlib import Path
import msgspec
from versatil_fs import LockManager, VersatilError

index, rounds, go, witness, stop = (
    int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
)
agent = f"worker-{index}"
rng = random.Random(index * 7919 + rounds)
# (writes, reads): files, their directory, a named resource, and mixes of them.
REQUESTS = [
    (["src/a.py"], []), (["src/b.py"], []), (["src"], []), (["docs/x.md"], []),
    (["db:users"], []), (["src/a.py", "db:users"], []), (["docs", "src/b.py"], []),
    ([], ["src"]), ([], ["src/a.py"]), (["docs/x.md"], ["src/b.py"]),
    ([], ["db:users", "docs"]), (["src/api/login.py"], ["src/a.py"]),
]
# The independent witnesses each resource covers.
LEAVES = {
    "src": ["a", "b", "login"], "src/a.py": ["a"], "src/b.py": ["b"],
    "src/api/login.py": ["login"], "docs": ["x"], "docs/x.md": ["x"], "db:users": ["db"],
}
problems = []
manager = LockManager(repo=".")
print("ready", flush=True)
wait_at_start_line(go)  # every worker starts at once, so their requests contend

def enter(writes, reads):
    made = []
    for leaf in sorted({l for r in writes for l in LEAVES[r]}):
        try:
            fd = os.open(witness / f"w-{leaf}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            problems.append(f"{agent}: write witness {leaf} already exists (two writers)")
            continue
        os.close(fd)
        made.append(witness / f"w-{leaf}")
        readers = list(witness.glob(f"r-{leaf}-*"))
        if readers:
            problems.append(f"{agent}: writing {leaf} while read by {[p.name for p in readers]}")
    for leaf in sorted({l for r in reads for l in LEAVES[r]}):
        mine = witness / f"r-{leaf}-{index}"
        mine.touch()
        made.append(mine)
        if (witness / f"w-{leaf}").exists():
            problems.append(f"{agent}: reading {leaf} while it is written")
    return made

for n in range(rounds):
    if stop.exists():
        break
    writes, reads = rng.choice(REQUESTS)
    try:
        with manager.hold(writes, reads=reads, agent=agent, wait=60) as lease:
            made = enter(writes, reads)
            if n % 4 == 0:  # while holding, the table lists this lease
                if lease.id not in [g.id for g in manager.sweep().locks]:
                    problems.append(f"{agent}: own lease {lease.id} missing from the table")
            for path in made:
                path.unlink()
    except VersatilError as exc:
        problems.append(f"{agent}: {type(exc).__name__}: {exc}")
print(json.dumps({"problems": problems, "rounds": rounds}), flush=True)
"""

TABLE_READER = r"""
import fcntl, json, os, sys, time
from pathlib import Path
table, stop, lock_file, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
give_up = float(sys.argv[5])  # stop at the first failure, or after this many seconds (0: never)
lock_fd = os.open(lock_file, os.O_RDONLY) if lock_file != "-" else None
parsed = missing = 0
failures = []
print("ready", flush=True)
started = time.monotonic()
chunked = False
while not stop.exists():
    if give_up and (failures or time.monotonic() - started > give_up):
        break
    chunked = mode == "chunked" or (mode == "both" and not chunked)
    if lock_fd is not None:  # a reader that respects the table lock, as versatil does
        fcntl.flock(lock_fd, fcntl.LOCK_SH)
    try:
        with open(table, "rb", buffering=0) as handle:
            if chunked:  # a slow reader, like `cat` with a small buffer
                parts = []
                while part := handle.read(256):
                    parts.append(part)
                data = b"".join(parts)
            else:
                data = handle.read()
    except FileNotFoundError:
        missing += 1
        continue
    finally:
        if lock_fd is not None:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
    try:
        doc = json.loads(data)
        assert doc["version"] == 1 and isinstance(doc["locks"], list), doc
        parsed += 1
    except (ValueError, AssertionError, KeyError, TypeError) as exc:
        if len(failures) < 3:
            failures.append(f"{exc!r} in a {len(data)}-byte read ending {data[-120:]!r}")
        else:
            failures.append("...")
print(json.dumps({"parsed": parsed, "missing": missing, "failures": failures}), flush=True)
"""


def _soak(spawn: Spawner, repo: Path, tmp_path: Path, workers: int, rounds: int) -> None:
    """``workers`` processes × ``rounds`` lock/witness/release rounds, while a reader outside
    versatil (no table lock, whole and chunked reads) parses the lock table in a loop."""
    sd = StateDir()
    witness = tmp_path / "witness"
    witness.mkdir()
    start, stop = StartLine(tmp_path / "go"), tmp_path / "stop"
    LockManager(repo=repo).sweep()  # create the table, so the reader never waits for it
    reader = spawn(
        TABLE_READER, str(sd.lock_table), str(stop), "-", "both", "0", name="table-reader"
    )
    children = [
        spawn(WORKER, str(i), str(rounds), str(start.path), str(witness), str(stop), cwd=repo,
              name=f"worker-{i}")
        for i in range(workers)
    ]
    for child in [reader, *children]:
        assert child.read_line() == "ready", child.stderr
    start.go()
    problems: list[str] = []
    for child in children:
        report = child.read_json(timeout=240)
        problems += report["problems"]
        assert child.wait() == 0, child.stderr
    stop.touch()
    read = reader.read_json()
    assert problems == []
    assert read["failures"] == [], f"the lock table did not parse for a reader: {read}"
    assert read["parsed"] > 0
    # At the end: a complete table, nothing held, nobody waiting, every grant logged.
    final = msgspec.json.decode(sd.lock_table.read_bytes(), type=Table)
    assert final.version == 1
    snapshot = LockManager(repo=repo).sweep()
    assert snapshot.locks == [] and snapshot.waiters == []
    assert len(lock_events("grant")) == workers * rounds
    assert list(witness.iterdir()) == []


def test_eight_processes_never_overlap(spawn: Spawner, repo: Path, tmp_path: Path) -> None:
    _soak(spawn, repo, tmp_path, workers=8, rounds=40)


@pytest.mark.slow
def test_eight_processes_never_overlap_soak(spawn: Spawner, repo: Path, tmp_path: Path) -> None:
    _soak(spawn, repo, tmp_path, workers=8, rounds=400)


def test_a_slow_reader_keeps_the_document_it_opened(manager: LockManager) -> None:
    """Complete-or-absent: a file someone has open is never rewritten under them."""
    table = StateDir().lock_table
    manager.acquire(["db:first"], agent="A", owner="shell")
    with open(table, "rb", buffering=0) as reader:
        head = reader.read(100)
        for name in ("db:second", "db:third-with-a-longer-name", "db:fourth"):
            manager.acquire([name], agent="A", owner="shell")  # more table writes meanwhile
        document = head + reader.read()
    parsed = json.loads(document)
    assert [g["claims"][0]["resource"]["name"] for g in parsed["locks"]] == ["db:first"]
    assert len(json.loads(table.read_bytes())["locks"]) == 4


# Crashes ----------------------------------------------------------------------------------------
def test_kill_9_of_a_holder_grants_the_waiter_within_a_second(
    agents: object, manager: LockManager
) -> None:
    holder = agents()  # type: ignore[operator]
    waiter = agents()  # type: ignore[operator]
    holder.acquire(["src/a.py"], agent="Holder")
    waiter.request(["src/a.py"], agent="Waiter", wait=30)
    wait_queued(manager, "Waiter")
    assert not waiter.child.has_output()  # still waiting: the holder lives
    killed_at = holder.kill9()
    granted = waiter.reply()
    assert granted["ok"], granted
    assert granted["granted_at"] - killed_at < 1.0
    assert holders_of(manager, "src/a.py") == ["Waiter"]
    assert [e.agent for e in lock_events("reclaim")] == ["Holder"]


@pytest.mark.slow
def test_kill_9_hand_off_is_prompt_every_time(agents: object, manager: LockManager) -> None:
    """A chain: each waiter becomes the holder that is killed next; every hand-off < 1 s."""
    holder = agents()  # type: ignore[operator]
    holder.acquire(["src"], agent="H0")
    delays = []
    for i in range(1, 21):
        waiter = agents()  # type: ignore[operator]
        waiter.request(["src/a.py"] if i % 2 else ["src"], agent=f"H{i}", wait=30)
        wait_queued(manager, f"H{i}")
        killed_at = holder.kill9()
        granted = waiter.reply()
        assert granted["ok"], granted
        delays.append(granted["granted_at"] - killed_at)
        holder = waiter
    assert max(delays) < 1.0, delays


def test_a_holder_that_exits_without_releasing_frees_its_locks(
    agents: object, manager: LockManager
) -> None:
    holder = agents()  # type: ignore[operator]
    holder.acquire(["src", "db:users"], agent="Holder")
    with pytest.raises(LockConflict):
        manager.acquire(["src/a.py"], agent="Other", wait=0)
    assert holder.exit() == 0  # exits normally, never calling release()
    lease = manager.acquire(["src/a.py", "db:users"], agent="Other", wait=0)
    assert holders_of(manager, "src") == ["Other"]
    lease.release()


def test_a_killed_waiter_leaves_the_queue(agents: object, manager: LockManager) -> None:
    holder, first, second = agents(), agents(), agents()  # type: ignore[operator]
    holder.acquire(["db:users"], agent="Holder")
    first.request(["db:users"], agent="First", wait=30)
    wait_queued(manager, "First")
    second.request(["db:users"], agent="Second", wait=30)
    wait_queued(manager, "Second")
    first.kill9()
    assert [w.agent for w in manager.sweep().waiters] == ["Second"]
    # Logged by whichever process dropped it (perhaps Second), just after its transaction.
    wait_for(lambda: [e.agent for e in lock_events("waiter-gone")] == ["First"])
    # The dead waiter was ahead of Second: it must not hold Second back.
    holder.release()
    assert second.reply()["ok"]
    assert holders_of(manager, "db:users") == ["Second"]


def test_a_waiter_that_gives_up_leaves_the_queue(agents: object, manager: LockManager) -> None:
    holder = agents()  # type: ignore[operator]
    holder.acquire(["db:users"], agent="Holder")
    started = time.monotonic()
    with pytest.raises(LockConflict) as caught:
        manager.acquire(["db:users"], agent="Impatient", wait=0.3)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "Holder" in message and "db:users" in message and "since" in message
    assert manager.sweep().waiters == []


LOCK_POINTS = ["locks.before-record", "state.before-rename", "state.before-rename:2",
               "state.before-rename:3", "state.before-rename:4"]

DIES_AT_A_FAULT_POINT = """
    from versatil_fs import LockManager
    manager = LockManager(repo=".")
    for _ in range(3):
        with manager.hold(["src/a.py", "db:users"], agent="Doomed"):
            pass
        manager.acquire(["docs"], agent="Doomed", owner="shell", ttl=600).release()
"""


@pytest.mark.parametrize("point", LOCK_POINTS)
def test_a_process_killed_at_a_fault_point_leaves_no_lock_or_damage_behind(
    spawn: Spawner, repo: Path, manager: LockManager, point: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    child = spawn(DIES_AT_A_FAULT_POINT, cwd=repo, env={"VERSATIL_FAULT": point}, stdin=False)
    assert child.wait() == -9, f"never reached {point}: {child.stderr}"
    for resource in ("src/a.py", "db:users"):
        manager.acquire([resource], agent="Survivor", wait=0).release()
    table = manager.sweep()
    assert [g.agent for g in table.locks if g.owner == "process"] == []
    assert table.waiters == []
    assert not list(StateDir().logs.glob("*.corrupt-*"))
    assert lock_events("table-damaged") == []
    assert "could not be read" not in capfd.readouterr().err


CHAOS_WORKER = r"""
import json, os, random, sys, time
from pathlib import Path
from versatil_fs import LockManager, VersatilError

witness, problems, stop = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

def identity(pid):
    # pid plus its start time: a pid reused by an unrelated process is not mistaken for us.
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Dead too: killed but not yet reaped (Z), or exiting (PF_EXITING: the kernel sets it before
    # it closes the process's files and so drops its flocks, letting others take its locks).
    if fields[0] in ("Z", "X") or int(fields[6]) & 0x4:
        return None
    return f"{pid}.{fields[19]}"

me = identity(os.getpid())
rng = random.Random(os.getpid())
REQUESTS = [(["src"], []), (["src/a.py"], []), (["src/a.py", "db:users"], []),
            ([], ["src"]), ([], ["src/a.py", "db:users"]), (["db:users"], [])]
LEAVES = {"src": ["a", "b"], "src/a.py": ["a"], "db:users": ["db"]}

def report(text):
    fd = os.open(problems, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, (f"{me}: {text}" + chr(10)).encode())
    os.close(fd)

def alive(who):
    return bool(who) and identity(who.split(".")[0]) == who

def owner(path):
    try:
        return path.read_text()
    except OSError:
        return ""

def claim(leaf):
    path = witness / f"w-{leaf}"
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            other = owner(path)
            if alive(other):
                report(f"writing {leaf} while {other} writes it")
                return None
            path.unlink(missing_ok=True)  # left by a killed holder, whose lock was reclaimed
            continue
        os.write(fd, me.encode())
        os.close(fd)
        for reader in witness.glob(f"r-{leaf}-*"):
            other = reader.name.split("-", 2)[2]
            if other != me and alive(other):
                report(f"writing {leaf} while {other} reads it")
        return path

def read(leaf):
    path = witness / f"r-{leaf}-{me}"
    path.touch()
    other = owner(witness / f"w-{leaf}")
    if other and other != me and alive(other):
        report(f"reading {leaf} while {other} writes it")
    return path

manager = LockManager(repo=".")
print("ready", flush=True)
while not stop.exists():
    writes, reads = rng.choice(REQUESTS)
    try:
        with manager.hold(writes, reads=reads, agent=f"chaos-{me}", wait=60) as lease:
            made = [claim(l) for r in writes for l in LEAVES[r]]
            made += [read(l) for r in reads for l in LEAVES[r]]
            if len(made) != len([m for m in made if m]):
                report(f"while holding {lease!r}; table: {manager.sweep()!r}")
            for path in made:
                if path is not None:
                    path.unlink(missing_ok=True)
    except VersatilError as exc:
        report(f"{type(exc).__name__}: {exc}")
"""


class _GrantCounter:
    """The number of grants in the locks log so far, read incrementally: re-reading the whole
    log on every poll made the poll slower as the workers wrote faster, and under load the two
    fed each other (a 300 MB log)."""

    def __init__(self) -> None:
        self.path = StateDir().event_log("locks")
        self.offset = 0
        self.grants = 0
        self.partial = b""

    def count(self) -> int:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return 0
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()  # a line still being written
        self.grants += sum(1 for line in lines if b'"kind":"grant"' in line)
        return self.grants


def _chaos(spawn: Spawner, repo: Path, tmp_path: Path, workers: int, kills: int) -> None:
    """Workers lock and check witnesses while the test SIGKILLs them at arbitrary moments."""
    import random

    witness, problems, stop = tmp_path / "witness", tmp_path / "problems", tmp_path / "stop"
    witness.mkdir()
    rng = random.Random(kills)

    def start() -> object:
        child = spawn(CHAOS_WORKER, str(witness), str(problems), str(stop), cwd=repo,
                      stdin=False, name="chaos")
        assert child.read_line() == "ready", child.stderr
        return child

    running = [start() for _ in range(workers)]
    grants = _GrantCounter()
    for _ in range(kills):
        # Kill after a random number of further grants: arbitrary moments, synchronised on
        # progress rather than on time.
        target = grants.count() + rng.randint(1, 6)
        wait_for(lambda: grants.count() >= target, interval=0.002)  # noqa: B023
        victim = running.pop(rng.randrange(len(running)))
        victim.kill9()  # type: ignore[attr-defined]
        running.append(start())
    stop.touch()
    for child in running:
        assert child.wait(timeout=60) == 0, child.stderr  # type: ignore[attr-defined]
    assert not problems.exists(), problems.read_text()
    table = LockManager(repo=repo).sweep()
    assert table.locks == [] and table.waiters == []  # every dead holder's lock was reclaimed
    assert not list(StateDir().logs.glob("*.corrupt-*"))


def test_holders_killed_at_random_moments_never_break_exclusion(
    spawn: Spawner, repo: Path, tmp_path: Path
) -> None:
    _chaos(spawn, repo, tmp_path, workers=4, kills=8)


@pytest.mark.slow
def test_holders_killed_at_random_moments_never_break_exclusion_soak(
    spawn: Spawner, repo: Path, tmp_path: Path
) -> None:
    _chaos(spawn, repo, tmp_path, workers=6, kills=80)


THREADS = r"""
import json, os, sys, threading
from versatil_fs import LockManager, VersatilError

witness, rounds = sys.argv[1], int(sys.argv[2])
manager = LockManager(repo=".")  # one manager, shared by every thread of the process
problems = []

def work(i):
    for n in range(rounds):
        if problems:
            return
        try:
            with manager.hold(["src/a.py"], agent=f"thread-{i}", wait=60):
                try:
                    os.close(os.open(witness, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    problems.append(f"thread-{i} round {n}: another thread holds src/a.py too")
                    continue
                os.unlink(witness)
        except VersatilError as exc:
            problems.append(f"thread-{i}: {exc}")

threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(problems), flush=True)
"""


def _threads(spawn: Spawner, repo: Path, tmp_path: Path, rounds: int) -> None:
    child = spawn(THREADS, str(tmp_path / "witness"), str(rounds), cwd=repo, stdin=False,
                  name="threads")
    code = child.wait(timeout=240)
    assert code == 0, f"the process died (exit {code}); stderr: {child.stderr}"
    problems = child.read_json()
    assert problems == [], "\n".join(problems)


def test_threads_sharing_one_lock_manager_exclude_each_other(
    spawn: Spawner, repo: Path, tmp_path: Path
) -> None:
    """flock excludes processes, not threads sharing one descriptor: the store must do both."""
    _threads(spawn, repo, tmp_path, rounds=100)


@pytest.mark.slow
def test_threads_sharing_one_lock_manager_exclude_each_other_soak(
    spawn: Spawner, repo: Path, tmp_path: Path
) -> None:
    _threads(spawn, repo, tmp_path, rounds=1000)


# Hand-off without polling -----------------------------------------------------------------------
def test_a_release_hands_the_lock_to_the_waiter_promptly(
    agents: object, manager: LockManager
) -> None:
    holder, waiter = agents(), agents()  # type: ignore[operator]
    holder.acquire(["src/b.py"], agent="Holder")
    waiter.request(["src/b.py"], agent="Waiter", wait=30)
    wait_queued(manager, "Waiter")
    released = holder.release()
    granted = waiter.reply()
    assert granted["ok"]
    assert granted["granted_at"] - released["released_at"] < 1.0


SLOW_TO_ARM = """
    import sys
    from versatil_fs import LockManager
    from versatil_fs.locks import store

    arm = store.LocalStore.doorbell

    def doorbell(self):
        # The request has been queued and its transaction closed, and the doorbell is not
        # armed yet: widen that moment so the test can release the lock inside it.
        print("queued", flush=True)
        sys.stdin.readline()
        return arm(self)

    store.LocalStore.doorbell = doorbell
    LockManager(repo=".").acquire(["db:users"], agent="Waiter", wait=30)
    print("granted", flush=True)
"""


def test_a_release_right_after_queueing_is_not_missed(
    agents: object, spawn: Spawner, repo: Path, manager: LockManager
) -> None:
    holder = agents()  # type: ignore[operator]
    holder.acquire(["db:users"], agent="Holder")
    waiter = spawn(SLOW_TO_ARM, cwd=repo, name="slow-to-arm")
    assert waiter.read_line() == "queued", waiter.stderr
    holder.release()
    waiter.send("go")
    # Free since the release: granted at once, not when its 30 s wait runs out.
    assert waiter.read_line(timeout=2) == "granted"


def test_the_same_agent_never_blocks_itself(agents: object, manager: LockManager) -> None:
    one, two = agents(), agents()  # type: ignore[operator]
    one.acquire(["src"], agent="Marcus")
    two.request(["src/a.py"], agent="Marcus", wait=0)
    assert two.reply()["ok"]
    assert holders_of(manager, "src/a.py") == ["Marcus", "Marcus"]


def test_readers_share_and_a_writer_waits_for_all_of_them(
    agents: object, manager: LockManager
) -> None:
    r1, r2, writer = agents(), agents(), agents()  # type: ignore[operator]
    r1.acquire(["docs"], agent="Reader1", mode="read")
    r2.acquire(["docs/x.md"], agent="Reader2", mode="read")
    writer.request(["docs/x.md"], agent="Writer", wait=30)
    wait_queued(manager, "Writer")
    r1.release()
    wait_for(lambda: holders_of(manager, "docs") == ["Reader2"])
    assert not writer.child.has_output()  # Reader2 still reads
    r2.release()
    assert writer.reply()["ok"]
    assert holders_of(manager, "docs/x.md") == ["Writer"]


# Worktrees ---------------------------------------------------------------------------------------
def test_two_worktrees_of_one_repository_block_each_other(
    agents: object, manager: LockManager, repo: Path, tmp_path: Path
) -> None:
    worktree = tmp_path / "worktree"
    git(repo, "worktree", "add", "-q", str(worktree), "-b", "feature")
    here = agents()  # type: ignore[operator]
    there = agents(cwd=worktree)  # type: ignore[operator]
    here.acquire(["src/a.py"], agent="Main")
    there.request(["src/a.py"], agent="Feature", wait=0)
    refused = there.reply()
    assert refused["error"] == "LockConflict" and "Main" in refused["message"]
    # A directory lock in the worktree covers the file locked in the main tree too.
    there.request(["src"], agent="Feature", wait=30)
    wait_queued(manager, "Feature")
    here.release()
    assert there.reply()["ok"]
    assert holders_of(manager, "src/a.py") == ["Feature"]
    here.request([str(repo / "src" / "b.py")], agent="Main", wait=0)
    assert here.reply()["error"] == "LockConflict"


# Queue order ------------------------------------------------------------------------------------
def _grant_order(
    agents: object, manager: LockManager, tmp_path: Path, waiters: list[tuple[str, int | None]]
) -> list[str]:
    """One holder; start the waiters one by one (each queued before the next); release; order."""
    order = tmp_path / "order.txt"
    holder = agents()  # type: ignore[operator]
    holder.acquire(["src"], agent="Holder")
    started = []
    for name, priority in waiters:
        child = agents()  # type: ignore[operator]
        options = {"priority": priority} if priority is not None else {}
        child.request(
            ["src/a.py"], agent=name, wait=60, record=str(order), release_after=True, **options
        )
        wait_queued(manager, name)
        started.append(child)
    holder.release()
    for child in started:
        assert child.reply()["ok"]
    return order.read_text().split()


def test_waiters_are_granted_by_priority_then_arrival(
    agents: object, manager: LockManager, tmp_path: Path
) -> None:
    order = _grant_order(
        agents, manager, tmp_path,
        [("W1", 0), ("W2", 0), ("Urgent", 5), ("W3", 0), ("Soon", 1)],
    )
    assert order == ["Urgent", "Soon", "W1", "W2", "W3"]


def test_priority_comes_from_the_repository_configuration(
    agents: object, repo: Path, tmp_path: Path
) -> None:
    (repo / ".versatil").write_text('[agents."Dana-Database"]\npriority = 7\n')
    manager = LockManager(repo=repo)
    order = _grant_order(
        agents, manager, tmp_path, [("Marcus", None), ("James", None), ("Dana-Database", None)]
    )
    assert order == ["Dana-Database", "Marcus", "James"]
    assert {e.agent: e for e in lock_events("wait")}.keys() >= {"Marcus", "Dana-Database"}


def test_the_queue_is_listed_in_grant_order(agents: object, manager: LockManager) -> None:
    holder = agents()  # type: ignore[operator]
    holder.acquire(["db:users"], agent="Holder")
    for name, priority in (("Late", 0), ("Later", 0), ("Boss", 3)):
        agents().request(["db:users"], agent=name, wait=60, priority=priority)  # type: ignore[operator]
        wait_queued(manager, name)
    waiting = sorted(manager.sweep().waiters, key=lambda w: (-w.priority, w.seq))
    assert [w.agent for w in waiting] == ["Boss", "Late", "Later"]


# All or nothing ---------------------------------------------------------------------------------
def test_a_request_is_granted_all_at_once_or_not_at_all(
    agents: object, manager: LockManager
) -> None:
    holder = agents()  # type: ignore[operator]
    holder.acquire(["db:held"], agent="Holder")
    # Refused at once: nothing of it is taken, the free resource stays free for others.
    with pytest.raises(LockConflict, match="Holder"):
        manager.acquire(["db:free", "db:held"], agent="Greedy", wait=0)
    assert holders_of(manager, "db:free") == []
    other = manager.acquire(["db:free"], agent="Other", wait=0)
    other.release()

    # Waiting: it holds nothing meanwhile, and is then granted both together.
    greedy = agents()  # type: ignore[operator]
    greedy.request(["db:free", "db:held"], agent="Greedy", wait=30)
    wait_queued(manager, "Greedy")
    assert "Greedy" not in {g.agent for g in manager.sweep().locks}
    assert holders_of(manager, "db:free") == []
    unrelated = manager.acquire(["db:unrelated"], agent="Other", wait=0)
    unrelated.release()
    holder.release()
    assert greedy.reply()["ok"]
    (grant,) = [g for g in manager.sweep().locks if g.agent == "Greedy"]
    assert sorted(str(c.resource) for c in grant.claims) == ["db:free", "db:held"]


def _try_lock(manager: LockManager, resource: str, agent: str, mode: str = "write") -> str | None:
    """The conflict message, or None if the lock was granted (and released again)."""
    try:
        lease = manager.acquire([resource], agent=agent, mode=mode, wait=0)  # type: ignore[arg-type]
    except LockConflict as exc:
        return str(exc)
    lease.release()
    return None


def test_a_newcomer_does_not_overtake_a_queued_request(
    agents: object, manager: LockManager
) -> None:
    """First come, first served: a request queued for [free, held] keeps its turn on `free`."""
    holder, queued_first = agents(), agents()  # type: ignore[operator]
    holder.acquire(["db:held"], agent="Holder")
    queued_first.request(["db:free", "db:held"], agent="First", wait=30)
    wait_queued(manager, "First")
    message = _try_lock(manager, "db:free", "Newcomer")
    assert message is not None and "First" in message


def test_a_stream_of_readers_does_not_starve_a_queued_writer(
    agents: object, manager: LockManager
) -> None:
    reader, writer = agents(), agents()  # type: ignore[operator]
    reader.acquire(["docs/x.md"], agent="Reader1", mode="read")
    writer.request(["docs/x.md"], agent="Writer", wait=30)
    wait_queued(manager, "Writer")
    # A new reader must queue behind the writer, or readers taking turns starve it for ever.
    message = _try_lock(manager, "docs/x.md", "Reader2", mode="read")
    assert message is not None and "Writer" in message


# Deadlock ---------------------------------------------------------------------------------------
def test_a_waiter_closing_a_cycle_is_refused_at_once(
    agents: object, manager: LockManager
) -> None:
    alice = agents()  # type: ignore[operator]
    alice.acquire(["src/a.py"], agent="Alice")
    mine = manager.acquire(["src/b.py"], agent="Bob")
    alice.request(["src/b.py"], agent="Alice", wait=30)  # Alice -> Bob
    wait_queued(manager, "Alice")
    started = time.monotonic()
    with pytest.raises(Deadlock) as caught:
        manager.acquire(["src/a.py"], agent="Bob", wait=20)  # Bob -> Alice: a cycle
    assert time.monotonic() - started < 5  # at once, not after the 20 s wait
    message = str(caught.value)
    assert "Alice" in message and "Bob" in message
    assert caught.value.exit_code == 1
    # Bob was refused, not queued; Alice still waits and gets src/b.py when Bob lets go.
    assert [w.agent for w in manager.sweep().waiters] == ["Alice"]
    (event,) = lock_events("deadlock")
    assert event.agent == "Bob" and set(event.data["cycle"]) == {"Alice", "Bob"}
    mine.release()
    assert alice.reply()["ok"]


def test_no_deadlock_is_reported_without_a_cycle(agents: object, manager: LockManager) -> None:
    alice = agents()  # type: ignore[operator]
    alice.acquire(["src/a.py"], agent="Alice")
    carol = agents()  # type: ignore[operator]
    carol.request(["src/a.py"], agent="Carol", wait=30)  # Carol -> Alice
    wait_queued(manager, "Carol")
    with pytest.raises(LockConflict):  # Bob -> Alice, Carol: a plain wait, no cycle
        manager.acquire(["src/a.py"], agent="Bob", wait=0.1)


# A damaged table --------------------------------------------------------------------------------
def _damage(kind: str, path: Path) -> bytes:
    good = path.read_bytes()
    if kind == "garbage":
        bad = b"\x00\xffthis is not json at all"
    elif kind == "truncated":
        bad = good[: len(good) // 2]
    elif kind == "wrong-version":
        doc = json.loads(good)
        doc["version"] = 99
        bad = json.dumps(doc).encode()
    elif kind == "wrong-shape":
        bad = b'[{"locks": "everything"}]'
    else:
        bad = b""
    with open(path, "wb") as handle:  # damaged in place, as a crash or an editor would
        handle.write(bad)
    return bad


@pytest.mark.parametrize(
    "kind",
    [
        "garbage", "truncated", "wrong-version",
        pytest.param("wrong-shape", marks=pytest.mark.slow),
        pytest.param("empty", marks=pytest.mark.slow),
    ],
)
def test_a_damaged_table_is_moved_aside_and_rebuilt_from_what_is_live(
    agents: object, repo: Path, kind: str, capfd: pytest.CaptureFixture[str]
) -> None:
    table_path = StateDir().lock_table
    holder, waiter = agents(), agents()  # type: ignore[operator]
    holder.acquire(["src/a.py"], agent="Holder")
    waiter.request(["src/a.py"], agent="Waiter", wait=60)
    shell = LockManager(repo=repo)
    shell.acquire(["db:shell"], agent="Shell", owner="shell")
    wait_queued(shell, "Waiter")
    capfd.readouterr()
    bad = _damage(kind, table_path)

    fresh = LockManager(repo=repo)
    with pytest.raises(LockConflict, match="Holder"):  # the live holder still blocks
        fresh.acquire(["src/a.py"], agent="Other", wait=0)

    # Moved aside, not silently replaced; reported once, in one line, and logged.
    (aside,) = table_path.parent.glob("resource-locks.json.corrupt-*")
    assert aside.read_bytes() == bad
    # Whichever process read the damage first reports it (the waiter may have looked again
    # just then): ours synchronously, a child's through its stderr pipe.
    ours = capfd.readouterr().err

    def reports() -> list[str]:
        text = ours + holder.child.stderr + waiter.child.stderr
        return [line for line in text.splitlines() if line.strip()]

    wait_for(reports, message="the damage to be reported")
    wait_for(lambda: lock_events("table-damaged"), message="the table-damaged event")
    assert len(reports()) == 1, reports()
    assert "resource-locks.json" in reports()[0] and aside.name in reports()[0]
    (damaged,) = lock_events("table-damaged")
    assert damaged.data["reason"]

    # Rebuilt: the live holder, the shell lease and the waiting request are all back.
    table = fresh.sweep()
    assert {g.agent for g in table.locks} == {"Holder", "Shell"}
    assert [w.agent for w in table.waiters] == ["Waiter"]
    with pytest.raises(LockConflict, match="Shell"):
        fresh.acquire(["db:shell"], agent="Other", wait=0)
    msgspec.json.decode(table_path.read_bytes(), type=Table)  # a good table again

    # And locking goes on: free resources are granted, the queue still hands over.
    fresh.acquire(["src/b.py"], agent="Other", wait=0).release()
    holder.release()
    assert waiter.reply()["ok"]
    assert holders_of(fresh, "src/a.py") == ["Waiter"]


def test_a_missing_table_is_rebuilt_quietly(
    agents: object, repo: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    holder = agents()  # type: ignore[operator]
    holder.acquire(["src/a.py"], agent="Holder")
    StateDir().lock_table.unlink()
    with pytest.raises(LockConflict, match="Holder"):
        LockManager(repo=repo).acquire(["src/a.py"], agent="Other", wait=0)
    assert capfd.readouterr().err == ""
    assert lock_events("table-damaged") == []


# Forced release ---------------------------------------------------------------------------------
def test_release_agent_frees_a_live_holders_locks(agents: object, manager: LockManager) -> None:
    holder, waiter = agents(), agents()  # type: ignore[operator]
    holder.acquire(["src/a.py", "db:users"], agent="Stuck")
    waiter.request(["db:users"], agent="Waiter", wait=30)
    wait_queued(manager, "Waiter")
    gone = manager.release_agent("Stuck")
    assert [g.agent for g in gone] == ["Stuck"]
    assert waiter.reply()["ok"]  # woken by the forced release, not by a poll
    assert [e.agent for e in lock_events("forced-release")] == ["Stuck"]
    manager.acquire(["src/a.py"], agent="Other", wait=0).release()
    # The holder's process lives on; its own release later is harmless.
    holder.release()
    assert holders_of(manager, "db:users") == ["Waiter"]


def test_a_forced_release_survives_a_table_rebuild(agents: object, manager: LockManager) -> None:
    holder = agents()  # type: ignore[operator]
    holder.acquire(["src/a.py"], agent="Stuck")
    manager.release_agent("Stuck")
    mine = manager.acquire(["src/a.py"], agent="Other", wait=0)
    _damage("garbage", StateDir().lock_table)
    table = manager.sweep()
    assert [g.agent for g in table.locks] == ["Other"]
    assert_no_conflicting_grants(table)
    mine.release()


def test_a_forced_release_survives_the_holders_next_lock_and_a_rebuild(
    agents: object, manager: LockManager
) -> None:
    holder = agents()  # type: ignore[operator]
    holder.acquire(["src/a.py"], agent="Stuck")
    manager.release_agent("Stuck")
    mine = manager.acquire(["src/a.py"], agent="Other", wait=0)
    holder.acquire(["db:unrelated"], agent="Stuck")  # republishes the holder's own records
    _damage("garbage", StateDir().lock_table)
    table = manager.sweep()
    assert_no_conflicting_grants(table)
    assert holders_of(manager, "src/a.py") == ["Other"]
    mine.release()


def test_a_shell_unlock_of_part_of_a_process_lease_survives_a_rebuild(
    agents: object, manager: LockManager
) -> None:
    holder = agents()  # type: ignore[operator]
    holder.acquire(["src/a.py", "db:users"], agent="Marcus")
    released = manager.unlock(["db:users"], agent="Marcus")  # from a shell, as Marcus
    assert [str(c.resource) for c in released] == ["db:users"]
    mine = manager.acquire(["db:users"], agent="Other", wait=0)
    _damage("garbage", StateDir().lock_table)
    table = manager.sweep()
    assert_no_conflicting_grants(table)
    assert holders_of(manager, "db:users") == ["Other"]
    assert holders_of(manager, "src/a.py") == ["Marcus"]
    mine.release()
    holder.release()  # the holder's own release of what is left still works
    assert manager.holders() == []


# The Python API --------------------------------------------------------------------------------
def test_hold_renews_a_process_lease_while_it_lives(agents: object, manager: LockManager) -> None:
    holder = agents()  # type: ignore[operator]
    holder.acquire(["db:renewed"], agent="Holder", ttl=0.3)
    (first,) = manager.sweep().locks
    # Renewed: its displayed expiry moves forward, and it still blocks after the first expiry.
    wait_for(lambda: manager.sweep().locks[0].expires_at > first.expires_at + 0.2)
    wait_for(lambda: time.time() > first.expires_at + 0.3)
    with pytest.raises(LockConflict, match="Holder"):
        manager.acquire(["db:renewed"], agent="Other", wait=0)


def test_hold_releases_on_exit_even_after_an_error(manager: LockManager) -> None:
    with pytest.raises(RuntimeError), manager.hold(["src/a.py"], agent="Marcus") as lease:
        assert lease.agent == "Marcus"
        assert [str(c.resource) for c in lease.claims] == ["src/a.py"]
        raise RuntimeError("task failed")
    assert manager.holders() == []
    lease.release()  # twice is harmless


def test_holders_lists_live_locks(manager: LockManager, repo: Path) -> None:
    lease = manager.acquire(["src/", "db:users"], agent="Marcus", reads=["docs/x.md"])
    (grant,) = manager.holders()
    assert grant.agent == "Marcus" and grant.id == lease.id
    assert {(str(c.resource), c.mode) for c in grant.claims} == {
        ("src", "write"), ("db:users", "write"), ("docs/x.md", "read"),
    }
    lease.release()
    assert manager.holders() == []


def test_bad_requests_are_usage_errors(manager: LockManager) -> None:
    with pytest.raises(UsageError):
        manager.acquire([], agent="A")
    with pytest.raises(UsageError):
        manager.acquire(["db:x"], agent="A", ttl=0)
    with pytest.raises(UsageError):
        manager.acquire(["../outside"], agent="A")
    with pytest.raises(UsageError):
        manager.acquire(["db:"], agent="A")
    assert manager.sweep().waiters == [] and manager.sweep().locks == []


def test_unlock_releases_part_of_a_lease(manager: LockManager) -> None:
    manager.acquire(["src/a.py", "db:users"], agent="Marcus", owner="shell")
    released = manager.unlock(["db:users"], agent="Marcus")
    assert [str(c.resource) for c in released] == ["db:users"]
    assert holders_of(manager, "src/a.py") == ["Marcus"]
    assert holders_of(manager, "db:users") == []
    with pytest.raises(LockConflict, match="holds no lock"):
        manager.unlock(["db:users"], agent="Marcus")
    manager.unlock(["src/a.py"], agent="Marcus")
    assert manager.holders() == []


def test_every_step_of_a_lock_is_an_event(agents: object, manager: LockManager) -> None:
    holder, waiter = agents(), agents()  # type: ignore[operator]
    holder.acquire(["src/a.py"], agent="Holder")
    waiter.request(["src/a.py"], agent="Waiter", wait=30)
    # Each process logs just after its transaction: wait for the waiter's own entry.
    wait_for(lambda: lock_events("wait"))
    with pytest.raises(LockConflict):
        manager.acquire(["src/a.py"], agent="Impatient", wait=0)
    holder.release()
    assert waiter.reply()["ok"]
    story = [(e.kind, e.agent) for e in events.read("locks")]
    # Each process appends its events just after its transaction, so across processes the
    # log order is only roughly causal (the holder's "release" may follow the waiter's
    # "grant"); within one agent it is exact.
    assert sorted(story) == sorted([
        ("grant", "Holder"),
        ("wait", "Waiter"),
        ("conflict", "Impatient"),
        ("release", "Holder"),
        ("grant", "Waiter"),
    ])
    assert [k for k, a in story if a == "Holder"] == ["grant", "release"]
    assert [k for k, a in story if a == "Waiter"] == ["wait", "grant"]
    grant = events.read("locks", word="Waiter")[-1]
    assert grant.data["resources"] == ["src/a.py (write)"]
    assert grant.data["waited"] > 0

