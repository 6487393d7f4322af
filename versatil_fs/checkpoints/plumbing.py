"""The formats of git's plumbing, read and written: raw ``-z`` diffs, ``ls-files`` listings,
``for-each-ref`` rows, C-quoted paths and the ``fast-import`` stream of a checkpoint commit.

Pure: bytes in, values out; nothing here runs git or touches a file. A path is a ``str`` decoded
with ``os.fsdecode`` (surrogate escapes keep a name that is not UTF-8 round-trippable to the
disk) and goes back to bytes with :func:`path_bytes`.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterable

from versatil_fs.checkpoints.records import GITLINK_MODE, Change

__all__ = [
    "COMMITTER_EMAIL",
    "all_added",
    "count_index",
    "decode_path",
    "embedded_repositories",
    "flagged_entries",
    "import_stream",
    "parse_raw_diff",
    "path_bytes",
    "quoted",
    "record_warnings",
    "ref_rows",
]

COMMITTER_EMAIL = "versatil@localhost"
_EMBEDDED = "adding embedded git repository:"


def path_bytes(path: str) -> bytes:
    """A path as the bytes git and the disk know it by."""
    return os.fsencode(path)


def decode_path(raw: bytes) -> str:
    """A path from git's output, as a ``str`` that :func:`path_bytes` turns back into ``raw``."""
    # surrogateescape keeps a file name that is not valid UTF-8 round-trippable to the disk.
    return os.fsdecode(raw)


def quoted(path: str) -> bytes:
    """A path as fast-import reads it: C-style quoted, so spaces, quotes, newlines, control
    characters and bytes that are not UTF-8 all mean themselves."""
    out = bytearray(b'"')
    for byte in path_bytes(path):
        if byte in (0x22, 0x5C):  # " and \
            out += b"\\" + bytes([byte])
        elif byte < 0x20 or byte == 0x7F:
            out += b"\\%03o" % byte
        else:
            out.append(byte)
    out += b'"'
    return bytes(out)


def import_stream(ref: str, head: str | None, changes: Iterable[Change], *, name: str,
                  when: int, message: str) -> bytes:
    """The fast-import commands that commit HEAD's tree with ``changes`` applied to ``ref``.

    Deletions come first: a file replaced by a directory (or the reverse) must be gone before
    its new entries are added. ``get-mark`` and ``ls`` print the commit and its root tree.
    """
    # surrogateescape: a message or name given as bytes that are not UTF-8 (an argv of such
    # bytes) goes into the commit as those bytes instead of failing half-way.
    body = message.encode("utf-8", "surrogateescape")
    who = f"{name} <{COMMITTER_EMAIL}> {when} +0000".encode("utf-8", "surrogateescape")
    parts = [b"commit " + ref.encode() + b"\nmark :1\nauthor " + who + b"\ncommitter " + who
             + b"\ndata %d\n" % len(body) + body + b"\n"]
    if head:
        parts.append(b"from " + head.encode() + b"\n")
    changes = builtins.list(changes)
    parts.extend(b"D " + quoted(c.path) + b"\n" for c in changes if c.status == "D")
    parts.extend(
        b"M " + c.new_mode.encode() + b" " + c.new_oid.encode() + b" " + quoted(c.path) + b"\n"
        for c in changes if c.status != "D"
    )
    parts.append(b'\nget-mark :1\nls :1 ""\ndone\n')
    return b"".join(parts)


def parse_raw_diff(out: bytes) -> builtins.list[Change]:
    """Parse raw ``-z`` diff output (``diff-index``): ``:om nm oo no S\\0path\\0`` per change."""
    fields = out.split(b"\0")
    changes = []
    i = 0
    while i + 1 < len(fields):
        meta = fields[i]
        if not meta.startswith(b":"):
            i += 1
            continue
        old_mode, new_mode, old_oid, new_oid, status = meta[1:].decode().split(" ")
        changes.append(
            Change(
                status=status[:1], path=decode_path(fields[i + 1]), old_mode=old_mode,
                new_mode=new_mode, old_oid=old_oid, new_oid=new_oid,
            )
        )
        i += 2
    return changes


