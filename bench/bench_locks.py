"""Lock benchmarks: hand-off latency, uncontended cost, CLI start-up — each against its anchors.

Run through ``python bench/run.py locks`` (or every benchmark: ``python bench/run.py``). Each row
is measured in this same run, so the ratios hold on whatever machine runs it.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

# The waiter side of each hand-off: it prints "ready", blocks in its lock call, prints the
# CLOCK_MONOTONIC time at which it was granted (comparable across processes on Linux), releases,
# and waits for "next" on stdin. The holder prints nothing; it only times its release.
WAITERS = {
    "versatil": """
        from versatil_fs.locks.manager import LockManager
        m = LockManager(repo=REPO)
        def take():
            return m.acquire(["src/a.py"], agent="waiter", wait=60)
        def drop(lease):
            lease.release()
    """,
    "flock": """
        import fcntl, os
        def take():
            fd = os.open(PATH, os.O_RDWR | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_EX)
            return fd
        def drop(fd):
            os.close(fd)
    """,
    "filelock": """
        import filelock
        lock = filelock.FileLock(PATH + ".filelock")
        def take():
            lock.acquire()  # default poll_interval (0.05 s)
            return lock
        def drop(lock):
            lock.release()
    """,
    "portalocker": """
        import portalocker
        def take():
            lock = portalocker.Lock(PATH + ".portalocker", timeout=60)  # default check_interval
            lock.acquire()
            return lock
        def drop(lock):
            lock.release()
    """,
}

WAITER_LOOP = """
import sys, time
for _ in range(ROUNDS):
    print("ready", flush=True)
    held = take()
    print(time.monotonic_ns(), flush=True)
    drop(held)
    if sys.stdin.readline().strip() != "next":
        break
"""


Take = Callable[[], object]
Drop = Callable[[object], None]


def _holder(kind: str, repo: Path, path: str) -> tuple[Take, Drop]:
    if kind == "versatil":
        from versatil_fs.locks.manager import Lease, LockManager

        manager = LockManager(repo=repo)

        def take_v() -> object:
            return manager.acquire(["src/a.py"], agent="holder", wait=60)

        def drop_v(lease: object) -> None:
            assert isinstance(lease, Lease)
            lease.release()

        return take_v, drop_v
    if kind == "flock":

        def take_f() -> object:
            fd = os.open(path, os.O_RDWR | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_EX)
            return fd

        def drop_f(fd: object) -> None:
            assert isinstance(fd, int)
            os.close(fd)

        return take_f, drop_f
    if kind == "filelock":
        import filelock

        flock_ = filelock.FileLock(path + ".filelock")
        return (lambda: flock_.acquire()), (lambda _held: flock_.release())
    import portalocker

    def take_p() -> object:
        lock = portalocker.Lock(path + ".portalocker", timeout=60)
        lock.acquire()
        return lock

    def drop_p(lock: object) -> None:
        assert isinstance(lock, portalocker.Lock)
        lock.release()

    return take_p, drop_p


def handoff(kind: str, rounds: int, workdir: Path, repo: Path) -> list[float]:
    """Milliseconds from the holder's release to the blocked waiter's grant, per round."""
    path = str(workdir / "handoff.lock")
    code = (
        f"REPO = {str(repo)!r}\nPATH = {path!r}\nROUNDS = {rounds}\n"
        + textwrap.dedent(WAITERS[kind])
        + WAITER_LOOP
    )
    take, drop = _holder(kind, repo, path)
    waiter = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    return handoff_rounds(waiter, take, drop, rounds, kind)


def handoff_rounds(
    waiter: subprocess.Popen[str], take: Take, drop: Drop, rounds: int, kind: str
) -> list[float]:
    """Hand ``waiter`` (running WAITER_LOOP) the lock ``rounds`` times: milliseconds from our
    release to its grant, each. The waiter is killed at the end."""
    held = take()
    assert waiter.stdin and waiter.stdout
    latencies: list[float] = []
    rng = random.Random(7)
    try:
        for _ in range(rounds):
            if waiter.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{kind} waiter died")
            # Let the waiter reach its blocking call, and land the release at a random phase of
            # any poll interval, as a real release would.
            time.sleep(0.02 + rng.random() * 0.03)
            released = time.monotonic_ns()
            drop(held)
            granted = int(waiter.stdout.readline())
            latencies.append((granted - released) / 1e6)
            held = take()  # the waiter releases right after printing; take it back
            waiter.stdin.write("next\n")
            waiter.stdin.flush()
    finally:
        drop(held)
        waiter.kill()
        waiter.wait()
    return latencies


def uncontended(workdir: Path, repo: Path, iterations: int) -> dict[str, float]:
    """Median microseconds of one acquire+release, with 100 other live locks in the table."""
    from versatil_fs.locks.manager import LockManager

    manager = LockManager(repo=repo)
    # 100 live locks held by another process, as other agents would hold them.
    background = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from versatil_fs.locks.manager import LockManager
            m = LockManager(repo={str(repo)!r})
            held = [m.acquire([f"src/mod{{i}}/"], agent=f"agent{{i % 7}}", wait=0)
                    for i in range(100)]
            print("ready", flush=True)
            sys.stdin.readline()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert background.stdout and background.stdin
    if background.stdout.readline().strip() != "ready":
        raise RuntimeError("the background lock holder failed")
    import filelock
    import portalocker

    path = str(workdir / "uncontended.lock")

    def ours() -> None:
        manager.acquire(["src/b.py"], agent="bench", wait=0).release()

    def raw() -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.close(fd)

    plock = portalocker.Lock(path + ".p", timeout=1)
    flock_ = filelock.FileLock(path + ".f")

    def porta() -> None:
        plock.acquire()
        plock.release()

    def filel() -> None:
        flock_.acquire()
        flock_.release()

    results = {}
    kinds = (("versatil", ours), ("flock", raw), ("portalocker", porta), ("filelock", filel))
    for name, fn in kinds:
        samples = []
        for _ in range(iterations):
            start = time.perf_counter_ns()
            fn()
            samples.append((time.perf_counter_ns() - start) / 1e3)
        results[name] = statistics.median(samples)
    background.stdin.close()
    background.wait()
    return results


# The other process of the scale curve: it holds N live locks, one lease per file as edit-time
# claims make them, then waits for a line on stdin. The grants are made through the manager's
# own request and grant path, a batch per transaction (one at a time, setting up 10,000 would
# cost minutes on a table that is rewritten whole); `index.add_grant` where the store keeps an
# index (a plain append otherwise: the tree before the index had none).
SCALE_HOLDER = """
import sys
from versatil_fs.locks import clock, requests
from versatil_fs.locks.manager import LockManager
try:
    from versatil_fs.locks.index import add_grant
