"""The pre-commit check: which staged paths another agent's write lock covers, and the
message a refused commit prints.

:func:`check` runs on every commit, so it is built for start-up time: it imports neither
watchdog, rich nor yaml, starts ``git diff`` and ``git config`` in the background
while it reads the lock table, and matches staged paths against an index of write locks (one
dict probe per ancestor directory) instead of every staged path against every lock.

A committer that presents a fencing token (``VERSATIL_FENCE``, :mod:`versatil_fs.locks.fencing`)
is also refused for the staged files a newer lock has superseded it on: its own lease ended
(expired, force-released) and another grant, with a greater token, covers them now.

It fails closed: a lock table that cannot be read safely (permission denied, a planted symlink,
a foreign owner) refuses the commit with one sentence naming the file. A table that merely did
not parse is not such a case: the lock store moves it aside, says so, and rebuilds it from the
lease files of the live holders, so the check still sees every live lock.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from versatil_fs import git
from versatil_fs.errors import GitFailed, Refused, StateError
from versatil_fs.hook.context import git_message, hook_env, repository
from versatil_fs.repo import Repository

if TYPE_CHECKING:
    from versatil_fs.locks.fencing import CallerLock, Superseded
    from versatil_fs.locks.table import Claim, Grant

__all__ = [
    "Blocked",
    "CheckResult",
    "StagedPath",
    "check",
    "committer",
    "decide",
    "find_blocked",
    "find_superseded",
    "live_grants",
    "log_refusal",
    "parse_name_status",
    "presented_fence",
    "refusal",
    "session_committer",
]


_STATUS = {
    "A": "added",
    "M": "modified",
    "D": "deleted",
    "T": "type changed",
    "U": "unmerged",
    "X": "changed",
}


class StagedPath(msgspec.Struct, frozen=True):
    """One path a commit would change, and how (``renamed from`` / ``renamed to`` for both
    sides of a rename)."""

    path: str
    change: str


class Blocked(msgspec.Struct, frozen=True):
    """A staged path and the write lock of another agent that covers it."""

    staged: StagedPath
    grant: Grant
    claim: Claim


class CheckResult(msgspec.Struct, kw_only=True):
    committer: str | None  # None: a human (no agent identity configured)
    committer_source: str
    staged: list[StagedPath]
    blocked: list[Blocked] = msgspec.field(default_factory=list)
    repository: str = ""  # the working tree the staged paths are relative to
    # Under the pre-commit framework: unstaged files it stashed for this commit (and puts back
    # after the hooks) that another agent holds a live write lock on.
    stashed: list[Blocked] = msgspec.field(default_factory=list)
    # The token the committer presented ($VERSATIL_FENCE; None: none), and the staged files
    # on which a newer lock has superseded it.
    fence: int | None = None
    superseded: list[Superseded] = msgspec.field(default_factory=list)
    caller_lock: CallerLock | None = None  # the presented token's grant, from the lock log
    repo_key: str = ""  # the repository's key (its git common dir), which paths are keyed by

    @property
    def allowed(self) -> bool:
        return not self.blocked and not self.stashed and not self.superseded


def parse_name_status(output: bytes) -> list[StagedPath]:
    """The paths of ``git diff --name-status -z`` output; both sides of renames and copies.

    The source of a copy is listed too although the commit leaves it unchanged: its content
    comes from a file another agent may be halfway through writing.
    """
    fields = output.split(b"\0")
    if fields and fields[-1] == b"":
        fields.pop()
    staged: list[StagedPath] = []
    i = 0
    while i < len(fields):
        status = fields[i].decode("ascii", "replace")
        kind = status[:1]
        if kind in ("R", "C"):
            if i + 2 >= len(fields):
                raise Refused(f"Could not read the staged changes: git printed {status} alone.")
            verb = "renamed" if kind == "R" else "copied"
            staged.append(StagedPath(os.fsdecode(fields[i + 1]), f"{verb} from"))
            staged.append(StagedPath(os.fsdecode(fields[i + 2]), f"{verb} to"))
            i += 3
        else:
            if i + 1 >= len(fields):
                raise Refused(f"Could not read the staged changes: git printed {status} alone.")
            staged.append(StagedPath(os.fsdecode(fields[i + 1]), _STATUS.get(kind, "changed")))
            i += 2
    return staged


def find_blocked(
    staged: Iterable[StagedPath], grants: Iterable[Grant], repo_key: str, committer: str | None
) -> list[Blocked]:
    """Staged paths covered by a write lock of an agent other than ``committer`` (any agent
    when ``committer`` is None: a human).

    Indexed by locked path (:class:`~versatil_fs.locks.holders.WriteLocks`): a commit of 1,000
    files against 100 locks costs a few thousand dict probes, not 100,000 comparisons.
    """
    from versatil_fs.locks.holders import WriteLocks

    locks = WriteLocks(grants, repo_key, except_agent=committer)
    if not locks:
        return []
    blocked: list[Blocked] = []
    for item in staged:
        hit = locks.holder(item.path)
        if hit is not None:
            blocked.append(Blocked(item, *hit))
    return blocked


def presented_fence() -> int | None:
    """The committer's ``$VERSATIL_FENCE`` (None: none); :class:`UsageError` when it is not a
    token. The fencing module is imported only when the variable is set: most commits
    present none, and each import is start-up time on every commit."""
    if not os.environ.get("VERSATIL_FENCE", "").strip():
        return None
    from versatil_fs.locks.fencing import presented

    return presented()


def find_superseded(
    staged: Iterable[StagedPath], grants: list[Grant], repo_key: str, fence: int | None
) -> tuple[list[Superseded], CallerLock | None]:
    """Staged paths on which the presented token ``fence`` is superseded by a newer lock, and
    the token's lock as the lock log recorded it (None: not looked up)."""
    if fence is None:
        return [], None
    from versatil_fs.locks.fencing import superseded

    return superseded(((s.path, s.change) for s in staged), grants, repo_key, fence)


