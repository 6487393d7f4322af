"""The wave run's picture, trace and Markdown summary, as pure functions of a report (no disk),
and the per-wave estimate on a number of agents."""

from __future__ import annotations

import json
from html.parser import HTMLParser

from hypothesis import given, settings
from hypothesis import strategies as st

from versatil_fs.cli.wave_text import markdown
from versatil_fs.waves.picture import FAILED, LABEL, PLOT, html_report, layout, wave_colour
from versatil_fs.waves.report import AgentUse, Report, TaskReport, WaveReport
from versatil_fs.waves.resolve import wave_estimate
from versatil_fs.waves.trace import trace, trace_json

HOSTILE = '<script>alert("x")</script> & \'q\''


def task(id: str, agent: str, wave: int, status: str, start: float | None, end: float | None,
         **more: object) -> TaskReport:
    ran = start is not None and end is not None
    return TaskReport(
        id=id, agent=agent, wave=wave, status=status,
        duration=(end - start) if ran else None,  # type: ignore[operator]
        lock_wait=0.0, exit_code=(1 if status == "failed" else 0) if ran else None,
        start=start, end=end, **more,  # type: ignore[arg-type]
    )


def sample(agent_b: str = "Marcus", files: list[str] | None = None, error: str = "") -> Report:
    tasks = [
        task("schema", "Dana", 1, "succeeded", 0.0, 4.0, files=["db/schema.sql"]),
        task("docs", "Alex", 1, "succeeded", 0.0, 2.0),
        task("api", agent_b, 2, "failed", 4.0, 10.0, files=files or ["api/a.py"],
             error=error or "exited with 1"),
        task("e2e", "Maria", 3, "skipped", None, None,
             skipped_because="needs api, which failed"),
    ]
    return Report(
        run="20261201-120000-abcd", status="failed", makespan=10.0, sequential=12.0,
        speedup=1.2, lower_bound=10.0, lower_bound_estimate=0.0, efficiency=1.0, agents=5,
        tasks=tasks,
        waves=[WaveReport(number=1, tasks=["schema", "docs"], duration=4.0),
               WaveReport(number=2, tasks=["api"], duration=6.0),
               WaveReport(number=3, tasks=["e2e"], duration=None)],
        utilization=[
            AgentUse(agent="Dana", busy=4.0, utilization=0.4, timeline="", sequential_timeline=""),
            AgentUse(agent="Alex", busy=2.0, utilization=0.2, timeline="", sequential_timeline=""),
            AgentUse(agent=agent_b, busy=6.0, utilization=0.6, timeline="",
                     sequential_timeline=""),
            AgentUse(agent="Maria", busy=0.0, utilization=0.0, timeline="",
                     sequential_timeline=""),
        ],
        failed=["api"], skipped=["e2e"],
    )


def test_bars_run_from_start_to_end_one_row_per_agent_coloured_by_wave() -> None:
    where = layout(sample())
    assert where.agents == ["Dana", "Alex", "Marcus", "Maria"]
    bars = {b.task: b for b in where.bars}
    assert set(bars) == {"schema", "docs", "api"}  # the skipped task has no bar
    assert bars["schema"].x == LABEL and bars["schema"].width == round(0.4 * PLOT)
    assert bars["api"].x == LABEL + round(0.4 * PLOT) and bars["api"].width == round(0.6 * PLOT)
    assert bars["schema"].colour == bars["docs"].colour == wave_colour(1)
    assert bars["api"].colour == wave_colour(2) != wave_colour(1)
    assert bars["api"].failed and not bars["schema"].failed
    rows = sorted({b.y for b in where.bars})
    assert len(rows) == 3 and bars["schema"].y < bars["docs"].y < bars["api"].y
    assert [u.width for u in where.use] == [round(PLOT * s) for s in (0.4, 0.2, 0.6, 0.0)]
    assert where.height > max(u.y for u in where.use)


def test_a_task_of_no_time_still_has_a_bar_to_see() -> None:
    result = sample()
    result.tasks[1] = task("docs", "Alex", 1, "succeeded", 1.0, 1.0)
    assert {b.task: b for b in layout(result).bars}["docs"].width == 2


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.titles: list[str] = []
        self.text: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_title:
            self.titles.append(data)


def test_the_page_is_self_contained_with_a_tooltip_per_bar_and_the_figures_above() -> None:
    page = html_report(sample())
    parsed = _Collect()
    parsed.feed(page)
    assert "script" not in parsed.tags and "<script" not in page.lower()
    assert "http" not in page.replace('http-equiv="Content-Security-Policy"', "")
    assert "default-src 'none'" in page
    assert parsed.tags.count("svg") == 1
    tooltips = parsed.titles[1:]  # the first is the page's
    assert len(tooltips) == 3
    api = next(t for t in tooltips if t.startswith("api (Marcus)"))
    assert "wave 2, failed" in api and "6.0s" in api and "files: api/a.py" in api
    text = " ".join(parsed.text)
    assert "Makespan 10s" in text and "lower bound 10s" in text and "1.20x faster" in text
    assert "needs api, which failed" in text  # the skipped task, listed
    assert "e2e skipped: needs api, which failed" in text  # and said in its empty row
    assert f'stroke="{FAILED}"' in page


