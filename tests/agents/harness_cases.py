"""What the harness contract tests share: the documented payloads in ``payloads/<harness>/``
and a reader for the replies.

Each payload file is one JSON object exactly as its harness documents it, plus a ``"_doc"`` key
naming the page it copies. :func:`documented` strips that key, so the bytes a test feeds the
adapter are the documented payload and nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from versatil_fs.agents.protocol import Reply

PAYLOADS = Path(__file__).resolve().parent / "payloads"


def payload(harness: str, name: str) -> dict[str, Any]:
    """The documented payload `name` of `harness`, as a dict, without its "_doc" key."""
    data = json.loads((PAYLOADS / harness / f"{name}.json").read_text(encoding="utf-8"))
    doc = data.pop("_doc")
    assert isinstance(doc, str) and doc.startswith("https://"), f"{harness}/{name}: no _doc URL"
    return data


def documented(harness: str, name: str) -> bytes:
    """The documented payload's bytes, as the harness writes them on the hook's stdin."""
    return json.dumps(payload(harness, name)).encode("utf-8")


def names(harness: str) -> list[str]:
    return sorted(path.stem for path in (PAYLOADS / harness).glob("*.json"))


def stdout_json(reply: Reply) -> dict[str, Any]:
    """The one JSON object a reply prints, checked to be one line and nothing else."""
    assert reply.stdout.endswith("\n") and reply.stdout.count("\n") == 1, reply.stdout
    value = json.loads(reply.stdout)
    assert isinstance(value, dict)
    return value


# Any JSON value, for the fuzz tests: what a broken or hostile harness could send.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
