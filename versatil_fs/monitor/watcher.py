"""The monitor: one watchdog observer per working tree, reporting every unlocked write.

A *write* is a create, modify, delete or move of a guarded (``guard.paths``), non-ignored file.
A write that a live ``write`` lock covers is attributed to that lock's agent (a *locked write*,
logged as ``files-modified`` so ``checkpoint restore --agent`` can use it); any other is an
*unlocked write*: a ``collision-detection`` event, a line on the monitor's output and a count
in ``versatil locks`` (:func:`unlocked_write_count`).

How it stays complete and reports each write once:

* **One observer per repository** (per working tree: linked worktrees share locks, not files).
  Every candidate (``versatil monitor``, each ``versatil run``) takes part in an election: a
  non-blocking ``flock`` on ``run/monitors/<tree>.lock`` in the state directory. The winner
  observes and logs; the others wait in a blocking ``flock`` and take over the moment it
  exits, however it exits (the kernel drops the lock). A foreground monitor that lost the
  election prints what the winner logs, so its output is the same.
* **A snapshot of every reported file** (mode, size, mtime, inode), listed by ``git ls-files``.
  Each event is checked against it, and a file being written is reported when its writer
  closes it: create-then-write, or ``IN_MODIFY`` then ``IN_CLOSE_WRITE``, is one report, and
  whether a write is a creation or a modification comes from what the file was, not from
  which inotify flags arrived.
* **Rescans.** watchdog 7.1 keeps ``IN_Q_OVERFLOW`` to itself: it re-adds its watches and
  queues nothing, so a burst past the kernel queue (16,384 events) loses writes silently. We
  hook the watch group's overflow callback and rescan against the snapshot, reporting what
  changed and saying that a rescan happened. A watch that cannot be added (the
  ``max_user_watches`` limit) switches the monitor to a rescan every second as well.
* **Editor saves.** An atomic save (write a temporary file, rename it over the target) arrives
  as a move whose ``dest_path`` is the target; it is reported once, as a write to the target.
  A new file with a temporary-looking name is held back briefly so that the temporary file of a
  slower save (one that fsyncs) is not reported on its own.
* **What is never reported**: anything under a ``.git`` directory, files git ignores — asked
  of git itself (``git check-ignore --stdin`` in one long-lived process for new paths, ``git
  ls-files --exclude-standard`` for scans), plus the extra patterns of ``guard.ignore``, which
  git reads like a global excludes file (so, like ``.gitignore``, they never hide a tracked
  file) — and the contents of nested repositories and submodules. Ignored directories are not
  even watched.

What it does not guarantee: a write is attributed to whoever holds the covering lock, not to the
process that wrote it (inotify does not say who wrote). Between one elected monitor's exit and
its successor's watches being in place (milliseconds), writes can go unseen: the successor has no
snapshot of what the tree looked like before. And a file rewritten with the same size within one
timestamp tick of the previous report looks unchanged (kernels without multigrain timestamps
keep mtime to the jiffy): the two writes are reported as one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import selectors
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from versatil_fs import events
from versatil_fs.errors import NotRegularFile, VersatilError
from versatil_fs.locks import leases
from versatil_fs.locks.table import Grant, Table, path_contains
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir, overwrite

if TYPE_CHECKING:
    from versatil_fs.config import Config

__all__ = [
    "Election",
    "IgnoreMatcher",
    "LockView",
    "Monitor",
    "MonitorError",
    "Write",
    "diff_snapshots",
    "follow",
    "scan",
    "unlocked_write_count",
    "watch",
]

EventName = Literal["created", "modified", "deleted", "moved"]
WriteKind = Literal["unlocked-write", "locked-write"]
STREAM = "collision-detection"

# Wait this long after the first event of a batch for the rest of it: an editor's
# write-temp-then-rename takes microseconds, and seeing both in one batch is what lets the
# temporary file go unreported. A tenth of the 10 ms p99 detection budget.
SETTLE_SECONDS = 0.001
# A new file whose name looks temporary is reported only if it still exists this much later.
TEMPORARY_GRACE_SECONDS = 0.1
# A file being written is reported when its writer closes it (IN_CLOSE_WRITE), so that
# create-then-write is one report, not two; one that stays open (a log being appended, a chmod,
# an mmap) is reported this long after its first event instead.
OPEN_GRACE_SECONDS = 0.05
# After the watch limit is hit, directories without a watch are caught by rescans this often.
LIMIT_RESCAN_SECONDS = 1.0
# Largest batch handled at once; the rest waits for the next turn of the loop.
MAX_BATCH = 20_000

# Name shapes that editors and tools use for the temporary half of an atomic save: vim's swap
# and its `4913` probe, emacs lock and auto-save files, JetBrains' safe write, `*.tmp`, `*~`.
_TEMP_SUFFIXES = (".tmp", ".temp", ".swp", ".swx", ".swo", "~", "___jb_tmp___", "___jb_old___")


class MonitorError(VersatilError):
    """The monitor cannot watch (no git, no inotify, an unreadable repository)."""


class Write(msgspec.Struct, kw_only=True, omit_defaults=True, rename={"source": "from"}):
    """One reported write: a line of ``versatil monitor --json``.

    ``agent`` is the holder of the covering write lock (null for an unlocked write); ``from``
    is the old path of a move; ``rescan`` marks a write found by a rescan after an event
    overflow rather than by its own event.
    """

    kind: WriteKind
    path: str
    event: EventName
    agent: str | None
    time: float
    source: str | None = None
    rescan: bool = False

    def line(self) -> str:
        """The human form: ``12:00:01 unlocked-write modified src/a.py``.

        A name that is not UTF-8 is shown escaped (``\\xff.txt``), as in :func:`encode_write`.
        """
        clock = time.strftime("%H:%M:%S", time.localtime(self.time))
        who = f" {self.agent}" if self.agent else ""
        moved = f" (from {events.printable(self.source)})" if self.source else ""
        rescan = " [rescan]" if self.rescan else ""
        path = events.printable(self.path)
        return f"{clock} {self.kind}{who} {self.event} {path}{moved}{rescan}"


_write_encoder = msgspec.json.Encoder()


def encode_write(write: Write) -> bytes:
    """One JSON line. ``path`` holds what ``os.fsdecode`` gives (surrogate escapes for bytes
    that are not UTF-8), which JSON cannot carry: such a name goes out in its printable form,
    the same one the collision-detection log records."""
    try:
        return _write_encoder.encode(write)
    except UnicodeEncodeError:
        return _write_encoder.encode(events.printable(write))


# Counting ---------------------------------------------------------------------------------------
def unlocked_write_count(
    repo: Repository | str | os.PathLike[str],
    *,
    since: float | None = None,
    state: StateDir | None = None,
) -> int:
    """How many unlocked writes the monitor has recorded for ``repo`` (optionally since a time).

    Reads the ``collision-detection`` log; only lines that mention an unlocked write are decoded,
    so a log full of other events costs a substring search per line.
    """
    repository = repo if isinstance(repo, Repository) else Repository.find(repo)
    state = state or StateDir()
    data = state.read_bytes(state.event_log(STREAM)) or b""
    key = repository.key
    count = 0
    decoder = msgspec.json.Decoder(events.Event)
    for raw in data.splitlines():
        if b'"unlocked-write"' not in raw:
            continue
        try:
            event = decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # a torn last line after a full disk
        if event.kind != "unlocked-write" or event.repo != key:
            continue
        if since is not None and event.time < since:
            continue
        count += 1
    return count


# Asking git what it ignores ---------------------------------------------------------------------
_GIT_LOCATION_VARIABLES = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_PREFIX", "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
)


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
            "git", *self._git_options(), "--literal-pathspecs", "ls-files", "-z", "--cached",
            "--others", "--exclude-standard",
        ]
        if list(guards) != ["."]:
            argv += ["--", *guards]
        try:
            result = subprocess.run(
                argv, cwd=self.repo.toplevel, env=_git_env(), capture_output=True, check=False
            )
        except OSError as exc:
            raise MonitorError(f"Cannot run git to list the files ({exc.strerror}).") from exc
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
        if list(guards) == ["."]:
            self.nested = nested
        else:
            self.nested |= nested
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
        if self._options is None:
            self._options = (
                ["-c", f"core.excludesFile={self._excludes_file()}"] if self._extra else []
            )
        return self._options

    def _start(self) -> subprocess.Popen[bytes]:
        env = _git_env()
        # check-ignore flushes after each answer only when told to, or when stdout is a tty.
        env["GIT_FLUSH"] = "1"
        argv = [
            "git", *self._git_options(), "check-ignore", "--stdin", "-z", "-v", "-n",
            "--non-matching",
        ]
        try:
            return subprocess.Popen(
                argv, cwd=self.repo.toplevel, env=env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            raise MonitorError(
                f"Cannot run git to read the ignore rules ({exc.strerror}); is git installed?"
            ) from exc

    def _excludes_file(self) -> Path:
        """A file holding the user's global excludes followed by ``guard.ignore``."""
        own = b""
        configured = _git_output(self.repo, "config", "--path", "--get", "core.excludesFile")
        candidates = [configured] if configured else []
        xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        candidates.append(str(Path(xdg) / "git" / "ignore"))
        for candidate in candidates:
            found = _read_regular(Path(candidate).expanduser())
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


