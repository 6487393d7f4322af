"""``versatil hook install | uninstall | check``: the git pre-commit guard.

``check`` runs on every commit: this module imports nothing beyond click and
:mod:`versatil_fs.hook`, which loads the lock manager only when there is a state directory.
"""

from __future__ import annotations

import sys

import click

from versatil_fs import hook as guard
from versatil_fs.cli.common import echo, echo_json, json_option

__all__ = ["check", "check_refs", "hook", "install", "uninstall"]


@click.group()
def hook() -> None:
    """The git pre-commit guard against committing files other agents hold."""


@hook.command()
@json_option
@click.pass_context
def check(ctx: click.Context, as_json: bool) -> None:
    """Refuse (exit 1) when a staged file is write-locked by another agent.

    The committer is $VERSATIL_AGENT, else git config versatil.agent, else a human, whom
    every write lock binds. Read locks never block a commit. Under the pre-commit framework
    (PRE_COMMIT=1) it also refuses while another agent holds a write lock on an unstaged file
    the framework has stashed for this commit.
    """
    result = guard.check(".")
    if as_json:
        from versatil_fs.events import printable

        # Staged names that are not UTF-8 come from git as bytes (os.fsdecode keeps them as
        # surrogate escapes, which JSON cannot carry): printed as `\xff`, as in the log.
        echo_json(printable(_check_document(result)))
    elif not result.allowed:
        sys.stderr.write(guard.refusal(result) + "\n")
    if not result.allowed:
        ctx.exit(1)


def _check_document(result: guard.CheckResult) -> dict[str, object]:
    """What ``hook check --json`` prints: the decision, and each file that stands in its way."""
    return {
        "allowed": result.allowed,
        "committer": result.committer,
        "staged": len(result.staged),
        "blocked": [
            {
                "path": b.staged.path,
                "change": b.staged.change,
                "agent": b.grant.agent,
                "lock": str(b.claim.resource),
                "owner": b.grant.owner,
                "pid": b.grant.pid,
                "since": b.grant.acquired_at,
                "until": b.grant.expires_at,
            }
            for b in result.blocked
        ],
        "stashed": [
            {
                "path": b.staged.path,
                "agent": b.grant.agent,
                "lock": str(b.claim.resource),
                "since": b.grant.acquired_at,
                "until": b.grant.expires_at,
            }
            for b in result.stashed
        ],
        # $VERSATIL_FENCE as presented, and the staged files a newer lock superseded
        # it on (each with that lock's holder and token).
        "fence": result.fence,
        "superseded": [
            {
                "path": s.path,
                "change": s.change,
                "agent": s.grant.agent,
                "lock": str(s.claim.resource),
                "fence": s.grant.fence,
                "since": s.grant.acquired_at,
            }
            for s in result.superseded
        ],
    }


@hook.command("check-refs", hidden=True)
@click.pass_context
def check_refs(ctx: click.Context) -> None:
    """The strict guard's check: the reference-transaction hook hands it the "<old> <new>
    <ref>" lines of branch updates on stdin; refuses (exit 1) when they change a file another
    agent holds a write lock on."""
    from versatil_fs.hook import strict

    # versatil_fs.cli.main hands this command to strict.main before click loads; this is the
    # same call for anyone running the click application itself.
    ctx.exit(strict.main([]))


@hook.command()
@click.option("--force", is_flag=True, help="Rewrite the hook even if an installed copy differs.")
@click.option(
    "--strict",
    is_flag=True,
    help="Also install git's reference-transaction hook (git >= 2.28), which refuses commits "
    "that skip pre-commit: commit --no-verify, cherry-pick, merge, rebase, am.",
)
def install(force: bool, strict: bool) -> None:
    """Install the pre-commit hook (honours core.hooksPath; guards every worktree).

    An existing pre-commit hook is kept and runs first; installing twice changes nothing, and
    so does installing where the pre-commit framework already runs the guard. With a
    .pre-commit-config.yaml present it warns what the framework's stash does to files other
    agents are writing. --strict also refuses, for every branch update, a commit range that
    changes a file another agent holds a write lock on (other refs are never checked).
    """
    echo(guard.install(".", force=force, strict=strict))


@hook.command()
def uninstall() -> None:
    """Remove the pre-commit hook (and the --strict one) and put back what they replaced,
    byte for byte."""
    echo(guard.uninstall("."))
