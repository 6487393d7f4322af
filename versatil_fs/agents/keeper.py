"""The session keeper: one small process per harness process, holding its sessions' claims for
exactly as long as the harness lives, and answering its hook calls warm.

Hooks are short-lived processes, so a session's claims cannot hang on a hook's life. The first
hook of a harness process starts a keeper (:mod:`versatil_fs.agents.client`); the keeper

* holds the claims as **process leases**: its holder file stays flocked while it lives, so the
  kernel ends every claim the instant the keeper dies, ``kill -9`` included;
* watches the harness process through a **pidfd** (Linux 5.3+), opened and then checked
  against the harness's start time so that a reused pid cannot stand in for it: when the
  harness exits or crashes, the keeper releases everything and exits at once;
* without a pidfd it cannot see the harness go, so it ends itself after
  ``collision_detection.lock_timeout`` seconds without a hook call (the TTL backstop);
* answers each hook call on its Unix socket (:mod:`versatil_fs.agents.wire`), so a hook's cost
  is a Python start and a socket round trip, not an import of the lock manager.

Run as ``python -m versatil_fs.agents.keeper HARNESS PID START READY_FD``; it tells the client
on ``READY_FD`` that it listens (``ready``), or that another keeper of the same harness
process won the race to start (``taken``), then closes it.
"""

from __future__ import annotations

import os
import select
import socket
import stat
import struct
import sys
import threading
from pathlib import Path

from versatil_fs import flock, linux
from versatil_fs.agents import wire
from versatil_fs.agents.core import Sessions
from versatil_fs.state import StateDir

__all__ = ["Keeper", "main"]

_READ_BUDGET = 30.0  # seconds a hook may take to send its request
_MAX_REQUEST = wire.MAX_PAYLOAD + 1024 * 1024  # the payload and an environment


class Keeper:
    """A listening keeper for one harness process."""

    def __init__(self, harness: str, pid: int, start: int, state: StateDir | None = None):
        self.harness, self.pid, self.start = harness, pid, start
        self.state = state or StateDir()
        self.name = wire.keeper_name(harness, pid, start)
        self.sessions = Sessions(self.state, owner="process")
        self._stop = threading.Event()
        self._last_call = 0.0

    def serve(self, ready: int | None) -> int:
        """Run until the harness process exits; 0, or 1 if another keeper has the place."""
        directory = self.state.subdir("run", "agents")
        lock_fd = self.state.open_lock_file(directory / f"{self.name}.lock")
        if not flock.try_lock(lock_fd):
            _tell(ready, b"taken\n")
            return 1
        pidfd = linux.pidfd_open(self.pid)
        info = linux.process_info(self.pid)
        if info is None or info[1] != self.start:
            _tell(ready, b"gone\n")  # the harness died before we could watch it
            return 1
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address = wire.socket_address(dir_fd, self.name)
        try:
            _remove_stale(directory / f"{self.name}.sock")  # we hold its lock: it is stale
            listener.bind(address)
            listener.listen(16)
            _tell(ready, b"ready\n")
            self._loop(listener, pidfd)
        finally:
            listener.close()
            _remove_stale(directory / f"{self.name}.sock")
            self.sessions.close()
            os.close(dir_fd)
            if pidfd is not None:
                os.close(pidfd)
        return 0

    def _loop(self, listener: socket.socket, pidfd: int | None) -> None:
        idle = self._idle_limit() if pidfd is None else None
        watched = [listener] + ([pidfd] if pidfd is not None else [])
        self._last_call = _now()
        while not self._stop.is_set():
            timeout = None if idle is None else max(idle - (_now() - self._last_call), 0.0)
            readable, _, _ = select.select(watched, [], [], timeout)
            if pidfd is not None and pidfd in readable:
                return  # the harness is gone: its sessions end with it
            if not readable:
                return  # no pidfd and no hook call for the whole lease lifetime
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            self._last_call = _now()
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            if not _same_user(conn):
                return  # another user reached the socket: answer nothing
            conn.settimeout(_READ_BUDGET)
            try:
                data = wire.recv_all(conn, _MAX_REQUEST)
                harness, cwd, env, payload = wire.decode_request(data)
            except (OSError, ValueError):
                return  # the client falls back to deciding in-process
            if harness == wire.WHO:
                # The commit guard, from a `git commit` the agent runs: which agent is this?
                agents = self.sessions.agents()
                reply_bytes = wire.encode_reply(0 if len(agents) == 1 else 1, "\n".join(agents), "")
                try:
                    conn.sendall(reply_bytes)
                except OSError:
                    pass
                return
            if harness != self.harness:
                return
            reply = self.sessions.answer(harness, payload, env, cwd)
            try:
                conn.sendall(wire.encode_reply(reply.exit_code, reply.stdout, reply.stderr))
            except OSError:
                pass  # the hook was killed (timed out by its harness); nothing to tell

    def _idle_limit(self) -> float:
        from versatil_fs import config

        try:
            return float(config.load(None, state=self.state).collision_detection.lock_timeout)
        except Exception:
            return 300.0


def _now() -> float:
    import time

    return time.monotonic()


def _same_user(conn: socket.socket) -> bool:
    # SO_PEERCRED: (pid, uid, gid) of the connecting process, as the kernel saw it at connect.
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return False
    _, uid, _ = struct.unpack("3i", raw)
    return bool(uid == os.getuid())


def _remove_stale(path: Path) -> None:
    """Unlink ``path`` if it is a socket of ours (never anything else found there)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(info.st_mode) and info.st_uid == os.getuid():
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _tell(fd: int | None, message: bytes) -> None:
    if fd is None:
        return
    try:
        os.write(fd, message)
    except OSError:
        pass  # the client gave up waiting; it decides in-process
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4 or not all(a.isdigit() for a in args[1:]):
        print("usage: python -m versatil_fs.agents.keeper HARNESS PID START READY_FD",
              file=sys.stderr)
        return 2
    harness, pid, start, ready = args[0], int(args[1]), int(args[2]), int(args[3])
    try:
        return Keeper(harness, pid, start).serve(ready)
    except Exception:
        return 1  # the client decides in-process; the keeper has nobody to tell


if __name__ == "__main__":
    sys.exit(main())
