"""`versatil integrate` against hostile and broken hook files: a FIFO, a symlink planted where a
config goes, a directory, bytes that are not text, JSON nested past the parser's stack. Each is
one sentence naming the file, exit 1, no hang, nothing written, nothing lost."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from reliability.support import (
    Tally,
    lost_files,
    one_line_problems,
    snapshot_files,
    versatil_process,
)


@pytest.fixture(autouse=True)
def _no_harness_homes(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLAUDE_CONFIG_DIR", "CODEX_HOME", "GEMINI_CLI_HOME", "COPILOT_HOME"):
        monkeypatch.delenv(name, raising=False)


def _fifo(path: Path, outside: Path) -> None:
    os.mkfifo(path)  # opened for reading without O_NONBLOCK, this would hang the command


def _symlink_to_a_dotfile(path: Path, outside: Path) -> None:
    (outside / ".bashrc").write_text("export PATH=$HOME/bin:$PATH\n")
    path.symlink_to(outside / ".bashrc")


def _directory(path: Path, outside: Path) -> None:
    path.mkdir()


def _not_text(path: Path, outside: Path) -> None:
    path.write_bytes(b'{"hooks": "\xff\xfe"}')


def _too_deep(path: Path, outside: Path) -> None:
    path.write_text("[" * 200_000 + "]" * 200_000)


PLANTED: dict[str, Callable[[Path, Path], None]] = {
    "fifo": _fifo,
    "symlink": _symlink_to_a_dotfile,
    "directory": _directory,
    "not-utf8": _not_text,
    "too-deep": _too_deep,
}


@pytest.mark.parametrize(("harness", "rel"), [
    ("claude", ".claude/settings.json"),
    ("cline", ".clinerules/hooks/PreToolUse"),
])
@pytest.mark.parametrize("planted", sorted(PLANTED))
def test_a_planted_hook_file_is_refused_in_one_sentence(
    git_repo: Path, tmp_path: Path, tally: Tally, harness: str, rel: str, planted: str
) -> None:
    if harness == "cline" and planted in ("not-utf8", "too-deep"):
        pytest.skip("a Cline hook is not JSON: any file that is not versatil's is refused")
    outside = tmp_path / "outside"
    outside.mkdir()
    path = git_repo / rel
    path.parent.mkdir(parents=True)
    PLANTED[planted](path, outside)
    tally.attack()
    tally.bad_inputs += 1
    before = {"repo": snapshot_files(git_repo), "outside": snapshot_files(outside)}
    listing = sorted(os.listdir(path.parent))

    result = tally.outcome(versatil_process("integrate", "all", cwd=git_repo, timeout=30))

    assert not one_line_problems(result, [1], [str(path)]), result
    tally.lost(lost_files(before["repo"], git_repo))
    tally.lost(lost_files(before["outside"], outside))
    assert sorted(os.listdir(path.parent)) == listing  # no temporary file left beside it
    assert snapshot_files(git_repo) == before["repo"]  # `all` wrote nothing for any harness
