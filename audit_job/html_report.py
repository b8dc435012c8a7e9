"""Pure: report data -> one self-contained HTML page (inline CSS, inline SVG chart, no
scripts, nothing fetched when it is opened). The data is the reporting service's
`HtmlData`: this module draws what the service returns, as the CLI prints it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, tzinfo
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from audit_job.commands.report import HtmlData

PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
WIDTH, HEIGHT = 880, 320
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 16, 44
MAX_X_LABELS = 12

PER_APP_COLUMNS = [
    ("app_id", "app"),
    ("total", "pairs"),
    ("active", "active"),
    ("inactive", "inactive"),
    ("error", "error"),
    ("pending", "pending"),
    ("active_pct", "active %"),
    ("previous_active_pct", "previous %"),
    ("change_pct", "change (pp)"),
    ("active_change", "change (active)"),
    ("violations_open", "open violations"),
    ("violations_opened", "opened"),
    ("violations_resolved", "resolved"),
]
VIOLATION_COLUMNS = [
    ("severity", "severity"),
    ("app_id", "app"),
    ("user_id", "user"),
    ("expected", "expected"),
    ("observed", "observed"),
    ("source", "rule"),
    ("opened_at", "opened at"),
    ("opened_run_id", "opened by run"),
]
CHANGE_COLUMNS = [
    ("app_id", "app"),
    ("user_id", "user"),
    ("change", "change"),
    ("from_status", "before"),
    ("to_status", "now"),
    ("checked_at", "checked at"),
]

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
       color: #1b1b1b; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; }
.meta { color: #555; margin: 0 0 16px; }
table { border-collapse: collapse; }
th, td { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
.up { color: #1a7f37; } .down { color: #b42318; }
.legend { list-style: none; padding: 0; margin: 8px 0 0; display: flex; flex-wrap: wrap; }
.legend li { margin-right: 18px; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 6px;
          vertical-align: -1px; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
"""


