"""The PostgreSQL store across "machines": two state directories and two clones of one project,
real processes, ``kill -9``, the server stopped and started mid-run, a role that owns only its
own schema, and the store's one-sentence failures.

A "machine" here is a ``VERSATIL_HOME`` and a clone of the same origin: nothing on disk is
shared between them except the witness directory the overlap check writes to, so only the
server can keep them apart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from integration.helpers import (
    Spawner,
    StartLine,
    assert_one_line_error,
    git,
    lock_agent,
    make_git_repo,
    run_versatil,
    wait_for,
)
from integration.test_locks import WORKER
from pg.pg_server import PgServer

from versatil_fs import LockConflict, LockManager, events
from versatil_fs.locks.stores import hide_password, project_of
from versatil_fs.state import StateDir

FILES = {
    "src/a.py": "a = 1\n",
    "src/b.py": "b = 2\n",
    "src/api/login.py": "login\n",
    "docs/x.md": "# x\n",
}


@dataclass
class Machine:
    home: Path
    clone: Path

    @property
    def env(self) -> dict[str, str]:
        return {"VERSATIL_HOME": str(self.home)}

    def manager(self) -> LockManager:
        return LockManager(repo=self.clone, state=StateDir(self.home))


@pytest.fixture
def machines(
    pg_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Machine, Machine]:
    """Two machines: each its own VERSATIL_HOME and clone of one origin. The project is not
    configured: both derive it from the origin remote (a path unique to this test)."""
    monkeypatch.setenv("VERSATIL_STORE_BACKEND", "postgres")
    monkeypatch.setenv("VERSATIL_STORE_URL", pg_server.url())
    monkeypatch.delenv("VERSATIL_STORE_PROJECT", raising=False)
    origin = make_git_repo(tmp_path / "origin", FILES)
    found = []
    for name in ("one", "two"):
        clone = tmp_path / name / "clone"
        clone.parent.mkdir()
        git(tmp_path, "clone", "-q", str(origin), str(clone))
        found.append(Machine(tmp_path / name / "versatil-home", clone.resolve()))
    return found[0], found[1]


def cli(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_versatil(*args, cwd=cwd, env=env)


def grants_logged(home: Path) -> int:
    path = StateDir(home).event_log("locks")
    if not path.exists():
        return 0
    return sum(1 for line in path.read_bytes().splitlines() if b'"kind":"grant"' in line)


# Two machines ------------------------------------------------------------------------------------
def eight_processes_across_two_machines(
    machines: tuple[Machine, Machine], spawn: Spawner, tmp_path: Path, rounds: int,
    timeout: float,
) -> None:
    """Eight workers, alternately on each machine, lock one file and check by an independent
    witness (a directory both machines see) that nobody else is inside; no problem, and every
    grant of every round logged on its machine."""
    witness = tmp_path / "witness"
    witness.mkdir()
    start, stop = StartLine(tmp_path / "go"), tmp_path / "stop"
    children = [
        spawn(WORKER, str(i), str(rounds), str(start.path), str(witness), str(stop),
              cwd=machines[i % 2].clone, env=machines[i % 2].env, name=f"worker-{i}")
        for i in range(8)
    ]
    for child in children:
        assert child.read_line() == "ready", child.stderr
    start.go()
    problems: list[str] = []
    for child in children:
        problems += child.read_json(timeout=timeout)["problems"]
        assert child.wait() == 0, child.stderr
    assert problems == []
    assert list(witness.iterdir()) == []
    # Each machine logs its own grants; together, every round of every worker.
    assert grants_logged(machines[0].home) + grants_logged(machines[1].home) == 8 * rounds


def test_eight_processes_on_two_machines_never_overlap(
    machines: tuple[Machine, Machine], spawn: Spawner, tmp_path: Path
) -> None:
    eight_processes_across_two_machines(machines, spawn, tmp_path, rounds=25, timeout=240)
    for machine in machines:
        table = machine.manager().sweep()
        assert table.locks == [] and table.waiters == []


def test_clones_on_two_machines_share_path_locks_keyed_by_project(
    machines: tuple[Machine, Machine], pg_server: PgServer
) -> None:
    one, two = machines[0].manager(), machines[1].manager()
    lease = one.acquire(["src/a.py"], agent="Ann")
    with pytest.raises(LockConflict, match="Ann"):
        two.acquire(["src"], agent="Bob", wait=0)
    # Each machine reads the grant in its own clone's lock space...
    (seen,) = two.sweep().locks
    assert seen.claims[0].resource == two.resolve("src/a.py")
    assert seen.claims[0].resource != one.resolve("src/a.py")  # two git dirs, one project
    # ...and the server holds it under the project's name.
    project = project_of(str(machines[0].clone.parent.parent / "origin"))
    (doc,) = pg_server.sql(
        f"SELECT doc::text FROM versatil_tables WHERE project = '{project}'", database="versatil"
    )
    assert f'"repo": "project:{project}"' in doc[0]
    assert str(machines[0].clone) not in doc[0]
    lease.release()
    two.acquire(["src"], agent="Bob", wait=0).release()
    # Fencing tokens keep increasing across the machines.
    fences = []
    for manager in (one, two, one, two):
        with manager.hold(["db:users"], agent="Either") as held:
            fences.append(held.fence)
    assert fences == sorted(fences) and len(set(fences)) == 4
    one.close()
    two.close()


def test_kill_9_of_a_holder_on_one_machine_grants_a_waiter_on_the_other_within_a_second(
    machines: tuple[Machine, Machine], spawn: Spawner
) -> None:
    holder = lock_agent(spawn, machines[0].clone, env=machines[0].env)
    waiter = lock_agent(spawn, machines[1].clone, env=machines[1].env)
    holder.acquire(["src"], agent="Holder")
    waiter.request(["src/a.py"], agent="Waiter", wait=30)
    observer = machines[1].manager()
    wait_for(lambda: [w.agent for w in observer.sweep().waiters] == ["Waiter"])
    killed_at = holder.kill9()
    granted = waiter.reply()
    assert granted["ok"], granted
    assert granted["granted_at"] - killed_at < 1.0
    # The waiter's machine reclaimed the dead holder's grant, and says so in its log.
    assert [e.agent for e in events.read("locks", state=StateDir(machines[1].home))
            if e.kind == "reclaim"] == ["Holder"]
    observer.close()


# Children and hand-over ---------------------------------------------------------------------------
HOLD_AND_SPAWN = """
import os, subprocess, sys
from versatil_fs import LockManager
manager = LockManager(repo=".")
manager.acquire(["db:inherited"], agent="Parent")
fd = manager.lease_descriptor()
child = subprocess.Popen(  # lives until the test kills it
    [sys.executable, "-c", "import time; time.sleep(120)"],
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    pass_fds=[fd], start_new_session=True,
)
print(child.pid, flush=True)
if sys.argv[1] == "hand-over":
    manager.hand_over()
    sys.exit(0)