def check(start: str | os.PathLike[str] = ".") -> CheckResult:
    """What the pre-commit hook decides for the changes staged in the repository at ``start``.

    Raises :class:`Refused` when the staged changes or the lock table cannot be read: a guard
    that cannot see the locks must not wave the commit through; :class:`UsageError` when
    ``$VERSATIL_FENCE`` is set to something that is not a token.
    """
    fence = presented_fence()  # first: a bad token is exit 2 whatever is staged
    repo = repository(start)
    session = session_committer()
    # Both git commands run while we read the lock table: on two cores that hides their cost.
    with (
        _git(repo, "diff", "--cached", "--name-status", "-z") as diff,
        _git(repo, "config", "--get", "versatil.agent", wanted=not session[0]) as config,
    ):
        grants = live_grants(repo)
        diff_out, diff_err = diff.communicate() if diff else (b"", b"")
        config_out = config.communicate()[0] if config else None
    if diff is None or diff.returncode != 0:
        raise Refused(
            f"Could not list the staged changes of {repo.toplevel}, so the commit is refused: "
            f"{_why_git_failed(repo.toplevel, diff_err)}"
        )
    if config is not None and config.returncode != 0:
        config_out = None
    name, source = committer(session, config_out)
    return decide(
        repo, (name, source), parse_name_status(diff_out), grants, fence,
        stashed=_stashed_and_locked(repo, grants, name),
    )


def decide(
    repo: Repository,
    who: tuple[str | None, str],
    staged: list[StagedPath],
    grants: list[Grant],
    fence: int | None,
    *,
    stashed: list[Blocked] | None = None,
) -> CheckResult:
    """The guard's decision on ``staged`` changes by the committer ``who`` (name, where it
    came from), against the live ``grants``: blocked files, files a newer lock superseded the
    presented ``fence`` on, and the refusal logged. Shared by the pre-commit and the strict
    guard, which differ only in how they find the changes."""
    name, source = who
    fenced, mine = find_superseded(staged, grants, repo.key, fence)
    result = CheckResult(
        committer=name,
        committer_source=source,
        staged=staged,
        blocked=find_blocked(staged, grants, repo.key, name),
        repository=str(repo.toplevel),
        stashed=stashed or [],
        fence=fence,
        superseded=fenced,
        caller_lock=mine,
        repo_key=repo.key,
    )
    if not result.allowed:
        log_refusal(result, repo)
    return result


