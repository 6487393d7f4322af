"""The files a Codex apply_patch patch writes, read by versatil_fs.agents.codex_patch (pure).

The grammar and the lenient cases follow Codex's own parser (github.com/openai/codex
codex-rs/apply-patch/src/parser.rs): what it applies, this reads; what it refuses, this refuses.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from versatil_fs.agents.codex_patch import patch_paths
from versatil_fs.agents.protocol import BadPayload

EVERYTHING = """*** Begin Patch
*** Add File: docs/release notes.md
+# Release notes
+
+- the basket
*** Update File: src/cart.py
*** Move to: src/basket.py
@@ def total():
-    return 0
+    return 1
*** Delete File: src/legacy.py
*** Update File: README.md
@@
-Shop
+Shop (basket)
*** End of File
*** End Patch
"""


def test_a_patch_that_adds_updates_deletes_and_moves_names_every_file_in_order() -> None:
    assert patch_paths(EVERYTHING) == (
        "docs/release notes.md",  # a space inside a path is part of it
        "src/cart.py",            # a move yields its source...
        "src/basket.py",          # ...and its destination
        "src/legacy.py",
        "README.md",
    )


def test_absolute_paths_are_kept_as_written() -> None:
    patch = "*** Begin Patch\n*** Delete File: /srv/app/old.txt\n*** End Patch"
    assert patch_paths(patch) == ("/srv/app/old.txt",)


def test_a_file_named_twice_is_reported_once() -> None:
    patch = ("*** Begin Patch\n*** Update File: a.py\n@@\n-x\n+y\n"
             "*** Update File: a.py\n@@\n-y\n+z\n*** End Patch")
    assert patch_paths(patch) == ("a.py",)


def test_an_empty_patch_writes_nothing() -> None:
    assert patch_paths("*** Begin Patch\n*** End Patch") == ()


def test_codex_leniency_is_matched() -> None:
    # Whitespace around the markers, CRLF line ends, an update chunk without "@@", blank lines
    # between chunks, and the <<'EOF' heredoc GPT-4.1 wraps patches in: Codex applies all of them.
    patch = ("  *** Begin Patch \r\n*** Update File: a b.py\r\n import os\r\n+import sys\r\n\r\n"
             "@@ def f():\r\n-    pass\r\n+    return 1\r\n*** End Patch  \r\n")
    assert patch_paths(patch) == ("a b.py",)
    wrapped = "<<'EOF'\n*** Begin Patch\n*** Add File: x.txt\n+x\n*** End Patch\nEOF\n"
    assert patch_paths(wrapped) == ("x.txt",)


@pytest.mark.parametrize(
    ("patch", "says"),
    [
        ("", "Begin Patch"),
        ("*** Add File: a.txt\n+a\n*** End Patch", "Begin Patch"),
        ("*** Begin Patch\n*** Add File: a.txt\n+a", "End Patch"),
        ("*** Begin Patch\n*** Frobnicate File: a.txt\n*** End Patch", "hunk header"),
        ("*** Begin Patch\n*** Update File: a.txt\n*** End Patch", "changes nothing"),
        ("*** Begin Patch\n*** Update File: a.txt\n@@\n*** End Patch", "no lines"),
        ("*** Begin Patch\n*** Update File: a.txt\n@@\n-a\n+b\nnot a diff line\n*** End Patch",
         "should start a chunk"),
        ("*** Begin Patch\n*** Update File: a.txt\n@@\n*** End of File\n*** End Patch",
         "no lines"),
        ("*** Begin Patch\n*** Update File: a.txt\n@@\nplain\n*** End Patch", "not a context"),
        ("*** Begin Patch\n*** Update File: a.txt\n*** Move to: \n@@\n-a\n+b\n*** End Patch",
         "empty path"),
    ],
)
def test_a_malformed_patch_is_one_sentence(patch: str, says: str) -> None:
    with pytest.raises(BadPayload, match=says) as raised:
        patch_paths(patch)
    assert "\n" not in str(raised.value)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_text_gives_paths_or_bad_payload(text: str) -> None:
    try:
        found = patch_paths(text)
    except BadPayload:
        return
    assert all(isinstance(path, str) and path.strip() for path in found)


_LINES = st.sampled_from([
    "*** Begin Patch", "*** End Patch", "*** Add File: a", "*** Delete File: b",
    "*** Update File: c", "*** Move to: d", "*** End of File", "@@", "@@ ctx", "+x", "-y", " z",
    "", "junk", "<<'EOF'", "EOF",
])


@settings(max_examples=200, deadline=None)
@given(st.lists(_LINES, max_size=12))
def test_any_arrangement_of_patch_lines_gives_paths_or_bad_payload(lines: list[str]) -> None:
    try:
        found = patch_paths("\n".join(lines))
    except BadPayload:
        return
    assert set(found) <= {"a", "b", "c", "d"}
