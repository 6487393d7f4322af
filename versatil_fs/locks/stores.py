"""Which lock store a lock manager uses: this machine's state directory, or PostgreSQL.

``[store] backend`` picks it (``"local"`` by default: the table under ``$VERSATIL_HOME``). With
``"postgres"`` the table lives on the server at ``[store] url`` under the lock space's name,
``[store] project`` — by default the ``origin`` remote's URL normalised (:func:`project_of`), so
every clone of one repository, on any machine, meets in one lock space. psycopg is imported only
then: the local store's start-up pays nothing for it.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from versatil_fs.errors import ConfigError, GitFailed, UsageError
from versatil_fs.locks.store import LocalStore, LockStore
from versatil_fs.repo import Repository
from versatil_fs.state import StateDir

if TYPE_CHECKING:
    from versatil_fs.config import Config

__all__ = ["hide_password", "open_store", "project_name", "project_of"]


def open_store(
    state: StateDir,
    config: Config | None,
    repo: str | os.PathLike[str] | Repository | None,
) -> LockStore:
    """The store the configuration names, for a lock manager given ``repo`` (a directory in a
    working tree; None or a directory outside one: no path resources and, for PostgreSQL, an
    explicit ``[store] project``). ``config`` None: loaded for that repository."""
    if config is not None and config.store.backend == "local":
        return LocalStore(state)
    found = repo if isinstance(repo, Repository) else None
    if not isinstance(repo, Repository) and repo is not None:
        try:
            found = Repository.find(repo)
        except UsageError:
            found = None
    if config is None:
        from versatil_fs import config as configuration

        root = found.toplevel if found else None
        try:
            config = configuration.load(root, state=state)
        except ConfigError:
            # A broken key elsewhere: the local table can still be read (`versatil locks`,
            # the commit guard); a PostgreSQL user gets the error rather than the wrong table.
            if configuration.store_backend(root, state=state) == "local":
                return LocalStore(state)
            raise
    settings = config.store
    if settings.backend == "local":
        return LocalStore(state)
    repo_found = found
    if not settings.url:
        raise ConfigError(
            'store.backend is "postgres" but store.url is empty: set [store] url (or '
            "VERSATIL_STORE_URL) to the server's libpq URL, e.g. postgresql://host/versatil."
        )
    project = project_name(config, repo_found)
    space = repo_found.lock_space()[0] if repo_found is not None else None
    from versatil_fs.locks.pg_store import PgStore

    return PgStore(
        settings.url, project, local_space=space, restart_grace=settings.restart_grace
    )


def project_name(config: Config, repo: Repository | None) -> str:
    """``[store] project``, or the one the ``origin`` remote gives; a clear error without."""
    if config.store.project:
        return config.store.project
    remote = _origin_url(repo) if repo is not None else None
    if remote:
        return project_of(remote)
    where = f"{repo.toplevel} has no origin remote" if repo is not None else "no repository"
    raise UsageError(
        f"The PostgreSQL lock store needs a project name and {where} to derive it from: "
        'set [store] project = "NAME" in .versatil (or VERSATIL_STORE_PROJECT), the same '
        "on every machine that shares the locks."
    )


def _origin_url(repo: Repository) -> str | None:
    from versatil_fs import git

    # The lock space's repository (a submodule's top superproject): its remote names the project.
    key = repo.lock_space()[0]
    try:
        text = git.output(["--git-dir", key, "config", "--get", "remote.origin.url"], cwd=None)
    except GitFailed:
        return None
    return text.decode("utf-8", "replace").strip() or None


_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>(?!//).+)$")


def project_of(remote: str) -> str:
    """A remote URL as a project name that every spelling of it shares: ``host/owner/repo``.

    ``git@github.com:o/r.git``, ``ssh://git@github.com:22/o/r``, ``https://user@GitHub.com/o/r/``
    all give ``github.com/o/r``: user, port, scheme, a trailing ``.git`` or ``/`` dropped, the
    host lower-cased (the path is kept as typed: some hosts are case-sensitive). A local path
    remote is kept as it is, less ``.git``.
    """
    text = remote.strip()
    host, path = "", text
    if "://" in text:
        parts = urlsplit(text)
        host, path = (parts.hostname or ""), parts.path
    elif (match := _SCP_LIKE.match(text)) and "/" not in match["host"]:
        host, path = match["host"].lower(), match["path"]
    path = path.rstrip("/")
    if path.endswith(".git"):
        path = path[: -len(".git")].rstrip("/")
    return f"{host.lower()}/{path.lstrip('/')}" if host else path


_URL_PASSWORD = re.compile(r"^(?P<head>[a-z][a-z0-9+.-]*://[^/@:?#]*:)[^@/]*(?P<at>@)", re.I)
_PARAM_PASSWORD = re.compile(r"(?P<key>(?:^|[?&\s])password\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^&\s]*)")


def hide_password(url: str) -> str:
    """``url`` with its password (``user:secret@``, ``?password=``, ``password=...``) as ``***``."""
    text = _URL_PASSWORD.sub(r"\g<head>***\g<at>", url)
    return _PARAM_PASSWORD.sub(r"\g<key>***", text)
