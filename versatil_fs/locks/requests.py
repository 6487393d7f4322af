"""What a caller asks the lock manager for, checked before anything is written.

Resources are resolved to their canonical keys (a path in any spelling, in the innermost
repository that holds it; a ``kind:name``), claims deduplicated, and the wait, lifetime,
priority, agent name and session refused with one sentence (:class:`UsageError`, exit 2) when
the lock table could not hold them or they make no sense. :func:`new_request` turns the checked
arguments into the :class:`~versatil_fs.locks.table.Waiter` that enters the queue.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from versatil_fs.errors import UsageError
from versatil_fs.locks import clock
from versatil_fs.locks.table import (
    FOREVER,
    MAX_PRIORITY,
    MAX_TIME,
    Claim,
    Mode,
    Owner,
    Resource,
    Waiter,
    check_session,
    new_id,
)
from versatil_fs.repo import PATH_MAX, Repository, parse_named, shown

if TYPE_CHECKING:
    from versatil_fs.config import Config
    from versatil_fs.locks.store import LockStore

__all__ = ["ResourceSpec", "check_seconds", "check_text", "claims", "new_request", "resolve"]

ResourceSpec = str | os.PathLike[str] | Resource


def resolve(
    spec: ResourceSpec, repo: Callable[[], Repository], *, base: Path | None
) -> Resource:
    """The canonical resource for a path (any spelling) or a ``kind:name`` string.

    ``repo`` is called only for a path, so named resources work outside a repository; a
    relative path is read against ``base``.
    """
    if isinstance(spec, Resource):
        return spec
    text = os.fspath(spec)
    if not isinstance(text, str):
        text = os.fsdecode(text)
    named = parse_named(text)
    if named is not None:
        kind, name = named
        if not name.strip():
            raise UsageError(
                f"The named resource {text!r} has an empty name; write it as {kind}:NAME."
            )
        check_text("resource name", text)
        return Resource(name=f"{kind}:{name}")
    if _GLOB_CHARS.intersection(text):
        return _resolve_pattern(text, repo, base)
    return _resolve_path(text, repo, base)


def _resolve_path(text: str, repo: Callable[[], Repository], base: Path | None) -> Resource:
    found = repo()
    owner, path = found.innermost(found.relpath(text, cwd=base))
    key, full = owner.lock_path(path)
    # A file unless it is a directory now or was written as one (`src/new/`): only a pattern
    # asks (see Resource.file), and a file about to be created is a file.
    # Looked up where the path resolved to (the spelling may climb through names that do not
    # exist: `src/x/../api` is src/api, as relpath reads it).
    file = path != "." and not text.endswith("/") and not (owner.toplevel / path).is_dir()
    return Resource(repo=key, path=full, file=file)


_GLOB_CHARS = frozenset("*?[")


def _resolve_pattern(text: str, repo: Callable[[], Repository], base: Path | None) -> Resource:
    """A path argument holding ``*``, ``?`` or ``[``: a glob when one of them is unescaped,
    else (every one escaped) the plain path it spells.

    The literal directories before the first wildcard segment are resolved like any path (the
    caller's directory, symlinks, ``..``, the submodule that holds them); the rest is kept as
    typed, under that directory escaped, so a user in ``src/`` typing ``*.py`` reserves
    ``src/*.py`` of the lock space ``src`` is in.
    """
    from versatil_fs.locks import globs  # only now: a plain path never loads the glob modules

    check_text("pattern", text)
    if not globs.is_glob(text):
        # Only escaped specials: the plain path with those characters in it (`a\*b` is the
        # file `a*b`); a path without specials keeps its backslashes, as it always has.
        return _resolve_path(_unescape(text), repo, base)
    absolute = text.startswith("/")
    # `./` and doubled slashes are spellings, not segments: dropped so that one pattern typed
    # two ways is one resource.
    parts = [p for p in text.split("/") if p not in ("", ".")]
    literal: list[str] = []
    for part in parts:
        if globs.is_glob(part):
            break
        if (len(part) - len(part.rstrip("\\"))) % 2:
            raise UsageError(
                f"The pattern {shown(text)!r} has a backslash that escapes nothing "
                "(a / cannot be escaped)."
            )
        literal.append(part)
    rest = parts[len(literal):]
    directory = "/".join(_unescape(p) for p in literal)
    if absolute:
        directory = "/" + directory
    found = repo()
    owner, path = found.innermost(found.relpath(directory or ".", cwd=base))
    key, full = owner.lock_path(path)
    pattern = "/".join(rest)
    if full != ".":
        pattern = f"{globs.escape(full)}/{pattern}"
    # Checked (one sentence, exit 2), and spelled as the parser normalises it (`a**b` is
    # `a*b`, `**/**` is `**`), so equal patterns are one resource.
    try:
        parsed = globs.parse(pattern)
    except UsageError as exc:
        # Named as typed: the anchored spelling (`src/src/[a` typed in src/) puzzles.
        sentence = str(exc).replace(repr(pattern), repr(shown(text)), 1)
        raise UsageError(f"{sentence[:1].upper()}{sentence[1:]}.") from None
    pattern = "/".join(segment.text for segment in parsed.segments) or "."
    if parsed.path is not None:
        return Resource(repo=key, path=parsed.path)
    return Resource(repo=key, path=pattern, glob=True)


def _unescape(text: str) -> str:
    """``text`` with glob escapes read: ``\\x`` is ``x``."""
    out: list[str] = []
    escaped = False
    for c in text:
        if c == "\\" and not escaped:
            escaped = True
            continue
        escaped = False
        out.append(c)
    return "".join(out)


def claims(
    writes: Iterable[ResourceSpec],
    reads: Iterable[ResourceSpec],
    resolve: Callable[[ResourceSpec], Resource],
) -> list[Claim]:
    """Claims for the given resources, deduplicated and sorted; a resource both read and
    written is claimed for writing."""
    # By name (Resource.key): `src/x` and `src/x/` are one resource, claimed as the directory
    # (the wider reading) when either spelling says so.
    by_key: dict[tuple[str, str, str, bool], tuple[Resource, Mode]] = {}
    for mode, specs in (("read", reads), ("write", writes)):
        for spec in specs:
            resource = resolve(spec)
            seen = by_key.get(resource.key)
            if seen is not None:
                if seen[0].file and not resource.file:
                    seen = (resource, seen[1])
                resource, mode = seen[0], "write" if "write" in (seen[1], mode) else "read"
            by_key[resource.key] = (resource, mode)  # type: ignore[assignment]
    if not by_key:
        raise UsageError("Nothing to lock: name at least one path or kind:name resource.")
    return [Claim(resource, mode) for resource, mode in sorted(by_key.values())]


def new_request(
    claims: list[Claim],
    config: Config,
    store: LockStore,
    *,
    agent: str,
    wait: float | None,
    ttl: float | None,
    priority: int | None,
    owner: Owner,
    session: str,
) -> tuple[Waiter, float]:
    """The request these arguments make, once they are checked, and its wait budget in
    seconds (``None``: the configured default). Nothing is written: a bad argument raises
    :class:`UsageError` first."""
    check_text("agent name", agent)
    if problem := check_session(session):
        raise UsageError(f"The session {session[:60]!r} {problem}.")
    settings = config.collision_detection
    # The one check of a wait budget (the CLI passes --wait through unchecked).
    if wait is None:
        wait = config.default_wait
    else:
        wait = check_seconds("wait (--wait)", wait, forever=True)
    ttl = settings.lock_timeout if ttl is None else check_seconds("lease lifetime (ttl)", ttl)
    if ttl <= 0:
        raise UsageError(f"A lease lifetime must be positive, got {ttl} seconds.")
    rank = config.priority_of(agent) if priority is None else priority
    if abs(rank) > MAX_PRIORITY:
        raise UsageError(
            f"A priority must be between {-MAX_PRIORITY} and {MAX_PRIORITY}, got {rank}."
        )
    now = clock.CLOCK.wall()
    holder_id = store.holder_id()
    request = Waiter(
        id=new_id(), agent=agent, session=session, claims=claims, owner=owner,
        pid=os.getpid(), host=_host(), priority=rank, seq=0, since=now,
        deadline=min(now + wait, MAX_TIME), ttl=ttl,
        holder=holder_id, lease_file=store.holder_file(holder_id),
    )
    return request, wait


def check_seconds(what: str, value: float, *, forever: bool = False) -> float:
    """A duration from a caller, checked: never NaN or negative, infinity only where it means
    "wait for ever" (stored as FOREVER), never beyond FOREVER."""
    if math.isnan(value) or value < 0:
        raise UsageError(f"The {what} must be zero or more seconds, got {value}.")
    if math.isinf(value) and forever:
        return FOREVER
    if value > FOREVER:
        raise UsageError(f"The {what} must be at most {FOREVER:.0e} seconds, got {value}.")
    return float(value)


def check_text(what: str, text: str) -> None:
    """Refuse a name the JSON lock table cannot hold (not UTF-8), or an absurdly long one."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise UsageError(
            f"The {what} {shown(text)} is not valid UTF-8; versatil keeps locks in a JSON "
            "table and only takes names that are."
        ) from None
    if size > PATH_MAX:
        raise UsageError(f"The {what} {shown(text)[:60]}... is {size} bytes; at most {PATH_MAX}.")


def _host() -> str:
    return os.uname().nodename if hasattr(os, "uname") else ""
