"""Lock records and the pure rules that decide who may hold what. No I/O here.

Two claims conflict when their resources overlap and at least one is a ``write``; two requests
conflict when they belong to different agents and any of their claims conflict (one agent never
blocks itself). A request is granted when no live grant conflicts with it and no waiter ahead of
it in the queue (higher priority first, then arrival) does — except a waiter that is itself
blocked by the requesting agent's own grants: it cannot move before that agent releases anyway,
and queueing behind it would be a deadlock of our own making.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Annotated, Any, Literal

import msgspec

from versatil_fs.errors import DamagedTable, StateError
from versatil_fs.locks.glob_pairs import pair_witness, pattern_covers, top_of
from versatil_fs.repo import ignorecase_of

# The glob modules (versatil_fs.locks.globs) are imported where a pattern is first met, in
# functions that are cached or rare: `versatil lock` of a plain path, run on every edit an
# agent makes, need not pay for loading them.

__all__ = [
    "FOREVER",
    "ID_PATTERN",
    "MAX_FENCE",
    "MAX_PRIORITY",
    "MAX_SESSION",
    "MAX_TIME",
    "SCHEMA_VERSION",
    "Claim",
    "ClaimIndex",
    "Count",
    "Duration",
    "Grant",
    "Mode",
    "Owner",
    "Priority",
    "Record",
    "Resource",
    "Table",
    "Time",
    "Waiter",
    "ahead_of",
    "ancestors",
    "blockers",
    "check_fence",
    "check_records",
    "check_session",
    "claims_conflict",
    "conflicts",
    "decode_table",
    "find_cycle",
    "in_lock_space",
    "new_id",
    "path_contains",
    "path_overlaps",
    "queue_key",
    "queued_blockers",
    "valid_id",
]


SCHEMA_VERSION = 1

Mode = Literal["read", "write"]
Owner = Literal["process", "shell"]

# The one pattern every lease, request and holder id must match (what `new_id` makes:
# milliseconds in hex, the pid, six random hex digits). Ids name files in run/leases/, so an id
# read back from the table or a holder file is only ever used after this check: a "/", "..",
# a NUL or a newline (`$` would let one through; `\Z` does not) can never reach a path.
# Checked by `check_records` after decoding rather than as a msgspec pattern: a pattern runs the
# regex on every id of every decode (it made decoding a 100-lock table five times slower), the
# check remembers the ids it has passed.
ID_PATTERN = re.compile(r"^[0-9a-f]{1,16}-[0-9]{1,10}-[0-9a-f]{6}\Z")
_BOOT_ID = re.compile(r"^[0-9a-f-]{0,64}\Z")

# Every number in the table is bounded, so a hand-edited or damaged table (1e308, a negative
# time) fails to decode and is moved aside and rebuilt, instead of overflowing a clock format
# or a sleep later. Times are seconds since the epoch: a deadline "for ever" is now + FOREVER.
FOREVER = 1e9  # about 31 years: as good as for ever, and still a finite number
MAX_TIME = 1e10  # the year 2286
Time = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_TIME)]
Duration = Annotated[float, msgspec.Meta(gt=0.0, le=FOREVER)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
Priority = Annotated[int, msgspec.Meta(ge=-(10**9), le=10**9)]
MAX_PRIORITY = 10**9
# The last fencing token a counter may reach: room above it for a reserved block, all within
# the bound every number of the table has (`Count`). Unreachable by granting; only a counter
# set by hand gets there, and a token past it would make the table unreadable.
MAX_FENCE = 2**53 - 1025
# A record's `session` is free text the harness hooks fill ("claude 1a2b3c4d-5e6f-..."), shown
# in a column of `versatil locks`: bounded and printable, so a table edited by hand cannot put
# a terminal escape or a megabyte on someone's screen.
MAX_SESSION = 200


def check_fence(last: int) -> None:
    """Refuse to hand out a token after ``last`` when it is at :data:`MAX_FENCE`."""
    if last >= MAX_FENCE:
        raise StateError(
            f"The fencing counter is at its bound ({last}); it was set by hand? Lower it, or "
            "move the lock table away and versatil rebuilds it from the live locks."
        )


def new_id() -> str:
    """A lease, request or holder id: sortable by creation time, unique across processes."""
    import time

    return f"{time.time_ns() // 1_000_000:x}-{os.getpid()}-{os.urandom(3).hex()}"


# What has passed the checks below, remembered (bounded): the table is decoded on every
# transaction and holds the same ids and holder files again and again.
_passed: set[str] = set()
_passed_files: set[tuple[str, str]] = set()
_passed_boots: set[str] = set()
_passed_sessions: set[str] = set()


def _remember(cache: set[Any], item: Any) -> None:
    if len(cache) > 4096:
        cache.clear()
    cache.add(item)


def valid_id(text: str) -> bool:
    if text in _passed:
        return True
    if ID_PATTERN.match(text) is None:
        return False
    _remember(_passed, text)
    return True


def check_session(session: str) -> str | None:
    """Why ``session`` cannot be a record's session (too long, not printable), or None."""
    if len(session) > MAX_SESSION:
        return f"is {len(session)} characters long; at most {MAX_SESSION}"
    if session and session not in _passed_sessions:
        if not session.isprintable():
            return "holds characters that are not printable"
        _remember(_passed_sessions, session)
    return None


