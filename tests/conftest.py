"""Fixtures every test shares: an isolated environment, a real git repository, child processes.

The autouse fixture gives each test its own ``VERSATIL_HOME`` (not yet created, so tests can
check how versatil creates it), its own ``HOME`` and git identity, and removes every variable
that could leak the developer's own setup into a test (``VERSATIL_AGENT``, ``VERSATIL_FAULT``,
the user's and system's git config, ``GIT_DIR`` and friends).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `from integration.helpers import ...` works from any test module, whatever the package layout.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from integration.helpers import Spawner, commit_files, make_git_repo  # noqa: E402

_LEAKY_VARIABLES = (
    "VERSATIL_AGENT",
    "VERSATIL_FAULT",
    "VERSATIL_CONFIG",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_CEILING_DIRECTORIES",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh VERSATIL_HOME (returned, not created) and HOME per test; no leaking variables."""
    base = tmp_path_factory.mktemp("env", numbered=True)
    home = base / "home"
    home.mkdir()
    versatil_home = base / "versatil-home"
    for name in list(os.environ):
        if name.startswith("VERSATIL_") or name in _LEAKY_VARIABLES:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VERSATIL_HOME", str(versatil_home))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Versatil Test")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "test@versatil.invalid")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Versatil Test")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "test@versatil.invalid")
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    return versatil_home


@pytest.fixture
def versatil_home(isolated_env: Path) -> Path:
    """This test's VERSATIL_HOME (may not exist yet)."""
    return isolated_env


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A real git repository (branch ``main``) with one commit; its resolved root path."""
    return make_git_repo(tmp_path / "repo")


@pytest.fixture
def repo(git_repo: Path, request: pytest.FixtureRequest) -> Path:
    """``git_repo`` with the test module's ``FILES`` (relative path -> text) committed in it.

    A module whose tests need a different repository defines its own ``repo`` fixture.
    """
    return commit_files(git_repo, request.module.FILES)


@pytest.fixture
def spawn() -> Iterator[Spawner]:
    """Start child processes (``spawn(code, *args, cwd=...)`` runs ``python -c code``).

    Every child, with its process group, is SIGKILLed and reaped when the test ends.
    """
    spawner = Spawner()
    try:
        yield spawner
    finally:
        spawner.close()


@pytest.fixture
def tester_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """VERSATIL_HOME under ``tmp_path``, agent ``Tester``, no ``VERSATIL_FAULT`` from the shell.

    Modules use it with ``pytestmark = pytest.mark.usefixtures("tester_env")``.
    """
    monkeypatch.setenv("VERSATIL_HOME", str(tmp_path / "versatil-home"))
    monkeypatch.delenv("VERSATIL_FAULT", raising=False)
    monkeypatch.setenv("VERSATIL_AGENT", "Tester")


@pytest.fixture
def lock_manager(git_repo: Path) -> Iterator[object]:
    """A LockManager on ``git_repo``; every lease it still holds is released at teardown."""
    from versatil_fs import LockManager

    manager = LockManager(repo=git_repo)
    try:
        yield manager
    finally:
        manager.close()  # releases whatever it still holds


@pytest.fixture
def manager(repo: Path, lock_manager: object) -> object:
    """``lock_manager``, made once the module's ``repo`` holds its files."""
    return lock_manager
