"""The picture of a wave run: one self-contained HTML page around a hand-written SVG timeline.

Pure, like the report it draws (:mod:`versatil_fs.waves.report`): a :class:`Report` in, text
out. The page needs nothing else to be seen: no script, no stylesheet, font or image fetched (a
Content-Security-Policy of ``default-src 'none'`` says so to the browser), so it can be mailed,
attached to a CI run or opened from a file.

What it shows, top to bottom:

* the run, and the three figures that say how well it went: the makespan, its lower bound (the
  critical path, or the work shared by the agents) and the speedup over one task after another;
* the timeline: one row per agent, one bar per task from its start to its end on the executor's
  running time, coloured by wave; a failed task's bar is outlined in red and marked ✗; every bar
  has a tooltip (``<title>``) with the task, agent, wave, status, duration and files;
* each agent's utilization (busy / makespan) as a bar;
* below the picture, as HTML: the failed tasks, the skipped ones (they have no bar) and every
  task in a table.

Geometry is in :func:`layout` (integers, in CSS pixels from the page's top left corner, since
the SVG is the first thing on a page without margins), so a test can look for each bar where
the layout put it in a real browser's rendering.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import msgspec

from versatil_fs.waves.plan import format_duration
from versatil_fs.waves.report import Report, TaskReport

__all__ = [
    "FAILED",
    "PALETTE",
    "Bar",
    "Layout",
    "UseBar",
    "html_report",
    "layout",
    "wave_colour",
]

WIDTH = 960
LABEL = 180  # the agents' names, left of the timeline
RIGHT = 30
PLOT = WIDTH - LABEL - RIGHT
HEADER = 104  # the title, the figures and the legend
ROW = 30
BAR = 20
AXIS = 34
USE_ROW = 22
USE_BAR = 12
TRACK = "#e3e3e3"
BUSY = "#4d4d4d"
FAILED = "#d62728"
# One colour per wave, cycling; none of them is the failure red or close to it.
PALETTE = (
    "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#17becf",
    "#8c564b", "#e377c2", "#bcbd22", "#393b79", "#7f7f7f",
)
_FILES_SHOWN = 20  # in a tooltip; the rest are counted


class Bar(msgspec.Struct, kw_only=True, frozen=True):
    """One task's bar on the timeline."""

    task: str
    agent: str
    wave: int
    x: int
    y: int
    width: int
    height: int
    colour: str
    failed: bool


class UseBar(msgspec.Struct, kw_only=True, frozen=True):
    """One agent's utilization: the track, and the busy part of it from its left end."""

    agent: str
    x: int
    y: int
    width: int  # the busy part
    track: int  # the whole track (the makespan)
    height: int


class Layout(msgspec.Struct, kw_only=True, frozen=True):
    width: int
    height: int
    agents: list[str]  # one row each, top to bottom
    timeline_top: int
    axis_y: int
    scale: float  # pixels per second
    bars: list[Bar]
    use: list[UseBar]


def wave_colour(wave: int) -> str:
    return PALETTE[(wave - 1) % len(PALETTE)]


def layout(result: Report) -> Layout:
    """Where everything goes (pure arithmetic, shared by the drawing and its tests)."""
    agents = [u.agent for u in result.utilization]
    for task in result.tasks:  # every agent has a row, even one whose tasks were all skipped
        if task.agent not in agents:
            agents.append(task.agent)
    row_of = {a: i for i, a in enumerate(agents)}
    top = HEADER + 8
    span = result.makespan if result.makespan > 0 else 1.0
    scale = PLOT / span
    bars = []
    for task in result.tasks:
        if task.start is None or task.end is None:
            continue
        x = LABEL + math.floor(task.start * scale)
        # Two pixels at least, so a task of a few milliseconds is still seen (and hovered).
        width = max(2, min(round((task.end - task.start) * scale), LABEL + PLOT - x))
        bars.append(Bar(
            task=task.id, agent=task.agent, wave=task.wave, x=x,
            y=top + row_of[task.agent] * ROW + (ROW - BAR) // 2, width=width, height=BAR,
            colour=wave_colour(task.wave), failed=task.status == "failed",
        ))
    axis_y = top + len(agents) * ROW
    use_top = axis_y + AXIS + 26
    busy = {u.agent: u.utilization for u in result.utilization}
    use = [
        UseBar(
            agent=agent, x=LABEL, y=use_top + i * USE_ROW, height=USE_BAR, track=PLOT,
            width=round(PLOT * min(1.0, max(0.0, busy.get(agent, 0.0)))),
        )
        for i, agent in enumerate(agents)
    ]
    height = use_top + len(agents) * USE_ROW + 10
    return Layout(
        width=WIDTH, height=height, agents=agents, timeline_top=top, axis_y=axis_y,
        scale=scale, bars=bars, use=use,
    )