def _read_regular(path: Path) -> bytes | None:
    """The bytes of the regular file ``path``, or None (absent, unreadable, or a FIFO or device,
    which ``O_NONBLOCK`` and the ``S_ISREG`` check keep from hanging the monitor's start)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


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


def _git_env() -> dict[str, str]:
    # A git hook or a wrapper may export variables that point git at another repository.
    return {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_VARIABLES}


def _git_output(repo: Repository, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=repo.toplevel, env=_git_env(), capture_output=True,
            check=False,
        )
    except OSError:
        return None
    text = result.stdout.decode(errors="surrogateescape").strip()
    return text if result.returncode == 0 and text else None


# Snapshots --------------------------------------------------------------------------------------
Signature = tuple[int, int, int, int]  # mode, size, mtime_ns, inode
Snapshot = dict[str, Signature]


def signature(info: os.stat_result) -> Signature:
    return (info.st_mode, info.st_size, info.st_mtime_ns, info.st_ino)


def normalize_guards(paths: Iterable[str]) -> list[str]:
    """Repo-relative guard paths without ``./`` or trailing ``/``; nested ones dropped."""
    cleaned: list[str] = []
    for raw in paths:
        path = raw.strip()
        while path.startswith("./"):
            path = path[2:]
        path = path.rstrip("/") or "."
        cleaned.append(path)
    if "." in cleaned:
        return ["."]
    unique = sorted(set(cleaned))
    return [p for p in unique if not any(p.startswith(o + "/") for o in unique if o != p)]


def under(path: str, guards: Sequence[str]) -> bool:
    """Whether the repo-relative ``path`` is one of ``guards`` or below one."""
    return any(g == "." or path == g or path.startswith(g + "/") for g in guards)


def _in_git_dir(rel: str) -> bool:
    return rel == ".git" or rel.startswith(".git/") or "/.git/" in rel or rel.endswith("/.git")


def scan(root: Path, guards: Sequence[str], matcher: IgnoreMatcher) -> Snapshot:
    """Every guarded, non-ignored file (and symlink) below ``root``, with its signature.

    The list comes from git (``ls-files --cached --others --exclude-standard``), which walks
    the tree in C and skips ignored directories, five times faster than asking about each
    path here; this process only stats what git lists. Nested repositories and
    submodules are not part of the tree (git stores them as one commit id): they are left out,
    and :attr:`IgnoreMatcher.nested` remembers where they are.
    """
    result: Snapshot = {}
    base = str(root)
    for rel in matcher.list_files(guards):
        try:
            info = os.lstat(f"{base}/{rel}")
        except (FileNotFoundError, NotADirectoryError):
            continue  # tracked but deleted, or gone since git listed it
        except OSError:
            continue  # a name too long to look up, a directory we may not enter: not seen
        if not stat.S_ISDIR(info.st_mode):  # a submodule is listed as its directory
            result[rel] = signature(info)
    return result


def diff_snapshots(old: Snapshot, new: Snapshot) -> list[tuple[str, EventName]]:
    """What changed from ``old`` to ``new``: ``(path, created | modified | deleted)``."""
    changes: list[tuple[str, EventName]] = []
    for path, sig in new.items():
        before = old.get(path)
        if before is None:
            changes.append((path, "created"))
        elif before != sig:
            changes.append((path, "modified"))
    changes.extend((path, "deleted") for path in old.keys() - new.keys())
    changes.sort()
    return changes


# Attribution ------------------------------------------------------------------------------------
class LockView:
    """The live write locks of one repository, read from the lock table without locking it.

    The table is replaced atomically (rename), so a plain read sees a whole document; it is
    re-read only when its inode, size or mtime changed, which costs one ``stat`` per lookup.
    A lock whose process has died but which is still listed is not counted: liveness is the
    holder's flock, probed for the one lock that covers the path.
    """

    def __init__(self, state: StateDir, repo_key: str) -> None:
        self.state = state
        self.repo_key = repo_key
        self._stamp: tuple[int, int, int] | None = None
        self._grants: list[Grant] = []
        self._decoder = msgspec.json.Decoder(Table)

    def holder(self, path: str, *, refresh: bool = True) -> Grant | None:
        """The live write lock covering the repo-relative ``path``, if any.

        ``refresh=False`` skips the check for a newer table: for the second and later paths of
        one batch of events, all of which happened before the batch's first look.
        """
        if refresh:
            self.refresh()
        now = time.time()
        for grant in self._grants:
            for claim in grant.claims:
                if claim.mode == "write" and claim.resource.covers(self.repo_key, path):
                    if _alive(grant, now):
                        return grant
                    break
        return None

    def refresh(self) -> None:
        """Re-read the table if it changed since the last look."""
        try:
            info = os.stat(self.state.lock_table)
        except FileNotFoundError:
            self._stamp, self._grants = None, []
            return
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        if stamp == self._stamp:
            return
        try:
            raw = self.state.read_bytes(self.state.lock_table)
            table = self._decoder.decode(raw or b"{}")
        except (msgspec.DecodeError, msgspec.ValidationError, NotRegularFile):
            # Damaged: the lock manager moves it aside and rebuilds it from the live holders.
            from versatil_fs.locks.manager import LockManager

            table = LockManager(repo=None, state=self.state).snapshot()
            stamp = (0, 0, 0)
        self._grants = [
            g for g in table.locks
            if any(c.resource.repo == self.repo_key and c.mode == "write" for c in g.claims)
        ]
        self._stamp = stamp


# File timestamps come from the kernel's coarse clock, up to one tick (4 ms at HZ=250) behind
# the real time. So an mtime within a tick before a release may belong to a write just after
# it: only an mtime clearly inside a lock's logged interval counts as written under it.
_TICK = 0.005
_LOG_TAIL = 1 << 20


def lock_held_at(state: StateDir, repo_key: str, path: str, written: float) -> Grant | None:
    """A write lock of ``repo_key`` that covered ``path`` when a file got mtime ``written``.

    Read from the locks log (its last MiB: this answers for writes seen moments after a
    release). In doubt, within a tick of a release, it answers None: better a write reported
    unlocked than an unlocked write hidden behind a lock that was already gone.
    """
    log = state.event_log("locks")
    size = state.size(log)
    if not size:
        return None
    data = state.read_range(log, max(0, size - _LOG_TAIL))
    decoder = msgspec.json.Decoder(events.Event)
    started: dict[str, events.Event] = {}
    ended: dict[str, float] = {}
    for raw in data.splitlines():
        if b'"write_paths"' not in raw:
            continue
        try:
            entry = decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # the first, partial line of the tail
        lease = str(entry.data.get("lease", ""))
        if entry.kind == "grant":
            started[lease] = entry
        elif entry.kind in ("release", "expire", "reclaim", "forced-release"):
            ended[lease] = entry.time
    for lease, grant in started.items():
        if grant.repo != repo_key or grant.agent is None:
            continue
        if not grant.time <= written <= ended.get(lease, written + _TICK) - _TICK:
            continue
        paths = grant.data.get("write_paths") or []
        if any(path_contains(str(p), path) for p in paths):
            return Grant(
                id=lease, agent=grant.agent, claims=[], acquired_at=grant.time,
                expires_at=ended.get(lease, grant.time),
            )
    return None


def _alive(grant: Grant, now: float) -> bool:
    if grant.owner == "shell":
        return now < grant.expires_at
    return bool(grant.lease_file) and leases.is_held(grant.lease_file)


# The election -----------------------------------------------------------------------------------
class Election:
    """Who observes a working tree: the process holding ``run/monitors/<tree>.lock``
    exclusively.

    One per working tree rather than per repository: linked worktrees share their locks (the
    git common directory) but not their files, so each needs an observer of its own.

    The lock is a ``flock``, so it goes when its process goes, however that happens, and a
    candidate blocked in :meth:`wait_to_win` is woken by the kernel at that moment. The winner
    writes its PID into the file, for the message a losing candidate prints.
    """

    def __init__(self, repo: Repository, state: StateDir | None = None) -> None:
        self.state = state or StateDir()
        digest = hashlib.sha256(str(repo.toplevel).encode()).hexdigest()[:16]
        self.path = self.state.subdir("run", "monitors") / f"{digest}.lock"
        self._fd: int | None = None

    @property
    def won(self) -> bool:
        return self._fd is not None

    def try_win(self) -> bool:
        """Become the monitor if nobody is; never blocks."""
        import fcntl

        if self._fd is not None:
            return True
        fd = self.state.open_lock_file(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._claim(fd)
        return True

    def wait_to_win(self) -> None:
        """Block until this process is the monitor (the current one exits)."""
        import fcntl

        if self._fd is not None:
            return
        fd = self.state.open_lock_file(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._claim(fd)

    def _claim(self, fd: int) -> None:
        self._fd = fd
        try:
            overwrite(fd, f"{os.getpid()}\n".encode())
        except OSError:
            # A full disk (or quota): the PID is only for the message a losing candidate
            # prints ("another process" then), and the flock alone makes us the monitor.
            pass

    def holder_pid(self) -> int | None:
        """The PID of the process observing now, if it said."""
        try:
            text = self.state.read_bytes(self.path)
        except VersatilError:
            return None
        try:
            return int((text or b"").strip() or b"0") or None
        except ValueError:
            return None

    def resign(self) -> None:
        """Let the next candidate observe."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # drops the flock: the kernel wakes the next candidate


