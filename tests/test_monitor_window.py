"""The windowed count of unlocked writes that `versatil locks` shows (issue 15, item 3)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from versatil_fs import events
from versatil_fs.monitor import (
    RECENT_WINDOW,
    STREAM,
    recent_unlocked_writes,
    unlocked_write_count,
    window_phrase,
)
from versatil_fs.repo import Repository


def _unlocked_write_at(
    monkeypatch: pytest.MonkeyPatch, when: float, repo: str, path: str
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: when)
        events.emit(STREAM, "unlocked-write", repo=repo, path=path, event="modified")


def test_only_writes_inside_the_window_are_counted(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Repository.find(git_repo).key
    now = time.time()
    _unlocked_write_at(monkeypatch, now - 2 * RECENT_WINDOW, key, "old.txt")
    _unlocked_write_at(monkeypatch, now - RECENT_WINDOW + 60, key, "recent.txt")
    _unlocked_write_at(monkeypatch, now - 10, key, "new.txt")
    _unlocked_write_at(monkeypatch, now - 10, "/another/repo/.git", "theirs.txt")
    events.emit(STREAM, "restored", repo=key, paths=["new.txt"])  # not a write to count
    assert unlocked_write_count(git_repo) == 3  # the whole log, as before
    assert recent_unlocked_writes(git_repo, now=now) == 2
    assert recent_unlocked_writes(git_repo, window=60, now=now) == 1
    assert recent_unlocked_writes(git_repo, window=5, now=now) == 0
    assert recent_unlocked_writes(git_repo) == 2  # now is now
    with pytest.raises(ValueError):
        recent_unlocked_writes(git_repo, window=0)


@pytest.mark.parametrize(
    ("window", "phrase"),
    [
        (RECENT_WINDOW, "the last hour"),
        (600, "the last 10 minutes"),
        (60, "the last minute"),
        (2 * 86400, "the last 2 days"),
        (90, "the last 90 s"),
        (7200, "the last 2 hours"),
    ],
)
def test_the_window_in_words(window: float, phrase: str) -> None:
    assert window_phrase(window) == phrase
