"""What the ``versatil mcp`` tools answer, as pydantic models: the SDK derives each tool's
output schema from these, and sends them as the call's structured content.

Only :mod:`versatil_fs.agents.mcp_server` imports this (pydantic comes with the optional ``mcp``
extra). Times are Unix seconds; an ``until`` of null means "while the holding process lives".
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "CheckpointDiff",
    "CheckpointInfo",
    "CheckpointList",
    "Conflict",
    "FileChange",
    "Holder",
    "LockAnswer",
    "LockEntry",
    "LocksAnswer",
    "PathCheck",
    "RestoreAnswer",
    "TaskStatus",
    "UnlockAnswer",
    "WaveStatus",
]


class Holder(BaseModel):
    """Who stands in the way: an agent and its lease (or its queued request)."""

    agent: str
    lease: str
    queued: bool = Field(
        default=False, description="Waiting ahead of you in the queue, not holding.")


class Conflict(BaseModel):
    """Why a lock was not granted."""

    message: str = Field(description="The refusal in one sentence, for the agent to act on.")
    resource: str = Field(default="", description="The contested resource (a repo-relative path).")
    holders: list[Holder] = []
    since: float | None = Field(default=None, description="When the holder got it (Unix time).")
    until: float | None = Field(
        default=None, description="When the holder's lease expires (Unix time); null while "
        "the holding process lives.")
    cycle: list[str] = Field(
        default=[], description="For a deadlock: the agents waiting in a cycle.")


class LockAnswer(BaseModel):
    granted: bool
    agent: str = Field(description="The agent the locks are (or would be) held for.")
    mode: Literal["write", "read"]
    resources: list[str] = Field(description="The resources as the lock table names them.")
    lease: str | None = Field(default=None, description="The lease id, when granted.")
    fence: int | None = Field(
        default=None, description="The grant's fencing token (null when not granted): greater "
        "than every earlier grant's. Hand it to what the lock guards as VERSATIL_FENCE; the "
        "commit guard and checkpoint restore refuse it once a newer lock covers the files.")
    conflict: Conflict | None = None


class UnlockAnswer(BaseModel):
    agent: str
    released: list[str]


class LockEntry(BaseModel):
    agent: str
    lease: str
    resources: list[str]
    mode: list[str] = Field(description="Each resource's mode, in the same order.")
    session: str = ""
    pid: int = 0
    since: float
    until: float | None = Field(default=None, description="Null: while the holding process lives.")
    queued: bool = False
    mine: bool = Field(default=False, description="Held (or queued for) by your agent.")
    fence: int | None = Field(
        default=None, description="The lock's fencing token; null for a queued request.")


class PathCheck(BaseModel):
    path: str = Field(description="The path as the lock table names it.")
    free_for_you: bool = Field(
        description="No other agent holds or queues for a lock that covers it.")
    held_by: list[LockEntry] = []


class LocksAnswer(BaseModel):
    agent: str = Field(description="Your agent.")
    locks: list[LockEntry]
    waiting: list[LockEntry]
    path: PathCheck | None = None


class CheckpointInfo(BaseModel):
    id: str
    time: float
    message: str = ""
    agent: str = ""
    kind: str = ""
    files: int | None = None
    files_modified: list[str] = []


class CheckpointList(BaseModel):
    checkpoints: list[CheckpointInfo]


class FileChange(BaseModel):
    status: str = Field(description="A added, D deleted, M modified, T type changed.")
    path: str


class CheckpointDiff(BaseModel):
    checkpoint: str
    changes: list[FileChange]


class RestoreAnswer(BaseModel):
    checkpoint: str
    safety_checkpoint: str | None = Field(
        default=None, description="Restore this one to undo the restore (null: nothing changed).")
    restored: list[str] = []
    removed: list[str] = []


class TaskStatus(BaseModel):
    id: str
    agent: str
    wave: int
    status: str
    exit_code: int | None = None
    error: str = ""


class WaveStatus(BaseModel):
    run: str | None = Field(default=None, description="The run id; null when there is no run.")
    status: str | None = None
    counts: dict[str, int] = {}
    tasks: list[TaskStatus] = []
