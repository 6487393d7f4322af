"""Pattern pairs decided once: the cached glob questions the lock rules ask of two resources.

:mod:`versatil_fs.locks.table` asks these for every pair with a pattern on one side at least
(two plain paths stay on its prefix tests). Pure; the glob modules themselves are imported only
when a pattern is first met, so locking plain paths (every edit an agent makes) never loads them.
A malformed pattern (a table edited by hand) fails closed: it meets everything in its space.
"""

from __future__ import annotations

import functools

from versatil_fs.errors import UsageError

__all__ = ["pair_witness", "pattern_covers", "top_of"]


# Decided once per pair of spellings: the lock manager meets the same patterns in transaction
# after transaction, and a table of 1,000 glob locks is checked against every request. Bounded,
# so a long-lived keeper's memory is too.
@functools.lru_cache(maxsize=65536)
def pair_witness(
    a: str, a_glob: bool, a_file: bool, b: str, b_glob: bool, b_file: bool, fold: bool
) -> str | None:
    from versatil_fs.locks import globs

    try:
        pa = globs.parse(a) if a_glob else globs.plain(a)
        pb = globs.parse(b) if b_glob else globs.plain(b)
    except UsageError:
        # A pattern nobody could have reserved (a table edited by hand): it conflicts with
        # everything in its space. Failing closed keeps two writers apart; the user sees
        # the odd lock in `versatil locks` and releases it.
        return a if a_glob else b
    # A file has nothing under it: a pattern meets it only by covering it (matching it or a
    # directory above it), not through paths below it that cannot exist.
    if a_glob and not b_glob and b_file:
        return b if globs.covers(pa, b, ignorecase=fold) else None
    if b_glob and not a_glob and a_file:
        return a if globs.covers(pb, a, ignorecase=fold) else None
    return globs.overlap(pa, pb, ignorecase=fold)


@functools.lru_cache(maxsize=65536)
def top_of(path: str, glob: bool, fold: bool) -> str | None:
    """The top-level name every path the resource covers starts with (folded with
    ``fold``), or None when it has none (``.``, ``*.py``, ``**/x``, a malformed pattern)."""
    if not glob:
        top = None if path == "." else path.partition("/")[0]
    else:
        from versatil_fs.locks import globs

        try:
            top = globs.top_name(globs.parse(path))
        except UsageError:
            return None
    if fold and top is not None:
        from versatil_fs.locks.glob_segments import fold as folded

        return folded(top)
    return top


@functools.lru_cache(maxsize=65536)
def pattern_covers(pattern: str, path: str, fold: bool) -> bool:
    from versatil_fs.locks import globs

    try:
        return globs.covers(globs.parse(pattern), path, ignorecase=fold)
    except UsageError:
        return True  # fail closed, as pair_witness does
