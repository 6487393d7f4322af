"""The strict guard (``versatil hook install --strict``): git's ``reference-transaction`` hook,
which also refuses the commits that skip pre-commit (``commit --no-verify``, cherry-pick,
merge, rebase, am, ``update-ref``).

git runs that hook for every ref update, three times (``prepared``, ``committed``,
``aborted``), and aborts the update when it exits non-zero in ``prepared``. Most updates are
none of our business: versatil's own checkpoints (``git fast-import`` of ``refs/versatil/*``),
remotes, tags, notes, ``HEAD``, ``ORIG_HEAD``. So :data:`STRICT_TEMPLATE` filters in the
shell: only ``prepared`` lines for ``refs/heads/*`` that are not deletions reach Python
(``versatil hook check-refs``); everything else costs one ``sh`` start.

For a branch moving ``old -> new``, the files the update changes are the tree difference
``git diff-tree -r --no-renames old new`` (the same paths as ``git diff --name-only
--no-renames``; both sides of a rename). For a merge that is everything the merge brings into
this branch, changes made on the other branch included: whoever lands them on this branch is
their committer here, exactly as the pre-commit guard sees a merge commit's staged files. A new
branch (the ref does not exist yet) changes no file, unless its commit is a root commit (an
orphan branch, the first commit of a repository), whose whole tree is new. git hands some
updates an all-zero old value although the ref exists (``git update-ref REF NEW`` without the
old value): then the ref's current value is the old one.

The committer is resolved as the pre-commit guard resolves it, and a refusal prints the same
message (:func:`versatil_fs.hook.check.refusal`), with the way around this hook instead of
``--no-verify``; a fencing token in ``$VERSATIL_FENCE`` is checked on the changed files as the
pre-commit guard checks it on the staged ones.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import msgspec

from versatil_fs import git
from versatil_fs.errors import GitFailed, Refused
from versatil_fs.hook.check import (
    CheckResult,
    StagedPath,
    committer,
    decide,
    live_grants,
    parse_name_status,
    presented_fence,
    session_committer,
)
from versatil_fs.hook.context import hook_env, repository, run_git

__all__ = [
    "ESCAPE",
    "MIN_GIT",
    "STRICT_HOOK_NAME",
    "STRICT_MARKER",
    "STRICT_TEMPLATE",
    "RefUpdate",
    "check_updates",
    "main",
    "parse_updates",
    "render_strict_hook",
    "require_git",
]


STRICT_HOOK_NAME = "reference-transaction"
STRICT_MARKER = "# versatil-fs reference-transaction hook"
MIN_GIT = (2, 28)  # the first git that runs reference-transaction
# The way around this hook, which --no-verify does not skip: no hooks at all for one command.
ESCAPE = "git -c core.hooksPath=/dev/null commit (or merge, rebase, ...)"

# The filter is in the shell on purpose: git fires this hook for every ref update, and a
# Python start per checkpoint or fetched tag would be what users notice. `read` fills the last
# field with the rest of the line, and ref names hold no spaces. The original hook, kept as
# reference-transaction.versatil-orig, gets every state and the same lines, and runs first.
STRICT_TEMPLATE = """\
#!/bin/sh
{marker}: refuses a branch update whose commits change a file
# another agent holds a write lock on, even when pre-commit did not run (git commit --no-verify,
# cherry-pick, merge, rebase, am). Installed by `versatil hook install --strict`; `versatil hook
# uninstall` removes it and puts back the hook it replaced, kept as {name}{saved},
# which runs first with the same input. Only the `prepared` state of refs/heads/* reaches
# versatil; every other ref (checkpoints, remotes, tags, notes) stops in this shell.
INSTALL_PYTHON={python}

orig="$0{saved}"
keep=
[ -f "$orig" ] && [ -x "$orig" ] && keep=1
all=
wanted=
while read -r old new ref || [ -n "$ref" ]; do
    [ -n "$keep" ] && all="$all$old $new $ref
