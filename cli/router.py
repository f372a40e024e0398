"""`turnout classify`, `turnout train` and `turnout savings`: the router from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from turnout.addons import config
from turnout.ledger.savings import savings

from .errors import Failure, UsageError
from .ledgers import DB_HELP, open_for_reading


def _policy(config_path: str | None):
    from turnout.router.policy import RoutingPolicy

    table = dict(config.section(config_path, "router"))
    table.pop("mode", None)
    return RoutingPolicy.from_config(table)


def cmd_classify(args: argparse.Namespace) -> int:
    from turnout.router.classify import classify_records

    try:
        policy = _policy(args.config)
    except ValueError as e:
        raise Failure(str(e)) from None
    out = sys.stdout
    for result in classify_records(sys.stdin, policy, provider=args.provider):
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
    return 0


def cmd_train_from_ledger(args: argparse.Namespace) -> int:
    from turnout.ledger.report import parse_since
    from turnout.router.ledger_train import rows_from_ledger, train_from_ledger

    try:
        since = parse_since(args.since) or ""
    except ValueError as e:
        raise UsageError(str(e)) from None
    db = open_for_reading(args.from_ledger)
    try:
        rows = rows_from_ledger(db, since)
    finally:
        db.close()
    try:
        report = train_from_ledger(rows, Path(args.out), seed=args.seed)
    except (OSError, ValueError) as e:
        raise Failure(str(e)) from None
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        from .report import make_console

        console = make_console()
        console.print(
            f"{report.n_rows} shadow verdicts: {report.n_train} train / {report.n_val} validation / {report.n_test} "
            f"test; ledger rows weighted x{report.weight:g} (validation APGR per weight: "
            + ", ".join(f"x{w:g} {a:.3f}" for w, a in report.val_apgr.items())
            + ")"
        )
        console.print(
            f"held-out test rows: APGR new {report.test_apgr_new:.3f} vs shipped {report.test_apgr_shipped:.3f}; "
            f"calibration error new {report.test_ece_new:.3f} vs shipped {report.test_ece_shipped:.3f}"
        )
        if report.test_by_task:
            from rich.table import Table

            table = Table(title="held-out test rows per task: measured pass rate vs each model's pass probability")
            for col in ("task", "rows", "pass rate", "new", "shipped"):
                table.add_column(col, justify="left" if col == "task" else "right")
            for t in report.test_by_task:
                table.add_row(
                    t["task"], str(t["rows"]), f"{t['pass_rate']:.2f}", f"{t['new']:.2f}", f"{t['shipped']:.2f}"
                )
            console.print(table)
        console.print(f"→ {report.artifact}: load it with [router] model_path" if report.written else report.reason)
    return 0 if report.written else 1


def cmd_train(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from turnout.router.train import train

    if args.from_ledger:
        return cmd_train_from_ledger(args)
    if not args.data:
        raise UsageError("give --data FILE… (labelled rows) or --from-ledger DB (shadow verdicts)")

    try:
        report = train([Path(p) for p in args.data], Path(args.out), seed=args.seed)
    except (OSError, ValueError) as e:
        raise Failure(str(e)) from None
    table = Table(title=f"difficulty model {report.version}: validation APGR (random routing = 0.5)")
    table.add_column("source")
    table.add_column("APGR (validation)", justify="right")
    table.add_column("APGR (train)", justify="right")
    for source, value in report.apgr_val.items():
        table.add_row(source, f"{value:.3f}", f"{report.apgr_train.get(source, float('nan')):.3f}")
    console = Console()
    console.print(table)
    console.print(
        f"{report.n_train} training / {report.n_val} validation rows, {report.n_weights} weights → {report.artifact}"
    )
    return 0


def _target_quality(config_path: str | None) -> float:
    from turnout.router.policy import target_quality

    return target_quality(config.section(config_path, "router"))


def _what_if(args: argparse.Namespace) -> dict:
    from turnout.ledger.pricing import PriceBook, load_genai_prices
    from turnout.ledger.savings import what_if
    from turnout.router.policy import RoutingPolicy

    table = dict(config.section(args.config, "router"))
    table.pop("mode", None)
    table["model_path"] = str(args.model)
    try:
        policy = RoutingPolicy.from_config(table)
    except ValueError as e:
        raise Failure(f"--model {args.model}: {e}") from None
    load_genai_prices()
    return what_if(args.db, args.since, policy, PriceBook())


def cmd_savings(args: argparse.Namespace) -> int:
    open_for_reading(args.db).close()  # a missing file or an unreachable central ledger: say so now
    try:
        target = _target_quality(args.config)
    except ValueError as e:
        raise Failure(str(e)) from None
    try:
        data = savings(args.db, args.since, target_quality=target)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.model:
        data["what_if"] = _what_if(args)
    if args.format == "json":
        print(json.dumps(data, indent=2))
        return 0
    from rich.table import Table

    from .report import make_console

    t, q = data["totals"], data["quality"]
    share = (t["saving_usd"] / t["all_cost_usd"] * 100) if t["all_cost_usd"] else 0.0
    console = make_console()
    console.print(
        f"Routing the groups whose measured quality clears {q['target_quality']:.0%} would save "
        f"[bold]${q['saving_per_month_cleared_usd']:.2f}/month[/] ({q['groups_cleared']} of {q['groups']} groups); "
        f"routing everything the router picks, ${q['saving_per_month_all_usd']:.2f}/month "
        f"(at the rate of the last {q['window_days']:g} day(s); evidence: {q['evidence_calls']} shadow/judge calls, "
        f"${q['evidence_cost_usd']:.4f})"
    )
    title = (
        f"Routing decisions since {args.since or 'the beginning'}: {t['calls']} of {t['all_calls']} calls would "
        f"route, saving ${t['saving_usd']:.4f} ({share:.1f}% of ${t['all_cost_usd']:.4f})"
    )
    table = Table(title=title, title_justify="left")
    columns = [("requested → cheaper", "left"), ("task", "left"), ("calls", "right"), ("paid", "right"),
               ("projected", "right"), ("saving", "right"), ("shadowed", "right"), ("pass rate", "right"),
               ("95% low", "right"), ("recommendation", "left")]  # fmt: skip
    for name, justify in columns:
        table.add_column(name, justify=justify)

    def money(v: float | None) -> str:
        return "n/a" if v is None else f"${v:.4f}"

    def rate(v: float | None) -> str:
        return "–" if v is None else f"{v:.0%}"

    for r in data["groups"]:
        table.add_row(
            f"{r['requested_model']} → {r['would_route_to']}", r["task"], str(r["calls"]), money(r["cost_usd"]),
            money(r["projected_cost_usd"]), money(r["saving_usd"]), str(r["shadowed"]), rate(r["pass_rate"]),
            rate(r["pass_rate_low"]), r["recommendation"],
        )  # fmt: skip
    table.add_section()
    table.add_row(
        "total", "", str(t["calls"]), money(t["cost_usd"]), money(t["projected_cost_usd"]), money(t["saving_usd"])
    )
    console.print(table)
    templates = [r for r in data["by_template"] if r["template_fp"]][:10]
    if templates:
        by = Table(title="By prompt template (the code path a call comes from)", title_justify="left")
        for name, justify in [("template", "left"), ("calls", "right"), ("saving", "right"), ("shadowed", "right"),
                              ("pass rate", "right"), ("95% low", "right"), ("recommendation", "left")]:  # fmt: skip
            by.add_column(name, justify=justify)
        for r in templates:
            by.add_row(
                r.get("template_name") or r["template_fp"], str(r["calls"]), money(r["saving_usd"]), str(r["shadowed"]),
                rate(r["pass_rate"]), rate(r["pass_rate_low"]), r["recommendation"],
            )  # fmt: skip
        console.print(by)
    if data["explored"]:
        console.print("Kept calls explored (the router keeps these; the cheaper model's measured quality):")
        for r in data["explored"]:
            console.print(
                f"  {r['requested_model']} → {r['candidate_model']} {r['task']}: {r['shadowed']} shadowed, "
                f"pass rate {rate(r['pass_rate'])} (95% low {rate(r['pass_rate_low'])}) — {r['recommendation']}"
            )
    if "what_if" in data:
        w = data["what_if"]["totals"]
        console.print(
            f"With {args.model}: {w['route_now']} of {w['calls']} observed calls would route (the router then: "
            f"{w['route_before']}; {w['changed']} decisions change), saving ${w['saving_now_usd']:.4f} "
            f"(then ${w['saving_before_usd']:.4f}) on their real usage"
        )
    if t["cache_hits"]:
        console.print(
            f"{t['cache_hits']} more call(s) the router would route were cache hits: free on any model, not counted"
        )
    if t["routed_calls"]:
        console.print(f"routed for real: {t['routed_calls']} calls, realised saving ${t['realised_saving_usd']:.4f}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("classify", help="classify request bodies (JSON lines on stdin) and print routing decisions")
    sp.add_argument("--config", help="turnout's TOML config file (the [router] table)")
    sp.add_argument(
        "--provider", default="openai", choices=("openai", "anthropic"),
        help="whose ladders to route on (the bodies' shape: OpenAI or Anthropic Messages)",
    )  # fmt: skip
    sp.set_defaults(func=cmd_classify)

    sp = sub.add_parser("train", help="retrain the difficulty model (from labelled data or the ledger's verdicts)")
    sp.add_argument("--data", nargs="+", metavar="FILE", help="JSON lines with messages, strong_correct, weak_correct")
    sp.add_argument(
        "--from-ledger", metavar="DB", help="train on this ledger's shadow verdicts mixed with the shipped data"
    )
    sp.add_argument("--since", default="", help="with --from-ledger: only verdicts since (7d, 2026-11-01, …)")
    sp.add_argument("--format", choices=("table", "json"), default="table")
    sp.add_argument("--out", required=True, help="where to write the model (JSON)")
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("savings", help="what routing would save, and at what measured quality (the decision report)")
    sp.add_argument("--db", default="turnout.db", help=DB_HELP)
    sp.add_argument("--config", help="turnout's TOML config file ([router] target_quality)")
    sp.add_argument("--model", type=Path, help="also show what this difficulty model would have decided")
    sp.add_argument("--since", default="", help="7d, 24h, 30m or a date like 2026-11-01")
    sp.add_argument("--format", choices=("table", "json"), default="table")
    sp.set_defaults(func=cmd_savings)