def session_committer() -> tuple[str, str]:
    """The committer named without asking git: ``(agent, where the name came from)`` from
    VERSATIL_AGENT or the agent session running this git command; ``("", "")`` for neither.

    Shared by the pre-commit guard and the strict reference-transaction guard, so both name
    the committer the same way.
    """
    env_agent = os.environ.get("VERSATIL_AGENT", "").strip()
    if env_agent:
        return env_agent, "VERSATIL_AGENT"
    # An agent's own commit, from inside its harness (Codex, Gemini CLI, ... do not put
    # VERSATIL_AGENT in the agent's shell): the session keeper above us names the agent.
    from versatil_fs.agents.client import session_agent

    agent = session_agent(os.environ) or ""
    return (agent, "the agent session running this commit") if agent else ("", "")


def committer(session: tuple[str, str], config_out: bytes | None) -> tuple[str | None, str]:
    """The committer and where the name came from: :func:`session_committer`'s answer, else
    ``git config --get versatil.agent``'s output (None: not set, or not asked), else a human
    (None), whom every write lock binds."""
    if session[0]:
        return session
    if config_out is not None and config_out.strip():
        return config_out.decode(errors="replace").strip(), "git config versatil.agent"
    return None, "no VERSATIL_AGENT or git config versatil.agent"


def _stashed_and_locked(
    repo: Repository, grants: list[Grant], committer: str | None
) -> list[Blocked]:
    """Under the pre-commit framework (``PRE_COMMIT=1``): the files it stashed for this commit
    that another agent's write lock covers. The stash reverted them to the index while that
    agent may be writing them; the un-stash after the hooks re-applies a patch of what they
    were, so whatever the agent writes meanwhile is lost (issue 15, item 11)."""
    from versatil_fs.hook import framework

    if not framework.under_framework():
        return []
    patch = framework.stash_patch()
    if patch is None:
        return []  # nothing unstaged: the framework stashed nothing
    paths = framework.stashed_paths(repo.toplevel, patch)
    if not paths:
        return []
    framework.log_stash(repo, patch, paths)  # so the monitor knows the un-stash for its own
    stashed = [StagedPath(p, "unstaged, stashed by the pre-commit framework") for p in paths]
    return find_blocked(stashed, grants, repo.key, committer)


def _why_git_failed(where: Path, stderr: bytes) -> str:
    """One sentence for a git command that failed in ``where``.

    Outside a repository it recognises (one it refuses for dubious ownership, say), ``git
    diff`` does not say so: it falls back to ``--no-index`` mode and prints its whole usage,
    about a hundred lines. So the reason is asked of ``git rev-parse``, on this failure path
    only, and a refusal for ownership names the ``safe.directory`` setting that lifts it.
    """
    try:
        probe = git.run(["rev-parse", "--git-dir"], cwd=where, env=hook_env(), check=False)
    except GitFailed:
        return git_message(where, stderr)
    if probe.returncode != 0:
        stderr = probe.stderr
    return git_message(where, stderr)


def log_refusal(result: CheckResult, repo: Repository) -> None:
    """A refused commit is a collision caught: ``versatil logs collision-detection`` shows it."""
    from versatil_fs import events
    from versatil_fs.errors import VersatilError

    extra: dict[str, Any] = {}
    if result.stashed:
        extra["stashed"] = [b.staged.path for b in result.stashed]
    holders = {b.grant.agent for b in [*result.blocked, *result.stashed]}
    files = [b.staged.path for b in result.blocked]
    if result.superseded and result.fence is not None:
        from versatil_fs.locks.fencing import event_fields

        # Both tokens: the one presented and each newer grant's, with its files.
        extra.update(event_fields(result.fence, result.superseded))
        holders.update(s.grant.agent for s in result.superseded)
        files += [s.path for s in result.superseded if s.path not in set(files)]
    try:
        events.emit(
            "collision-detection",
            "commit-refused",
            agent=result.committer,
            repo=repo.key,
            files=files,
            holders=sorted(holders),
            **extra,
        )
    except (VersatilError, OSError):
        pass  # the commit is refused either way; a log we cannot write must not hide why