sys.stdin.readline()
"""


@pytest.mark.parametrize("how", ["kill-9", "hand-over"])
def test_a_child_that_inherits_the_lease_descriptor_keeps_the_lease_alive(
    how: str, pg_env: dict[str, str], spawn: Spawner, tmp_path: Path
) -> None:
    repo = make_git_repo(tmp_path / "repo")
    parent = spawn(HOLD_AND_SPAWN, how, cwd=repo, name="parent")
    child_pid = int(parent.read_line())
    if how == "kill-9":
        parent.kill9()
    else:
        assert parent.wait() == 0
    manager = LockManager(repo=repo)
    try:
        # The parent is gone; the child holds the liveness session's socket: still locked.
        with pytest.raises(LockConflict, match="Parent"):
            manager.acquire(["db:inherited"], agent="Other", wait=0)
        os.kill(child_pid, 9)
        # The last holder of the socket is gone: the server ends the session, the lease dies.
        manager.acquire(["db:inherited"], agent="Other", wait=10).release()
    finally:
        manager.close()
        try:
            os.kill(child_pid, 9)
        except ProcessLookupError:
            pass


# Faults -------------------------------------------------------------------------------------------
def test_the_server_stopped_and_started_mid_run_keeps_live_holders_and_reclaims_dead_ones(
    machines: tuple[Machine, Machine], pg_server: PgServer, spawn: Spawner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grace = {"VERSATIL_STORE_RESTART_GRACE": "2"}
    monkeypatch.setenv("VERSATIL_STORE_RESTART_GRACE", "2")
    live = lock_agent(spawn, machines[0].clone, env={**machines[0].env, **grace})
    doomed = lock_agent(spawn, machines[1].clone, env={**machines[1].env, **grace})
    waiter = lock_agent(spawn, machines[1].clone, env={**machines[1].env, **grace})
    kept = live.acquire(["src/a.py"], agent="Live")["lease"]
    doomed.acquire(["db:users"], agent="Doomed")
    waiter.request(["src"], agent="Waiter", wait=60)
    observer = machines[0].manager()
    wait_for(lambda: [w.agent for w in observer.sweep().waiters] == ["Waiter"])
    observer.close()

    pg_server.stop("fast")
    try:
        # While it is down: one sentence, exit 2, the URL named.
        result = cli(machines[0].clone, "locks", env=machines[0].env)
        line = assert_one_line_error(result, 2)
        assert "cannot be reached" in line and str(pg_server.sockets) in line
        doomed.kill9()  # dies while nobody can see it
    finally:
        pg_server.start()
    restarted = time.monotonic()

    after = machines[0].manager()
    try:
        # The live holder took its key again: its grant stands, nothing was granted twice.
        table = after.sweep()
        assert [g.id for g in table.locks if g.agent == "Live"] == [kept]
        with pytest.raises(LockConflict, match="Live"):
            after.acquire(["src/a.py"], agent="Other", wait=0)
        # The dead one is reclaimed once the grace is over (and not before the server came back).
        lease = after.acquire(["db:users"], agent="Other", wait=30)
        assert time.monotonic() - restarted >= 1.5
        lease.release()
        assert any(e.kind == "reclaim" and e.agent == "Doomed"
                   for e in events.read("locks", state=StateDir(machines[0].home)))
        # The waiter waited through the restart and is granted when the live holder releases.
        live.release(kept)
        reply = waiter.reply(timeout=30)
        assert reply["ok"], reply
    finally:
        after.close()


def test_an_unreachable_server_is_one_sentence_naming_the_url_without_its_password(
    repo_without_remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERSATIL_STORE_BACKEND", "postgres")
    monkeypatch.setenv("VERSATIL_STORE_URL", "postgresql://ann:s3cret@127.0.0.1:1/versatil")
    monkeypatch.setenv("VERSATIL_STORE_PROJECT", "p")
    for argv in (["lock", "--agent", "A", "--wait", "0", "db:x"], ["locks"]):
        line = assert_one_line_error(cli(repo_without_remote, *argv), 2)
        assert "postgresql://ann:***@127.0.0.1:1/versatil" in line, line
        assert "s3cret" not in line


def test_without_a_remote_the_project_must_be_named(
    repo_without_remote: Path, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERSATIL_STORE_BACKEND", "postgres")
    monkeypatch.setenv("VERSATIL_STORE_URL", pg_server.url())
    line = assert_one_line_error(cli(repo_without_remote, "locks"), 2)
    assert "project" in line and "origin" in line


@pytest.fixture
def repo_without_remote(tmp_path: Path) -> Path:
    return make_git_repo(tmp_path / "lonely")


# Schema -----------------------------------------------------------------------------------------
def test_a_role_that_owns_only_its_own_schema_gets_the_tables_there(
    pg_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = f"own_{os.getpid()}_{int(time.time() * 1000) % 10**6}"
    pg_server.sql(f"CREATE DATABASE {database}")
    pg_server.sql("DO $$ BEGIN CREATE ROLE alice LOGIN; EXCEPTION WHEN duplicate_object "
                  "THEN NULL; END $$")
    pg_server.sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC", database=database)
    repo = make_git_repo(tmp_path / "repo")
    monkeypatch.setenv("VERSATIL_STORE_BACKEND", "postgres")
    monkeypatch.setenv("VERSATIL_STORE_URL", pg_server.url(database, "alice"))
    monkeypatch.setenv("VERSATIL_STORE_PROJECT", "alice-project")
    # No schema of its own yet: one sentence saying what to do.
    line = assert_one_line_error(cli(repo, "store", "init"), 2)
    assert "schema of its own" in line
    pg_server.sql("CREATE SCHEMA alice AUTHORIZATION alice", database=database)
    result = cli(repo, "store", "init")
    assert result.returncode == 0, result.stderr
    assert "Created" in result.stdout
    again = cli(repo, "store", "init")
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout
    with LockManager(repo=repo).hold(["db:x"], agent="Alice") as lease:
        assert lease.fence == 1
    tables = pg_server.sql(
        "SELECT schemaname, tablename FROM pg_tables WHERE tablename LIKE 'versatil%' "
        "ORDER BY tablename", database=database,
    )
    assert tables == [("alice", "versatil_damaged"), ("alice", "versatil_schema"),
                      ("alice", "versatil_tables")]


# Pure helpers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("remote", [
    "git@github.com:Owner/repo.git",
    "https://github.com/Owner/repo",
    "https://user:token@GitHub.com/Owner/repo.git/",
    "ssh://git@github.com:22/Owner/repo.git",
    "github.com:Owner/repo",
])
def test_every_spelling_of_a_remote_gives_one_project(remote: str) -> None:
    assert project_of(remote) == "github.com/Owner/repo"


def test_a_local_remote_is_its_path() -> None:
    assert project_of("/srv/git/repo.git") == "/srv/git/repo"


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://ann:s3cret@db.example/versatil", "postgresql://ann:***@db.example/versatil"),
    ("postgresql://ann@db/v?password=s3cret&sslmode=require",
     "postgresql://ann@db/v?password=***&sslmode=require"),
    ("host=db user=ann password=s3cret dbname=v", "host=db user=ann password=*** dbname=v"),
    ("host=db password='s3 cret' dbname=v", "host=db password=*** dbname=v"),
    ("postgresql:///v?host=/run/pg", "postgresql:///v?host=/run/pg"),
])
def test_passwords_are_hidden(url: str, shown: str) -> None:
    assert hide_password(url) == shown


def test_config_show_hides_the_password(repo_without_remote: Path) -> None:
    result = cli(
        repo_without_remote, "config", "show",
        env={"VERSATIL_STORE_URL": "postgresql://ann:s3cret@db/v"},
    )
    assert result.returncode == 0, result.stderr
    assert "postgresql://ann:***@db/v" in result.stdout and "s3cret" not in result.stdout
    as_json = cli(
        repo_without_remote, "config", "show", "--json",
        env={"VERSATIL_STORE_URL": "postgresql://ann:s3cret@db/v"},
    )
    assert json.loads(as_json.stdout)["config"]["store"]["url"] == "postgresql://ann:***@db/v"


def test_the_store_is_local_by_default(repo_without_remote: Path) -> None:
    from versatil_fs.locks.store import LocalStore

    assert isinstance(LockManager(repo=repo_without_remote).store, LocalStore)
    assert "psycopg" not in subprocess.run(
        [sys.executable, "-c", "import sys; from versatil_fs import LockManager; "
         "LockManager(repo='.').sweep(); print(sorted(sys.modules))"],
        cwd=repo_without_remote, capture_output=True, text=True, check=True,
    ).stdout


def test_every_connection_asks_both_ends_for_keepalives(pg_server: PgServer) -> None:
    from versatil_fs.locks.pg_store import connect

    conn = connect(pg_server.url(tcp=True))
    try:
        # The server's side of this session (user-settable): a silent peer is dropped.
        shown = {name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                 for name in ("tcp_keepalives_idle", "tcp_keepalives_interval",
                              "tcp_keepalives_count", "tcp_user_timeout")}
        assert shown == {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5",
                         "tcp_keepalives_count": "3", "tcp_user_timeout": "30000"}
        # libpq's side.
        import psycopg

        dsn = psycopg.conninfo.conninfo_to_dict(conn.info.dsn)
        assert {k: dsn.get(k) for k in ("keepalives", "keepalives_idle", "keepalives_interval",
                                        "keepalives_count", "tcp_user_timeout")} == {
            "keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5",
            "keepalives_count": "3", "tcp_user_timeout": "30000"}
    finally:
        conn.close()
    # A URL's own setting wins over ours.
    own = connect(
        pg_server.url(tcp=True) + "?keepalives_idle=3&options=-c%20tcp_keepalives_idle%3D3"
    )
    try:
        assert own.execute("SHOW tcp_keepalives_idle").fetchone() == ("3",)
    finally:
        own.close()


def test_a_damaged_document_is_set_aside_and_the_fence_goes_on(
    pg_env: dict[str, str], pg_server: PgServer, pg_project: str, tmp_path: Path
) -> None:
    repo = make_git_repo(tmp_path / "repo")
    manager = LockManager(repo=repo)
    try:
        with manager.hold(["db:x"], agent="A") as lease:
            first = lease.fence
        pg_server.sql(
            "UPDATE versatil_tables SET doc = '{\"version\": 1, \"locks\": 7}'::jsonb "
            f"WHERE project = '{pg_project}'", database="versatil",
        )
        with manager.hold(["db:x"], agent="A") as lease:
            assert lease.fence == first + 1  # the row's counter survived the document
        (aside,) = pg_server.sql(
            f"SELECT doc, reason FROM versatil_damaged WHERE project = '{pg_project}'",
            database="versatil",
        )
        assert '"locks": 7' in aside[0] and aside[1]
        damaged = [e for e in events.read("locks") if e.kind == "table-damaged"]
        assert len(damaged) == 1, [e.kind for e in events.read("locks")]
    finally:
        manager.close()


def test_a_project_counter_set_past_what_a_token_may_be_is_refused_not_used(
    pg_env: dict[str, str], pg_server: PgServer, pg_project: str, tmp_path: Path
) -> None:
    """A token past the table's bound on numbers would make the document unreadable to every
    machine, and its setting aside would lose every lock in it."""
    repo = make_git_repo(tmp_path / "repo")
    assert cli(repo, "lock", "--agent", "A", "db:kept").returncode == 0
    pg_server.sql(
        f"UPDATE versatil_tables SET fence = {2**60} WHERE project = '{pg_project}'",
        database="versatil",
    )
    refused = cli(repo, "lock", "--agent", "B", "db:other")
    line = assert_one_line_error(refused, 2)
    assert "fencing counter is at its bound" in line
    listing = json.loads(cli(repo, "locks", "--json").stdout)
    assert [lock["agent"] for lock in listing["locks"]] == ["A"]


def test_a_newer_schema_is_refused_in_one_sentence(
    pg_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = f"newer_{os.getpid()}_{int(time.time() * 1000) % 10**6}"
    pg_server.sql(f"CREATE DATABASE {database}")
    pg_server.sql("CREATE TABLE versatil_schema (version integer NOT NULL); "
                  "INSERT INTO versatil_schema VALUES (99)", database=database)
    repo = make_git_repo(tmp_path / "repo")
    monkeypatch.setenv("VERSATIL_STORE_BACKEND", "postgres")
    monkeypatch.setenv("VERSATIL_STORE_URL", pg_server.url(database))
    monkeypatch.setenv("VERSATIL_STORE_PROJECT", "p")
    for argv in (["store", "init"], ["lock", "--agent", "A", "db:x"]):
        line = assert_one_line_error(cli(repo, *argv), 2)
        assert "schema version 99" in line and "upgrade versatil" in line, line


def test_versatil_locks_on_one_machine_lists_the_other_machines_locks(
    machines: tuple[Machine, Machine], spawn: Spawner
) -> None:
    holder = lock_agent(spawn, machines[0].clone, env=machines[0].env)
    holder.acquire(["src/a.py", "db:users"], agent="Faraway")
    result = cli(machines[1].clone, "locks", "--json", env=machines[1].env)
    assert result.returncode == 0, result.stderr
    assert "Faraway" in result.stdout and "src/a.py" in result.stdout


def test_a_row_held_by_a_stuck_transaction_is_the_busy_table_refusal(
    pg_env: dict[str, str], pg_server: PgServer, pg_project: str, tmp_path: Path
) -> None:
    import psycopg

    repo = make_git_repo(tmp_path / "repo")
    LockManager(repo=repo).sweep()  # the project's row exists
    stuck = psycopg.connect(pg_server.url())  # a transaction that never ends, as a stopped process
    try:
        stuck.execute("SELECT 1 FROM versatil_tables WHERE project = %s FOR UPDATE", (pg_project,))
        line = assert_one_line_error(cli(repo, "lock", "--agent", "A", "--wait", "0", "db:x"), 1)
        assert "busy" in line and pg_project in line
    finally:
        stuck.close()
    assert cli(repo, "lock", "--agent", "A", "--wait", "0", "db:x").returncode == 0


@pytest.mark.slow
def test_eight_processes_on_two_machines_never_overlap_soak(
    machines: tuple[Machine, Machine], spawn: Spawner, tmp_path: Path
) -> None:
    eight_processes_across_two_machines(machines, spawn, tmp_path, rounds=300, timeout=600)


FORKS_WHILE_HOLDING = """
import gc, os, sys
from versatil_fs import LockManager
manager = LockManager(repo=".")
manager.acquire(["db:parent"], agent="Parent")
pid = os.fork()
if pid == 0:
    # The child may use versatil itself (its own sessions), then exits the normal way: its
    # copies of the parent's connections must not end the parent's sessions.
    LockManager(repo=".").acquire(["db:child"], agent="Child").release()
    gc.collect()
    sys.exit(0)
