"""``versatil checkpoint create | list | show | diff | restore | prune``."""

from __future__ import annotations

import os
import sys
import time

import click
import msgspec

from versatil_fs.checkpoints import (
    Change,
    CheckpointRecord,
    Checkpoints,
    Modification,
    RestoreResult,
    printable,
    pruned_line,
)
from versatil_fs.cli.common import (
    echo,
    echo_json,
    json_option,
    restore_options,
    say_library_notices,
)
from versatil_fs.errors import UsageError

__all__ = ["checkpoint", "create", "diff", "list_", "print_list", "prune", "restore", "run_restore",
           "show"]


def _checkpoints() -> Checkpoints:
    return Checkpoints(".")


@click.group()
def checkpoint() -> None:
    """Save the whole working tree as a git commit, and bring all or part of it back."""
    say_library_notices()


@checkpoint.command()
@click.option("-m", "--message", metavar="MSG", help="What this checkpoint is for.")
@click.option("--wave", type=click.IntRange(min=0), metavar="N", help="The wave it precedes.")
@click.option(
    "--agent", metavar="NAME",
    help="Who makes it (default: $VERSATIL_AGENT, git config versatil.agent, login name).",
)
@json_option
def create(message: str | None, wave: int | None, agent: str | None, as_json: bool) -> None:
    """Checkpoint tracked and untracked (not ignored) files; prints the new id.

    Never touches the index, HEAD, the branch, the stash or the working tree.
    """
    record = _checkpoints().create(message, wave=wave, agent=agent)
    _warn(record)
    if as_json:
        echo_json(record)
    else:
        echo(record.id)


@checkpoint.command(name="list")
@click.option("--tail", type=click.IntRange(min=1), metavar="N", help="Only the newest N.")
@click.option("--all", "all_worktrees", is_flag=True,
              help="Every worktree's checkpoints, with a worktree column.")
@json_option
def list_(tail: int | None, all_worktrees: bool, as_json: bool) -> None:
    """This worktree's checkpoints, oldest first (--all: every worktree's)."""
    print_list(_checkpoints(), tail, as_json, all_worktrees=all_worktrees)


def print_list(checkpoints: Checkpoints, tail: int | None, as_json: bool, *,
               all_worktrees: bool = False) -> None:
    """The listing shared with ``versatil-daemon list-checkpoints``."""
    every = checkpoints.list()
    mine = every if all_worktrees else [r for r in every if checkpoints.elsewhere(r) is None]
    records = mine[-tail:] if tail else mine
    interrupted = checkpoints.interrupted_restores(mine)
    if as_json:
        echo_json({"repo": str(checkpoints.repo.toplevel),
                   "worktree": str(checkpoints.repo.toplevel),
                   "checkpoints": [{**msgspec.to_builtins(r),
                                    "worktree_path": checkpoints.worktree_of(r)}
                                   for r in records]})
        return
    if not records:
        others = len(every) - len(mine)
        echo("No checkpoints yet; `versatil checkpoint create` makes one."
             + (f" ({others} in other worktrees: `versatil checkpoint list --all`.)"
                if others else ""))
    for record in records:
        row = _row(record)
        echo(f"{row}  [{_printable(checkpoints.worktree_of(record))}]" if all_worktrees
             else row)
    for record in interrupted:
        _interrupted_note(record)


@checkpoint.command()
@click.argument("checkpoint_id", metavar="ID")
@json_option
def show(checkpoint_id: str, as_json: bool) -> None:
    """Everything recorded with a checkpoint (ID may be a unique prefix)."""
    checkpoints = _checkpoints()
    record = checkpoints.show(checkpoint_id)
    unchanged, previous = checkpoints.untracked_unchanged(record.id)
    if as_json:
        echo_json({**msgspec.to_builtins(record), "untracked_unchanged": unchanged,
                   "previous": previous.id if previous else None})
        return
    wave = "-" if record.wave is None else str(record.wave)
    lines = [
        ("id", record.id),
        ("time", _clock(record.time)),
        ("kind", record.kind + (f" (before restoring {record.restore_of})"
                                if record.restore_of else "")),
        ("message", _printable(record.message) or "-"),
        ("agent", _printable(record.agent) or "-"),
        ("wave", wave),
        ("worktree", _printable(checkpoints.worktree_of(record))
         + ("" if checkpoints.elsewhere(record) is None else " (not this one)")),
        ("commit", record.commit),
        ("parent", record.parent or "- (made on an unborn branch)"),
        ("files", "unknown" if record.files is None else str(record.files)),
    ]
    if record.gitlinks:
        lines.append(("gitlinks", ", ".join(_printable(g) for g in record.gitlinks)
                      + " (submodules / nested repositories: their commit, not their files)"))
    if record.tasks:
        lines.append(("tasks", _printable(", ".join(f"{k}={v}" for k, v in record.tasks.items()))))
    if record.tests_run:
        lines.append(("tests run", _printable(", ".join(record.tests_run))))
    if record.errors:
        lines.append(("errors", _printable("; ".join(record.errors))))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        echo(f"{key:<{width}}  {value}")
    # An untracked file differs from HEAD in every checkpoint: listed as modified only when it
    # changed since the previous checkpoint (issue 15, item 10).
    hidden = set(unchanged)
    modified = [p for p in record.files_modified if p not in hidden]
    if modified:
        echo(f"files modified ({len(modified)}):")
        for path in modified[:200]:
            echo(f"  {_printable(path)}")
        if len(modified) > 200:
            echo(f"  ... and {len(modified) - 200} more (--json lists all)")
    if unchanged and previous is not None:
        names = ", ".join(_printable(p) for p in unchanged[:20])
        more = f", ... (--json lists all {len(unchanged)})" if len(unchanged) > 20 else ""
        echo(f"untracked, unchanged since {previous.id} ({len(unchanged)}): {names}{more}")
    for warning in record.warnings:
        echo(f"note: {_printable(warning)}")
    if record.kind == "safety" and record.restore_complete is False and any(
        r.id == record.id for r in checkpoints.interrupted_restores()
    ):
        _interrupted_note(record)


