"""Where wave runs are kept: the state document and its write-ahead file (the framing), and
the run store (:class:`RunStore`: reading, validating, locking runs); the
:class:`~versatil_fs.waves.journal.Journal` writes a run's transitions through it.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import math
import os
import posixpath
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import msgspec

from versatil_fs import faults, flock
from versatil_fs.errors import (
    Refused,
    StateError,
    UsageError,
)
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir
from versatil_fs.waves.records import (
    MAX_SLOTS,
    MAX_TIME,
    RUN_ID,
    SCHEMA_VERSION,
    RunState,
    TaskRun,
)

__all__ = [
    "ENCODER",
    "STATE_DECODER",
    "UNREADABLE",
    "RunStore",
    "StartRecord",
    "effective_status",
    "frame_record",
    "latest_run",
    "os_reason",
    "read_records",
    "safe_name",
    "safe_relative",
]


ENCODER = msgspec.msgpack.Encoder()
STATE_DECODER = msgspec.msgpack.Decoder(RunState)


class StartRecord(msgspec.Struct, array_like=True):
    """One record of a run's write-ahead file: a task as it was when it started."""

    number: int
    task: TaskRun


_record_decoder = msgspec.msgpack.Decoder(StartRecord)
# What decoding a damaged or planted document raises: msgspec gives up on nesting deeper than
# the interpreter's stack with RecursionError, which is damage too, not an internal error.
UNREADABLE = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)
_FRAME = struct.Struct("<II")  # payload length, CRC-32 of the payload


