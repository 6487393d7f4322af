"""Each harness's hook configuration file, as data, and the pure edits that put versatil's hooks
into it or take them out again. No I/O: :mod:`versatil_fs.agents.integrate` reads and writes.

Five harnesses keep their hooks in a JSON document (``hooks.<event>`` is a list); Cline runs one
executable file per event, whose text :func:`cline_script` writes. versatil's entries are
recognised by their command, ``... agent-hook <harness>`` (:func:`is_ours`), never by position,
so a user's own hooks around them are kept, in their order, and a second install that finds
exactly the entries it would write changes nothing.

JSON is rewritten in the file's own layout (indent, separators, ASCII escapes, final newline),
found by re-encoding the parsed document until the encoding reproduces the file byte for byte;
a hand-formatted file that no encoding reproduces gets the closest one. A file versatil cannot
rewrite without losing something (comments, a key given twice, not JSON at all) is refused.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from versatil_fs.agents.harnesses import HookSpec
from versatil_fs.errors import Refused

__all__ = [
    "CLINE_DOCS",
    "FORMATS",
    "Format",
    "TextStyle",
    "cline_command",
    "cline_script",
    "commands",
    "detect_style",
    "encode",
    "is_ours",
    "load",
    "same",
    "with_ours",
    "without_ours",
]

Document = dict[str, Any]


@dataclass(frozen=True)
class Format:
    """How one harness's JSON file lays out a hook.

    ``groups``: ``hooks.<Event>`` is a list of ``{"matcher": M, "hooks": [handler, ...]}``
    (Claude Code's shape, which Codex and Gemini CLI copied). ``handlers``: ``hooks.<event>`` is
    a list of handlers, each with its own matcher if the harness has one (Cursor, Copilot).
    """

    style: Literal["groups", "handlers"]
    docs: str  # the page this layout was read from
    command_key: str = "command"
    timeout_key: str = "timeout"
    timeout_unit: int = 1  # config units per second (Gemini CLI counts milliseconds)
    typed: bool = True  # the handler carries "type": "command"
    matcher: bool = True  # the config has a tool-name matcher
    version: int | None = None  # the top-level "version" the file must declare
    name: str = ""  # a "name" for the handler, where the harness shows it
    env: bool = False  # the handler takes an "env" object (HookSpec.env goes there)
    comments: bool = False  # the harness itself accepts comments in this file (JSONC)


FORMATS: dict[str, Format] = {
    # https://code.claude.com/docs/en/hooks ("Configuration": hooks.<Event>[].matcher/hooks[],
    # handler {type: "command", command, timeout (seconds)}). settings.json is plain JSON: the
    # docs show no comments, so a file with comments is refused (the conservative reading).
    "claude": Format("groups", "https://code.claude.com/docs/en/hooks"),
    # https://developers.openai.com/codex/hooks — "the same wire format" as Claude Code;
    # codex-rs/config/src/hook_config.rs: HooksFile {hooks: {PreToolUse: [MatcherGroup]}},
    # handler {type: "command", command, timeout (seconds)}, read with serde_json (no comments).
    "codex": Format("groups", "https://developers.openai.com/codex/hooks"),
    # https://geminicli.com/docs/hooks/reference ("Configuration schema": hook definition
    # {matcher, hooks[]}, hook configuration {type, command, name, timeout in milliseconds}).
    # packages/cli/src/config/settings.ts reads settings.json through strip-json-comments, so
    # comments are legal there, but a rewrite could not keep them: such a file is refused.
    "gemini": Format(
        "groups", "https://geminicli.com/docs/hooks/reference", timeout_unit=1000,
        name="versatil", comments=True,
    ),
    # https://cursor.com/docs/agent/hooks: {"version": 1, "hooks": {"preToolUse": [{"command",
    # "matcher", "timeout"}]}}; a handler is a command hook without a "type". Read as seconds
    # (the conservative reading: the page is not explicit), but HOOKS writes no Cursor timeout.
    "cursor": Format(
        "handlers", "https://cursor.com/docs/agent/hooks", typed=False, version=1,
    ),
    # https://docs.github.com/en/copilot/reference/copilot-cli-reference/cli-hooks-reference:
    # {"version": 1, "hooks": {"preToolUse": [{"type": "command", "bash", "env",
    # "timeoutSec"}]}}. The page documents no matcher: every hook sees every tool, and the
    # adapter sorts them out.
    "copilot": Format(
        "handlers",
        "https://docs.github.com/en/copilot/reference/copilot-cli-reference/cli-hooks-reference",
        command_key="bash", timeout_key="timeoutSec", matcher=False, version=1, env=True,
    ),
}

# https://docs.cline.bot/customization/hooks: one executable file per hook, named exactly as
# the hook (no extension), in .clinerules/hooks/ (project) or ~/Documents/Cline/Hooks/ (global);
# Cline runs it through its shebang, JSON on stdin.
CLINE_DOCS = "https://docs.cline.bot/customization/hooks"


# Recognising versatil's entries ----------------------------------------------------------------
def is_ours(command: object, harness: str) -> bool:
    """Whether ``command`` runs ``versatil agent-hook <harness>`` (whichever versatil, quoted or
    not): the one mark of versatil's entries, so an older install at another path is found."""
    if not isinstance(command, str) or "agent-hook" not in command:
        return False
    try:
        words = shlex.split(command)
    except ValueError:  # an unbalanced quote: not a command versatil wrote, but look anyway
        return re.search(rf"(?:^|\s)agent-hook\s+{re.escape(harness)}(?:\s|$)", command) is not None
    return any(a == "agent-hook" and b == harness for a, b in itertools.pairwise(words))


def _handlers(item: object, fmt: Format) -> list[Any] | None:
    """The handler list of a ``groups`` entry (None when the entry is not a group)."""
    if fmt.style == "groups" and isinstance(item, dict):
        handlers = item.get("hooks")
        if isinstance(handlers, list):
            return handlers
    return None


def _ours(handler: object, harness: str, fmt: Format) -> bool:
    return isinstance(handler, dict) and is_ours(handler.get(fmt.command_key), harness)


def commands(doc: Document, harness: str, fmt: Format) -> dict[str, list[str]]:
    """versatil's commands in ``doc``, by event (for ``--status``)."""
    found: dict[str, list[str]] = {}
    hooks = doc.get("hooks")
    if not isinstance(hooks, dict):
        return found
    for event, entries in hooks.items():
        if not isinstance(entries, list):
            continue
        for item in entries:
            handlers = _handlers(item, fmt) if fmt.style == "groups" else [item]
            for handler in handlers or ():
                if _ours(handler, harness, fmt):
                    found.setdefault(event, []).append(handler[fmt.command_key])
    return found


# The edits -------------------------------------------------------------------------------------
def _copy(doc: Document) -> Document:
    copied: Document = json.loads(json.dumps(doc))
    return copied


def _strip(doc: Document, harness: str, fmt: Format) -> tuple[dict[str, int], set[str]]:
    """Take versatil's handlers out of ``doc`` in place. Returns, per event, where the first one
    was (so a reinstall puts the new entry back in the same place), and the events whose list
    versatil's removal emptied."""
    where: dict[str, int] = {}
    emptied: set[str] = set()
    hooks = doc.get("hooks")
    if not isinstance(hooks, dict):
        return where, emptied
    for event, entries in hooks.items():
        if not isinstance(entries, list):
            continue
        kept: list[Any] = []
        removed = False
        for item in entries:
            handlers = _handlers(item, fmt)
            if handlers is not None:
                others = [h for h in handlers if not _ours(h, harness, fmt)]
                if len(others) == len(handlers):
                    kept.append(item)
                    continue
                removed = True
                if others:  # a group the user shares with versatil keeps their handlers
                    kept.append({**item, "hooks": others})
                where.setdefault(event, len(kept))
            elif fmt.style == "handlers" and _ours(item, harness, fmt):
                removed = True
                where.setdefault(event, len(kept))
            else:
                kept.append(item)
        if removed:
            hooks[event] = kept
            if not kept:
                emptied.add(event)
    return where, emptied


def _prune(doc: Document, emptied: set[str]) -> None:
    """Drop the event lists versatil's removal left empty (a list the user had empty stays)."""
    hooks = doc.get("hooks")
    if isinstance(hooks, dict):
        for event in emptied:
            if hooks.get(event) == []:
                del hooks[event]


def _entry(spec: HookSpec, command: str, fmt: Format) -> dict[str, Any]:
    handler: dict[str, Any] = {}
    if fmt.name:
        handler["name"] = fmt.name
    if fmt.typed:
        handler["type"] = "command"
    handler[fmt.command_key] = command
    if fmt.style == "handlers" and fmt.matcher and spec.matcher is not None:
        handler["matcher"] = spec.matcher
    if spec.env:
        if not fmt.env:  # the adapter counts on these variables: never drop them silently
            raise ValueError(f"{fmt.docs} has no env for a hook; HookSpec.env cannot be kept.")
        handler["env"] = dict(spec.env)
    if spec.timeout is not None:
        handler[fmt.timeout_key] = spec.timeout * fmt.timeout_unit
    if fmt.style == "handlers":
        return handler
    group: dict[str, Any] = {}
    if spec.matcher is not None and fmt.matcher:
        group["matcher"] = spec.matcher
    group["hooks"] = [handler]
    return group


def with_ours(
    doc: Document, harness: str, fmt: Format, specs: Sequence[HookSpec], command: str,
    *, where: Path,
) -> Document:
    """``doc`` with exactly versatil's entries for ``specs``: any earlier ones (another path, an
    event no longer wired) are taken out, each new one goes where the old one of its event was,
    or at the end of the event's list."""
    new = _copy(doc)
    positions, emptied = _strip(new, harness, fmt)
    if fmt.version is not None and "version" not in new:
        new = {"version": fmt.version, **new}
    hooks = new.setdefault("hooks", {})
    if not isinstance(hooks, dict):
        raise Refused(
            f"{where}: its \"hooks\" is not a JSON object, so versatil cannot add its hooks; "
            "fix it by hand, then run the command again."
        )
    for spec in specs:
        entries = hooks.setdefault(spec.event, [])
        if not isinstance(entries, list):
            raise Refused(
                f"{where}: its \"hooks\".\"{spec.event}\" is not a list, so versatil cannot add "
                "its hook; fix it by hand, then run the command again."
            )
        at = positions.get(spec.event, len(entries))
        entries.insert(at, _entry(spec, command, fmt))
        positions[spec.event] = at + 1  # a second spec for one event goes after the first
    _prune(new, emptied)
    return new


def without_ours(doc: Document, harness: str, fmt: Format) -> Document:
    """``doc`` without versatil's entries; event lists (and a ``hooks`` object) that held only
    versatil's go too. Everything else stays as it was, in its order."""
    new = _copy(doc)
    _, emptied = _strip(new, harness, fmt)
    _prune(new, emptied)
    if emptied and new.get("hooks") == {}:
        del new["hooks"]
    return new


def same(a: Document, b: Document) -> bool:
    """Equal including key order (``==`` on dicts ignores the order, which a file shows)."""
    return json.dumps(a) == json.dumps(b)


# Reading and writing the text ------------------------------------------------------------------
class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys; writing the document back would silently drop
    # the first, which the harness may be the one reading (some parsers keep the first).
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Duplicate(key)
        result[key] = value
    return result


def load(data: bytes, path: Path, harness: str) -> Document:
    """The JSON object in ``data`` (the file at ``path``); an empty file is an empty object.
    Refused (one sentence naming the file) when versatil could not rewrite it losslessly."""
    fix = f"fix it, then run `versatil integrate {harness}` again"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(f"{path} is not UTF-8 text, so versatil leaves it alone; {fix}.") from None
    if not text.strip():
        return {}
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates)
    except _Duplicate as dup:
        raise Refused(
            f"{path} has the key {dup.key!r} twice in one object, and rewriting it would drop "
            f"one; {fix}."
        ) from None
    except json.JSONDecodeError as exc:
        if _without_comments(text) is not None:
            allowed = "" if FORMATS.get(harness, _NO_COMMENTS).comments else (
                f" (which {harness} does not accept either)")
            raise Refused(
                f"{path} has comments{allowed}, which versatil cannot keep when it rewrites the "
                f"file; remove them, then run `versatil integrate {harness}` again."
            ) from None
        raise Refused(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            f"{fix}."
        ) from None
    except (ValueError, RecursionError):
        raise Refused(f"{path} is not JSON versatil can read; {fix}.") from None
    if not isinstance(doc, dict):
        raise Refused(f"{path} is not a JSON object; {fix}.")
    return doc


