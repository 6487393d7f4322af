"""Issue 12, the processes' part: no process keeps writing after its locks are gone, wave state is
never trusted for paths, a finished task is not run again, and bad input never ends in exit 70.

The lock contract tested here: a lock is held for exactly as long as any process started under
it lives. The processes are real (``versatil run`` and ``versatil wave run`` as separate
processes, killed with ``kill -9``), and every step is synchronised on files the children write
or on a process's end, never on a sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.helpers import DEFAULT_TIMEOUT, versatil_argv, wait_for
from reliability.support import (
    Result,
    Tally,
    lost_files,
    one_line_problems,
    snapshot_files,
    versatil,
    versatil_process,
)

FILES = {
    "README.md": "hello\n",
    "src/x.txt": "x\n",
    "src/a.py": "a = 1\n",
    "docs/guide.md": "# guide\n",
}


@pytest.fixture
def repo(git_repo: Path) -> Path:
    from integration.helpers import commit_files

    return commit_files(git_repo, FILES)


# Plans that are not plan files ------------------------------------------------------------------
def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


PLAN_CASES = {
    # A JSON document is YAML too: 5,000 levels overflow PyYAML's recursive composer.
    "json-5000": _nested(5000),
    "mapping-5000": "tasks:\n- " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
    # Deep enough to pass the composer, deep enough to be no plan.
    "agent-list-200": "tasks:\n- id: t\n  run: 'true'\n  agent: " + _nested(200) + "\n",
}


def _slow_but(first: str, names: list[str]) -> list[object]:
    """Every variant in the slow suite but ``first``, which keeps the default suite covered."""
    return [pytest.param(n, marks=() if n == first else pytest.mark.slow) for n in names]


@pytest.mark.parametrize("command", _slow_but("plan", ["plan", "run"]))
@pytest.mark.parametrize("case", _slow_but("json-5000", sorted(PLAN_CASES)))
def test_a_deeply_nested_plan_is_one_sentence_and_exit_2(
    case: str, command: str, repo: Path, tmp_path: Path, tally: Tally
) -> None:
    plan = tmp_path / "deep.yaml"
    plan.write_text(PLAN_CASES[case])
    tally.attack()
    result = tally.outcome(versatil("wave", command, str(plan), cwd=repo))
    assert one_line_problems(result, (2,), ["deep.yaml", "nested"]) == [], result


@pytest.mark.parametrize("wait", ["nan", "1e308"])
def test_a_lock_wait_no_lock_can_have_is_refused_before_any_task_runs(
    wait: str, repo: Path, tmp_path: Path, tally: Tally
) -> None:
    plan = _wave_plan(tmp_path, "echo ran >> src/x.txt")
    tally.attack()
    result = tally.outcome(versatil("wave", "run", str(plan), "--lock-wait", wait, cwd=repo))
    assert one_line_problems(result, (2,), ["--lock-wait"]) == [], result
    assert (repo / "src/x.txt").read_text() == "x\n"


NUL_PLANS = {
    "agent": 'tasks:\n  - {id: a, agent: "x\\0y", run: "true"}\n',
    "run": 'tasks:\n  - {id: a, agent: x, run: "tr\\0ue"}\n',
    "argv": 'tasks:\n  - {id: a, agent: x, run: ["tr\\0ue"]}\n',
    "writes": 'tasks:\n  - {id: a, agent: x, writes: ["src/\\0x"], run: "true"}\n',
}


@pytest.mark.parametrize("field", _slow_but("writes", sorted(NUL_PLANS)))
def test_a_nul_byte_in_a_plan_is_refused_before_anything_runs(
    field: str, repo: Path, tmp_path: Path, tally: Tally
) -> None:
    plan = tmp_path / "nul.yaml"
    plan.write_text(NUL_PLANS[field])
    for command in ("plan", "run"):
        tally.attack()
        result = tally.outcome(versatil("wave", command, str(plan), cwd=repo))
        assert one_line_problems(result, (2,), ["nul.yaml:2"]) == [], result


@pytest.mark.parametrize(
    "kind", _slow_but("fifo-with-writer", ["fifo", "fifo-with-writer", "device", "socket"])
)
def test_a_plan_path_that_is_not_a_regular_file_is_refused_not_waited_on(
    kind: str, repo: Path, tmp_path: Path, tally: Tally
) -> None:
    import socket

    plan = tmp_path / "plan.yaml"
    holder: socket.socket | None = None
    writer = None
    if kind.startswith("fifo"):
        os.mkfifo(plan)
        if kind == "fifo-with-writer":
            # A writer that never writes: a blocking read would wait for it for ever.
            reader = os.open(plan, os.O_RDONLY | os.O_NONBLOCK)
            writer = os.open(plan, os.O_WRONLY)
            os.close(reader)
    elif kind == "device":
        plan = Path("/dev/zero")  # endless: reading it whole would never finish
    else:
        holder = socket.socket(socket.AF_UNIX)
        holder.bind(str(plan))
    try:
        for command in ("plan", "run"):
            tally.attack()
            proc = subprocess.Popen(
                versatil_argv("wave", command, str(plan)), cwd=repo, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            hung = tally.hung(proc, 30)
            assert not hung, f"wave {command} hung on a {kind} plan"
            out, err = proc.communicate()
            result = tally.outcome(Result(proc.returncode, out, err))
            assert one_line_problems(result, (2,), [str(plan), "not a regular file"]) == [], (
                result
            )
    finally:
        if writer is not None:
            os.close(writer)
        if holder is not None:
            holder.close()


# A defaulted agent name -------------------------------------------------------------------------
def test_run_warns_once_when_the_agent_name_is_defaulted(repo: Path) -> None:
    defaulted = versatil_process("run", "--lock", "src/x.txt", "--", "true", cwd=repo)
    assert defaulted.code == 0, defaulted
    assert len(defaulted.err_lines) == 1, defaulted
    assert "no agent name given" in defaulted.err and "exclude" in defaulted.err, defaulted
    for named in (
        versatil_process("run", "--agent", "Ann", "--lock", "src/x.txt", "--", "true", cwd=repo),
        versatil_process("run", "--lock", "src/x.txt", "--", "true", cwd=repo,
                         env={"VERSATIL_AGENT": "Bob"}),
    ):
        assert named.code == 0 and named.err_lines == [], named


# A lock lasts as long as any process started under it -------------------------------------------
# The process that writes last: it says its pid, blocks on a FIFO until the test lets it go, then
# writes the locked file and says so. $R, $G and $D are the files, from the environment.
BODY = 'echo $$ > "$R"; read x < "$G"; echo A >> src/x.txt; echo done > "$D"'
SHAPES = {
    # The repro: a grandchild in the foreground of a shell the wrapper started.
    "grandchild": f"sh -c '{BODY}'; true",
    # A new session: neither the process group nor the terminal reaches it.
    "setsid": f"setsid sh -c '{BODY}' & wait",
    # Immune to SIGHUP, output elsewhere, as people start things that must outlive a terminal.
    "nohup": f"nohup sh -c '{BODY}' >/dev/null 2>&1 & wait",
}


class Descendant:
    """The last process of a tree, driven through its files: ready (its pid), go, done."""

    def __init__(self, tmp: Path) -> None:
        self.ready, self.go, self.done = tmp / "ready", tmp / "go", tmp / "done"
        os.mkfifo(self.go)
        self.pid = 0

    @property
    def env(self) -> dict[str, str]:
        return {"R": str(self.ready), "G": str(self.go), "D": str(self.done)}

    def started(self) -> int:
        wait_for(lambda: self.ready.exists() and self.ready.read_text().strip(),
                 message="the descendant to start")
        self.pid = int(self.ready.read_text())
        return self.pid

    def release(self) -> None:
        """Let it write and exit (a no-op if it is not waiting any more)."""
        try:
            fd = os.open(self.go, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return  # nobody reads: it is gone
        try:
            os.write(fd, b"go\n")
        finally:
            os.close(fd)

    def alive(self) -> bool:
        return self.pid > 0 and not _gone(self.pid)

    def kill(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def _lock_refused_then_granted(repo: Path, last: Descendant, tally: Tally) -> None:
    """While ``last`` lives a competing `versatil lock` is refused; soon after it exits the
    lock is granted, and never while it still runs."""
    tally.attack()
    competing = versatil("lock", "--agent", "Intruder", "--wait", "0", "src/x.txt", cwd=repo)
    if competing.code == 0:
        tally.overlaps += 1
    assert competing.code == 1, f"granted while a process started under the lock runs: {competing}"
    assert "src/x.txt" in competing.err
    last.release()
    granted = versatil("lock", "--agent", "Intruder", "--wait", "20", "src/x.txt", cwd=repo)
    granted_at = time.time()
    assert granted.code == 0, granted
    try:
        if last.alive() or not last.done.exists():
            tally.overlaps += 1
            pytest.fail("the lock was granted before the last process under it had exited")
        delay = granted_at - last.done.stat().st_mtime
        if delay > 2:
            tally.locks_stuck += 1
        # Milliseconds in practice (the waiter's doorbell hears the flock go); the bound only
        # tells a lock the kernel released from one held until something timed out.
        assert delay < 2, f"the lock came {delay:.1f} s after its last process exited"
        assert (repo / "src/x.txt").read_text() == "x\nA\n"
    finally:
        versatil("unlock", "--agent", "Intruder", "src/x.txt", cwd=repo)


def _run_shape(shape: str) -> list[pytest.param]:  # type: ignore[valid-type]
    return [pytest.param(s, marks=() if s == shape else pytest.mark.slow) for s in SHAPES]


@pytest.mark.parametrize("shape", _run_shape("grandchild"))
def test_kill_9_of_versatil_run_leaves_the_lock_with_its_last_descendant(
    shape: str, repo: Path, tmp_path: Path, tally: Tally
) -> None:
    last = Descendant(tmp_path)
    wrapper = subprocess.Popen(
        versatil_argv("run", "--agent", "Holder", "--no-monitor", "--lock", "src/x.txt", "--",
                      "sh", "-c", SHAPES[shape]),
        cwd=repo, env={**os.environ, **last.env}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        last.started()
        wrapper.kill()  # kill -9 of the wrapper alone, not of its process group
        assert tally.killed(wrapper.wait(timeout=DEFAULT_TIMEOUT))
        _lock_refused_then_granted(repo, last, tally)
    finally:
        last.release()
        last.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(wrapper.pid, signal.SIGKILL)
        wrapper.communicate()


@pytest.mark.slow
def test_a_command_that_exits_leaving_a_process_behind_leaves_it_the_lock(
    repo: Path, tmp_path: Path, tally: Tally
) -> None:
    last = Descendant(tmp_path)
    result = versatil_process(
        "run", "--agent", "Holder", "--no-monitor", "--lock", "src/x.txt", "--",
        "sh", "-c", f"setsid sh -c '{BODY}' >/dev/null 2>&1 &", cwd=repo, env=last.env,
    )
    try:
        assert result.code == 0, result
        assert "still running" in result.err and len(result.err_lines) == 1, result
        last.started()
        _lock_refused_then_granted(repo, last, tally)
    finally:
        last.release()
        last.kill()


def _wave_plan(tmp: Path, run: str) -> Path:
    plan = tmp / "plan.yaml"
    plan.write_text(
        "tasks:\n"
        f"  - {{id: slow, agent: Holder, writes: [src/x.txt], run: {json.dumps(run)}}}\n"
    )
    return plan


@pytest.fixture
def wave_runs() -> Iterator[None]:
    """Whatever tasks a killed executor left running are killed when the test ends."""
    yield
    from versatil_fs.waves.store import RunStore
    from versatil_fs.waves.tasks import kill_leftovers

    for run in RunStore().runs():
        kill_leftovers(run.id)


@pytest.mark.parametrize("shape", _run_shape("setsid"))
def test_kill_9_of_versatil_wave_run_leaves_the_lock_with_its_tasks(
    shape: str, repo: Path, tmp_path: Path, tally: Tally, wave_runs: None
) -> None:
    last = Descendant(tmp_path)
    plan = _wave_plan(tmp_path, SHAPES[shape])
    executor = subprocess.Popen(
        versatil_argv("wave", "run", str(plan)), cwd=repo, env={**os.environ, **last.env},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        last.started()
        executor.kill()
        assert tally.killed(executor.wait(timeout=DEFAULT_TIMEOUT))
        _lock_refused_then_granted(repo, last, tally)
    finally:
        last.release()
        last.kill()
        executor.communicate()


# The task's own shell ends once its detached child has started (and left its process group).
DETACHED = (
    "{prefix}setsid sh -c '" + BODY + "' >/dev/null 2>&1 & "
    'while [ ! -s "$R" ]; do sleep 0.01; done'
)


@pytest.mark.slow
def test_a_wave_task_leaves_nothing_running_and_what_hides_keeps_its_lock(
    repo: Path, tmp_path: Path, tally: Tally, wave_runs: None
) -> None:
    # A setsid child carries the task's marker: it is killed when the task ends.
    tally.attack(2)
    (tmp_path / "a").mkdir()
    first = Descendant(tmp_path / "a")
    plan = _wave_plan(tmp_path, DETACHED.format(prefix=""))
    try:
        done = versatil_process("wave", "run", str(plan), "--json", cwd=repo, env=first.env)
        assert done.code == 0, done
        first.started()
        if first.alive():
            tally.overlaps += 1
        assert not first.alive(), "a process the task started outlived it and its locks"
    finally:
        first.kill()
    # One that cleared its environment cannot be found: its locks stay until it exits.
    (tmp_path / "b").mkdir()
    last = Descendant(tmp_path / "b")
    plan = _wave_plan(
        tmp_path, DETACHED.format(prefix='env -i R="$R" G="$G" D="$D" PATH="$PATH" ')
    )
    try:
        done = versatil_process("wave", "run", str(plan), "--json", cwd=repo, env=last.env)
        assert done.code == 0, done
        last.started()
        _lock_refused_then_granted(repo, last, tally)
    finally:
        last.release()
        last.kill()


# A task that ended is not run again ------------------------------------------------------------
EXIT_CASES = {
    # fault point -> how many times the task must have run in all, once resumed
    "wave.task-exited:1": 1,  # its exit is recorded: resume settles it, never runs it again
    "wave.before-exit-record:1": 2,  # the one instant left: exited, not yet recorded
}


@pytest.mark.parametrize("fails", [pytest.param(False, id="succeeds", marks=pytest.mark.slow),
                                   pytest.param(True, id="fails")])
@pytest.mark.parametrize(
    "fault", [pytest.param(f, marks=() if n == 1 else pytest.mark.slow)
              for f, n in EXIT_CASES.items()],
)
def test_a_task_killed_around_its_exit_is_run_again_only_if_its_exit_was_not_recorded(
    fault: str, fails: bool, repo: Path, tmp_path: Path, tally: Tally, wave_runs: None
) -> None:
    ran = tmp_path / "ran.txt"
    code = 3 if fails else 0
    plan = _wave_plan(tmp_path, f'echo t >> "{ran}"; echo new >> src/a.py; exit {code}')
    plan.write_text(plan.read_text().replace("src/x.txt", "src/a.py"))
    first = versatil_process("wave", "run", str(plan), cwd=repo, env={"VERSATIL_FAULT": fault})
    assert tally.killed(first.code), first
    status = versatil("wave", "status", cwd=repo)
    assert status.code == 0, status
    assert ("not run again" in status.out) == (EXIT_CASES[fault] == 1), status.out
    again = versatil_process("wave", "resume", "--json", cwd=repo)
    assert again.code == (1 if fails else 0), again
    report = json.loads(again.out)
    (task,) = report["tasks"]
    runs = ran.read_text().split()
    assert len(runs) == EXIT_CASES[fault], f"the task ran {len(runs)} times"
    assert task["status"] == ("failed" if fails else "succeeded"), task
    if fails:
        assert "exited with 3" in task["error"]
        assert (repo / "src/a.py").read_text() == "a = 1\n", "the failed task was not rolled back"
        assert task["rolled_back"] == ["src/a.py"]
    else:
        assert (repo / "src/a.py").read_text() == "a = 1\nnew\n"
        assert task["files"] == ["src/a.py"]
    # Nothing of the run is left holding a lock.
    taken = versatil("lock", "--agent", "Next", "--wait", "0", "src/a.py", cwd=repo)
    assert taken.code == 0, taken


# Planted wave state -----------------------------------------------------------------------------
def _interrupted_run(repo: Path, tmp: Path) -> tuple[str, Path]:
    """A run killed while its one task ran: its id, and its state file (write-ahead applied)."""
    from versatil_fs.waves.store import ENCODER, RunStore

    plan = tmp / "plan.yaml"
    plan.write_text("tasks:\n  - {id: edit, agent: Holder, writes: [src/a.py], "
                    "run: 'echo new >> src/a.py'}\n")
    killed = versatil_process("wave", "run", str(plan), cwd=repo,
                              env={"VERSATIL_FAULT": "wave.task-started:1"})
    assert killed.code == -9, killed
    store = RunStore()
    (run,) = store.runs()
    run = store.load(run.id)
    assert run.tasks["edit"].status == "running" and run.tasks["edit"].before
    # One document holding it all, so that a test's change is the whole truth.
    store.path(run.id).write_bytes(ENCODER.encode(run))
    store.drop_wal(run.id)
    return run.id, store.path(run.id)


def _plant(path: Path, change: dict[str, object], task: dict[str, object] | None = None) -> None:
    import msgspec

    doc = msgspec.msgpack.decode(path.read_bytes())
    doc.update(change)
    if task:
        doc["tasks"]["edit"].update(task)
    path.write_bytes(msgspec.msgpack.encode(doc))


@pytest.mark.parametrize("where", _slow_but("beside-home", ["home", "beside-home"]))
def test_a_planted_run_id_never_names_a_file_outside_the_waves_directory(
    where: str, repo: Path, tmp_path: Path, versatil_home: Path, tally: Tally
) -> None:
    run_id, path = _interrupted_run(repo, tmp_path)
    ups = "../" if where == "home" else "../../"
    victim_base = (versatil_home / "waves" / ups).resolve() / "victim"
    victims = [victim_base.with_suffix(s) for s in (".wal", ".lock", ".msgpack")]
    for victim in victims:
        victim.write_text("precious\n")
    _plant(path, {"id": ups + "victim"})
    before = snapshot_files(repo)
    for args in (("wave", "status", run_id), ("wave", "resume", run_id), ("wave", "status")):
        tally.attack()
        result = tally.outcome(versatil_process(*args, cwd=repo))
        assert result.code in (0, 2), result
        if result.code == 2:
            assert one_line_problems(result, (2,), [run_id]) == [], result
    lost = tally.lost([str(v) for v in victims
                       if not v.exists() or v.read_text() != "precious\n"])
    assert lost == [], "a file outside the state's waves directory was touched"
    assert tally.lost(lost_files(before, repo)) == []
    assert not (victim_base.parent / "victim").exists()


SNAPSHOT_ATTACKS = {
    "outside-the-repo": "../outside.txt",
    "absolute": "{outside}",
    # Inside the repository but not under the task's write paths: not the task's to restore.
    "not-its-path": "README.md",
}


@pytest.mark.parametrize("attack", _slow_but("not-its-path", sorted(SNAPSHOT_ATTACKS)))
def test_a_planted_snapshot_path_is_never_compared_or_restored(
    attack: str, repo: Path, tmp_path: Path, tally: Tally, wave_runs: None
) -> None:
    outside = tmp_path / "victim.txt"
    outside.write_text("outside\n")
    (repo.parent / "outside.txt").write_text("beside the repo\n")
    run_id, path = _interrupted_run(repo, tmp_path)
    # Made after the run's checkpoint: restoring README.md from it would lose this edit.
    (repo / "README.md").write_text("hello\nan edit nobody committed\n")
    key = SNAPSHOT_ATTACKS[attack].format(outside=outside)
    _plant(path, {}, {"before": {key: [1, 1, 1, 0o100644], "src/a.py": [1, 1, 1, 0o100644]}})
    beside = (repo.parent / "outside.txt").read_bytes()
    before = snapshot_files(repo)
    tally.attack()
    result = tally.outcome(versatil_process("wave", "resume", run_id, cwd=repo))
    if attack == "not-its-path":
        assert result.code == 0, result  # the planted entry is ignored, the run goes on
    else:
        assert one_line_problems(result, (2,), [run_id]) == [], result
    lost = lost_files({k: v for k, v in before.items() if k != "src/a.py"}, repo,
                      may_change=lambda rel: rel == "src/a.py")
    if (repo.parent / "outside.txt").read_bytes() != beside:
        lost.append("outside.txt beside the repository")
    if outside.read_text() != "outside\n":
        lost.append(str(outside))
    assert tally.lost(lost) == []


@pytest.mark.slow
def test_a_planted_log_path_is_rebuilt_from_the_ids(
    repo: Path, tmp_path: Path, versatil_home: Path, tally: Tally, wave_runs: None
) -> None:
    victim = tmp_path / "victim.log"
    victim.write_text("precious\n")
    run_id, path = _interrupted_run(repo, tmp_path)
    _plant(path, {}, {"log": str(victim)})
    tally.attack(2)
    status = tally.outcome(versatil_process("wave", "status", "--json", run_id, cwd=repo))
    assert status.code == 0, status
    logged = json.loads(status.out)["run"]["tasks"]["edit"]["log"]
    assert logged == str(versatil_home / "waves" / run_id / "edit.log")
    resumed = tally.outcome(versatil_process("wave", "resume", run_id, cwd=repo))
    assert resumed.code == 0, resumed
    assert tally.lost([] if victim.read_text() == "precious\n" else [str(victim)]) == []


@pytest.mark.parametrize(
    "change", _slow_but("checkpoint", ["checkpoint", "task-id", "nan-time", "agents"])
)
def test_other_planted_wave_state_is_damage_not_instructions(
    change: str, repo: Path, tmp_path: Path, tally: Tally, wave_runs: None
) -> None:
    import msgspec

    run_id, path = _interrupted_run(repo, tmp_path)
    if change == "checkpoint":
        _plant(path, {}, {"checkpoint": "../../../refs/heads/main"})
    elif change == "task-id":
        doc = msgspec.msgpack.decode(path.read_bytes())
        doc["plan"]["tasks"][0]["id"] = "../../edit"
        path.write_bytes(msgspec.msgpack.encode(doc))
    elif change == "nan-time":
        _plant(path, {"created": float("nan")})
    else:
        _plant(path, {"max_agents": 0})
    for args in (("wave", "status", run_id), ("wave", "resume", run_id)):
        tally.attack()
        result = tally.outcome(versatil_process(*args, cwd=repo))
        assert one_line_problems(result, (2,), [run_id]) == [], result


# A full disk ------------------------------------------------------------------------------------
@pytest.fixture
def small_home(versatil_home: Path) -> Iterator[Path]:
    """The state directory on a 4 MiB tmpfs of its own (skipped where one cannot be mounted)."""
    versatil_home.mkdir(mode=0o700, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(versatil_home)],
        capture_output=True, check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root, or no mount namespace rights)")
    try:
        yield versatil_home
    finally:
        if subprocess.run(["umount", str(versatil_home)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(versatil_home)], capture_output=True)


def _fill(home: Path) -> None:
    with open(home / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
        while True:
            filler.write(b"\0" * 65536)


def test_run_on_a_full_disk_is_one_sentence_and_loses_nothing(
    repo: Path, small_home: Path, tally: Tally
) -> None:
    assert versatil("locks", cwd=repo).code == 0  # the state directory exists, then fills up
    _fill(small_home)
    before = snapshot_files(repo)
    tally.attack(2)
    plain = tally.outcome(versatil_process("run", "--agent", "A", "--", "true", cwd=repo))
    assert plain.code == 0 and len(plain.err_lines) <= 1, plain
    locked = tally.outcome(versatil_process(
        "run", "--agent", "A", "--lock", "src/x.txt", "--", "sh", "-c", "echo y >> src/x.txt",
        cwd=repo,
    ))
    assert one_line_problems(locked, (2,), ["full"]) == [], locked
    assert tally.lost(lost_files(before, repo)) == [], "the command ran without its lock"


@pytest.mark.slow
def test_a_wave_task_that_fills_the_disk_fails_alone_and_the_run_says_so(
    repo: Path, small_home: Path, tmp_path: Path, tally: Tally, wave_runs: None
) -> None:
    plan = tmp_path / "plan.yaml"
    once = tmp_path / "filled-once"
    plan.write_text(
        "tasks:\n"
        "  - {id: fill, agent: A, writes: [src/], run: 'echo z >> src/x.txt; "
        f"[ -e {once} ] || {{ touch {once}; cat /dev/zero > \"$VERSATIL_HOME/filler\"; }}; "
        "exit 4'}\n"
        "  - {id: after, agent: B, writes: [docs/], needs: [fill],\n"
        "     run: 'echo b >> docs/guide.md'}\n"
        "  - {id: beside, agent: C, writes: [README.md], needs: [fill],\n"
        "     run: 'echo c >> README.md'}\n"
    )
    tally.attack()
    result = tally.outcome(versatil_process("wave", "run", str(plan), "--json", cwd=repo))
    assert "Traceback" not in result.err, result
    if result.code == 2:
        # The disk filled before the run's state could record the failure: stopped, said in
        # one sentence, and resumable once there is room.
        assert one_line_problems(result, (2,), ["wave resume"]) == [], result
        (small_home / "filler").unlink()
        result = tally.outcome(versatil_process("wave", "resume", "--json", cwd=repo))
    else:
        (small_home / "filler").unlink()
    assert result.code == 1, result
    assert len(result.err_lines) <= 1, result
    report = {t["id"]: t for t in json.loads(result.out)["tasks"]}
    assert report["fill"]["status"] == "failed", report
    assert report["after"]["status"] == "skipped" and report["beside"]["status"] == "skipped"
    assert (repo / "README.md").read_text() == "hello\n"
    assert (repo / "docs/guide.md").read_text() == "# guide\n"
    if report["fill"]["rolled_back"]:
        assert (repo / "src/x.txt").read_text() == "x\n"
    else:  # no room for the rollback's safety checkpoint: kept, and said
        assert "rollback failed" in report["fill"]["error"], report
        assert (repo / "src/x.txt").read_text().startswith("x\nz\n")
    status = versatil("wave", "status", "--json", cwd=repo)
    assert status.code == 0 and json.loads(status.out)["status"] == "failed", status
    assert versatil("lock", "--agent", "N", "--wait", "0", "src/x.txt", cwd=repo).code == 0


@pytest.mark.slow
def test_a_wave_run_goes_on_when_its_event_log_cannot_be_written(
    repo: Path, tmp_path: Path, versatil_home: Path, tally: Tally
) -> None:
    import resource

    assert versatil("locks", cwd=repo).code == 0
    log = versatil_home / "logs" / "wave-execution.jsonl"
    log.write_bytes(b'{"version":1,"time":1.0,"stream":"wave-execution","kind":"pad"}\n' * 1100)
    log.chmod(0o600)
    plan = tmp_path / "plan.yaml"
    plan.write_text("tasks:\n  - {id: t, agent: A, writes: [src/x.txt], "
                    "run: 'echo t >> src/x.txt'}\n")

    def limited() -> None:  # the log is past it: every append fails (EFBIG), nothing else does
        resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))

    tally.attack()
    result = tally.outcome(versatil_process("wave", "run", str(plan), "--json", cwd=repo,
                                            preexec_fn=limited))
    assert result.code == 0, result
    assert len(result.err_lines) == 1 and "wave-execution.jsonl" in result.err, result
    assert (repo / "src/x.txt").read_text() == "x\nt\n"
    assert json.loads(result.out)["status"] == "succeeded"


def test_a_wave_run_whose_state_cannot_be_written_stops_says_so_and_resumes(
    repo: Path, tmp_path: Path, tally: Tally, wave_runs: None
) -> None:
    import resource

    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "tasks:\n"
        "  - {id: gen, agent: A, writes: [src/gen], run: 'mkdir -p src/gen && "
        "for i in $(seq 400); do echo $i > src/gen/file-$i.txt; done'}\n"
        "  - {id: after, agent: B, writes: [docs/], needs: [gen], run: 'echo b >> docs/guide.md'}\n"
    )

    def limited() -> None:  # the state with gen's 400 files no longer fits: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (6 * 1024, 6 * 1024))

    tally.attack()
    result = tally.outcome(versatil_process("wave", "run", str(plan), cwd=repo,
                                            preexec_fn=limited))
    assert result.code == 2, result
    assert "Traceback" not in result.err and "wave resume" in result.err_lines[-1], result
    assert len(result.err_lines) <= 2, result  # the events log may say it missed some
    assert (repo / "docs/guide.md").read_text() == "# guide\n", "a task started after it"
    resumed = tally.outcome(versatil_process("wave", "resume", "--json", cwd=repo))
    assert resumed.code == 0, resumed
    tasks = {t["id"]: t for t in json.loads(resumed.out)["tasks"]}
    assert tasks["gen"]["status"] == tasks["after"]["status"] == "succeeded"
    assert len(list((repo / "src/gen").iterdir())) == 400
    assert (repo / "docs/guide.md").read_text() == "# guide\nb\n"


@pytest.mark.slow
def test_a_run_inside_a_run_keeps_what_it_starts_under_both_locks(
    repo: Path, tmp_path: Path, tally: Tally
) -> None:
    # The inner wrapper is a program that closes inherited descriptors (Python's subprocess):
    # it passes the outer lease's on, or the outer lock would end with the two wrappers.
    last = Descendant(tmp_path)
    inner = versatil_argv("run", "--agent", "Inner", "--no-monitor", "--lock", "docs", "--",
                          "sh", "-c", SHAPES["setsid"])
    outer = subprocess.Popen(
        versatil_argv("run", "--agent", "Holder", "--no-monitor", "--lock", "src/x.txt", "--",
                      *inner),
        cwd=repo, env={**os.environ, **last.env}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        last.started()
        inner_pid = next(
            int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == outer.pid
        )
        outer.kill()
        os.kill(inner_pid, signal.SIGKILL)
        assert tally.killed(outer.wait(timeout=DEFAULT_TIMEOUT))
        wait_for(lambda: _gone(inner_pid), message="the inner wrapper to die")
        tally.attack()
        docs = versatil("lock", "--agent", "Intruder", "--wait", "0", "docs", cwd=repo)
        if docs.code == 0:
            tally.overlaps += 1
            versatil("unlock", "--agent", "Intruder", "docs", cwd=repo)
        assert docs.code == 1, docs
        _lock_refused_then_granted(repo, last, tally)
    finally:
        last.release()
        last.kill()
        outer.communicate()


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("what", ["log-file", "log-directory"])
def test_a_symlink_planted_for_a_task_log_is_never_written_through(
    what: str, repo: Path, tmp_path: Path, versatil_home: Path, tally: Tally, wave_runs: None
) -> None:
    import shutil

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "edit.log").write_text("precious\n")
    run_id, _ = _interrupted_run(repo, tmp_path)
    logs = versatil_home / "waves" / run_id
    if what == "log-file":
        (logs / "edit.log").unlink()
        (logs / "edit.log").symlink_to(victim / "edit.log")
    else:
        shutil.rmtree(logs)
        logs.symlink_to(victim)
    tally.attack()
    result = tally.outcome(versatil_process("wave", "resume", run_id, cwd=repo))
    assert result.code in (1, 2) and "Traceback" not in result.err, result
    assert tally.lost([] if (victim / "edit.log").read_text() == "precious\n"
                      else ["the victim written through a planted symlink"]) == []
    assert sorted(p.name for p in victim.iterdir()) == ["edit.log"]


@pytest.mark.parametrize("where", _slow_but("state", ["state", "write-ahead"]))
def test_wave_state_nested_beyond_the_stack_is_damage_not_an_internal_error(
    where: str, repo: Path, tmp_path: Path, tally: Tally, wave_runs: None
) -> None:
    import struct
    import zlib

    from versatil_fs.waves.store import RunStore

    run_id, path = _interrupted_run(repo, tmp_path)
    deep = b"\x91" * 200_000 + b"\xc0"  # an array in an array ... 200,000 deep
    if where == "state":
        path.write_bytes(b"\x81\xa4junk" + deep)  # {"junk": [[[...]]]}
    else:
        payload = b"\x92\x07\x81\xa4junk" + deep  # record 7: a task {"junk": [[[...]]]}
        framed = struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
        RunStore().wal_path(run_id).write_bytes(framed)
    for args in (("wave", "status", run_id), ("wave", "status"), ("wave", "resume", run_id)):
        tally.attack()
        result = tally.outcome(versatil_process(*args, cwd=repo))
        assert result.code in (0, 1, 2) and "Traceback" not in result.err, result
        assert "internal error" not in result.err, result


def test_a_resume_never_rolls_back_what_another_agent_wrote_after_a_task_was_settled(
    repo: Path, tmp_path: Path, tally: Tally, wave_runs: None
) -> None:
    ran = tmp_path / "ran.txt"
    plan = _wave_plan(tmp_path, f'echo t >> "{ran}"; echo new >> src/x.txt; exit 3')
    first = versatil_process("wave", "run", str(plan), cwd=repo,
                             env={"VERSATIL_FAULT": "wave.after-outcome-record:1"})
    assert tally.killed(first.code), first
    assert (repo / "src/x.txt").read_text() == "x\n"  # rolled back before the kill
    # The executor is gone with its locks: another agent edits the file, as it may.
    other = versatil_process("run", "--agent", "Other", "--lock", "src/x.txt", "--",
                             "sh", "-c", "echo theirs >> src/x.txt", cwd=repo)
    assert other.code == 0, other
    again = versatil_process("wave", "resume", "--json", cwd=repo)
    assert again.code == 1, again
    (task,) = json.loads(again.out)["tasks"]
    assert task["status"] == "failed" and task["rolled_back"] == ["src/x.txt"], task
    assert len(ran.read_text().split()) == 1
    lost = [] if (repo / "src/x.txt").read_text() == "x\ntheirs\n" else ["Other's edit"]
    assert tally.lost(lost) == [], (repo / "src/x.txt").read_text()
