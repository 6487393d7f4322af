"""What an agent reads from versatil, in one or two sentences each: a denied edit (which file,
who holds it through which lock, since and until when, what to do), what it is told at session
start and after a shell command that changed held files, and the fail policy's answer."""

from __future__ import annotations

from versatil_fs.agents.protocol import Verdict
from versatil_fs.errors import LockConflict, VersatilError
from versatil_fs.locks import clock
from versatil_fs.locks.globs import is_glob

__all__ = ["collision_note", "deny_reason", "fail_verdict", "sentence", "start_note"]

MAX_LISTED = 20  # files named in one note; the rest are counted


def deny_reason(exc: LockConflict, path: str) -> str:
    """What a denied agent reads: which file, who holds it through which lock, since and until
    when, and what to do — in two sentences."""
    holder = exc.holders[0] if exc.holders else None
    if holder is None:
        return f"versatil denied this edit of {path}: {exc}"
    since = f" since {clock.hms(exc.since)}" if exc.since is not None else ""
    if exc.until is not None:
        until = f"until {clock.hms(exc.until)} unless released sooner"
    else:
        until = "until that agent's session or process ends"
    through = "" if exc.resource in ("", path) else f" through its lock on {exc.resource}"
    if exc.resource and is_glob(exc.resource):
        # A pattern: say which file of it is this one (the witness both cover).
        through = f" through its lock on `{exc.resource}`, which covers {path},"
    if holder.queued:
        held = f"{holder.agent} is queued for it ahead of you{through}{since}"
    else:
        held = f"{holder.agent} holds it{through}{since}, {until}"
    return (
        f"versatil denied this edit: {path} is being changed by another agent; {held}. "
        "Do not edit it now: work on something else and retry later, or ask the user "
        "(`versatil locks` shows who holds and waits for what)."
    )


def fail_verdict(why: str, on_error: str) -> Verdict:
    """The fail policy's answer when versatil could not decide."""
    if on_error == "deny":
        return Verdict(deny=(
            f"versatil could not check this tool call ({why}) and its [agents] on_error "
            "setting is \"deny\"; ask the user to look at `versatil locks`."
        ))
    return Verdict(warning=(
        f"versatil could not check this tool call ({why}); it was let through unchecked."
    ))


def sentence(exc: Exception) -> str:
    text = " ".join(str(exc).split()).rstrip(".")
    if isinstance(exc, VersatilError):
        return text
    return f"internal error {type(exc).__name__}: {text}"


def _listed(pairs: list[tuple[str, str]]) -> str:
    named = ", ".join(f"{path} ({agent})" for path, agent in pairs[:MAX_LISTED])
    more = f" and {len(pairs) - MAX_LISTED} more" if len(pairs) > MAX_LISTED else ""
    return named + more


def start_note(agent: str, held: list[tuple[str, str]]) -> str:
    """Session start: who this session is, and ``held`` — (path, agent) other agents hold."""
    return (
        f"versatil: you work here as agent {agent}. Other agents hold these files in this "
        f"repository: {_listed(held)}. An edit of a held file is denied until it is released; "
        "files you edit are claimed for you as you edit them."
    )


def collision_note(what: str, collisions: list[tuple[str, str]]) -> str:
    """After ``what`` ("Your last command") changed files other agents hold: (path, holder)."""
    return (
        f"versatil: {what} changed files other agents hold: {_listed(collisions)}. Their work "
        "may be overwritten: tell the user, and do not change these files again until they are "
        "released (`versatil locks` shows who holds what)."
    )
