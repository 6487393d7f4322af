"""The append-only event log: concurrent writers, reading back with tail/filter, following."""

from __future__ import annotations

import json
import os
import textwrap
import threading
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from integration.helpers import (
    WAIT_AT_START_LINE,
    Spawner,
    StartLine,
    assert_one_line_error,
    run_versatil,
    wait_for,
)

from versatil_fs import events
from versatil_fs.errors import UsageError
from versatil_fs.state import StateDir

WRITER = WAIT_AT_START_LINE + textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from versatil_fs import events
    name, count, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    print("ready", flush=True)
    wait_at_start_line(go)  # all writers start together, so their appends overlap
    # Payloads from tiny to larger than a pipe buffer page, so a torn write would show.
    for i in range(count):
        events.emit("locks", "soak", agent=name, i=i, payload=name[-1] * (50 + (i * 97) % 6000))
    print("done", flush=True)
""")


def test_emit_and_read_back(versatil_home: Path) -> None:
    first = events.emit("locks", "grant", agent="Dana", lease="L1", resources=["src (write)"])
    events.emit("locks", "release", agent="Dana", lease="L1")
    got = events.read("locks")
    assert [e.kind for e in got] == ["grant", "release"]
    assert got[0] == first
    assert got[0].data == {"lease": "L1", "resources": ["src (write)"]}
    assert got[0].pid == os.getpid()
    assert "grant Dana" in got[0].summary()
    # The file is plain JSON lines, one object per event.
    lines = StateDir().event_log("locks").read_bytes().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["grant", "release"]


def test_streams_are_separate_files(versatil_home: Path) -> None:
    events.emit("checkpoints", "create", id="abc")
    events.emit("wave-execution", "wave-start", wave=1)
    assert [e.kind for e in events.read("checkpoints")] == ["create"]
    assert [e.kind for e in events.read("wave-execution")] == ["wave-start"]
    assert events.read("locks") == []
    assert events.read("collision-detection") == []


def test_unknown_streams_are_refused(versatil_home: Path) -> None:
    with pytest.raises(ValueError):
        events.emit("nonsense", "x")
    with pytest.raises(UsageError, match="Unknown log stream") as caught:
        events.read("nonsense")
    assert caught.value.exit_code == 2


def test_tail_and_filter(versatil_home: Path) -> None:
    for i in range(10):
        events.emit("locks", "grant", agent="Dana" if i % 2 else "Marcus", n=i)
    assert [e.data["n"] for e in events.read("locks", tail=3)] == [7, 8, 9]
    assert [e.data["n"] for e in events.read("locks", word="dana")] == [1, 3, 5, 7, 9]
    assert [e.data["n"] for e in events.read("locks", word="MARCUS", tail=2)] == [6, 8]
    assert events.read("locks", word="nobody") == []
    assert len(events.read("locks", tail=0)) == 10  # 0 or None: everything


def test_unparseable_lines_are_skipped_not_fatal(versatil_home: Path) -> None:
    events.emit("locks", "grant", agent="A")
    sd = StateDir()
    with open(sd.event_log("locks"), "ab") as handle:
        handle.write(b'{"version": 1, "time": 1.0, "stream": "locks", "kind": "to\n')  # torn
        handle.write(b"\x00\x01 garbage\n")
    events.emit("locks", "release", agent="A")
    assert [e.kind for e in events.read("locks")] == ["grant", "release"]


def test_event_files_are_private(versatil_home: Path) -> None:
    events.emit("locks", "grant", agent="A")
    assert os.stat(StateDir().event_log("locks")).st_mode & 0o777 == 0o600


def _concurrent_writers(spawn: Spawner, tmp_path: Path, writers: int, each: int) -> None:
    start = StartLine(tmp_path / "go")
    children = [
        spawn(WRITER, f"writer-{i}", str(each), str(start.path), name=f"writer-{i}")
        for i in range(writers)
    ]
    for child in children:
        assert child.read_line() == "ready"
    start.go()
    for child in children:
        assert child.read_line(timeout=60) == "done"
        assert child.wait() == 0, child.stderr

    raw = StateDir().event_log("locks").read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert len(lines) == writers * each
    decoder = msgspec.json.Decoder(events.Event)
    per_writer: dict[str, list[int]] = {}
    for line in lines:
        event = decoder.decode(line)  # every line is one whole event: none torn or interleaved
        assert event.data["payload"] == event.agent[-1] * (50 + (event.data["i"] * 97) % 6000)
        per_writer.setdefault(event.agent, []).append(event.data["i"])
    # Each writer's events are all there, in its own order.
    assert per_writer == {f"writer-{i}": list(range(each)) for i in range(writers)}
    assert len(events.read("locks")) == writers * each


def test_concurrent_writers_never_tear_lines(
    spawn: Spawner, tmp_path: Path, versatil_home: Path
) -> None:
    _concurrent_writers(spawn, tmp_path, writers=8, each=200)


@pytest.mark.slow
def test_concurrent_writers_never_tear_lines_soak(
    spawn: Spawner, tmp_path: Path, versatil_home: Path
) -> None:
    _concurrent_writers(spawn, tmp_path, writers=8, each=2000)


# Following -------------------------------------------------------------------------------------
class Follower:
    """Runs events.follow() in a daemon thread, counting its idle polls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, word: str | None = None) -> None:
        import time as real_time

        self.seen: list[events.Event] = []
        self.polls = 0

        class Clock:
            def __getattr__(self, name: str) -> object:
                return getattr(real_time, name)

            def sleep(clock, seconds: float) -> None:
                self.polls += 1
                real_time.sleep(seconds)

        monkeypatch.setattr(events, "time", Clock())
        stream = events.follow("locks", word=word, poll=0.005)
        threading.Thread(target=lambda: self.seen.extend(stream), daemon=True).start()

    def sync(self) -> None:
        """Return once the follower is past its start: it has seen an event emitted now."""

        def synced() -> bool:
            if any(e.kind == "sync" for e in self.seen):
                return True
            events.emit("locks", "sync", note="wanted")
            return False

        wait_for(synced, interval=0.02, message="the follower to start")
        self.seen.clear()

    def idle(self) -> None:
        """Return once the follower has polled twice more (it has read all there is)."""
        target = self.polls + 2
        wait_for(lambda: self.polls >= target, message="the follower to poll")


