"""Glob reservations: what a pattern covers, and whether two patterns overlap. Pure, no I/O.

A *pattern* is a resource an agent reserves: a glob such as ``src/**/*.ts`` or a plain path such
as ``src/api`` (a plain path is a pattern with no wildcard, so every pair goes through the same
functions). The rules, as the README documents them:

* Anchored at the repository root: ``*.py`` is only the top directory's files; write ``**/*.py``
  for any depth. No leading ``/`` (patterns are repository-relative), no ``.``/``..`` segment,
  no empty segment, no trailing slash; ``.`` alone is the whole repository.
* ``*`` matches any run of characters within one segment (a leading dot too, as in git), ``?``
  one character, ``[abc]``, ``[a-z]``, ``[!a]`` (or ``[^a]``) one character of a class; ``]``
  first in a class is a member, ``-`` first or last is a member. ``\\`` makes the next character
  literal, everywhere: ``a\\*b`` is the file ``a*b``, a backslash in a name is ``\\\\``.
* ``**`` as a whole segment (or any run of two or more stars alone in a segment) matches zero or
  more segments. Elsewhere stars are stars: ``a**b`` is ``a*b`` (git treats it the same way).
* There is no ``!`` negation of a whole pattern: reservations only add.
* Case-sensitive unless ``ignorecase`` (git's ``core.ignorecase``), which folds ASCII letters.
* A pattern *covers* every path it matches and everything under those paths, the way a lock on
  a directory covers its files: ``src/*`` covers ``src/api/users.py``.

Whether a resource is a pattern at all is the caller's decision: named resources
(``kind:name``, such as ``db:users``) are never patterns; only path resources are parsed here.

``overlap(a, b)`` is exact: it returns a *witness*, a real repository path both patterns cover,
or ``None`` when there is none. It searches over segment positions — a globstar reads zero or
more segments, a pattern that has run out has matched an ancestor directory of the witness and
covers whatever follows — and within a segment asks ``glob_segments.meet`` for a common name.
Parsed patterns and segment meetings are cached, so deciding a pair builds no set and compiles
nothing.
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache
from typing import Final

from versatil_fs.errors import UsageError
from versatil_fs.locks.glob_segments import (
    ANY,
    STAR,
    CharSet,
    Segment,
    Token,
    fold,
    meet,
)

__all__ = [
    "MAX_PATTERN",
    "MAX_SEGMENT",
    "Pattern",
    "covers",
    "describe",
    "escape",
    "is_glob",
    "matches",
    "overlap",
    "parse",
    "plain",
    "top_name",
    "witness_message",
]

_WILDCARDS: Final = frozenset("*?[")
# Linux's PATH_MAX and NAME_MAX, in characters. Beyond them a pattern is a mistake (or an
# attack): a product search grows with the lengths of both segments, and these bound it
# (two 255-character segments meet, uncached, in tens of milliseconds at worst).
MAX_PATTERN: Final = 4096
MAX_SEGMENT: Final = 255
# The witness for two patterns that both cover the whole repository: any name would do.
_ANY_NAME: Final = "a"


class Pattern:
    """A parsed pattern: its text and its segments. Frozen; equal and hashed by its text.

    ``path`` is the plain path it stands for when it has no wildcard (``"."`` for the whole
    repository), else ``None``. Build one with ``parse`` (cached) or ``plain``.
    """

    __slots__ = ("_hash", "path", "segments", "text")

    def __init__(self, text: str, segments: tuple[Segment, ...], path: str | None) -> None:
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "segments", segments)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "_hash", hash(("pattern", text)))

    text: str
    segments: tuple[Segment, ...]
    path: str | None
    _hash: int

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Pattern is frozen")

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pattern) and self.text == other.text

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"

    @property
    def is_glob(self) -> bool:
        return self.path is None


def is_glob(text: str) -> bool:
    """Does ``text`` hold an unescaped ``*``, ``?`` or ``[``? (A backslash escapes the next
    character.) Call it on path resources only: a named resource (``kind:name``) is never a glob,
    whatever its name holds — the caller tells the two apart."""
    if not _WILDCARDS.intersection(text):
        return False
    escaped = False
    for c in text:
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c in _WILDCARDS:
            return True
    return False


def escape(path: str) -> str:
    """The pattern that stands for exactly the plain path ``path`` (its specials escaped)."""
    return "".join("\\" + c if c in "*?[\\" else c for c in path)


def _bad(text: str, why: str) -> UsageError:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return UsageError(f"the pattern {shown!r} {why}")


@lru_cache(maxsize=8192)
def parse(text: str) -> Pattern:
    """Parse ``text`` (cached). Raises ``UsageError`` with one sentence when it is malformed."""
    if not text:
        raise UsageError("an empty pattern names no path; use . for the whole repository")
    if text == ".":
        return Pattern(text, (), ".")
    if len(text) > MAX_PATTERN:
        raise _bad(text, f"is longer than {MAX_PATTERN} characters")
    if text.startswith("/"):
        raise _bad(text, "starts with /; patterns are relative to the repository root")
    if text.endswith("/"):
        raise _bad(text, "ends with /; drop it (a pattern covers everything under what it "
                         "matches)")
    segments: list[Segment] = []
    for raw in text.split("/"):
        try:
            segment = _segment(raw)
        except _Malformed as why:
            raise _bad(text, str(why)) from None
        if segment.globstar and segments and segments[-1].globstar:
            continue  # `**/**` matches what `**` does
        segments.append(segment)
    path = None
    if all(s.literal is not None for s in segments):
        path = "/".join(s.literal for s in segments if s.literal is not None)
    return Pattern(text, tuple(segments), path)


@lru_cache(maxsize=8192)
def plain(path: str) -> Pattern:
    """The pattern of the plain repository path ``path`` taken verbatim (no escapes read):
    ``"."`` or names joined by ``/``, as the lock table keys paths."""
    if path == ".":
        return parse(".")
    names = path.split("/")
    if any(name in ("", ".", "..") for name in names):
        raise UsageError(f"{path!r} is not a repository-relative path")
    segments = tuple(Segment(escape(n), tuple(_literal(c) for c in n)) for n in names)
    return Pattern(escape(path), segments, path)


class _Malformed(Exception):
    """Why a segment is malformed; ``parse`` names the whole pattern in the sentence."""


@lru_cache(maxsize=8192)
def _segment(raw: str) -> Segment:
    # Cached on its own: the same few segments (`src`, `**`, `*.ts`) recur across patterns.
    if not raw:
        raise _Malformed("has an empty segment (two slashes in a row)")
    if len(raw) > MAX_SEGMENT:
        raise _Malformed(f"has a segment longer than {MAX_SEGMENT} characters")
    if len(raw) >= 2 and raw.count("*") == len(raw):
        return Segment("**", (STAR,), globstar=True)
    tokens: list[Token] = []
    spelled: list[str] = []  # the normalised text: the segment's identity
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\":
            if i + 1 == len(raw):
                raise _Malformed("has a backslash that escapes nothing (a / cannot be escaped)")
            tokens.append(_literal(raw[i + 1]))
            spelled.append(raw[i:i + 2])
            i += 2
        elif c == "*":
            if not tokens or tokens[-1] is not STAR:  # `a**b` is `a*b`
                tokens.append(STAR)
                spelled.append("*")
            i += 1
        elif c == "?":
            tokens.append(CharSet((), negated=True))
            spelled.append("?")
            i += 1
        elif c == "[":
            end, token = _char_class(raw, i)
            tokens.append(token)
            spelled.append(raw[i:end])
            i = end
        else:
            tokens.append(_literal(c))
            spelled.append(c)
            i += 1
    segment = Segment("".join(spelled), tuple(tokens))
    if segment.literal in (".", ".."):
        raise _Malformed(f"has a {segment.literal!r} segment; patterns name paths inside the "
                         "repository, from its root")
    return segment


@lru_cache(maxsize=1024)
def _literal(c: str) -> CharSet:
    return CharSet(((ord(c), ord(c)),), literal=c)


def _char_class(raw: str, start: int) -> tuple[int, CharSet]:
    """The class opening at ``raw[start]`` (``[``): the index after its ``]``, and its set."""
    i = start + 1
    negated = i < len(raw) and raw[i] in "!^"
    if negated:
        i += 1
    ranges: list[tuple[int, int]] = []
    first = True
    while True:
        if i >= len(raw):
            raise _Malformed("has a [ that is never closed (write \\[ for a literal [)")
        c = raw[i]
        if c == "]" and not first:
            return i + 1, CharSet(tuple(ranges), negated=negated)
        first = False
        lo, i = _class_char(raw, i)
        if i + 1 < len(raw) and raw[i] == "-" and raw[i + 1] != "]":
            hi, i = _class_char(raw, i + 1)
            if hi < lo:
                raise _Malformed(f"has the range {chr(lo)}-{chr(hi)}, whose end comes before "
                                 "its start")
            ranges.append((lo, hi))
        else:
            ranges.append((lo, lo))


def _class_char(raw: str, i: int) -> tuple[int, int]:
    if raw[i] == "\\":
        if i + 1 == len(raw):
            raise _Malformed("has a [ that is never closed (write \\[ for a literal [)")
        return ord(raw[i + 1]), i + 2
    return ord(raw[i]), i + 1


def _pattern(p: Pattern | str) -> Pattern:
    return p if isinstance(p, Pattern) else parse(p)


def _names(path: str) -> list[str]:
    return [] if path == "." else path.split("/")


def _reached(segments: tuple[Segment, ...], states: set[int]) -> set[int]:
    # A globstar also matches zero segments: whatever follows it is reached at once.
    todo = list(states)
    while todo:
        i = todo.pop()
        if i < len(segments) and segments[i].globstar and i + 1 not in states:
            states.add(i + 1)
            todo.append(i + 1)
    return states


def _run(pattern: Pattern, path: str, ignorecase: bool, *, prefix: bool) -> bool:
    segments = pattern.segments
    end = len(segments)
    states = _reached(segments, {0})
    for name in _names(path):
        if prefix and end in states:
            return True
        step: set[int] = set()
        for i in states:
            if i == end:
                continue
            segment = segments[i]
            if segment.globstar:
                step.add(i)
            elif segment.matches(name, ignorecase):
                step.add(i + 1)
        if not step:
            return False
        states = _reached(segments, step)
    return end in states


def matches(pattern: Pattern | str, path: str, *, ignorecase: bool = False) -> bool:
    """Does ``pattern`` match the repository path ``path`` itself (``"."`` is the root)?"""
    return _run(_pattern(pattern), path, ignorecase, prefix=False)


def covers(pattern: Pattern | str, path: str, *, ignorecase: bool = False) -> bool:
    """Does ``pattern`` match ``path`` or one of its ancestor directories?"""
    return _run(_pattern(pattern), path, ignorecase, prefix=True)


def _plain_overlap(a: str, b: str, ignorecase: bool) -> str | None:
    # Two plain paths overlap exactly when one is (or is under) the other; the deeper one is
    # the witness. `a/b` and `a/bc` are siblings.
    fa, fb = (fold(a), fold(b)) if ignorecase else (a, b)
    if fa == "." or fb.startswith(fa + "/") or fa == fb:
        return b if b != "." else (a if a != "." else _ANY_NAME)
    if fb == "." or fa.startswith(fb + "/"):
        return a
    return None


def overlap(a: Pattern | str, b: Pattern | str, *, ignorecase: bool = False) -> str | None:
    """A path both ``a`` and ``b`` cover, or ``None`` when no path is covered by both.

    Exact for every pair: glob/glob, glob/plain path (a file or a directory), plain/plain. The
    witness is a real repository-relative path (no empty, ``.`` or ``..`` name), among the
    shortest, and ``covers`` confirms it for both.
    """
    pa, pb = _pattern(a), _pattern(b)
    if pa.path is not None and pb.path is not None:
        return _plain_overlap(pa.path, pb.path, ignorecase)
    sa, sb = pa.segments, pb.segments
    na, nb = len(sa), len(sb)
    # Breadth-first over (segments of a read, segments of b read); each step reads one name
    # both sides accept. A side at its end has matched an ancestor of the witness and accepts
    # any name from there on; a globstar reads a name and stays, or is skipped at no cost.
    parent: dict[tuple[int, int], tuple[tuple[int, int], str] | None] = {}
    queue: deque[tuple[int, int]] = deque()

    def reach(i: int, j: int, via: tuple[tuple[int, int], str] | None) -> None:
        stack = [(i, j)]
        while stack:
            i, j = stack.pop()
            if (i, j) in parent:
                continue
            parent[(i, j)] = via
            queue.append((i, j))
            if i < na and sa[i].globstar:
                stack.append((i + 1, j))
            if j < nb and sb[j].globstar:
                stack.append((i, j + 1))

    reach(0, 0, None)
    while queue:
        state = queue.popleft()
        i, j = state
        if i == na and j == nb:
            return _spell(parent, state)
        ga = i == na or sa[i].globstar
        gb = j == nb or sb[j].globstar
        name = meet(ANY if i == na else sa[i], ANY if j == nb else sb[j], ignorecase)
        if name is not None:
            reach(i if ga else i + 1, j if gb else j + 1, (state, name))
    return None


def _spell(parent: dict[tuple[int, int], tuple[tuple[int, int], str] | None],
           state: tuple[int, int]) -> str:
    names: list[str] = []
    step = parent[state]
    while step is not None:
        state, name = step
        names.append(name)
        step = parent[state]
    return "/".join(reversed(names)) or _ANY_NAME


def top_name(pattern: Pattern | str) -> str | None:
    """The top-level name every path ``pattern`` covers starts with (``src`` for
    ``src/**/*.ts``), or ``None`` when it has none (``*.py``, ``**/x``, ``.``).

    For an index: two patterns whose top names differ (folded with ignorecase) never overlap,
    so a table can look only at the patterns filed under the same name and those with none.
    """
    segments = _pattern(pattern).segments
    return segments[0].literal if segments else None


def describe(pattern: Pattern | str, holder: str) -> str:
    """How a conflict message names one side: "`src/*.ts` (James)"."""
    text = pattern.text if isinstance(pattern, Pattern) else pattern
    return f"`{text}` ({holder})"


def witness_message(a: str, b: str, witness: str) -> str:
    """The conflict sentence naming the witness, from two ``describe`` results:
    "`src/*.ts` (James) and `src/a*` (Marcus) both cover src/a.ts"."""
    return f"{a} and {b} both cover {witness}"
