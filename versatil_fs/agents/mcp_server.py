"""``versatil mcp``: the lock manager, checkpoints and wave status as MCP tools, over stdio.

An agent harness starts this server when a session starts and ends it when the session ends
(Claude Code, Codex, Gemini CLI and Cursor all run stdio MCP servers as child processes), so
the server process lives as long as the session. The locks an agent takes through the ``lock``
tool are **process leases of this process**: its holder file stays flocked while it lives, and
the kernel drops the flock the moment it dies, ``kill -9`` and a crashed harness included; no
timeout, no PID guess.

**Whose locks.** The server acts for the session's agent, by the hooks' rule
(:mod:`versatil_fs.agents.identity`): ``VERSATIL_AGENT``; else ``[agents] names.<harness>``
(the harness is ``--harness NAME``, which ``versatil integrate`` writes), then ``[agents]
name``; else the agent of the harness session that started the server, asked of that
harness's session keeper (:func:`versatil_fs.agents.client.session_agent`: the nearest
ancestor with a keeper, the same process the hooks find); else ``<harness>:mcp-<pid>``. The
keeper exists once the session's first hook ran (SessionStart, before the model can call a
tool), so a session with hooks and this server is one agent: its MCP locks and its edit-time
claims never conflict. Until a keeper answers, the name is asked again at every call; once one
has, it stays (a session's agent does not change).

**Answers.** Every tool answers with structured content (the SDK derives each output schema
from the models of :mod:`versatil_fs.agents.mcp_answers`, and each input schema from the type
hints). A lock that cannot
be had is an answer, not an error: ``granted: false`` and the conflict as data (holder, lease,
since, until, the contested resource). What the agent must fix (a bad resource, an unknown
checkpoint, no repository) is a tool error whose text is versatil's one sentence; anything
unexpected is one sentence too, never a traceback.

A ``lock`` that waits (``wait_seconds``) waits in one of the SDK's worker threads, so the other
tools keep answering meanwhile; a harness that gives up on the call (its tool timeout) does not
stop the wait, and a lock granted after that is the session's all the same: ``locks`` shows it,
``unlock`` or the session's end releases it.

The ``mcp`` SDK is an optional extra (``versatil-fs[mcp]``): only this module imports it, and
only ``versatil mcp`` imports this module.
"""

from __future__ import annotations

import os
import threading
from typing import Annotated, Any, Literal

import msgspec
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from versatil_fs.agents.mcp_answers import (
    CheckpointDiff,
    CheckpointInfo,
    CheckpointList,
    Conflict,
    FileChange,
    Holder,
    LockAnswer,
    LockEntry,
    LocksAnswer,
    PathCheck,
    RestoreAnswer,
    TaskStatus,
    UnlockAnswer,
    WaveStatus,
)
from versatil_fs.errors import Deadlock, LockConflict, VersatilError
from versatil_fs.locks.manager import Lease, LockManager
from versatil_fs.locks.store import expires_wall
from versatil_fs.locks.table import Grant, Resource, Waiter
from versatil_fs.state import StateDir

__all__ = ["INSTRUCTIONS", "Tools", "build", "serve"]

INSTRUCTIONS = (
    "versatil coordinates several coding agents on one git repository. Before editing files "
    "another agent may be working on, call `lock` with their paths (or named resources such "
    "as db:users); if it answers granted=false, work on something else and try again later. "
    "`unlock` what you are done with; every lock also ends when your session ends. `locks` "
    "shows who holds what, or whether one path is free for you. Checkpoints save and restore "
    "the working tree."
)

