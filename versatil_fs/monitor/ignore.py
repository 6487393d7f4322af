"""Which paths git ignores, asked of git itself, plus the extra patterns of ``guard.ignore``.

One long-lived ``git check-ignore --stdin`` answers for new paths (the monitor asks about every
path an event names); ``git ls-files --exclude-standard`` lists the tree for scans. ``guard.ignore``
is handed to git as its ``core.excludesFile`` (merged with the user's own global excludes), so git
applies it exactly as it applies a global excludes file: it never hides a tracked file, and a
``.gitignore``'s ``!`` lines win over it.
"""

from __future__ import annotations

import hashlib
import os
import selectors
import subprocess
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from versatil_fs import git
from versatil_fs.errors import GitFailed, MonitorError  # MonitorError moved to errors.py
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir, read_regular

__all__ = ["IgnoreMatcher", "MonitorError"]


class IgnoreMatcher:
    """Which repo-relative paths git ignores, answered by one long-lived ``git check-ignore``.

    A directory is asked about with a trailing ``/`` (so ``build/`` patterns match it even
    after it is gone). Answers are cached until :meth:`reset` (a ``.gitignore`` changed: the
    running git has its exclude lists loaded and would not see the edit). Tracked files are
    never ignored, as git says. Thread-safe.

    ``extra`` holds gitignore-style patterns (``guard.ignore``); git reads them as its
    ``core.excludesFile``, merged with the user's own global excludes so those still apply.
    Like any excludes file they rank below ``.gitignore`` files, whose ``!`` lines win.
    """

    def __init__(
        self, repo: Repository, extra: Sequence[str] = (), *, state: StateDir | None = None
    ) -> None:
        self.repo = repo
        self._extra = list(extra)
        self._state = state or StateDir()
        self._cache: dict[str, bool] = {}
        self._lock = threading.Lock()
        # Apart from _lock (held across a check-ignore conversation): list_files runs from
        # several threads at once (the wave executor's tasks) and must not wait on it.
        self._listing = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._options: list[str] | None = None
        self.nested: set[str] = set()
        """Nested repositories (and untracked clones) below the root, as of the last listing."""

    def ignored(self, paths: Iterable[str]) -> set[str]:
        """The subset of ``paths`` that git ignores (as given, ``dir/`` for directories)."""
        wanted = list(dict.fromkeys(paths))
        with self._lock:
            unknown = [p for p in wanted if p not in self._cache]
            if unknown:
                self._ask(unknown)
            return {p for p in wanted if self._cache.get(p)}

    def is_ignored(self, path: str) -> bool:
        return bool(self.ignored([path]))

    def list_files(self, guards: Sequence[str]) -> list[str]:
        """What git counts as the working tree below ``guards``: tracked files and untracked,
        non-ignored ones (repo-relative); updates :attr:`nested`."""
        argv = [
            *self._git_options(), "--literal-pathspecs", "ls-files", "-z", "--cached",
            "--others", "--exclude-standard",
        ]
        if list(guards) != ["."]:
            argv += ["--", *guards]
        try:
            result = git.run(argv, cwd=self.repo.toplevel, check=False)
        except GitFailed as exc:  # git could not start: its sentence says why
            raise MonitorError(str(exc)) from exc
        if result.returncode != 0:
            reason = result.stderr.decode(errors="replace").strip().splitlines()
            raise MonitorError(
                f"git could not list the files of {self.repo.toplevel}: "
                f"{reason[-1] if reason else 'exit ' + str(result.returncode)}."
            )
        files: list[str] = []
        nested: set[str] = set()
        for raw in dict.fromkeys(result.stdout.split(b"\0")):  # unmerged paths come thrice
            if not raw:
                continue
            rel = os.fsdecode(raw)
            if rel.endswith("/"):
                nested.add(rel.rstrip("/"))  # `--others` shows a nested repository so
            else:
                files.append(rel)
        with self._listing:
            if list(guards) == ["."]:
                self.nested = nested
            else:
                self.nested = self.nested | nested
        return files

    def reset(self) -> None:
        """Forget every answer and restart git: an ignore file changed."""
        with self._lock:
            self._cache.clear()
            self._stop()

    def close(self) -> None:
        with self._lock:
            self._stop()

    def __enter__(self) -> IgnoreMatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Internals ---------------------------------------------------------------------------
    def _git_options(self) -> list[str]:
        with self._listing:  # one excludes file written, whichever thread asks first
            if self._options is None:
                self._options = (
                    ["-c", f"core.excludesFile={self._excludes_file()}"] if self._extra else []
                )
            return self._options

    def _start(self) -> subprocess.Popen[bytes]:
        argv = [
            *self._git_options(), "check-ignore", "--stdin", "-z", "-v", "-n", "--non-matching",
        ]
        try:
            # check-ignore flushes after each answer only when told to, or when stdout is a tty.
            return git.spawn(
                argv, cwd=self.repo.toplevel, env={"GIT_FLUSH": "1"}, stderr=subprocess.DEVNULL
            )
        except GitFailed as exc:  # git could not start: its sentence says why
            raise MonitorError(str(exc)) from exc

    def _excludes_file(self) -> Path:
        """A file holding the user's global excludes followed by ``guard.ignore``."""
        own = b""
        configured = _git_output(self.repo, "config", "--path", "--get", "core.excludesFile")
        candidates = [configured] if configured else []
        xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        candidates.append(str(Path(xdg) / "git" / "ignore"))
        for candidate in candidates:
            found = read_regular(Path(candidate).expanduser(), follow_symlinks=True)
            if found is not None:
                own = found
                break
        text = own + b"\n# guard.ignore from the versatil configuration\n"
        text += "".join(f"{p}\n" for p in self._extra).encode()
        digest = hashlib.sha256(self.repo.key.encode()).hexdigest()[:16]
        path = self._state.subdir("run", "monitors") / f"{digest}.excludes"
        self._state.write_atomic(path, text)
        return path

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _ask(self, paths: list[str]) -> None:
        for attempt in range(2):
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            try:
                answers = _converse(self._proc, paths)
            except (OSError, ValueError):
                # git died (a path beyond a symlink makes check-ignore exit): start afresh once,
                # then count what is left as not ignored, so a write is reported rather than lost.
                self._stop()
                if attempt == 0:
                    continue
                answers = {}
            for path in paths:
                self._cache[path] = answers.get(path, False)
            return


