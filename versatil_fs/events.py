"""The append-only event log, and reading it back for ``versatil logs``.

Each stream is one file of JSON lines under ``$VERSATIL_HOME/logs``. Writers append a whole line
with one ``O_APPEND`` write (see :meth:`StateDir.append_line`), so many processes can log at once
without torn or interleaved lines. Readers skip a line that does not parse (a torn tail after a
full disk) rather than failing the whole listing.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import msgspec

from versatil_fs.errors import UsageError
from versatil_fs.state import StateDir

STREAMS = ("locks", "collision-detection", "checkpoints", "wave-execution")
"""The streams a user can read; the reference note's names."""

SCHEMA_VERSION = 1


class Event(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One thing that happened. ``kind`` is a short verb phrase: ``grant``, ``unlocked-write``."""

    version: int = SCHEMA_VERSION
    time: float
    stream: str
    kind: str
    agent: str | None = None
    repo: str | None = None
    pid: int = 0
    data: dict[str, Any] = {}

    def summary(self) -> str:
        """The one-line human form used by ``versatil logs``."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))
        who = f" {self.agent}" if self.agent else ""
        details = " ".join(f"{k}={_short(v)}" for k, v in self.data.items())
        return f"{stamp} {self.kind}{who}" + (f" {details}" if details else "")


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def emit(
    stream: str,
    kind: str,
    *,
    agent: str | None = None,
    repo: str | None = None,
    state: StateDir | None = None,
    **data: Any,
) -> Event:
    """Append one event to ``stream`` and return it."""
    if stream not in STREAMS:
        raise ValueError(f"unknown event stream {stream!r}")
    event = Event(
        time=time.time(), stream=stream, kind=kind, agent=agent, repo=repo, pid=os.getpid(),
        data=data,
    )
    state = state or StateDir()
    state.append_line(state.event_log(stream), _encoder.encode(event))
    return event


def check_stream(stream: str) -> str:
    if stream not in STREAMS:
        raise UsageError(f"Unknown log stream {stream!r}; choose one of: {', '.join(STREAMS)}.")
    return stream


def _parse(line: bytes) -> Event | None:
    try:
        return _decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _matches(event: Event, word: str | None, raw: bytes) -> bool:
    return word is None or word.lower() in raw.decode("utf-8", "replace").lower()


def read(
    stream: str,
    *,
    state: StateDir | None = None,
    tail: int | None = None,
    word: str | None = None,
) -> list[Event]:
    """The events of ``stream`` in order, optionally only the last ``tail`` matching ``word``."""
    check_stream(stream)
    state = state or StateDir()
    data = state.read_bytes(state.event_log(stream)) or b""
    kept: deque[Event] = deque(maxlen=tail if tail and tail > 0 else None)
    for raw in data.splitlines():
        event = _parse(raw)
        if event is not None and _matches(event, word, raw):
            kept.append(event)
    return list(kept)


def follow(
    stream: str,
    *,
    state: StateDir | None = None,
    word: str | None = None,
    poll: float = 0.1,
) -> Iterator[Event]:
    """Yield events appended to ``stream`` from now on, until the caller stops iterating.

    Polls the file size every ``poll`` seconds (like ``tail -f``); a partial last line is kept
    until its newline arrives, and a truncated or replaced file is read again from the start.
    """
    check_stream(stream)
    state = state or StateDir()
    path = state.event_log(stream)
    state.ensure_dir(path.parent)
    offset = path.stat().st_size if path.exists() else 0
    pending = b""
    while True:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < offset:
            offset, pending = 0, b""
        if size > offset:
            with open(path, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read(size - offset)
            offset += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                event = _parse(raw)
                if event is not None and _matches(event, word, raw):
                    yield event
        else:
            time.sleep(poll)


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def _short(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)