def test_follow_yields_new_matching_events_only(
    versatil_home: Path, monkeypatch: pytest.MonkeyPatch, spawn: Spawner
) -> None:
    events.emit("locks", "old", note="wanted, but written before following")
    follower = Follower(monkeypatch, word="wanted")
    follower.sync()
    child = spawn(
        """
        from versatil_fs import events
        events.emit("locks", "first", note="wanted")
        events.emit("locks", "noise", note="other")
        events.emit("locks", "second", note="WANTED")
        """,
        stdin=False,
    )
    assert child.wait() == 0, child.stderr
    wait_for(lambda: len(follower.seen) >= 2, message=lambda: f"two events, saw {follower.seen}")
    follower.idle()
    assert [e.kind for e in follower.seen] == ["first", "second"]


def test_follow_waits_for_the_end_of_a_partial_line(
    versatil_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    follower = Follower(monkeypatch)
    follower.sync()
    line = events.encode(events.Event(time=1.0, stream="locks", kind="split", agent="A")) + b"\n"
    with open(StateDir().event_log("locks"), "ab", buffering=0) as handle:
        handle.write(line[:10])
        follower.idle()  # it has read the half line, and must hold it back
        assert follower.seen == []
        handle.write(line[10:])
    wait_for(lambda: follower.seen, message="the completed line to be followed")
    assert [e.kind for e in follower.seen] == ["split"]


def test_follow_starts_over_when_the_file_is_replaced(
    versatil_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(5):
        events.emit("locks", "padding", note="x" * 100)
    follower = Follower(monkeypatch)
    follower.sync()
    StateDir().event_log("locks").write_bytes(b"")  # truncated (a rotated log)
    follower.idle()
    events.emit("locks", "after-rotation")
    wait_for(lambda: follower.seen, message="the event after rotation")
    assert [e.kind for e in follower.seen] == ["after-rotation"]


# The `versatil logs` command ---------------------------------------------------------------------
def test_logs_cli_tail_filter_json(versatil_home: Path, tmp_path: Path) -> None:
    for i in range(6):
        events.emit("locks", "grant" if i % 2 else "release", agent=f"agent-{i}", n=i)
    result = run_versatil("logs", "locks", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["data"]["n"] for line in result.stdout.splitlines()] == list(range(6))

    result = run_versatil("logs", "locks", "--tail", "2", "--json", cwd=tmp_path)
    assert [json.loads(line)["data"]["n"] for line in result.stdout.splitlines()] == [4, 5]

    result = run_versatil("logs", "locks", "--filter", "grant", "--json", cwd=tmp_path)
    assert [json.loads(line)["kind"] for line in result.stdout.splitlines()] == ["grant"] * 3

    result = run_versatil("logs", "locks", "--filter", "agent-3", cwd=tmp_path)
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 1 and "agent-3" in result.stdout


def test_logs_cli_follow_streams_new_events(
    versatil_home: Path, tmp_path: Path, spawn: Spawner
) -> None:
    from integration.helpers import versatil_argv

    events.emit("locks", "before", agent="wanted")
    follower = spawn.popen(
        versatil_argv("logs", "locks", "--follow", "--json", "--filter", "wanted"),
        cwd=tmp_path, stdin=False, name="logs-follow",
    )
    seen: list[str] = []

    def drain() -> list[str]:
        while follower.has_output():
            seen.append(json.loads(follower.read_line())["kind"])
        return seen

    def following() -> bool:
        events.emit("locks", "ping", agent="wanted")  # until the follower is running
        return "ping" in drain()

    wait_for(following, interval=0.05, message="the follower to print a new event")
    events.emit("locks", "noise", agent="other")
    events.emit("locks", "last", agent="wanted")
    wait_for(lambda: "last" in drain(), message=lambda: f"the last event; saw {seen}")
    assert seen[0] == "before"  # the backlog first, then new events as they come
    assert "noise" not in seen


def test_logs_cli_rejects_an_unknown_stream(versatil_home: Path, tmp_path: Path) -> None:
    result = run_versatil("logs", "nonsense", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_logs_cli_on_an_empty_log(versatil_home: Path, tmp_path: Path) -> None:
    result = run_versatil("logs", "checkpoints", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_logs_cli_refuses_a_planted_symlink(versatil_home: Path, tmp_path: Path) -> None:
    versatil_home.mkdir(mode=0o700)
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (versatil_home / "logs").symlink_to(decoy, target_is_directory=True)
    line = assert_one_line_error(run_versatil("logs", "locks", cwd=tmp_path), 2)
    assert "symlink" in line


def test_events_of_every_kind_are_counted(versatil_home: Path) -> None:
    for kind in ("grant", "grant", "release"):
        events.emit("locks", kind)
    assert Counter(e.kind for e in events.read("locks")) == {"grant": 2, "release": 1}
