"""`turnout report`: spend, errors, latency and savings per model / provider / feature / … over a period.

The numbers come from `turnout.ledger.report` (SQL over the ledger); this module only renders
them: Rich tables for people (readable without colour: bars and sparklines are characters, not
colours), JSON or CSV for scripts, and `--html FILE` for a CI artifact or a weekly e-mail.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from turnout.ledger import report as rpt
from turnout.ledger.postgres import is_url, safe_url

from .errors import UsageError
from .ledgers import DB_HELP, open_for_reading

if TYPE_CHECKING:
    from rich.table import Table


def register(subparsers: argparse._SubParsersAction) -> None:
    sp = subparsers.add_parser("report", help="spend, errors, latency and savings per model/feature/… from the ledger")
    sp.add_argument("--db", default="turnout.db", help=DB_HELP)
    sp.add_argument("--since", default="7d", help="7d, 24h, 30m, 2w, a date like 2026-11-01, or 'all' (default 7d)")
    sp.add_argument("--by", choices=list(rpt.GROUPS), default="model", help="group rows by (default model)")
    sp.add_argument("--format", choices=("table", "json", "csv"), default="table", help="stdout format (default table)")
    sp.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report to FILE")
    sp.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    try:
        since = rpt.parse_since(args.since)
    except ValueError as e:
        raise UsageError(str(e)) from None
    db = open_for_reading(args.db)
    try:
        r = rpt.report(db, since, args.by)
    finally:
        db.close()
    if args.html:
        from turnout.ledger.report_html import render_html

        from turnout.ledger.savings import savings

        where = args.db if is_url(args.db) else str(Path(args.db).expanduser())
        decision = savings(where, args.since or "")
        Path(args.html).write_text(render_html(r, ledger=safe_url(where), decision=decision), encoding="utf-8")
    if args.format == "json":
        sys.stdout.write(json.dumps(r.to_dict(), indent=2) + "\n")
    elif args.format == "csv":
        sys.stdout.write(r.to_csv())
    else:
        print_table(r, ledger=safe_url(args.db) if is_url(args.db) else str(Path(args.db).expanduser()))
    if args.html:
        sys.stderr.write(f"turnout report: wrote {args.html}\n")
    return 0


def make_console():
    from rich.console import Console

    kw: dict = {"highlight": False}
    if not sys.stdout.isatty():  # a CI log: wide enough for the tables, no colour codes
        kw.update(width=int(os.environ.get("COLUMNS") or 160), color_system=None)
    return Console(**kw)


def print_table(r: rpt.Report, *, ledger: str) -> None:
    from rich import box
    from rich.table import Table

    console = make_console()
    console.print(f"[bold]turnout report[/] · by {r.by} · {rpt.period_text(r)} · {ledger}")
    if r.empty:
        console.print("No LLM calls recorded in this period." + (" Try --since all." if r.since else ""))
        return
    console.print(rpt.headline(r))

    spend = Table(title="Spend", title_justify="left", box=box.SIMPLE_HEAD, show_footer=True)
    spend.add_column(r.by, footer="total")
    for name, footer in [
        ("calls", rpt.fmt_int(r.total.requests)),
        ("errors", f"{rpt.fmt_int(r.total.errors)} {rpt.fmt_pct(r.total.error_rate)}"),
        ("prompt tok", rpt.fmt_int(r.total.prompt_tokens)),
        ("cached tok", rpt.fmt_int(r.total.cached_prompt_tokens)),
        ("completion tok", rpt.fmt_int(r.total.completion_tokens)),
        ("cost", rpt.fmt_usd(r.total.cost_usd)),
    ]:
        spend.add_column(name, footer=footer, justify="right")
    spend.add_column("share of cost", footer="")
    for g in r.groups:
        spend.add_row(
            g.group,
            rpt.fmt_int(g.requests),
            f"{rpt.fmt_int(g.errors)} {rpt.fmt_pct(g.error_rate)}",
            rpt.fmt_int(g.prompt_tokens),
            rpt.fmt_int(g.cached_prompt_tokens),
            rpt.fmt_int(g.completion_tokens),
            rpt.fmt_usd(g.cost_usd) + ("*" if g.unpriced else ""),
            f"{rpt.bar(g.cost_share)} {g.cost_share * 100:5.1f}%",
        )
    console.print(spend)
    if r.total.unpriced:
        console.print(f"* {r.total.unpriced:,} call(s) used a model with no known price: not in the cost.")

    console.print(
        _per_group_table(
            r,
            "Latency",
            [
                ("p50", lambda g: rpt.fmt_ms(g.latency_p50_ms)),
                ("p95", lambda g: rpt.fmt_ms(g.latency_p95_ms)),
                ("p99", lambda g: rpt.fmt_ms(g.latency_p99_ms)),
                ("streams", lambda g: rpt.fmt_int(g.streams)),
                ("ttft p50", lambda g: rpt.fmt_ms(g.ttft_p50_ms)),
                ("ttft p95", lambda g: rpt.fmt_ms(g.ttft_p95_ms)),
            ],
        )
    )
    console.print(
        _per_group_table(
            r,
            "Cache and routing",
            [
                ("cache hits", lambda g: rpt.fmt_int(g.cache_hits)),
                ("hit rate", lambda g: rpt.fmt_pct(g.cache_hit_rate)),
                ("cache saved", lambda g: rpt.fmt_usd(g.cache_saved_usd)),
                ("routed", lambda g: rpt.fmt_int(g.routed)),
                ("routing saved", lambda g: rpt.fmt_usd(g.routed_saving_usd)),
                ("would save (observe)", lambda g: rpt.fmt_usd(g.projected_saving_usd)),
                ("blocked", lambda g: rpt.fmt_int(g.blocked)),
            ],
        )
    )

    days = rpt.daily_totals(r)
    if days:
        values = [c for _, c in days]
        console.print(
            f"[bold]Daily cost[/] {days[0][0]} {rpt.sparkline(values)} {days[-1][0]}  "
            f"(min {rpt.fmt_usd(min(values))} · max {rpt.fmt_usd(max(values))} · "
            f"mean {rpt.fmt_usd(sum(values) / len(values))}/day)"
        )
        top = max(values) or 1.0
        for day, cost in days[-14:]:
            console.print(f"  {day} {rpt.bar(cost / top, 30)} {rpt.fmt_usd(cost)}")
    if r.quality_daily:
        console.print(
            "[bold]Quality (shadow evaluations)[/]: the cheaper model's pass rate of decided verdicts, by day"
        )
        for q in r.quality_daily[-28:]:
            rate = rpt.fmt_pct(q["pass_rate"]) if q["pass_rate"] is not None else "–"
            console.print(
                f"  {q['day']} {q['mode']:<8} {rate:>6} of {q['passed'] + q['failed']} decided "
                f"({q['shadowed']} shadowed, {q['undecided']} tie/unknown, {rpt.fmt_usd(q['cost_usd'])})"
            )


def _per_group_table(r: Any, title: str, columns: list[tuple[str, Callable[[Any], str]]]) -> "Table":
    """One row per group, then the total below a rule."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column(r.by)
    for name, _ in columns:
        table.add_column(name, justify="right")
    for g in [*r.groups, r.total]:
        table.add_row(g.group, *(fmt(g) for _, fmt in columns), end_section=g is r.groups[-1])
    return table