def html_report(result: Report) -> str:
    """The whole page (see the module docstring)."""
    where = layout(result)
    title = f"Wave run {result.run}: {result.status}"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        # Nothing is fetched and nothing runs: the page is whole as it is.
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>{_e(title)}</title>",
        "<style>",
        "body{margin:0;font-family:sans-serif;color:#222;background:#fff}",
        "svg{display:block}",
        "svg text{font-family:sans-serif}",
        "section{padding:0 24px 16px 24px;max-width:1100px}",
        "h2{font-size:16px;margin:18px 0 6px 0}",
        "table{border-collapse:collapse;font-size:13px}",
        "th,td{text-align:left;padding:3px 10px 3px 0;border-bottom:1px solid #ddd}",
        "td.n{text-align:right}",
        ".failed{color:#d62728;font-weight:bold}",
        ".skipped{color:#9a6700}",
        "</style>",
        "</head>",
        "<body>",
        _svg(result, where, title),
        _lists(result),
        "</body>",
        "</html>",
        "",
    ])


# The SVG -------------------------------------------------------------------------------------
def _svg(result: Report, where: Layout, title: str) -> str:
    out = [
        f'<svg width="{where.width}" height="{where.height}" '
        f'viewBox="0 0 {where.width} {where.height}" role="img" '
        f'aria-label="{_e(title)}: timeline of its tasks by agent">',
        f'<rect x="0" y="0" width="{where.width}" height="{where.height}" fill="#ffffff"/>',
        f'<text x="24" y="30" font-size="20" font-weight="bold">{_e(title)}</text>',
        f'<text x="24" y="58" font-size="14">{_e(_figures(result))}</text>',
    ]
    out.extend(_legend(result))
    out.extend(_rows(where))
    out.extend(_axis(result, where))
    by_id = {t.id: t for t in result.tasks}
    for bar in where.bars:
        out.append(_bar(bar, by_id[bar.task]))
    out.extend(_skipped_rows(result, where))
    out.extend(_utilization(result, where))
    out.append("</svg>")
    return "\n".join(out)


def _figures(result: Report) -> str:
    """The makespan, its lower bound and the speedup, in one line above the timeline."""
    parts = [f"Makespan {format_duration(result.makespan)}"]
    parts.append(
        f"lower bound {format_duration(result.lower_bound)}"
        + (f" ({result.efficiency:.0%} efficient)" if result.efficiency else "")
    )
    if result.speedup is not None:
        parts.append(
            f"{result.speedup:.2f}x faster than one after another "
            f"({format_duration(result.sequential)})"
        )
    else:
        parts.append("no task ran")
    counts = _counts(result.tasks)
    if counts:
        parts.append(counts)
    return " · ".join(parts)


def _counts(tasks: Sequence[TaskReport]) -> str:
    found: dict[str, int] = {}
    for task in tasks:
        found[task.status] = found.get(task.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(found.items()))