# The tools, without the protocol --------------------------------------------------------------
class Tools:
    """What each tool does, as plain calls (the tests of the logic need no MCP client)."""

    def __init__(
        self, harness: str = "", *, cwd: str | None = None, state: StateDir | None = None,
    ) -> None:
        self.harness = harness
        self.cwd = cwd or os.getcwd()
        self.state = state or StateDir()
        self.pid = os.getpid()
        self._manager: LockManager | None = None
        self._keeper_agent: str | None = None
        self._leases: list[Lease] = []
        self._guard = threading.Lock()

    # Identity ---------------------------------------------------------------------------------
    @property
    def manager(self) -> LockManager:
        with self._guard:
            if self._manager is None:
                self._manager = LockManager(self.cwd, state=self.state)
            return self._manager

    def agent(self) -> str:
        """The agent this server acts for (the rule in the module docstring)."""
        named = os.environ.get("VERSATIL_AGENT", "").strip()
        if named:
            return named
        try:
            settings = self.manager.config.harness
        except VersatilError:
            settings = None  # a broken configuration is reported by the tool that needs it
        if settings is not None:
            configured = (settings.names.get(self.harness, "") if self.harness else "").strip()
            if configured or settings.name.strip():
                return configured or settings.name.strip()
        if self._keeper_agent is None:
            from versatil_fs.agents.client import session_agent

            self._keeper_agent = session_agent(os.environ)
        if self._keeper_agent:
            return self._keeper_agent
        return f"{self.harness}:mcp-{self.pid}" if self.harness else f"mcp-{self.pid}"

    def session(self, reason: str) -> str:
        label = f"{self.harness or 'mcp'} mcp-{self.pid}"
        why = "".join(c if c.isprintable() else " " for c in reason).strip()
        return (f"{label}: {why}" if why else label)[:200]

    # Locks ------------------------------------------------------------------------------------
    def lock(
        self, resources: list[str], mode: Literal["write", "read"], wait_seconds: float,
        reason: str,
    ) -> LockAnswer:
        agent = self.agent()
        manager = self.manager
        names = [str(manager.resolve(r)) for r in resources]
        try:
            lease = manager.acquire(
                resources, agent=agent, mode=mode, wait=wait_seconds, owner="process",
                session=self.session(reason),
            )
        except LockConflict as exc:
            conflict = Conflict(
                message=str(exc), resource=exc.resource, since=exc.since, until=exc.until,
                holders=[Holder(agent=h.agent, lease=h.lease, queued=h.queued)
                         for h in exc.holders],
            )
            return LockAnswer(granted=False, agent=agent, mode=mode, resources=names,
                              conflict=conflict)
        except Deadlock as exc:
            return LockAnswer(granted=False, agent=agent, mode=mode, resources=names,
                              conflict=Conflict(message=str(exc), cycle=list(exc.cycle)))
        with self._guard:
            self._leases.append(lease)
        return LockAnswer(
            granted=True, agent=agent, mode=mode, lease=lease.id, fence=lease.fence,
            resources=[str(c.resource) for c in lease.claims],
        )

    def unlock(self, resources: list[str]) -> UnlockAnswer:
        """Release what this server locked on ``resources``: a lease whose every resource is
        named ends whole; the rest are taken out of the agent's locks one by one."""
        agent = self.agent()
        manager = self.manager
        wanted = {manager.resolve(r) for r in resources}
        released: list[str] = []
        with self._guard:
            leases = [lease for lease in self._leases if not lease.released]
        for lease in leases:
            held = {c.resource for c in lease.claims}
            if held and held <= wanted:
                # A whole lease of ours: releasing it ends exactly its grant, never a claim the
                # session's hooks took on the same file (same agent, another grant).
                lease.release()
                released.extend(sorted(str(r) for r in held))
                wanted -= held
        if wanted:
            claims = manager.unlock(sorted(wanted), agent=agent)
            released.extend(str(c.resource) for c in claims)
        with self._guard:
            self._leases = [lease for lease in self._leases if not lease.released]
        return UnlockAnswer(agent=agent, released=sorted(set(released)))

    def locks(self, path: str | None) -> LocksAnswer:
        agent = self.agent()
        manager = self.manager
        table = manager.sweep()
        queue = sorted(table.waiters, key=lambda w: (-w.priority, w.seq))
        held = [_entry(g, agent) for g in table.locks]
        waiting = [_entry(w, agent) for w in queue]
        check = None
        if path is not None:
            resource = manager.resolve(path)
            records: list[Grant | Waiter] = [*table.locks, *queue]
            covering = [
                (record, entry) for record, entry in zip(records, [*held, *waiting], strict=True)
                if any(_overlaps(c.resource, resource) for c in record.claims)
            ]
            check = PathCheck(
                path=str(resource), held_by=[entry for _, entry in covering],
                free_for_you=not any(record.agent != agent for record, _ in covering),
            )
        return LocksAnswer(agent=agent, locks=held, waiting=waiting, path=check)

    # Checkpoints ------------------------------------------------------------------------------
    def _checkpoints(self) -> Any:
        from versatil_fs.checkpoints import Checkpoints

        return Checkpoints(self.cwd, state=self.state)

    def checkpoint_create(self, message: str) -> CheckpointInfo:
        return _checkpoint(self._checkpoints().create(message, agent=self.agent()))

    def checkpoint_list(self) -> CheckpointList:
        return CheckpointList(
            checkpoints=[_checkpoint(r) for r in self._checkpoints().list(all_worktrees=False)]
        )

    def checkpoint_diff(self, checkpoint_id: str) -> CheckpointDiff:
        store = self._checkpoints()
        record = store.show(checkpoint_id)
        changes = store.diff(record.id)
        return CheckpointDiff(
            checkpoint=record.id,
            changes=[FileChange(status=c.status, path=c.path) for c in changes],
        )

    def checkpoint_restore(
        self, checkpoint_id: str, paths: list[str] | None, agent: str | None,
    ) -> RestoreAnswer:
        result = self._checkpoints().restore(
            checkpoint_id, paths=paths, agent=agent, by=self.agent(),
        )
        return RestoreAnswer(
            checkpoint=result.checkpoint, safety_checkpoint=result.safety_checkpoint,
            restored=list(result.restored), removed=list(result.removed),
        )

    # Waves ------------------------------------------------------------------------------------
    def wave_status(self, run: str | None) -> WaveStatus:
        from versatil_fs.repo import Repository
        from versatil_fs.waves.store import RunStore, effective_status

        store = RunStore(self.state)
        if run is not None:
            found = store.load(run)
        else:
            runs = store.runs(Repository.find(self.cwd).key)
            if not runs:
                return WaveStatus()
            found = runs[-1]
        return WaveStatus(
            run=found.id, status=effective_status(found, store), counts=found.counts(),
            tasks=[
                TaskStatus(id=t.id, agent=t.agent, wave=t.wave, status=t.status,
                           exit_code=t.exit_code, error=t.error)
                for t in found.tasks.values()
            ],
        )

    def close(self) -> None:
        with self._guard:
            manager, self._manager = self._manager, None
        if manager is not None:
            manager.close()


