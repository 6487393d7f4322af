"""PostgreSQL lock store benchmarks: hand-off latency against raw ``pg_advisory_lock`` hand-off.

Run through ``python bench/run.py pg`` (needs ``pip install -e '.[postgres]'`` and the server
binaries: ``initdb``/``pg_ctl`` on PATH or in ``/usr/lib/postgresql/*/bin``). A private server
is started for the run (as tests/pg/pg_server.py starts it) and reached over TCP loopback, or
pass ``--url`` for one of your own. Every row is measured in the same run:

- raw advisory lock: a blocked ``pg_advisory_lock`` returning after the holder's
  ``pg_advisory_unlock`` (the server's own hand-off, the floor for any PostgreSQL lock);
- versatil on PostgreSQL: a blocked ``LockManager.acquire`` granted after the holder's release
  (two transactions and a NOTIFY between them);
- versatil on PostgreSQL, holder killed by ``kill -9``: the waiter granted after the death
  (the doorbell's blocking shared advisory lock on the blocker's key);
- versatil, local store: the same hand-off on this machine's flocks, for scale;
- uncontended acquire + release on PostgreSQL and on the local store.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from bench.bench_locks import WAITER_LOOP, handoff_rounds
from bench.bench_locks import WAITERS as LOCK_WAITERS

ROOT = Path(__file__).resolve().parent.parent

WAITER = {
    "raw": """
        import psycopg
        conn = psycopg.connect(URL, autocommit=True)
        def take():
            conn.execute("SELECT pg_advisory_lock(4242, 1)")
            return None
        def drop(_):
            conn.execute("SELECT pg_advisory_unlock(4242, 1)")
    """,
    "versatil": LOCK_WAITERS["versatil"],  # the same waiter as bench locks
}


HOLDER_TO_KILL = """
import sys
from versatil_fs.locks.manager import LockManager
m = LockManager(repo=REPO)
m.acquire(["src/a.py"], agent="doomed", wait=60)
print("held", flush=True)
sys.stdin.readline()
"""


def _env(store: str, url: str, home: Path) -> dict[str, str]:
    env = dict(os.environ, VERSATIL_HOME=str(home), VERSATIL_STORE_BACKEND=store)
    env.pop("VERSATIL_AGENT", None)
    if store == "postgres":
        env.update(VERSATIL_STORE_URL=url, VERSATIL_STORE_PROJECT=f"bench-{os.getpid()}")
    env["PYTHONPATH"] = str(ROOT)
    return env


def handoff(kind: str, store: str, url: str, repo: Path, home: Path, rounds: int) -> list[float]:
    """Milliseconds from the holder's release to the blocked waiter's grant, per round."""
    env = _env(store, url, home)
    code = (
        f"REPO = {str(repo)!r}\nURL = {url!r}\nROUNDS = {rounds}\n"
        + textwrap.dedent(WAITER[kind]) + WAITER_LOOP
    )
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        if kind == "raw":
            import psycopg

            conn = psycopg.connect(url, autocommit=True)

            def take() -> object:
                conn.execute("SELECT pg_advisory_lock(4242, 1)")
                return None

            def drop(_held: object) -> None:
                conn.execute("SELECT pg_advisory_unlock(4242, 1)")
        else:
            from versatil_fs.locks.manager import Lease, LockManager

            manager = LockManager(repo=repo)

            def take() -> object:
                return manager.acquire(["src/a.py"], agent="holder", wait=60)

            def drop(held: object) -> None:
                assert isinstance(held, Lease)
                held.release()

        waiter = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, cwd=repo, env=env,
        )
        return handoff_rounds(waiter, take, drop, rounds, kind)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def kill_handoff(url: str, repo: Path, home: Path, rounds: int) -> list[float]:
    """Milliseconds from a holder's SIGKILL to the blocked waiter's grant (PostgreSQL)."""
    env = _env("postgres", url, home)
    code = f"REPO = {str(repo)!r}\nURL = {url!r}\nROUNDS = {rounds}\n" + textwrap.dedent(
        WAITER["versatil"]) + WAITER_LOOP
    waiter: subprocess.Popen[str] | None = None
    latencies = []
    try:
        for _ in range(rounds):
            holder = subprocess.Popen(
                [sys.executable, "-c", f"REPO = {str(repo)!r}\n" + HOLDER_TO_KILL],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=repo, env=env,
            )
            assert holder.stdout
            if holder.stdout.readline().strip() != "held":
                raise RuntimeError("the holder failed")
            if waiter is None:
                waiter = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True, cwd=repo, env=env)
            else:
                assert waiter.stdin
                waiter.stdin.write("next\n")
                waiter.stdin.flush()
            assert waiter.stdout
            if waiter.stdout.readline().strip() != "ready":
                raise RuntimeError("the waiter died")
            time.sleep(0.05)  # the waiter is queued and asleep
            killed = time.monotonic_ns()
            holder.send_signal(signal.SIGKILL)
            granted = int(waiter.stdout.readline())
            latencies.append((granted - killed) / 1e6)
            holder.wait()
    finally:
        if waiter is not None:
            waiter.kill()
            waiter.wait()
    return latencies


def uncontended(store: str, url: str, repo: Path, home: Path, runs: int) -> list[float]:
    saved = dict(os.environ)
    os.environ.update(_env(store, url, home))
    try:
        from versatil_fs.locks.manager import LockManager

        manager = LockManager(repo=repo)
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            manager.acquire(["src/b.py"], agent="bench", wait=0).release()
            samples.append((time.perf_counter() - start) * 1e3)
        manager.close()
        return samples
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _row(name: str, samples: list[float], anchor: float | None = None) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p90 = ordered[int(len(ordered) * 0.9) - 1] if len(ordered) >= 10 else ordered[-1]
    ratio = f"{p50 / anchor:6.1f}x" if anchor else "      "
    return f"{name:<46} {p50:8.2f} {p90:8.2f} {ordered[-1]:8.2f}  {ratio}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_pg")
    parser.add_argument("--url", help="a server of your own (default: start a private one)")
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args(argv)
    server = None
    url = args.url
    if url is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from pg.pg_server import PgServer, find_bindir

        bindir = find_bindir()
        if bindir is None:
            print("no PostgreSQL server binaries (initdb); pass --url")
            return 0
        server = PgServer(bindir)
        server.init()
        server.start()
        server.sql("CREATE DATABASE versatil")
        url = server.url(tcp=True)
    work = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    try:
        repo = work / "repo"
        repo.mkdir()
        for args_ in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "x"]):
            subprocess.run(["git", *args_], cwd=repo, check=True, capture_output=True, env={
                **os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x.invalid",
                "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x.invalid"})
        home = work / "home"
        rounds = args.rounds
        raw = handoff("raw", "postgres", url, repo, home, rounds)
        ours = handoff("versatil", "postgres", url, repo, home, rounds)
        killed = kill_handoff(url, repo, home, max(10, rounds // 4))
        local = handoff("versatil", "local", url, repo, work / "local-home", rounds)
        pg_once = uncontended("postgres", url, repo, home, rounds * 3)
        local_once = uncontended("local", url, repo, work / "local-home", rounds * 3)
        anchor = statistics.median(raw)
        print(f"server: {'private, TCP loopback' if server else url}; {rounds} rounds")
        print(f"{'hand-off (ms)':<46} {'p50':>8} {'p90':>8} {'max':>8}  vs raw")
        print(_row("raw pg_advisory_lock hand-off", raw, anchor))
        print(_row("versatil on PostgreSQL: release -> grant", ours, anchor))
        print(_row("versatil on PostgreSQL: kill -9 -> grant", killed, anchor))
        print(_row("versatil, local store: release -> grant", local, anchor))
        print(f"{'acquire + release, uncontended (ms)':<46}")
        print(_row("versatil on PostgreSQL", pg_once))
        print(_row("versatil, local store", local_once))
        goal = statistics.median(ours) <= 10.0
        print(f"goal: hand-off p50 <= 10 ms on PostgreSQL: {'met' if goal else 'NOT met'}")
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        if server is not None:
            server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