_NO_COMMENTS = Format("groups", "")


def _without_comments(text: str) -> Document | None:
    """The document, if ``text`` is JSON once its // and /* */ comments are taken out; else
    None. Only to say why a file was refused: the comments could not be written back."""
    out: list[str] = []
    i, n = 0, len(text)
    found = False
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            found = True
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            found = True
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(c)
            i += 1
    if not found:
        return None
    try:
        doc = json.loads("".join(out))
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


@dataclass(frozen=True)
class TextStyle:
    """How a JSON file is laid out, so a rewrite looks like the file it replaces."""

    indent: int | str | None = 2
    compact: bool = False  # no space after , and : (only for a one-line document)
    ascii: bool = False  # non-ASCII characters written as \\u escapes
    newline: bool = True  # the file ends with a newline
    crlf: bool = False  # lines end with CR LF (a file saved on Windows)


def encode(doc: Document, style: TextStyle) -> bytes:
    separators = (",", ":") if style.compact else ((",", ": ") if style.indent is not None
                                                   else (", ", ": "))
    text = json.dumps(doc, indent=style.indent, separators=separators, ensure_ascii=style.ascii)
    text += "\n" if style.newline else ""
    # JSON strings hold no raw newline (json.dumps escapes them), so every "\n" is a line end.
    return (text.replace("\n", "\r\n") if style.crlf else text).encode("utf-8")