os.waitpid(pid, 0)
print("forked", flush=True)
sys.stdin.readline()
"""


def test_a_forked_child_exiting_leaves_the_parents_locks_alone(
    pg_env: dict[str, str], spawn: Spawner, tmp_path: Path
) -> None:
    repo = make_git_repo(tmp_path / "repo")
    parent = spawn(FORKS_WHILE_HOLDING, cwd=repo, name="parent")
    assert parent.read_line() == "forked", parent.stderr
    manager = LockManager(repo=repo)
    try:
        with pytest.raises(LockConflict, match="Parent"):
            manager.acquire(["db:parent"], agent="Other", wait=0)
        manager.acquire(["db:child"], agent="Other", wait=0).release()
    finally:
        manager.close()


def test_a_broken_configuration_still_reads_the_local_table_but_never_a_postgres_users(
    repo_without_remote: Path,
) -> None:
    from versatil_fs import ConfigError
    from versatil_fs.locks.store import LocalStore

    versatil_file = repo_without_remote / ".versatil"
    versatil_file.write_text("[parallel]\nmax_concurrent_agents = 0\n")
    assert isinstance(LockManager(repo=repo_without_remote).store, LocalStore)
    versatil_file.write_text(
        '[parallel]\nmax_concurrent_agents = 0\n[store]\nbackend = "postgres"\n'
    )
    with pytest.raises(ConfigError, match="max_concurrent_agents"):
        LockManager(repo=repo_without_remote)


def test_the_commit_guard_on_a_machine_that_never_locked_sees_the_other_machines_locks(
    machines: tuple[Machine, Machine], monkeypatch: pytest.MonkeyPatch
) -> None:
    from versatil_fs import hook

    one, two = machines
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    hook.install(two.clone)
    assert not two.home.exists()  # machine two never took a lock: no state directory at all
    manager = one.manager()
    try:
        with manager.hold(["src/a.py"], agent="Faraway"):
            (two.clone / "src/a.py").write_text("changed on machine two\n")
            git(two.clone, "add", "src/a.py")
            refused = subprocess.run(
                ["git", "commit", "-m", "change"], cwd=two.clone, capture_output=True,
                text=True, env={**os.environ, **two.env, "VERSATIL_AGENT": "Near"},
            )
            assert refused.returncode != 0, refused.stdout
            assert "Faraway" in refused.stderr and "src/a.py" in refused.stderr
        done = subprocess.run(
            ["git", "commit", "-q", "-m", "change"], cwd=two.clone, capture_output=True,
            text=True, env={**os.environ, **two.env, "VERSATIL_AGENT": "Near"},
        )
        assert done.returncode == 0, done.stderr
    finally:
        manager.close()


def test_the_monitor_on_one_machine_attributes_a_write_to_another_machines_lock(
    machines: tuple[Machine, Machine], spawn: Spawner
) -> None:
    """The monitor asks the store who holds a path: with the table on the server there is no
    local file to read, and the other machine's grant is not in this machine's locks log."""
    from integration.helpers import versatil_argv
    from integration.test_monitor import MonitorProcess

    one, two = machines
    child = spawn.popen(versatil_argv("monitor", "--json"), cwd=two.clone, env=two.env,
                        name="monitor")
    wait_for(lambda: "watching" in child.stderr or not child.alive,
             message=lambda: f"the monitor to start; stderr: {child.stderr!r}")
    monitor = MonitorProcess(child, two.clone)
    manager = one.manager()
    try:
        with manager.hold(["src/"], agent="Faraway"):
            (two.clone / "src" / "a.py").write_text("written under machine one's lock\n")
            locked = monitor.until("src/a.py")[-1]
        (two.clone / "docs" / "x.md").write_text("nobody holds docs\n")
        unlocked = monitor.until("docs/x.md")[-1]
    finally:
        manager.close()
    assert (locked["kind"], locked["agent"]) == ("locked-write", "Faraway")
    assert (unlocked["kind"], unlocked["agent"]) == ("unlocked-write", None)
