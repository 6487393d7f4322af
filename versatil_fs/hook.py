"""The git pre-commit guard: the check it runs, and installing or removing the hook itself.

:func:`check` runs on every commit, so it is built for start-up time: it imports neither
watchdog, rich nor yaml, starts ``git diff`` and ``git config`` in the background
while it reads the lock table, and matches staged paths against an index of write locks (one
dict probe per ancestor directory) instead of every staged path against every lock.

It fails closed: a lock table that cannot be read safely (permission denied, a planted symlink,
a foreign owner) refuses the commit with one sentence naming the file. A table that merely did
not parse is not such a case: the lock store moves it aside, says so, and rebuilds it from the
lease files of the live holders, so the check still sees every live lock.

:func:`install` writes :data:`HOOK_TEMPLATE` where git will run it (``git rev-parse --git-path
hooks`` already honours ``core.hooksPath`` and the common directory of worktrees). A hook that
was there before is renamed to ``pre-commit.versatil-orig`` — a rename keeps its bytes, mode and
even a symlink exactly — and ours runs it first; :func:`uninstall` renames it back.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from versatil_fs import git
from versatil_fs.errors import GitFailed, NotARepository, Refused, StateError, UsageError
from versatil_fs.repo import Repository

if TYPE_CHECKING:
    from versatil_fs.locks.table import Claim, Grant

__all__ = [
    "HOOK_NAME",
    "HOOK_TEMPLATE",
    "MARKER",
    "SAVED_SUFFIX",
    "Blocked",
    "CheckResult",
    "HookPlace",
    "StagedPath",
    "check",
    "find_blocked",
    "hook_place",
    "install",
    "parse_name_status",
    "refusal",
    "render_hook",
    "uninstall",
]


HOOK_NAME = "pre-commit"
SAVED_SUFFIX = ".versatil-orig"
MARKER = "# versatil-fs pre-commit hook"
_MADE_DIR = "# versatil: created this hooks directory"

# The hook git runs. `hooks/pre-commit` at the project root is this text with INSTALL_PYTHON
# empty (a test keeps the two identical). `install` fills INSTALL_PYTHON in, like the pre-commit
# framework does, so a commit from a GUI or an IDE whose PATH lacks the venv is still checked.
HOOK_TEMPLATE = """\
#!/bin/sh
{marker}: refuses a commit that stages a file another agent
# holds a write lock on. Installed by `versatil hook install`; `versatil hook uninstall` removes
# it and puts back the hook it replaced. That hook, kept as pre-commit.versatil-orig, runs first:
# if either refuses, the commit is refused. Skip both at your own risk: git commit --no-verify.
INSTALL_PYTHON={python}

orig="$0{saved}"
if [ -f "$orig" ] && [ -x "$orig" ]; then
    "$orig" "$@" || exit $?
fi

if command -v versatil >/dev/null 2>&1; then
    exec versatil hook check
elif [ -n "$INSTALL_PYTHON" ] && [ -x "$INSTALL_PYTHON" ]; then
    exec "$INSTALL_PYTHON" -c 'import sys
try:
    from versatil_fs.cli import main
except ImportError:
    sys.exit("versatil pre-commit hook: versatil-fs is not installed for " + sys.executable
             + " any more; reinstall it, or remove this hook with: versatil hook uninstall")
main(["hook", "check"])'
fi
echo "versatil pre-commit hook: 'versatil' is not on PATH, so this commit cannot be checked" >&2
echo "against the locks of other agents, and is refused. Put the bin directory where" >&2
echo "versatil-fs is installed on PATH (or pip install versatil-fs), or remove this hook" >&2
echo "with 'versatil hook uninstall'. 'git commit --no-verify' skips it at your own risk." >&2
exit 1
"""


def render_hook(python: str = "", *, made_dir: bool = False) -> str:
    """The hook script, with ``python`` as the fallback interpreter ("" for none)."""
    text = HOOK_TEMPLATE.format(
        marker=MARKER, python=shlex.quote(python) if python else "", saved=SAVED_SUFFIX
    )
    # Remembered in the hook itself, so that uninstall also removes a directory it created.
    return text + (_MADE_DIR + "\n" if made_dir else "")


# Check ------------------------------------------------------------------------------------------
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

    @property
    def allowed(self) -> bool:
        return not self.blocked


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

    Indexed by locked path (:class:`~versatil_fs.locks.table.WriteLocks`): a commit of 1,000
    files against 100 locks costs a few thousand dict probes, not 100,000 comparisons.
    """
    from versatil_fs.locks.table import WriteLocks

    locks = WriteLocks(grants, repo_key, except_agent=committer)
    if not locks:
        return []
    blocked: list[Blocked] = []
    for item in staged:
        hit = locks.holder(item.path)
        if hit is not None:
            blocked.append(Blocked(item, *hit))
    return blocked


