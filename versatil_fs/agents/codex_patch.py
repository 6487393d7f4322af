"""The files a Codex `apply_patch` patch writes, read from the patch text alone (pure, no I/O).

The format is Codex's own (https://developers.openai.com/codex/ — the grammar is in
codex-rs/apply-patch/src/parser.rs of github.com/openai/codex)::

    *** Begin Patch
    *** Add File: PATH          then lines starting with "+"
    *** Delete File: PATH
    *** Update File: PATH       optionally "*** Move to: NEWPATH", then chunks:
                                "@@" or "@@ CONTEXT", lines starting with " ", "-", "+",
                                optionally "*** End of File"
    *** End Patch

This reader accepts exactly what Codex's own (lenient) parser accepts — the markers may carry
surrounding whitespace, and a patch wrapped in a `<<'EOF'` ... `EOF` heredoc (as GPT-4.1 sends
it) is unwrapped — so a patch Codex would apply is never answered "unreadable", and one it would
refuse gives :class:`BadPayload` (Codex writes nothing for it either).
"""

from __future__ import annotations

from collections.abc import Sequence

from versatil_fs.agents.protocol import BadPayload

__all__ = ["patch_paths"]

_BEGIN = "*** Begin Patch"
_END = "*** End Patch"
_ADD = "*** Add File: "
_DELETE = "*** Delete File: "
_UPDATE = "*** Update File: "
_MOVE = "*** Move to: "
_EOF = "*** End of File"
# The heredoc openers Codex's lenient mode unwraps.
_HEREDOCS = ("<<EOF", "<<'EOF'", '<<"EOF"')


def _lines(text: str) -> list[str]:
    # Codex splits with Rust's str::lines(): on "\n", dropping one "\r" before it.
    lines = text.strip().split("\n")
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _body(lines: list[str]) -> list[str]:
    """The hunk lines between the begin and end markers."""
    def bounded(inner: list[str]) -> bool:
        return len(inner) >= 2 and inner[0].strip() == _BEGIN and inner[-1].strip() == _END

    if bounded(lines):
        return lines[1:-1]
    heredoc = len(lines) >= 4 and lines[0] in _HEREDOCS and lines[-1].endswith("EOF")
    if heredoc and bounded(lines[1:-1]):
        return lines[2:-2]
    if not lines or lines[0].strip() != _BEGIN:
        raise BadPayload("The patch does not start with '*** Begin Patch'.")
    raise BadPayload("The patch does not end with '*** End Patch'.")


def _chunk(lines: Sequence[str], start: int, first: bool) -> int:
    """How many lines the update chunk at `start` takes (Codex's parse_update_file_chunk)."""
    at = start
    if lines[at] == "@@" or lines[at].startswith("@@ "):
        at += 1
    elif not first:
        raise BadPayload(f"The patch's line {lines[at]!r} should start a chunk with '@@'.")
    if at >= len(lines):
        raise BadPayload("The patch has an update chunk with no lines.")
    taken = 0
    while at < len(lines):
        line = lines[at]
        if line == _EOF:
            if taken == 0:
                raise BadPayload("The patch has an update chunk with no lines.")
            return at + 1 - start
        if line and line[0] not in " +-":
            if taken == 0:
                raise BadPayload(f"The patch's line {line!r} is not a context, '-' or '+' line.")
            break
        taken += 1
        at += 1
    return at - start


def _path(value: str) -> str:
    if not value.strip():
        raise BadPayload("The patch names a file with an empty path.")
    return value


def patch_paths(patch: str) -> tuple[str, ...]:
    """Every path `patch` adds, deletes, updates or moves (a move gives its source and then its
    destination), in patch order, each once, exactly as written (relative to the tool call's
    working directory unless absolute). Raises :class:`BadPayload` for a malformed patch."""
    body = _body(_lines(patch))
    found: list[str] = []
    at = 0
    while at < len(body):
        header = body[at].strip()
        at += 1
        if header.startswith(_ADD):
            found.append(_path(header[len(_ADD):]))
            while at < len(body) and body[at].startswith("+"):
                at += 1
        elif header.startswith(_DELETE):
            found.append(_path(header[len(_DELETE):]))
        elif header.startswith(_UPDATE):
            source = _path(header[len(_UPDATE):])
            found.append(source)
            # Codex matches the move line unstripped; so does this.
            if at < len(body) and body[at].startswith(_MOVE):
                found.append(_path(body[at][len(_MOVE):]))
                at += 1
            chunks = 0
            while at < len(body):
                if not body[at].strip():
                    at += 1  # blank lines may separate chunks
                    continue
                if body[at].startswith("*"):
                    break  # the next hunk's header
                at += _chunk(body, at, chunks == 0)
                chunks += 1
            if chunks == 0:
                raise BadPayload(f"The patch's update of {source!r} changes nothing.")
        else:
            raise BadPayload(f"The patch's line {header!r} is not a hunk header "
                             "('*** Add File:', '*** Delete File:' or '*** Update File:').")
    return tuple(dict.fromkeys(found))