def frame_record(record: StartRecord) -> bytes:
    payload = ENCODER.encode(record)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def read_records(data: bytes) -> Iterator[StartRecord]:
    """The whole records of a write-ahead file, up to the first torn or damaged one (a crash
    in the middle of an append leaves at most the last one incomplete)."""
    at = 0
    while at + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, at)
        payload = data[at + _FRAME.size: at + _FRAME.size + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            return
        try:
            yield _record_decoder.decode(payload)
        except UNREADABLE:
            return
        at += _FRAME.size + length




# Where runs are kept ----------------------------------------------------------------------------
class RunStore:
    """``waves/<run>.msgpack`` (the state), ``waves/<run>.wal`` (task starts not yet in it, see
    :class:`Journal`), ``waves/<run>.lock`` (flocked by the executor running it) and
    ``waves/<run>/`` (one log file per task) under the state directory."""

    def __init__(self, state: StateDir | None = None) -> None:
        self.state = state or StateDir()
        self.root = self.state.subdir("waves")

    def path(self, run_id: str) -> Path:
        return self.root / f"{run_id}.msgpack"

    def log_dir(self, run_id: str) -> Path:
        return self.state.subdir("waves", run_id)

    def wal_path(self, run_id: str) -> Path:
        return self.root / f"{run_id}.wal"

    def open_wal(self, run_id: str) -> int:
        """The run's write-ahead file, open for appending; its name is durable on return."""
        fd = self.state.open_lock_file(self.wal_path(run_id))  # 0600, owned, close-on-exec
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
            directory = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def drop_wal(self, run_id: str) -> None:
        """Remove the write-ahead file once a durable state holds all of it."""
        self.state.remove(self.wal_path(run_id))

    def _replay(self, run: RunState) -> RunState:
        """The state with the newer task starts of its write-ahead file applied."""
        data = self.state.read_bytes(self.wal_path(run.id))
        for record in read_records(data or b""):
            if record.number > run.journal and record.task.id in run.tasks:
                run.tasks[record.task.id] = record.task
                run.journal = record.number
        return run

    def save(self, run: RunState) -> None:
        self.write(run.id, ENCODER.encode(run))

    def write(self, run_id: str, data: bytes) -> None:
        faults.point("wave.before-state-write")
        self.state.write_atomic(self.path(run_id), data, durable=True)

    def load(self, run_id: str) -> RunState:
        run_id = self.resolve_id(run_id)
        path = self.path(run_id)
        data = self.state.read_bytes(path)
        if data is None:
            raise UsageError(f"No wave run {run_id!r}; `versatil wave status` lists the latest.")
        try:
            run = STATE_DECODER.decode(data)
        except UNREADABLE as exc:
            raise self._damaged(path, run_id, f"it does not parse: {exc}") from None
        if run.version != SCHEMA_VERSION:
            # Decoding is lenient about what it does not know, so a state of another schema
            # would be read as this one and quietly misunderstood: refuse it instead.
            raise self._damaged(
                path, run_id, f"it is schema version {run.version}; this versatil reads "
                f"version {SCHEMA_VERSION}",
            )
        run = self._replay(run)
        problem = self._problem(run, run_id)
        if problem:
            raise self._damaged(path, run_id, problem)
        return run

    def _problem(self, run: RunState, run_id: str) -> str | None:
        """Why a decoded run (write-ahead records applied) cannot be trusted, or None; fixes
        up what is derived rather than stored.

        Every path the executor acts on is rebuilt from the run's id and its tasks' ids, inside
        this directory, never read from the document: its log files (``log`` is overwritten
        here), its write-ahead file and its lock. The ids themselves, the tasks' paths and the
        snapshot paths that a resume compares and rolls back are checked against the rules they
        were made by, so a planted or damaged state cannot point a restore or an unlink outside
        the repository or the state directory.
        """
        from versatil_fs.checkpoints import ID_PATTERN as _CHECKPOINT_ID
        from versatil_fs.waves.plan import plan_problem

        if run.id != run_id or not RUN_ID.fullmatch(run_id):
            return f"it names itself {run.id!r}, not the run {run_id!r} its file is"
        problem = plan_problem(run.plan)
        if problem:
            return problem
        ids = [t.id for t in run.plan.tasks]
        if sorted(run.tasks) != sorted(ids) or any(k != t.id for k, t in run.tasks.items()):
            return "its tasks are not its plan's tasks"
        in_waves = [t for wave in run.waves for t in wave]
        if sorted(in_waves) != sorted(ids):
            return "its waves do not hold each of its tasks once"
        if not (1 <= run.max_agents <= MAX_SLOTS and 1 <= run.max_waves <= MAX_SLOTS):
            return f"it has {run.max_agents} agents and {run.max_waves} waves in flight"
        times = [run.created, run.finished, run.lower_bound_estimate,
                 *(x for s in run.sessions for x in (s.started, s.ended))]
        for number, checkpoint in run.wave_checkpoints.items():
            if not (1 <= number <= len(run.waves)) or not _CHECKPOINT_ID.fullmatch(checkpoint):
                return f"wave {number} has the checkpoint {checkpoint!r}"
        log_dir = self.root / run_id
        for number, wave in enumerate(run.waves, start=1):
            for task_id in wave:
                task = run.tasks[task_id]
                if task.wave != number:
                    return f"task {task_id!r} is in wave {number} but says {task.wave}"
                if task.checkpoint is not None and not _CHECKPOINT_ID.fullmatch(task.checkpoint):
                    return f"task {task_id!r} has the checkpoint {task.checkpoint!r}"
                bad = next((p for p in task.before or {} if not safe_relative(p)), None)
                if bad is not None:
                    return f"task {task_id!r} has the snapshot path {bad!r}"
                if any(not safe_relative(p) for p in (*task.files, *task.rolled_back)):
                    return f"task {task_id!r} names a file outside the repository"
                times += [task.started, task.finished, task.exited, task.lock_wait]
                if task.log:
                    task.log = str(log_dir / f"{safe_name(task_id)}.log")
        # Finite and bounded, not necessarily positive: a wall clock stepped back makes a
        # lock wait negative, and that must not make a good run look damaged.
        if any(t is not None and not (math.isfinite(t) and abs(t) <= MAX_TIME) for t in times):
            return "one of its times is not a time"
        return None

    def _damaged(self, path: Path, run_id: str, reason: str) -> StateError:
        # move_aside prints its own notice, written for state rebuilt from what is live; a
        # wave run is not rebuilt, so this error is the one sentence the user gets.
        with contextlib.redirect_stderr(io.StringIO()):
            target = self.state.move_aside(path, reason)
        return StateError(
            f"The state of wave run {run_id} could not be used ({reason}); it was moved aside "
            f"to {target.name}. Its checkpoints are still in `versatil checkpoint list`."
        )

    def resolve_id(self, run_id: str) -> str:
        """A full run id from a unique prefix."""
        names = [p.name[: -len(".msgpack")] for p in self.root.glob("*.msgpack")]
        if run_id in names:
            return run_id
        matches = [n for n in names if n.startswith(run_id)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UsageError(f"{run_id!r} matches several wave runs: {', '.join(sorted(matches))}.")
        raise UsageError(f"No wave run {run_id!r}; `versatil wave status` shows the latest.")

    def runs(self, repo_key: str | None = None) -> list[RunState]:
        """Every readable run (of one repository), oldest first; damaged ones are skipped."""
        found = []
        for path in sorted(self.root.glob("*.msgpack")):
            data = self.state.read_bytes(path)
            if data is None:
                continue
            try:
                run = STATE_DECODER.decode(data)
            except UNREADABLE:
                continue  # reported when it is asked for by name
            if run.version != SCHEMA_VERSION:
                continue
            run = self._replay(run)
            if self._problem(run, path.name[: -len(".msgpack")]):
                continue  # damaged or planted: reported (and moved aside) when asked for
            if repo_key is None or run.repo_key == repo_key:
                found.append(run)
        return sorted(found, key=lambda r: r.created)

    @contextlib.contextmanager
    def locked(self, run_id: str) -> Iterator[None]:
        """Hold the run's lock for the block; :class:`Refused` if an executor holds it now."""
        fd = self.state.open_lock_file(self.root / f"{run_id}.lock")
        try:
            if not flock.try_lock(fd):
                raise Refused(
                    f"Wave run {run_id} is being executed by another process right now; "
                    "watch it with `versatil wave status`."
                ) from None
            yield
        finally:
            os.close(fd)  # the flock goes with the descriptor

    def is_live(self, run_id: str) -> bool:
        """Whether an executor is running this run now (it holds the run's flock)."""
        path = self.root / f"{run_id}.lock"
        if not path.exists():
            return False
        fd = self.state.open_lock_file(path, create=False)
        try:
            return flock.probe(fd)  # a fresh descriptor of our own: held exclusively = live
        finally:
            os.close(fd)


def effective_status(run: RunState, store: RunStore) -> str:
    """``interrupted`` for a run recorded as running whose executor is gone."""
    if run.status == "running" and not store.is_live(run.id):
        return "interrupted"
    return run.status



def latest_run(store: RunStore, repo: Repository) -> RunState | None:
    runs = store.runs(repo.key)
    return runs[-1] if runs else None


def safe_relative(path: str) -> bool:
    """A repository path as snapshots write them: relative, normalised, inside the tree."""
    return (
        bool(path) and "\0" not in path and not path.startswith("/")
        and posixpath.normpath(path) == path and path != ".." and not path.startswith("../")
        and not (path == ".git" or path.startswith(".git/"))
    )


def os_reason(exc: BaseException) -> str:
    cause = exc.__cause__
    return cause.strerror if isinstance(cause, OSError) and cause.strerror else str(exc)


def safe_name(task_id: str) -> str:
    return task_id.replace("/", "_").replace(":", "_")
