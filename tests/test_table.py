"""The pure conflict rules of versatil_fs.locks.table, as properties over generated tables."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from versatil_fs.locks.holders import write_holder
from versatil_fs.locks.table import (
    Claim,
    Grant,
    Resource,
    Table,
    Waiter,
    ahead_of,
    blockers,
    claims_conflict,
    conflicts,
    find_cycle,
    path_contains,
    path_overlaps,
)

# No per-example deadline (a loaded CI machine must not fail a pure test); a budget that keeps
# the whole module to a few seconds while still covering the small alphabets below densely.
cheap = settings(max_examples=100, deadline=None)
costly = settings(max_examples=60, deadline=None)

# A small alphabet of names makes prefixes (`b` / `bc`), siblings and ancestors common.
SEGMENTS = st.sampled_from(["a", "b", "bc", "c", "a.b", "b-c", "src", "x"])
REPOS = st.sampled_from(["/r/one/.git", "/r/two/.git"])
NAMES = st.sampled_from(["db:users", "db:user", "port:5432", "api:/auth/login", "api:/auth"])
AGENTS = st.sampled_from(["Dana", "Marcus", "James", "Maria"])
MODES = st.sampled_from(["read", "write"])


@st.composite
def rel_paths(draw: st.DrawFn, min_depth: int = 0) -> str:
    parts = draw(st.lists(SEGMENTS, min_size=min_depth, max_size=4))
    return "/".join(parts) if parts else "."


@st.composite
def resources(draw: st.DrawFn) -> Resource:
    if draw(st.booleans()):
        return Resource(name=draw(NAMES))
    return Resource(repo=draw(REPOS), path=draw(rel_paths()))


claims = st.builds(Claim, resources(), MODES)
claim_lists = st.lists(claims, min_size=1, max_size=3)


def grant(agent: str, cl: list[Claim], gid: str = "g", priority: int = 0) -> Grant:
    return Grant(
        id=gid, agent=agent, claims=cl, acquired_at=0.0, expires_at=1e12, priority=priority
    )


def waiter(
    agent: str, cl: list[Claim], seq: int, wid: str | None = None, priority: int = 0
) -> Waiter:
    return Waiter(
        id=wid or f"w{seq}", agent=agent, claims=cl, seq=seq, since=float(seq),
        deadline=1e12, ttl=300.0, lease_file=f"/leases/w{seq}.lease", priority=priority,
    )


@st.composite
def tables(draw: st.DrawFn) -> Table:
    """A table with a few grants and waiters (ids unique, sequence numbers increasing)."""
    table = Table()
    for i in range(draw(st.integers(0, 4))):
        table.locks.append(grant(draw(AGENTS), draw(claim_lists), gid=f"g{i}"))
    for _ in range(draw(st.integers(0, 4))):
        seq = table.next_seq()
        table.waiters.append(
            waiter(draw(AGENTS), draw(claim_lists), seq, priority=draw(st.integers(0, 2)))
        )
    return table


@st.composite
def requests(draw: st.DrawFn, table: Table) -> Waiter:
    return waiter(
        draw(AGENTS), draw(claim_lists), table.seq + 1, wid="request",
        priority=draw(st.integers(0, 2)),
    )


# Paths and resources -------------------------------------------------------------------------
@cheap
@given(resources(), resources())
def test_overlap_is_symmetric(a: Resource, b: Resource) -> None:
    assert a.overlaps(b) == b.overlaps(a)


@cheap
@given(resources())
def test_a_resource_overlaps_itself(a: Resource) -> None:
    assert a.overlaps(a)


@cheap
@given(REPOS, rel_paths(), st.lists(SEGMENTS, min_size=1, max_size=3))
def test_a_directory_covers_every_descendant(repo: str, directory: str, below: list[str]) -> None:
    inner = "/".join(below) if directory == "." else directory + "/" + "/".join(below)
    outer_resource = Resource(repo=repo, path=directory)
    inner_resource = Resource(repo=repo, path=inner)
    assert outer_resource.covers(repo, inner)
    assert outer_resource.overlaps(inner_resource)
    assert inner_resource.overlaps(outer_resource)
    assert not inner_resource.covers(repo, directory)  # but not the other way round


@cheap
@given(REPOS, rel_paths())
def test_the_repository_root_covers_everything_in_it(repo: str, path: str) -> None:
    assert Resource(repo=repo, path=".").overlaps(Resource(repo=repo, path=path))


@cheap
@given(rel_paths(), rel_paths())
def test_the_same_path_in_two_repositories_never_overlaps(a: str, b: str) -> None:
    assert not Resource(repo="/r/one/.git", path=a).overlaps(Resource(repo="/r/two/.git", path=b))


@cheap
@given(rel_paths(), SEGMENTS, st.text("bcxyz.-_", min_size=1, max_size=3), rel_paths())
def test_a_name_and_its_prefix_never_overlap(
    parent: str, name: str, extra: str, below: str
) -> None:
    """`a/b` vs `a/bc` (and everything under them) are siblings, never nested."""
    short = name if parent == "." else f"{parent}/{name}"
    longer = short + extra
    longer_below = longer if below == "." else f"{longer}/{below}"
    assert not path_overlaps(short, longer_below)
    assert not path_overlaps(longer_below, short)
    assert not Resource(repo="/r", path=short).overlaps(Resource(repo="/r", path=longer_below))


def test_prefix_examples() -> None:
    assert not path_overlaps("a/b", "a/bc")
    assert not path_overlaps("src", "src2/x.py")
    assert path_overlaps("a/b", "a/b/c")
    assert path_contains(".", "anything/at/all")
    assert not path_contains("a/b/c", "a/b")


@cheap
@given(rel_paths(), SEGMENTS, SEGMENTS, rel_paths(), rel_paths())
def test_sibling_directories_never_overlap(
    parent: str, left: str, right: str, below_left: str, below_right: str
) -> None:
    assume(left != right)

    def under(*parts: str) -> str:
        return "/".join(p for p in parts if p != ".")

    a = under(parent, left, below_left)
    b = under(parent, right, below_right)
    assert not path_overlaps(a, b)
    assert not claims_conflict(
        [Claim(Resource(repo="/r", path=a), "write")], [Claim(Resource(repo="/r", path=b), "write")]
    )


@cheap
@given(NAMES, NAMES)
def test_named_resources_overlap_only_when_equal(a: str, b: str) -> None:
    # `api:/auth` is not a directory of `api:/auth/login`: names are opaque.
    assert Resource(name=a).overlaps(Resource(name=b)) == (a == b)


@cheap
@given(rel_paths(), NAMES)
def test_a_name_never_overlaps_a_path(path: str, name: str) -> None:
    assert not Resource(repo="/r", path=path).overlaps(Resource(name=name))


# Claims and holders -------------------------------------------------------------------------
@cheap
@given(claims, claims)
def test_claim_conflict_is_symmetric(a: Claim, b: Claim) -> None:
    assert a.conflicts(b) == b.conflicts(a)


@cheap
@given(claims, claims)
def test_claims_conflict_exactly_when_overlapping_with_a_write(a: Claim, b: Claim) -> None:
    expected = a.resource.overlaps(b.resource) and "write" in (a.mode, b.mode)
    assert a.conflicts(b) == expected


@cheap
@given(st.lists(resources(), min_size=1, max_size=3), st.lists(resources(), min_size=1, max_size=3))
def test_read_never_conflicts_with_read(left: list[Resource], right: list[Resource]) -> None:
    a = grant("Dana", [Claim(r, "read") for r in left])
    b = grant("Marcus", [Claim(r, "read") for r in right])
    assert not conflicts(a, b)


@cheap
@given(AGENTS, AGENTS, claim_lists, claim_lists)
def test_holder_conflict_is_symmetric(
    x: str, y: str, left: list[Claim], right: list[Claim]
) -> None:
    a, b = grant(x, left), waiter(y, right, 1)
    assert conflicts(a, b) == conflicts(b, a)


@cheap
@given(AGENTS, claim_lists, claim_lists)
def test_one_agent_never_conflicts_with_itself(
    agent: str, left: list[Claim], right: list[Claim]
) -> None:
    assert not conflicts(grant(agent, left), grant(agent, right))
    assert not conflicts(grant(agent, left), waiter(agent, right, 1))


@cheap
@given(claim_lists)
def test_a_write_conflicts_across_agents(cl: list[Claim]) -> None:
    writes = [Claim(c.resource, "write") for c in cl]
    assert conflicts(grant("Dana", writes), grant("Marcus", cl))


# Queue and blockers -------------------------------------------------------------------------
def _grantable(table: Table, request: Waiter) -> bool:
    """An independent statement of when a request may be granted now.

    No grant of another agent conflicts with it, and every waiter queued ahead of it that it
    conflicts with is itself waiting for one of the requesting agent's grants (so it could not
    move first anyway).
    """
    for g in table.locks:
        if g.agent != request.agent and claims_conflict(g.claims, request.claims):
            return False
    own = [g for g in table.locks if g.agent == request.agent]
    for w in table.waiters:
        if w.id == request.id:
            continue
        is_ahead = (-w.priority, w.seq) < (-request.priority, request.seq)
        if not is_ahead or w.agent == request.agent:
            continue
        if not claims_conflict(w.claims, request.claims):
            continue
        if any(claims_conflict(g.claims, w.claims) for g in own if g.agent != w.agent):
            continue
        return False
    return True


@costly
@given(st.data())
def test_blockers_are_empty_exactly_when_grantable(data: st.DataObject) -> None:
    table = data.draw(tables())
    request = data.draw(requests(table))
    found = blockers(table, request)
    assert (not found) == _grantable(table, request)
    for holder in found:
        assert conflicts(holder, request)
        assert holder.id != request.id
        if isinstance(holder, Waiter):
            assert ahead_of(holder, request)


@costly
@given(st.data())
def test_blockers_ignore_waiters_queued_behind(data: st.DataObject) -> None:
    table = data.draw(tables())
    request = waiter(data.draw(AGENTS), data.draw(claim_lists), seq=0, wid="first", priority=9)
    # Priority 9 and seq 0: first in line, so only grants can block it.
    assert blockers(table, request) == [g for g in table.locks if conflicts(g, request)]


def test_queue_order_is_priority_then_arrival() -> None:
    c = [Claim(Resource(name="db:users"))]
    early, late, urgent = waiter("A", c, 1), waiter("B", c, 2), waiter("C", c, 3, priority=5)
    assert ahead_of(early, late) and not ahead_of(late, early)
    assert ahead_of(urgent, early) and ahead_of(urgent, late)


OPERATIONS = st.lists(st.tuples(AGENTS, claim_lists, st.booleans()), min_size=1, max_size=25)


@settings(max_examples=80, deadline=None)
@given(OPERATIONS)
def test_granting_only_unblocked_requests_never_grants_two_conflicting_locks(
    operations: list[tuple[str, list[Claim], bool]],
) -> None:
    _simulate(operations)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None)
@given(OPERATIONS)
def test_granting_only_unblocked_requests_never_grants_two_conflicting_locks_soak(
    operations: list[tuple[str, list[Claim], bool]],
) -> None:
    _simulate(operations)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None)
@given(st.data())
def test_blockers_are_empty_exactly_when_grantable_soak(data: st.DataObject) -> None:
    test_blockers_are_empty_exactly_when_grantable.hypothesis.inner_test(data)  # type: ignore[attr-defined]


def _simulate(operations: list[tuple[str, list[Claim], bool]]) -> None:
    """Simulate arrivals and releases; the live grants never conflict, whatever the order."""
    table = Table()
    counter = itertools.count()
    for agent, cl, release_oldest in operations:
        if release_oldest and table.locks:
            table.locks.pop(0)
        seq = table.next_seq()
        table.waiters.append(waiter(agent, cl, seq, wid=f"w{next(counter)}"))
        # Grant every waiter that is unblocked, in queue order, until nothing moves.
        moved = True
        while moved:
            moved = False
            for w in sorted(table.waiters, key=lambda w: (-w.priority, w.seq)):
                if not blockers(table, w):
                    table.waiters.remove(w)
                    table.locks.append(w.granted(now=0.0))
                    moved = True
                    break
        for a, b in itertools.combinations(table.locks, 2):
            assert not conflicts(a, b), (a, b)


def _claims(*specs: str, mode: str = "write") -> list[Claim]:
    return [Claim(Resource(name=s), mode) for s in specs]  # type: ignore[arg-type]


def test_find_cycle_two_agents() -> None:
    """A holds X and waits for Y; B holds Y and asks for X: B -> A -> B."""
    table = Table()
    table.locks += [grant("A", _claims("res:X"), "gA"), grant("B", _claims("res:Y"), "gB")]
    table.waiters.append(waiter("A", _claims("res:Y"), table.next_seq()))
    request = waiter("B", _claims("res:X"), table.next_seq(), wid="request")
    assert find_cycle(table, request) == ["B", "A", "B"]


def test_find_cycle_three_agents() -> None:
    table = Table()
    table.locks += [
        grant("A", _claims("res:X"), "gA"),
        grant("B", _claims("res:Y"), "gB"),
        grant("C", _claims("res:Z"), "gC"),
    ]
    table.waiters.append(waiter("A", _claims("res:Y"), table.next_seq()))
    table.waiters.append(waiter("B", _claims("res:Z"), table.next_seq()))
    request = waiter("C", _claims("res:X"), table.next_seq(), wid="request")
    assert find_cycle(table, request) == ["C", "A", "B", "C"]


def test_no_cycle_when_nobody_waits_for_the_requester() -> None:
    table = Table()
    table.locks += [grant("A", _claims("res:X"), "gA"), grant("B", _claims("res:Y"), "gB")]
    table.waiters.append(waiter("C", _claims("res:Y"), table.next_seq()))
    request = waiter("B", _claims("res:X"), table.next_seq(), wid="request")
    assert find_cycle(table, request) is None


def test_reads_make_no_cycle() -> None:
    table = Table()
    table.locks += [
        grant("A", _claims("res:X", mode="read"), "gA"),
        grant("B", _claims("res:Y", mode="read"), "gB"),
    ]
    table.waiters.append(waiter("A", _claims("res:Y", mode="read"), table.next_seq()))
    request = waiter("B", _claims("res:X", mode="read"), table.next_seq(), wid="request")
    assert find_cycle(table, request) is None


@costly
@given(st.data())
def test_a_found_cycle_is_made_of_real_waits(data: st.DataObject) -> None:
    table = data.draw(tables())
    request = data.draw(requests(table))
    cycle = find_cycle(table, request)
    if cycle is None:
        return
    assert cycle[0] == cycle[-1] == request.agent
    waiting = [w for w in table.waiters if w.id != request.id] + [request]
    for here, there in itertools.pairwise(cycle):
        assert any(
            w.agent == here and any(b.agent == there for b in blockers(table, w)) for w in waiting
        ), (here, there, cycle)


def test_write_holder_finds_the_covering_write_lock_of_another_agent() -> None:
    src = Claim(Resource(repo="/r", path="src"), "write")
    docs = Claim(Resource(repo="/r", path="docs"), "read")
    locks = [grant("Marcus", [src], "g1"), grant("Maria", [docs], "g2")]
    assert write_holder(locks, "/r", "src/api/login.py") == (locks[0], src)
    assert write_holder(locks, "/r", "src/api/login.py", except_agent="Marcus") is None
    assert write_holder(locks, "/r", "docs/readme.md") is None  # a read lock does not hold
    assert write_holder(locks, "/other", "src/api/login.py") is None
    assert write_holder(locks, "/r", "srcs/x.py") is None


# Records read back from state: ids, holder files and numbers ----------------------------------
GOOD_ID = "18c0ffee000-4242-abcdef"


@pytest.mark.parametrize(
    "text",
    ["", "../x", "a/b", GOOD_ID + "\n", GOOD_ID + "/", "18C0FFEE000-4242-abcdef", "x" * 40,
     "18c0ffee000-4242-abcde", "18c0ffee000-42a2-abcdef", GOOD_ID + "\x00"],
)
def test_only_ids_we_make_are_valid(text: str) -> None:
    from versatil_fs.locks.table import new_id, valid_id

    assert valid_id(GOOD_ID) and valid_id(new_id())
    assert not valid_id(text)


@pytest.mark.parametrize(
    ("fields", "damaged"),
    [
        ({}, False),
        ({"holder": GOOD_ID, "lease_file": f"/h/run/leases/{GOOD_ID}.lease"}, False),
        ({"lease_file": f"/h/run/leases/{GOOD_ID}.lease"}, False),  # written before `holder`
        ({"id": "../../../../victim"}, True),
        ({"holder": "../x"}, True),
        ({"lease_file": "/etc/passwd"}, True),
        ({"lease_file": "src/important.py"}, True),
        ({"lease_file": f"relative/{GOOD_ID}.lease"}, True),
        ({"holder": GOOD_ID, "lease_file": "/h/run/leases/18c0ffee001-1-abcdef.lease"}, True),
        ({"boot_id": "../../x"}, True),
    ],
)
def test_check_records_finds_what_must_never_reach_a_path(
    fields: dict[str, str], damaged: bool
) -> None:
    from versatil_fs.locks.table import check_records

    record = Grant(
        **{"id": GOOD_ID, "agent": "A", "claims": [], "acquired_at": 0.0, "expires_at": 1.0,
           **fields}
    )
    assert (check_records([record]) is not None) == damaged
    if not damaged and record.lease_file:
        assert record.holder == GOOD_ID


@pytest.mark.parametrize(
    "entry",
    [
        '"expires_at": 1e308', '"expires_at": 1e400', '"expires_at": -1', '"ttl": 0',
        '"pid": -1', '"priority": 10000000000', '"acquired_at": 1e11',
    ],
)
def test_numbers_out_of_range_do_not_decode(entry: str) -> None:
    import msgspec

    base = {
        "id": GOOD_ID, "agent": "A", "claims": [], "acquired_at": 1.0, "expires_at": 2.0,
    }
    text = msgspec.json.encode(base).decode()
    key = entry.split(":")[0].strip('"')
    if key in base:
        doc = text.replace(f'"{key}":{base[key]}', entry)
    else:
        doc = text[:-1] + ", " + entry + "}"
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(doc.encode(), type=Grant)