@contextmanager
def _git(
    repo: Repository, *args: str, wanted: bool = True
) -> Iterator[subprocess.Popen[bytes] | None]:
    if not wanted:
        yield None
        return
    try:
        proc = git.spawn(list(args), cwd=repo.toplevel, env=hook_env(), stdin=subprocess.DEVNULL)
    except GitFailed as exc:
        raise Refused(f"Could not run git ({exc}), so the commit is refused.") from exc
    try:
        yield proc
    finally:
        if proc.returncode is None:  # we left early (an error): do not leave a zombie behind
            proc.kill()
            proc.communicate()


def live_grants(repo: Repository) -> list[Grant]:
    from versatil_fs.state import home

    root = home()
    if not os.path.lexists(root):
        # Nobody ever took a lock with this state directory; do not create it on every commit.
        # Unless the locks are on a server (store.backend = "postgres"): other machines' count.
        from versatil_fs.config import store_backend
        from versatil_fs.state import StateDir

        if store_backend(repo.toplevel, state=StateDir(root)) == "local":
            return []
    from versatil_fs.locks.manager import LockManager

    try:
        return LockManager(repo=repo).holders()
    except StateError as exc:
        raise Refused(
            f"The commit is refused because the lock table cannot be read safely: {exc}"
        ) from exc
    except OSError as exc:
        where = exc.filename or root
        raise Refused(
            f"The commit is refused because the lock state under {where} cannot be read "
            f"({exc.strerror or exc}); fix its permissions or point VERSATIL_HOME elsewhere."
        ) from exc


def refusal(result: CheckResult, *, escape: str = "git commit --no-verify") -> str:
    """The message a refused commit prints: each file, who holds it since and until when, and
    the ways out (and, under the pre-commit framework, the locked files it stashed).

    ``escape`` is the command that skips the guard, the last way out: the strict guard
    (:mod:`versatil_fs.hook.strict`), which --no-verify does not skip, names its own. Files
    on which the committer's token is superseded come first, each said once.
    """
    parts: list[str] = []
    if result.superseded:
        parts.append(_fence_refusal(result, escape))
    fenced = {s.path for s in result.superseded}
    blocked = [b for b in result.blocked if b.staged.path not in fenced]
    if blocked:
        parts.append(_staged_refusal(result, blocked, escape, first=not parts))
    if result.stashed or not parts:
        parts.append(_stash_refusal(result, first=not parts))
    return "\n".join(parts)


def _fence_refusal(result: CheckResult, escape: str) -> str:
    from versatil_fs.locks.fencing import CallerLock, describe

    assert result.fence is not None
    mine = result.caller_lock or CallerLock(fence=result.fence)
    by_grant: dict[str, list[Superseded]] = {}
    for item in result.superseded:
        by_grant.setdefault(item.grant.id, []).append(item)
    lines: list[str] = []
    for files in by_grant.values():
        lead = (f"versatil: commit refused{_inrepository(result.repository)}: " if not lines
                else "And ")
        lines.append(f"{lead}{describe(mine, files, result.repo_key)}:")
        lines.extend(f"  {item.path} ({item.change})" for item in files)
    lines = [_printable(line) for line in lines]
    agents = sorted({item.grant.agent for item in result.superseded})
    lines.append("Ways out:")
    lines.append(
        f"  - lock those files again (once {_or(agents)} has released them: see `versatil "
        "locks`), check that your changes still stand, and commit with the new lock's token: "
        "export VERSATIL_FENCE=$(versatil lock --json FILE... | jq .fence);"
    )
    lines.append(
        "  - if this commit is not made under a lock, commit without a token (unset "
        "VERSATIL_FENCE): the other agents' locks are still checked;"
    )
    lines.append(f"  - or commit anyway with {escape}, at your own risk.")
    return "\n".join(lines)


