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
    try:
        line = _encoder.encode(event)
    except UnicodeEncodeError:
        # A file name that is not UTF-8 arrives as a str with surrogate escapes, which JSON
        # cannot carry (msgspec refuses them, and a lone "\udcff" escape is malformed for
        # most readers). The log gets its printable form; the rare path pays for the copy.
        event = printable(event)
        line = _encoder.encode(event)
    state.append_line(state.event_log(stream), line)
    return event


def printable(value: Any) -> Any:
    """``value`` with every string made encodable: a byte of a name that is not UTF-8 (a
    surrogate escape, as ``os.fsdecode`` gives) becomes ``\\xNN``, as Python prints it.

    Strings, lists, tuples, dicts and msgspec Structs are walked; anything else is returned
    as it is. Text that is valid already comes back unchanged (and is not copied).
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _escape(value)
        return value
    if isinstance(value, list | tuple):
        return type(value)(printable(item) for item in value)
    if isinstance(value, dict):
        return {printable(key): printable(item) for key, item in value.items()}
    if isinstance(value, msgspec.Struct):
        changes = {
            name: printable(getattr(value, name)) for name in value.__struct_fields__
        }
        return msgspec.structs.replace(value, **changes)
    return value


def _escape(text: str) -> str:
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no file name decodes to: escape it as it is
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


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
    offset = state.size(path)
    pending = b""
    while True:
        size = state.size(path)
        if size < offset:
            offset, pending = 0, b""
        if size > offset:
            chunk = state.read_range(path, offset, size - offset)
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