except ImportError:
    def add_grant(table, grant):
        table.locks.append(grant)
m = LockManager(repo=REPO)
first = m.acquire(["src/warm.py"], agent="agent0", wait=0)
made = 0
while made < COUNT:
    with m.store.transaction() as table:
        now = clock.CLOCK.wall()
        for i in range(made, min(COUNT, made + 500)):
            claims = m.claims([f"src/mod{i % 97}/f{i}.py"])
            request, _ = requests.new_request(
                claims, m.config, m.store, agent=f"agent{i % 7}", wait=0.0, ttl=None,
                priority=None, owner="process", session="",
            )
            grant = request.granted(now)
            grant.fence = m.store.next_fence(table)
            add_grant(table, grant)
            m._records[grant.id] = grant
        made = min(COUNT, made + 500)
        m._own(table, grant.id, grant)
print("ready", flush=True)
sys.stdin.readline()
"""


def scale_curve(
    repo: Path, counts: tuple[int, ...], budget: float, iterations: int
) -> list[tuple[int, float, float]]:
    """``(live locks, versatil median us, raw flock median us)`` of one acquire+release per
    table size, the live locks held by another process. Each size gets at most ``iterations``
    samples and about ``budget`` seconds (a slow store at 10,000 locks must not take minutes)."""
    from versatil_fs.locks.manager import LockManager

    path = str(repo.parent / "scale.lock")

    def raw() -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.close(fd)

    rows = []
    for count in counts:
        holder = subprocess.Popen(
            [sys.executable, "-c", f"REPO = {str(repo)!r}\nCOUNT = {count}\n" + SCALE_HOLDER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert holder.stdout and holder.stdin
        try:
            if holder.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the holder of {count} locks failed")
            manager = LockManager(repo=repo)
            # The first look decodes the other process's table; then this process is warm.
            manager.acquire(["src/b.py"], agent="bench", wait=0).release()
            samples: list[float] = []
            deadline = time.perf_counter() + budget
            while len(samples) < iterations and (
                len(samples) < 5 or time.perf_counter() < deadline
            ):
                start = time.perf_counter_ns()
                manager.acquire(["src/b.py"], agent="bench", wait=0).release()
                samples.append((time.perf_counter_ns() - start) / 1e3)
            flocks = []
            for _ in range(min(iterations, 500)):
                start = time.perf_counter_ns()
                raw()
                flocks.append((time.perf_counter_ns() - start) / 1e3)
            manager.close()
            rows.append((count, statistics.median(samples), statistics.median(flocks)))
        finally:
            holder.stdin.close()
            holder.wait()
    return rows


def cli_wall(repo: Path, runs: int, pycache: Path) -> dict[str, float]:
    """Median wall milliseconds of whole commands, as a shell would start them.

    With bytecode caching on, as users have it: a sandbox that sets PYTHONDONTWRITEBYTECODE
    would otherwise have every start-up compile versatil from source. The cache goes to a
    private prefix, warmed by one untimed run.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    versatil = str(Path(sys.executable).with_name("versatil"))
    for warm in ([versatil, "locks"], [versatil, "lock", "--agent", "w", "db:warm"],
                 [versatil, "unlock", "--agent", "w", "db:warm"]):
        subprocess.run(warm, cwd=repo, check=True, capture_output=True, env=env)
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "versatil locks": [versatil, "locks"],
        "versatil lock + unlock": None,
    }
    results = {}
    for name, cmd in commands.items():
        samples = []
        for i in range(runs):
            if cmd is None:
                start = time.perf_counter()
                subprocess.run([versatil, "lock", "--agent", "cli", f"db:cli{i}"], cwd=repo,
                               check=True, capture_output=True, env=env)
                lock_ms = (time.perf_counter() - start) * 1e3
                subprocess.run([versatil, "unlock", "--agent", "cli", f"db:cli{i}"], cwd=repo,
                               check=True, capture_output=True, env=env)
                samples.append(lock_ms)
                continue
            start = time.perf_counter()
            subprocess.run(cmd, cwd=repo, check=True, capture_output=True, env=env)
            samples.append((time.perf_counter() - start) * 1e3)
        results[name] = statistics.median(samples)
    return results


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench locks")
    parser.add_argument("--rounds", type=int, default=40, help="hand-offs per lock kind")
    parser.add_argument("--iterations", type=int, default=2000, help="uncontended samples")
    parser.add_argument(
        "--scale", type=lambda text: tuple(int(n) for n in text.split(",")),
        default=(10, 100, 1000, 10000), help="live lock counts of the scale curve (comma list)",
    )
    parser.add_argument(
        "--scale-budget", type=float, default=4.0, help="seconds of samples per table size"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="versatil-bench-") as tmp:
        workdir = Path(tmp)
        os.environ["VERSATIL_HOME"] = str(workdir / "home")
        repo = workdir / "repo"
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        (repo / "src").mkdir()

        print("Hand-off latency: release -> blocked waiter granted (ms)")
        rows = {k: handoff(k, args.rounds, workdir, repo) for k in WAITERS}
        ours50 = _pct(rows["versatil"], 0.5)
        print(f"  {'lock':<14}{'p50':>9}{'p95':>9}   ratio of p50 to versatil")
        for kind, values in rows.items():
            p50, p95 = _pct(values, 0.5), _pct(values, 0.95)
            print(f"  {kind:<14}{p50:>9.3f}{p95:>9.3f}   {p50 / ours50:>6.1f}x")
        print("  goal: versatil p50 <= 0.5 ms (raw blocking flock ~0.1 ms)")

        print("\nUncontended acquire+release, 100 live locks in the table (median us)")
        unc = uncontended(workdir, repo, args.iterations)
        for name, value in unc.items():
            print(f"  {name:<14}{value:>9.1f}   versatil / this = {unc['versatil'] / value:>6.1f}x")
        print("  goal: versatil <= 300 us")

        print("\nScale: acquire+release with N live locks held by another process (median us)")
        print(f"  {'live locks':<12}{'versatil':>10}{'flock':>9}   versatil / flock   goal")
        goals = {100: 300.0, 1000: 1000.0, 10000: 10000.0}
        for count, value, raw_us in scale_curve(repo, args.scale, args.scale_budget, 400):
            goal = f"<= {goals[count]:.0f} us" if count in goals else ""
            print(f"  {count:<12}{value:>10.1f}{raw_us:>9.1f}   {value / raw_us:>10.1f}x   {goal}")

        print("\nCommand wall time (median ms)")
        wall = cli_wall(repo, 10, workdir / "pycache")
        base = wall["python -c pass"]
        for name, value in wall.items():
            print(f"  {name:<24}{value:>8.1f}   {value / base:>5.1f}x python -c pass")
        print("  goal: versatil lock / locks <= 150 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