def check_records(records: Iterable[Grant | Waiter], where: str = "locks") -> str | None:
    """Why these records (from the table or a holder file) are damaged, or None if they are not.

    Every id must be one we make; a process record names its holder file by id only (a record
    written before `holder` existed names it by `lease_file`, whose file name then gives the
    id, checked like any other). The lease file itself is never trusted as a path.
    """
    for index, record in enumerate(records):
        if not valid_id(record.id):
            return f"`$.{where}[{index}]` has the id {record.id[:80]!r}, not one versatil makes"
        if record.session and (problem := check_session(record.session)):
            return f"`$.{where}[{index}]` has a session that {problem}"
        holder, lease_file = record.holder, record.lease_file
        if holder and not valid_id(holder):
            return f"`$.{where}[{index}]` names the holder {holder[:80]!r}, not one of ours"
        if lease_file:
            # Every waiter has a holder file (a `versatil lock` waits in its process too); a
            # grant has one unless it is a shell lease.
            has_file = record.owner == "process" or isinstance(record, Waiter)
            if (holder, lease_file) not in _passed_files:
                name = lease_file.rpartition("/")[2]
                if not holder and has_file and name.endswith(".lease"):
                    holder = name[: -len(".lease")]
                    if not valid_id(holder):
                        holder = ""
                if not lease_file.startswith("/") or not holder or name != f"{holder}.lease":
                    return (
                        f"`$.{where}[{index}]` names {lease_file[:80]!r} as its holder file, "
                        "not one of ours"
                    )
                _remember(_passed_files, (record.holder, lease_file))
            if not record.holder:
                record.holder = lease_file.rpartition("/")[2][: -len(".lease")]
        if isinstance(record, Grant) and record.boot_id and record.boot_id not in _passed_boots:
            if not _BOOT_ID.match(record.boot_id):
                return f"`$.{where}[{index}]` has the boot id {record.boot_id[:80]!r}"
            _remember(_passed_boots, record.boot_id)
    return None


