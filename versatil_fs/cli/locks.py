"""``versatil lock``, ``unlock``, ``release`` and ``locks``."""

from __future__ import annotations

import sys
from typing import TypeVar

import click
import msgspec

from versatil_fs.cli.common import agent_option, echo, echo_json, json_option
from versatil_fs.errors import NotARepository
from versatil_fs.locks.clock import hms
from versatil_fs.locks.manager import LockManager, Waiting
from versatil_fs.locks.store import expires_wall
from versatil_fs.locks.table import Claim, Grant, Record, Resource, Table, Waiter
from versatil_fs.repo import Repository, default_agent

__all__ = ["lock", "locks", "release", "render", "say_waiting", "unlock"]


def _manager() -> LockManager:
    return LockManager(repo=".")


def say_waiting(waiting: Waiting) -> None:
    """Say once, on stderr, whom a request waits for: the ``on_wait`` the CLI passes to
    ``LockManager.acquire`` (the library itself stays silent)."""
    print(f"versatil: {waiting.sentence()}", file=sys.stderr, flush=True)


@click.command()
@agent_option
@click.option("--read", "read_mode", is_flag=True, help="Take shared read locks instead of write.")
@click.option("--wait", type=float, metavar="S", help="Seconds to wait in the queue.")
@click.option("--ttl", type=float, metavar="S", help="Lease lifetime (default lock_timeout).")
@click.option("--priority", type=int, metavar="N", help="Queue priority (higher first).")
@json_option
@click.argument("resources", nargs=-1, required=True, metavar="RES...")
def lock(
    agent: str | None,
    read_mode: bool,
    wait: float | None,
    ttl: float | None,
    priority: int | None,
    as_json: bool,
    resources: tuple[str, ...],
) -> None:
    """Take locks on paths or kind:name resources; they last until unlock or expiry.

    A path with an unescaped *, ? or [ is a glob, anchored at the repository root
    ('src/**/*.ts'; quote it so the shell leaves it alone; \\* is a literal star).

    Paths must have UTF-8 names (the lock table is JSON): lock the directory holding a file
    whose name is not, and the lock covers it.
    """
    # --wait is checked once, by the lock core (NaN, negative, beyond FOREVER: exit 2). A
    # refusal with --json is printed as data by cli/app.py, as for every --json command.
    lease = _manager().acquire(
        resources, agent=agent, mode="read" if read_mode else "write", wait=wait, ttl=ttl,
        priority=priority, owner="shell", on_wait=say_waiting,
    )
    if as_json:
        # The grant whole, its `fence` included: `export VERSATIL_FENCE=$(versatil lock --json
        # ... | jq .fence)` lets the guard and restore refuse the script once it is superseded.
        echo_json(lease.grant)
        return
    echo(
        f"Locked {_claims(lease.claims)} for {lease.agent} until "
        f"{hms(lease.grant.expires_at)} (lease {lease.id}, fence {lease.fence})."
    )


@click.command()
@agent_option
@json_option
@click.argument("resources", nargs=-1, required=True, metavar="RES...")
def unlock(agent: str | None, as_json: bool, resources: tuple[str, ...]) -> None:
    """Release the agent's locks on these resources."""
    manager = _manager()
    agent = agent or default_agent()
    released = manager.unlock(resources, agent=agent)
    if as_json:
        echo_json({"agent": agent, "released": released})
        return
    echo(f"Released {_claims(released)} held by {agent}.")


@click.command()
@click.option("--agent", required=True, metavar="NAME", help="The agent whose locks to release.")
@json_option
def release(agent: str, as_json: bool) -> None:
    """Force-release every lock an agent holds (its processes keep running)."""
    gone = _manager().release_agent(agent)
    if as_json:
        echo_json({"agent": agent, "released": gone})
        return
    if not gone:
        echo(f"{agent} held no locks.")
        return
    for grant in gone:
        echo(f"Released {_claims(grant.claims)} held by {agent} (lease {grant.id}).")


@click.command()
@click.option("--agent", metavar="NAME", help="Only this agent's locks and requests.")
@click.option(
    "--all", "every_repo", is_flag=True,
    help="Every repository's locks, with a repository column (the default outside one).",
)
@json_option
def locks(agent: str | None, every_repo: bool, as_json: bool) -> None:
    """Show who holds what, and who waits for what in queue order.

    Inside a repository: its locks (from any of its worktrees) and the named resources
    (kind:name, which are machine-wide, so shown in every repository); --all shows every
    repository's. With --json every record carries its repository ("repo", null for a named
    resource) and every lock its fencing token ("fence"; the listing leaves it out to stay
    within 80 columns).
    """
    table = _manager().sweep()
    here = _here()
    space = None if every_repo or here is None else here.lock_space()[0]
    table = Table(
        seq=table.seq,
        fence=table.fence,  # the last token granted, whichever lock space is shown
        locks=[g for g in (_scoped(r, space) for r in table.locks)
               if g is not None and (not agent or g.agent == agent)],
        waiters=[w for w in (_scoped(r, space) for r in table.waiters)
                 if w is not None and (not agent or w.agent == agent)],
    )
    table.waiters.sort(key=lambda w: (-w.priority, w.seq))
    unlocked, window = _unlocked_writes(here)
    if as_json:
        document = msgspec.to_builtins(table)
        for kind in ("locks", "waiters"):
            for record, shown_record in zip(getattr(table, kind), document[kind], strict=True):
                shown_record["repo"] = _repo_of(record)
        document["repo"] = here.key if here is not None else None
        document["all"] = space is None
        document["unlocked_writes"] = unlocked
        document["unlocked_writes_window"] = window
        echo_json(document)
        return
    echo(render(table, repo_column=space is None))
    if unlocked:
        from versatil_fs.monitor import window_phrase

        echo(f"\n{unlocked} unlocked {'write' if unlocked == 1 else 'writes'} in "
             f"{window_phrase(window)} in this repository; "
             "`versatil logs collision-detection`.")


