"""The append-only event log: the only module that writes it or reads it back.

Each stream is one file of JSON lines under ``$VERSATIL_HOME/logs``. Writers append a whole line
with one ``O_APPEND`` write (see :meth:`StateDir.append_line`), so many processes can log at once
without torn or interleaved lines. Readers skip a line that does not parse (a torn tail after a
full disk) rather than failing the whole listing.

Writing: :func:`emit`, or :func:`emit_done` for something that has already happened (the change
stands even when its line cannot be written). Reading: :func:`read` (a listing), :func:`records`
(a filtered pass, optionally over the tail only), :func:`follow` (what is appended from an offset
on) and :func:`end` (where a stream ends now).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from versatil_fs.errors import StateError, UsageError
from versatil_fs.state import StateDir

__all__ = [
    "DURATIONS",
    "SCHEMA_VERSION",
    "STREAMS",
    "Event",
    "check_stream",
    "emit",
    "emit_done",
    "encode",
    "end",
    "follow",
    "printable",
    "read",
    "records",
]

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
        """The one-line human form used by ``versatil logs``: only the fields that have a
        value (no ``wave=None`` or empty ``error=``), durations rounded (``10.0s``), and none
        of the fields kept for programs only (``--json`` has every field)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))
        who = f" {self.agent}" if self.agent else ""
        details = " ".join(
            f"{k}={_shown(k, v)}" for k, v in self.data.items()
            if k not in _FOR_PROGRAMS and _has_value(v)
        )
        return f"{stamp} {self.kind}{who}" + (f" {details}" if details else "")


# Fields a person does not read in a log line: `write_paths` repeats `resources` for the
# monitor, `paths_hex` spells `paths` as bytes for a restore.
_FOR_PROGRAMS = frozenset({"write_paths", "paths_hex"})
# Fields that are a number of seconds, shown rounded to a tenth (`duration=10.0s`).
DURATIONS = frozenset({"duration", "held_for", "waited", "elapsed", "wait", "seconds"})


def _has_value(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def _shown(key: str, value: Any) -> str:
    if key in DURATIONS and isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.1f}s"
    return _short(value)


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


def emit_done(
    stream: str,
    kind: str,
    *,
    agent: str | None = None,
    repo: str | None = None,
    state: StateDir | None = None,
    done: str = "done",
    warn: Callable[[str], None] | None = None,
    **data: Any,
) -> Event | None:
    """Log something that has already happened: the change stands whatever becomes of its line.

    A full disk (or a damaged state directory) on the event log must not turn a change that was
    made into an error that says nothing was changed — a lock the caller then does not know it
    holds, a checkpoint believed missing, a write the monitor stops reporting. So a
    :class:`StateError` here becomes one sentence, ``<done>, but the <kind> event could not be
    written to <log> (<why>)``, handed to ``warn`` (default: a ``versatil:`` line on stderr),
    and None is returned. Anything else (an unknown stream: a bug) still raises.
    """
    state = state or StateDir()
    try:
        return emit(stream, kind, agent=agent, repo=repo, state=state, **data)
    except StateError as exc:
        cause = exc.__cause__
        detail = cause.strerror if isinstance(cause, OSError) and cause.strerror else exc
        sentence = (
            f"{done}, but the {kind!r} event could not be written to "
            f"{state.event_log(stream)} ({detail})"
        )
        if warn is None:
            print(f"versatil: {sentence}.", file=sys.stderr, flush=True)
        else:
            warn(sentence)
        return None


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
    kept: deque[Event] = deque(maxlen=tail if tail and tail > 0 else None)
    for event, raw in _lines(stream, state, None, None):
        if _matches(event, word, raw):
            kept.append(event)
    return list(kept)


def records(
    stream: str,
    *,
    state: StateDir | None = None,
    containing: bytes | None = None,
    last_bytes: int | None = None,
) -> Iterator[Event]:
    """The events of ``stream`` in order, decoding only the lines that contain ``containing``
    (a substring search per line: a log full of other events costs little), and reading only
    its last ``last_bytes`` when given (the first, partial line of that tail is skipped)."""
    for event, _raw in _lines(stream, state, containing, last_bytes):
        yield event


def end(stream: str, *, state: StateDir | None = None) -> int:
    """Where ``stream`` ends now (0 when it does not exist): an offset for :func:`follow`."""
    check_stream(stream)
    state = state or StateDir()
    return state.size(state.event_log(stream))


def _lines(
    stream: str, state: StateDir | None, containing: bytes | None, last_bytes: int | None
) -> Iterator[tuple[Event, bytes]]:
    check_stream(stream)
    state = state or StateDir()
    path = state.event_log(stream)
    if last_bytes is None:
        data = state.read_bytes(path) or b""
    else:
        size = state.size(path)
        data = state.read_range(path, max(0, size - last_bytes)) if size else b""
    for raw in data.splitlines():
        if containing is not None and containing not in raw:
            continue
        event = _parse(raw)
        if event is not None:
            yield event, raw


def follow(
    stream: str,
    *,
    state: StateDir | None = None,
    word: str | None = None,
    poll: float = 0.1,
    offset: int | None = None,
    stop: threading.Event | None = None,
    grew: threading.Event | None = None,
) -> Iterator[Event]:
    """Yield events appended to ``stream`` after ``offset`` (default: where it ends when the
    iteration starts), until ``stop`` is set or the caller stops iterating.

    Between reads it waits ``poll`` seconds (like ``tail -f``), or until ``grew`` is set: a
    caller that is told when the file changes (inotify) passes that event and gets each line
    at once, ``poll`` then being only a safety net for a missed wake-up. A partial last line is
    kept until its newline arrives, and a truncated or replaced file is read again from the
    start.
    """
    check_stream(stream)
    state = state or StateDir()
    path = state.event_log(stream)
    if offset is None:
        offset = state.size(path)
    pending = b""
    while stop is None or not stop.is_set():
        if grew is not None:
            grew.clear()  # before looking: a growth after the look wakes the wait below
        size = state.size(path)
        if size < offset:
            offset, pending = 0, b""
        if size == offset:
            if grew is not None:
                grew.wait(poll)
            elif stop is not None:
                stop.wait(poll)
            else:
                time.sleep(poll)
            continue
        chunk = state.read_range(path, offset, size - offset)
        offset += len(chunk)
        *lines, pending = (pending + chunk).split(b"\n")
        for raw in lines:
            event = _parse(raw)
            if event is not None and _matches(event, word, raw):
                yield event


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def _short(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)
