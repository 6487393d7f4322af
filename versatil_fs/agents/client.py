"""``versatil agent-hook HARNESS``: the process a harness runs before and after each tool call.

It runs before every edit an agent makes, so it is built for its start-up: the standard
library's ``os``, ``socket`` and ``select`` and nothing of click, msgspec or the lock manager.
It finds the harness process it belongs to (:mod:`versatil_fs.agents.identity`), forwards the
payload to that harness's session keeper (:mod:`versatil_fs.agents.keeper`) over its Unix socket
and prints the keeper's answer. The first hook of a harness process starts the keeper.

When no keeper can answer — no harness process found (no ``/proc``), a keeper that cannot
start — the hook decides in-process with the same core, at the cost of importing it, and the
session's claims are shell leases that end at session end or after
``collision_detection.lock_timeout`` seconds (the TTL backstop), renewed by no one.

Whatever happens, the harness gets an answer in its own form: never a traceback (see the fail
policy in :mod:`versatil_fs.agents.core`).
"""

from __future__ import annotations

import os
import sys

from versatil_fs.agents import wire
from versatil_fs.agents.identity import ancestors, find_harness

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket
    from collections.abc import Mapping

__all__ = ["main", "session_agent"]

_START_BUDGET = 10.0  # seconds for a keeper to start listening (its imports, on a busy machine)
_ANSWER_BUDGET = 900.0  # a claim may queue for [agents] wait_on_edit (at most 600 s)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in wire.HARNESSES:
        print(
            f"versatil agent-hook: name one harness ({', '.join(wire.HARNESSES)}); it is run by "
            "the harness, which `versatil integrate HARNESS` configures.",
            file=sys.stderr,
        )
        return 2
    harness = argv[0]
    if os.isatty(0):
        print(
            "versatil agent-hook: reads a hook payload (JSON) on stdin, as the harness sends "
            "it; it is not meant to be run by hand (`versatil integrate --status` shows the "
            "wiring).",
            file=sys.stderr,
        )
        return 2
    raw = sys.stdin.buffer.read(wire.MAX_PAYLOAD + 1)  # one byte over: "too big" is decidable
    env = dict(os.environ)
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = "/"
    try:
        answered = _ask_keeper(harness, raw, env, cwd)
    except Exception:
        answered = None  # a keeper that misbehaves is no reason to leave the edit undecided
    if answered is None:
        answered = _decide_here(harness, raw, env, cwd)
    code, out, err = answered
    _write(1, out)
    _write(2, err)
    return code


def _ask_keeper(
    harness: str, raw: bytes, env: Mapping[str, str], cwd: str
) -> tuple[int, bytes, bytes] | None:
    found = find_harness(env)
    if found is None:
        return None
    root = wire.state_root()
    name = wire.keeper_name(harness, *found)
    sock = wire.connect(root, name, _ANSWER_BUDGET)
    if sock is None:
        if not _start_keeper(harness, found, root, name):
            return None
        sock = wire.connect(root, name, _ANSWER_BUDGET)
        if sock is None:
            return None
    return _exchange(sock, wire.encode_request(harness, cwd, env, raw))


def session_agent(env: Mapping[str, str]) -> str | None:
    """The agent of the harness session this process runs under, if one is running it.

    For the commit guard: an agent's own ``git commit`` runs below its harness (harness ->
    shell -> git -> hook), so each ancestor is looked up as a harness with a keeper; the first
    keeper that answers with exactly one agent names the committer. None when no harness with
    a keeper is above us, or when its sessions act for several agents (ambiguous: then the
    guard treats the committer as it would without this).
    """
    root = wire.state_root()
    try:
        names = os.listdir(wire.agents_dir(root))
    except OSError:
        return None
    sockets = [n[: -len(".sock")] for n in names if n.endswith(".sock")]
    if not sockets:
        return None
    for pid, start in ancestors():
        suffix = f"-{pid}-{start}"
        for name in sockets:
            if not name.endswith(suffix):
                continue
            answer = _ask(root, name, wire.encode_request(wire.WHO, "/", {}, b""), 5.0)
            if answer is not None and answer[0] == 0 and answer[1]:
                return answer[1].decode("utf-8", "replace").strip()
            return None
    return None


def _ask(root: str, name: str, request: bytes, budget: float) -> tuple[int, bytes, bytes] | None:
    sock = wire.connect(root, name, budget)
    return _exchange(sock, request) if sock is not None else None


def _exchange(sock: _socket.socket, request: bytes) -> tuple[int, bytes, bytes] | None:
    """Send one request, read the whole reply; None if the keeper answered nothing."""
    try:
        sock.sendall(request)
        sock.shutdown(1)  # SHUT_WR: the end of the request
        data = wire.recv_all(sock)
    except OSError:
        return None
    finally:
        sock.close()
    return wire.decode_reply(data) if data else None


def _start_keeper(harness: str, found: tuple[int, int], root: str, name: str) -> bool:
    """Start the keeper of this harness process; True once one listens."""
    import select
    import subprocess

    read, write = os.pipe()
    try:
        subprocess.Popen(
            [sys.executable, "-m", "versatil_fs.agents.keeper", harness, str(found[0]),
             str(found[1]), str(write)],
            pass_fds=(write,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, cwd="/",
            # Its own session: the harness's Ctrl-C (its process group) must not end the
            # sessions' claims, only the harness's own end does. No inherited stdout either:
            # a harness reads a hook's output to EOF and would wait for the keeper.
            start_new_session=True,
        )
    except OSError:
        os.close(read)
        return False
    finally:
        os.close(write)
    with os.fdopen(read, "rb") as answer:
        ready, _, _ = select.select([answer], [], [], _START_BUDGET)
        said = answer.readline().strip() if ready else b""
    if said == b"ready":
        return True
    if said == b"taken":
        return _wait_for_socket(root, name)
    return False


def _wait_for_socket(root: str, name: str) -> bool:
    # Another hook of the same harness started its keeper a moment before ours; ours stood
    # down. That keeper listens within its start-up time.
    import time

    deadline = time.monotonic() + _START_BUDGET
    while time.monotonic() < deadline:
        sock = wire.connect(root, name, 1.0)
        if sock is not None:
            sock.close()
            return True
        time.sleep(0.01)
    return False


def _decide_here(
    harness: str, raw: bytes, env: Mapping[str, str], cwd: str
) -> tuple[int, bytes, bytes]:
    try:
        from versatil_fs.agents.core import Sessions

        sessions = Sessions(owner="shell")
        try:
            reply = sessions.answer(harness, raw, env, cwd)
        finally:
            sessions.detach()
        return reply.exit_code, reply.stdout.encode(), reply.stderr.encode()
    except Exception as exc:  # even the core would not load: let the call through, say why
        message = f"versatil warning: could not check this tool call ({type(exc).__name__}).\n"
        return 0, b"", message.encode()


def _write(fd: int, data: bytes) -> None:
    while data:
        try:
            written = os.write(fd, data)
        except OSError:
            return  # the harness stopped reading (it timed the hook out)
        data = data[written:]
