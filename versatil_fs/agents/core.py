"""The one decision core of the harness hooks: what a hook call means for the session's locks.

Every harness adapter (:mod:`versatil_fs.agents.harnesses`) reduces its payload to a
:class:`~versatil_fs.agents.protocol.HookCall`; :class:`Sessions` answers it with a
:class:`~versatil_fs.agents.protocol.Verdict`, the same way for every harness:

* **before an edit** the files the tool will write are claimed for the session's agent — a
  write lock taken at once, or after ``[agents] wait_on_edit`` seconds in the queue — unless
  another agent holds one: then the edit is denied, and the reason names the file, the holder,
  since and until when, and what to do. Paths outside the repository are left alone;
* **after an edit** the files are recorded as modified by this agent (the ``files-modified``
  event ``checkpoint restore --agent`` reads): attribution by the writer, not by the lock;
* **around a shell tool** (no paths known) the tree is scanned before and after; what changed
  is this agent's, except files another agent holds, which are reported to the agent and
  logged as collisions (they are more likely the holder's own writes than the command's, and
  attributing them here would let ``restore --agent`` roll back the holder's work);
* **at session start** the agent is told which files others hold, and ``VERSATIL_AGENT`` is
  stamped for its shell where the harness offers a way (Claude Code's ``$CLAUDE_ENV_FILE``), so
  its own ``git commit`` passes the guard as itself;
* **at session end** every claim of the session is released.

Nothing stands against the edit: the verdict is silent (see ``Verdict``).

Where the session's claims live is the caller's choice (``owner``): the keeper
(:mod:`versatil_fs.agents.keeper`) holds them as process leases, which end the moment the
keeper — who lives exactly as long as the harness process — dies; the in-process fallback
takes shell leases that end at session end or after their lifetime.

**The fail policy.** When versatil itself cannot decide (damaged state it cannot rebuild, a
payload it cannot read, a bug), ``[agents] on_error`` answers: ``"allow"`` (the default, as
every harness already treats a failing hook) lets the call through with a warning to the agent;
``"deny"`` refuses it. Never a traceback into the agent's context.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from versatil_fs import events
from versatil_fs.agents import harnesses
from versatil_fs.agents.identity import agent_name
from versatil_fs.agents.messages import (
    collision_note,
    deny_reason,
    fail_verdict,
    sentence,
    start_note,
)
from versatil_fs.agents.protocol import BadPayload, HookCall, Reply, Verdict
from versatil_fs.errors import Deadlock, LockConflict, NotARepository, UsageError
from versatil_fs.locks import clock, globs
from versatil_fs.locks.holders import WriteLocks
from versatil_fs.locks.manager import Lease, LockManager
from versatil_fs.locks.table import Grant, Owner, Resource, path_overlaps
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir

__all__ = ["Session", "Sessions"]

_STREAM = "collision-detection"


class Sessions:
    """The sessions one process answers for, each with its claims, by (harness, session id)."""

    def __init__(self, state: StateDir | None = None, *, owner: Owner = "process") -> None:
        self.state = state or StateDir()
        self.owner: Owner = owner
        self._sessions: dict[tuple[str, str], Session] = {}
        self._managers: dict[Path, LockManager] = {}
        self._guard = threading.Lock()

    def answer(self, harness: str, raw: bytes, env: Mapping[str, str], cwd: str) -> Reply:
        """The reply to one hook call, in the harness's own form; never raises."""
        try:
            call = harnesses.parse(harness, raw, env, cwd)
        except BadPayload as exc:
            return harnesses.render(harness, None, fail_verdict(str(exc), self._on_error(cwd)))
        try:
            verdict = self.session(call, env).handle(call)
        except Exception as exc:  # the fail policy: one sentence, never a traceback
            verdict = fail_verdict(sentence(exc), self._on_error(call.cwd))
        return harnesses.render(harness, call, verdict)

    def session(self, call: HookCall, env: Mapping[str, str]) -> Session:
        key = (call.harness, call.session_id)
        with self._guard:
            found = self._sessions.get(key)
            if found is None:
                found = self._sessions[key] = Session(self, call, env)
            return found

    def agents(self) -> list[str]:
        """The agents the live sessions act for, sorted."""
        with self._guard:
            return sorted({s.last_agent for s in self._sessions.values() if s.last_agent})

    def manager(self, repo: Repository) -> LockManager:
        with self._guard:
            found = self._managers.get(repo.toplevel)
            if found is None:
                found = self._managers[repo.toplevel] = LockManager(repo, state=self.state)
            return found

    def end(self, call: HookCall) -> None:
        with self._guard:
            session = self._sessions.pop((call.harness, call.session_id), None)
        if session is not None:
            session.release()

    def close(self) -> None:
        """Release every session's claims (the keeper's harness is gone)."""
        with self._guard:
            sessions = list(self._sessions.values())
            self._sessions.clear()
            managers = list(self._managers.values())
        for session in sessions:
            session.release()
        for manager in managers:
            manager.close()

    def detach(self) -> None:
        """Let go of the lock managers without ending any claim: the in-process fallback's
        claims are shell leases, which outlive this process until session end or their TTL."""
        with self._guard:
            managers = list(self._managers.values())
            self._managers.clear()
        for manager in managers:
            manager.close()

    def _on_error(self, cwd: str) -> str:
        try:
            return self.manager(Repository.find(cwd)).config.harness.on_error
        except Exception:
            # The configuration itself cannot be read: allow, as every harness would for a
            # hook that failed outright.
            return "allow"