def check(start: str | os.PathLike[str] = ".") -> CheckResult:
    """What the pre-commit hook decides for the changes staged in the repository at ``start``.

    Raises :class:`Refused` when the staged changes or the lock table cannot be read: a guard
    that cannot see the locks must not wave the commit through.
    """
    repo = _repository(start)
    env_agent = os.environ.get("VERSATIL_AGENT", "").strip()
    # Both git commands run while we read the lock table: on two cores that hides their cost.
    with (
        _git(repo, "diff", "--cached", "--name-status", "-z") as diff,
        _git(repo, "config", "--get", "versatil.agent", wanted=not env_agent) as config,
    ):
        grants = _live_grants(repo)
        diff_out, diff_err = diff.communicate() if diff else (b"", b"")
        config_out = config.communicate()[0] if config else b""
    if diff is None or diff.returncode != 0:
        raise Refused(
            f"Could not list the staged changes of {repo.toplevel}, so the commit is refused: "
            f"{_why_git_failed(repo.toplevel, diff_err)}"
        )
    if env_agent:
        committer, source = env_agent, "VERSATIL_AGENT"
    elif config is not None and config.returncode == 0 and config_out.strip():
        committer, source = config_out.decode(errors="replace").strip(), "git config versatil.agent"
    else:
        committer, source = None, "no VERSATIL_AGENT or git config versatil.agent"
    staged = parse_name_status(diff_out)
    result = CheckResult(
        committer=committer,
        committer_source=source,
        staged=staged,
        blocked=find_blocked(staged, grants, repo.key, committer),
        repository=str(repo.toplevel),
    )
    if result.blocked:
        _log_refusal(result, repo)
    return result


def _why_git_failed(where: Path, stderr: bytes) -> str:
    """One sentence for a git command that failed in ``where``.

    Outside a repository it recognises (one it refuses for dubious ownership, say), ``git
    diff`` does not say so: it falls back to ``--no-index`` mode and prints its whole usage,
    about a hundred lines. So the reason is asked of ``git rev-parse``, on this failure path
    only, and a refusal for ownership names the ``safe.directory`` setting that lifts it.
    """
    try:
        probe = git.run(["rev-parse", "--git-dir"], cwd=where, env=_hook_env(), check=False)
    except GitFailed:
        return _git_message(where, stderr)
    if probe.returncode != 0:
        stderr = probe.stderr
    return _git_message(where, stderr)