def _legend(result: Report) -> list[str]:
    waves = sorted({t.wave for t in result.tasks})
    out = []
    x = 24
    for wave in waves:
        out.append(f'<rect x="{x}" y="74" width="14" height="14" fill="{wave_colour(wave)}"/>')
        out.append(f'<text x="{x + 19}" y="86" font-size="12">wave {wave}</text>')
        x += 19 + 7 * len(f"wave {wave}") + 14
        if x > WIDTH - 200:
            break  # a plan of many waves: the colours cycle, the tooltips say the wave
    out.append(
        f'<rect x="{x}" y="75" width="14" height="12" fill="#ffffff" stroke="{FAILED}" '
        'stroke-width="2"/>'
    )
    out.append(f'<text x="{x + 19}" y="86" font-size="12">failed ✗</text>')
    return out


def _rows(where: Layout) -> list[str]:
    out = []
    for i, agent in enumerate(where.agents):
        y = where.timeline_top + i * ROW
        if i % 2:
            out.append(f'<rect x="0" y="{y}" width="{where.width}" height="{ROW}" '
                       'fill="#f6f6f6"/>')
        out.append(
            f'<text x="{LABEL - 10}" y="{y + ROW // 2 + 4}" font-size="13" '
            f'text-anchor="end">{_e(_short(agent, 24))}</text>'
        )
    return out


def _axis(result: Report, where: Layout) -> list[str]:
    y = where.axis_y
    out = [f'<line x1="{LABEL}" y1="{y}" x2="{LABEL + PLOT}" y2="{y}" stroke="#888"/>']
    span = result.makespan if result.makespan > 0 else 1.0
    step = _tick_step(span)
    count = int(span / step + 1e-9)
    for i in range(count + 1):
        x = LABEL + round(i * step * where.scale)
        out.append(f'<line x1="{x}" y1="{where.timeline_top}" x2="{x}" y2="{y + 5}" '
                   'stroke="#ddd"/>' if i else
                   f'<line x1="{x}" y1="{where.timeline_top}" x2="{x}" y2="{y + 5}" '
                   'stroke="#888"/>')
        out.append(f'<text x="{x}" y="{y + 19}" font-size="11" text-anchor="middle">'
                   f'{_e(format_duration(i * step) if i else "0")}</text>')
    out.append(f'<text x="{LABEL + PLOT}" y="{y + 32}" font-size="11" text-anchor="end" '
               'fill="#666">executor running time</text>')
    return out


def _tick_step(span: float) -> float:
    """1, 2 or 5 times a power of ten: at most ten ticks over ``span`` seconds."""
    raw = span / 10
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return float(factor * power)
    return float(10 * power)


def _bar(bar: Bar, task: TaskReport) -> str:
    stroke = f' stroke="{FAILED}" stroke-width="3"' if bar.failed else ""
    parts = [
        '<g class="task">',
        f"<title>{_e(_tooltip(task))}</title>",
        f'<rect x="{bar.x}" y="{bar.y}" width="{bar.width}" height="{bar.height}" '
        f'fill="{bar.colour}"{stroke}/>',
    ]
    label = task.id + (" ✗" if bar.failed else "")
    if 7 * len(label) + 8 <= bar.width:  # the task's name on its bar when it fits
        parts.append(
            f'<text x="{bar.x + 4}" y="{bar.y + bar.height - 6}" font-size="11" '
            f'fill="#ffffff">{_e(label)}</text>'
        )
    elif bar.failed:
        parts.append(
            f'<text x="{bar.x + bar.width + 3}" y="{bar.y + bar.height - 5}" font-size="13" '
            f'fill="{FAILED}">✗</text>'
        )
    parts.append("</g>")
    return "".join(parts)


def _skipped_rows(result: Report, where: Layout) -> list[str]:
    """A row with no bar says why: its agent's tasks were skipped (all of them are listed
    below the picture too)."""
    with_bars = {b.agent for b in where.bars}
    out = []
    for i, agent in enumerate(where.agents):
        if agent in with_bars:
            continue
        skipped = [t for t in result.tasks if t.agent == agent and t.status == "skipped"]
        if not skipped:
            continue
        text = "; ".join(f"{t.id} skipped: {t.skipped_because}" for t in skipped)
        y = where.timeline_top + i * ROW + ROW // 2 + 4
        out.append(f'<text x="{LABEL + 8}" y="{y}" font-size="12" font-style="italic" '
                   f'fill="#8a8a8a">{_e(_short(text, 110))}</text>')
    return out


