"""The fast conflict index must answer exactly as the pairwise rule it replaces."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from versatil_fs.locks.table import Claim, ClaimIndex, Resource, claims_conflict

segments = st.sampled_from(["a", "b", "ab", "a.b", "src", "x"])
paths = st.one_of(
    st.just("."), st.lists(segments, min_size=1, max_size=3).map("/".join)
)
resources = st.one_of(
    st.builds(Resource, repo=st.sampled_from(["/r1/.git", "/r2/.git"]), path=paths),
    st.builds(Resource, name=st.sampled_from(["db:users", "db:orders", "port:5432"])),
)
claims = st.builds(Claim, resource=resources, mode=st.sampled_from(["read", "write"]))


@given(st.lists(claims, min_size=1, max_size=5), st.lists(claims, min_size=1, max_size=5))
def test_index_agrees_with_pairwise_rule(mine: list[Claim], theirs: list[Claim]) -> None:
    assert ClaimIndex(mine).conflicts(theirs) == claims_conflict(mine, theirs)


@given(st.lists(claims, min_size=1, max_size=5), st.lists(claims, min_size=1, max_size=5))
def test_index_is_symmetric(a: list[Claim], b: list[Claim]) -> None:
    assert ClaimIndex(a).conflicts(b) == ClaimIndex(b).conflicts(a)
