"""The monitor: one observer per working tree, reporting every unlocked write."""

from versatil_fs.monitor import watcher as _watcher
from versatil_fs.monitor.watcher import *  # noqa: F403
from versatil_fs.monitor.watcher import Snapshot as Snapshot
from versatil_fs.monitor.watcher import __all__ as __all__
from versatil_fs.monitor.watcher import encode_write as encode_write
from versatil_fs.monitor.watcher import lock_held_at as lock_held_at
from versatil_fs.monitor.watcher import log_size as log_size
from versatil_fs.monitor.watcher import normalize_guards as normalize_guards
from versatil_fs.monitor.watcher import stderr_notice as stderr_notice
from versatil_fs.monitor.watcher import under as under
from versatil_fs.monitor.watcher import writes_from_event as writes_from_event

# Kept only until the split's next commit names them publicly.
_looks_temporary = _watcher._looks_temporary
_in_git_dir = _watcher._in_git_dir
