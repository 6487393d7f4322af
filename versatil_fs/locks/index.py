"""A table's grants indexed for the questions every lock transaction asks, kept up to date.

With thousands of live locks (one per edited file per agent) a scan of every grant per
transaction is most of its cost: "what blocks this request", "which grant has this id", and the
JSON document re-encoded whole. A :class:`TableView` answers the first two by dict lookups and
keeps each grant's encoded fragment of the document, so a transaction costs what it changes.

A store that caches its decoded table (:class:`~versatil_fs.locks.store.LocalStore`) registers
the table's view for the duration of a transaction (:func:`activate`). The manager changes a
table's grants only through :func:`add_grant`, :func:`remove_grant` and :func:`changed`, which
keep an active view in step; without one (another store, a table built by hand) every helper
falls back to a scan of the table, with the same answers. The store checks at commit that the
view still lists exactly the table's grants (a cheap identity comparison), and rebuilds it if
something changed the list behind its back.

The index only narrows the candidates: each is still decided by the pure rules of
:mod:`versatil_fs.locks.table` (:class:`~versatil_fs.locks.table.ClaimIndex`), and a request
with a glob claim, or a grant with one (kept in a side list), is decided by those rules alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

from versatil_fs.locks.table import (
    ClaimIndex,
    Grant,
    Record,
    Table,
    Waiter,
    ancestors,
    queued_blockers,
)
from versatil_fs.locks.table import (
    blockers as scan_blockers,
)

__all__ = [
    "TableView",
    "activate",
    "add_grant",
    "blockers",
    "changed",
    "find_grant",
    "finder",
    "remove_grant",
]

_encoder = msgspec.json.Encoder()

# The view of the table the current thread's transaction works on (a store's transactions are
# serialised by its mutex, but two stores of one process may run theirs in two threads).
_active = threading.local()

Bucket = dict[int, Grant]  # id(grant) -> grant: identity, since two records may be equal


SEPARATOR = b",\n"


def fragment(grant: Grant) -> bytes:
    """``grant`` as it appears in the pretty-printed table, after the separator that comes
    before it: the bytes ``msgspec.json.format(table, indent=2)`` gives it, at its depth."""
    return SEPARATOR + b"    " + msgspec.json.format(_encoder.encode(grant), indent=2).replace(
        b"\n", b"\n    "
    )


class TableView:
    """The grants of one table object, indexed, with their encoded fragments."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.dirty = False  # a grant was added, removed or changed since the last write
        self._reset()
        for grant in table.locks:
            self._add(grant)
        # What changed since the last write, for the journal: added and changed grants (by
        # key), removed ones (by lease id); not exact once the grants were changed behind the
        # helpers' back, or two grants share an id (a removal by id would be ambiguous).
        self._added: dict[int, Grant] = {}
        self._changed: dict[int, Grant] = {}
        self._removed: list[str] = []
        self._delta_exact = True

    def _reset(self) -> None:
        # In table order (a dict keeps insertion order; grants are only ever appended), so the
        # document's grants are ``fragments.values()`` joined, without a Python loop.
        self.grants: dict[int, Grant] = {}
        self.fragments: dict[int, bytes] = {}
        self._stale: set[int] = set()  # keys whose fragment is still to encode
        self._order: dict[int, int] = {}
        self._next = 0
        self.by_id: dict[str, Bucket] = {}
        self.by_agent: dict[str, Bucket] = {}
        self._names: dict[str, Bucket] = {}
        # (repo, path) -> grants claiming exactly that path; (repo, dir) -> grants claiming
        # something strictly below dir. A path overlaps another exactly when one is an
        # ancestor of (or equal to) the other, so a request's candidates are the exact entries
        # of its path's ancestors and the "below" entry of its path.
        self._exact: dict[tuple[str, str], Bucket] = {}
        self._below: dict[tuple[str, str], Bucket] = {}
        # Grants with a glob claim (under the one key ""): decided by the rules, one by one.
        self._glob_index: dict[str, Bucket] = {}
        self._buckets: dict[int, list[tuple[dict[Any, Bucket], Any]]] = {}  # where each is filed

    # Keeping in step ---------------------------------------------------------------------
    def _add(self, grant: Grant, encoded: bytes | None = None) -> None:
        key = id(grant)
        self.grants[key] = grant
        if encoded is None:
            self.fragments[key] = b""
            self._stale.add(key)
        else:
            self.fragments[key] = encoded
        self._order[key] = self._next
        self._next += 1
        filed: list[tuple[dict[Any, Bucket], Any]] = [
            (self.by_id, grant.id),
            (self.by_agent, grant.agent),
        ]
        for claim in grant.claims:
            resource = claim.resource
            if resource.name:
                filed.append((self._names, resource.name))
            elif resource.glob:
                filed.append((self._glob_index, ""))
            else:
                repo, path = resource.repo, resource.path
                filed.append((self._exact, (repo, path)))
                for above in ancestors(path):
                    if above != path:
                        filed.append((self._below, (repo, above)))
        for index, name in filed:
            bucket = index.get(name)
            if bucket is None:
                bucket = index[name] = {}
            bucket[key] = grant
        self._buckets[key] = filed

    def _unfile(self, key: int) -> None:
        for index, name in self._buckets.pop(key):
            bucket = index.get(name)
            if bucket is not None:
                bucket.pop(key, None)
                if not bucket:
                    # Dropped when empty, so a long-lived process that locked a million
                    # different files over its life does not keep a million empty entries.
                    del index[name]

    def _remove(self, grant: Grant) -> None:
        key = id(grant)
        if self.grants.pop(key, None) is None:
            return
        del self.fragments[key]
        self._stale.discard(key)
        del self._order[key]
        self._unfile(key)

    def added(self, grant: Grant) -> None:
        if grant.id in self.by_id:
            self._delta_exact = False
        self._add(grant)
        self._added[id(grant)] = grant
        self.dirty = True

    def removed(self, grant: Grant) -> None:
        key = id(grant)
        if key not in self.grants:
            return
        if len(self.by_id.get(grant.id, ())) > 1:
            self._delta_exact = False
        if self._added.pop(key, None) is None:
            self._removed.append(grant.id)
        self._changed.pop(key, None)
        self._remove(grant)
        self.dirty = True

    def changed(self, grant: Grant) -> None:
        """``grant`` was changed in place (claims, expiry): file and encode it again."""
        key = id(grant)
        if key not in self.grants:
            return
        order = self._order[key]
        self._unfile(key)
        # Re-filed under the same key, so it keeps its place in `grants` and `fragments`.
        self._add(grant)
        self._order[key] = order
        self._next -= 1
        if len(self.by_id.get(grant.id, ())) > 1:
            self._delta_exact = False
        if key not in self._added:
            self._changed[key] = grant
        self.dirty = True

    def take_delta(self) -> tuple[list[Grant], list[Grant], list[str]] | None:
        """``(added, changed, removed ids)`` since the last call, or None when that is not
        known exactly; either way the next delta starts from now."""
        delta = (list(self._added.values()), list(self._changed.values()), self._removed)
        exact = self._delta_exact
        self._added, self._changed, self._removed, self._delta_exact = {}, {}, [], True
        return delta if exact else None

    def apply(self, added: list[Grant], changed: list[Grant], removed: list[str]) -> bool:
        """Make another process's change (a journal record) to this table: the same grants in
        the same order as its table. False when a grant it names is not here (the caller
        then reads the whole document)."""
        locks = self.table.locks
        for lease_id in removed:
            grant = self.find(lease_id)
            if grant is None:
                return False
            _remove_identical(locks, grant)
            self._remove(grant)
        for new in changed:
            grant = self.find(new.id)
            if grant is None:
                return False
            # In place, so it keeps its place in the table (and the objects that refer to it,
            # this process's own records, see the change as the table has it).
            for field in Grant.__struct_fields__:
                setattr(grant, field, getattr(new, field))
            self.changed(grant)
        for grant in added:
            locks.append(grant)
            self._add(grant)
        self.take_delta()
        self.dirty = False
        return True

    def in_step(self) -> bool:
        """Whether the view lists exactly the table's grants, in order (an identity check in
        C: comparing two lists of the same objects never calls their ``__eq__``)."""
        locks = self.table.locks
        return len(locks) == len(self.grants) and list(self.grants.values()) == locks

    def resync(self) -> None:
        """Rebuild the index from the table, keeping the fragments of grants still there."""
        old, fragments, stale = self.grants, self.fragments, self._stale
        self._delta_exact = False
        self._reset()
        for grant in self.table.locks:
            key = id(grant)
            kept = old.get(key) is grant and key not in stale
            self._add(grant, fragments[key] if kept else None)
        self.dirty = True

    # The document ------------------------------------------------------------------------
    def locks_json(self) -> list[bytes]:
        """The parts of the table's ``locks`` list as the pretty-printed document has it:
        each grant's fragment, encoded once, and the separators (joined by the writer)."""
        if not self.grants:
            return [b"[]"]
        for key in self._stale:
            self.fragments[key] = fragment(self.grants[key])
        self._stale.clear()
        # Each fragment is kept with the separator before it, so the parts are the cached
        # bytes themselves (a list made in C) and the first one's separator is skipped.
        parts: list[bytes] = [b"[\n", *self.fragments.values(), b"\n  ]"]
        parts[1] = parts[1][len(SEPARATOR):]
        return parts

    # Questions ---------------------------------------------------------------------------
    def find(self, lease_id: str) -> Grant | None:
        bucket = self.by_id.get(lease_id)
        if not bucket:
            return None
        return min(bucket.values(), key=lambda g: self._order[id(g)])

    def candidates(self, request: Record) -> list[Grant] | None:
        """The grants that may conflict with ``request`` (a superset, in table order), or None
        when only a scan can tell (the request has a glob claim)."""
        found: Bucket = dict(self._glob_index.get("", {}))
        for claim in request.claims:
            resource = claim.resource
            if resource.name:
                found.update(self._names.get(resource.name, ()))
                continue
            if resource.glob:
                return None
            repo, path = resource.repo, resource.path
            found.update(self._exact.get((repo, path), ()))  # "" or ".": not its own ancestor
            for above in ancestors(path):
                found.update(self._exact.get((repo, above), ()))
            found.update(self._below.get((repo, path), ()))
        order = self._order
        return sorted(found.values(), key=lambda g: order[id(g)])

    def own(self, agent: str) -> list[Grant]:
        order = self._order
        return sorted(self.by_agent.get(agent, {}).values(), key=lambda g: order[id(g)])


