"""Installing and removing the hooks versatil puts where git runs them.

:func:`install` writes :data:`HOOK_TEMPLATE` where git will run it (``git rev-parse --git-path
hooks`` already honours ``core.hooksPath`` and the common directory of worktrees). A hook that
was there before is renamed to ``pre-commit.versatil-orig`` — a rename keeps its bytes, mode and
even a symlink exactly — and ours runs it first; :func:`uninstall` renames it back. ``install
--strict`` puts git's ``reference-transaction`` hook (:mod:`versatil_fs.hook.strict`) beside it
the same way.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import msgspec

from versatil_fs.errors import Refused, UsageError
from versatil_fs.hook.context import repository, run_git

__all__ = [
    "HOOK_NAME",
    "HOOK_TEMPLATE",
    "MARKER",
    "SAVED_SUFFIX",
    "HookPlace",
    "hook_place",
    "install",
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
    repo = repository(start)
    out = run_git(repo.toplevel, "rev-parse", "--git-path", "hooks").strip()
    path = Path(out).expanduser()
    if not path.is_absolute():
        # Relative to where git runs hooks: the top of the working tree.
        path = repo.toplevel / path
    return HookPlace(Path(os.path.normpath(path)))


def _read_ours(path: Path, marker: str = MARKER) -> str | None:
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
    return text if any(line.startswith(marker) for line in head) else None


def install(
    start: str | os.PathLike[str] = ".",
    *,
    force: bool = False,
    python: str | None = None,
    strict: bool = False,
) -> str:
    """Install the pre-commit guard; returns what was done, in one sentence.

    Installing twice changes nothing, and so does installing where the pre-commit framework
    already runs our guard (as ``pre-commit.legacy``, or from its configuration). ``force``
    rewrites our hook even when an installed copy differs (edited by hand, or written by
    another versatil installation). With a ``.pre-commit-config.yaml`` present, a second line
    warns what the framework's stash does to files other agents are writing.

    ``strict`` also installs the ``reference-transaction`` guard (:mod:`versatil_fs.hook.strict`)
    the same way, for the commits that skip pre-commit; :class:`Refused` when git is older than
    2.28, before anything is written.
    """
    import sys

    place = hook_place(start)
    python = sys.executable if python is None else python
    toplevel = repository(start).toplevel
    strict_done = ""
    if strict:
        from versatil_fs.hook.strict import require_git

        require_git(toplevel)
        kind = _strict_kind()
        strict_hook = place.hooks_dir / kind.name
        strict_done = "\n" + _install_one(
            place.hooks_dir, kind, _read_ours(strict_hook, kind.marker), python, force
        )
    current = _read_ours(place.hook)
    warning = _framework_warning(toplevel)
    if current is None:
        already = _runs_already(place, toplevel)
        if already is not None:
            return already + strict_done + warning
    return _install(place, current, python, force) + strict_done + warning


def _framework_warning(toplevel: Path) -> str:
    """A second line, when the pre-commit framework is configured here: what its stash does
    to files other agents are writing (issue 15, item 11)."""
    from versatil_fs.hook.framework import CONFIG_FILE, STASH_WARNING, framework_config

    if framework_config(toplevel) is None:
        return ""
    return f"\nWarning ({CONFIG_FILE} is here): {STASH_WARNING}."


def _runs_already(place: HookPlace, toplevel: Path) -> str | None:
    """Where our guard already runs although the hook in place is not ours, if it does: the
    framework's hook runs ``pre-commit.legacy`` (where ``pre-commit install`` moved ours), or
    runs ``versatil hook check`` from its configuration. Installing again would run the guard
    twice per commit (issue 15, item 12)."""
    from versatil_fs.hook.framework import (
        CONFIG_FILE,
        LEGACY_SUFFIX,
        config_runs_guard,
        is_framework_hook,
    )

    if not is_framework_hook(place.hook):
        return None
    legacy = place.hook.with_name(HOOK_NAME + LEGACY_SUFFIX)
    if _read_ours(legacy) is not None:
        return (
            f"The versatil pre-commit hook already runs: the pre-commit framework's hook in "
            f"{place.hook} runs it first, as {legacy.name} (where `pre-commit install` moved "
            "it); left both as they are."
        )
    if config_runs_guard(toplevel):
        return (
            f"The versatil guard already runs: the pre-commit framework's hook in {place.hook} "
            f"runs `versatil hook check` from {CONFIG_FILE}; not installing it twice."
        )
    return None


class _Kind(msgspec.Struct, frozen=True):
    """One hook versatil installs: its name, the marker that says it is ours, its text."""

    name: str
    marker: str
    render: Callable[[str, bool], str]  # (python, made_dir) -> the script
    force_hint: str


def _render_pre_commit(python: str, made_dir: bool) -> str:
    return render_hook(python, made_dir=made_dir)


def _render_strict(python: str, made_dir: bool) -> str:
    from versatil_fs.hook.strict import render_strict_hook

    return render_strict_hook(python, saved=SAVED_SUFFIX) + (_MADE_DIR + "\n" if made_dir else "")


_PRE_COMMIT = _Kind(HOOK_NAME, MARKER, _render_pre_commit, "versatil hook install --force")


def _strict_kind() -> _Kind:
    from versatil_fs.hook.strict import STRICT_HOOK_NAME, STRICT_MARKER

    return _Kind(
        STRICT_HOOK_NAME, STRICT_MARKER, _render_strict, "versatil hook install --strict --force"
    )


def _install(place: HookPlace, current: str | None, python: str, force: bool) -> str:
    return _install_one(place.hooks_dir, _PRE_COMMIT, current, python, force)


def _install_one(
    hooks_dir: Path, kind: _Kind, current: str | None, python: str, force: bool
) -> str:
    hook = hooks_dir / kind.name
    saved = hooks_dir / (kind.name + SAVED_SUFFIX)
    label = f"versatil {kind.name} hook"
    if current is not None:
        wanted = kind.render(python, _MADE_DIR in current)
        if current == wanted:
            return f"The {label} is already installed in {hook}."
        if not force:
            return (
                f"A {label} is already installed in {hook} but differs "
                "from this version's (edited, or installed by another environment); left it as "
                f"it is. Rewrite it with: {kind.force_hint}"
            )
        _write_hook(hook, wanted)
        return f"Rewrote the {label} in {hook}."

    made_dir = False
    if not hooks_dir.is_dir():
        try:
            hooks_dir.mkdir(parents=True)
        except OSError as exc:
            raise UsageError(f"Could not create {hooks_dir}: {exc.strerror}.") from exc
        made_dir = True
    kept = ""
    if os.path.lexists(hook):
        if os.path.lexists(saved):
            raise Refused(
                f"{hook} is not versatil's hook, and {saved.name} (a hook saved by an "
                "earlier install) is in the way; move one of them elsewhere and install again."
            )
        # A rename keeps the hook exactly (bytes, mode, a symlink as a symlink) for uninstall.
        os.rename(hook, saved)
        kept = f"; the hook that was there is kept as {saved.name} and runs first"
    elif os.path.lexists(saved):
        # An install that died between the rename and the write: the saved hook is the user's.
        kept = f"; {saved.name}, saved by an earlier install, runs first"
    _write_hook(hook, kind.render(python, made_dir))
    return f"Installed the {label} in {hook}{kept}."


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
    """Remove the pre-commit guard (and the strict guard, if installed) and put back exactly
    what was there before."""
    place = hook_place(start)
    strict_done = _uninstall_strict(place.hooks_dir)
    try:
        done = _uninstall_pre_commit(place)
    except Refused as exc:
        if strict_done:
            raise Refused(f"{strict_done} {exc}") from exc
        raise
    return f"{strict_done}\n{done}" if strict_done else done


def _uninstall_strict(hooks_dir: Path) -> str:
    """Remove our reference-transaction hook, if it is there, and rename back the one it
    replaced (one atomic step: git never sees a moment without that hook); "" when ours is
    not installed (what is there, if anything, is left alone)."""
    kind = _strict_kind()
    hook = hooks_dir / kind.name
    saved = hooks_dir / (kind.name + SAVED_SUFFIX)
    current = _read_ours(hook, kind.marker)
    if current is None:
        return ""
    if os.path.lexists(saved):
        os.replace(saved, hook)
        return f"Removed the versatil {kind.name} hook and put back the original {hook}."
    hook.unlink()
    if _MADE_DIR in current:
        with suppress(OSError):  # the pre-commit hook, or something else, is still there
            hooks_dir.rmdir()
    return f"Removed the versatil {kind.name} hook from {hooks_dir}."


def _uninstall_pre_commit(place: HookPlace) -> str:
    current = _read_ours(place.hook)
    if current is None:
        legacy = place.hook.with_name(HOOK_NAME + ".legacy")
        if _read_ours(legacy) is not None:
            # `pre-commit install` moved ours there, and the framework runs it first: what
            # was there before ours (kept as the saved hook) goes back where the framework
            # looks for it.
            if os.path.lexists(place.saved):
                os.replace(place.saved, legacy)
                return (f"Removed the versatil hook the pre-commit framework ran as "
                        f"{legacy.name}, and put back the original one there.")
            legacy.unlink()
            return f"Removed the versatil hook the pre-commit framework ran as {legacy.name}."
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
