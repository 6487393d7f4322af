"""The demo's stage: the throwaway repository and state directory, the world the chapters share
(:class:`Demo`) and its agents, real processes taking real locks through the public API
(:class:`Agent`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from versatil_fs import git
from versatil_fs.locks.manager import LockManager

__all__ = ["AGENT", "Agent", "Demo", "make_repo", "throwaway", "wait_until"]

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
        return git.output(list(args), cwd=self.repo).decode()


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


@contextmanager
def throwaway(keep: bool) -> Iterator[tuple[Path, Path]]:
    saved = os.environ.get("VERSATIL_HOME")
    tmp = Path(tempfile.mkdtemp(prefix="versatil-demo-"))
    repo, home = tmp / "repo", tmp / "home"
    os.environ["VERSATIL_HOME"] = str(home)
    try:
        make_repo(repo)
        yield repo, home
    finally:
        if saved is None:
            os.environ.pop("VERSATIL_HOME", None)
        else:
            os.environ["VERSATIL_HOME"] = saved
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def make_repo(repo: Path) -> None:
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
        "GIT_AUTHOR_NAME": "versatil demo", "GIT_AUTHOR_EMAIL": "demo@versatil.invalid",
        "GIT_COMMITTER_NAME": "versatil demo", "GIT_COMMITTER_EMAIL": "demo@versatil.invalid",
    }
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "the auth feature"]):
        git.run(args, cwd=repo, env=env)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition until it holds (the demo's agents are other processes)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("the demo timed out waiting for its agents")
        time.sleep(0.01)