class Session:
    """One harness session: its agent, its claims and its shell-tool baselines."""

    def __init__(self, owner: Sessions, call: HookCall, env: Mapping[str, str]) -> None:
        self.sessions = owner
        self.harness = call.harness
        self.session_id = call.session_id
        self.env = dict(env)
        self.label = f"{call.harness} {call.session_id}"
        self.last_agent = ""  # the agent its latest call acted for (the commit guard asks)
        self._claimed: dict[Resource, Lease] = {}
        self._baselines: dict[Path, dict[str, tuple[int, int, int, int]]] = {}
        self._guard = threading.Lock()

    # Deciding --------------------------------------------------------------------------------
    def handle(self, call: HookCall) -> Verdict:
        repo = _repository(call.cwd)
        manager = self.sessions.manager(repo) if repo is not None else None
        if call.event == "session-end":
            self.sessions.end(call)
            return Verdict()
        if repo is None or manager is None:
            return Verdict()  # not in a repository: nothing of ours to protect
        agent = self.last_agent = self.agent(call, manager)
        if call.event == "pre-edit":
            return self._pre_edit(call, repo, manager, agent)
        if call.event == "post-edit":
            return self._post_edit(call, repo, manager, agent)
        if call.event == "pre-shell":
            self._baselines[repo.toplevel] = self._scan(repo, manager)
            return Verdict()
        if call.event == "post-shell":
            return self._post_shell(repo, manager, agent)
        if call.event == "session-start":
            return self._session_start(call, repo, manager, agent)
        return Verdict()

    def agent(self, call: HookCall, manager: LockManager) -> str:
        settings = manager.config.harness
        return agent_name(
            call.harness, call.session_id, call.agent_id, self.env, name=settings.name,
            names=settings.names, subagents=settings.subagents,
        )

    def _pre_edit(
        self, call: HookCall, repo: Repository, manager: LockManager, agent: str
    ) -> Verdict:
        wanted = {
            resource: path for path, resource in _resources(call, repo, manager)
            if not self._holds(resource)
        }
        if wanted and self.sessions.owner == "shell":
            # The in-process fallback remembers nothing between hook processes: what an earlier
            # call of this session claimed is in the table, under the session's name. A claim
            # already there is taken again only when half its lifetime is gone, which renews it.
            for grant in manager.holders():
                if grant.session == self.label and _fresh(grant):
                    for claim in grant.claims:
                        wanted.pop(claim.resource, None)
        if not wanted:
            return Verdict()
        try:
            lease = manager.acquire(
                list(wanted), agent=agent, wait=manager.config.harness.wait_on_edit,
                owner=self.sessions.owner, session=self.label,
            )
        except LockConflict as exc:
            return Verdict(deny=deny_reason(exc, _edited(exc, wanted, repo)))
        except Deadlock as exc:
            return Verdict(deny=f"versatil denied this edit: {exc}")
        with self._guard:
            for resource in wanted:
                self._claimed[resource] = lease
        return Verdict()

    def _post_edit(
        self, call: HookCall, repo: Repository, manager: LockManager, agent: str
    ) -> Verdict:
        paths = [repo.relpath(p) for p, _ in _resources(call, repo, manager)]
        return self._attribute(paths, repo, manager, agent, what="Your edit")

    def _post_shell(self, repo: Repository, manager: LockManager, agent: str) -> Verdict:
        before = self._baselines.pop(repo.toplevel, None)
        if before is None:
            return Verdict()  # the command started before this session's hooks saw it
        from versatil_fs.monitor.scan import modified

        return self._attribute(
            modified(before, self._scan(repo, manager)), repo, manager, agent,
            what="Your last command",
        )

    def _attribute(
        self, paths: list[str], repo: Repository, manager: LockManager, agent: str, *, what: str
    ) -> Verdict:
        """Record ``paths`` as ``agent``'s, except those another agent holds: those are
        collisions, logged and told to the agent."""
        if not paths:
            return Verdict()
        others = WriteLocks(manager.holders(), repo.key, except_agent=agent)
        collisions: list[tuple[str, Grant]] = []
        mine: list[str] = []
        for path in paths:
            held = others.holder(path)
            if held is None:
                mine.append(path)
            else:
                collisions.append((path, held[0]))
        if mine:
            from versatil_fs.checkpoints.selection import record_files_modified

            record_files_modified(repo, agent, mine, state=self.sessions.state)
        for path, grant in collisions:
            events.emit_done(
                _STREAM, "collision", agent=agent, repo=repo.key, state=self.sessions.state,
                path=path, holder=grant.agent, lease=grant.id, source="agent-hook",
                session=self.label,
            )
        if not collisions:
            return Verdict()
        return Verdict(context=collision_note(what, [(p, g.agent) for p, g in collisions]))

    def _session_start(
        self, call: HookCall, repo: Repository, manager: LockManager, agent: str
    ) -> Verdict:
        if call.env_file:
            _stamp_agent(call.env_file, agent)
        others = sorted(
            (claim.resource.path, grant.agent)
            for grant in manager.holders() if grant.agent != agent
            for claim in grant.claims
            if claim.mode == "write" and claim.resource.is_path
            and claim.resource.repo == repo.lock_space()[0]
        )
        return Verdict(context=start_note(agent, others)) if others else Verdict()

    # Claims ----------------------------------------------------------------------------------
    def _holds(self, resource: Resource) -> bool:
        with self._guard:
            lease = self._claimed.get(resource)
            return lease is not None and not lease.released

    def release(self) -> None:
        """End every claim of the session, now."""
        with self._guard:
            leases = {id(lease): lease for lease in self._claimed.values()}
            self._claimed.clear()
        for lease in leases.values():
            lease.release()
        if self.sessions.owner == "shell":
            # Claims taken by earlier hook processes (the in-process fallback keeps no memory
            # between calls) are found by the session they carry.
            for manager in list(self.sessions._managers.values()):
                _release_labelled(manager, self.label)

    def _scan(self, repo: Repository, manager: LockManager) -> dict[str, tuple[int, int, int, int]]:
        from versatil_fs.monitor.ignore import IgnoreMatcher
        from versatil_fs.monitor.scan import scan

        with IgnoreMatcher(repo, manager.config.guard.ignore, state=self.sessions.state) as m:
            return scan(repo.toplevel, ["."], m)


