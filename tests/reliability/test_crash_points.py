"""kill -9 at every named fault point, then check what a user would find.

A fault point (``versatil_fs.faults.point``) makes the process SIGKILL itself when
``VERSATIL_FAULT`` names it. Each test here drives a real process into one point and then
asserts the crash-safety contract:

* the lock table and every other state file parses (nothing half-written);
* no lock outlives its holder by more than a second: a request already waiting when the holder
  died is granted within a second of the death, and the dead holder's resources are free at once;
* checkpoint refs point at complete commits, metadata agrees with them, and the working tree,
  index, HEAD and stash are either untouched or exactly what the interrupted command promised;
* the next command works.

The lock scenarios arm the fault inside a child only for the operation under test (the child
re-reads ``VERSATIL_FAULT`` by reloading :mod:`versatil_fs.faults`), so earlier passes through
the same point (taking the first lock) do not count towards it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from integration.helpers import Child, LockAgent, Spawner, git, lock_agent, wait_for
from reliability.support import (
    Tally,
    checkpoint_refs,
    lost_files,
    ref_problems,
    snapshot_files,
    state_problems,
    tree_state,
    versatil,
    versatil_process,
    working_files,
)

from versatil_fs import LockManager
from versatil_fs.state import StateDir

# A lock whose holder died must be free within this long (the bound).
STUCK_LIMIT = 1.0

FILES = {
    "README.md": "hello\n",
    "src/a.py": "a = 1\n",
    "src/b.py": "b = 1\n",
    "src/api/login.py": "def login(): ...\n",
    "docs/guide.md": "# guide\n",
    ".gitignore": "*.log\n",
}


# Lock scenarios ---------------------------------------------------------------------------------
CRASHER = r"""
import importlib, json, os, sys
from versatil_fs import LockManager, faults

manager = LockManager(repo=".")
holding = manager.acquire(sys.argv[1:], agent="Crasher", wait=0)
print(json.dumps({"held": holding.id}), flush=True)
command = json.loads(sys.stdin.readline())
# Arm the fault for this operation only: faults reads VERSATIL_FAULT when it is (re)loaded.
os.environ["VERSATIL_FAULT"] = command["fault"]
importlib.reload(faults)
if command["op"] == "acquire":
    manager.acquire(command["resources"], agent="Crasher", wait=command.get("wait", 0))
elif command["op"] == "release":
    holding.release()