def _overlaps(a: Resource, b: Resource) -> bool:
    # The lock core's own rule, globs included (exact, with the space's core.ignorecase).
    return a.overlaps(b)


def _entry(record: Grant | Waiter, agent: str) -> LockEntry:
    queued = isinstance(record, Waiter)
    return LockEntry(
        agent=record.agent, lease=record.id, session=record.session, pid=record.pid,
        resources=[str(c.resource) for c in record.claims],
        mode=[c.mode for c in record.claims],
        since=record.since if isinstance(record, Waiter) else record.acquired_at,
        until=None if queued else expires_wall(record), queued=queued,
        mine=record.agent == agent, fence=record.fence if isinstance(record, Grant) else None,
    )


def _checkpoint(record: Any) -> CheckpointInfo:
    data = msgspec.to_builtins(record)
    return CheckpointInfo(**{k: data[k] for k in CheckpointInfo.model_fields if k in data})


# The protocol -----------------------------------------------------------------------------------
def _sentence(exc: Exception) -> str:
    if isinstance(exc, VersatilError):
        return " ".join(str(exc).split())
    # Not one of ours: a bug or an OS failure. One sentence, never the traceback (the agent
    # cannot act on it; `versatil --debug` reproduces it for a person).
    return f"versatil could not do this ({type(exc).__name__}: {' '.join(str(exc).split())})."


def _guarded(call: Any) -> Any:
    """``call`` with every exception turned into a ToolError carrying versatil's sentence."""
    import functools

    @functools.wraps(call)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except ToolError:
            raise
        except Exception as exc:
            raise ToolError(_sentence(exc)) from None

    return wrapper


Resources = Annotated[
    list[str],
    Field(min_length=1, description="Paths (relative to the repository, or absolute) or named "
          "resources (kind:name, e.g. db:users)."),
]


