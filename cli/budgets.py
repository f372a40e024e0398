"""`turnout budgets`: each budget's spent, reserved, limit, window reset and state, from the ledger.

Spend is rebuilt from the ledger exactly as the proxy rebuilds it on start. Reservations live
only inside a running proxy: this command shows them as 0 (the in-flight requests are not yet
in the ledger). With `--state redis://…` it shows the fleet's counters instead: every instance's
spend and the reservations in flight, as the proxies sharing that Redis see them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from turnout.addons import config
from turnout.ledger.budget_specs import parse_budgets
from turnout.ledger.budgets import BudgetBook, BudgetStatus
from turnout.ledger.postgres import safe_url
from turnout.ledger.store import iso_utc

from .errors import Failure
from .ledgers import DB_HELP, exists, open_for_reading


def budget_statuses(db_path: str, config_path: str | None, now: float | None = None) -> list[BudgetStatus]:
    """Raises ValueError for a bad config; a missing ledger is an empty one."""
    specs = parse_budgets(config.load_config(config_path).get("budgets"))
    book = BudgetBook(specs)
    if specs and exists(db_path):
        db = open_for_reading(db_path)
        try:
            book.rebuild_from_ledger(db, now)
        finally:
            db.close()
    return book.statuses(now)


def shared_statuses(url: str, db_path: str, config_path: str | None) -> list[BudgetStatus]:
    """The counters the ledger knows of (and every global / `match` budget), read from the shared state."""
    import asyncio

    from turnout.ledger.shared_budgets import SharedBudgets
    from turnout.ledger.shared_state import RedisState, StateUnavailable

    now = time.time()
    local = budget_statuses(db_path, config_path, now)
    specs = {s.name: s for s in parse_budgets(config.load_config(config_path).get("budgets"))}
    wanted = [(specs[s.name], s.scope_value) for s in local if s.name in specs]

    async def read() -> list[BudgetStatus]:
        store = RedisState(url, timeout=5)
        try:
            return await SharedBudgets(list(specs.values()), store).statuses(wanted, now)
        finally:
            await store.close()

    try:
        return asyncio.run(read())
    except StateUnavailable as e:
        raise Failure(str(e)) from None


def _amounts(s: BudgetStatus) -> tuple[str, str, str]:
    """(spent, limit, reserved) cells: one line per limited unit."""
    spent, limit, reserved = [], [], []
    if s.limit_usd is not None:
        spent.append(f"${s.spent_usd:,.4f}")
        limit.append(f"${s.limit_usd:,.2f}")
        reserved.append(f"${s.reserved_usd:,.4f}")
    if s.limit_tokens is not None:
        spent.append(f"{s.spent_tokens:,} tok")
        limit.append(f"{s.limit_tokens:,} tok")
        reserved.append(f"{s.reserved_tokens:,} tok")
    if s.limit_requests is not None:
        spent.append(f"{s.spent_requests:,} req")
        limit.append(f"{s.limit_requests:,} req")
        reserved.append(f"{s.reserved_requests:,} req")
    if not spent:  # throttle-only budget
        spent.append(f"{s.spent_requests:,} req")
        limit.append("—")
        reserved.append(f"{s.reserved_requests:,} req")
    return "\n".join(spent), "\n".join(limit), "\n".join(reserved)


def cmd_budgets(args: argparse.Namespace) -> int:
    try:
        if args.state:
            statuses = shared_statuses(args.state, args.db, args.config)
        else:
            statuses = budget_statuses(args.db, args.config)
    except ValueError as e:
        raise Failure(str(e)) from None
    if args.format == "json":
        sys.stdout.write(json.dumps([s.as_dict() for s in statuses], indent=2) + "\n")
        return 0
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not statuses:
        console.print(
            "No budgets configured (add [[budgets]] tables to the config file given with --config).", markup=False
        )
        return 0
    colour = {"ok": "green", "alert": "yellow", "throttled": "dark_orange", "blocked": "red"}
    table = Table(
        title="turnout budgets",
        caption=f"{safe_url(args.db)} · {iso_utc(time.time())}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("budget", overflow="fold", min_width=10)
    table.add_column("window")
    for col in ("spent", "limit", "reserved"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("resets (UTC)", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for s in statuses:
        spent, limit, reserved = _amounts(s)
        used = f"{s.utilisation:.0%}" if s.utilisation < 100 else "∞"
        table.add_row(
            s.name if s.scope == "global" else f"{s.name}\n[dim]{s.scope}={s.scope_value}[/]",
            s.window,
            spent,
            limit,
            reserved,
            (iso_utc(s.resets_at) or "—").replace("T", "\n")[:16],
            f"[{colour.get(s.state, 'white')}]{s.state}[/]\n[dim]{used}[/]",
        )
    console.print(table)
    if args.state:
        console.print(
            f"[dim]the fleet's counters, from {args.state.split('@')[-1]}: spend and reservations in flight.[/]"
        )
    else:
        console.print(
            "[dim]reserved: held by in-flight requests of a running proxy; always 0 here (read from the ledger).[/]"
        )
    return 0


def register(subparsers) -> None:
    sp = subparsers.add_parser("budgets", help="show each budget: spent, reserved, limit, window reset, state")
    sp.add_argument("--db", default="turnout.db", help=DB_HELP)
    sp.add_argument("--config", help="turnout's TOML config file (its [[budgets]] tables)")
    sp.add_argument("--format", choices=("table", "json"), default="table")
    sp.add_argument(
        "--state", metavar="redis://HOST:PORT/DB", help="show the fleet's counters from the proxies' shared state"
    )
    sp.set_defaults(func=cmd_budgets)
