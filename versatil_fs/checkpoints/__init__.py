"""Checkpoints: git commits of the whole working tree that never disturb the user.

The package's modules are described in :mod:`versatil_fs.checkpoints.store`; this file only
re-exports the names other modules and tests use.
"""

from versatil_fs.checkpoints.store import (
    DAMAGED_PREFIX,
    ID_PATTERN,
    REF_PREFIX,
    SCHEMA_VERSION,
    Change,
    CheckpointRecord,
    Checkpoints,
    Modification,
    PrunedCheckpoint,
    PruneResult,
    RestoreResult,
    checkpoint,
    printable,
    pruned_line,
    record_files_modified,
    valid_id,
    write_lock_conflicts,
)
from versatil_fs.errors import GitFailed, RestoreIncomplete

__all__ = [
    "DAMAGED_PREFIX",
    "ID_PATTERN",
    "REF_PREFIX",
    "SCHEMA_VERSION",
    "Change",
    "CheckpointRecord",
    "Checkpoints",
    "GitFailed",
    "Modification",
    "PruneResult",
    "PrunedCheckpoint",
    "RestoreIncomplete",
    "RestoreResult",
    "checkpoint",
    "printable",
    "pruned_line",
    "record_files_modified",
    "valid_id",
    "write_lock_conflicts",
]
