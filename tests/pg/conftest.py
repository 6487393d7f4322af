"""The PostgreSQL tests' fixtures: one private server per test session, a project per test.

Without server binaries or psycopg the tests are skipped with the reason; under ``CI=true`` that
is a failure instead (CI installs both).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg.pg_server import PgServer, find_bindir


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the PostgreSQL tests, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _missing("psycopg is not installed (pip install -e '.[postgres]')")
    bindir = find_bindir()
    if bindir is None:
        _missing("no PostgreSQL server binaries (initdb) on PATH or in /usr/lib/postgresql/*/bin")
    assert bindir is not None
    server = PgServer(bindir)
    try:
        server.init()
        server.start()
        server.sql("CREATE DATABASE versatil")
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_project() -> str:
    """A lock space of this test's own on the shared server."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pg_env(
    pg_server: PgServer, pg_project: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """This test (and every child it starts) on the PostgreSQL store, in its own project."""
    env = {
        "VERSATIL_STORE_BACKEND": "postgres",
        "VERSATIL_STORE_URL": pg_server.url(),
        "VERSATIL_STORE_PROJECT": pg_project,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