# Helpers ------------------------------------------------------------------------------------------
def _repository(cwd: str) -> Repository | None:
    try:
        return Repository.find(cwd)
    except (NotARepository, UsageError):
        return None


def _resources(
    call: HookCall, repo: Repository, manager: LockManager
) -> Iterable[tuple[str, Resource]]:
    """``(absolute path, resource)`` for each path of the call inside the repository."""
    seen: set[str] = set()
    for raw in call.paths:
        path = os.path.join(call.cwd, raw)  # an absolute `raw` stays itself
        if path in seen:
            continue
        seen.add(path)
        try:
            repo.relpath(path)  # outside the repository or inside .git: not ours to guard
        except UsageError:
            continue
        # Absolute, so that a file named like a named resource (`db:users`) stays a path.
        yield path, manager.resolve(path)


def _edited(exc: LockConflict, wanted: Mapping[Resource, str], repo: Repository) -> str:
    """The file of the edit that the conflict is about (the first wanted one it covers)."""
    for resource, path in wanted.items():
        if resource.is_path and _within(exc.resource, resource.path):
            return repo.relpath(path)
    return repo.relpath(next(iter(wanted.values())))


def _within(locked: str, path: str) -> bool:
    """Whether the lock named ``locked`` (a path or a pattern, as a conflict names it) and the
    repo-relative ``path`` overlap."""
    if path_overlaps(locked, path):
        return True
    if not globs.is_glob(locked):
        return False
    try:
        return globs.overlap(globs.parse(locked), globs.plain(path)) is not None
    except UsageError:
        return False


def _stamp_agent(env_file: str, agent: str) -> None:
    """Append ``export VERSATIL_AGENT=...`` to the harness's environment file."""
    import shlex

    # The harness created this file for exactly this; O_NOFOLLOW so a planted symlink cannot
    # turn the append into a write elsewhere, and only a regular file of ours is appended to.
    fd = os.open(env_file, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid():
            os.write(fd, f"export VERSATIL_AGENT={shlex.quote(agent)}\n".encode())
    finally:
        os.close(fd)


def _fresh(grant: Grant) -> bool:
    """Whether a shell lease has more than half its lifetime left."""
    return grant.expires_at - clock.CLOCK.wall() > grant.ttl / 2


def _release_labelled(manager: LockManager, label: str) -> None:
    for grant in manager.holders():
        if grant.session == label:
            try:
                manager.unlock([c.resource for c in grant.claims], agent=grant.agent)
            except LockConflict:
                pass  # released meanwhile