# The observer -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Raw:
    """A watchdog event reduced to what we use (absolute paths, as str)."""

    kind: str  # created, modified, closed, deleted, moved, dir-deleted
    src: str
    dest: str = ""


# Control items on the monitor's queue, besides _Raw events.
_STOP = ("stop",)
_OVERFLOW = ("overflow",)
_LIMIT = ("limit",)


class Monitor:
    """Watches the guarded paths of one repository and reports every write.

    ``sink`` receives each :class:`Write` (in the monitor's thread); ``notify`` receives the
    sentences worth telling a person (a rescan and why). With ``record`` (the default) every
    write also goes to the ``collision-detection`` log: only the elected monitor of a
    repository should record, or a write would be counted twice.

    Call :meth:`take_baseline` before starting something whose writes must all be seen, then
    :meth:`start`; :meth:`stop` reports what is still pending (and, with ``final_scan``, any
    write whose event has not arrived yet) before it returns.
    """

    def __init__(
        self,
        repo: Repository,
        *,
        config: Config | None = None,
        state: StateDir | None = None,
        sink: Callable[[Write], None] | None = None,
        notify: Callable[[str], None] | None = None,
        record: bool = True,
    ) -> None:
        self.repo = repo
        self.state = state or StateDir()
        if config is None:
            from versatil_fs import config as config_module

            config = config_module.load(repo.toplevel, state=self.state)
        self.guards = normalize_guards(config.guard.paths)
        self.matcher = IgnoreMatcher(repo, config.guard.ignore, state=self.state)
        self.locks = LockView(self.state, repo.key)
        self.sink = sink
        self.notify = notify
        self.record = record
        self.root = str(repo.toplevel)
        self._unseeable: set[str] = set()  # paths lstat refused (see _stat), said once each
        self.snapshot: Snapshot = {}
        self.has_baseline = False
        self.unlocked = 0
        self.locked = 0
        self.rescans = 0
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Files held back -> when to report them anyway: open for writing, or temporary-looking.
        self._pending: dict[str, float] = {}
        self._stopping = threading.Event()
        self._final_scan = True
        self._thread: threading.Thread | None = None
        self._observer: Any = None
        self._limit_hit = False
        self._next_poll: float | None = None

    # Life cycle ---------------------------------------------------------------------------
    def take_baseline(self) -> None:
        """Snapshot the guarded tree now: every later change will be reported."""
        self.snapshot = scan(self.repo.toplevel, self.guards, self.matcher)
        self.has_baseline = True

    def start(self, *, delay: float = 0.0) -> None:
        """Start watching in a background thread.

        ``delay`` postpones starting the observer (importing watchdog, adding watches): a
        short command is then covered by the baseline and the final scan alone, which is what
        keeps ``versatil run -- true`` cheap. Needs a baseline when ``delay`` is used.
        """
        self._thread = threading.Thread(
            target=self._run, args=(delay,), name="versatil-monitor", daemon=True
        )
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the watches are in place; raises what made the monitor fail."""
        self.ready.wait(timeout)
        if self.failure is not None:
            raise self.failure
        return self.ready.is_set()

    def stop(self, *, final_scan: bool = True) -> None:
        """Report what is pending, optionally rescan for writes not yet seen, and stop."""
        self._final_scan = final_scan
        self._stopping.set()
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join()
        self.matcher.close()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # The worker ---------------------------------------------------------------------------
    def _run(self, delay: float) -> None:
        try:
            if not self.has_baseline:
                self.take_baseline()
            if delay > 0 and self._stopping.wait(delay):
                self._finish()
                return
            self._start_observer()
            # Writes between the baseline and the watches: found by comparing.
            self._rescan(None)
            self._log_life("monitor-started")
            self.ready.set()
            self._loop()
        except BaseException as exc:  # reported to whoever waits on us
            self.failure = exc
            self.ready.set()
            if self.notify is not None:
                self.notify(f"the monitor stopped: {exc}")
        finally:
            self._stop_observer()
            if self.ready.is_set() and self.failure is None:
                self._log_life("monitor-stopped")

    def _log_life(self, kind: str) -> None:
        # Who watched the repository when: `versatil logs collision-detection` shows the
        # hand-overs, and tests synchronise on them.
        if self.record:
            events.emit(
                STREAM, kind, repo=self.repo.key, state=self.state, worktree=self.root,
                guards=self.guards,
                unlocked=self.unlocked, locked=self.locked, rescans=self.rescans,
            )

    def _loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self._timeout())
            except queue.Empty:
                first = None  # a deadline passed: a held-back file, or a periodic rescan
            if first is _STOP:
                self._finish()
                return
            batch: list[Any] = [] if first is None else [first]
            if isinstance(first, _Raw):
                deadline = time.monotonic() + SETTLE_SECONDS
                while len(batch) < MAX_BATCH:
                    remaining = deadline - time.monotonic()
                    try:
                        item = (
                            self._queue.get(timeout=remaining) if remaining > 0
                            else self._queue.get_nowait()
                        )
                    except queue.Empty:
                        break
                    batch.append(item)
            stop = _STOP in batch
            self._handle(b for b in batch if b is not _STOP)
            if stop:
                self._finish()
                return

    def _timeout(self) -> float | None:
        deadlines = list(self._pending.values())
        if self._next_poll is not None:
            deadlines.append(self._next_poll)
        if not deadlines:
            return None
        return max(0.0005, min(deadlines) - time.monotonic())

    def _finish(self) -> None:
        self.locks.refresh()
        leftovers: list[Any] = []
        while True:
            try:
                leftovers.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self._handle(x for x in leftovers if x is not _STOP)
        self._stop_observer()
        for path in list(self._pending):
            self._pending[path] = 0.0
        self._flush_pending(force=True)
        if self._final_scan:
            self._rescan(None)

    def _handle(self, items: Iterable[Any]) -> None:
        # One look at the lock table per batch: a lock taken before a write is in the table
        # before the write's event can be in this batch.
        self.locks.refresh()
        raws: list[_Raw] = []
        overflow = first_limit = False
        for item in items:
            if item is _OVERFLOW:
                overflow = True
            elif item is _LIMIT:
                first_limit = first_limit or not self._limit_hit
                self._limit_hit = True
            elif isinstance(item, _Raw):
                raws.append(item)
        if raws:
            self._process(raws)
        # Events queued after an overflow are compared with the rescanned snapshot, so each
        # write is still reported once.
        if overflow:
            self._rescan("the inotify event queue overflowed")
        elif first_limit:
            self._rescan(
                "the inotify watch limit (fs.inotify.max_user_watches) was reached, so some "
                "directories have no watch; rescanning every "
                f"{LIMIT_RESCAN_SECONDS:g} s from now on"
            )
        elif self._next_poll is not None and time.monotonic() >= self._next_poll:
            self._rescan(None, periodic=True)
        self._flush_pending()

    # Turning events into writes -----------------------------------------------------------
    def _rel(self, path: str) -> str | None:
        """The guarded repo-relative path, or None for the root, .git and unguarded paths."""
        root = self.root
        if not path.startswith(root) or len(path) <= len(root) + 1 or path[len(root)] != "/":
            return None
        rel = path[len(root) + 1 :]
        if _in_git_dir(rel) or not under(rel, self.guards):
            return None
        nested = self.matcher.nested
        if nested and any(rel.startswith(n + "/") for n in nested):
            return None  # inside a nested repository: not part of this tree
        return rel

    def _process(self, raws: list[_Raw]) -> None:
        # Who may be reported: asked of git for the whole batch at once.
        candidates: list[str] = []
        for raw in raws:
            for path in (raw.src, raw.dest):
                rel = self._rel(path) if path else None
                if rel is not None:
                    candidates.append(rel)
                    if rel.rsplit("/", 1)[-1] == ".gitignore":
                        self.matcher.reset()  # its rules changed; git must reread them
        ignored = self.matcher.ignored(candidates) if candidates else set()

        def visible(path: str) -> str | None:
            rel = self._rel(path) if path else None
            return rel if rel is not None and rel not in ignored else None

        for raw in raws:
            if raw.kind == "moved":
                self._moved(visible(raw.src), visible(raw.dest))
            elif raw.kind == "dir-deleted":
                rel = self._rel(raw.src)
                if rel is not None:
                    self._vanished_below(rel)
            elif raw.kind == "deleted":
                rel = visible(raw.src)
                if rel is not None:
                    self._deleted(rel)
            else:
                rel = visible(raw.src)
                if rel is not None:
                    self._changed(rel, closed=raw.kind == "closed")

    def _stat(self, rel: str) -> os.stat_result | None:
        try:
            info = os.lstat(os.path.join(self.root, rel))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            # A name too long for the kernel to look up, a directory we may not enter: the
            # file cannot be compared with the snapshot. Said once per path, then skipped;
            # a monitor that stopped here would report nothing more at all.
            if rel not in self._unseeable:
                self._unseeable.add(rel)
                if self.notify is not None:
                    self.notify(
                        f"cannot look at {events.printable(rel)} ({exc.strerror or exc}); "
                        "its writes are not reported"
                    )
            return None
        return None if stat.S_ISDIR(info.st_mode) else info

    def _changed(self, rel: str, *, closed: bool, hold: bool = True) -> None:
        info = self._stat(rel)
        if info is None:
            self._pending.pop(rel, None)
            return  # already gone: its delete or move event follows
        sig = signature(info)
        before = self.snapshot.get(rel)
        if before == sig:
            self._pending.pop(rel, None)
            return  # this write was reported already (IN_MODIFY then IN_CLOSE_WRITE, a rescan)
        if hold:
            now = time.monotonic()
            if not closed:
                self._pending.setdefault(rel, now + OPEN_GRACE_SECONDS)
                return
            if before is None and _looks_temporary(rel):
                # Possibly the temporary half of an atomic save: report it only if it stays.
                self._pending[rel] = max(
                    self._pending.get(rel, 0.0), now + TEMPORARY_GRACE_SECONDS
                )
                return
        self._pending.pop(rel, None)
        self.snapshot[rel] = sig
        self._report(rel, "created" if before is None else "modified")

    def _deleted(self, rel: str) -> None:
        self._pending.pop(rel, None)
        if self._stat(rel) is not None:
            self._changed(rel, closed=True)  # replaced already
            return
        if self.snapshot.pop(rel, None) is not None:
            self._report(rel, "deleted")

    def _vanished_below(self, rel: str) -> None:
        # A directory moved out of view or deleted as a whole: its files get no events of their
        # own, so every known file below it that is gone now is reported deleted.
        prefix = rel + "/"
        for path in [p for p in self.snapshot if p.startswith(prefix)]:
            if self._stat(path) is None:
                del self.snapshot[path]
                self._report(path, "deleted")

    def _moved(self, src: str | None, dest: str | None) -> None:
        known_src = src is not None and src in self.snapshot and self._stat(src) is None
        if src is not None:
            self._pending.pop(src, None)
        if dest is not None:
            info = self._stat(dest)
            if info is not None:
                self._pending.pop(dest, None)
                before = self.snapshot.get(dest)
                sig = signature(info)
                if before != sig or known_src:
                    self.snapshot[dest] = sig
                    if known_src:
                        assert src is not None
                        # A real rename: one line, for the new path; a separate deletion only
                        # if the old path is guarded by someone else's lock (or by none).
                        self.snapshot.pop(src, None)
                        src_holder = self.locks.holder(src, refresh=False)
                        dest_holder = self.locks.holder(dest, refresh=False)
                        self._report(dest, "moved", source=src, holder=dest_holder)
                        if _agent(src_holder) != _agent(dest_holder):
                            self._report(src, "deleted", holder=src_holder)
                        return
                    # The temporary half of an atomic save was never reported: this is a
                    # write to the target, created or modified.
                    self._report(dest, "created" if before is None else "modified")
                    return
        if known_src:
            assert src is not None
            del self.snapshot[src]
            self._report(src, "deleted")

    def _flush_pending(self, *, force: bool = False) -> None:
        if not self._pending:
            return
        now = time.monotonic()
        due = [p for p, when in self._pending.items() if force or when <= now]
        for path in due:
            del self._pending[path]
            self._changed(path, closed=True, hold=False)

    def _rescan(self, reason: str | None, *, periodic: bool = False) -> None:
        """Compare the tree with the snapshot and report the differences."""
        fresh = scan(self.repo.toplevel, self.guards, self.matcher)
        self.locks.refresh()
        changes = diff_snapshots(self.snapshot, fresh)
        self._pending.clear()
        if reason is not None:
            self.rescans += 1
            if self.notify is not None:
                self.notify(f"{reason}; rescanning the guarded paths for writes it may have lost")
        self.snapshot = fresh
        for path, event in changes:
            self._report(path, event, rescan=reason is not None or periodic)
        if reason is not None:
            if self.record:
                events.emit(
                    STREAM, "rescan", repo=self.repo.key, state=self.state, worktree=self.root,
                    reason=reason,
                    changes=len(changes),
                )
            if self.notify is not None:
                self.notify(f"rescan done: {len(changes)} writes found and reported")
        if self._limit_hit:
            self._next_poll = time.monotonic() + LIMIT_RESCAN_SECONDS

    def _report(
        self,
        rel: str,
        event: EventName,
        *,
        source: str | None = None,
        rescan: bool = False,
        holder: Grant | Literal[False] | None = False,
    ) -> None:
        grant = self.locks.holder(rel, refresh=False) if holder is False else holder
        now = time.time()
        if grant is None and holder is False:
            grant = self._held_then(rel, event)
        if grant is None:
            self.unlocked += 1
            write = Write(
                kind="unlocked-write", path=rel, event=event, agent=None, time=now,
                source=source, rescan=rescan,
            )
            if self.record:
                extra: dict[str, Any] = {}
                if source:
                    extra["from"] = source
                if rescan:
                    extra["rescan"] = True
                events.emit(
                    STREAM, "unlocked-write", repo=self.repo.key, state=self.state, path=rel,
                    event=event, worktree=self.root, **extra,
                )
        else:
            self.locked += 1
            write = Write(
                kind="locked-write", path=rel, event=event, agent=grant.agent, time=now,
                source=source, rescan=rescan,
            )
            if self.record:
                # The kind and fields `checkpoint restore --agent` reads back.
                events.emit(
                    STREAM, "files-modified", agent=grant.agent, repo=self.repo.key,
                    state=self.state, paths=[rel], wave=None, task=None, event=event,
                    source="monitor", lease=grant.id, worktree=self.root,
                )
        if self.sink is not None:
            self.sink(write)

    def _held_then(self, rel: str, event: EventName) -> Grant | None:
        """The write lock that covered ``rel`` when it was written, if it is gone by now.

        Events reach us after the write (a file is reported when its writer closes it), so a
        short task can release its lock before we look: the locks log says who held what,
        when, and the file's mtime says when it was written. A deletion leaves no time behind
        and gets no such benefit of the doubt.
        """
        info = self._stat(rel) if event != "deleted" else None
        if info is None:
            return None
        return lock_held_at(self.state, self.repo.key, rel, info.st_mtime)

    # watchdog -----------------------------------------------------------------------------
    def _start_observer(self) -> None:
        observer = _make_observer(self)
        roots = self._watch_roots()
        for root, recursive in roots:
            try:
                observer.schedule(
                    _Handler(self._queue), root, recursive=recursive,
                    event_filter=_event_filter(),
                )
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    self._queue.put(_LIMIT)
                    continue
                raise MonitorError(f"Cannot watch {root}: {exc.strerror or exc}.") from exc
        try:
            observer.start()
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise MonitorError(f"Cannot start watching: {exc.strerror or exc}.") from exc
            # No inotify at all (instance or watch limit): rescans every second instead.
            self._queue.put(_LIMIT)
            return
        self._observer = observer

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=10)

    def _watch_roots(self) -> list[tuple[str, bool]]:
        roots: list[tuple[str, bool]] = []
        for guard in self.guards:
            full = self.repo.toplevel if guard == "." else self.repo.toplevel / guard
            # A guarded file, or a path that does not exist yet: watch the nearest directory
            # above it that does, so its creation is seen too.
            while full != self.repo.toplevel and not full.is_dir():
                full = full.parent
            entry = (str(full), True)
            if entry not in roots:
                roots.append(entry)
        return roots

    def prune(self, path: str) -> bool:
        """Whether a directory needs no watch: .git, ignored, or off every guarded path."""
        if path == self.root:
            return False
        rel = self._rel_any(path)
        if rel is None or _in_git_dir(rel):
            return True
        if not under(rel, self.guards) and not any(
            g.startswith(rel + "/") for g in self.guards
        ):
            return True
        if os.path.lexists(os.path.join(path, ".git")):
            return True  # a nested repository or a submodule: not part of this tree
        return self.matcher.is_ignored(rel + "/")

    def _rel_any(self, path: str) -> str | None:
        root = self.root
        if path.startswith(root + "/"):
            return path[len(root) + 1 :]
        return None


def _agent(grant: Grant | None) -> str | None:
    return grant.agent if grant is not None else None


def _looks_temporary(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return (
        name.startswith((".#", "#"))
        or name == "4913"
        or name.endswith(_TEMP_SUFFIXES)
        or (name.startswith(".") and ".tmp" in name)
    )


class _Handler:
    """A watchdog handler that only queues: the monitor's thread does the work in batches."""

    def __init__(self, sink: queue.SimpleQueue[Any]) -> None:
        self._sink = sink

    def dispatch(self, event: Any) -> None:
        kind = event.event_type
        if event.is_directory:
            if kind == "deleted":
                # Deleted, or moved out of view: its files may get no events of their own.
                self._sink.put(_Raw("dir-deleted", _s(event.src_path)))
            return  # files inside new or moved directories get events of their own
        if kind == "moved":
            self._sink.put(_Raw("moved", _s(event.src_path), _s(event.dest_path)))
        elif kind in ("created", "modified", "closed", "deleted"):
            self._sink.put(_Raw(kind, _s(event.src_path)))