print(json.dumps({"survived": command}), flush=True)
"""


@dataclass
class Death:
    """When a child died, seen from a thread blocked in waitpid (so within microseconds)."""

    child: Child
    at: float = 0.0

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        self.child.popen.wait()
        self.at = time.time()

    def returncode(self, timeout: float = 60.0) -> int | None:
        self._thread.join(timeout)
        return self.child.popen.returncode


def queued(manager: LockManager, agent: str) -> bool:
    return any(w.agent == agent for w in manager.snapshot().waiters)


def stuck_locks(manager: LockManager, *resources: str) -> list[str]:
    """Each of ``resources`` a Checker cannot take at once (no wait), with the reason."""
    stuck = []
    for resource in resources:
        try:
            manager.acquire([resource], agent="Checker", wait=0).release()
        except Exception as exc:  # counted, then reported by the caller's assertion
            stuck.append(f"{resource}: {exc}")
    return stuck


def armed(agent: LockAgent) -> bool:
    """Whether a waiting child listens for table changes (its doorbell has an inotify fd)."""
    fds = Path(f"/proc/{agent.pid}/fd")
    try:
        return any("inotify" in str(fd.readlink()) for fd in fds.iterdir())
    except OSError:
        return False


LOCK_SCENARIOS = {
    # name: (fault, the crasher's operation, what it holds first)
    "between granting and recording a lock": (
        "locks.before-record", {"op": "acquire", "resources": ["src/b.py", "db:users"]},
    ),
    "before the table rename of a grant": (
        "state.before-rename", {"op": "acquire", "resources": ["src/b.py", "db:users"]},
    ),
    "before the table rename of a release": (
        "state.before-rename", {"op": "release"},
    ),
    "before the table rename of joining the queue": (
        "state.before-rename", {"op": "acquire", "resources": ["db:queue"], "wait": 30},
    ),
}


@pytest.mark.parametrize("scenario", list(LOCK_SCENARIOS))
def test_a_holder_killed_inside_the_lock_manager_leaves_nothing_stuck(
    scenario: str, spawn: Spawner, repo: Path, manager: LockManager, tally: Tally
) -> None:
    fault, command = LOCK_SCENARIOS[scenario]
    home = StateDir().root
    # Someone else holds db:queue, so that the "joining the queue" crasher has to wait.
    other = lock_agent(spawn, repo, name="other")
    other.acquire(["db:queue"], agent="Other")
    crasher = spawn(CRASHER, "src/a.py", cwd=repo, name="crasher")
    assert "held" in crasher.read_json(), crasher.stderr
    waiter = lock_agent(spawn, repo, name="waiter")
    waiter.request(["src/a.py"], agent="Waiter", wait=60)
    wait_for(lambda: queued(manager, "Waiter"), message="the waiter to queue")
    try:
        wait_for(lambda: armed(waiter), timeout=2.0)
    except AssertionError:
        pass  # no inotify here: the waiter still wakes on the holder's flock

    death = Death(crasher)
    crasher.send({"fault": fault, **command})
    assert tally.killed(death.returncode()), f"the fault did not fire: {crasher.stderr}"

    # The waiter is granted within a second of the death, however the holder died.
    granted = waiter.reply(timeout=60)
    assert granted["ok"], granted
    late = granted["granted_at"] - death.at
    tally.locks_stuck += late > STUCK_LIMIT
    assert late <= STUCK_LIMIT, f"granted {late:.3f} s after the holder died"

    # Whatever the crasher was taking is free now (no wait at all), and the table is whole.
    stuck = stuck_locks(manager, "src/b.py", "db:users")
    other.release()
    stuck += stuck_locks(manager, "db:queue")
    tally.locks_stuck += len(stuck)
    assert stuck == []
    assert tally.lost(state_problems(home)) == []

    # The next commands work and show only the living.
    listing = versatil("locks", "--json", cwd=repo)
    assert listing.code == 0, listing
    table = json.loads(listing.out)
    assert {g["agent"] for g in table["locks"]} == {"Waiter"}
    assert table["waiters"] == []
    assert "Crasher" not in versatil("locks", cwd=repo).out


@pytest.mark.parametrize("fault", ["locks.before-record", "state.before-rename",
                                   "state.before-rename:2"])
def test_a_killed_versatil_lock_leaves_no_lock(
    fault: str, repo: Path, manager: LockManager, tally: Tally
) -> None:
    """A shell lock whose command died before saying "Locked" must not be held by anyone.

    (``state.before-rename`` is first reached writing the shell lease's own record, the second
    time writing the table.)
    """
    home = StateDir().root
    assert versatil("lock", "--agent", "Keeper", "db:kept", cwd=repo).code == 0
    before = snapshot_files(home)
    result = versatil_process("lock", "--agent", "Ghost", "src/a.py", cwd=repo,
                              env={"VERSATIL_FAULT": fault})
    assert tally.killed(result.code), result
    assert tally.lost(state_problems(home)) == []
    assert tally.lost(lost_files(before, home, may_change=_lease_dir)) == []
    taken = versatil("lock", "--agent", "Next", "--wait", "0", "src/a.py", cwd=repo)
    tally.locks_stuck += taken.code != 0
    assert taken.code == 0, taken
    assert versatil("unlock", "--agent", "Next", "src/a.py", cwd=repo).code == 0
    holders = {g.agent for g in manager.snapshot().locks}
    assert holders == {"Keeper"}


def _lease_dir(rel: str) -> bool:
    return rel.startswith("run/leases/") or rel == "logs/resource-locks.json"


def test_a_killed_versatil_lock_does_not_come_back_after_a_table_rebuild(
    repo: Path, manager: LockManager, tally: Tally
) -> None:
    """The record a shell lease is rebuilt from must not outlive a command killed before the
    table held its grant: a rebuild would bring back a lock nobody was told they hold."""
    assert versatil("lock", "--agent", "Keeper", "db:kept", cwd=repo).code == 0
    result = versatil_process("lock", "--agent", "Ghost", "src/a.py", cwd=repo,
                              env={"VERSATIL_FAULT": "state.before-rename:2"})
    assert tally.killed(result.code), result
    assert {g.agent for g in manager.snapshot().locks} == {"Keeper"}
    StateDir().lock_table.unlink()  # e.g. a user clearing a table they believe damaged
    holders = {g.agent for g in manager.snapshot().locks}
    tally.locks_stuck += "Ghost" in holders
    assert holders == {"Keeper"}


def test_a_killed_versatil_unlock_can_be_run_again(
    repo: Path, manager: LockManager, tally: Tally
) -> None:
    home = StateDir().root
    assert versatil("lock", "--agent", "Holder", "src/a.py", "db:x", cwd=repo).code == 0
    result = versatil_process("unlock", "--agent", "Holder", "src/a.py", cwd=repo,
                              env={"VERSATIL_FAULT": "state.before-rename"})
    assert tally.killed(result.code), result
    assert tally.lost(state_problems(home)) == []
    again = versatil("unlock", "--agent", "Holder", "src/a.py", cwd=repo)
    assert again.code in (0, 1), again  # released now, or it had been released after all
    assert len(again.err_lines) <= 1 and "Traceback" not in again.err
    taken = versatil("lock", "--agent", "Next", "--wait", "0", "src/a.py", cwd=repo)
    tally.locks_stuck += taken.code != 0
    assert taken.code == 0, taken
    assert {g.agent for g in manager.snapshot().locks} == {"Holder", "Next"}


# Checkpoint scenarios ---------------------------------------------------------------------------
def _edit_tree(repo: Path) -> None:
    """Uncommitted work of every kind: modified, deleted, new, ignored, staged."""
    (repo / "src/a.py").write_text("a = 2  # edited\n")
    (repo / "docs/guide.md").unlink()
    (repo / "src/new.py").write_text("new = True\n")
    (repo / "debug.log").write_text("ignored\n")
    (repo / "src/b.py").write_text("b = 2  # staged\n")
    git(repo, "add", "src/b.py")


@pytest.mark.parametrize("fault", ["checkpoint.before-commit", "state.before-rename"])
def test_a_killed_checkpoint_create_changes_nothing_the_user_sees(
    fault: str, repo: Path, tally: Tally
) -> None:
    home = StateDir().root
    _edit_tree(repo)
    assert versatil("checkpoint", "create", "-m", "first", cwd=repo).code == 0
    files, state, refs = working_files(repo), tree_state(repo), checkpoint_refs(repo)
    before = snapshot_files(home)

    result = versatil_process("checkpoint", "create", "-m", "killed", cwd=repo,
                              env={"VERSATIL_FAULT": fault})
    assert tally.killed(result.code), result

    assert tally.lost(lost_files(files, repo)) == []
    assert tree_state(repo) == state
    assert tally.lost(state_problems(home)) == []
    assert tally.lost(lost_files(before, home)) == []
    assert ref_problems(repo) == []
    after = checkpoint_refs(repo)
    if fault == "checkpoint.before-commit":
        assert after == refs  # killed before the ref update: no checkpoint at all
    else:
        assert len(after) == len(refs) + 1  # the ref exists; its metadata never got written
    # The next commands work: the list shows every ref (rebuilt from its commit if need be)...
    listing = versatil("checkpoint", "list", "--json", cwd=repo)
    assert listing.code == 0, listing
    listed = json.loads(listing.out)["checkpoints"]
    assert sorted(c["id"] for c in listed) == after
    # ...a new checkpoint can be made and restored, and no scratch index is left behind.
    made = versatil("checkpoint", "create", "-m", "next", "--json", cwd=repo)
    assert made.code == 0, made
    assert versatil("checkpoint", "restore", json.loads(made.out)["id"], cwd=repo).code == 0
    assert working_files(repo) == files
    scratch = list(home.glob("checkpoints/*/scratch/*"))
    assert scratch == [], scratch


RESTORE_FAULTS = {
    # fault: how far the restore got
    "checkpoint.before-commit": "nothing",  # its snapshot of the current tree
    "state.before-rename": "nothing",  # the safety checkpoint's metadata
    "checkpoint.mid-restore": "removals",  # deleted what to delete, wrote nothing yet
    "state.before-rename:2": "everything",  # the safety record saying the restore finished
}


@pytest.mark.parametrize("fault", list(RESTORE_FAULTS))
def test_a_killed_restore_leaves_whole_files_and_a_way_back(
    fault: str, repo: Path, tally: Tally
) -> None:
    home = StateDir().root
    # With a lock table in place, a restore's lock check writes nothing, so the metadata
    # writes are the first and second passes through state.before-rename.
    assert versatil("lock", "--agent", "Someone", "db:unrelated", cwd=repo).code == 0
    made = versatil("checkpoint", "create", "-m", "clean", "--json", cwd=repo)
    target = json.loads(made.out)["id"]
    target_files = working_files(repo)
    _edit_tree(repo)
    current = working_files(repo)
    state = tree_state(repo)

    result = versatil_process("checkpoint", "restore", target, cwd=repo,
                              env={"VERSATIL_FAULT": fault})
    assert tally.killed(result.code), result
    assert tally.lost(state_problems(home)) == []
    assert ref_problems(repo) == []
    assert tree_state(repo) == state  # a restore never touches the index, HEAD or stash

    # Every file is whole: as it was before the restore, or as the checkpoint has it.
    now = working_files(repo)
    torn = [
        path for path in sorted(set(now) | set(current) | set(target_files))
        if now.get(path) not in (current.get(path), target_files.get(path))
        and path != "debug.log"
    ]
    tally.lost(torn)
    assert torn == []
    assert now["debug.log"] == current["debug.log"]  # ignored files are never touched
    got = RESTORE_FAULTS[fault]
    if got == "nothing":
        assert now == current
    elif got == "everything":
        assert {k: v for k, v in now.items() if k != "debug.log"} == {
            k: v for k, v in target_files.items() if k != "debug.log"
        }

    # The way back: the safety checkpoint (if one was made) holds the tree as it was.
    listing = versatil("checkpoint", "list", "--json", cwd=repo)
    assert listing.code == 0, listing
    safety = [c for c in json.loads(listing.out)["checkpoints"] if c["kind"] == "safety"]
    if safety:
        (record,) = safety
        undo = versatil("checkpoint", "restore", record["id"], cwd=repo)
        assert undo.code == 0, undo
        assert tally.lost(lost_files(current, repo)) == []
        assert set(working_files(repo)) == set(current)
    else:
        assert got == "nothing"
    # And running the restore again finishes the job.
    again = versatil("checkpoint", "restore", target, cwd=repo)
    assert again.code == 0, again
    restored = working_files(repo)
    restored.pop("debug.log")
    expected = dict(target_files)
    expected.pop("debug.log", None)
    assert restored == expected


# Wave run scenarios -----------------------------------------------------------------------------
WAVE_PLAN = """\
version: 1
tasks:
  - {{id: one, agent: Ann, writes: [src/a.py], run: 'echo one >> src/a.py; echo one >> "{ran}"'}}
  - {{id: two, agent: Bob, writes: [docs/], run: 'echo two >> docs/guide.md; echo two >> "{ran}"'}}
  - id: three
    agent: Cid
    needs: [one, two]
    writes: [src/a.py, src/new.txt]
    run: 'echo three >> src/a.py; echo three > src/new.txt; echo three >> "{ran}"'