# gc=False on every record type: they never refer back to each other (a table holds lists of
# grants, which hold claims, which hold resources), so the cycle collector has nothing to find
# in them, and not tracking them makes decoding a 100-lock table about a quarter faster; every
# transaction decodes the whole table.
class Resource(msgspec.Struct, frozen=True, order=True, omit_defaults=True, gc=False):
    """A file or directory of one repository, or a named resource such as ``db:users``.

    ``repo`` is the repository's git common directory and ``path`` the repo-relative POSIX path
    (``"."`` is the whole repository); a named resource has ``name`` and neither of the others.
    ``glob`` says ``path`` is a pattern (:mod:`versatil_fs.locks.globs`, escapes kept as typed)
    rather than one file or directory. ``file`` says a plain path is a file, with nothing under
    it (what :func:`~versatil_fs.locks.requests.resolve` finds for a path that is not a
    directory and was not written with a trailing ``/``; an edit's target): a pattern then
    meets it only by covering it. Without it a plain path may be a directory, and
    ``src/**/*.ts`` meets ``src/b.py`` through ``src/b.py/a.ts`` — so a reservation of every
    TypeScript file would block the Python files beside them. Not part of the identity
    (:attr:`key`): a file deleted, or a directory emptied and removed, is unlocked by its name.
    """

    repo: str = ""
    path: str = ""
    name: str = ""
    glob: bool = False
    file: bool = False

    def __str__(self) -> str:
        return self.name if self.name else self.path

    @property
    def is_path(self) -> bool:
        return not self.name

    @property
    def key(self) -> tuple[str, str, str, bool]:
        """What names the resource, whatever is on disk now (``file`` left out)."""
        return (self.repo, self.path, self.name, self.glob)

    def overlaps(self, other: Resource) -> bool:
        if self.is_path != other.is_path:
            return False
        if not self.is_path:
            return self.name == other.name
        if self.repo != other.repo:
            return False
        if not (self.glob or other.glob):
            return path_overlaps(self.path, other.path)  # the fast path: no pattern involved
        return pair_witness(self.path, self.glob, self.file, other.path, other.glob, other.file,
                        ignorecase_of(self.repo)) is not None

    def witness(self, other: Resource) -> str | None:
        """A path both resources cover (for two plain paths, the deeper one; for a named
        resource, its name), or None when they do not overlap."""
        if self.is_path != other.is_path:
            return None
        if not self.is_path:
            return self.name if self.name == other.name else None
        if self.repo != other.repo:
            return None
        if not (self.glob or other.glob):
            a, b = self.path, other.path
            if path_contains(a, b):
                return b
            return a if path_contains(b, a) else None
        return pair_witness(self.path, self.glob, self.file, other.path, other.glob, other.file,
                        ignorecase_of(self.repo))

    def covers(self, repo: str, path: str) -> bool:
        """Whether this resource contains the repo-relative ``path`` of ``repo`` (the key of
        the repository, a submodule's included: see :func:`in_lock_space`)."""
        if not self.is_path:
            return False
        key, full = in_lock_space(repo, path)
        if self.repo != key:
            return False
        if not self.glob:
            return path_contains(self.path, full)
        return pattern_covers(self.path, full, ignorecase_of(key))


def in_lock_space(repo: str, path: str) -> tuple[str, str]:
    """``(key, path)`` of ``repo``'s repo-relative ``path`` in the lock space path resources
    are keyed in: a submodule's files are keyed by its top superproject, under the
    submodule's path (:meth:`versatil_fs.repo.Repository.lock_space`)."""
    from versatil_fs.repo import space_of  # a dict lookup; repo.py imports nothing of ours

    key, prefix = space_of(repo)
    if not prefix:
        return key, path
    return key, prefix if path == "." else f"{prefix}/{path}"


def path_contains(outer: str, inner: str) -> bool:
    """``outer`` is ``inner`` or one of its ancestor directories (``"."`` contains all)."""
    return outer == "." or outer == inner or inner.startswith(outer + "/")


def path_overlaps(a: str, b: str) -> bool:
    # A directory lock covers everything below it, so two paths overlap exactly when one is an
    # ancestor of (or equal to) the other; `a/b` and `a/bc` are siblings and never do.
    return path_contains(a, b) or path_contains(b, a)


class Claim(msgspec.Struct, frozen=True, order=True, gc=False):
    resource: Resource
    mode: Mode = "write"

    def conflicts(self, other: Claim) -> bool:
        return (self.mode == "write" or other.mode == "write") and self.resource.overlaps(
            other.resource
        )


class _Request(msgspec.Struct, kw_only=True, gc=False):
    """What a grant and a waiting request share: who asks for what, and how to reach them."""

    version: int = SCHEMA_VERSION
    id: str  # checked by check_records
    agent: str
    # Which harness session asked, as the harness hooks write it (free text, checked by
    # check_records; empty for everyone else). Tables from before it load with "".
    session: str = ""
    claims: list[Claim]
    owner: Owner = "process"
    pid: Count = 0
    host: str = ""
    priority: Priority = 0
    ttl: Duration = 300.0
    # The waiters' wake-up target and the liveness proof of a process lease: the id of the file
    # run/leases/<holder>.lease its process keeps flocked for as long as it lives. Shell leases
    # have none and end at their expiry.
    holder: str = ""
    # Where that file was, for readers outside the lock manager (the monitor probes it); the
    # lock manager itself never uses it as a path, it rebuilds run/leases/<holder>.lease.
    # The path of the holder file (run/leases/<holder>.lease). Named `lease_file` because that
    # is the table's on-disk JSON field, which older tables and readers (`cat`) know.
    lease_file: str = ""