@checkpoint.command()
@click.argument("checkpoint_id", metavar="ID")
@click.option("--patch", "-p", is_flag=True, help="Print the changes as a patch.")
@click.option("--force", is_flag=True,
              help="Compare with a checkpoint made in another worktree all the same.")
@json_option
def diff(checkpoint_id: str, patch: bool, force: bool, as_json: bool) -> None:
    """What changed in the working tree since the checkpoint (A created, D deleted, M, T),
    and the agents that changed each file since then, from the files-modified log ("by lock":
    the monitor saw it written while that agent held the lock, which does not say who wrote
    it; "-": nobody recorded it)."""
    checkpoints = _checkpoints()
    record = checkpoints.show(checkpoint_id)
    _say_other_worktree(checkpoints, record, force, "comparing this worktree with it")
    if patch:
        sys.stdout.flush()
        sys.stdout.buffer.write(checkpoints.diff_patch(record.id, force=force))
        sys.stdout.flush()
        return
    changes = checkpoints.diff(record.id, force=force)
    changed_by = checkpoints.changed_by(record.id, [c.path for c in changes])
    if as_json:
        echo_json({"checkpoint": record.id, "changes": [
            {**_change_json(c), "agents": [a for a, _ in _agents(changed_by[c.path])],
             "attributed_by_lock": [a for a, by_lock in _agents(changed_by[c.path])
                                    if by_lock]}
            for c in changes
        ]})
        return
    if not changes:
        echo(f"The working tree is as it was at {record.id}.")
    for change in changes:
        agents = ", ".join(_printable(a) + (" (by lock)" if by_lock else "")
                           for a, by_lock in _agents(changed_by[change.path])) or "-"
        echo(f"{change.status} {_printable(change.path)}  {agents}")


@checkpoint.command()
@restore_options
def restore(
    checkpoint_id: str,
    paths: tuple[str, ...],
    agent: str | None,
    wave: int | None,
    force: bool,
    as_json: bool,
) -> None:
    """Bring the working tree (or a part of it) back to a checkpoint; the index is untouched.

    A safety checkpoint of the current state is made first: restoring it undoes this restore.
    """
    run_restore(_checkpoints(), checkpoint_id, paths, agent, wave, force, as_json)


def run_restore(
    checkpoints: Checkpoints,
    checkpoint_id: str,
    paths: tuple[str, ...],
    agent: str | None,
    wave: int | None,
    force: bool,
    as_json: bool,
) -> None:
    """The restore shared with ``versatil-daemon restore-checkpoint``."""
    from versatil_fs.locks.fencing import presented

    fence = presented()  # $VERSATIL_FENCE: the caller's token; not a token is exit 2
    if any(not p for p in paths):
        # os.path.abspath("") is the current directory: an empty --path would restore it all.
        raise UsageError("--path cannot be empty; name a file or a directory to restore.")
    # Paths on the command line are relative to where the user stands, the API's to the root.
    absolute = [os.path.abspath(p) for p in paths] if paths else None
    _say_other_worktree(checkpoints, checkpoints.show(checkpoint_id), force,
                        "restoring its files into this worktree")
    result = checkpoints.restore(
        checkpoint_id, paths=absolute, agent=agent, wave=wave, force=force, fence=fence
    )
    if as_json:
        echo_json(_result_json(result))
        return
    _print_result(result, agent)


@checkpoint.command()
@click.option("--keep", type=click.IntRange(min=0), metavar="N",
              help="How many of your own checkpoints to keep in each worktree (default: "
              "checkpoints.max_checkpoints, 10).")
@click.option("--keep-automatic", type=click.IntRange(min=0), metavar="N",
              help="How many automatic ones (safety, wave, run, periodic) to keep in each "
              "worktree (default: checkpoints.max_automatic, 20).")
