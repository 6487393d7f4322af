"""A contending lock workload that runs in child processes, and the checkers that judge it.

The child (:func:`main`, started with one JSON argument, see :class:`Spec`) loops: pick one or
two resources from :data:`RESOURCES` in read or write mode and a priority, ``acquire`` them,
hold them for a few milliseconds while touching a *witness*, release. It logs every step with
``time.monotonic_ns()``, which on Linux is one clock for every process on the machine, so the
logs of all children can be merged into one history:

* its own log (JSON lines): ``req``, ``grant``, ``saw`` (a witness sighting), ``rel`` (about to
  release), ``done`` (released), ``error``;
* optionally the *table log*: every lock-table document the process commits, with the time it
  was committed. It is written by a ``StateDir`` whose ``write_swapped`` appends the document
  after the rename, still inside the table transaction (under the table flock), so the merged
  table logs of all children are the exact sequence of committed tables, in order.

The witness is a directory of marker files, one per held lease, named after the holder's pid,
request number and claims. A holder creates its marker, lists the others, holds, lists again and
removes its marker; a conflicting marker it sees is a ``saw`` line. A marker left by a holder
that was killed is recognised afterwards from the kill time.

The parent-side checkers take these logs and return what they find (empty lists are good):
:func:`overlapping_holds` (from the children's own intervals and the witness),
:func:`conflicting_grants` (two conflicting grants in one committed table), :func:`queue_jumps`
(a grant made while a conflicting request that was ahead of it in the queue kept waiting),
and :func:`handoffs` (how long each request waited once nothing alive stood in its way).
The conflict rule is restated here from the specification, not imported, so the checkers do
not share a bug with the code they check.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import random
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Files, a directory above two of them, and named resources; the repository must hold the files.
RESOURCES = ("db:a", "db:b", "src", "src/x.py", "src/y.py", "docs/z.md")
FILES = {"src/x.py": "x = 1\n", "src/y.py": "y = 1\n", "docs/z.md": "# z\n"}


# The specification's conflict rule, restated ----------------------------------------------------
def overlaps(a: str, b: str) -> bool:
    """Two resources overlap: the same name, or paths where one is (under) the other."""
    named_a, named_b = ":" in a, ":" in b
    if named_a or named_b:
        return a == b
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


Claims = Sequence[tuple[str, str]]  # (resource, "read" | "write")


def claims_conflict(a: Claims, b: Claims) -> bool:
    return any(
        overlaps(ra, rb) and "write" in (ma, mb) for ra, ma in a for rb, mb in b
    )


def _marker(pid: int, n: int, claims: Claims) -> str:
    code = ".".join(f"{RESOURCES.index(r)}{m[0]}" for r, m in claims)
    return f"{pid}-{n}-{code}"


def parse_marker(name: str) -> tuple[int, int, list[tuple[str, str]]]:
    pid, n, code = name.split("-", 2)
    claims = [
        (RESOURCES[int(part[:-1])], "write" if part[-1] == "w" else "read")
        for part in code.split(".")
    ]
    return int(pid), int(n), claims


# The child --------------------------------------------------------------------------------------
@dataclass
class Spec:
    agent: str
    seed: int
    log: str
    witness: str
    stop: str = ""  # a file whose existence ends the loop (besides `rounds`)
    go: str = ""  # a file to wait for before the first request (so that all start together)
    rounds: int = 0  # 0: until `stop` exists
    hold_ms: tuple[float, float] = (0.0, 8.0)
    priorities: tuple[int, ...] = (0,)
    write_share: float = 0.5
    max_claims: int = 2
    wait: float = 120.0
    table_log: str = ""


class _Log:
    """JSON lines appended with one ``write`` each: a kill leaves at most a torn last line."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def write(self, **record: Any) -> None:
        os.write(self.fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())


def _logging_state(path: str) -> Any:
    """A ``StateDir`` that appends every lock-table document it commits to ``path``."""
    from versatil_fs.state import StateDir

    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    pid = os.getpid()

    class LoggingState(StateDir):
        def write_swapped(self, target: Path, data: bytes | Sequence[bytes]) -> None:
            super().write_swapped(target, data)
            data = data if isinstance(data, bytes) else b"".join(data)  # the table: its parts
            if target == self.lock_table:
                # Still inside the transaction: the next committer logs a later time. Pretty
                # JSON has no newline inside a string, so dropping newlines keeps it one line.
                head = b'{"t":%d,"pid":%d,"doc":' % (time.monotonic_ns(), pid)
                os.write(fd, head + data.replace(b"\n", b"") + b"}\n")

    return LoggingState()