class Grant(_Request, kw_only=True):
    """A lease that holds its claims now."""

    acquired_at: Time
    expires_at: Time
    # The expiry on CLOCK_BOOTTIME too (seconds), valid while the machine has not rebooted
    # (`boot_id`): a wall clock set forward or back must not end a shell lease early or late.
    boot_id: str = ""
    expires_boot: Annotated[float, msgspec.Meta(ge=0.0, le=MAX_TIME)] = 0.0
    # The fencing token: greater than every token granted before it in this lock space
    # (Kleppmann's fencing). A holder whose lease ended without its knowing (an expired shell
    # lease, a forced release) still presents its old token, and the commit guard and restore
    # refuse it once a newer grant covers the same files. 0 in tables from before tokens.
    fence: Count = 0


class Waiter(_Request, kw_only=True):
    """A request waiting in the queue; its process keeps ``lease_file`` flocked while it waits."""

    seq: Count
    since: Time
    deadline: Time

    def granted(self, now: float) -> Grant:
        """The grant this request becomes."""
        process = self.owner == "process"
        return Grant(
            id=self.id, agent=self.agent, session=self.session, claims=self.claims,
            owner=self.owner, pid=self.pid,
            host=self.host, priority=self.priority, ttl=self.ttl,
            holder=self.holder if process else "", lease_file=self.lease_file if process else "",
            acquired_at=now, expires_at=min(now + self.ttl, MAX_TIME),
        )


class Table(msgspec.Struct, kw_only=True, gc=False):
    """The whole lock table: what ``logs/resource-locks.json`` holds."""

    version: int = SCHEMA_VERSION
    seq: Count = 0
    # The last fencing token granted (see Grant.fence); never lowered, a rebuild included
    # (LocalStore keeps a reserved ceiling beside the table for that).
    fence: Count = 0
    locks: list[Grant] = msgspec.field(default_factory=list)
    waiters: list[Waiter] = msgspec.field(default_factory=list)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


# A row of the table: a grant (holds its claims) or a waiter (holds nothing yet, it queues).
Record = Grant | Waiter

_table_decoder = msgspec.json.Decoder(Table)


def decode_table(raw: bytes) -> Table:
    """The table a document holds, every record checked (:func:`check_records`). Anything
    else is :class:`DamagedTable` with the reason (possibly empty, for the caller to word): a
    value out of the schema's bounds or an id that is not one of ours is damage like a syntax
    error, and nothing read from such a document is acted on. Both stores read through here."""
    try:
        table = _table_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DamagedTable(str(exc)) from exc
    if table.version != SCHEMA_VERSION:
        raise DamagedTable(f"schema version {table.version}, expected {SCHEMA_VERSION}")
    problem = check_records(table.locks) or check_records(table.waiters, "waiters")
    if problem:
        raise DamagedTable(problem)
    return table


def claims_conflict(a: Iterable[Claim], b: Sequence[Claim]) -> bool:
    return any(x.conflicts(y) for x in a for y in b)


def conflicts(a: Record, b: Record) -> bool:
    """Whether ``a`` and ``b`` exclude each other: different agents and a conflicting claim."""
    return a.agent != b.agent and claims_conflict(a.claims, b.claims)


def queue_key(waiter: Waiter) -> tuple[int, int]:
    return (-waiter.priority, waiter.seq)


def ahead_of(a: Waiter, b: Waiter) -> bool:
    return queue_key(a) < queue_key(b)


