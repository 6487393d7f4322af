"""Which checkpoints exist: the refs read back, each matched with its metadata file, an id
resolved from what a user typed, and refs deleted.

Nothing read from a metadata file is acted on unless git agrees: a checkpoint id matches
:data:`~versatil_fs.checkpoints.records.ID_PATTERN` before it names a file, and a record must
name its ref's commit and that commit's tree, else it is damaged (moved aside, rebuilt from the
commit). A ref under ``refs/versatil/checkpoints/`` that is not a checkpoint is moved to
``refs/versatil/damaged/``.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import sys
import time
from collections.abc import Sequence

import msgspec

from versatil_fs.checkpoints.plumbing import decode_path, ref_rows
from versatil_fs.checkpoints.records import (
    DAMAGED_PREFIX,
    REF_PREFIX,
    SCHEMA_VERSION,
    CheckpointRecord,
    decode_record,
    printable,
    record_from_commit,
    valid_id,
)
from versatil_fs.checkpoints.site import RepoGit, Site
from versatil_fs.errors import GitFailed, StateError, UsageError

__all__ = ["delete_refs", "list_records", "resolve"]

# (repository, ref, object) of damage already reported by this process: said once, not on every
# listing of one command.
_REPORTED: set[tuple[str, str, str]] = set()


def list_records(site: Site) -> builtins.list[CheckpointRecord]:
    """Every checkpoint of the repository, oldest first.

    A ref under ``refs/versatil/checkpoints/`` that is not a checkpoint (a name of another
    shape, or pointing at something that is not a commit) is damaged: it is moved aside to
    ``refs/versatil/damaged/`` (said once, on stderr) and the others are listed as usual.
    """
    records = []
    for refname, oid, kind, tree in _checkpoint_refs(site.git):
        checkpoint_id = refname[len(REF_PREFIX) :]
        if not valid_id(checkpoint_id):
            _damaged_ref(site, refname, oid, "its name is not a checkpoint id")
        elif kind != "commit" or not tree:
            _damaged_ref(site, refname, oid, f"it points at a {kind or 'missing object'}, "
                                             "not a commit")
        else:
            record = _load(site, checkpoint_id, oid, tree)
            if record is not None:
                records.append(record)
    records.sort(key=lambda r: (r.time, r.id))
    return records


def resolve(site: Site, checkpoint_id: str) -> CheckpointRecord:
    """The checkpoint with this id or unique id prefix; ``UsageError`` otherwise."""
    wanted = checkpoint_id.strip()
    if wanted.startswith(REF_PREFIX):
        wanted = wanted[len(REF_PREFIX) :]
    if not wanted:
        raise UsageError("Name a checkpoint id; `versatil checkpoint list` shows them.")
    records = list_records(site)
    exact = [r for r in records if r.id == wanted]
    if exact:
        return exact[0]
    matches = [r for r in records if r.id.startswith(wanted)]
    if not matches and not wanted.startswith("cp-"):
        matches = [r for r in records if r.id.startswith("cp-" + wanted)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(
            f"No checkpoint '{printable(checkpoint_id)}' in {site.repo.toplevel}; "
            "`versatil checkpoint list` shows the ids."
        )
    names = ", ".join(r.id for r in matches[:10]) + (", ..." if len(matches) > 10 else "")
    raise UsageError(
        f"'{printable(checkpoint_id)}' matches {len(matches)} checkpoints ({names}); "
        "give more of the id."
    )


def delete_refs(repo_git: RepoGit, records: Sequence[CheckpointRecord]) -> None:
    """Delete the refs of ``records``, each only if it still points at the record's commit."""
    if not records:
        return
    # One transaction that names each ref's current commit: all go or none, and a ref that
    # was moved meanwhile (by hand) is not deleted behind the user's back.
    script = "".join(f"delete {REF_PREFIX}{r.id} {r.commit}\n" for r in records)
    try:
        repo_git.run("update-ref", "--stdin", stdin=script.encode())
    except GitFailed:
        # Someone deleted one of them already; delete the rest one by one.
        for record in records:
            with contextlib.suppress(GitFailed):
                repo_git.run("update-ref", "-d", REF_PREFIX + record.id, record.commit)