"
    [ "$1" = prepared ] || continue
    case $ref in refs/heads/*) ;; *) continue ;; esac
    case $new in *[!0]*) ;; *) continue ;; esac
    [ "$old" = "$new" ] && continue
    wanted="$wanted$old $new $ref
"
done
if [ -n "$keep" ]; then
    printf '%s' "$all" | "$orig" "$@" || exit $?
fi
[ -n "$wanted" ] || exit 0

if command -v versatil >/dev/null 2>&1; then
    printf '%s' "$wanted" | versatil hook check-refs
    exit $?
elif [ -n "$INSTALL_PYTHON" ] && [ -x "$INSTALL_PYTHON" ]; then
    printf '%s' "$wanted" | "$INSTALL_PYTHON" -c 'import sys
try:
    from versatil_fs.cli import main
except ImportError:
    sys.exit("versatil {name} hook: versatil-fs is not installed for " + sys.executable
             + " any more; reinstall it, or remove this hook with: versatil hook uninstall")
main(["hook", "check-refs"])'
    exit $?
fi
echo "versatil {name} hook: 'versatil' is not on PATH, so this branch update cannot be" >&2
echo "checked against the locks of other agents, and is refused. Put the bin directory where" >&2
echo "versatil-fs is installed on PATH, or remove this hook with 'versatil hook uninstall'." >&2
exit 1
"""

_OID = re.compile(rb"[0-9a-f]{40}(?:[0-9a-f]{24})?")


def render_strict_hook(python: str = "", *, saved: str = ".versatil-orig") -> str:
    """The reference-transaction script, with ``python`` as the fallback interpreter."""
    return STRICT_TEMPLATE.format(
        marker=STRICT_MARKER,
        name=STRICT_HOOK_NAME,
        saved=saved,
        python=shlex.quote(python) if python else "",
    )


def require_git(cwd: str | os.PathLike[str]) -> str:
    """git's version, or :class:`Refused` when it is older than 2.28 (no reference-transaction
    hook: the strict guard would never run, and saying nothing would be a lie)."""
    from pathlib import Path

    text = run_git(Path(cwd), "version").strip()
    found = re.search(r"(\d+)\.(\d+)", text)
    if found is None or (int(found[1]), int(found[2])) < MIN_GIT:
        raise Refused(
            f"versatil hook install --strict needs git {MIN_GIT[0]}.{MIN_GIT[1]} or newer (the "
            f"first with the reference-transaction hook), and this is {text or 'unknown'}; "
            "upgrade git, or install without --strict."
        )
    return text


class RefUpdate(msgspec.Struct, frozen=True):
    """One line git hands the hook: a ref moving from ``old`` to ``new`` (hex object ids)."""

    old: str
    new: str
    ref: str

    @property
    def creates(self) -> bool:
        return not self.old.strip("0")

    @property
    def deletes(self) -> bool:
        return not self.new.strip("0")


def parse_updates(data: bytes) -> list[RefUpdate]:
    """The ``<old> <new> <ref>`` lines of the hook's stdin; :class:`Refused` on anything else
    (the guard fails closed: an update it cannot read is not waved through)."""
    updates = []
    for line in data.splitlines():
        if not line.strip():
            continue
        parts = line.split(b" ", 2)
        if (
            len(parts) != 3
            or not all(_OID.fullmatch(p) for p in parts[:2])
            or not parts[2]
            or any(c <= 32 for c in parts[2])
        ):
            shown = line[:120].decode("ascii", "backslashreplace")
            raise Refused(
                f"The ref update is refused: git handed the reference-transaction hook a line "
                f"that is not '<old> <new> <ref>': {shown!r}."
            )
        updates.append(RefUpdate(*(os.fsdecode(p) for p in parts)))
    return updates


def check_updates(updates: list[RefUpdate], start: str | os.PathLike[str] = ".") -> CheckResult:
    """What the strict hook decides for these ref updates in the repository at ``start``:
    the files the branch updates change against other agents' write locks.

    Raises :class:`Refused` when git cannot say what an update changes or the lock table
    cannot be read safely, as the pre-commit guard does, and refuses a presented
    ``$VERSATIL_FENCE`` that a newer lock superseded on those files, as it does too.
    """
    fence = presented_fence()
    repo = repository(start)
    branches = [u for u in updates if u.ref.startswith("refs/heads/") and not u.deletes]
    session = session_committer()
    config = None
    if not session[0] and branches:
        # Started now, read after the lock table: its cost hides behind the table's.
        config = _spawn(repo.toplevel, "config", "--get", "versatil.agent")
    try:
        changed: dict[str, StagedPath] = {}
        for update in branches:
            for item in _changed(repo.toplevel, update):
                changed.setdefault(item.path, item)
        grants = live_grants(repo) if changed else []
        config_out = config.communicate()[0] if config is not None else None
        if config is not None and config.returncode != 0:
            config_out = None
    finally:
        if config is not None and config.returncode is None:
            config.kill()
            config.communicate()
    return decide(repo, committer(session, config_out), list(changed.values()), grants, fence)


def _changed(top: os.PathLike[str], update: RefUpdate) -> list[StagedPath]:
    """The paths ``update`` changes (see the module docstring for merges and new branches)."""
    old = update.old
    if update.creates:
        # git hands an all-zero old value for updates that did not state one, existing ref or
        # not (`git update-ref REF NEW`); the ref is locked but still readable in `prepared`.
        current = _git_out(top, "rev-parse", "-q", "--verify", f"{update.ref}^{{commit}}",
                           allow_failure=True)
        old = current.strip()
    if old == update.new:
        return []
    if not old:
        commit = _git_out(top, "cat-file", "commit", update.new)
        head = commit.split("\n\n", 1)[0]
        if any(line.startswith("parent ") for line in head.splitlines()):
            return []  # a new branch at an existing commit changes no file
        argv = ["diff-tree", "-r", "-z", "--no-renames", "--name-status", "--root",
                "--no-commit-id", update.new]
    else:
        argv = ["diff-tree", "-r", "-z", "--no-renames", "--name-status", old, update.new]
    proc = _spawn(top, *argv)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise Refused(
            f"The update of {update.ref} is refused: could not list what it changes "
            f"(git {' '.join(argv[:1])} {old[:12] or 'root'} {update.new[:12]}: "
            f"{err.decode(errors='replace').strip() or 'failed'})."
        )
    return parse_name_status(out)


def _spawn(top: os.PathLike[str], *args: str) -> subprocess.Popen[bytes]:
    try:
        return git.spawn(list(args), cwd=top, env=hook_env(), stdin=subprocess.DEVNULL)
    except GitFailed as exc:
        raise Refused(f"Could not run git ({exc}), so the ref update is refused.") from exc


def _git_out(top: os.PathLike[str], *args: str, allow_failure: bool = False) -> str:
    proc = _spawn(top, *args)
    out, err = proc.communicate()
    if proc.returncode != 0:
        if allow_failure:
            return ""
        raise Refused(
            f"The ref update is refused: git {args[0]} failed "
            f"({err.decode(errors='replace').strip() or proc.returncode})."
        )
    return out.decode(errors="surrogateescape")


def main(argv: list[str]) -> int:
    """``versatil hook check-refs``: the branch updates on stdin checked, the refusal on stderr,
    the exit code (0 allowed, 1 refused; git aborts the update on anything but 0).

    The entry point hands the command here before click is imported: it runs in every branch
    update's ``prepared`` state, so its start-up is what a commit pays (about 20 ms saved).
    """
    import sys

    from versatil_fs.errors import VersatilError
    from versatil_fs.hook.check import refusal

    if argv:
        sys.stderr.write(
            "versatil hook check-refs: takes no arguments; git's reference-transaction hook "
            "feeds it '<old> <new> <ref>' lines on stdin.\n"
        )
        return 2
    try:
        result = check_updates(parse_updates(sys.stdin.buffer.read()), ".")
    except VersatilError as exc:
        sys.stderr.write(f"versatil: {exc.for_cli()}\n")
        return exc.exit_code
    if result.allowed:
        return 0
    sys.stderr.write(refusal(result, escape=ESCAPE) + "\n")
    return 1