class ClaimIndex:
    """A request's claims arranged for fast conflict tests against many holders.

    ``blockers`` runs on every lock transaction against every live grant, so the pairwise
    ``Claim.conflicts`` (three method calls per pair) is replaced by set and prefix lookups.
    Same answers as :func:`claims_conflict`; the property tests hold the two together.

    Plain paths stay on that fast path. A glob on either side is decided pairwise, exactly
    (``Resource.overlaps``, its answers cached per pair of spellings), against the path
    claims of its repository only.
    """

    def __init__(self, claims: Iterable[Claim]) -> None:
        self.names: dict[str, bool] = {}  # name -> claimed for writing
        # repo -> [(the path and all its ancestors, "path/", claimed for writing)]: another
        # path overlaps ours when it is one of those, or starts with "path/". Plain paths only.
        self.paths: dict[str, list[tuple[frozenset[str], str, bool]]] = {}
        # repo -> [(resource, claimed for writing)]: our glob claims, and every path claim of
        # ours (a glob of theirs is checked against each).
        self.globs: dict[str, list[tuple[Resource, bool]]] = {}
        self.all_paths: dict[str, list[tuple[Resource, bool]]] = {}
        for claim in claims:
            write = claim.mode == "write"
            resource = claim.resource
            if resource.name:
                self.names[resource.name] = self.names.get(resource.name, False) or write
                continue
            entry = (resource, write)
            self.all_paths.setdefault(resource.repo, []).append(entry)
            if resource.glob:
                self.globs.setdefault(resource.repo, []).append(entry)
            else:
                prefix = "" if resource.path == "." else resource.path + "/"
                self.paths.setdefault(resource.repo, []).append(
                    (frozenset(ancestors(resource.path)), prefix, write)
                )

    def conflicts(self, claims: Iterable[Claim]) -> bool:
        for claim in claims:
            write = claim.mode == "write"
            resource = claim.resource
            if resource.name:
                mine = self.names.get(resource.name)
                if mine is not None and (mine or write):
                    return True
                continue
            if resource.glob:
                if self._meets(self.all_paths.get(resource.repo), resource, write):
                    return True
                continue
            theirs = resource.path
            for above, prefix, mine_write in self.paths.get(resource.repo, ()):
                # The innermost loop of every transaction: a set lookup and a prefix test.
                if (mine_write or write) and (theirs in above or theirs.startswith(prefix)):
                    return True
            if self.globs and self._meets(self.globs.get(resource.repo), resource, write):
                return True
        return False

    @staticmethod
    def _meets(ours: list[tuple[Resource, bool]] | None, theirs: Resource, write: bool) -> bool:
        """Whether a path claim of theirs meets one of ``ours``, a glob on one side at least.

        The top-level names first (None: any), so that most pairs are told apart by one string
        comparison (`src/**` never meets `docs/x`); then the pair's exact, cached overlap."""
        if not ours:
            return False
        fold = ignorecase_of(theirs.repo)
        top = top_of(theirs.path, theirs.glob, fold)
        for mine, mine_write in ours:
            if not (mine_write or write):
                continue
            mine_top = top_of(mine.path, mine.glob, fold)
            if top is not None and mine_top is not None and top != mine_top:
                continue
            if pair_witness(mine.path, mine.glob, mine.file, theirs.path, theirs.glob, theirs.file,
                        fold) is not None:
                return True
        return False


def ancestors(path: str) -> Iterator[str]:
    """``a/b/c`` -> ``a/b/c``, ``a/b``, ``a``, ``.``: the path and every lock that covers it."""
    while path and path != ".":
        yield path
        path = path.rpartition("/")[0]
    yield "."


def blockers(table: Table, request: Waiter) -> list[Record]:
    """Everything that keeps ``request`` from being granted now (empty: grant it)."""
    index = ClaimIndex(request.claims)
    agent = request.agent
    found: list[Record] = [
        g for g in table.locks if g.agent != agent and index.conflicts(g.claims)
    ]
    if not table.waiters:
        return found
    found.extend(queued_blockers(table, request, [g for g in table.locks if g.agent == agent]))
    return found


def queued_blockers(table: Table, request: Waiter, own: Sequence[Grant]) -> list[Waiter]:
    """The waiters ahead of ``request`` in the queue that keep it waiting; ``own`` are its
    agent's grants (a waiter blocked by them is not waited for: see the module doc)."""
    found: list[Waiter] = []
    for waiter in table.waiters:
        if waiter.id == request.id or not ahead_of(waiter, request):
            continue
        if not conflicts(waiter, request):
            continue
        if any(conflicts(g, waiter) for g in own):
            continue  # it waits for us; queueing behind it would deadlock
        found.append(waiter)
    return found


def find_cycle(table: Table, request: Waiter) -> list[str] | None:
    """The agents of a wait-for cycle through ``request``'s agent, if waiting would close one.

    Nodes are agents; an edge runs from a waiting agent to each agent that blocks it. The cycle
    is returned as ``[A, B, ..., A]`` so the error can print it as ``A -> B -> A``.
    """
    waiting = [w for w in table.waiters if w.id != request.id] + [request]
    edges: dict[str, set[str]] = {}
    for waiter in waiting:
        for blocker in blockers(table, waiter):
            edges.setdefault(waiter.agent, set()).add(blocker.agent)
    start = request.agent
    path: list[str] = [start]
    seen: set[str] = set()

    def walk(node: str) -> list[str] | None:
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                return [*path, start]
            if nxt in seen:
                continue
            seen.add(nxt)
            path.append(nxt)
            found = walk(nxt)
            if found:
                return found
            path.pop()
        return None

    return walk(start)