def main() -> None:  # pragma: no cover - runs in a child process
    raw = json.loads(sys.argv[1])
    raw["hold_ms"] = tuple(raw.get("hold_ms", (0.0, 8.0)))
    raw["priorities"] = tuple(raw.get("priorities", (0,)))
    spec = Spec(**raw)
    from versatil_fs import LockManager, VersatilError

    state = _logging_state(spec.table_log) if spec.table_log else None
    manager = LockManager(repo=".", state=state)
    rng = random.Random(spec.seed)
    log = _Log(spec.log)
    witness = Path(spec.witness)
    stop = Path(spec.stop) if spec.stop else None
    pid = os.getpid()
    log.write(e="start", pid=pid, agent=spec.agent, t=time.monotonic_ns())
    print(json.dumps({"ready": pid}), flush=True)
    if spec.go:
        # The parent holds LOCK_EX on the start file; every child is woken at its release.
        fd = os.open(spec.go, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        finally:
            os.close(fd)
    n = 0
    while (not spec.rounds or n < spec.rounds) and not (stop and stop.exists()):
        n += 1
        chosen = rng.sample(RESOURCES, rng.randint(1, spec.max_claims))
        claims = [(r, "write" if rng.random() < spec.write_share else "read") for r in chosen]
        priority = rng.choice(spec.priorities)
        log.write(e="req", n=n, t=time.monotonic_ns(), claims=claims, prio=priority)
        try:
            lease = manager.acquire(
                [r for r, m in claims if m == "write"],
                reads=[r for r, m in claims if m == "read"],
                agent=spec.agent, wait=spec.wait, priority=priority,
            )
        except VersatilError as exc:
            log.write(e="error", n=n, t=time.monotonic_ns(), kind=type(exc).__name__,
                      msg=str(exc))
            continue
        log.write(e="grant", n=n, t=time.monotonic_ns(), id=lease.id)
        mine = witness / _marker(pid, n, claims)
        os.close(os.open(mine, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        _look(witness, mine.name, claims, log, n)
        # The workload's hold time, not a synchronisation: the lock is what keeps others out.
        time.sleep(rng.uniform(*spec.hold_ms) / 1000)
        _look(witness, mine.name, claims, log, n)
        os.unlink(mine)
        log.write(e="rel", n=n, t=time.monotonic_ns())
        lease.release()
        log.write(e="done", n=n, t=time.monotonic_ns())
    log.write(e="exit", t=time.monotonic_ns())
    manager.close()


def _look(witness: Path, me: str, claims: Claims, log: _Log, n: int) -> None:
    for name in os.listdir(witness):
        if name == me or name.split("-", 1)[0] == me.split("-", 1)[0]:
            continue
        try:
            other = parse_marker(name)[2]
        except (ValueError, IndexError):
            continue
        if claims_conflict(claims, other):
            log.write(e="saw", n=n, t=time.monotonic_ns(), other=name)


# The parent: reading the logs -------------------------------------------------------------------
@dataclass
class Request:
    agent: str
    pid: int
    n: int
    claims: list[tuple[str, str]]
    priority: int
    asked: int  # ns
    granted: int | None = None
    lease: str = ""
    released: int | None = None  # when it began to release (the end of its hold, as it saw it)
    done: int | None = None
    error: str = ""
    sightings: list[tuple[int, str]] = field(default_factory=list)


def _lines(path: Path) -> Iterable[dict[str, Any]]:
    if not path.exists():
        return
    for line in path.read_bytes().splitlines():
        try:
            yield json.loads(line)
        except ValueError:
            continue  # the torn last line of a killed child


def read_requests(logs: Iterable[Path]) -> list[Request]:
    requests: list[Request] = []
    for path in logs:
        agent, pid = "", 0
        mine: dict[int, Request] = {}
        for rec in _lines(path):
            kind = rec["e"]
            if kind == "start":
                agent, pid = rec["agent"], rec["pid"]
            elif kind == "req":
                mine[rec["n"]] = Request(agent, pid, rec["n"], [tuple(c) for c in rec["claims"]],
                                         rec["prio"], rec["t"])
            elif kind in ("grant", "saw", "rel", "done", "error") and rec["n"] in mine:
                req = mine[rec["n"]]
                if kind == "grant":
                    req.granted, req.lease = rec["t"], rec["id"]
                elif kind == "saw":
                    req.sightings.append((rec["t"], rec["other"]))
                elif kind == "rel":
                    req.released = rec["t"]
                elif kind == "done":
                    req.done = rec["t"]
                else:
                    req.error = f"{rec['kind']}: {rec['msg']}"
        requests.extend(mine.values())
    return requests


@dataclass
class State:
    """One committed lock table: when, by whom, and its grants and waiters (plain tuples)."""

    t: int
    pid: int
    seq: int
    grants: list[Holder]
    waiters: list[Holder]


@dataclass(frozen=True)
class Holder:
    id: str
    agent: str
    pid: int
    priority: int
    seq: int  # queue position (0 for grants: not recorded)
    claims: tuple[tuple[str, str], ...]

    @property
    def key(self) -> tuple[int, int]:
        return (-self.priority, self.seq)


def _holder(raw: Mapping[str, Any]) -> Holder:
    claims = tuple(
        (c["resource"].get("name") or c["resource"].get("path", ""), c["mode"])
        for c in raw["claims"]
    )
    return Holder(raw["id"], raw["agent"], raw.get("pid", 0), raw.get("priority", 0),
                  raw.get("seq", 0), claims)


def read_states(logs: Iterable[Path]) -> list[State]:
    states = []
    for path in logs:
        for rec in _lines(path):
            doc = rec["doc"]
            states.append(State(rec["t"], rec["pid"], doc.get("seq", 0),
                                [_holder(g) for g in doc.get("locks", [])],
                                [_holder(w) for w in doc.get("waiters", [])]))
    states.sort(key=lambda s: s.t)
    return states


# The parent: the checks -------------------------------------------------------------------------
@dataclass(frozen=True)
class Death:
    pid: int
    killed: int  # ns, just before the SIGKILL was sent
    reaped: int  # ns, once waitpid returned: the kernel had dropped its flocks by then


def overlapping_holds(requests: Sequence[Request], deaths: Mapping[int, Death]) -> list[str]:
    """Conflicting holds of different agents that overlapped, as the holders saw them.

    A hold runs from ``acquire`` returning to ``release`` being called (inside the real hold);
    a killed holder's hold ends when it was killed. Witness sightings count too, unless the
    marker seen was left by a holder already killed when it was seen.
    """
    found = []
    holds = []
    for req in requests:
        if req.granted is None:
            continue
        end = req.released
        if end is None:
            death = deaths.get(req.pid)
            end = death.killed if death else None
        holds.append((req.granted, end if end is not None else 2**63, req))
    holds.sort(key=lambda h: h[0])
    active: list[tuple[int, int, Request]] = []
    for start, end, req in holds:
        active = [a for a in active if a[1] > start]
        for _, _, other in active:
            if other.agent != req.agent and claims_conflict(other.claims, req.claims):
                found.append(f"{other.agent} #{other.n} {other.claims} and {req.agent} "
                             f"#{req.n} {req.claims} held at once")
        active.append((start, end, req))
    for req in requests:
        for seen_at, name in req.sightings:
            pid = int(name.split("-", 1)[0])
            death = deaths.get(pid)
            if death is not None and death.killed <= seen_at:
                continue  # the marker of a holder killed before this look: its lock is gone
            found.append(f"{req.agent} #{req.n} {req.claims} saw witness {name}")
    return found


def conflicting_grants(states: Sequence[State]) -> list[str]:
    """Committed tables holding two conflicting grants of different agents."""
    found = []
    for state in states:
        grants = state.grants
        for i, a in enumerate(grants):
            for b in grants[i + 1:]:
                if a.agent != b.agent and claims_conflict(a.claims, b.claims):
                    found.append(f"table at {state.t} grants {a.agent} {a.claims} and "
                                 f"{b.agent} {b.claims}")
    return found


def queue_jumps(states: Sequence[State]) -> list[str]:
    """Grants made while a conflicting request ahead of them in the queue went on waiting.

    "Ahead" is the specification's order: higher priority first, then arrival (the table's
    ``seq``); a request granted on its first look never queued and counts as the newest
    arrival of its priority. The one excuse is the table's own: a waiter that the granted
    agent's existing grants block could not have been granted first anyway, and making the
    agent queue behind it would deadlock it with itself.
    """
    found = []
    for before, after in itertools.pairwise(states):
        old = {g.id for g in before.grants}
        still_waiting = {w.id for w in after.waiters}
        for grant in after.grants:
            if grant.id in old:
                continue
            queued = next((w for w in before.waiters if w.id == grant.id), None)
            key = queued.key if queued else (-grant.priority, 2**62)
            own = [g for g in before.grants if g.agent == grant.agent]
            for waiter in before.waiters:
                if (
                    waiter.id != grant.id
                    and waiter.id in still_waiting
                    and waiter.agent != grant.agent
                    and waiter.key < key
                    and claims_conflict(waiter.claims, grant.claims)
                    and not any(claims_conflict(g.claims, waiter.claims) for g in own)
                ):
                    found.append(
                        f"{grant.agent} {list(grant.claims)} (priority {grant.priority}) was "
                        f"granted at {after.t} while {waiter.agent} {list(waiter.claims)} "
                        f"(priority {waiter.priority}, queued #{waiter.seq}) waited ahead of it"
                    )
    return found


@dataclass
class Handoff:
    """One stretch in which a queued request was free to go and had not yet been granted."""

    waiter: str
    ready: int  # ns: nothing alive blocked it from here on
    ended: int  # ns: the table that granted it (or dropped it)
    dead_in_the_way: bool  # a dead holder's entry was still in the table when it became free

    @property
    def seconds(self) -> float:
        return (self.ended - self.ready) / 1e9


def _blocked_by(waiter: Holder, state: State, dead: set[int]) -> list[Holder]:
    """What stands in the waiter's way in ``state``, entries of ``dead`` pids left out."""
    own = [g for g in state.grants if g.agent == waiter.agent and g.pid not in dead]
    found = [
        g for g in state.grants
        if g.pid not in dead and g.agent != waiter.agent
        and claims_conflict(g.claims, waiter.claims)
    ]
    found += [
        w for w in state.waiters
        if w.pid not in dead and w.id != waiter.id and w.agent != waiter.agent
        and w.key < waiter.key and claims_conflict(w.claims, waiter.claims)
        and not any(claims_conflict(g.claims, w.claims) for g in own)
    ]
    return found


def handoffs(
    states: Sequence[State], deaths: Mapping[int, Death], until: int | None = None
) -> list[Handoff]:
    """Every stretch in which a waiting request had nothing alive in its way.

    Replays the committed tables, and the deaths, in time order. A waiter is *free* when
    no live grant and no live waiter ahead of it conflicts; the stretch ends with the next
    table that no longer lists it as waiting. Dead entries still in the table are what a crash
    leaves behind: ``dead_in_the_way`` marks the stretches where only they stood between the
    waiter and its grant.
    """
    # A holder counts as dead from the moment the SIGKILL was sent: conservative, since the
    # kernel drops its flocks a little later, and that little is charged to the lock manager.
    events: list[tuple[int, int, State | int]] = [(s.t, 1, s) for s in states]
    events += [(d.killed, 0, d.pid) for d in deaths.values()]
    events.sort(key=lambda e: (e[0], e[1]))
    dead: set[int] = set()
    current: State | None = None
    ready: dict[str, tuple[int, bool]] = {}
    result: list[Handoff] = []
    for when, _, state in events:
        if isinstance(state, int):
            dead.add(state)
        else:
            waiting = {w.id for w in state.waiters}
            for waiter_id in [w for w in ready if w not in waiting]:
                since, in_the_way = ready.pop(waiter_id)
                result.append(Handoff(waiter_id, since, when, in_the_way))
            current = state
        if current is None:
            continue
        for waiter in current.waiters:
            if waiter.pid in dead:
                ready.pop(waiter.id, None)
                continue
            free = not _blocked_by(waiter, current, dead)
            if free and waiter.id not in ready:
                in_the_way = bool(_blocked_by(waiter, current, set()))
                ready[waiter.id] = (when, in_the_way)
            elif not free:
                ready.pop(waiter.id, None)
    end = until if until is not None else (events[-1][0] if events else 0)
    for waiter_id, (since, in_the_way) in ready.items():
        result.append(Handoff(waiter_id, since, end, in_the_way))
    return result


# The parent: starting children ------------------------------------------------------------------
CHILD = "from reliability.workload import main; main()"


@dataclass
class Workers:
    """The children of one workload and where their logs go (all under ``directory``)."""

    spawn: Any  # integration.helpers.Spawner
    repo: Path
    directory: Path
    children: dict[str, Any] = field(default_factory=dict)  # agent -> Child

    def __post_init__(self) -> None:
        for sub in ("logs", "tables", "witness"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        from integration.helpers import StartLine  # the parent's side only

        self.start_line = StartLine(self.directory / "go")
        self.go = self.start_line.path
        self.stop = self.directory / "stop"

    def start(self, agent: str, seed: int, **options: Any) -> Any:
        spec = {
            "agent": agent, "seed": seed, "log": str(self.directory / "logs" / f"{agent}.jsonl"),
            "table_log": str(self.directory / "tables" / f"{agent}.jsonl"),
            "witness": str(self.directory / "witness"), "stop": str(self.stop),
            "go": str(self.go), **options,
        }
        child = self.spawn(CHILD, json.dumps(spec), cwd=self.repo, name=agent, stdin=False)
        self.children[agent] = child
        return child

    def grants(self) -> int:
        """How many grants the children have logged so far (read incrementally)."""
        offsets = self.__dict__.setdefault("_offsets", {})
        counted = self.__dict__.setdefault("_grants", [0])
        for path in (self.directory / "logs").glob("*.jsonl"):
            with open(path, "rb") as handle:
                handle.seek(offsets.get(path, 0))
                chunk = handle.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            offsets[path] = offsets.get(path, 0) + len(complete)
            counted[0] += complete.count(b'"e":"grant"')
        return int(counted[0])

    def requests(self) -> list[Request]:
        return read_requests(sorted((self.directory / "logs").glob("*.jsonl")))

    def states(self) -> list[State]:
        return read_states(sorted((self.directory / "tables").glob("*.jsonl")))