def _view(table: Table) -> TableView | None:
    view: TableView | None = getattr(_active, "view", None)
    return view if view is not None and view.table is table else None


@contextmanager
def activate(view: TableView) -> Iterator[TableView]:
    """Make ``view`` the one the helpers below keep in step while the block runs."""
    previous = getattr(_active, "view", None)
    _active.view = view
    try:
        yield view
    finally:
        _active.view = previous


def add_grant(table: Table, grant: Grant) -> None:
    """Append ``grant`` to the table's grants."""
    table.locks.append(grant)
    view = _view(table)
    if view is not None:
        view.added(grant)


def remove_grant(table: Table, grant: Grant) -> None:
    """Take ``grant`` (this very record) out of the table's grants.

    Searched from the end, by identity: the grant a release takes out is most often the one
    appended last, and ``list.remove`` would compare every record before it field by field.
    """
    _remove_identical(table.locks, grant)
    view = _view(table)
    if view is not None:
        view.removed(grant)


def _remove_identical(locks: list[Grant], grant: Grant) -> None:
    for position in range(len(locks) - 1, -1, -1):
        if locks[position] is grant:
            del locks[position]
            return
    locks.remove(grant)  # an equal record (not this one): as list.remove always did


def changed(table: Table, grant: Grant) -> None:
    """Say that ``grant`` of ``table`` was changed in place (its claims or expiry)."""
    view = _view(table)
    if view is not None:
        view.changed(grant)


def find_grant(table: Table, lease_id: str) -> Grant | None:
    """The table's (first) grant with this lease id."""
    view = _view(table)
    if view is not None:
        return view.find(lease_id)
    return next((g for g in table.locks if g.id == lease_id), None)


def finder(table: Table) -> Callable[[str], Grant | None]:
    """:func:`find_grant` for many ids: without a view, the table is scanned once."""
    view = _view(table)
    if view is not None:
        return view.find
    first: dict[str, Grant] = {}
    for grant in table.locks:
        first.setdefault(grant.id, grant)
    return first.get


def blockers(table: Table, request: Waiter) -> list[Record]:
    """:func:`versatil_fs.locks.table.blockers`, answered from the view's index when there is
    one: the same records in the same order."""
    view = _view(table)
    candidates = view.candidates(request) if view is not None else None
    if view is None or candidates is None:
        return scan_blockers(table, request)
    index = ClaimIndex(request.claims)
    agent = request.agent
    found: list[Record] = [
        g for g in candidates if g.agent != agent and index.conflicts(g.claims)
    ]
    if not table.waiters:
        return found
    found.extend(queued_blockers(table, request, view.own(agent)))
    return found