def _here() -> Repository | None:
    try:
        return Repository.find(".")
    except NotARepository:
        return None


_R = TypeVar("_R", Grant, Waiter)


def _scoped(record: _R, space: str | None) -> _R | None:
    """``record`` with only its claims in lock space ``space`` and on named resources (all of
    them when ``space`` is None); None when none is left."""
    if space is None:
        return record
    kept = [c for c in record.claims if not c.resource.is_path or c.resource.repo == space]
    if not kept:
        return None
    return record if len(kept) == len(record.claims) else msgspec.structs.replace(
        record, claims=kept)


def _repo_of(record: Record) -> str | None:
    """The repository (its key) of a record's path claims; None for named resources only."""
    return next((c.resource.repo for c in record.claims if c.resource.is_path), None)


def _unlocked_writes(here: Repository | None) -> tuple[int | None, float]:
    """The monitor's recent count for the current repository (None outside a repository),
    and the window it counts over."""
    from versatil_fs.monitor import RECENT_WINDOW, recent_unlocked_writes  # not on lock's path

    if here is None:
        return None, RECENT_WINDOW
    return recent_unlocked_writes(here), RECENT_WINDOW


def render(table: Table, *, repo_column: bool = False) -> str:
    """The human listing of ``versatil locks``; ``repo_column`` adds each lock's repository
    (``--all``, or outside a repository)."""
    if not table.locks and not table.waiters:
        return "No locks held, nobody waiting."
    lines = []
    if table.locks:
        # The session column only when some lock has one (the harness hooks fill it): most
        # tables have none, and an empty column would only push the resources right.
        longest = max((len(_session(g)) for g in table.locks), default=0)
        width = max(longest, len("SESSION")) if longest else 0

        def session(text: str) -> str:
            return f"{text:<{width}} " if width else ""

        repos = {c.resource: _repository(c.resource) for g in table.locks for c in g.claims}
        repo_width = max(len("REPOSITORY"), *map(len, repos.values())) if repo_column else 0

        def repository(text: str) -> str:
            return f"{text:<{repo_width}} " if repo_column else ""

        lines.append(_row("AGENT", session("SESSION"), "MODE", "RESOURCE", "SINCE", "UNTIL",
                          repository("REPOSITORY")))
        for grant in sorted(table.locks, key=lambda g: g.acquired_at):
            for claim in grant.claims:
                lines.append(
                    _row(grant.agent, session(_session(grant)), claim.mode,
                         _resource(claim.resource), hms(grant.acquired_at), _until(grant),
                         repository(repos[claim.resource]))
                )
    if table.waiters:
        lines.append("")
        lines.append("Waiting, in queue order:")
        for position, waiter in enumerate(table.waiters, 1):
            via = f"session {_session(waiter)}, " if waiter.session else ""
            where = ""
            if repo_column and (key := _repo_of(waiter)) is not None:
                where = f"in {_repository(Resource(repo=key, path='.'))} "
            lines.append(
                f"{position:>3}. {waiter.agent} wants {_claims(waiter.claims)} {where}"
                f"({via}priority {waiter.priority}, since {hms(waiter.since)}, "
                f"gives up at {hms(waiter.deadline)})"
            )
    return "\n".join(lines)


_SESSION_SHOWN = 48  # characters of a session shown in the listing (the JSON has it whole)


def _session(record: Grant | Waiter) -> str:
    text = record.session
    return text if len(text) <= _SESSION_SHOWN else text[: _SESSION_SHOWN - 1] + "…"


def _until(grant: Grant | Waiter) -> str:
    expires = expires_wall(grant)
    return f"while pid {grant.pid} lives" if expires is None else hms(expires)


def _row(*cells: str) -> str:
    agent, session, mode, resource, since, until, repository = cells
    return f"{repository}{agent:<18} {session}{mode:<6} {resource:<32} {since:<9} {until}"


def _repository(resource: Resource) -> str:
    """Where a resource lives, for people: the working tree of its repository (the key is
    the git common directory, ``/x/repo/.git``), or ``(named)`` for a machine-wide one."""
    if not resource.is_path:
        return "(named)"
    key = resource.repo
    return key[: -len("/.git")] if key.endswith("/.git") else key


def _resource(resource: Resource) -> str:
    return str(resource)


def _claims(claims: list[Claim]) -> str:
    return ", ".join(f"{c.resource} ({c.mode})" for c in claims)