def _stash_refusal(result: CheckResult, *, first: bool) -> str:
    from versatil_fs.hook.framework import STASH_WARNING

    count = len(result.stashed)
    files = f"{count} unstaged {'file' if count == 1 else 'files'}"
    lead = (
        f"versatil: commit refused{_inrepository(result.repository)}: the pre-commit framework"
        if first else "And the pre-commit framework"
    )
    lines = [
        f"{lead} has stashed {files} that another agent holds a write lock on, to put "
        f"{'it' if count == 1 else 'them'} back after the hooks: whatever that agent writes "
        "meanwhile would be lost."
    ]
    for item in result.stashed:
        lines.append(
            f"  {item.staged.path} (unstaged): locked by {item.grant.agent}, since "
            f"{_when(item.grant.acquired_at)}, {_until(item.grant)}"
        )
    lines = [_printable(line) for line in lines]
    agents = sorted({item.grant.agent for item in result.stashed})
    lines.append(f"Why: {STASH_WARNING}.")
    lines.append("Ways out:")
    lines.append(f"  - commit when {_or(agents)} has released (see `versatil locks`);")
    lines.append(
        "  - for the future, the native hook (see Why; the framework's checks still run by "
        "hand with `pre-commit run`);"
    )
    lines.append("  - or commit anyway with git commit --no-verify, at your own risk.")
    return "\n".join(lines)


def _staged_refusal(
    result: CheckResult, blocked: list[Blocked], escape: str, *, first: bool = True
) -> str:
    count = len(blocked)
    who = (
        f"the committer is {result.committer} ({result.committer_source})"
        if result.committer
        else f"the committer is a human ({result.committer_source}), whom every write lock binds"
    )
    holder = "another agent" if result.committer else "an agent"
    lead = f"versatil: commit refused{_inrepository(result.repository)}: " if first else "And "
    lines = [
        f"{lead}{count} staged "
        f"{'file is' if count == 1 else 'files are'} write-locked by {holder}; {who}."
    ]
    for item in blocked:
        grant, claim = item.grant, item.claim
        locked = claim.resource.path
        if locked == item.staged.path:
            via = ""
        elif locked == ".":
            via = " via its lock on the whole repository"
        elif claim.resource.glob:
            via = f" via its lock on `{locked}`"  # a pattern: no directory slash after it
        else:
            via = f" via its lock on {locked}/"
        lines.append(
            f"  {item.staged.path} ({item.staged.change}): locked by {grant.agent}{via}, "
            f"since {_when(grant.acquired_at)}, {_until(grant)}"
        )
    agents = sorted({item.grant.agent for item in blocked})
    lines = [_printable(line) for line in lines]  # a staged name that is not UTF-8
    lines.append("Ways out:")
    lines.append(f"  - wait until {_or(agents)} releases (see `versatil locks`);")
    lines.append(f"  - ask {_or(agents)} to finish and release;")
    for agent in agents:
        lines.append(
            f"  - release the locks yourself: versatil release --agent {shlex.quote(agent)} "
            "(its process keeps running, unguarded);"
        )
    if result.committer is None:
        lines.append(
            "  - if you are one of those agents, commit as it: VERSATIL_AGENT=NAME git commit, "
            "or git config versatil.agent NAME;"
        )
    lines.append(f"  - or commit anyway with {escape}, at your own risk.")
    return "\n".join(lines)


def _printable(text: str) -> str:
    from versatil_fs.events import printable

    return str(printable(text))


def _inrepository(toplevel: str) -> str:
    """`` in REPO`` (`` in REPO, a submodule of SUPER``): the staged paths are relative to it,
    and inside a submodule a bare ``s.txt`` would not say which repository it is in."""
    if not toplevel:
        return ""
    top = Path(toplevel)
    for parent in top.parents:
        if os.path.lexists(parent / ".git"):
            return f" in {top}, a submodule (or nested repository) of {parent}"
    return f" in {top}"


def _until(grant: Grant) -> str:
    from versatil_fs.locks.store import expires_wall  # loaded already: grants came from it

    expires = expires_wall(grant)
    if expires is not None:
        return f"until {_when(expires)}"
    return f"while its process {grant.pid} lives"


def _when(ts: float) -> str:
    # The date only when it is not today: a lock from yesterday should look old.
    moment = time.localtime(ts)
    if time.strftime("%Y-%m-%d", moment) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", moment)
    return time.strftime("%Y-%m-%d %H:%M:%S", moment)


def _or(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