def _converse(proc: subprocess.Popen[bytes], paths: list[str]) -> dict[str, bool]:
    """Send every path and read every answer, interleaved so neither pipe can fill up."""
    assert proc.stdin is not None and proc.stdout is not None
    out_fd, in_fd = proc.stdin.fileno(), proc.stdout.fileno()
    payload = memoryview(b"".join(os.fsencode(p) + b"\0" for p in paths))
    answers: dict[str, bool] = {}
    fields: list[bytes] = []
    pending = b""
    sel = selectors.DefaultSelector()
    os.set_blocking(out_fd, False)
    try:
        if payload:
            sel.register(out_fd, selectors.EVENT_WRITE)
        sel.register(in_fd, selectors.EVENT_READ)
        while len(answers) < len(paths):
            for key, _ in sel.select(timeout=30):
                if key.fd == out_fd:
                    try:
                        sent = os.write(out_fd, payload[:65536])
                    except BlockingIOError:
                        continue
                    payload = payload[sent:]
                    if not payload:
                        sel.unregister(out_fd)
                    continue
                chunk = os.read(in_fd, 65536)
                if not chunk:
                    raise ValueError("git check-ignore exited")
                parts = (pending + chunk).split(b"\0")
                pending = parts.pop()
                fields.extend(parts)
                # Each answer is four fields: source, line number, pattern, path. A path that
                # matched a `!pattern` is *not* ignored.
                while len(fields) >= 4:
                    source, _line, pattern, path = fields[:4]
                    del fields[:4]
                    answers[os.fsdecode(path)] = bool(source) and not pattern.startswith(b"!")
            else:
                if not sel.get_map():
                    break
    finally:
        sel.close()
        os.set_blocking(out_fd, True)
    return answers


def _git_output(repo: Repository, *args: str) -> str | None:
    try:
        result = git.run(args, cwd=repo.toplevel, check=False)
    except GitFailed:
        return None
    text = result.stdout.decode(errors="surrogateescape").strip()
    return text if result.returncode == 0 and text else None
