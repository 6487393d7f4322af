"""What a checkpoint is, as data: the records, the id, the metadata file's bytes, the commit
message that can rebuild a record, and the text helpers every message uses.

Pure: nothing here runs git or touches a file.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import re
import secrets
import time

import msgspec

from versatil_fs import events

__all__ = [
    "AUTOMATIC_KINDS",
    "DAMAGED_PREFIX",
    "GITLINK_MODE",
    "ID_PATTERN",
    "MAX_WAVE",
    "REF_PREFIX",
    "SCHEMA_VERSION",
    "USER_KIND",
    "Change",
    "CheckpointRecord",
    "PruneResult",
    "PrunedCheckpoint",
    "RestoreResult",
    "automatic",
    "clean_name",
    "commit_message",
    "decode_record",
    "encode_record",
    "has_surrogates",
    "new_id",
    "printable",
    "reason",
    "record_from_commit",
    "valid_id",
]

SCHEMA_VERSION = 1
REF_PREFIX = "refs/versatil/checkpoints/"
# Where a ref under REF_PREFIX that is not a checkpoint is moved aside to (kept, not deleted).
DAMAGED_PREFIX = "refs/versatil/damaged/"
# The one shape of a checkpoint id (see new_id). Every id read from a ref name, a metadata file
# or the command line is matched against it before it names a file or a ref: an id is never a
# path ("../x", "a/b") and never selects anything outside refs/versatil/checkpoints/.
ID_PATTERN = re.compile(r"cp-[0-9]{8}-[0-9]{6}-[0-9a-f]{4}(?:-wave-[0-9]{1,9})?")
MAX_WAVE = 999_999_999  # a wave number's digits are bounded by ID_PATTERN
GITLINK_MODE = "160000"


def valid_id(checkpoint_id: str) -> bool:
    """Whether ``checkpoint_id`` has the one shape versatil gives checkpoint ids."""
    return ID_PATTERN.fullmatch(checkpoint_id) is not None


def new_id(started: float, wave: int | None) -> str:
    """A fresh id for a checkpoint started at ``started`` (of ``wave``, if any)."""
    # UTC so that ids sort by time whatever the machine's zone; the random part keeps parallel
    # creates in one second apart (a clash is detected by fast-import and drawn again).
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    return f"cp-{stamp}-{secrets.token_hex(2)}" + (f"-wave-{wave}" if wave is not None else "")


# Records ----------------------------------------------------------------------------------------
class CheckpointRecord(msgspec.Struct, kw_only=True):
    """One checkpoint: the schema on disk, in the API and in ``--json`` output."""

    version: int = SCHEMA_VERSION
    id: str
    commit: str
    tree: str
    parent: str | None = None  # HEAD when it was made; None on an unborn branch
    time: float
    message: str = ""
    agent: str = ""
    wave: int | None = None
    # "checkpoint": the user's own; "safety": made by a restore before it changed anything;
    # "wave", "run", "periodic": by the wave executor, `versatil run`, its periodic thread
    kind: str = "checkpoint"
    tasks: dict[str, str] = {}  # task id -> state, as the wave executor saw them
    files_modified: list[str] = []  # files differing from HEAD unless the caller said otherwise
    tests_run: list[str] = []
    errors: list[str] = []
    files: int | None = None  # entries in the checkpoint's tree (None when rebuilt from git)
    gitlinks: list[str] = []  # submodules and nested repositories: their commit, not contents
    large_files: dict[str, int] = {}  # new files above the warning size -> bytes
    warnings: list[str] = []
    restore_of: str | None = None  # safety checkpoints: the checkpoint being restored
    restore_complete: bool | None = None  # safety checkpoints: False until the restore ended
    recovered: bool = False  # rebuilt from the git commit: the metadata file was lost or damaged
    repo: str = ""  # the working tree it was made in (its toplevel), for people reading it
    # The git directory of the worktree it was made in: the stable key of that worktree (its
    # toplevel can be moved with `git worktree move`, its git dir is named once). A record
    # written before worktrees were recorded has "": it is treated as the main worktree's,
    # where versatil was used before linked worktrees were told apart (see worktree_key).
    worktree: str = ""


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """One path that differs between two trees, seen from ``old`` to ``new``."""

    status: str  # "A" only in new, "D" only in old, "M" content or mode, "T" type
    path: str
    old_mode: str
    new_mode: str
    old_oid: str
    new_oid: str

    @property
    def is_gitlink(self) -> bool:
        return GITLINK_MODE in (self.old_mode, self.new_mode)


class RestoreResult(msgspec.Struct, kw_only=True):
    """What a restore did; ``safety_checkpoint`` undoes it (None when nothing had to change)."""

    version: int = SCHEMA_VERSION
    checkpoint: str
    safety_checkpoint: str | None
    restored: list[str] = []  # written from the checkpoint (modified or deleted since)
    removed: list[str] = []  # created since the checkpoint
    skipped: list[str] = []  # submodules / nested repositories, whose contents are not stored
    # Of the changed files, those whose only record for the selected agent is the monitor's
    # "written while that agent held the lock" (it cannot see which process wrote).
    attributed_by_lock: list[str] = []

    @property
    def changed(self) -> builtins.list[str]:
        return sorted([*self.restored, *self.removed])


# Kinds of checkpoint. The user's own (`checkpoint create`, `checkpoint()`) are "checkpoint";
# the others are made by versatil itself and pruned under their own budget (see automatic).
USER_KIND = "checkpoint"
AUTOMATIC_KINDS = frozenset({"safety", "wave", "run", "periodic"})


def automatic(record: CheckpointRecord) -> bool:
    """Whether versatil made ``record`` on its own (a restore's safety checkpoint, a wave's, a
    `versatil run`'s, a periodic one) rather than a user asking for it."""
    if record.kind != USER_KIND:
        return True
    # Before the kinds were told apart (issue 15), waves and `versatil run` wrote "checkpoint"
    # too; their agent and messages are fixed, and a user's own checkpoint is kept if unsure.
    return record.agent == "wave-executor" or record.message.startswith(
        ("before versatil run: ", "during versatil run: ")
    )


class PrunedCheckpoint(msgspec.Struct, kw_only=True):
    """One checkpoint a prune removed, and the budget it was over."""

    id: str
    kind: str
    budget: str  # "max_checkpoints" (the user's own) or "max_automatic"
    time: float
    message: str = ""
    agent: str = ""
    worktree: str = ""


class PruneResult(msgspec.Struct, kw_only=True):
    version: int = SCHEMA_VERSION
    kept: int  # checkpoints left, both budgets, every worktree
    removed: list[str] = []
    kept_own: int = 0  # the user's own checkpoints left
    kept_automatic: int = 0
    entries: list[PrunedCheckpoint] = []  # what was removed, each with its budget


# The metadata file ------------------------------------------------------------------------------
_record_decoder = msgspec.json.Decoder(CheckpointRecord)


def encode_record(record: CheckpointRecord) -> bytes:
    """A record as JSON. A file name that is not UTF-8 (held as surrogate escapes, see
    :func:`~versatil_fs.checkpoints.plumbing.decode_path`) cannot be JSON: the file gets its
    printable form (``\\xNN``), as the event logs and ``--json`` do. Only descriptive fields
    hold paths (files modified, gitlinks, warnings); what a restore writes comes from the
    commit's tree, byte for byte."""
    try:
        data = msgspec.json.encode(record)
    except UnicodeEncodeError:
        data = msgspec.json.encode(events.printable(record))
    return msgspec.json.format(data, indent=2) + b"\n"


def decode_record(data: bytes) -> CheckpointRecord:
    """A metadata file's record; ``msgspec`` errors (or ``ValueError``) if it is not one."""
    return _record_decoder.decode(data)


# The commit message: enough to rebuild a record whose metadata file was lost ---------------------
def clean_name(agent: str) -> str:
    """``agent`` as a git identity name."""
    # git refuses identities made only of "crud" and strips <, > and newlines; keep it readable.
    cleaned = "".join(ch for ch in agent if ch not in "<>\n\r").strip()
    return cleaned or "versatil"


def commit_message(message: str, *, agent: str, wave: int | None, kind: str,
                   started: float, worktree: str = "") -> str:
    """The checkpoint commit's message: the title and the ``Versatil-*`` trailers."""
    # The trailers let `list` rebuild a checkpoint whose metadata file was lost.
    title = message.strip() or ("safety checkpoint" if kind == "safety" else "checkpoint")
    trailers = [f"Versatil-Agent: {clean_name(agent)}", f"Versatil-Time: {started!r}",
                f"Versatil-Kind: {kind}"]
    if wave is not None:
        trailers.append(f"Versatil-Wave: {wave}")
    if worktree and "\n" not in worktree:
        trailers.append(f"Versatil-Worktree: {worktree}")
    return f"{title}\n\n" + "\n".join(trailers) + "\n"


def _split_trailers(message: str) -> tuple[str, dict[str, str]]:
    body, _, last = message.rstrip("\n").rpartition("\n\n")
    trailers: dict[str, str] = {}
    lines = last.splitlines()
    if lines and all(line.startswith("Versatil-") and ": " in line for line in lines):
        for line in lines:
            key, _, value = line.partition(": ")
            trailers[key] = value
        return body, trailers
    return message.rstrip("\n"), trailers


def record_from_commit(checkpoint_id: str, oid: str, tree: str, raw: str,
                       repo: str, worktree: str = "") -> CheckpointRecord:
    """The record rebuilt from ``raw``, the text of commit ``oid`` (``git cat-file commit``);
    ``repo`` is the toplevel of the worktree ``worktree`` (git dir) that rebuilds it, named
    as the record's only if the commit says it was made there."""
    header, _, message = raw.partition("\n\n")
    fields: dict[str, str] = {}
    committed = 0.0
    for line in header.splitlines():
        key, _, value = line.partition(" ")
        if key in ("tree", "parent"):
            fields.setdefault(key, value)
        elif key == "committer":
            with contextlib.suppress(ValueError, IndexError):
                committed = float(value.rsplit(" ", 2)[1])
    text, trailers = _split_trailers(message)
    wave = trailers.get("Versatil-Wave")
    try:
        when = float(trailers.get("Versatil-Time", committed))
    except ValueError:
        when = committed
    return CheckpointRecord(
        id=checkpoint_id,
        commit=oid,
        tree=tree,
        parent=fields.get("parent"),
        time=when,
        message=text,
        agent=trailers.get("Versatil-Agent", ""),
        wave=int(wave) if wave and wave.isdigit() else None,
        kind=trailers.get("Versatil-Kind", "checkpoint"),
        recovered=True,
        warnings=["Metadata was rebuilt from the git commit: task states, tests and "
                  "errors recorded with the checkpoint are not available."],
        # A commit made before worktrees were recorded has no trailer: the main worktree's.
        repo=repo if worktree == trailers.get("Versatil-Worktree", "") else "",
        worktree=trailers.get("Versatil-Worktree", ""),
    )


# Text for messages ------------------------------------------------------------------------------
def reason(exc: BaseException) -> str:
    """Why ``exc`` happened, short enough for the middle of a sentence."""
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(exc).replace(" (nothing was changed)", "").rstrip(".")


def printable(text: str) -> str:
    """``text`` fit for one line of a terminal: bytes that are not UTF-8 (surrogate escapes)
    as ``\\xNN``, control characters (a newline in a file name) as escapes."""
    shown = os.fsencode(text).decode("utf-8", "backslashreplace") if has_surrogates(text) \
        else text
    if shown.isprintable():
        return shown
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in shown)


def has_surrogates(text: str) -> bool:
    """Whether ``text`` holds bytes that are not UTF-8 (a file name decoded by ``os.fsdecode``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
