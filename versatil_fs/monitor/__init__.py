"""The monitor: one observer per working tree, reporting every unlocked write.

How it works, and what it does not guarantee: :mod:`versatil_fs.monitor.watcher`. The parts:
``ignore`` (git's ignore rules plus ``guard.ignore``), ``scan`` (the one tree scan, which
``versatil run`` and the wave executor use too), ``attribution`` (who held the covering lock),
``election`` (who observes), ``inotify`` (the glue to watchdog), ``tracking`` (events -> writes),
``writes`` (what is reported and logged), ``own_files`` (its own output, never reported),
``watcher`` (the :class:`Monitor`), ``foreground`` (``versatil monitor``).
"""

from versatil_fs.monitor.attribution import LockView, lock_held_at
from versatil_fs.monitor.election import Election
from versatil_fs.monitor.foreground import follow, log_size, stderr_notice, watch
from versatil_fs.monitor.ignore import IgnoreMatcher, MonitorError
from versatil_fs.monitor.scan import (
    EventName,
    Stamp,
    TreeScan,
    changes,
    in_git_dir,
    modified,
    normalize_guards,
    scan,
    stamp,
    under,
    within,
)
from versatil_fs.monitor.tracking import looks_temporary
from versatil_fs.monitor.watcher import Monitor
from versatil_fs.monitor.writes import (
    RECENT_WINDOW,
    STREAM,
    Write,
    WriteKind,
    encode_write,
    recent_unlocked_writes,
    unlocked_write_count,
    window_phrase,
    writes_from_event,
)

__all__ = [
    "RECENT_WINDOW",
    "STREAM",
    "Election",
    "EventName",
    "IgnoreMatcher",
    "LockView",
    "Monitor",
    "MonitorError",
    "Stamp",
    "TreeScan",
    "Write",
    "WriteKind",
    "changes",
    "encode_write",
    "follow",
    "in_git_dir",
    "lock_held_at",
    "log_size",
    "looks_temporary",
    "modified",
    "normalize_guards",
    "recent_unlocked_writes",
    "scan",
    "stamp",
    "stderr_notice",
    "under",
    "unlocked_write_count",
    "watch",
    "window_phrase",
    "within",
    "writes_from_event",
]