def _tooltip(task: TaskReport) -> str:
    lines = [
        f"{task.id} ({task.agent})",
        f"wave {task.wave}, {task.status}"
        + (f" (exit {task.exit_code})" if task.exit_code not in (None, 0) else ""),
        f"{format_duration(task.duration)}"
        + (f", {format_duration(task.lock_wait)} waiting for locks" if task.lock_wait >= 0.05
           else ""),
    ]
    if task.files:
        shown = ", ".join(task.files[:_FILES_SHOWN])
        more = len(task.files) - _FILES_SHOWN
        lines.append(f"files: {shown}" + (f" and {more} more" if more > 0 else ""))
    else:
        lines.append("files: none")
    if task.error:
        lines.append(task.error)
    return "\n".join(lines)


def _utilization(result: Report, where: Layout) -> list[str]:
    if not where.use:
        return []
    out = [f'<text x="24" y="{where.use[0].y - 10}" font-size="14" font-weight="bold">'
           "Utilization (busy / makespan)</text>"]
    busy = {u.agent: u for u in result.utilization}
    for bar in where.use:
        use = busy.get(bar.agent)
        share = f"{use.utilization:.0%}" if use is not None else "0%"
        out.append(
            f'<text x="{LABEL - 10}" y="{bar.y + bar.height - 1}" font-size="12" '
            f'text-anchor="end">{_e(_short(bar.agent, 18))} {share}</text>'
        )
        out.append(f'<rect x="{bar.x}" y="{bar.y}" width="{bar.track}" height="{bar.height}" '
                   f'fill="{TRACK}"/>')
        if bar.width:
            out.append(f'<rect x="{bar.x}" y="{bar.y}" width="{bar.width}" '
                       f'height="{bar.height}" fill="{BUSY}"/>')
    return out


# The lists below ----------------------------------------------------------------------------
def _lists(result: Report) -> str:
    failed = [t for t in result.tasks if t.status == "failed"]
    skipped = [t for t in result.tasks if t.status == "skipped"]
    out = ["<section>"]
    if failed:
        out.append("<h2>Failed</h2>")
        out.append("<ul>")
        for task in failed:
            rolled = (f"; rolled back {', '.join(task.rolled_back)}" if task.rolled_back
                      else "")
            log = f" (log: {task.log})" if task.log else ""
            out.append(f'<li><span class="failed">{_e(task.id)}</span> ({_e(task.agent)}): '
                       f"{_e(task.error)}{_e(rolled)}{_e(log)}</li>")
        out.append("</ul>")
    out.append("<h2>Skipped</h2>")
    if skipped:
        out.append("<ul>")
        for task in skipped:
            out.append(f'<li><span class="skipped">{_e(task.id)}</span> ({_e(task.agent)}): '
                       f"{_e(task.skipped_because)}</li>")
        out.append("</ul>")
    else:
        out.append("<p>None.</p>")
    out.append("<h2>Tasks</h2>")
    out.append("<table>")
    out.append("<tr><th>task</th><th>agent</th><th>wave</th><th>status</th><th>time</th>"
               "<th>locks</th><th>files</th></tr>")
    for task in result.tasks:
        ran = task.duration is not None
        out.append(
            f"<tr><td>{_e(task.id)}</td><td>{_e(task.agent)}</td>"
            f'<td class="n">{task.wave}</td><td class="{_e(task.status)}">{_e(task.status)}</td>'
            f'<td class="n">{_e(format_duration(task.duration))}</td>'
            f'<td class="n">{_e(format_duration(task.lock_wait) if ran else "-")}</td>'
            f"<td>{_e(', '.join(task.files)) if ran else '-'}</td></tr>"
        )
    out.append("</table>")
    out.append("</section>")
    return "\n".join(out)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _e(text: str) -> str:
    """Every text put in the page: escaped for element content and quoted attributes alike."""
    return html.escape(text, quote=True)