def all_added(out: bytes) -> builtins.list[Change]:
    """Every entry of ``git ls-files -s -z`` output as an addition (compared with no commit)."""
    changes = []
    for entry in out.split(b"\0"):
        if not entry:
            continue
        meta, _, path = entry.partition(b"\t")
        mode, oid, _stage = meta.decode().split(" ")
        changes.append(Change(status="A", path=decode_path(path), old_mode="000000",
                              new_mode=mode, old_oid="0" * len(oid), new_oid=oid))
    return changes


def count_index(out: bytes) -> tuple[int, builtins.list[str]]:
    """Entries and gitlink paths in ``git ls-files -s -z`` output (``mode oid stage\tpath\0``).

    Counted with bytes methods rather than a loop over 50,000 entries: only gitlinks, which
    are rare, are looked at one by one.
    """
    count = out.count(b"\0")
    gitlinks = []
    marker = b"\0" + GITLINK_MODE.encode() + b" "
    start = 0 if out.startswith(marker[1:]) else out.find(marker)
    while start != -1:
        tab = out.index(b"\t", start)
        end = out.index(b"\0", tab)
        gitlinks.append(decode_path(out[tab + 1 : end]))
        start = out.find(marker, end)
    return count, gitlinks


def flagged_entries(listing: bytes) -> builtins.list[tuple[bytes, bytes]]:
    """``(tag, path)`` of the entries of ``git ls-files -v -z`` output that carry a flag: a
    lower-case tag for ``--assume-unchanged``, ``S`` (or ``s``) for ``--skip-worktree``."""
    # The common case, counted in C: every entry is tagged "H " (a path holds no NUL, so
    # "\0H " only starts an entry).
    if listing.count(b"\0") == listing.count(b"\0H ") + listing.startswith(b"H "):
        return []
    found = []
    for entry in listing.split(b"\0"):
        tag, path = entry[:1], entry[2:]
        if path and tag != b"H":
            found.append((tag, path))
    return found


def embedded_repositories(stderr: bytes) -> tuple[str, ...]:
    """The nested repositories ``git add`` (run with ``LC_ALL=C``) says it added as gitlinks."""
    return tuple(
        line.split(_EMBEDDED, 1)[1].strip()
        for line in stderr.decode("utf-8", "replace").splitlines()
        if _EMBEDDED in line
    )


def ref_rows(out: bytes) -> builtins.list[tuple[str, str, str, str]]:
    """``(refname, object, type, tree)`` from ``for-each-ref`` output in the format
    ``%(refname)%00%(objectname)%00%(objecttype)%00%(tree)``, one ref a line."""
    rows = []
    for line in out.split(b"\n"):
        if line:
            name, oid, kind, tree = [*line.split(b"\0"), b"", b"", b""][:4]
            rows.append((decode_path(name), oid.decode(), kind.decode(), tree.decode()))
    return rows


def record_warnings(gitlinks: builtins.list[str], embedded: Iterable[str],
                    large: dict[str, int]) -> builtins.list[str]:
    """The warnings a checkpoint record carries: gitlinks (and which are nested repositories)
    and large new files."""
    notes = []
    if gitlinks:
        nested = set(embedded)
        names = ", ".join(f"{g} (nested repository)" if g in nested else g for g in gitlinks)
        notes.append(
            f"Stored as gitlinks (the commit they point at, not their files): {names}; "
            "a restore leaves them as they are."
        )
    for path, size in large.items():
        notes.append(
            f"{path} is {size / 1048576:.1f} MB and new since HEAD; it is stored in the "
            "checkpoint (add it to .gitignore if it should not be)."
        )
    return notes