def detect_style(data: bytes, doc: Document) -> TextStyle:
    """The layout that reproduces ``data`` exactly when there is one, else the closest guess
    (the first indented line's indent; ASCII escapes if the file has them and no raw UTF-8)."""
    if not data.strip():
        return TextStyle()
    newline = data.endswith(b"\n")
    crlf = b"\r\n" in data
    guess = re.search(rb"\n([ \t]+)\S", data)
    indent: int | str | None
    if guess is None:
        indent = None
    elif guess.group(1).startswith(b"\t"):
        indent = "\t"
    else:
        indent = len(guess.group(1))
    ascii_only = b"\\u" in data and data.isascii()
    candidates = [TextStyle(indent, False, ascii_only, newline, crlf)]
    for indent_option in (2, 4, "\t", None, 1, 3, 8):
        for compact in ((False, True) if indent_option is None else (False,)):
            for escape in (False, True):
                candidates.append(TextStyle(indent_option, compact, escape, newline, crlf))
    for style in candidates:
        if encode(doc, style) == data:
            return style
    return candidates[0]


# Cline: one executable per hook ------------------------------------------------------------------
_CLINE_MARK = "# Written by `versatil integrate cline`"


def cline_script(command: str) -> bytes:
    """The hook file versatil writes for every Cline hook: exec keeps the harness's stdin, and
    the exit code and output are versatil's own."""
    return (
        "#!/bin/sh\n"
        f"{_CLINE_MARK}: the versatil lock guard ({CLINE_DOCS}).\n"
        "# `versatil integrate cline --remove` takes it away again.\n"
        f"exec {command}\n"
    ).encode()


def cline_command(data: bytes) -> str | None:
    """The versatil command a Cline hook file runs, or None when the file is not versatil's."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    for line in text.splitlines():
        if line.startswith("exec ") and is_ours(line[5:], "cline"):
            return line[5:]
    return None
