"""``versatil integrate``: wiring versatil's hook into each agent harness, and taking it out.

For each harness this writes the hook configuration of this repository (``.claude/settings.json``,
``.codex/hooks.json``, ``.gemini/settings.json``, ``.cursor/hooks.json``,
``.clinerules/hooks/<Hook>``, ``.github/hooks/versatil.json``) or of the user (``--user``: the
same files under ``$HOME``), so that every hook event :data:`~versatil_fs.agents.harnesses.HOOKS`
names runs :func:`hook_command`. The edits themselves are :mod:`versatil_fs.agents.hook_config`.

These files are the user's, not state files: they are written atomically (a temporary file in
the same directory, then ``rename``) with the file's own mode kept, never through a symlink, and
only if nobody changed them since they were read.

In this repository's scope ``integrate`` also registers versatil's MCP server (``versatil mcp
--harness HARNESS``) where the harness reads a project's MCP servers (``.mcp.json``,
``.codex/config.toml``, ``.gemini/settings.json`` beside the hooks, ``.cursor/mcp.json``: see
:func:`~versatil_fs.agents.hook_paths.mcp_path`; the edits are
:mod:`versatil_fs.agents.mcp_config`), recorded and removed the same way.

What ``--remove`` needs to put a file back byte for byte is kept in the state directory, through
:class:`~versatil_fs.state.StateDir`: ``integrations/<sha256 of the file's absolute path>.json``
holds the file's bytes from before the first install and a digest of what versatil wrote. If the
file still is what versatil wrote, ``--remove`` restores those bytes (or deletes the file, and
the directories versatil made for it); if the user edited it since, only versatil's entries go
and their edit stays.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shlex
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from versatil_fs.agents import hook_config as cfg
from versatil_fs.agents import hook_paths
from versatil_fs.agents import mcp_config as mcpc
from versatil_fs.agents import user_files as files
from versatil_fs.agents.harnesses import hooks_for
from versatil_fs.agents.hook_paths import MCP_NOTES, NOTES, Scope, config_paths, mcp_path
from versatil_fs.agents.integrate_status import Wiring, status
from versatil_fs.agents.protocol import HARNESSES
from versatil_fs.errors import Refused, UsageError
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir, flocked

__all__ = [
    "Change",
    "Integration",
    "Wiring",
    "config_paths",
    "harnesses_named",
    "hook_command",
    "install",
    "mcp_argv",
    "remove",
    "status",
]


def harnesses_named(name: str) -> tuple[str, ...]:
    """``all`` or one harness, checked; a UsageError names the ones there are."""
    if name == "all":
        return HARNESSES
    if name not in HARNESSES:
        raise UsageError(
            f"Unknown harness {name!r}; versatil integrates {', '.join(HARNESSES)} (or all)."
        )
    return (name,)


def hook_command(harness: str) -> str:
    """The shell command a harness runs for every hook: ``<versatil> agent-hook <harness>``.

    ``<versatil>`` is the absolute path of the ``versatil`` script running now, else the one on
    PATH, else this interpreter with ``-m versatil_fs``: an absolute path, because a harness runs
    hooks with its own PATH (a GUI editor's is not the terminal's)."""
    return shlex.join([*_versatil(), "agent-hook", harness])


def mcp_argv(harness: str) -> list[str]:
    """The command a harness starts versatil's MCP server with, as argv (the same versatil as
    :func:`hook_command`): ``<versatil> mcp --harness <harness>``."""
    return [*_versatil(), "mcp", "--harness", harness]


def _versatil() -> list[str]:
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "versatil" and os.path.isfile(argv0):
        return [os.path.abspath(argv0)]
    found = shutil.which("versatil")
    if found:
        return [os.path.abspath(found)]
    return [sys.executable, "-m", "versatil_fs"]


# What one call did, and what --status sees ---------------------------------------------------
@dataclass(frozen=True)
class Change:
    """What ``install`` or ``remove`` did to one file. ``action``: wired, rewired, unchanged,
    restored, deleted, cleaned (versatil's entries taken out of a file the user edited), absent
    (nothing of versatil's there)."""

    harness: str
    scope: Scope
    path: str
    action: str
    message: str
    note: str = ""  # what the harness still asks of the user (after wired/rewired)


class Integration(msgspec.Struct, kw_only=True):
    """The record ``--remove`` needs for one file: how it was before the first install."""

    version: int = 1
    harness: str
    scope: str
    path: str  # for someone reading the state directory; never acted on (the id is its hash)
    existed: bool  # the file was there before versatil wrote it
    # Base64 of the file's bytes before the first install; None when the file did not exist,
    # or when the user edited it between two installs (those bytes would undo their edit).
    original: str | None = None
    installed: str  # sha256 of the bytes versatil last wrote
    created_dirs: int = 0  # how many directories above the file versatil created for it


_DECODER = msgspec.json.Decoder(Integration)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Records in the state directory --------------------------------------------------------------
class _Records:
    def __init__(self, state: StateDir) -> None:
        self.state = state

    def _file(self, path: Path) -> Path:
        # The id is the hash of the config file's absolute path: the record's location is
        # rebuilt from the file versatil is about to touch, never read from a record.
        return self.state.subdir("integrations") / f"{_digest(os.fsencode(path))}.json"

    def get(self, path: Path) -> tuple[Integration | None, str]:
        """The record of ``path`` (None if none), and a sentence if a damaged one was set aside."""
        file = self._file(path)
        data = self.state.read_bytes(file)
        if data is None:
            return None, ""
        try:
            record = _DECODER.decode(data)
            if record.path != str(path):
                raise ValueError("another file's record")
            if record.original is not None:
                base64.b64decode(record.original, validate=True)
        except (msgspec.DecodeError, ValueError):
            aside = self.state.move_aside(file, "damaged integration record")
            return None, f" (its record in the state directory was damaged, moved to {aside})"
        return record, ""

    def put(self, record: Integration) -> None:
        self.state.write_atomic(self._file(Path(record.path)), msgspec.json.encode(record),
                                durable=True)

    def drop(self, path: Path) -> None:
        self.state.remove(self._file(path))

    @contextlib.contextmanager
    def serialized(self) -> Iterator[None]:
        """One ``versatil integrate`` at a time: two at once would each read a record and a
        file, and the second write would lose the first's record of the original bytes."""
        fd = self.state.open_lock_file(self.state.subdir("integrations") / "integrate.lock")
        try:
            with flocked(fd):
                yield
        finally:
            os.close(fd)


# Install ------------------------------------------------------------------------------------------
@dataclass
class _Plan:
    """One file's install, worked out before anything is written."""

    harness: str
    scope: Scope
    path: Path
    base: Path
    before: files.Found | None
    after: bytes
    action: str
    old: str = ""  # the versatil command an older entry ran
    what: str = ""  # "MCP server" for a file holding only versatil's MCP server entry


def _roots(scope: Scope, cwd: str | os.PathLike[str]) -> Path:
    return Repository.find(cwd).toplevel if scope == "project" else Path.home()


def _plan_json(
    harness: str, scope: Scope, path: Path, base: Path, command: str, wait: float,
    server: list[str] | None = None,
) -> _Plan:
    """The hooks file's install; ``server``: versatil's MCP server goes in the same file
    (Gemini CLI keeps both in settings.json)."""
    fmt = cfg.FORMATS[harness]
    before = files.read(path)
    doc = cfg.load(before[0], path, harness) if before else {}
    style = cfg.detect_style(before[0], doc) if before else cfg.TextStyle()
    new = cfg.with_ours(doc, harness, fmt, hooks_for(harness, wait), command, where=path)
    old = [c for cs in cfg.commands(doc, harness, fmt).values() for c in cs if c != command]
    if server is not None:
        new = mcpc.json_with(new, server, where=path)
    if before is not None and cfg.same(doc, new):
        return _Plan(harness, scope, path, base, before, before[0], "unchanged")
    action = "rewired" if old else "wired"
    return _Plan(harness, scope, path, base, before, cfg.encode(new, style), action,
                 old[0] if old else "")


def _plan_mcp(harness: str, scope: Scope, path: Path, base: Path, server: list[str]) -> _Plan:
    """The install of versatil's MCP server in a file of its own (not the hooks file)."""
    before = files.read(path)
    if harness == "codex":
        old_argv = mcpc.toml_command(before[0], where=path) if before else None
        after = mcpc.toml_with(before[0] if before else b"", server, where=path)
    else:
        doc = cfg.load(before[0], path, harness) if before else {}
        old_argv = mcpc.json_command(doc)
        new = mcpc.json_with(doc, server, where=path)
        if before is not None and cfg.same(doc, new):
            return _Plan(harness, scope, path, base, before, before[0], "unchanged",
                         what="MCP server")
        style = cfg.detect_style(before[0], doc) if before else cfg.TextStyle()
        after = cfg.encode(new, style)
    if before is not None and after == before[0]:
        return _Plan(harness, scope, path, base, before, after, "unchanged", what="MCP server")
    old = shlex.join(old_argv) if old_argv and old_argv != server else ""
    return _Plan(harness, scope, path, base, before, after, "rewired" if old else "wired", old,
                 what="MCP server")


def _plan_cline(
    harness: str, scope: Scope, path: Path, base: Path, command: str, wait: float
) -> _Plan:
    before = files.read(path)
    after = cfg.cline_script(command)
    if before is None:
        return _Plan(harness, scope, path, base, None, after, "wired")
    old = cfg.cline_command(before[0])
    if old is None:
        # Cline runs one file per hook and directory, and chaining two hooks means merging
        # their JSON answers: not something to guess at. The user's hook stays as it is.
        raise Refused(
            f"{path} already exists and is not versatil's, and Cline runs one {path.name} hook "
            f"per directory; versatil leaves it alone. Chain it by hand: have it pass its input "
            f"to `{command}` and print that answer when it cancels, or wire versatil in the "
            f"other scope ({'--user' if scope == 'project' else 'without --user'})."
        )
    if before[0] == after:
        return _Plan(harness, scope, path, base, before, after, "unchanged")
    return _Plan(harness, scope, path, base, before, after, "rewired", old)


def install(
    harnesses: Sequence[str], *, user: bool = False, cwd: str | os.PathLike[str] = ".",
    state: StateDir | None = None, mcp: bool = False,
) -> list[Change]:
    """Wire ``harnesses`` in this repository (or for the user); ``mcp``: in this repository,
    register versatil's MCP server too (``versatil integrate`` does). Every file is read and
    checked first: one that must be refused stops the whole call before anything is written."""
    scope: Scope = "user" if user else "project"
    root = _roots(scope, cwd)
    records = _Records(state or StateDir())
    wait = _wait_on_edit(root if scope == "project" else None, records.state)
    with records.serialized():
        plans = []
        for harness in harnesses:
            command = hook_command(harness)
            where = hook_paths.base(harness, scope, root)
            server_file = mcp_path(harness, root) if mcp and scope == "project" else None
            hook_files = config_paths(harness, scope, root)
            for path in hook_files:
                if harness == "cline":
                    plans.append(_plan_cline(harness, scope, path, where, command, wait))
                else:
                    plans.append(_plan_json(
                        harness, scope, path, where, command, wait,
                        mcp_argv(harness) if path == server_file else None,
                    ))
            if server_file is not None and server_file not in hook_files:
                plans.append(_plan_mcp(harness, scope, server_file, where, mcp_argv(harness)))
        return [_apply(plan, records) for plan in plans]


def _wait_on_edit(root: Path | None, state: StateDir) -> float:
    """``[agents] wait_on_edit`` where the hooks will run (the repository's configuration, or
    the user's), so that the harness's timeout covers the wait (see ``hooks_for``)."""
    from versatil_fs import config

    return float(config.load(root, state=state).harness.wait_on_edit)


def _apply(plan: _Plan, records: _Records) -> Change:
    where = "this repository" if plan.scope == "project" else "your user settings"
    what = f"{plan.what} " if plan.what else ""
    if plan.action == "unchanged":
        return Change(plan.harness, plan.scope, str(plan.path), "unchanged",
                      f"{plan.harness}: {what}already wired in {plan.path}; nothing changed.")
    record, _ = records.get(plan.path)
    previous = record
    created = files.make_dirs(plan.path.parent, plan.base) if plan.before is None else 0
    if record is None or plan.before is None:
        # No record, or the file is gone since (the user deleted it): this install is the first.
        record = Integration(
            harness=plan.harness, scope=plan.scope, path=str(plan.path),
            existed=plan.before is not None,
            original=base64.b64encode(plan.before[0]).decode() if plan.before else None,
            installed=_digest(plan.after), created_dirs=created,
        )
    else:
        current = plan.before[0] if plan.before else None
        edited = current is None or _digest(current) != record.installed
        record = msgspec.structs.replace(
            record, installed=_digest(plan.after),
            # The user edited the file since versatil wrote it: the bytes from before the first
            # install would undo their edit, so --remove will take out only versatil's entries.
            original=None if edited else record.original,
            created_dirs=record.created_dirs + created,
        )
    # The record first: a crash between the two writes leaves a record of bytes that are not
    # on disk, which --remove treats as an edited file (versatil's entries out, nothing lost).
    records.put(record)
    try:
        files.write(plan.path, plan.after, before=plan.before,
                    executable=plan.harness == "cline")
    except BaseException:
        # Nothing was written: the record goes back to what it said (or goes), so that a file
        # still holding versatil's earlier bytes is still restored byte for byte.
        if previous is None:
            records.drop(plan.path)
        else:
            records.put(previous)
        raise
    was = f" (it ran {plan.old})" if plan.old else ""
    note = MCP_NOTES.get(plan.harness, "") if plan.what else NOTES.get(
        (plan.harness, plan.scope), "")
    return Change(plan.harness, plan.scope, str(plan.path), plan.action,
                  f"{plan.harness}: {what}{plan.action} in {where}: {plan.path}{was}.", note)


# Remove -------------------------------------------------------------------------------------------
def remove(
    harnesses: Sequence[str], *, user: bool = False, cwd: str | os.PathLike[str] = ".",
    state: StateDir | None = None, mcp: bool = False,
) -> list[Change]:
    """Take versatil out of ``harnesses``' hook files: each goes back byte for byte to how it
    was before the first install (or goes, if versatil created it), unless the user edited it
    since, in which case only versatil's entries go. ``mcp``: versatil's MCP server entry in
    this repository goes too."""
    scope: Scope = "user" if user else "project"
    root = _roots(scope, cwd)
    records = _Records(state or StateDir())
    changes = []
    with records.serialized():
        # Every file read and parsed first, as install does: one that must be refused (not
        # JSON any more, a symlink now) stops the call before any other harness is touched.
        for harness in harnesses:
            for path in _files(harness, scope, root, mcp):
                found = files.read(path)
                if found is not None and path.suffix == ".toml":
                    mcpc.toml_command(found[0], where=path)
                elif found is not None and harness != "cline":
                    cfg.load(found[0], path, harness)
        for harness in harnesses:
            base = hook_paths.base(harness, scope, root)
            dirs: list[tuple[Path, int]] = []
            server_file = mcp_path(harness, root) if mcp and scope == "project" else None
            for path in _files(harness, scope, root, mcp):
                change, created = _remove_one(harness, scope, path, records, server_file)
                changes.append(change)
                if created:
                    dirs.append((path.parent, created))
            # After every file of the harness is gone: Cline's hook files share one directory.
            for directory, count in dirs:
                files.remove_dirs(directory, count, base)
    return changes


def _files(harness: str, scope: Scope, root: Path, mcp: bool) -> list[Path]:
    """Every file ``integrate`` writes for ``harness`` in ``scope``: its hook files, and (with
    ``mcp``) the project's MCP server file when that is another one."""
    found = list(config_paths(harness, scope, root))
    server_file = mcp_path(harness, root) if mcp and scope == "project" else None
    if server_file is not None and server_file not in found:
        found.append(server_file)
    return found


def _remove_one(
    harness: str, scope: Scope, path: Path, records: _Records, server_file: Path | None = None,
) -> tuple[Change, int]:
    record, damaged = records.get(path)
    current = files.read(path)

    def change(action: str, message: str) -> Change:
        return Change(harness, scope, str(path), action, f"{harness}: {message}{damaged}.")

    if current is None:
        if record is not None:
            records.drop(path)
            return change("absent", f"{path} is gone already; nothing to remove"), \
                record.created_dirs
        return change("absent", f"not wired in {path}"), 0
    if record is not None and _digest(current[0]) == record.installed and (
        record.original is not None or not record.existed
    ):
        if record.original is None:
            files.remove_file(path, current[0])
            records.drop(path)
            return change("deleted", f"removed {path}, which versatil had created"), \
                record.created_dirs
        files.write(path, base64.b64decode(record.original), before=current, executable=False)
        records.drop(path)
        return change("restored", f"put {path} back as it was before versatil"), 0
    # Gemini CLI's settings.json holds both its hooks and its MCP servers.
    hooks = path != server_file or harness == "gemini"
    cleaned, empty = _without_ours(harness, path, current[0], hooks=hooks,
                                   server=path == server_file)
    created = 0
    if cleaned is None:
        message = f"not wired in {path}"
        action = "absent"
    elif harness == "cline" or (empty and record is not None and not record.existed):
        # A Cline hook file of versatil's is all versatil's; a JSON file versatil created that
        # holds nothing else now goes as a whole, like the directories made for it.
        files.remove_file(path, current[0])
        created = record.created_dirs if record is not None else 0
        message = f"removed {path}" + (", which versatil had created" if record else "")
        action = "deleted"
    else:
        files.write(path, cleaned, before=current, executable=False)
        edited = " (it changed since versatil wrote it, so only versatil's entries went and the " \
            "rest is kept)" if record is not None else ""
        what = "hooks" if hooks else "MCP server"
        message = f"removed versatil's {what} from {path}{edited}"
        action = "cleaned"
    if record is not None:
        records.drop(path)
    return change(action, message), created


def _without_ours(
    harness: str, path: Path, data: bytes, *, hooks: bool = True, server: bool = False,
) -> tuple[bytes | None, bool]:
    """The file's bytes without versatil's entries (its hooks, and its MCP server entry when
    ``server``; None when it holds nothing of versatil's), and whether nothing but what
    versatil would have created is left in it."""
    if harness == "cline":
        return (b"" if cfg.cline_command(data) is not None else None), True
    if server and path.suffix == ".toml":
        stripped = mcpc.toml_without(data, where=path)
        return stripped, stripped is not None and not stripped.strip()
    fmt = cfg.FORMATS[harness]
    doc = cfg.load(data, path, harness)
    new = cfg.without_ours(doc, harness, fmt) if hooks else doc
    if server:
        new = mcpc.json_without(new)
    if cfg.same(doc, new):
        return None, False
    empty = not new or (hooks and fmt.version is not None
                        and cfg.same(new, {"version": fmt.version}))
    return cfg.encode(new, cfg.detect_style(data, doc)), empty


