"""The PostgreSQL lock store's schema: made on first use, versioned, migrated forward.

- **Made on first use** (or by ``versatil store init``), versioned in ``versatil_schema``,
  migrated forward under an advisory transaction lock (key ``(NAMESPACE, 0)``, which no holder
  key takes); every table is ``versatil_``-prefixed and created unqualified, i.e. in the role's
  own schema first on the ``search_path`` (``"$user"``): no right on ``public`` is needed.
- **Tables.** ``versatil_tables``: one row per project (its lock table as ``jsonb``, its fencing
  counter, the restart-grace bookkeeping); ``versatil_damaged``: documents set aside because
  they no longer decode.
"""

from __future__ import annotations

from typing import Any

import psycopg

from versatil_fs.errors import UsageError
from versatil_fs.locks.pg_connect import NAMESPACE, reason_of

__all__ = ["PG_SCHEMA_VERSION", "ensure_schema"]

# Schema versions and the statements that take the previous one to each (never edited once
# released: a new version is a new entry).
PG_SCHEMA_VERSION = 1
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE versatil_tables ("
        " project text PRIMARY KEY,"
        " doc jsonb NOT NULL DEFAULT '{}'::jsonb,"
        " fence bigint NOT NULL DEFAULT 0,"
        # The server start (epoch seconds) the row was last written under, and the process
        # holders its document held when a transaction first saw a newer start: the only
        # records the restart grace covers.
        " server_start float8 NOT NULL DEFAULT 0,"
        " grace_holders text[] NOT NULL DEFAULT '{}',"
        " updated_at timestamptz NOT NULL DEFAULT now())",
        "CREATE TABLE versatil_damaged ("
        " id bigserial PRIMARY KEY,"
        " project text NOT NULL,"
        " doc text NOT NULL,"
        " reason text NOT NULL,"
        " set_aside_at timestamptz NOT NULL DEFAULT now())",
    ),
}


def ensure_schema(conn: psycopg.Connection[Any], safe_url: str = "") -> int:
    """Create or migrate versatil's tables; returns the version found before (0: none).

    One quick read when the schema is current; otherwise the migration runs under an advisory
    transaction lock, so two processes starting together do not both create the tables."""
    try:
        row = conn.execute("SELECT max(version) FROM versatil_schema").fetchone()
        if row is not None and row[0] == PG_SCHEMA_VERSION:
            return PG_SCHEMA_VERSION
    except psycopg.errors.UndefinedTable:
        pass
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (NAMESPACE,))
            conn.execute("CREATE TABLE IF NOT EXISTS versatil_schema (version integer NOT NULL)")
            row = conn.execute("SELECT max(version) FROM versatil_schema").fetchone()
            found = int(row[0]) if row is not None and row[0] is not None else 0
            if found > PG_SCHEMA_VERSION:
                raise UsageError(
                    f"The lock store at {safe_url} has versatil schema version {found}, newer "
                    f"than this versatil's {PG_SCHEMA_VERSION}: upgrade versatil on this machine."
                )
            for version in range(found + 1, PG_SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute("DELETE FROM versatil_schema")
                conn.execute("INSERT INTO versatil_schema (version) VALUES (%s)", (version,))
            return found
    except psycopg.errors.InsufficientPrivilege as exc:
        schema = conn.execute("SELECT current_schema()").fetchone()
        where = f"schema {schema[0]}" if schema and schema[0] else "any schema on the search_path"
        raise UsageError(
            f"The lock store at {safe_url} cannot create versatil's tables in {where} "
            f"({reason_of(exc)}): give the role a schema of its own (CREATE SCHEMA name "
            "AUTHORIZATION role, with the role's name) or run `versatil store init` as one "
            "that may."
        ) from None

