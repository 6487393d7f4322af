"""``versatil demo``: the whole story on a throwaway repository, in a few seconds.

Every agent in the demo is a real process taking real locks through the public API; the demo
builds its repository and its state directory in a temporary directory and removes both, so it
never touches the user's own ``~/.versatil``. Later parts add their chapters to ``CHAPTERS``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from versatil_fs.errors import Deadlock, LockConflict
from versatil_fs.locks.manager import LockManager

# An agent process: takes its locks, announces it on stdout, then waits for a line on stdin
# (or a kill) before releasing — so the demo drives the timeline, not sleeps.
AGENT = """
import sys, time
from versatil_fs.locks.manager import LockManager
agent, mode, wait, *resources = sys.argv[1:]
manager = LockManager(repo=".")
started = time.monotonic()
lease = manager.acquire(resources, agent=agent, mode=mode, wait=float(wait))
print(f"granted {time.monotonic_ns()} {time.monotonic() - started:.3f}", flush=True)
sys.stdin.readline()
lease.release()
print("released", flush=True)
"""


@dataclass
class Demo:
    """The throwaway world the chapters share."""

    repo: Path
    out: Callable[[str], None]
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def say(self, text: str = "") -> None:
        self.out(text)

    def step(self, text: str) -> None:
        self.out(f"  - {text}")

    def agent(self, name: str, *resources: str, mode: str = "write", wait: float = 30) -> Agent:
        proc = subprocess.Popen(
            [sys.executable, "-c", AGENT, name, mode, str(wait), *resources],
            cwd=self.repo, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.processes.append(proc)
        return Agent(name, proc)

    def manager(self) -> LockManager:
        return LockManager(repo=self.repo)

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=self.repo, check=True, capture_output=True, text=True
        ).stdout


@dataclass
class Agent:
    name: str
    proc: subprocess.Popen[str]

    def granted(self) -> tuple[int, float]:
        """Block until the agent holds its locks: (monotonic ns of the grant, seconds waited)."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "granted":
            raise RuntimeError(f"demo agent {self.name} failed to get its locks")
        return int(line[1]), float(line[2])

    def finish(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("done\n")
        self.proc.stdin.flush()
        self.proc.stdout.readline()
        self.proc.wait()


def chapter_handoff(demo: Demo) -> None:
    demo.say("1. Two agents, one file: the second waits and is handed it the moment it frees.")
    marcus = demo.agent("Marcus-Backend", "src/api/")
    marcus.granted()
    demo.step("Marcus-Backend locks src/api/ (a directory lock covers everything below it).")
    waiting = demo.manager()
    dana = demo.agent("Dana-Database", "src/api/users.py")
    _wait_until(lambda: any(w.agent == "Dana-Database" for w in waiting.snapshot().waiters))
    demo.step("Dana-Database asks for src/api/users.py and waits in the queue.")
    released = time.monotonic_ns()
    marcus.finish()
    granted, waited = dana.granted()
    demo.step(
        f"Marcus finishes; Dana is granted {(granted - released) / 1e6:.1f} ms after the "
        f"release (waited {waited:.2f} s, no polling)."
    )
    dana.finish()


def chapter_shared_read(demo: Demo) -> None:
    demo.say("2. Reads are shared, writes are not.")
    james = demo.agent("James-Frontend", "db:users", mode="read")
    maria = demo.agent("Maria-QA", "db:users", mode="read")
    james.granted()
    maria.granted()
    demo.step("James-Frontend and Maria-QA both read db:users at the same time.")
    try:
        demo.manager().acquire(["db:users"], agent="Dana-Database", wait=0)
    except LockConflict as exc:
        demo.step(f"Dana-Database cannot write it now: {exc}")
    james.finish()
    maria.finish()


def chapter_deadlock(demo: Demo) -> None:
    demo.say("3. A deadlock is refused at once, naming the cycle.")
    manager = demo.manager()
    mine = manager.acquire(["src/models/user.py"], agent="Dana-Database", wait=0)
    marcus = demo.agent("Marcus-Backend", "src/api/auth.py")
    marcus.granted()
    # Marcus now also wants Dana's file and queues for it...
    marcus_more = demo.agent("Marcus-Backend", "src/models/user.py")
    _wait_until(lambda: any(w.agent == "Marcus-Backend" for w in manager.snapshot().waiters))
    demo.step("Dana holds src/models/user.py; Marcus holds src/api/auth.py and waits for Dana's.")
    try:
        manager.acquire(["src/api/auth.py"], agent="Dana-Database", wait=30)
    except Deadlock as exc:
        demo.step(f"Dana asks for src/api/auth.py: refused — {exc}")
    mine.release()
    marcus_more.granted()
    marcus_more.finish()
    marcus.finish()


def chapter_reclaim(demo: Demo) -> None:
    demo.say("4. A holder that dies (kill -9) loses its locks at once; nobody waits for a TTL.")
    james = demo.agent("James-Frontend", "src/ui/")
    james.granted()
    maria = demo.agent("Maria-QA", "src/ui/login.tsx")
    manager = demo.manager()
    _wait_until(lambda: any(w.agent == "Maria-QA" for w in manager.snapshot().waiters))
    killed = time.monotonic_ns()
    james.proc.kill()
    james.proc.wait()
    granted, _ = maria.granted()
    demo.step(
        f"James-Frontend is killed with SIGKILL; Maria-QA is granted "
        f"{(granted - killed) / 1e6:.1f} ms later (the kernel dropped its lease)."
    )
    maria.finish()


def chapter_refused_commit(demo: Demo) -> None:
    demo.say("5. The pre-commit guard refuses a commit of a file another agent holds.")
    from versatil_fs import hook

    demo.step(hook.install(demo.repo))
    lease = demo.manager().acquire(["src/models/"], agent="Dana-Database", owner="shell", wait=0)
    (demo.repo / "src/models/user.py").write_text("class User:\n    name: str\n    email: str\n")
    demo.git("add", "src/models/user.py")
    env = {**os.environ, "VERSATIL_AGENT": "Marcus-Backend"}
    commit = subprocess.run(
        ["git", "commit", "-q", "-m", "add email"], cwd=demo.repo, env=env,
        capture_output=True, text=True,
    )
    refused = commit.returncode != 0
    demo.step(f"Marcus-Backend commits src/models/user.py: {'refused' if refused else 'allowed'}:")
    for line in [line for line in commit.stderr.splitlines() if line.strip()][:2]:
        demo.say(f"      {line.removeprefix('versatil: ').strip()}")
    demo.manager().unlock(["src/models/"], agent=lease.agent)
    demo.git("reset", "-q")
    demo.git("checkout", "--", "src/models/user.py")


def chapter_rollback(demo: Demo) -> None:
    demo.say("6. A checkpoint, then one agent's mess rolled back while another's edits stay.")
    from versatil_fs.checkpoints import Checkpoints, record_files_modified
    from versatil_fs.repo import Repository

    checkpoints = Checkpoints(demo.repo)
    before = checkpoints.create("before wave 2")
    demo.step(f"Checkpoint {before.id}: the whole working tree, without touching git's index.")
    repo = Repository.find(demo.repo)
    (demo.repo / "src/api/auth.py").write_text("def login(user, password):\n    return 'oops'\n")
    (demo.repo / "src/api/tokens.py").write_text("SECRET = 'half-written'\n")
    record_files_modified(repo, "Marcus-Backend", ["src/api/auth.py", "src/api/tokens.py"])
    (demo.repo / "src/ui/login.tsx").write_text("export const Login = () => 'sign in';\n")
    record_files_modified(repo, "James-Frontend", ["src/ui/login.tsx"])
    demo.step("Marcus-Backend breaks src/api/auth.py and adds src/api/tokens.py; "
              "James-Frontend edits src/ui/login.tsx.")
    result = checkpoints.restore(before.id, agent="Marcus-Backend", by="demo")
    demo.step(
        f"Restore Marcus-Backend's files only: restored {', '.join(result.restored) or '-'}; "
        f"removed {', '.join(result.removed) or '-'} (undo: restore {result.safety_checkpoint})."
    )
    kept = (demo.repo / "src/ui/login.tsx").read_text().strip()
    demo.step(f"James-Frontend's edit is still there: {kept}")


CHAPTERS: list[Callable[[Demo], None]] = [
    chapter_handoff,
    chapter_shared_read,
    chapter_deadlock,
    chapter_reclaim,
    chapter_refused_commit,
    chapter_rollback,
]


def chapters() -> list[Callable[[Demo], None]]:
    """The lock story, then the whole plan run in waves (its own module: it needs the
    executor, the monitor and the example plan)."""
    from versatil_fs import wave_demo

    return [*CHAPTERS, *wave_demo.CHAPTERS]


def run(out: Callable[[str], None] = print, keep: bool = False) -> None:
    with _throwaway(keep) as (repo, home):
        out(f"versatil demo: a throwaway repository at {repo}")
        out(f"(state in {home}; your own ~/.versatil is not touched)\n")
        demo = Demo(repo=repo, out=out)
        try:
            for chapter in chapters():
                chapter(demo)
                out("")
        finally:
            for proc in demo.processes:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        out("Every grant, wait, release and reclaim above is an event in the log:")
        if keep:
            out(f"  VERSATIL_HOME={home} versatil logs locks --tail 20")
        else:
            out("  rerun with --keep to browse it: versatil demo --keep")


@contextmanager
def _throwaway(keep: bool) -> Iterator[tuple[Path, Path]]:
    saved = os.environ.get("VERSATIL_HOME")
    tmp = Path(tempfile.mkdtemp(prefix="versatil-demo-"))
    repo, home = tmp / "repo", tmp / "home"
    os.environ["VERSATIL_HOME"] = str(home)
    try:
        _make_repo(repo)
        yield repo, home
    finally:
        if saved is None:
            os.environ.pop("VERSATIL_HOME", None)
        else:
            os.environ["VERSATIL_HOME"] = saved
        if not keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def _make_repo(repo: Path) -> None:
    files = {
        "src/api/users.py": "def list_users():\n    return []\n",
        "src/api/auth.py": "def login(user, password):\n    raise NotImplementedError\n",
        "src/models/user.py": "class User:\n    name: str\n",
        "src/ui/login.tsx": "export const Login = () => null;\n",
        "README.md": "# auth feature (versatil demo)\n",
    }
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "versatil demo", "GIT_AUTHOR_EMAIL": "demo@versatil.invalid",
        "GIT_COMMITTER_NAME": "versatil demo", "GIT_COMMITTER_EMAIL": "demo@versatil.invalid",
    }
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "the auth feature"]):
        subprocess.run(["git", *args], cwd=repo, check=True, env=env, capture_output=True)


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition until it holds (the demo's agents are other processes)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("the demo timed out waiting for its agents")
        time.sleep(0.01)
