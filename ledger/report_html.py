"""`turnout report --html FILE`: one self-contained page (inline CSS, inline SVG, no scripts, no
external assets) with the report's tables and charts — for a CI artifact or a weekly e-mail.
"""

from __future__ import annotations

from html import escape
from typing import Any

from . import report as rpt

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2430; margin: 2rem auto;
       max-width: 1180px; padding: 0 1rem; background: #fff; }
h1 { font-size: 1.5rem; margin: 0 0 .2rem; } h2 { font-size: 1.1rem; margin: 2rem 0 .5rem; }
.meta { color: #5b6574; margin: 0 0 1rem; }
.cards { display: flex; flex-wrap: wrap; gap: .75rem; margin: 1rem 0; }
.card { border: 1px solid #d8dde5; border-radius: 8px; padding: .6rem .9rem; min-width: 130px; }
.card b { display: block; font-size: 1.25rem; } .card span { color: #5b6574; font-size: .85rem; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: .35rem .6rem; border-bottom: 1px solid #e6e9ef; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; } th { background: #f4f6f9; font-weight: 600; }
tr.total td { font-weight: 600; border-top: 2px solid #c5ccd6; }
.share { display: inline-block; height: .7rem; background: #4e79a7; vertical-align: middle; margin-right: .4rem; }
.charts { margin-bottom: 1.5rem; display: grid; grid-template-columns: 1fr 1fr; gap: 1.5rem; }
.chart { border: 1px solid #e6e9ef; border-radius: 8px; padding: .5rem; }
.chart h3 { font-size: .95rem; margin: .2rem .4rem .4rem; }
svg text { font: 11px system-ui, sans-serif; fill: #3b4452; }
.legend { font-size: .8rem; margin: .3rem .4rem; } .legend i { display: inline-block; width: .7rem; height: .7rem;
  margin: 0 .25rem 0 .8rem; vertical-align: -1px; }
.empty { color: #5b6574; font-style: italic; }
footer { color: #8a93a1; font-size: .8rem; margin-top: 2rem; }
"""


def _fmt_axis_usd(v: float) -> str:
    return f"${v:,.0f}" if v >= 10 else f"${v:.2f}" if v >= 0.01 or v == 0 else f"${v:.4f}"


def svg_stacked_bars(
    days: list[str], series: dict[str, list[float]], *, width: int = 560, height: int = 260, chart_id: str
) -> str:
    """Stacked columns: one per day, one colour per series (cost per day per model)."""
    left, bottom, top, right = 56, 40, 12, 10
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(vals[i] for vals in series.values()) for i in range(len(days))]
    peak = max(totals, default=0) or 1.0
    n = max(len(days), 1)
    slot = plot_w / n
    col_w = max(1.0, slot * 0.75)
    out = [
        f'<svg id="{chart_id}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img">'
    ]
    for k in range(5):  # gridlines and y labels
        v = peak * k / 4
        y = top + plot_h - plot_h * k / 4
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e9ef"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(_fmt_axis_usd(v))}</text>')
    for i, day in enumerate(days):
        x = left + i * slot + (slot - col_w) / 2
        y = top + plot_h
        for j, (name, vals) in enumerate(series.items()):
            h = plot_h * vals[i] / peak
            if h <= 0:
                continue
            y -= h
            out.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{col_w:.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(day)} · {escape(name)} · '
                f"{escape(rpt.fmt_usd(vals[i]))}</title></rect>"
            )
        step = max(1, n // 8)
        if i % step == 0 or i == n - 1:
            out.append(
                f'<text x="{x + col_w / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle">{escape(day[5:])}</text>'
            )
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#8a93a1"/>')
    out.append("</svg>")
    legend = "".join(
        f'<i style="background:{PALETTE[j % len(PALETTE)]}"></i>{escape(name)}' for j, name in enumerate(series)
    )
    return "".join(out) + f'<div class="legend">{legend}</div>'


def svg_columns(labels: list[str], values: list[float], *, chart_id: str, fmt=str, width: int = 560, height: int = 260,
                color: str = "#4e79a7") -> str:  # fmt: skip
    """Plain columns with the value above each (the latency distribution)."""
    left, bottom, top, right = 40, 40, 20, 10
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(values, default=0) or 1
    n = max(len(labels), 1)
    slot = plot_w / n
    out = [
        f'<svg id="{chart_id}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img">'
    ]
    for i, (label, v) in enumerate(zip(labels, values)):
        h = plot_h * v / peak
        x = left + i * slot + slot * 0.1
        y = top + plot_h - h
        out.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}" height="{h:.1f}" fill="{color}">'
            f"<title>{escape(label)}: {escape(fmt(v))}</title></rect>"
        )
        out.append(f'<text x="{x + slot * 0.4:.1f}" y="{y - 4:.1f}" text-anchor="middle">{escape(fmt(v))}</text>')
        out.append(
            f'<text x="{x + slot * 0.4:.1f}" y="{height - bottom + 16}" text-anchor="middle">{escape(label)}</text>'
        )
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#8a93a1"/>')
    out.append("</svg>")
    return "".join(out)


def svg_savings(groups: list[rpt.GroupStats], *, chart_id: str, width: int = 1140) -> str:
    """Horizontal bars per group: cache saved, routing saved, routing would save (observe)."""
    series = [("cache saved", "cache_saved_usd", "#59a14f"), ("routing saved", "routed_saving_usd", "#4e79a7"),
              ("would save (observe)", "projected_saving_usd", "#edc948")]  # fmt: skip
    rows = [g for g in groups if any(getattr(g, f) for _, f, _ in series)][:12]
    label_w, right, bar_h, gap = 180, 90, 10, 10
    height = max(1, len(rows)) * (3 * bar_h + gap) + 10
    peak = max((getattr(g, f) for g in rows for _, f, _ in series), default=0) or 1.0
    plot_w = width - label_w - right
    out = [
        f'<svg id="{chart_id}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img">'
    ]
    y = 5
    for g in rows:
        out.append(f'<text x="{label_w - 8}" y="{y + 1.5 * bar_h + 4}" text-anchor="end">{escape(g.group[:28])}</text>')
        for name, f, color in series:
            v = getattr(g, f)
            w = max(0.0, plot_w * v / peak)
            out.append(
                f'<rect class="bar" x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h - 1}" fill="{color}">'
                f"<title>{escape(g.group)} · {name}: {escape(rpt.fmt_usd(v))}</title></rect>"
            )
            if v:
                out.append(f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 1}">{escape(rpt.fmt_usd(v))}</text>')
            y += bar_h
        y += gap
    out.append("</svg>")
    legend = "".join(f'<i style="background:{c}"></i>{escape(n)}' for n, _, c in series)
    return "".join(out) + f'<div class="legend">{legend}</div>'


def _table(table_id: str, by: str, headers: list[str], rows: list[tuple[rpt.GroupStats, list[str]]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in [by, *headers])
    body = []
    for g, cells in rows:
        cls = ' class="total"' if g.group == "total" and g is rows[-1][0] else ""
        tds = "".join(f"<td>{c}</td>" for c in [escape(g.group), *cells])
        body.append(f"<tr{cls}>{tds}</tr>")
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _decision_section(decision: dict[str, Any]) -> str:
    """The decision report (ledger/savings.py): per group what routing saves and at what measured quality."""
    e = escape
    q = decision["quality"]
    rate = lambda v: "–" if v is None else f"{v:.0%}"  # noqa: E731
    head = (
        f"<p>Routing the groups whose measured quality clears {q['target_quality']:.0%} would save "
        f"<b>${q['saving_per_month_cleared_usd']:.2f}/month</b> ({q['groups_cleared']} of {q['groups']} groups); "
        f"routing everything the router picks, ${q['saving_per_month_all_usd']:.2f}/month "
        f"(evidence: {q['evidence_calls']} shadow/judge calls, ${q['evidence_cost_usd']:.4f}).</p>"
    )
    cols = ["requested → cheaper", "task", "calls", "saving", "shadowed", "pass rate", "95% low", "recommendation"]
    rows = "".join(
        "<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in (
            f"{g['requested_model']} → {g['would_route_to']}", g["task"], g["calls"], rpt.fmt_usd(g["saving_usd"]),
            g["shadowed"], rate(g["pass_rate"]), rate(g["pass_rate_low"]), g["recommendation"],
        )) + "</tr>"
        for g in decision["groups"]
    )  # fmt: skip
    th = "".join(f"<th>{e(c)}</th>" for c in cols)
    return f'<h2>Routing decisions</h2>{head}<table id="decisions"><thead><tr>{th}</tr></thead><tbody>{rows}</tbody></table>'


def _quality_section(r: rpt.Report) -> str:
    e = escape
    rows = "".join(
        f"<tr><td>{e(q['day'])}</td><td>{e(q['mode'])}</td><td>{e(rpt.fmt_pct(q['pass_rate']))}</td>"
        f"<td>{q['passed'] + q['failed']}</td><td>{q['shadowed']}</td><td>{e(rpt.fmt_usd(q['cost_usd']))}</td></tr>"
        for q in r.quality_daily
    )
    th = "".join(f"<th>{c}</th>" for c in ("day", "mode", "pass rate", "decided", "shadowed", "cost"))
    return f'<h2>Quality (shadow evaluations)</h2><table id="quality"><thead><tr>{th}</tr></thead><tbody>{rows}</tbody></table>'


def render_html(r: rpt.Report, *, ledger: str = "", decision: dict[str, Any] | None = None) -> str:
    """The whole page as one string; `decision`: `ledger.savings.savings(...)`, when there is one to show."""
    e = escape
    title = f"turnout report · by {r.by}"
    parts = [
        "<!doctype html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">{e(rpt.period_text(r))}{" · " + e(ledger) if ledger else ""}</p>',
    ]
    if r.empty:
        parts.append('<p class="empty" id="empty">No LLM calls recorded in this period.</p></body></html>')
        return "\n".join(parts)
    t = r.total
    cards: list[tuple[str, str]] = [
        (rpt.fmt_int(t.requests), "calls"),
        (rpt.fmt_usd(t.cost_usd), "cost"),
        (rpt.fmt_pct(t.error_rate), f"errors ({t.errors:,})"),
        (rpt.fmt_ms(t.latency_p50_ms), f"p50 latency (p95 {rpt.fmt_ms(t.latency_p95_ms)})"),
        (rpt.fmt_usd(t.cache_saved_usd), f"saved by cache ({rpt.fmt_pct(t.cache_hit_rate)} hits)"),
        (rpt.fmt_usd(t.routed_saving_usd), f"saved by routing ({t.routed:,} routed)"),
        (rpt.fmt_usd(t.projected_saving_usd), "routing would save"),
    ]
    parts.append(
        '<div class="cards" id="totals">'
        + "".join(f"<div class=card><b>{e(v)}</b><span>{e(k)}</span></div>" for v, k in cards)
        + "</div>"
    )
    parts.append(f'<p class="meta">{e(rpt.headline(r))}</p>')

    days = sorted({d for d, _, _ in r.daily_cost})
    models: dict[str, list[float]] = {}
    index = {d: i for i, d in enumerate(days)}
    for d, m, c in r.daily_cost:
        models.setdefault(m, [0.0] * len(days))[index[d]] += c
    models = dict(sorted(models.items(), key=lambda kv: -sum(kv[1])))
    if len(models) > len(PALETTE):  # keep the legend readable: the biggest models, then "other"
        keep = list(models)[: len(PALETTE) - 1]
        other = [sum(models[m][i] for m in models if m not in keep) for i in range(len(days))]
        models = {**{m: models[m] for m in keep}, "other": other}
    hist = r.latency_histogram
    parts.append('<h2>Charts</h2><div class="charts">')
    parts.append(
        '<div class="chart"><h3>Cost per day per model</h3>'
        + svg_stacked_bars(days, models, chart_id="chart-daily-cost")
        + "</div>"
    )
    parts.append(
        '<div class="chart"><h3>Latency distribution (calls)</h3>'
        + svg_columns([b for b, _ in hist], [n for _, n in hist], chart_id="chart-latency", fmt=lambda v: f"{int(v):,}")
        + "</div></div>"
    )
    parts.append(
        '<div class="chart"><h3>Cache and routing savings by '
        + e(r.by)
        + "</h3>"
        + svg_savings(r.groups, chart_id="chart-savings")
        + "</div>"
    )

    everyone = [*r.groups, r.total]
    share = lambda g: f'<span class="share" style="width:{g.cost_share * 80:.0f}px"></span>{g.cost_share * 100:.1f}%'  # noqa: E731
    spend_rows: list[tuple[rpt.GroupStats, list[str]]] = [
        (g, [e(rpt.fmt_int(g.requests)), e(f"{g.errors:,} ({rpt.fmt_pct(g.error_rate)})"), e(rpt.fmt_int(g.prompt_tokens)),
             e(rpt.fmt_int(g.cached_prompt_tokens)), e(rpt.fmt_int(g.completion_tokens)), e(rpt.fmt_usd(g.cost_usd)), share(g)])
        for g in everyone
    ]  # fmt: skip
    parts.append(
        "<h2>Spend</h2>"
        + _table(
            "spend",
            r.by,
            ["calls", "errors", "prompt tok", "cached tok", "completion tok", "cost", "share of cost"],
            spend_rows,
        )
    )
    lat_rows = [
        (g, [e(rpt.fmt_ms(v)) for v in (g.latency_p50_ms, g.latency_p95_ms, g.latency_p99_ms)]
            + [e(rpt.fmt_int(g.streams)), e(rpt.fmt_ms(g.ttft_p50_ms)), e(rpt.fmt_ms(g.ttft_p95_ms))])
        for g in everyone
    ]  # fmt: skip
    parts.append(
        "<h2>Latency</h2>" + _table("latency", r.by, ["p50", "p95", "p99", "streams", "ttft p50", "ttft p95"], lat_rows)
    )
    sav_rows = [
        (g, [e(rpt.fmt_int(g.cache_hits)), e(rpt.fmt_pct(g.cache_hit_rate)), e(rpt.fmt_usd(g.cache_saved_usd)),
             e(rpt.fmt_int(g.routed)), e(rpt.fmt_usd(g.routed_saving_usd)), e(rpt.fmt_usd(g.projected_saving_usd)),
             e(rpt.fmt_int(g.blocked))])
        for g in everyone
    ]  # fmt: skip
    parts.append(
        "<h2>Cache and routing</h2>"
        + _table(
            "savings",
            r.by,
            ["cache hits", "hit rate", "cache saved", "routed", "routing saved", "would save (observe)", "blocked"],
            sav_rows,
        )
    )
    if decision is not None and decision["groups"]:
        parts.append(_decision_section(decision))
    if r.quality_daily:
        parts.append(_quality_section(r))
    parts.append(
        "<footer>Percentiles are nearest-rank over every call in the period; TTFT over streamed calls only. "
        "Calls to models without a known price are counted but add nothing to the cost. "
        f"Generated {e(r.until)} by turnout.</footer></body></html>"
    )
    return "\n".join(parts)
