"""``versatil store init``: create or migrate versatil's tables on the PostgreSQL lock store."""

from __future__ import annotations

import click

from versatil_fs.cli.common import echo

__all__ = ["init", "store"]


@click.group()
def store() -> None:
    """The lock store ([store] in the configuration): local, or PostgreSQL for several machines."""


@store.command()
def init() -> None:
    """Create versatil's tables on the [store] url server, or migrate them to this version.

    Not needed before first use (the first lock creates them); for a role that may create the
    tables when the agents' role may not, or to migrate at a time of your choosing.
    """
    from versatil_fs import config as configuration
    from versatil_fs.errors import ConfigError, NotARepository
    from versatil_fs.repo import Repository

    try:
        root = Repository.find(".").toplevel
    except NotARepository:
        root = None
    settings = configuration.load(root).store
    if settings.backend != "postgres" or not settings.url:
        raise ConfigError(
            'versatil store init needs store.backend = "postgres" and store.url (or '
            "VERSATIL_STORE_BACKEND and VERSATIL_STORE_URL); the local store needs no set-up."
        )
    from versatil_fs.locks.pg_store import PG_SCHEMA_VERSION, PgStore

    pg = PgStore(settings.url, settings.project or "-")
    found = pg.init_schema()
    where = pg.safe_url
    if found == 0:
        echo(f"Created versatil's tables (schema version {PG_SCHEMA_VERSION}) at {where}.")
    elif found < PG_SCHEMA_VERSION:
        echo(f"Migrated versatil's tables at {where} from schema version {found} to "
             f"{PG_SCHEMA_VERSION}.")
    else:
        echo(f"versatil's tables at {where} are up to date (schema version {found}).")