def _checkpoint_refs(repo_git: RepoGit) -> builtins.list[tuple[str, str, str, str]]:
    """``(refname, object, object type, tree)`` of every ref under REF_PREFIX."""
    fmt = "--format=%(refname)%00%(objectname)%00%(objecttype)%00%(tree)"
    proc = repo_git.spawn("for-each-ref", fmt, REF_PREFIX)
    out, _ = proc.communicate()
    if proc.returncode == 0:
        return ref_rows(out)
    # for-each-ref gives up on the whole listing when one ref names a missing object: list
    # the names alone, and ask cat-file about each object (it answers "missing" for one).
    names = repo_git.run("for-each-ref", "--format=%(refname)%00%(objectname)", REF_PREFIX)
    pairs = [line.split(b"\0", 1) for line in names.split(b"\n") if b"\0" in line]
    query = b"".join(oid + b"\n" + oid + b"^{tree}\n" for _, oid in pairs)
    answers = repo_git.run("cat-file", "--batch-check=%(objectname) %(objecttype)",
                           stdin=query).decode().splitlines()
    found = []
    for i, (name, oid) in enumerate(pairs):
        own = answers[2 * i].split() if 2 * i < len(answers) else []
        root = answers[2 * i + 1].split() if 2 * i + 1 < len(answers) else []
        what = own[1] if len(own) == 2 and own[1] != "missing" else ""
        found.append((decode_path(name), oid.decode(), what,
                      root[0] if len(root) == 2 and root[1] == "tree" else ""))
    return found


def _damaged_ref(site: Site, refname: str, oid: str, why: str) -> None:
    """Move a ref that is not a checkpoint out of REF_PREFIX (kept, not deleted), once."""
    aside = DAMAGED_PREFIX + refname[len(REF_PREFIX) :]
    if site.git.succeeds("rev-parse", "-q", "--verify", aside):
        aside = f"{aside}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}"
    # One transaction naming the old value: if another process moves (or a user fixes) the
    # ref meanwhile, this one fails and changes nothing.
    script = (b"create " + os.fsencode(aside) + b" " + oid.encode() + b"\n"
              + b"delete " + os.fsencode(refname) + b" " + oid.encode() + b"\n")
    moved = site.git.succeeds("update-ref", "--stdin", stdin=script)
    key = (site.key, refname, oid)
    if moved:
        where = f"moved it aside to {printable(aside)}"
    elif key in _REPORTED:
        return
    else:
        where = "skipped it (it could not be moved aside)"
    _REPORTED.add(key)
    print(f"versatil: {printable(refname)} is not a checkpoint ({why}); {where}.",
          file=sys.stderr)


def _load(site: Site, checkpoint_id: str, oid: str, tree: str) -> CheckpointRecord | None:
    """The record of a valid checkpoint ref (``checkpoint_id`` matches ID_PATTERN and
    ``oid`` is a commit of root ``tree``); None if even its commit cannot be read.

    Nothing in the metadata file is trusted that git can tell us: a record must name the
    ref's commit and that commit's tree (a record naming another tree would make a restore
    write that tree), else it is damaged, moved aside and rebuilt from the commit.
    """
    path = site.metadata / f"{checkpoint_id}.json"
    data = site.state.read_bytes(path)
    if data is None:
        # No metadata: a create may be between its ref update and its metadata write, so this
        # is only rebuilt in memory; writing it could overwrite the real record a moment later.
        return _from_commit(site, checkpoint_id, oid, tree)
    damage = _damage(data, checkpoint_id, oid, tree)
    if isinstance(damage, CheckpointRecord):
        return damage
    site.state.move_aside(path, damage)
    rebuilt = _from_commit(site, checkpoint_id, oid, tree)
    if rebuilt is not None:
        # Best effort: on a full disk the rebuilt record serves from memory this time.
        with contextlib.suppress(StateError):
            site.write_record(rebuilt)
    return rebuilt


def _damage(data: bytes, checkpoint_id: str, oid: str, tree: str) -> CheckpointRecord | str:
    """The record in ``data`` if git agrees with it, else why it is damaged."""
    try:
        record = decode_record(data)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        return f"not a checkpoint record: {exc}"
    if record.version != SCHEMA_VERSION:
        # Decoding ignores what it does not know: a record of another schema would be read as
        # this one and quietly misunderstood.
        return f"schema version {record.version}; this versatil reads version {SCHEMA_VERSION}"
    if record.commit == oid and record.id == checkpoint_id and record.tree == tree:
        return record
    if record.commit != oid or record.id != checkpoint_id:
        return f"it describes commit {record.commit[:12]}, but the ref points at {oid[:12]}"
    return f"it names tree {record.tree[:12]}, but commit {oid[:12]} has tree {tree[:12]}"


def _from_commit(site: Site, checkpoint_id: str, oid: str, tree: str) -> CheckpointRecord | None:
    try:
        raw = site.git.run("cat-file", "commit", oid).decode("utf-8", "replace")
    except GitFailed as exc:
        damage = (site.key, REF_PREFIX + checkpoint_id, oid)
        if damage not in _REPORTED:
            _REPORTED.add(damage)
            print(f"versatil: checkpoint {checkpoint_id} is damaged ({exc}); skipped it.",
                  file=sys.stderr)
        return None
    return record_from_commit(checkpoint_id, oid, tree, raw, str(site.repo.toplevel),
                              site.worktree)
