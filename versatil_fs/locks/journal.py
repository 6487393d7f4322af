"""The lock table's delta journal ``run/table.journal``: how a process catches up with another's
write without decoding the whole table.

Every transaction that writes the table also appends, after the document is in place and still
under the table lock, one record of what it changed: the grants added, changed and removed,
the whole (short) queue, the counters, and the generation it went from and to with the new
document's signature. A process whose cached table is at the generation a record starts from
applies it, and the ones after it, until it reaches the document's own generation; anything
else (a torn or damaged record, a gap where a writer died between the document and its record,
a record of a table this process never had) sends it to the whole document, which is always
complete and current. So the journal is only ever a shortcut, never the truth.

Records are length-prefixed and checksummed (``VJ1``, length, CRC-32, then msgpack); the file
is emptied when it grows past :data:`COMPACT_AT`, and by the first reader that finds it damaged.
Ids in a record are only compared with the table's, never used as paths; its records are
checked like the table's (:func:`~versatil_fs.locks.table.check_records`).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import msgspec

from versatil_fs.errors import StateError
from versatil_fs.locks.table import Count, Grant, Waiter, check_records
from versatil_fs.state import StateDir

__all__ = ["COMPACT_AT", "Delta", "Journal"]

COMPACT_AT = 1 << 20  # bytes: a few thousand transactions of a few locks each
_MAGIC = b"VJ1"
_HEADER = struct.Struct("<3sII")  # magic, payload length, CRC-32 of the payload
_MAX_RECORD = 64 << 20


class Delta(msgspec.Struct, array_like=True, gc=False):
    """One transaction's change of the table, from generation ``base`` to ``generation``."""

    base: Count
    base_nonce: bytes
    generation: Count
    nonce: bytes
    signature: list[int]  # the new document's (see store._signature)
    seq: Count
    fence: Count
    added: list[Grant]
    changed: list[Grant]
    removed: list[str]  # lease ids
    waiters: list[Waiter]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Delta)


class Journal:
    """``run/table.journal`` of one state directory, read and written under the table lock."""

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.path: Path = state.table_lock.with_name("table.journal")
        self.offset = 0  # where this process stopped reading (records before it are older)
        self._fd: int | None = None
        self._pid = 0

    def append(self, delta: Delta) -> None:
        """Add ``delta`` (best effort: a record that could not be written is a gap, and a gap
        only sends readers to the whole document)."""
        payload = _encoder.encode(delta)
        record = _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload
        try:
            fd = self._append_fd()
            info = os.fstat(fd)
            if info.st_nlink == 0:
                # Removed since we opened it (by hand): write where readers look.
                self.close()
                fd = self._append_fd()
                info = os.fstat(fd)
            size = info.st_size
            if size > COMPACT_AT:
                # Compaction: the table document holds everything; readers behind it read
                # the document once.
                os.ftruncate(fd, 0)
                size = 0
            written = os.write(fd, record)
            if written != len(record):
                os.ftruncate(fd, size)  # a full disk: no half record
            else:
                self.offset = size + written
        except (OSError, StateError):
            self.close()

    def _append_fd(self) -> int:
        # Kept open (an O_APPEND descriptor): every write of a large table appends here, and
        # an open and a close cost more than the append itself.
        if self._fd is None or self._pid != os.getpid():
            self._fd = self.state.open_checked(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
            self._pid = os.getpid()
        return self._fd

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def since(self, generation: int, nonce: bytes) -> list[Delta] | None:
        """The records that take a table at ``(generation, nonce)`` forward, in order, as far
        as they go; None when the journal is damaged (it is then emptied)."""
        raw = self._read(self.offset)
        if raw is None:
            return []
        found = self._scan(*raw, (generation, nonce))
        if found is None and raw[1] > 0:
            # Emptied and written again since we read it: our offset may fall inside a record.
            raw = self._read(0)
            found = self._scan(*raw, (generation, nonce)) if raw is not None else []
        if found is None:
            self._damaged()
        return found

    def _scan(self, data: bytes, start: int, current: tuple[int, bytes]) -> list[Delta] | None:
        found: list[Delta] = []
        position = 0
        while position < len(data):
            header = data[position:position + _HEADER.size]
            if len(header) < _HEADER.size:
                return None
            magic, length, checksum = _HEADER.unpack(header)
            body = data[position + _HEADER.size:position + _HEADER.size + length]
            if magic != _MAGIC or length > _MAX_RECORD or len(body) != length:
                return None  # a torn tail, or not a journal
            if zlib.crc32(body) != checksum:
                return None
            try:
                delta = _decoder.decode(body)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return None
            position += _HEADER.size + length
            if (delta.base, delta.base_nonce) != current:
                continue  # older than our table, or from a branch that never became the file
            if check_records(delta.added) or check_records(delta.changed) or check_records(
                delta.waiters, "waiters"
            ):
                return None
            found.append(delta)
            current = (delta.generation, delta.nonce)
        self.offset = start + position
        return found

    def _read(self, start: int) -> tuple[bytes, int] | None:
        """The journal's bytes from ``start`` (from the beginning when it is shorter now: it
        was emptied since), and where they start; None when there is no journal."""
        try:
            fd = self.state.open_checked(self.path)
        except (OSError, StateError):
            return None  # none yet, or not a file of ours: no shortcut
        try:
            size = os.fstat(fd).st_size
            start = start if start <= size else 0
            chunks = []
            offset = start
            while offset < size and (chunk := os.pread(fd, min(size - offset, 1 << 20), offset)):
                chunks.append(chunk)
                offset += len(chunk)
            return b"".join(chunks), start
        except OSError:
            return None
        finally:
            os.close(fd)

    def _damaged(self) -> None:
        """Empty a damaged journal (under the table lock): the next records start clean."""
        self.offset = 0
        try:
            fd = self.state.open_checked(self.path, os.O_RDWR)
        except (OSError, StateError):
            return  # gone, or not ours: leave it, we read the document
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)