@json_option
def prune(keep: int | None, keep_automatic: int | None, as_json: bool) -> None:
    """Delete the oldest checkpoints beyond the budgets; prints each one removed.

    Your own checkpoints (`checkpoint create`, `checkpoint()`) and the ones versatil makes on
    its own are counted apart, so automatic ones never push out yours.
    """
    result = _checkpoints().prune(keep, keep_automatic)
    if as_json:
        echo_json(result)
        return
    for entry in result.entries:
        echo(pruned_line(entry))
    if result.removed:
        echo(f"Removed {len(result.removed)} checkpoint(s); {result.kept_own} of your own and "
             f"{result.kept_automatic} automatic kept.")
    else:
        echo(f"Nothing to prune; {result.kept_own} of your own and {result.kept_automatic} "
             "automatic checkpoint(s) kept.")


# Printing ----------------------------------------------------------------------------------------
def _row(record: CheckpointRecord) -> str:
    tags = []
    if record.wave is not None:
        tags.append(f"wave {record.wave}")
    if record.kind != "checkpoint" and not (record.kind == "wave" and record.wave is not None):
        tags.append(record.kind)  # safety, wave, run, periodic: versatil's own
    if record.recovered:
        tags.append("rebuilt from git")
    if record.gitlinks:
        tags.append(f"{len(record.gitlinks)} gitlink(s)")
    files = "?" if record.files is None else str(record.files)
    extra = f" [{'; '.join(tags)}]" if tags else ""
    message = record.message.splitlines()[0] if record.message else ""
    return (f"{record.id}  {_clock(record.time)}  {_printable(record.agent) or '-'}  "
            f"{files} files{extra}  {_printable(message)}").rstrip()


def _print_result(result: RestoreResult, agent: str | None = None) -> None:
    if result.safety_checkpoint is None:
        echo(f"Nothing to restore: the selected files are as they were at {result.checkpoint}.")
        return
    for path in result.restored:
        echo(f"restored {_printable(path)}")
    for path in result.removed:
        echo(f"removed  {_printable(path)}")
    for path in result.skipped:
        echo(f"skipped  {_printable(path)} (submodule or nested repository: left as it is)")
    if result.attributed_by_lock:
        names = ", ".join(_printable(p) for p in result.attributed_by_lock)
        one = len(result.attributed_by_lock) == 1
        echo(f"attributed by lock, not by writer: {names} (the monitor saw "
             f"{'it' if one else 'them'} written while {_printable(agent or '?')} held the "
             f"lock; it cannot tell who wrote {'it' if one else 'them'})")
    echo(
        f"Restored {len(result.restored)} and removed {len(result.removed)} file(s) from "
        f"{result.checkpoint}. Safety checkpoint: {result.safety_checkpoint} "
        f"(`versatil checkpoint restore {result.safety_checkpoint}` undoes this)."
    )


def _result_json(result: RestoreResult) -> dict[str, object]:
    return {
        "version": result.version,
        "checkpoint": result.checkpoint,
        "safety_checkpoint": result.safety_checkpoint,
        "restored": result.restored,
        "removed": result.removed,
        "skipped": result.skipped,
        "changed": result.changed,
        "attributed_by_lock": result.attributed_by_lock,
    }


def _agents(mods: list[Modification]) -> list[tuple[str, bool]]:
    """Each agent that changed a file, in the order of their first change, and whether only
    the monitor's lock attributes it (no record of theirs saw the writer)."""
    found: dict[str, bool] = {}
    for mod in mods:
        name = mod.agent or "someone"
        found[name] = found.get(name, True) and not mod.by_writer
    return list(found.items())


def _change_json(change: Change) -> dict[str, str]:
    return {"status": change.status, "path": change.path, "mode": change.new_mode,
            "old_mode": change.old_mode}


def _warn(record: CheckpointRecord) -> None:
    for warning in record.warnings:
        click.echo(f"versatil: note: {_printable(warning)}", err=True)


def _say_other_worktree(checkpoints: Checkpoints, record: CheckpointRecord, force: bool,
                        doing: str) -> None:
    # Without --force the API refuses, naming both worktrees; with it, the user is told once.
    other = checkpoints.elsewhere(record)
    if other is not None and force:
        click.echo(f"versatil: {record.id} was made in the worktree {_printable(other)}, not "
                   f"in this one ({_printable(str(checkpoints.repo.toplevel))}); {doing} "
                   "(--force).", err=True)


def _interrupted_note(record: CheckpointRecord) -> None:
    click.echo(
        f"versatil: the restore of {_printable(record.restore_of or '?')} that made {record.id} "
        "was interrupted; "
        f"run it again, or `versatil checkpoint restore {record.id}` to undo what it did.",
        err=True,
    )


def _clock(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _printable(text: str) -> str:
    # A newline in a file name would split one entry across two lines of output, and a name
    # that is not UTF-8 could not be printed at all.
    return printable(text)
