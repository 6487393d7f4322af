"""One segment of a glob (the text between two slashes): its tokens, and what it matches. Pure.

A segment is a list of tokens: ``STAR`` (any run of characters, ``*``) or a ``CharSet`` (one
character: a literal, ``?``, or a class ``[abc]`` / ``[a-z]`` / ``[!a]``). Character sets are
sorted, disjoint intervals of code points over the *alphabet* a path segment can hold: every
character except NUL and ``/``. With ``ignorecase`` (git's ``core.ignorecase``) the alphabet is
folded the way git folds it, ASCII letters only (``A``-``Z`` become ``a``-``z``), and a negated
class is negated *after* folding, so ``[!a]`` matches neither ``a`` nor ``A``.

``meet(a, b, ignorecase)`` is the exact intersection of two segments: a product search over
token positions in which both sides read the same character (a character drawn from the
intersection of their sets), tracked against the three strings that are not segment names
(``""``, ``.``, ``..``). It returns a common name — the shortest, preferring one that does not
start with a dot — or ``None`` when the segments have none. Most pairs never reach the search:
a literal name is matched, a segment against any name (or itself) is its own shortest name, and
characters read before the first star or after the last one must meet one by one.
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache
from typing import Final

__all__ = [
    "ALPHABET",
    "ANY",
    "FOLDED_ALPHABET",
    "STAR",
    "CharSet",
    "Intervals",
    "Segment",
    "Token",
    "clear_caches",
    "fold",
    "meet",
]

Intervals = tuple[tuple[int, int], ...]

_SLASH: Final = 0x2F
_DOT: Final = 0x2E
_MAX: Final = 0x10FFFF
ALPHABET: Final[Intervals] = ((1, _SLASH - 1), (_SLASH + 1, _MAX))
_UPPER: Final = (0x41, 0x5A)
_CASE_SHIFT: Final = 0x20
# With ignorecase, upper-case ASCII letters stand for their lower-case twins and never appear.
FOLDED_ALPHABET: Final[Intervals] = ((1, _SLASH - 1), (_SLASH + 1, 0x40), (0x5B, _MAX))
_FOLD_TABLE: Final = {c: c + _CASE_SHIFT for c in range(_UPPER[0], _UPPER[1] + 1)}
# Characters a witness is written with when a set allows them, so messages read like paths.
_PREFERRED: Final = tuple(ord(c) for c in "abcdefghijklmnopqrstuvwxyz0123456789_-")


def fold(text: str) -> str:
    """``text`` with its ASCII upper-case letters lowered, as git folds with core.ignorecase."""
    return text.translate(_FOLD_TABLE)


def _normalise(ranges: list[tuple[int, int]]) -> Intervals:
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for lo, hi in ranges:
        if merged and lo <= merged[-1][1] + 1:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return tuple(merged)


def _intersect(a: Intervals, b: Intervals) -> Intervals:
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def _complement(a: Intervals, within: Intervals) -> Intervals:
    out: list[tuple[int, int]] = []
    for lo, hi in within:
        start = lo
        for alo, ahi in a:
            if ahi < start or alo > hi:
                continue
            if alo > start:
                out.append((start, alo - 1))
            start = max(start, ahi + 1)
        if start <= hi:
            out.append((start, hi))
    return tuple(out)


def _fold_intervals(a: Intervals) -> Intervals:
    upper = _intersect(a, (_UPPER,))
    rest = _complement(upper, a) if upper else a
    return _normalise([*rest, *((lo + _CASE_SHIFT, hi + _CASE_SHIFT) for lo, hi in upper)])


def _contains(a: Intervals, c: int) -> bool:
    return any(lo <= c <= hi for lo, hi in a)


class CharSet:
    """One character of a segment: a literal, ``?`` or a class, resolved for both case rules.

    ``cs`` is the set case-sensitively, ``ci`` in the folded alphabet; both are computed once
    when the pattern is parsed, so no comparison builds a set. ``literal`` is the character when
    the token is one plain character (the fast paths compare strings).
    """

    __slots__ = ("ci", "cs", "literal")

    def __init__(self, ranges: Intervals, *, negated: bool = False, literal: str = "") -> None:
        base = _intersect(_normalise(list(ranges)), ALPHABET)
        folded = _intersect(_fold_intervals(base), FOLDED_ALPHABET)
        self.cs: Intervals = _complement(base, ALPHABET) if negated else base
        self.ci: Intervals = _complement(folded, FOLDED_ALPHABET) if negated else folded
        self.literal = literal

    def resolved(self, ignorecase: bool) -> Intervals:
        return self.ci if ignorecase else self.cs

    def __repr__(self) -> str:
        return f"CharSet({self.cs!r})"


class _Star:
    __slots__ = ()

    def __repr__(self) -> str:
        return "STAR"


STAR: Final = _Star()
Token = CharSet | _Star


class Segment:
    """A parsed segment. Equal (and hashed) by its normalised text, which determines it."""

    __slots__ = ("_hash", "globstar", "literal", "text", "tokens")

    def __init__(self, text: str, tokens: tuple[Token, ...], *, globstar: bool = False) -> None:
        self.text = text
        self.tokens = tokens
        self.globstar = globstar
        # The segment's name when it has no wildcard at all (the common case: `src`, `api`).
        self.literal: str | None = (
            None if globstar or any(t is STAR for t in tokens)
            or any(isinstance(t, CharSet) and not t.literal for t in tokens)
            else "".join(t.literal for t in tokens if isinstance(t, CharSet))
        )
        self._hash = hash((text, globstar))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Segment) and self.text == other.text
                and self.globstar == other.globstar)

    def __repr__(self) -> str:
        return f"Segment({self.text!r})"

    def matches(self, name: str, ignorecase: bool) -> bool:
        """Does this segment match the segment name ``name`` (no slash in it)?"""
        if self.literal is not None:
            return fold(self.literal) == fold(name) if ignorecase else self.literal == name
        if ignorecase:
            name = fold(name)
        tokens = self.tokens
        # Wildcard matching with one backtrack point (the last star): linear for the patterns
        # people write, never exponential.
        t = n = 0
        star_t = star_n = -1
        while n < len(name):
            if t < len(tokens):
                token = tokens[t]
                if token is STAR:
                    star_t, star_n = t, n
                    t += 1
                    continue
                assert isinstance(token, CharSet)
                if _contains(token.resolved(ignorecase), ord(name[n])):
                    t += 1
                    n += 1
                    continue
            if star_t < 0:
                return False
            star_n += 1
            t, n = star_t + 1, star_n
        return all(token is STAR for token in tokens[t:])


ANY: Final = Segment("*", (STAR,))

# The tracker of what the common segment spelled so far is: nothing, ".", "..", something
# longer that starts with a dot, or something that does not. Only the last two are names.
_EMPTY, _ONE_DOT, _TWO_DOTS, _DOTTED, _PLAIN = range(5)
_AFTER_DOT: Final = (_ONE_DOT, _TWO_DOTS, _DOTTED, _DOTTED, _PLAIN)
_AFTER_OTHER: Final = (_PLAIN, _DOTTED, _DOTTED, _DOTTED, _PLAIN)


def _pick(chars: Intervals) -> int:
    if len(chars) == 1 and chars[0][0] == chars[0][1]:
        return chars[0][0]
    for c in _PREFERRED:
        if _contains(chars, c):
            return c
    return chars[0][0]


@lru_cache(maxsize=4096)
def _read(chars_a: Intervals, chars_b: Intervals) -> tuple[bool, int]:
    """Reading one character both sets accept: can it be a dot, and the other character to
    write (-1: none). Cached: the same few sets meet again and again in every search."""
    common = _intersect(chars_a, chars_b)
    if not _contains(common, _DOT):
        return False, _pick(common) if common else -1
    others = _complement(((_DOT, _DOT),), common)
    return True, _pick(others) if others else -1


def clear_caches() -> None:
    """Forget every segment meeting and set intersection computed (benchmarks start cold)."""
    meet.cache_clear()
    _read.cache_clear()


@lru_cache(maxsize=65536)
def meet(a: Segment, b: Segment, ignorecase: bool) -> str | None:
    """The shortest segment name both ``a`` and ``b`` match (one not starting with ``.`` if
    there is one), or ``None``. A globstar stands for any one segment here."""
    if a.literal is not None and b.literal is not None:
        same = fold(a.literal) == fold(b.literal) if ignorecase else a.literal == b.literal
        return a.literal if same else None
    if a.literal is not None:
        return a.literal if b.matches(a.literal, ignorecase) else None
    if b.literal is not None:
        return b.literal if a.matches(b.literal, ignorecase) else None
    # Against any name (a star, a globstar, a pattern that has ended) or itself, a segment
    # meets in its own shortest name: no product to search.
    if b.tokens == (STAR,) or a == b:
        return _shortest(a.tokens, ignorecase)
    if a.tokens == (STAR,):
        return _shortest(b.tokens, ignorecase)
    return _search(a.tokens, b.tokens, ignorecase)


def _shortest(tokens: tuple[Token, ...], ignorecase: bool) -> str | None:
    chars: list[int] = []
    for token in tokens:
        if isinstance(token, CharSet):
            dot, other = _read(token.resolved(ignorecase), ALPHABET)
            if other < 0 and not dot:
                return None  # a class nothing can match
            chars.append(other if other >= 0 else _DOT)
    if tokens[0] is STAR and (not chars or chars[0] == _DOT):
        chars.insert(0, _PREFERRED[0])  # the star reads a letter: `a.ts`, not `.ts`
    if chars and chars[0] != _DOT:
        return "".join(map(chr, chars))
    return _search(tokens, (STAR,), ignorecase)  # a name that must start with a dot


def _search(ta: tuple[Token, ...], tb: tuple[Token, ...], ignorecase: bool) -> str | None:
    alphabet = FOLDED_ALPHABET if ignorecase else ALPHABET
    la, lb = len(ta), len(tb)
    # Each token's set, once: a star reads any character of the alphabet.
    sets_a = [t.resolved(ignorecase) if isinstance(t, CharSet) else alphabet for t in ta]
    sets_b = [t.resolved(ignorecase) if isinstance(t, CharSet) else alphabet for t in tb]
    star_a = [t is STAR for t in ta]
    star_b = [t is STAR for t in tb]
    if _ends_differ(sets_a, star_a, sets_b, star_b):
        return None
    State = tuple[int, int, int]
    parent: dict[State, tuple[State, int] | None] = {}
    queue: deque[State] = deque()

    def reach(state: State, via: tuple[State, int] | None) -> None:
        # A star may also match nothing: the states after it are reached by the same string.
        stack = [state]
        while stack:
            state = stack.pop()
            if state in parent:
                continue
            parent[state] = via
            queue.append(state)
            p, q, t = state
            if p < la and star_a[p]:
                stack.append((p + 1, q, t))
            if q < lb and star_b[q]:
                stack.append((p, q + 1, t))

    reach((0, 0, _EMPTY), None)
    dotted: State | None = None
    while queue:
        state = queue.popleft()
        p, q, t = state
        if p == la and q == lb:
            if t == _PLAIN:
                return _spell(parent, state)
            if t == _DOTTED and dotted is None:
                dotted = state  # the shortest dot name; a plain one may still come
            continue
        if p == la or q == lb:
            continue
        dot, other = _read(sets_a[p], sets_b[q])
        np_ = p if star_a[p] else p + 1
        nq = q if star_b[q] else q + 1
        if dot:
            reach((np_, nq, _AFTER_DOT[t]), (state, _DOT))
        if other >= 0:
            reach((np_, nq, _AFTER_OTHER[t]), (state, other))
    return _spell(parent, dotted) if dotted is not None else None


def _ends_differ(sets_a: list[Intervals], star_a: list[bool],
                 sets_b: list[Intervals], star_b: list[bool]) -> bool:
    """A quick "no" for most pairs that never meet (`*.ts` and `*.py`, `test_*` and `a*`): up
    to the first star on either side, both segments read their first characters with aligned
    tokens, and so their last ones from the end. An empty meeting there rules out any name."""
    if not any(star_a) and not any(star_b) and len(sets_a) != len(sets_b):
        return True  # two fixed lengths
    for order in (range(min(len(sets_a), len(sets_b))),
                  range(-1, -min(len(sets_a), len(sets_b)) - 1, -1)):
        for k in order:
            if star_a[k] or star_b[k]:
                break
            if _read(sets_a[k], sets_b[k]) == (False, -1):
                return True
    return False


def _spell(parent: dict[tuple[int, int, int], tuple[tuple[int, int, int], int] | None],
           state: tuple[int, int, int]) -> str:
    chars: list[str] = []
    step = parent[state]
    while step is not None:
        state, c = step
        chars.append(chr(c))
        step = parent[state]
    return "".join(reversed(chars))