"""
# What the tree holds once every task ran exactly once (a task that ran half-way and was
# re-run must have been rolled back first, or its line would be there twice).
WAVE_RESULT = {
    "src/a.py": "a = 1\none\nthree\n",
    "docs/guide.md": "# guide\ntwo\n",
    "src/new.txt": "three\n",
}

# The executor group-commits its state, so how many state writes a run makes depends on timing:
# the first few always happen; later ones may not, and then the run simply ends (see below).
WAVE_FAULTS = [
    "wave.before-state-write:1",  # before the run's first state was ever written
    "wave.before-state-write:2",
    "wave.before-state-write:3",
    "wave.after-wave-checkpoint:2",  # wave 2's checkpoint made, nothing of it started
    "wave.after-start-record:2",  # a task recorded as running (write-ahead), never started
    "wave.task-started:1",  # a task's process started, the executor gone
    "wave.task-exited:3",  # the last task ended, its end not yet recorded
]
WAVE_FAULTS_SLOW = [
    *(f"wave.before-state-write:{n}" for n in (4, 5, 6, 7, 8, 9, 10)),
    "wave.after-wave-checkpoint:1", "wave.after-start-record:1", "wave.after-start-record:3",
    "wave.task-started:2", "wave.task-started:3",
    "wave.task-exited:1", "wave.task-exited:2", "state.before-rename:3", "state.before-rename:6",
]


@pytest.fixture
def wave_runs() -> Iterator[None]:
    """Whatever tasks a killed executor left running are killed when the test ends."""
    yield
    from versatil_fs.waves.store import RunStore
    from versatil_fs.waves.tasks import kill_leftovers

    for run in RunStore().runs():
        kill_leftovers(run.id)


def _wave_states(home: Path) -> list[str]:
    from versatil_fs.waves.store import STATE_DECODER

    problems = []
    for path in sorted(home.glob("waves/*.msgpack")):
        try:
            run = STATE_DECODER.decode(path.read_bytes())
        except Exception as exc:  # any failure to read it back is what we are looking for
            problems.append(f"{path.name}: {exc}")
        else:
            assert run.version == 1
    return problems


@pytest.mark.parametrize(
    "fault",
    [*WAVE_FAULTS, *(pytest.param(f, marks=pytest.mark.slow) for f in WAVE_FAULTS_SLOW)],
)
def test_a_killed_wave_run_resumes_without_running_a_finished_task_twice(
    fault: str, repo: Path, tmp_path: Path, manager: LockManager, tally: Tally,
    wave_runs: None,
) -> None:
    home = StateDir().root
    ran = tmp_path / "ran.txt"
    plan = tmp_path / "plan.yaml"
    plan.write_text(WAVE_PLAN.format(ran=ran))
    result = versatil_process("wave", "run", str(plan), "--json", cwd=repo,
                              env={"VERSATIL_FAULT": fault})
    name, _, count = fault.partition(":")
    batched = name in ("wave.before-state-write", "state.before-rename") and int(count or 1) > 1
    if result.code == 0 and batched:
        # This run committed its state in fewer writes than the point's count: it was never
        # reached. The run must then simply have succeeded.
        assert json.loads(result.out)["status"] == "succeeded"
        pytest.skip(f"{fault} was not reached: this run made fewer state writes")
    assert tally.killed(result.code), result

    # Readable state, and a status that says what happened.
    assert tally.lost(_wave_states(home) + state_problems(home)) == []
    assert ref_problems(repo) == []
    status = versatil("wave", "status", "--json", cwd=repo)
    assert status.code == 0, status
    view = json.loads(status.out)
    finished = set()
    if view["run"] is None:
        assert fault == "wave.before-state-write:1"  # no state yet: nothing to resume
        again = versatil_process("wave", "run", str(plan), cwd=repo)
    else:
        assert view["status"] == "interrupted", view["status"]
        finished = {k for k, t in view["run"]["tasks"].items() if t["status"] == "succeeded"}
        ran_before = ran.read_text().split() if ran.exists() else []
        assert finished <= set(ran_before)
        again = versatil_process("wave", "resume", cwd=repo)
    assert again.code == 0, again

    # Every task ran to the end exactly once in effect; a finished one never ran again.
    runs = ran.read_text().split()
    for task in finished:
        assert runs.count(task) == 1, f"{task} was recorded as finished and ran again: {runs}"
    files = working_files(repo)
    for path, text in WAVE_RESULT.items():
        assert files.get(path, b"").decode() == text, f"{path}: {files.get(path)!r}"
    assert tally.lost(_wave_states(home) + state_problems(home)) == []
    # No lock is left behind by the dead executor or its tasks.
    stuck = stuck_locks(manager, "src/a.py", "docs", "src/new.txt")
    tally.locks_stuck += len(stuck)
    assert stuck == []
    final = json.loads(versatil("wave", "status", "--json", cwd=repo).out)
    assert final["status"] == "succeeded"


# The run wrapper --------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["locks.before-record", "state.before-rename"])
def test_a_run_killed_while_taking_its_locks_never_runs_the_command(
    fault: str, repo: Path, tmp_path: Path, manager: LockManager, tally: Tally
) -> None:
    home = StateDir().root
    ran = tmp_path / "ran"
    result = versatil_process(
        "run", "--agent", "Runner", "--lock", "src/a.py", "--read", "docs", "--",
        "touch", str(ran), cwd=repo, env={"VERSATIL_FAULT": fault},
    )
    assert tally.killed(result.code), result
    assert not ran.exists(), "the command ran although its wrapper died taking the locks"
    assert tally.lost(state_problems(home)) == []
    stuck = stuck_locks(manager, "src/a.py", "docs")
    tally.locks_stuck += len(stuck)
    assert stuck == []
    again = versatil_process("run", "--agent", "Runner", "--lock", "src/a.py", "--",
                             "touch", str(ran), cwd=repo)
    assert again.code == 0, again
    assert ran.exists()