def _s(path: str | bytes) -> str:
    return os.fsdecode(path)


def _event_filter() -> list[Any]:
    # Reads (open, close-nowrite) are left out of the kernel mask: a `grep -r` by an agent
    # would otherwise flood the queue with events that can never be writes.
    from watchdog.events import (
        DirCreatedEvent,
        DirDeletedEvent,
        DirMovedEvent,
        FileClosedEvent,
        FileCreatedEvent,
        FileDeletedEvent,
        FileModifiedEvent,
        FileMovedEvent,
    )

    return [
        FileCreatedEvent, FileModifiedEvent, FileDeletedEvent, FileMovedEvent, FileClosedEvent,
        DirCreatedEvent, DirDeletedEvent, DirMovedEvent,
    ]


def _make_observer(monitor: Monitor) -> Any:
    """An inotify observer whose watch groups tell the monitor what watchdog keeps to itself.

    Written against watchdog 7.1's ``InotifyWatchGroup``: its overflow callback (to rescan once
    the watches are rebuilt), its watch registration (to notice ``ENOSPC``, which it swallows
    for every directory but the root) and its recursive walk (to skip .git and ignored
    directories). With another watchdog the stock observer is used and an overflow is noticed
    through watchdog's log warning instead; the watch limit then goes unnoticed.
    """
    import logging

    logger = logging.getLogger("watchdog")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        # watchdog's warnings would otherwise reach stderr through logging's last resort,
        # across the screen of the agent a wrapper runs; we say what matters ourselves.
        logger.addHandler(logging.NullHandler())
    try:
        from watchdog.observers.inotify import (
            InotifyEmitter,
            InotifyObserver,
            InotifyWatchGroup,
        )
    except ImportError:
        return _stock_observer(monitor)
    needed = ("_add_all_callbacks", "_add_callback", "on_queue_overflow")
    if not all(hasattr(InotifyWatchGroup, name) for name in needed):
        return _stock_observer(monitor)
    events_queue = monitor._queue

    class Group(InotifyWatchGroup):
        def on_queue_overflow(self) -> None:
            super().on_queue_overflow()  # watchdog rebuilds the watches first
            events_queue.put(_OVERFLOW)

        def _add_all_callbacks(self, path: bytes) -> None:
            decoded = os.fsdecode(path)
            if path != self.path and monitor.prune(decoded):
                return
            self._add_callback(path)
            if not (self.is_recursive and os.path.isdir(path)):
                return
            for root, dirnames, _ in os.walk(path, followlinks=self.follow_symlink):
                kept = []
                for name in dirnames:
                    full = os.path.join(root, name)
                    if not self.follow_symlink and os.path.islink(full):
                        continue
                    if monitor.prune(os.fsdecode(full)):
                        continue
                    kept.append(name)
                    self._add_callback(full)
                dirnames[:] = kept

        def _add_callback(self, path: bytes) -> None:
            try:
                wd = self._inotify_fd.add_callback(
                    path, self.event_mask, self._callback, self._id
                )
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    events_queue.put(_LIMIT)
                if path == self.path:
                    raise
                return  # a directory that vanished while we walked
            self._active_callbacks_by_path[path] = wd
            self._active_callbacks_by_watch[wd] = path

    class Emitter(InotifyEmitter):
        def on_thread_start(self) -> None:
            self._inotify = Group(
                self._inotify_fd,
                os.fsencode(self.watch.path),
                is_recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(),
                follow_symlink=self.watch.follow_symlink,
            )

    observer = InotifyObserver()
    observer._emitter_class = Emitter
    return observer


