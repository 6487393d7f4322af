"""`versatil wave report` end to end: a real run, its HTML picture rendered by a real headless
Chromium (the bars looked for by their colour where the layout put them), its trace, its
Markdown summary in `$GITHUB_STEP_SUMMARY`, and `wave run --report`.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from integration.helpers import assert_one_line_error, run_versatil

from versatil_fs.waves.picture import BUSY, FAILED, LABEL, PLOT, TRACK, layout
from versatil_fs.waves.records import RunState
from versatil_fs.waves.report import report
from versatil_fs.waves.store import RunStore


def write_plan(path: Path, tasks: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"tasks": tasks}, sort_keys=False))
    return path


def failing_plan(repo: Path) -> Path:
    """Wave 1: two agents side by side; wave 2: one succeeds, one fails; wave 3: skipped."""
    return write_plan(repo / "plan.yaml", [
        {"id": "schema", "agent": "Dana-Database", "writes": ["db"],
         "run": "mkdir -p db; sleep 0.3; echo s > db/schema.sql"},
        {"id": "docs", "agent": "Alex-BA", "writes": ["docs"],
         "run": "mkdir -p docs; sleep 0.5; echo d > docs/r.md"},
        {"id": "api", "agent": "Marcus-Backend", "writes": ["api"], "needs": ["schema"],
         "run": "mkdir -p api; sleep 0.4; echo a > api/a.py"},
        {"id": "ui", "agent": "James-Frontend", "writes": ["ui"], "needs": ["schema"],
         "run": "mkdir -p ui; sleep 0.3; echo u > ui/u.ts; exit 1"},
        {"id": "e2e", "agent": "Maria-QA", "writes": ["e2e"], "needs": ["ui"], "run": "true"},
    ])


def only_run() -> RunState:
    runs = RunStore().runs()
    assert len(runs) == 1
    return runs[0]


def test_wave_run_report_writes_the_picture_and_wave_report_the_trace_and_markdown(
    git_repo: Path, tmp_path: Path
) -> None:
    page = tmp_path / "run.html"
    result = run_versatil("wave", "run", str(failing_plan(git_repo)), "--report", str(page),
                          cwd=git_repo)
    assert result.returncode == 1, result.stderr
    assert f"Wrote the HTML report: {page}" in result.stdout
    run = only_run()
    html = page.read_text()
    assert f"Wave run {run.id}: failed" in html and "<script" not in html
    assert html.count("<title>") == 1 + 4  # the page's, and one per bar: the skipped has none
    assert "needs ui, which failed" in html

    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    trace_file = tmp_path / "run.trace.json"
    again = run_versatil(
        "wave", "report", run.id[:12], "--trace", str(trace_file), "--markdown",
        cwd=git_repo, env={"GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert again.returncode == 0, again.stderr
    assert f"### Wave run {run.id}: failed" in again.stdout
    written = summary.read_text()
    assert written.startswith("earlier step\n### Wave run ")  # appended, not replaced
    assert "| ui | James-Frontend | 2 | ❌ failed |" in written
    assert "| e2e | Maria-QA | 3 | ⏭️ skipped |" in written

    events = json.loads(trace_file.read_text())["traceEvents"]
    threads = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert sorted(threads.values()) == sorted({t.agent for t in run.tasks.values()})
    spans = {e["name"]: e for e in events if e.get("ph") == "X"}
    assert set(spans) == {"schema", "docs", "api", "ui"}
    for name, span in spans.items():
        task = run.tasks[name]
        assert threads[span["tid"]] == task.agent
        assert task.duration is not None
        assert abs(span["dur"] - task.duration * 1e6) <= 1
    # Wave 2 started after wave 1's `schema` ended: the spans say so in microseconds.
    assert spans["api"]["ts"] >= spans["schema"]["ts"] + spans["schema"]["dur"]

    text = run_versatil("wave", "report", cwd=git_repo)  # the latest, as text
    assert text.returncode == 0 and "x faster" in text.stdout and "% idle)" in text.stdout


def test_wave_report_bad_requests_are_one_sentence(git_repo: Path, tmp_path: Path) -> None:
    none = run_versatil("wave", "report", cwd=git_repo)
    assert "No wave runs in this repository yet" in assert_one_line_error(none, 2)
    plan = write_plan(git_repo / "plan.yaml", [{"id": "a", "agent": "A", "run": "true"}])
    assert run_versatil("wave", "run", str(plan), cwd=git_repo).returncode == 0
    target = tmp_path / "missing" / "r.html"
    bad = run_versatil("wave", "report", "--html", str(target), cwd=git_repo)
    line = assert_one_line_error(bad, 2)
    assert f"Cannot write the HTML report to {target}" in line
    assert not target.parent.exists()


# The picture in a real browser ------------------------------------------------------------------
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed, and CI must run the browser test "
                        "(.ci/run installs it: apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); with CI=true "
                    "this fails instead")
    return found


def screenshot(page: Path, out: Path, width: int, height: int, profile: Path) -> None:
    argv = [
        chromium(), "--headless", "--disable-gpu", "--hide-scrollbars",
        "--force-device-scale-factor=1", "--no-first-run", "--disable-extensions",
        "--disable-background-networking", "--disable-dev-shm-usage",
        f"--user-data-dir={profile}", f"--window-size={width},{height}",
        f"--screenshot={out}", page.as_uri(),
    ]
    if os.geteuid() == 0:
        argv.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and out.is_file(), done.stderr[-2000:]


def decode_png(data: bytes) -> tuple[int, int, list[bytes], int]:
    """(width, height, rows of pixels, bytes per pixel) of an 8-bit RGB or RGBA PNG, with the
    standard library only: the chunks, zlib, and the five scanline filters."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    previous = bytearray(stride)
    low, high = int.from_bytes(b"\x7f" * stride), int.from_bytes(b"\x80" * stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind in (0, 2):  # None, or Up: every byte plus the one above, mod 256, all at once
            if kind == 2:
                a, b = int.from_bytes(line), int.from_bytes(previous)
                line = bytearray((((a & low) + (b & low)) ^ ((a ^ b) & high)).to_bytes(stride))
            rows.append(bytes(line))
            previous = line
            continue
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = previous[i]
            corner = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, rows, bpp


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def test_the_picture_in_a_real_browser_has_each_bar_where_the_layout_put_it(
    git_repo: Path, tmp_path: Path
) -> None:
    chromium()  # skip or fail before the run, not after
    page = tmp_path / "run.html"
    result = run_versatil("wave", "run", str(failing_plan(git_repo)), "--report", str(page),
                          cwd=git_repo)
    assert result.returncode == 1, result.stderr
    where = layout(report(only_run()))
    png = tmp_path / "run.png"
    screenshot(page, png, where.width, where.height + 40, tmp_path / "profile")
    width, height, rows, bpp = decode_png(png.read_bytes())
    assert width >= where.width and height >= where.height

    def pixel(x: int, y: int) -> tuple[int, int, int]:
        at = x * bpp
        return rows[y][at], rows[y][at + 1], rows[y][at + 2]

    def near(got: tuple[int, int, int], want: str) -> bool:
        return all(abs(a - b) <= 6 for a, b in zip(got, rgb(want), strict=True))

    assert len(where.bars) == 4
    for bar in where.bars:
        # Inside the bar, above where its label's letters reach: the wave's colour.
        inside = pixel(bar.x + bar.width // 2, bar.y + 3)
        assert near(inside, bar.colour), (bar.task, inside, bar.colour)
        if bar.failed:  # outlined in red, just outside its top edge
            edge = pixel(bar.x + bar.width // 2, bar.y - 1)
            assert near(edge, FAILED), (bar.task, edge)
        else:
            assert not near(pixel(bar.x + bar.width // 2, bar.y - 1), FAILED)
    colours = {bar.colour for bar in where.bars}
    assert len(colours) == 2  # wave 1 and wave 2 apart
    # The skipped agent's row has no bar: nothing there is a wave's colour.
    skipped_row = where.timeline_top + where.agents.index("Maria-QA") * 30 + 15
    for x in range(LABEL + 5, LABEL + PLOT - 5, 40):
        assert not any(near(pixel(x, skipped_row), c) for c in colours)
    # The utilization bars: the busy part, then the rest of the track.
    for use in where.use:
        if use.width > 6:
            assert near(pixel(use.x + use.width // 2, use.y + use.height // 2), BUSY)
        if use.track - use.width > 6:
            assert near(pixel(use.x + (use.width + use.track) // 2, use.y + use.height // 2),
                        TRACK)
