"""``versatil config``: the effective configuration and where each value came from."""

from __future__ import annotations

from pathlib import Path

import click
import msgspec

from versatil_fs import config as configuration
from versatil_fs.cli.common import echo, echo_json, json_option
from versatil_fs.errors import ConfigError, NotARepository
from versatil_fs.repo import Repository

__all__ = ["config", "show"]


@click.group()
def config() -> None:
    """Inspect the configuration (.versatil, ~/.versatil/config.toml, VERSATIL_* variables)."""


@config.command()
@json_option
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Preview a command-line override, e.g. --set collision_detection.lock_timeout=10.",
)
def show(as_json: bool, settings: tuple[str, ...]) -> None:
    """Print every effective value and where it came from.

    Outside a git repository only the user file, the environment and the defaults apply.
    """
    effective = configuration.load(_repository_root(), overrides=_parse_settings(settings))
    sources = effective.sources()
    # The store's URL is shown without its password (a terminal, a CI log, a pasted issue).
    shown_url = _without_password(effective.store.url)
    if as_json:
        # Shaped like the files: the harness settings sit in `agents` beside the agent tables.
        tree = msgspec.to_builtins(effective)
        tree["agents"] = {**tree.pop("harness"), **tree["agents"]}
        tree["store"]["url"] = shown_url
        echo_json({"config": tree, "sources": sources})
        return
    flat = {**effective.flat(), "store.url": shown_url}
    rows = [
        (key, configuration.format_value(value, limit=60), sources[key])
        for key, value in flat.items()
    ]
    key_width = max(len("key"), *(len(row[0]) for row in rows))
    value_width = max(len("value"), *(len(row[1]) for row in rows))
    echo(f"{'key':<{key_width}}  {'value':<{value_width}}  source")
    for key, value, source in rows:
        echo(f"{key:<{key_width}}  {value:<{value_width}}  {source}")


def _without_password(url: str) -> str:
    if not url:
        return url
    from versatil_fs.locks.stores import hide_password

    return hide_password(url)


def _repository_root() -> Path | None:
    try:
        return Repository.find(".").toplevel
    except NotARepository:
        return None


def _parse_settings(settings: tuple[str, ...]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for setting in settings:
        key, equals, value = setting.partition("=")
        if not equals or not key.strip():
            raise ConfigError(
                f"--set {setting!r} should be KEY=VALUE, "
                "e.g. --set parallel.max_concurrent_agents=3."
            )
        overrides[key.strip()] = value
    return overrides