def _time(value: datetime | None, zone: tzinfo | None) -> str:
    if value is None:
        return ""
    shown = value.astimezone(zone) if zone else value
    return shown.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _cell(value: Any, zone: tzinfo | None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _time(value, zone)
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _table(
    rows: Iterable[dict[str, Any]], columns: Sequence[tuple[str, str]], ident: str, zone: tzinfo
) -> str:
    head = "".join(f"<th>{escape(label)}</th>" for _key, label in columns)
    body = []
    for row in rows:
        cells = []
        for key, _label in columns:
            value = row.get(key)
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            css = ["n"] if numeric else []
            if key in ("change_pct", "active_change") and numeric and value:
                css.append("up" if value > 0 else "down")
            attr = f' class="{" ".join(css)}"' if css else ""
            cells.append(f"<td{attr}>{escape(_cell(value, zone))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<table id="{ident}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def chart_svg(runs: Sequence[tuple[int, datetime]], series: dict[str, list[float | None]]) -> str:
    """A line per app: active % (y, 0-100) over the runs (x), gaps where no answer."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    count = len(runs)

    def x(index: int) -> float:
        return LEFT + (plot_w / 2 if count == 1 else plot_w * index / (count - 1))

    def y(pct: float) -> float:
        return TOP + plot_h * (1 - pct / 100)

    parts = [
        f'<svg id="share-chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        'aria-label="Active share per app across runs">'
    ]
    for pct in (0, 25, 50, 75, 100):
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(pct):.1f}" y2="{y(pct):.1f}" '
            f'stroke="{"#999" if pct == 0 else "#e3e3e3"}"/>'
            f'<text x="{LEFT - 6}" y="{y(pct) + 4:.1f}" text-anchor="end">{pct}%</text>'
        )
    step = max(1, -(-count // MAX_X_LABELS))
    for index, (run_id, _started) in enumerate(runs):
        if index % step == 0 or index == count - 1:
            parts.append(
                f'<text x="{x(index):.1f}" y="{HEIGHT - BOTTOM + 16}" '
                f'text-anchor="middle">#{run_id}</text>'
            )
    parts.append(
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">run</text>'
    )
    for number, (app, values) in enumerate(sorted(series.items())):
        color = PALETTE[number % len(PALETTE)]
        commands, pen_down = [], False
        for index, pct in enumerate(values):
            if pct is None:
                pen_down = False
                continue
            commands.append(f"{'L' if pen_down else 'M'}{x(index):.1f},{y(pct):.1f}")
            pen_down = True
        label = escape(app)
        parts.append(
            f'<path class="series" data-app="{label}" d="{" ".join(commands)}" fill="none" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        for index, pct in enumerate(values):
            if pct is not None:
                run_id = runs[index][0]
                parts.append(
                    f'<circle class="point" cx="{x(index):.1f}" cy="{y(pct):.1f}" r="3" '
                    f'fill="{color}"><title>{label}, run {run_id}: {pct:.1f}%</title></circle>'
                )
    parts.append("</svg>")
    return "".join(parts)


def _legend(apps: Sequence[str]) -> str:
    items = "".join(
        f'<li><span class="swatch" style="background:{PALETTE[n % len(PALETTE)]}"></span>'
        f"{escape(app)}</li>"
        for n, app in enumerate(apps)
    )
    return f'<ul class="legend">{items}</ul>'


def _digests(data: HtmlData) -> str:
    """Each charted run's digest (audit-job verify --db recomputes them)."""
    rows = "".join(
        f"<tr><td class='n'>{run_id}</td><td><code>"
        f"{escape(data.digests.get(run_id, 'not sealed'))}</code></td></tr>"
        for run_id, _started in reversed(data.series_runs)
    )
    return (
        "<h2>Evidence: run digests</h2>"
        "<p class='meta'>SHA-256 of each run's canonical form, chained run to run; "
        "check them with <code>audit-job verify --db</code>.</p>"
        f"<table id='digests'><thead><tr><th>run</th><th>digest</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _violations(data: HtmlData, zone: tzinfo) -> str:
    listed = data.open_violations
    opened = sum(row["violations_opened"] or 0 for row in data.per_app)
    resolved = sum(row["violations_resolved"] or 0 for row in data.per_app)
    head = (
        f"<h2>Violations open after run {data.run_id}</h2>"
        f"<p class='meta'>{data.open_total} open: answers that contradict the expected "
        f"state; this run opened {opened} and resolved {resolved} "
        "(<code>audit-job violations --open</code>).</p>"
    )
    if not listed:
        return head + "<p id='violations'>No violation is open.</p>"
    note = ""
    if data.open_total > len(listed):
        note = f"<p class='meta'>The {len(listed)} most severe are shown.</p>"
    return head + _table(listed, VIOLATION_COLUMNS, "violations", zone) + note


def render(data: HtmlData, zone: tzinfo) -> str:
    run = data.run
    compared = (
        f"compared with run {data.previous_run_id}"
        if data.previous_run_id is not None
        else "no earlier run to compare with"
    )
    summary = (
        f"Run {data.run_id} ({escape(str(run['trigger']))}, {escape(str(run['status']))}), "
        f"started {_time(run['started_at'], zone)}; {run['total']} pairs: {run['active']} "
        f"active, {run['inactive']} inactive, {run['failed']} error; {compared}."
    )
    flips_note = ""
    if data.changes_truncated:
        flips_note = f"<p class='meta'>Only the first {len(data.changes)} are shown.</p>"
    if data.newly_seen:
        flips_note += f"<p class='meta'>{data.newly_seen} pairs newly seen in this run.</p>"
    flips = (
        _table(data.changes, CHANGE_COLUMNS, "changes", zone)
        if data.changes
        else "<p id='changes'>No session changed state.</p>"
    )
    first = _time(data.series_runs[0][1], zone) if data.series_runs else ""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>audit-job report: run {data.run_id}</title>",
            f"<style>{STYLE}</style></head><body>",
            f"<h1>Session audit: run {data.run_id}</h1>",
            f'<p class="meta">{summary} Generated {_time(data.generated_at, zone)}.</p>',
            "<h2>Active share per app across recent runs</h2>",
            f'<p class="meta">{len(data.series_runs)} runs since {first}; '
            "active / (active + inactive), errors left out.</p>",
            chart_svg(data.series_runs, data.series),
            _legend(sorted(data.series)),
            f"<h2>Per app in run {data.run_id}</h2>",
            _table(data.per_app, PER_APP_COLUMNS, "per-app", zone),
            _violations(data, zone),
            f"<h2>Changes since run {data.previous_run_id}</h2>"
            if data.previous_run_id is not None
            else "<h2>Changes</h2>",
            flips,
            flips_note,
            _digests(data),
            "</body></html>",
        ]
    )
