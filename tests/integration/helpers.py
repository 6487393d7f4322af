"""Shared helpers for tests that use real git repositories and real processes.

Everything here synchronises on *conditions* (a file appears, a line arrives, a predicate turns
true) with a deadline; nothing sleeps a fixed time and hopes. Every process started through
:class:`Spawner` is killed (with its whole process group) when the test ends, whatever happens.

Import it as ``from integration.helpers import ...`` (tests/conftest.py puts ``tests/`` on
``sys.path``); the fixtures ``git_repo`` and ``spawn`` in tests/conftest.py wrap the pieces most
tests need. Only the standard library is imported at module level, so a child process can import
this module cheaply (see :func:`lock_agent`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import pytest

TESTS_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = TESTS_DIR.parent
T = TypeVar("T")

# Generous bound for "this should happen now": it only fails a broken test, never a slow machine.
DEFAULT_TIMEOUT = 20.0


# Waiting on conditions ----------------------------------------------------------------------
def wait_for(
    predicate: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.005,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; return it, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout} s waiting for {text}")
        time.sleep(interval)  # a poll interval with a deadline, not a synchronisation sleep


def wait_for_file(path: str | os.PathLike[str], timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Wait until ``path`` exists; returns it."""
    target = Path(path)
    wait_for(target.exists, timeout, message=f"{target} to exist")
    return target


# git ----------------------------------------------------------------------------------------
def git(cwd: str | os.PathLike[str], *args: str, check: bool = True, strip: bool = True) -> str:
    """Run git in ``cwd`` and return its stdout (stripped unless ``strip=False``)."""
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result.stdout.strip() if strip else result.stdout


def git_output(cwd: str | os.PathLike[str], *args: str) -> str:
    """Run git in ``cwd``, which must succeed; its stdout exactly as printed (newline kept)."""
    return git(cwd, *args, strip=False)


def write_file(root: Path, rel: str, text: str) -> Path:
    """Write ``text`` to ``root / rel``, creating parent directories; returns the file's path."""
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def make_git_repo(path: Path, files: Mapping[str, str] | None = None) -> Path:
    """A real repository at ``path`` with one commit holding ``files`` (default: a README).

    Returns the resolved path (so comparisons with resolved paths hold on any tmp layout).
    """
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    commit_files(path, files or {"README.md": "hello\n"}, message="initial")
    return path.resolve()