def _stock_observer(monitor: Monitor) -> Any:
    import logging

    from watchdog.observers import Observer

    events_queue = monitor._queue

    class OverflowLogHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "overflow" in record.getMessage().lower():
                events_queue.put(_OVERFLOW)

    logging.getLogger("watchdog").addHandler(OverflowLogHandler(logging.WARNING))
    return Observer()


# Following what the elected monitor logs --------------------------------------------------------
def writes_from_event(event: events.Event) -> list[Write]:
    """The writes a logged event stands for (none for other kinds)."""
    data = event.data
    if event.kind == "unlocked-write":
        return [
            Write(
                kind="unlocked-write", path=str(data.get("path", "")),
                event=data.get("event", "modified"), agent=None, time=event.time,
                source=data.get("from"), rescan=bool(data.get("rescan", False)),
            )
        ]
    if event.kind == "files-modified" and data.get("source") == "monitor":
        return [
            Write(
                kind="locked-write", path=str(path), event=data.get("event", "modified"),
                agent=event.agent, time=event.time,
            )
            for path in data.get("paths") or []
        ]
    return []


def log_size(state: StateDir) -> int:
    """Where the collision-detection log ends now: :func:`follow` reads from here on."""
    return state.size(state.event_log(STREAM))


def follow(
    repo: Repository, state: StateDir, stop: threading.Event, offset: int
) -> Iterator[events.Event]:
    """Events logged for ``repo`` in the collision-detection stream after ``offset``, until
    ``stop``.

    Woken by inotify (through watchdog) when the log grows; the one-second timeout is only a
    safety net for a missed wake-up.
    """
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    path = state.event_log(STREAM)
    state.ensure_dir(path.parent)
    root = str(repo.toplevel)
    grew = threading.Event()

    class Grew(FileSystemEventHandler):
        def on_any_event(self, event: Any) -> None:
            if _s(event.src_path) == str(path) or _s(getattr(event, "dest_path", "")) == str(
                path
            ):
                grew.set()

    observer = Observer()
    observer.schedule(Grew(), str(path.parent), recursive=False)
    observer.start()
    decoder = msgspec.json.Decoder(events.Event)
    try:
        pending = b""
        while not stop.is_set():
            grew.clear()
            size = state.size(path)
            if size < offset:
                offset, pending = 0, b""
            if size == offset:
                grew.wait(1.0)
                continue
            chunk = state.read_range(path, offset, size - offset)
            offset += len(chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                try:
                    event = decoder.decode(raw)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                if event.repo == repo.key and event.data.get("worktree", root) == root:
                    yield event
    finally:
        observer.stop()
        observer.join(timeout=10)


# The foreground monitor -------------------------------------------------------------------------
def watch(
    repo: Repository,
    *,
    paths: Sequence[str] = (),
    on_write: Callable[[Write], None],
    on_notice: Callable[[str], None],
    state: StateDir | None = None,
    stop: threading.Event | None = None,
) -> None:
    """``versatil monitor``: report every write until ``stop`` is set (or Ctrl-C).

    Observes when elected; otherwise prints what the elected monitor logs, and takes over the
    moment it exits. ``paths`` (repo-relative) narrow what is printed, not what is watched: the
    observer always watches every guarded path, because it reports for everyone.
    """
    state = state or StateDir()
    stop = stop or threading.Event()
    wanted = normalize_guards(paths) if paths else ["."]
    out: queue.SimpleQueue[Write | str | None] = queue.SimpleQueue()

    def emit(write: Write) -> None:
        if under(write.path, wanted) or (write.source and under(write.source, wanted)):
            out.put(write)

    election = Election(repo, state)
    monitor: Monitor | None = None
    following = threading.Event()

    def observe() -> Monitor:
        m = Monitor(repo, state=state, sink=emit, notify=out.put, record=True)
        m.start()
        m.wait_ready()
        out.put(f"watching {', '.join(m.guards)} in {repo.toplevel} for unlocked writes")
        return m

    def follower(offset: int) -> None:
        try:
            for event in follow(repo, state, following, offset):
                if event.kind == "rescan":
                    out.put(
                        f"the observing monitor rescanned ({event.data.get('reason')}): "
                        f"{event.data.get('changes')} writes found"
                    )
                for write in writes_from_event(event):
                    emit(write)
        except BaseException as exc:  # pragma: no cover - reported, not swallowed
            out.put(f"stopped following the observing monitor: {exc}")

    def candidate() -> None:
        election.wait_to_win()
        following.set()  # stop reading the log: from now on we observe ourselves
        out.put(None)  # tells the main loop to start observing

    try:
        if election.try_win():
            monitor = observe()
        else:
            pid = election.holder_pid()
            who = f"process {pid}" if pid else "another process"
            # From this offset on, before saying so: nothing logged after the notice is missed.
            threading.Thread(
                target=follower, args=(log_size(state),), name="versatil-follow", daemon=True
            ).start()
            threading.Thread(target=candidate, name="versatil-elect", daemon=True).start()
            out.put(
                f"{who} is already watching {repo.toplevel}; showing what it reports "
                "(this monitor takes over when it exits)"
            )
        while not stop.is_set():
            try:
                item = out.get(timeout=0.2)
            except queue.Empty:
                if monitor is not None and monitor.failure is not None:
                    raise monitor.failure from None
                continue
            if item is None:
                monitor = observe()
                on_notice("took over watching: the previous monitor exited")
            elif isinstance(item, str):
                on_notice(item)
            else:
                on_write(item)
    finally:
        following.set()
        if monitor is not None:
            monitor.stop(final_scan=False)
        election.resign()


def stderr_notice(prefix: str) -> Callable[[str], None]:
    """A notifier printing ``prefix: sentence.`` on stderr, flushed."""

    def say(message: str) -> None:
        sys.stderr.write(f"{prefix}: {message}.\n")
        sys.stderr.flush()

    return say