def build(harness: str = "", *, tools: Tools | None = None) -> tuple[MCPServer, Tools]:
    """The server, with one tool per operation, and the :class:`Tools` behind it."""
    from importlib.metadata import version

    does = tools or Tools(harness)
    server: MCPServer = MCPServer(
        "versatil", instructions=INSTRUCTIONS, version=version("versatil-fs"),
        log_level="WARNING",
    )
    _lock_tools(server, does)
    _checkpoint_tools(server, does)
    return server, does


def _lock_tools(server: MCPServer, does: Tools) -> None:
    """lock, unlock, locks: the tools an agent reserves its files with."""

    @server.tool()
    @_guarded
    def lock(
        resources: Resources,
        mode: Literal["write", "read"] = "write",
        wait_seconds: Annotated[float, Field(ge=0, le=600, description="Seconds to wait in the "
                                             "queue for the holders to finish.")] = 0,
        reason: Annotated[str, Field(max_length=160, description="Why, for people reading "
                                     "`versatil locks`.")] = "",
    ) -> LockAnswer:
        """Lock files, directories or named resources for your agent, all or none.

        Granted locks last until `unlock` or the end of your session. When another agent holds
        one, the answer is granted=false with the conflict: who holds it, since and until when.
        """
        return does.lock(resources, mode, wait_seconds, reason)

    @server.tool()
    @_guarded
    def unlock(resources: Resources) -> UnlockAnswer:
        """Release your locks on these resources."""
        return does.unlock(resources)

    @server.tool()
    @_guarded
    def locks(
        path: Annotated[str | None, Field(description="A path to check: is it free for you?")]
        = None,
    ) -> LocksAnswer:
        """Who holds which locks and who waits for what, in queue order; with `path`, whether
        that path is free for you (nobody else holds or waits for a lock covering it)."""
        return does.locks(path)


def _checkpoint_tools(server: MCPServer, does: Tools) -> None:
    """The checkpoint tools and wave_status: what an agent saves, compares, restores, watches."""

    @server.tool()
    @_guarded
    def checkpoint_create(
        message: Annotated[str, Field(description="What this checkpoint is.")] = "",
    ) -> CheckpointInfo:
        """Save the whole working tree as a checkpoint (the index, HEAD and stash untouched)."""
        return does.checkpoint_create(message)

    @server.tool()
    @_guarded
    def checkpoint_list() -> CheckpointList:
        """This worktree's checkpoints, oldest first."""
        return does.checkpoint_list()

    @server.tool()
    @_guarded
    def checkpoint_diff(
        id: Annotated[str, Field(description="A checkpoint id, or a unique prefix of one.")],
    ) -> CheckpointDiff:
        """What changed in the working tree since the checkpoint."""
        return does.checkpoint_diff(id)

    @server.tool()
    @_guarded
    def checkpoint_restore(
        id: Annotated[str, Field(description="A checkpoint id, or a unique prefix of one.")],
        paths: Annotated[list[str] | None, Field(description="Only these files and "
                                                 "directories.")] = None,
        agent: Annotated[str | None, Field(description="Only the files this agent modified "
                                           "since the checkpoint.")] = None,
    ) -> RestoreAnswer:
        """Put files back as they were in the checkpoint (all, or `paths`, or `agent`'s).

        What is on disk is saved first (safety_checkpoint undoes the restore); files another
        agent has locked are refused.
        """
        return does.checkpoint_restore(id, paths, agent)

    @server.tool()
    @_guarded
    def wave_status(
        run: Annotated[str | None, Field(description="A run id; default: the latest run of "
                                         "this repository.")] = None,
    ) -> WaveStatus:
        """Where a wave run is: its status and each task's."""
        return does.wave_status(run)


def serve(harness: str = "") -> int:
    """Run the stdio server until the harness closes its stdin; 0."""
    import signal

    # A harness started in a terminal shares its process group with this server, so a Ctrl-C
    # meant for the harness would end the server (and every lock of the session) while the
    # session goes on. The harness ends the server itself: it closes our stdin, then SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    server, tools = build(harness)
    try:
        server.run("stdio")
    finally:
        tools.close()
    return 0
