"""The clocks the lock manager reads, in one place so a test can replace them.

* ``wall()`` (``time.time``) is what the table shows people and what survives a reboot.
* ``monotonic()`` measures a wait: a wall clock set back an hour must not turn ``--wait 4``
  into an hour, nor one set forward into no wait at all.
* ``boottime()`` (``CLOCK_BOOTTIME``: monotonic, and it keeps counting through a suspend) with
  ``boot_id()`` dates a shell lease's expiry across processes: any process of the same boot
  reads the same clock, whatever the wall clock does. After a reboot the boot id differs and
  the wall time stored beside it is all there is.

Tests swap :data:`CLOCK` for a fake (``monkeypatch.setattr(clock, "CLOCK", fake)``); the lock
code always reads ``clock.CLOCK`` at call time, never a copy of it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from versatil_fs import linux

if TYPE_CHECKING:
    from versatil_fs.locks.table import Grant

__all__ = ["CLOCK", "Clock", "hms", "seconds_left"]


class Clock:
    """The clocks, read through one object so that a test can replace it (see above)."""

    def __init__(self) -> None:
        self._boot_id: str | None = None

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def boottime(self) -> float:
        return linux.boottime()

    def boot_id(self) -> str:
        """This boot's id ("" where the system does not tell: expiry then uses the wall clock)."""
        if self._boot_id is None:
            self._boot_id = linux.boot_id()
        return self._boot_id


CLOCK = Clock()


def hms(ts: float) -> str:
    """A wall time as people read it in the lock table and in messages: local ``HH:MM:SS``."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


def seconds_left(grant: Grant) -> float:
    """How long a shell lease still stands (negative once it has expired).

    Measured on CLOCK_BOOTTIME while the machine has not rebooted since the grant, so a wall
    clock stepped forward or back neither ends the lease early nor keeps it late; after a
    reboot (another boot id) the wall-clock expiry stored beside it is all there is.
    """
    now = CLOCK
    if grant.boot_id and grant.expires_boot > 0 and grant.boot_id == now.boot_id():
        return grant.expires_boot - now.boottime()
    return grant.expires_at - now.wall()
