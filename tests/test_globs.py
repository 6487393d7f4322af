"""Glob patterns: the syntax, the semantics the README documents, and the witness (issue 16).

The exhaustive comparison against an independent oracle is in test_globs_oracle.py; these are
the rules one by one, as a user reads them.
"""

from __future__ import annotations

import re

import pytest

from versatil_fs.errors import UsageError
from versatil_fs.locks.globs import (
    Pattern,
    covers,
    describe,
    escape,
    is_glob,
    matches,
    overlap,
    parse,
    plain,
    top_name,
    witness_message,
)


@pytest.mark.parametrize(("text", "glob"), [
    ("src/*.ts", True), ("a?b", True), ("x[ab]", True), ("src/api", False),
    ("a\\*b", False), ("a\\\\*", True), ("a]b", False), ("tests/unit/test_*.py", True),
])
def test_is_glob_means_an_unescaped_wildcard(text: str, glob: bool) -> None:
    assert is_glob(text) is glob


@pytest.mark.parametrize(("text", "says"), [
    ("", "empty pattern"),
    ("/src/*.ts", "starts with /"),
    ("src/", "ends with /"),
    ("src//a*", "empty segment"),
    ("src/../a*", "'..' segment"),
    ("./a*", "'.' segment"),
    ("src/\\.\\.", "'..' segment"),
    ("src/[ab", "never closed"),
    ("src/[]", "never closed"),
    ("src/[!]", "never closed"),
    ("a\\", "escapes nothing"),
    ("a\\/b", "escapes nothing"),
    ("[z-a]", "end comes before its start"),
    ("src/" + "a" * 256 + "*", "segment longer than 255"),
    ("/".join(["ab*"] * 1500), "longer than 4096"),
])
def test_a_malformed_pattern_is_one_sentence(text: str, says: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(text)
    message = str(caught.value)
    assert says in message
    assert "\n" not in message and not re.search(r"[.;]\s+[A-Z]", message)
    assert not text or repr(text if len(text) <= 80 else text[:77] + "...") in message


def test_patterns_are_anchored_at_the_root() -> None:
    assert matches("*.py", "setup.py")
    assert not covers("*.py", "src/setup.py")
    assert covers("**/*.py", "src/setup.py") and covers("**/*.py", "setup.py")


def test_star_and_question_mark_stay_within_one_segment() -> None:
    assert not matches("src/*", "src/a/b") and covers("src/*", "src/a/b")
    assert not matches("a*b", "a/b")
    assert matches("?.ts", "a.ts") and not matches("?.ts", "ab.ts")
    assert matches("*", ".hidden")  # as in git: a star matches a leading dot


def test_a_globstar_is_zero_or_more_segments() -> None:
    for path in ("src/a.ts", "src/x/a.ts", "src/x/y/a.ts"):
        assert matches("src/**/a.ts", path)
    assert matches("src/**", "src")
    assert not matches("src/**/a.ts", "srcx/a.ts")


def test_two_stars_inside_a_segment_are_one_star() -> None:
    assert parse("a**b").segments == parse("a*b").segments
    assert matches("a**b", "axxb") and not matches("a**b", "a/b")
    assert parse("***").segments == parse("**").segments


def test_character_classes() -> None:
    assert matches("[abc]", "b") and not matches("[abc]", "d")
    assert matches("[a-c]x", "bx") and not matches("[a-c]x", "dx")
    assert matches("[!a]", "b") and not matches("[!a]", "a")
    assert matches("[^a]", "b") and not matches("[^a]", "a")
    assert matches("[]a]", "]") and matches("[!]a]", "b") and not matches("[!]a]", "]")
    assert matches("[a-]", "-") and matches("[\\]]", "]")


def test_escapes_name_literal_characters() -> None:
    assert matches("a\\*b", "a*b") and not matches("a\\*b", "axb")
    assert parse("a\\*b").path == "a*b"
    assert parse(escape("we*ird[1]\\x")).path == "we*ird[1]\\x"


def test_ignorecase_folds_ascii_letters_the_way_git_does() -> None:
    assert not matches("SRC/*.TS", "src/a.ts")
    assert matches("SRC/*.TS", "src/a.ts", ignorecase=True)
    # A negated class is negated after folding: [!a] is neither a nor A.
    assert not matches("[!a]", "A", ignorecase=True)
    assert matches("[!a]", "A")
    assert not matches("é", "É", ignorecase=True)  # only ASCII folds
    assert overlap("A*", "a*") is None
    assert overlap("A*", "a*", ignorecase=True) is not None


def test_a_match_covers_everything_under_it() -> None:
    assert covers("src/*", "src/api/users.py")
    assert covers("src/api", "src/api/users.py") and not covers("src/api", "src/apiary")
    assert covers(".", "anything/at/all") and matches(".", ".")


def test_a_parsed_pattern_is_frozen_hashable_and_cached() -> None:
    p = parse("src/**/*.ts")
    assert p is parse("src/**/*.ts")
    assert p == Pattern(p.text, p.segments, p.path) and len({p, parse("src/**/*.ts")}) == 1
    with pytest.raises(AttributeError):
        p.text = "other"
    assert p.is_glob and not parse("src/api").is_glob


@pytest.mark.parametrize(("a", "b", "witness"), [
    ("src/*.ts", "src/a*", "src/a.ts"),
    ("src/a*.py", "src/*b.py", "src/ab.py"),
    ("src/**/*.ts", "src/api", "src/api/a.ts"),
    ("src/*", "src/api/users.py", "src/api/users.py"),
    ("src/api", "src", "src/api"),
    ("**", ".", "a"),
    (".*", "*", ".a"),  # never "." itself
    ("tests/unit/test_*.py", "tests/**", "tests/unit/test_.py"),
])
def test_overlap_names_a_witness_both_cover(a: str, b: str, witness: str) -> None:
    assert overlap(a, b) == witness
    assert covers(a, witness) and covers(b, witness)


@pytest.mark.parametrize(("a", "b"), [
    ("src/*.ts", "src/*.py"),
    ("src/a/b", "src/a/bc"),
    ("*.py", "src/x.py"),
    ("a[!a]", "aa"),
    ("src/**/*.ts", "lib/**"),
])
def test_overlap_is_none_when_no_path_is_covered_by_both(a: str, b: str) -> None:
    assert overlap(a, b) is None
    assert overlap(b, a) is None


def test_dot_names_are_never_witnesses() -> None:
    # "[.]" alone would be ".", "[.][.]" would be "..": neither is a path, so these match none.
    assert overlap("[.]", "*") is None
    assert overlap("[.][.]", "**") is None
    assert overlap("[.][.]*", "*") == "..."


def test_plain_paths_are_taken_verbatim() -> None:
    assert plain("a*b/c").path == "a*b/c"
    assert overlap(plain("a*b"), "a\\*b") == "a*b"
    assert overlap(plain("a*b"), "axb") is None
    with pytest.raises(UsageError):
        plain("a//b")


def test_the_conflict_sentence_names_the_witness() -> None:
    witness = overlap("src/*.ts", "src/a*")
    assert witness is not None
    sentence = witness_message(describe("src/*.ts", "James"), describe("src/a*", "Marcus"),
                               witness)
    assert sentence == "`src/*.ts` (James) and `src/a*` (Marcus) both cover src/a.ts"


def test_top_name_files_a_pattern_under_its_first_directory() -> None:
    assert top_name("src/**/*.ts") == "src" and top_name("README.md") == "README.md"
    assert top_name("*.py") is None and top_name("**/x") is None and top_name(".") is None
    assert top_name("a\\*b/c") == "a*b"
