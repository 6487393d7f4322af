"""``versatil lock``, ``unlock``, ``release`` and ``locks``."""

from __future__ import annotations

import click
import msgspec

from versatil_fs.cli.common import agent_option, echo, echo_json, json_option
from versatil_fs.errors import Deadlock, LockConflict
from versatil_fs.locks.clock import hms
from versatil_fs.locks.manager import LockManager
from versatil_fs.locks.store import expires_wall
from versatil_fs.locks.table import Claim, Grant, Resource, Table, Waiter
from versatil_fs.repo import default_agent

__all__ = ["lock", "locks", "release", "render", "unlock"]


def _manager() -> LockManager:
    return LockManager(repo=".")


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

    Paths must have UTF-8 names (the lock table is JSON): lock the directory holding a file
    whose name is not, and the lock covers it.
    """
    # --wait is checked once, by the lock core (NaN, negative, beyond FOREVER: exit 2).
    try:
        lease = _manager().acquire(
            resources, agent=agent, mode="read" if read_mode else "write", wait=wait, ttl=ttl,
            priority=priority, owner="shell",
        )
    except (LockConflict, Deadlock) as refusal:
        # A refusal is an answer, not a failure: a script asking for --json gets who holds
        # what as data on stdout; the sentence still goes to stderr and the exit code is 1.
        if as_json:
            echo_json(refusal.as_data())
        raise
    if as_json:
        echo_json(lease.grant)
        return
    echo(
        f"Locked {_claims(lease.claims)} for {lease.agent} until "
        f"{hms(lease.grant.expires_at)} (lease {lease.id})."
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
@json_option
def locks(agent: str | None, as_json: bool) -> None:
    """Show who holds what, and who waits for what in queue order."""
    table = _manager().sweep()
    if agent:
        table = Table(
            seq=table.seq,
            locks=[g for g in table.locks if g.agent == agent],
            waiters=[w for w in table.waiters if w.agent == agent],
        )
    table.waiters.sort(key=lambda w: (-w.priority, w.seq))
    unlocked = _unlocked_writes()
    if as_json:
        document = msgspec.to_builtins(table)
        document["unlocked_writes"] = unlocked
        echo_json(document)
        return
    echo(render(table))
    if unlocked:
        echo(f"\n{unlocked} unlocked write(s) recorded in this repository by the monitor; "
             "see `versatil logs collision-detection --filter unlocked-write`.")


def _unlocked_writes() -> int | None:
    """The monitor's count for the current repository (None outside a repository)."""
    from versatil_fs.errors import NotARepository
    from versatil_fs.repo import Repository

    try:
        repo = Repository.find(".")
    except NotARepository:
        return None
    from versatil_fs.monitor import unlocked_write_count  # not on `lock`'s path

    return unlocked_write_count(repo)


def render(table: Table) -> str:
    """The human listing of ``versatil locks``."""
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

        lines.append(_row("AGENT", session("SESSION"), "MODE", "RESOURCE", "SINCE", "UNTIL"))
        for grant in sorted(table.locks, key=lambda g: g.acquired_at):
            for claim in grant.claims:
                lines.append(
                    _row(grant.agent, session(_session(grant)), claim.mode,
                         _resource(claim.resource), hms(grant.acquired_at), _until(grant))
                )
    if table.waiters:
        lines.append("")
        lines.append("Waiting, in queue order:")
        for position, waiter in enumerate(table.waiters, 1):
            via = f"session {_session(waiter)}, " if waiter.session else ""
            lines.append(
                f"{position:>3}. {waiter.agent} wants {_claims(waiter.claims)} "
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
    agent, session, mode, resource, since, until = cells
    return f"{agent:<18} {session}{mode:<6} {resource:<32} {since:<9} {until}"


def _resource(resource: Resource) -> str:
    return str(resource)


def _claims(claims: list[Claim]) -> str:
    return ", ".join(f"{c.resource} ({c.mode})" for c in claims)