def commit_files(repo: Path, files: Mapping[str, str], message: str = "files") -> Path:
    """Write ``files`` (path -> text) into ``repo`` and commit everything; returns ``repo``."""
    for name, text in files.items():
        write_file(repo, name, text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return repo


# Environment --------------------------------------------------------------------------------
@contextlib.contextmanager
def environment(env: Mapping[str, str | None] | None) -> Iterator[None]:
    """Set (or, for ``None``, remove) these variables in ``os.environ``; restore them after."""
    saved = {key: os.environ.get(key) for key in (env or {})}
    try:
        for key, value in (env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def tmp_versatil_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Drop every ``VERSATIL_*`` variable; VERSATIL_HOME is a fresh ``tmp_path / "home"``."""
    for name in list(os.environ):
        if name.startswith("VERSATIL_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("VERSATIL_HOME", str(home))
    return home


# Processes ----------------------------------------------------------------------------------
class Child:
    """A started process: its Popen, plus line-oriented stdout reading with deadlines."""

    def __init__(self, popen: subprocess.Popen[str], name: str) -> None:
        self.popen = popen
        self.name = name
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._threads: list[threading.Thread] = []
        if popen.stdout is not None:
            self._threads.append(_pump(popen.stdout, self._lines.put, eof=True))
        if popen.stderr is not None:
            self._threads.append(_pump(popen.stderr, self._stderr.append, eof=False))

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def stderr(self) -> str:
        return "".join(line for line in self._stderr if line)

    def send(self, line: str | Mapping[str, Any]) -> None:
        """Write one line (a dict is sent as JSON) to the child's stdin."""
        assert self.popen.stdin is not None, f"{self.name} was started without stdin"
        text = line if isinstance(line, str) else json.dumps(line)
        self.popen.stdin.write(text.rstrip("\n") + "\n")
        self.popen.stdin.flush()

    def read_line(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """The next line of stdout (without its newline); fails on EOF or at the deadline."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"{self.name} (pid {self.pid}) printed nothing within {timeout} s; "
                f"stderr so far:\n{self.stderr}"
            ) from None
        if line is None:
            self._lines.put(None)  # keep reporting EOF
            self.popen.wait(timeout=timeout)
            raise AssertionError(
                f"{self.name} (pid {self.pid}) exited ({self.popen.returncode}) without output; "
                f"stderr:\n{self.stderr}"
            )
        return line.rstrip("\n")

    def read_json(self, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """The next stdout line, parsed as JSON (non-JSON lines are a test failure)."""
        line = self.read_line(timeout)
        try:
            return json.loads(line)
        except ValueError:
            raise AssertionError(f"{self.name} printed a non-JSON line: {line!r}") from None

    def has_output(self) -> bool:
        return not self._lines.empty()

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Wait for the child to exit (failing at the deadline); returns its exit code."""
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} (pid {self.pid}) still running after {timeout} s"
            ) from None
        for thread in self._threads:
            thread.join(timeout)
        return code

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the child's whole process group (it runs in its own session)."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def kill9(self) -> float:
        """SIGKILL the child, reap it, and return the time of the kill (``time.time()``)."""
        killed_at = time.time()
        self.kill(signal.SIGKILL)
        self.popen.wait(timeout=DEFAULT_TIMEOUT)
        return killed_at

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None


def _pump(stream: Any, sink: Callable[[Any], None], *, eof: bool) -> threading.Thread:
    """Copy lines from a child's pipe into ``sink`` in a thread (None marks EOF if ``eof``)."""

    def run() -> None:
        try:
            for line in stream:
                sink(line)
        except (OSError, ValueError):
            pass  # the pipe was closed under us at teardown
        if eof:
            sink(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


class Spawner:
    """Starts processes for one test and kills every one of them at :meth:`close`."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.children: list[Child] = []
        self._env = dict(env) if env is not None else None

    def env(self, extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """The environment a child gets: the test's (VERSATIL_HOME included) plus ``extra``.

        ``tests/`` is put on PYTHONPATH so children can ``import integration.helpers``.
        A value of None in ``extra`` removes that variable.
        """
        env = dict(self._env if self._env is not None else os.environ)
        if "VERSATIL_HOME" not in env:
            raise AssertionError("VERSATIL_HOME must be set for a child process")
        paths = [str(TESTS_DIR), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        env["PYTHONUNBUFFERED"] = "1"
        for key, value in (extra or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def popen(
        self,
        argv: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str | None] | None = None,
        stdin: bool = True,
        name: str | None = None,
    ) -> Child:
        """Start ``argv`` in its own session with piped stdin/stdout/stderr (text mode)."""
        popen = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=self.env(env),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,  # so kill() reaches grandchildren too
        )
        child = Child(popen, name or os.path.basename(argv[0]))
        self.children.append(child)
        return child

    def python(
        self,
        code: str,
        *args: str,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str | None] | None = None,
        stdin: bool = True,
        name: str | None = None,
    ) -> Child:
        """Start ``python -c code args...`` (``code`` is dedented)."""
        return self.popen(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            cwd=cwd, env=env, stdin=stdin, name=name or "python",
        )

    __call__ = python

    def close(self) -> None:
        for child in self.children:
            child.kill(signal.SIGKILL)
        for child in self.children:
            try:
                child.popen.wait(timeout=DEFAULT_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
            for stream in (child.popen.stdin, child.popen.stdout, child.popen.stderr):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass


# The versatil command line ------------------------------------------------------------------
CLI_PRELUDE = "from versatil_fs.cli import main; main()"


def versatil_argv(*args: str) -> list[str]:
    """argv running the ``versatil`` CLI with this interpreter (no reliance on PATH)."""
    return [sys.executable, "-c", CLI_PRELUDE, *args]


def run_versatil(
    *args: str,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str | None] | None = None,
    timeout: float = 60.0,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``versatil ARGS...`` to completion and return the result (never raises on exit code)."""
    full_env = dict(os.environ)
    assert "VERSATIL_HOME" in full_env, "VERSATIL_HOME must be set"
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    return subprocess.run(
        versatil_argv(*args), cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=timeout, input=input, check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with ``code`` and said why in exactly one stderr line, no traceback."""
    assert result.returncode == code, (
        f"expected exit {code}, got {result.returncode}\nstdout: {result.stdout}\n"
        f"stderr: {result.stderr}"
    )
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    return lines[0]


# A scriptable lock holder in another process -------------------------------------------------
def lock_agent(
    spawner: Spawner,
    cwd: str | os.PathLike[str],
    *,
    env: Mapping[str, str | None] | None = None,
    name: str = "lock-agent",
) -> LockAgent:
    """Start a child that takes and releases locks on command (see :func:`lock_agent_main`)."""
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); "
        "from integration.helpers import lock_agent_main; lock_agent_main()"
    )
    child = spawner.python(code, cwd=cwd, env=env, name=name)
    agent = LockAgent(child)
    ready = child.read_json()
    assert ready == {"ready": child.pid}, ready
    return agent


class LockAgent:
    """The test's side of a :func:`lock_agent_main` child."""

    def __init__(self, child: Child) -> None:
        self.child = child

    @property
    def pid(self) -> int:
        return self.child.pid

    def request(self, resources: Iterable[str], **options: Any) -> None:
        """Send an acquire request and return at once; read the outcome with :meth:`reply`.

        Options: agent, mode, reads, wait, ttl, priority, owner, and ``record`` (a file to
        append ``agent\\n`` to as soon as the lock is granted) with ``release_after`` (release
        right after recording).
        """
        self.child.send({"op": "acquire", "resources": list(resources), **options})

    def reply(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        try:
            message = self.child.read_json(timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.stacks()}") from None
        assert isinstance(message, dict), message
        return message

    def stacks(self) -> str:
        """The child's thread stacks (via faulthandler), to explain a child that is stuck."""
        if not self.child.alive:
            return "(the child has exited)"
        before = len(self.child.stderr)
        os.kill(self.child.pid, signal.SIGUSR1)
        try:
            wait_for(lambda: "File" in self.child.stderr[before:], timeout=5)
        except AssertionError:
            return "(no stacks from the child)"
        time.sleep(0.2)  # let the rest of the dump arrive; diagnostics only, not synchronisation
        return "child stacks:\n" + self.child.stderr[before:]

    def acquire(self, resources: Iterable[str], **options: Any) -> dict[str, Any]:
        """Request and wait for the outcome; fails the test unless granted."""
        self.request(resources, **options)
        outcome = self.reply()
        assert outcome.get("ok"), outcome
        return outcome

    def release(self, lease: str | None = None) -> dict[str, Any]:
        """Release one lease (default: the latest); waits for the confirmation."""
        self.child.send({"op": "release", "lease": lease})
        outcome = self.reply()
        assert outcome.get("ok"), outcome
        return outcome

    def kill9(self) -> float:
        return self.child.kill9()

    def exit(self) -> int:
        self.child.send({"op": "exit"})
        return self.child.wait()


def lock_agent_main() -> None:  # pragma: no cover - runs in a child process
    """Child side: read JSON commands on stdin, answer one JSON line per command on stdout.

    ``{"op": "acquire", "resources": [...], ...}`` answers ``{"ok": true, "lease": ID,
    "granted_at": time.time()}`` or ``{"ok": false, "error": "LockConflict", "message": ...}``;
    ``{"op": "release", "lease": ID}`` and ``{"op": "exit"}`` likewise.
    """
    import faulthandler
    import signal

    from versatil_fs import LockManager, VersatilError

    faulthandler.register(signal.SIGUSR1)  # LockAgent.reply() asks for stacks when stuck
    manager = LockManager(repo=".")
    leases: dict[str, Any] = {}
    order: list[str] = []

    def say(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    say({"ready": os.getpid()})
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        try:
            if op == "acquire":
                record = command.pop("record", None)
                release_after = command.pop("release_after", False)
                resources = command.pop("resources")
                lease = manager.acquire(resources, **command)
                granted_at = time.time()
                if record:
                    with open(record, "a") as handle:
                        handle.write(lease.agent + "\n")
                if release_after:
                    lease.release()
                else:
                    leases[lease.id] = lease
                    order.append(lease.id)
                say({"ok": True, "lease": lease.id, "granted_at": granted_at,
                     "agent": lease.agent})
            elif op == "release":
                lease_id = command.get("lease") or order[-1]
                leases.pop(lease_id).release()
                order.remove(lease_id)
                say({"ok": True, "released_at": time.time()})
            elif op == "exit":
                say({"ok": True})
                break
            else:
                say({"ok": False, "error": "BadCommand", "message": op})
        except VersatilError as exc:
            say({"ok": False, "error": type(exc).__name__, "message": str(exc)})


class StartLine:
    """Lets child processes start together, woken by the kernel rather than by polling.

    The test holds ``LOCK_EX`` on the file; each child blocks in ``flock(LOCK_SH)`` on it
    (:data:`WAIT_AT_START_LINE`); :meth:`go` lets them all through at once.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def go(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# For a child's code: blocks until the test's StartLine.go(); `path` is the start line's file.
WAIT_AT_START_LINE = """
def wait_at_start_line(path):
    import fcntl, os
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)
"""
