"""How a hook process and its session keeper talk: one Unix socket per harness process, in the
state directory, one request and one reply per connection.

Stdlib only (``os``, ``socket``): the hook process pays for every import before every edit.

The socket is ``$VERSATIL_HOME/run/agents/<harness>-<pid>-<start>.sock``: named after the
harness process (its pid and start time, which together name one process even when pids are
reused), because that process's life is what the keeper's locks stand for. The directory is
the owner-only state directory, and the keeper also checks each caller's uid (SO_PEERCRED):
another user can neither reach the socket nor be answered through it.

Framing, chosen so that neither side needs ``json`` to frame: a request is NUL-separated
fields — the magic, the harness, the hook's cwd, the number of environment entries, the entries
(``NAME=value``; neither can hold a NUL) — then the harness's payload bytes as sent, up to the
end of the stream (the client shuts its sending side). A reply is one ASCII header line
``<exit code> <stdout bytes> <stderr bytes>`` and then those bytes.
"""

from __future__ import annotations

# The C module itself: `socket.py` imports `selectors` and `enum`, which cost the hook process
# more than the rest of its work; the methods used here (connect, sendall, recv, shutdown,
# settimeout, close) are the same objects' either way.
import _socket
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "HARNESSES",
    "MAGIC",
    "MAX_PAYLOAD",
    "WHO",
    "Request",
    "agents_dir",
    "connect",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
    "keeper_name",
    "recv_all",
    "socket_address",
    "state_root",
]

# The harnesses `versatil integrate` and `versatil agent-hook` know, in the order shown to users
# (here, not in protocol.py, so that the hook process can check its argument without importing
# dataclasses; protocol.py re-exports it).
HARNESSES: tuple[str, ...] = ("claude", "codex", "gemini", "cursor", "cline", "copilot")

MAGIC = b"versatil-hook/1"
# The harness field of a request that asks the keeper which agent its sessions act for
# (answer: exit 0 and the one name, else exit 1 and every name, one per line).
WHO = "who"
# The most a harness payload may be: a tool call's JSON, an edit's whole new content included.
# Bigger is refused before it is read whole, so a huge payload cannot make the hook slow or
# eat memory (the fail policy answers it).
MAX_PAYLOAD = 16 * 1024 * 1024

Request = tuple[str, str, dict[str, str], bytes]
"""``(harness, cwd, environment, payload)``."""


def state_root() -> str:
    """The state directory, as :func:`versatil_fs.state.home` finds it (without pathlib)."""
    configured = os.environ.get("VERSATIL_HOME")
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    return os.path.join(os.path.expanduser("~"), ".versatil")


def agents_dir(root: str) -> str:
    return os.path.join(root, "run", "agents")


def keeper_name(harness: str, pid: int, start: int) -> str:
    """The keeper's name for one harness process: its socket is ``<name>.sock``."""
    return f"{harness}-{pid}-{start}"


def socket_address(directory_fd: int, name: str) -> str:
    """An address for the socket ``<name>.sock`` in the directory open as ``directory_fd``.

    A Unix socket's path is limited to 107 bytes, and a state directory can be deeper than
    that (a test's tmp_path, a long home). ``/proc/self/fd/N/`` names the directory through
    the descriptor, so the address stays short and cannot be redirected by a rename of any
    directory above it after it was opened.
    """
    return f"/proc/self/fd/{directory_fd}/{name}.sock"


def connect(root: str, name: str, timeout: float) -> _socket.socket | None:
    """A connection to the keeper ``name``, or None when none listens (no socket, or a dead
    keeper's socket left behind)."""
    try:
        directory = os.open(agents_dir(root), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(socket_address(directory, name))
    except OSError:
        sock.close()
        return None
    finally:
        os.close(directory)
    return sock


def recv_all(sock: _socket.socket, limit: int | None = None) -> bytes:
    """Everything the peer sends until it shuts its side; ValueError past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if limit is not None and size > limit:
            raise ValueError("a hook request over the size limit")
        chunks.append(chunk)


def encode_request(harness: str, cwd: str, env: Mapping[str, str], payload: bytes) -> bytes:
    entries = [f"{k}={v}".encode("utf-8", "surrogateescape") for k, v in env.items()]
    head = [MAGIC, harness.encode(), os.fsencode(cwd), str(len(entries)).encode(), *entries]
    return b"\0".join(head) + b"\0" + payload


def decode_request(data: bytes) -> Request:
    """The request's fields; ValueError if it is not one."""
    parts = data.split(b"\0", 4)
    if len(parts) != 5 or parts[0] != MAGIC or not parts[3].isdigit():
        raise ValueError("not a versatil hook request")
    count = int(parts[3])
    *entries, payload = parts[4].split(b"\0", count)
    if len(entries) != count:
        raise ValueError("a truncated versatil hook request")
    env: dict[str, str] = {}
    for entry in entries:
        name, sep, value = entry.decode("utf-8", "surrogateescape").partition("=")
        if sep:
            env[name] = value
    return parts[1].decode("ascii"), os.fsdecode(parts[2]), env, payload


def encode_reply(exit_code: int, stdout: str, stderr: str) -> bytes:
    out, err = stdout.encode("utf-8", "replace"), stderr.encode("utf-8", "replace")
    return f"{exit_code} {len(out)} {len(err)}\n".encode() + out + err


def decode_reply(data: bytes) -> tuple[int, bytes, bytes]:
    """``(exit code, stdout, stderr)``; ValueError if the reply is cut short or malformed."""
    head, sep, body = data.partition(b"\n")
    code, out, err = (int(x) for x in head.split())
    if not sep or len(body) != out + err or not 0 <= code <= 255:
        raise ValueError("a malformed keeper reply")
    return code, body[:out], body[out:]
