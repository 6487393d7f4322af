"""The local store's cached table, its index and the document assembled from fragments.

A process keeps the table it last read or wrote, valid while the file's generation and nonce
(and inode, size, times) are still the ones it saw; the grants are indexed for `blockers`; the
JSON document is assembled from per-grant fragments. Each must give exactly what the plain
whole-table path gave.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from versatil_fs.errors import LockConflict
from versatil_fs.locks import index, store
from versatil_fs.locks.index import TableView
from versatil_fs.locks.manager import LockManager
from versatil_fs.locks.store import LocalStore
from versatil_fs.locks.table import (
    Claim,
    Grant,
    Resource,
    Table,
    Waiter,
    blockers,
    new_id,
)
from versatil_fs.state import StateDir

REPO = "/r/.git"


def _grant(agent: str, *resources: Resource, mode: str = "write") -> Grant:
    return Grant(
        id=new_id(), agent=agent, claims=[Claim(r, mode) for r in resources],  # type: ignore[arg-type]
        acquired_at=1.0, expires_at=2.0,
    )


def _waiter(agent: str, *resources: Resource, seq: int = 1) -> Waiter:
    return Waiter(
        id=new_id(), agent=agent, claims=[Claim(r) for r in resources], seq=seq, since=1.0,
        deadline=2.0,
    )


def _without_generation(document: bytes) -> bytes:
    head, _, rest = document.partition(b'  "generation": ')
    return head + rest.partition(b"\n")[2]


def _plain(table: Table) -> bytes:
    return msgspec.json.format(msgspec.json.encode(table), indent=2) + b"\n"


def _document(state: StateDir) -> bytes:
    raw = state.read_bytes(state.lock_table)
    assert raw is not None
    return raw


def test_the_document_is_the_whole_table_formatted_plus_its_generation() -> None:
    state = StateDir()
    local = LocalStore(state)
    kept: list[Grant] = []
    for step in range(12):
        with local.transaction() as table:
            grant = _grant(f"a{step % 3}", Resource(repo=REPO, path=f"src/m{step}/f.py"))
            index.add_grant(table, grant)
            kept.append(grant)
            if step % 3 == 2:
                index.remove_grant(table, kept.pop(0))
            if step % 4 == 3:
                kept[0].expires_at = 3.0 + step  # renewed in place, and said so
                index.changed(table, kept[0])
            if step == 5:
                table.waiters.append(_waiter("w", Resource(name="db:x")))
            expected = _plain(table)
        document = _document(state)
        assert _without_generation(document) == expected
        assert msgspec.json.decode(document)["generation"]
        # And another process (a fresh store) reads the same table back.
        with LocalStore(state).transaction() as again:
            assert _plain(again) == expected


def test_grants_changed_behind_the_index_are_caught_at_commit() -> None:
    state = StateDir()
    local = LocalStore(state)
    with local.transaction() as table:
        index.add_grant(table, _grant("a", Resource(name="db:one")))
    with local.transaction() as table:
        table.locks.append(_grant("b", Resource(name="db:two")))  # no helper
        expected = _plain(table)
    assert _without_generation(_document(state)) == expected
    with local.transaction() as table:
        request = _waiter("c", Resource(name="db:two"))
        assert [g.agent for g in index.blockers(table, request)] == ["b"]


def test_a_write_by_another_process_is_seen_by_a_warm_one(git_repo: Path) -> None:
    manager = LockManager(repo=git_repo)
    manager.acquire(["src/a.py"], agent="Warm", wait=0).release()  # warm cache
    code = textwrap.dedent(f"""
        import sys
        from versatil_fs.locks.manager import LockManager
        m = LockManager(repo={str(git_repo)!r})
        m.acquire(["src/"], agent="Other", wait=0)
        print("held", flush=True)
        sys.stdin.readline()
    """)
    other = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert other.stdout and other.stdin
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(LockConflict, match="Other"):
            manager.acquire(["src/a.py"], agent="Warm", wait=0)
    finally:
        other.stdin.close()
        other.wait(timeout=30)
    # Gone with its process: the warm one sees that too.
    manager.acquire(["src/a.py"], agent="Warm", wait=0).release()


def test_the_nonce_alone_tells_another_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two swapped writes reuse two inodes, and mtimes have a coarse tick: a same-sized table
    # written by another process can look the same to stat. The nonce tells them apart.
    monkeypatch.setattr(store, "_signature", lambda info: (0,))
    state = StateDir()
    first, second = LocalStore(state), LocalStore(state)
    with first.transaction() as table:
        index.add_grant(table, _grant("a", Resource(name="db:x")))
    with second.transaction() as table:
        (grant,) = table.locks
        grant.agent = "b"  # same size
        index.changed(table, grant)
    with first.transaction() as table:
        assert [g.agent for g in table.locks] == ["b"]


def test_an_edit_by_hand_is_seen_even_with_the_generation_kept() -> None:
    state = StateDir()
    local = LocalStore(state)
    with local.transaction() as table:
        index.add_grant(table, _grant("Alice", Resource(name="db:x")))
    document = _document(state)
    edited = document.replace(b'"agent": "Alice"', b'"agent": "Bobby"')
    fd = os.open(state.lock_table, os.O_WRONLY)
    try:
        os.write(fd, edited + b" ")  # one byte longer: a different size
    finally:
        os.close(fd)
    with local.transaction() as table:
        assert [g.agent for g in table.locks] == ["Bobby"]


def test_a_damaged_table_is_set_aside_even_when_this_process_wrote_the_last_one() -> None:
    state = StateDir()
    local = LocalStore(state)
    with local.transaction() as table:
        index.add_grant(table, _grant("a", Resource(name="db:x")))
    state.write_atomic(state.lock_table, b"{ not json")
    with local.transaction() as table:
        assert table.locks == []  # rebuilt from the holder files: none here
    assert local.on_damage
    assert msgspec.json.decode(_document(state))["locks"] == []


def test_a_transaction_that_raises_leaves_the_cache_as_the_file() -> None:
    state = StateDir()
    local = LocalStore(state)
    with local.transaction() as table:
        index.add_grant(table, _grant("a", Resource(name="db:x")))
    with pytest.raises(RuntimeError), local.transaction() as table:
        index.add_grant(table, _grant("b", Resource(name="db:y")))
        table.seq += 1
        raise RuntimeError("refused")
    with local.transaction() as table:
        assert [g.agent for g in table.locks] == ["a"] and table.seq == 0


def test_a_table_from_before_generations_loads_and_gains_one() -> None:
    state = StateDir()
    old = Table(seq=4, fence=9, locks=[_grant("a", Resource(name="db:x"))])
    state.write_atomic(state.lock_table, _plain(old))
    with LocalStore(state).transaction() as table:
        assert table.seq == 4 and table.fence == 9 and [g.agent for g in table.locks] == ["a"]
    document = _document(state)
    assert b'"generation": "1-' in document
    assert _without_generation(document) == _plain(old)


# The index gives exactly what the scan gives: the same records, in the same order. -----------
_paths = st.sampled_from([".", "src", "src/a.py", "src/b", "src/b/c.py", "docs", "docs/x.md", ""])
_resources = st.one_of(
    st.builds(lambda p, r: Resource(repo=r, path=p), _paths, st.sampled_from([REPO, "/o/.git"])),
    st.builds(lambda n: Resource(name=n), st.sampled_from(["db:a", "db:b"])),
    st.builds(
        lambda p: Resource(repo=REPO, path=p, glob=True),
        st.sampled_from(["src/*.py", "**/c.py", "docs/*"]),
    ),
)
_claims = st.lists(
    st.builds(Claim, _resources, st.sampled_from(["read", "write"])), min_size=1, max_size=3
)
_agents = st.sampled_from(["A", "B", "C"])


@settings(max_examples=300, deadline=None)
@given(
    grants=st.lists(st.tuples(_agents, _claims), max_size=12),
    waiters=st.lists(st.tuples(_agents, _claims), max_size=3),
    request=st.tuples(_agents, _claims),
    removed=st.sets(st.integers(0, 11)),
)
def test_indexed_blockers_are_the_scanned_ones(
    grants: list[tuple[str, list[Claim]]],
    waiters: list[tuple[str, list[Claim]]],
    request: tuple[str, list[Claim]],
    removed: set[int],
) -> None:
    table = Table()
    view = TableView(table)
    made = []
    with index.activate(view):
        for agent, claims in grants:
            grant = Grant(id=new_id(), agent=agent, claims=claims, acquired_at=1, expires_at=2)
            index.add_grant(table, grant)
            made.append(grant)
        for position in sorted(removed):
            if position < len(made):
                index.remove_grant(table, made[position])
        for seq, (agent, claims) in enumerate(waiters, 1):
            table.waiters.append(
                Waiter(id=new_id(), agent=agent, claims=claims, seq=seq, since=1, deadline=2)
            )
        asking = Waiter(
            id=new_id(), agent=request[0], claims=request[1], seq=9, since=1, deadline=2
        )
        assert view.in_step()
        assert index.blockers(table, asking) == blockers(table, asking)


def test_a_refused_request_keeps_the_cache_and_saves_nothing(git_repo: Path) -> None:
    manager = LockManager(repo=git_repo)
    held = manager.acquire(["src/"], agent="Holder", wait=0)
    local = manager.store
    assert isinstance(local, LocalStore)
    before = _document(manager.state)
    with pytest.raises(LockConflict):
        manager.acquire(["src/a.py"], agent="Other", wait=0)
    assert local._cache is not None  # the refusal took a queue number only: rolled back
    assert _document(manager.state) == before
    with local.transaction() as table:
        assert table.seq == msgspec.json.decode(before)["seq"]
    held.release()


def test_a_document_written_as_parts_is_the_parts_joined() -> None:
    state = StateDir()
    target = state.logs / "parts.json"
    parts = [b"%d," % n for n in range(3000)]  # more parts than one pwritev takes
    state.write_swapped(target, parts)
    assert state.read_bytes(target) == b"".join(parts)
    state.write_swapped(target, [b"short", b"\n"])  # into the spare, which was longer
    state.write_swapped(target, [b"shorter", b"", b"\n"])
    assert state.read_bytes(target) == b"shorter\n"


# The journal: another process's write caught up with from its record, not the document. ------
def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    decode = LocalStore._decode

    def counting(self: LocalStore, raw: bytes | None) -> tuple[Table, bool]:
        calls.append(1)
        return decode(self, raw)

    monkeypatch.setattr(LocalStore, "_decode", counting)
    return calls


def _two_writers(state: StateDir, steps: int, first: LocalStore, second: LocalStore) -> None:
    made: dict[str, Grant] = {}
    for step in range(steps):
        local = first if step % 2 else second
        with local.transaction() as table:
            grant = _grant(f"a{step % 3}", Resource(repo=REPO, path=f"src/f{step}.py"))
            index.add_grant(table, grant)
            if step % 3 == 2:
                gone = index.find_grant(table, sorted(made)[0])
                assert gone is not None
                index.remove_grant(table, gone)
                del made[gone.id]
            if step % 4 == 3 and table.locks:
                table.locks[0].expires_at = 5.0 + step
                index.changed(table, table.locks[0])
            table.waiters = [_waiter("w", Resource(name=f"db:{step}"), seq=step + 1)]
            table.seq = step + 1
            made[grant.id] = grant
            expected = _plain(table)
        assert _without_generation(_document(state)) == expected


def test_a_write_by_another_process_is_caught_up_from_the_journal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store, "JOURNAL_FROM", 0)
    state = StateDir()
    first, second = LocalStore(state), LocalStore(state)
    _two_writers(state, 2, first, second)  # both warm
    decodes = _count_decodes(monkeypatch)
    _two_writers(state, 12, first, second)
    assert decodes == []  # every write of the other was caught up from its record
    with first.transaction() as mine:
        ours = _plain(mine)
    with second.transaction() as theirs:
        assert _plain(theirs) == ours


def test_a_torn_journal_sends_readers_to_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "JOURNAL_FROM", 0)
    state = StateDir()
    first, second = LocalStore(state), LocalStore(state)
    _two_writers(state, 3, first, second)
    with second.transaction() as table:
        index.add_grant(table, _grant("z", Resource(name="db:torn")))
    journal = first.journal.path
    with open(journal, "ab") as tail:
        tail.write(b"VJ1\x40\x00\x00\x00half")  # a record cut short by a crash
    decodes = _count_decodes(monkeypatch)
    with first.transaction() as table:
        assert "z" in [g.agent for g in table.locks]
    assert decodes == [1] and journal.stat().st_size == 0  # read whole; the journal emptied
    _two_writers(state, 4, first, second)  # and the next records work again


def test_a_compacted_journal_still_leads_every_reader_to_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from versatil_fs.locks import journal

    monkeypatch.setattr(journal, "COMPACT_AT", 2000)
    monkeypatch.setattr(store, "JOURNAL_FROM", 0)
    state = StateDir()
    first, second, third = LocalStore(state), LocalStore(state), LocalStore(state)
    _two_writers(state, 20, first, second)
    assert first.journal.path.stat().st_size < 2000 + 4096
    with third.transaction() as late:
        seen = _plain(late)
    with first.transaction() as early:
        assert _plain(early) == seen


def test_a_writer_killed_between_its_document_and_its_record(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The document is written, the journal record is not: a warm process must see the write
    # (here a shell lease, which outlives its killed process) by reading the document.
    monkeypatch.setattr(store, "JOURNAL_FROM", 0)
    warm = LockManager(repo=git_repo)
    warm.acquire(["db:warm"], agent="Warm", wait=0).release()
    code = textwrap.dedent(f"""
        from versatil_fs.locks import store
        store.JOURNAL_FROM = 0  # a journal however small the table
        from versatil_fs.locks.manager import LockManager
        LockManager(repo={str(git_repo)!r}).acquire(
            ["db:shared"], agent="Killed", owner="shell", ttl=60, wait=0)
    """)
    # First a write with its record (the journal leads somewhere), then the killed one.
    normal = code.replace('["db:shared"], agent="Killed"', '["db:other"], agent="Normal"')
    subprocess.run([sys.executable, "-c", normal], timeout=60, check=True)
    env = {**os.environ, "VERSATIL_FAULT": "locks.before-journal"}
    child = subprocess.run([sys.executable, "-c", code], env=env, timeout=60, check=False)
    assert child.returncode == -9
    with pytest.raises(LockConflict, match="Killed"):
        warm.acquire(["db:shared"], agent="Warm", wait=0)