def test_every_text_put_in_the_page_is_escaped() -> None:
    page = html_report(sample(agent_b=HOSTILE, files=[HOSTILE, "a&b.txt"], error=HOSTILE))
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;q&#x27;" in page
    parsed = _Collect()
    parsed.feed(page)
    assert "script" not in parsed.tags
    assert any(HOSTILE in t for t in parsed.titles[1:])  # the tooltip reads it back whole


def test_the_trace_has_one_span_per_task_that_ran_on_one_named_thread_per_agent() -> None:
    data = json.loads(trace_json(sample()))
    events = data["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events
             if e["ph"] == "M" and e["name"] == "thread_name"}
    assert sorted(names.values()) == ["Alex", "Dana", "Marcus", "Maria"]
    assert len(set(names)) == 4
    spans = {e["name"]: e for e in events if e["ph"] == "X"}
    assert set(spans) == {"schema", "docs", "api"}
    api = spans["api"]
    assert api["ts"] == 4_000_000 and api["dur"] == 6_000_000 and names[api["tid"]] == "Marcus"
    assert api["cat"] == "wave 2" and api["args"]["status"] == "failed"
    assert all(isinstance(e["ts"], int) and isinstance(e["dur"], int) for e in spans.values())
    assert data["otherData"]["skipped"] == {"e2e": "needs api, which failed"}
    assert trace(sample()) == data


def test_the_markdown_summary_is_a_table_with_its_cells_escaped() -> None:
    text = markdown(sample(error="a | b\nc <d>"))
    lines = text.splitlines()
    assert lines[0] == "### Wave run 20261201-120000-abcd: failed"
    assert "| Makespan | 10s |" in lines
    rows = [line for line in lines if line.startswith("| api ")]
    assert rows == ["| api | Marcus | 2 | ❌ failed | 6.0s | 1 | a \\| b c &lt;d&gt; |"]
    assert any(line.startswith("| e2e ") and "skipped" in line for line in lines)


def test_a_wave_estimate_counts_the_agents_that_run_it() -> None:
    assert wave_estimate([3.0] * 7, 5) == 6.0
    assert wave_estimate([3.0] * 7, 7) == 3.0
    assert wave_estimate([3.0] * 7, 1) == 21.0
    assert wave_estimate([5.0, 1.0, 1.0, 1.0], 2) == 5.0  # the long one alone, the rest beside
    assert wave_estimate([], 5) == 0.0
    for estimates, agents in (([4.0, 3.0, 3.0, 2.0, 2.0, 2.0], 3), ([1.0] * 10, 4)):
        got = wave_estimate(estimates, agents)
        assert got >= max(estimates) and got >= sum(estimates) / agents


_TAGS = {"html", "head", "meta", "title", "style", "body", "svg", "rect", "text", "line", "g",
         "section", "h2", "ul", "li", "span", "p", "table", "tr", "th", "td"}


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=5, unique=True),
    spans=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=5),
    makespan=st.floats(0.001, 1e5),
    error=st.text(max_size=30),
)
def test_any_run_lays_out_inside_the_plot_and_any_text_stays_text(
    names: list[str], spans: list[tuple[float, float]], makespan: float, error: str
) -> None:
    tasks = []
    for i, (a, b) in enumerate(spans):
        start, end = sorted((a * makespan, b * makespan))
        agent = names[i % len(names)]
        status = "failed" if i % 2 else "succeeded"
        tasks.append(task(f"t{i}", agent, 1 + i % 3, status, start, end, files=[error],
                          error=error))
    result = Report(
        run="r", status="failed", makespan=makespan, sequential=makespan, speedup=1.0,
        lower_bound=makespan, lower_bound_estimate=0.0, efficiency=1.0, agents=3, tasks=tasks,
        waves=[], utilization=[], failed=[], skipped=[],
    )
    where = layout(result)
    assert sorted(where.agents) == sorted({t.agent for t in tasks})
    for bar in where.bars:
        assert bar.x >= LABEL and bar.width >= 2 and bar.x + bar.width <= LABEL + PLOT + 2
        assert where.timeline_top <= bar.y < where.axis_y
    parsed = _Collect()
    parsed.feed(html_report(result))
    assert set(parsed.tags) <= _TAGS
    assert len(parsed.titles) == 1 + len(where.bars)