def _git_message(where: Path, stderr: bytes) -> str:
    text = stderr.decode(errors="replace")
    if "dubious ownership" in text:
        return (
            f"git refuses to work in {where} because the repository belongs to another user "
            f"(dubious ownership); if you trust it, run `git config --global --add "
            f"safe.directory {shlex.quote(str(where))}`."
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # git's own sentence is its first fatal: or error: line; the rest is hints and usage.
    first = next((ln for ln in lines if ln.startswith(("fatal:", "error:"))), None)
    first = first or (lines[0] if lines else "git failed without saying why")
    return first.removeprefix("fatal: ").removeprefix("error: ").rstrip(".") + "."


def _log_refusal(result: CheckResult, repo: Repository) -> None:
    """A refused commit is a collision caught: ``versatil logs collision-detection`` shows it."""
    from versatil_fs import events
    from versatil_fs.errors import VersatilError

    try:
        events.emit(
            "collision-detection",
            "commit-refused",
            agent=result.committer,
            repo=repo.key,
            files=[b.staged.path for b in result.blocked],
            holders=sorted({b.grant.agent for b in result.blocked}),
        )
    except (VersatilError, OSError):
        pass  # the commit is refused either way; a log we cannot write must not hide why


def _repository(start: str | os.PathLike[str]) -> Repository:
    """The repository git is working on: the one around ``start``, unless GIT_DIR says otherwise.

    Git runs hooks at the top of the working tree and exports GIT_DIR for linked worktrees,
    where it matches what :meth:`Repository.find` sees. Only ``git --git-dir=X --work-tree=Y``
    (a bare repository with a detached work tree, as dotfiles setups use) makes them differ;
    then git's own answer is the truth, at one extra subprocess on that rare path only.
    """
    git_dir = os.environ.get("GIT_DIR")
    if not git_dir:
        return Repository.find(start)
    try:
        repo = Repository.find(start)
        if Path(os.path.realpath(git_dir)) == repo.git_dir:
            return repo
    except NotARepository:
        pass
    out = _run_git(
        Path(start),
        "rev-parse",
        "--path-format=absolute",
        "--show-toplevel",
        "--git-dir",
        "--git-common-dir",
    )
    top, gdir, common = (Path(os.path.realpath(line)) for line in out.splitlines()[:3])
    return Repository(top, gdir, common)


@contextmanager
def _git(
    repo: Repository, *args: str, wanted: bool = True
) -> Iterator[subprocess.Popen[bytes] | None]:
    if not wanted:
        yield None
        return
    try:
        proc = git.spawn(list(args), cwd=repo.toplevel, env=_hook_env(), stdin=subprocess.DEVNULL)
    except GitFailed as exc:
        raise Refused(f"Could not run git ({exc}), so the commit is refused.") from exc
    try:
        yield proc
    finally:
        if proc.returncode is None:  # we left early (an error): do not leave a zombie behind
            proc.kill()
            proc.communicate()


def _live_grants(repo: Repository) -> list[Grant]:
    from versatil_fs.state import home

    root = home()
    if not os.path.lexists(root):
        # Nobody ever took a lock with this state directory; do not create it on every commit.
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


def refusal(result: CheckResult) -> str:
    """The message a refused commit prints: each file, who holds it since and until when, and
    the ways out."""
    count = len(result.blocked)
    who = (
        f"the committer is {result.committer} ({result.committer_source})"
        if result.committer
        else f"the committer is a human ({result.committer_source}), whom every write lock binds"
    )
    holder = "another agent" if result.committer else "an agent"
    lines = [
        f"versatil: commit refused{_in_repository(result.repository)}: {count} staged "
        f"{'file is' if count == 1 else 'files are'} write-locked by {holder}; {who}."
    ]
    for item in result.blocked:
        grant, claim = item.grant, item.claim
        locked = claim.resource.path
        if locked == item.staged.path:
            via = ""
        elif locked == ".":
            via = " via its lock on the whole repository"
        else:
            via = f" via its lock on {locked}/"
        lines.append(
            f"  {item.staged.path} ({item.staged.change}): locked by {grant.agent}{via}, "
            f"since {_when(grant.acquired_at)}, {_until(grant)}"
        )
    agents = sorted({item.grant.agent for item in result.blocked})
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
    lines.append("  - or commit anyway with git commit --no-verify, at your own risk.")
    return "\n".join(lines)


def _printable(text: str) -> str:
    from versatil_fs.events import printable

    return str(printable(text))


def _in_repository(toplevel: str) -> str:
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


# Install and uninstall --------------------------------------------------------------------------
class HookPlace(msgspec.Struct, frozen=True):
    """Where git runs the pre-commit hook of a repository, and where we keep the one we replace."""

    hooks_dir: Path

    @property
    def hook(self) -> Path:
        return self.hooks_dir / HOOK_NAME

    @property
    def saved(self) -> Path:
        return self.hooks_dir / (HOOK_NAME + SAVED_SUFFIX)


def hook_place(start: str | os.PathLike[str] = ".") -> HookPlace:
    """The hooks directory git uses for the repository at ``start``.

    ``git rev-parse --git-path hooks`` resolves ``core.hooksPath`` (with ``~``) and, in a linked
    worktree, the common directory, so one install guards every worktree.
    """
    repo = _repository(start)
    out = _run_git(repo.toplevel, "rev-parse", "--git-path", "hooks").strip()
    path = Path(out).expanduser()
    if not path.is_absolute():
        # Relative to where git runs hooks: the top of the working tree.
        path = repo.toplevel / path
    return HookPlace(Path(os.path.normpath(path)))


def _hook_env() -> dict[str, str]:
    """The location variables git exported to this hook, handed back to :mod:`versatil_fs.git`
    (which drops them for every other caller): during ``git commit -a`` or ``git commit
    <paths>`` ``GIT_INDEX_FILE`` names the temporary index being committed, and the guard must
    check exactly what is committed. Outside a hook this is whatever the caller exported, as
    before."""
    return {k: v for k, v in os.environ.items() if k in git.LOCATION_VARIABLES}


def _run_git(cwd: Path, *args: str) -> str:
    try:
        result = git.run(list(args), cwd=cwd, env=_hook_env(), check=False)
    except GitFailed as exc:
        raise UsageError(f"Could not run git: {exc}") from exc
    if result.returncode != 0:
        detail = _git_message(cwd, result.stderr)
        raise NotARepository(f"git {' '.join(args)} failed in {cwd}: {detail}")
    return result.stdout.decode(errors="surrogateescape")


def _read_ours(path: Path) -> str | None:
    """The text of the hook at ``path`` when it is ours, else None (absent, foreign, symlink)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"Could not read {path}: {exc.strerror}.") from exc
    # The marker sits on the second line; a hook that merely mentions us further down is not us.
    head = text.split("\n", 3)[:3]
    return text if any(line.startswith(MARKER) for line in head) else None


def install(
    start: str | os.PathLike[str] = ".", *, force: bool = False, python: str | None = None
) -> str:
    """Install the pre-commit guard; returns what was done, in one sentence.

    Installing twice changes nothing. ``force`` rewrites our hook even when an installed copy
    differs (edited by hand, or written by another versatil installation).
    """
    import sys

    place = hook_place(start)
    python = sys.executable if python is None else python
    current = _read_ours(place.hook)
    if current is not None:
        wanted = render_hook(python, made_dir=_MADE_DIR in current)
        if current == wanted:
            return f"The versatil pre-commit hook is already installed in {place.hook}."
        if not force:
            return (
                f"A versatil pre-commit hook is already installed in {place.hook} but differs "
                "from this version's (edited, or installed by another environment); left it as "
                "it is. Rewrite it with: versatil hook install --force"
            )
        _write_hook(place.hook, wanted)
        return f"Rewrote the versatil pre-commit hook in {place.hook}."

    made_dir = False
    if not place.hooks_dir.is_dir():
        try:
            place.hooks_dir.mkdir(parents=True)
        except OSError as exc:
            raise UsageError(f"Could not create {place.hooks_dir}: {exc.strerror}.") from exc
        made_dir = True
    kept = ""
    if os.path.lexists(place.hook):
        if os.path.lexists(place.saved):
            raise Refused(
                f"{place.hook} is not versatil's hook, and {place.saved.name} (a hook saved by an "
                "earlier install) is in the way; move one of them elsewhere and install again."
            )
        # A rename keeps the hook exactly (bytes, mode, a symlink as a symlink) for uninstall.
        os.rename(place.hook, place.saved)
        kept = f"; the hook that was there is kept as {place.saved.name} and runs first"
    elif os.path.lexists(place.saved):
        # An install that died between the rename and the write: the saved hook is the user's.
        kept = f"; {place.saved.name}, saved by an earlier install, runs first"
    _write_hook(place.hook, render_hook(python, made_dir=made_dir))
    return f"Installed the versatil pre-commit hook in {place.hook}{kept}."


def _write_hook(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.versatil-{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"Could not write {path}: {exc.strerror}.") from exc


def uninstall(start: str | os.PathLike[str] = ".") -> str:
    """Remove the pre-commit guard and put back exactly what was there before."""
    place = hook_place(start)
    current = _read_ours(place.hook)
    if current is None:
        if os.path.lexists(place.hook):
            raise Refused(f"{place.hook} is not versatil's pre-commit hook; left it as it is.")
        if os.path.lexists(place.saved):
            raise Refused(
                f"No versatil hook is installed in {place.hooks_dir}, but {place.saved.name} is "
                f"there; rename it back to {HOOK_NAME} yourself if it is the hook you want."
            )
        return f"No versatil pre-commit hook is installed in {place.hooks_dir}; nothing to do."
    if os.path.lexists(place.saved):
        os.replace(place.saved, place.hook)  # one atomic step: never a moment without a hook
        return f"Removed the versatil pre-commit hook and put back the original {place.hook}."
    place.hook.unlink()
    if _MADE_DIR in current:
        with suppress(OSError):  # something else was put there since: it stays
            place.hooks_dir.rmdir()
    return f"Removed the versatil pre-commit hook from {place.hooks_dir}."
