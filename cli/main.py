"""`turnout`'s parser and its one error path (cli/errors.py)."""

from __future__ import annotations

import argparse
import importlib
import sys

from turnout.ledger.postgres import is_url

from .errors import Failure, UsageError
from .proxy import MODES, cmd_env, cmd_proxy, cmd_run

# Modules under turnout.cli that add subcommands: each has `register(subparsers)`.
COMMAND_MODULES: list[str] = ["router", "budgets", "report"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="turnout",
        description="An LLM inference proxy: records, prices, caches, budgets and routes every LLM call, with no code change.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    def proxy_options(sp: argparse.ArgumentParser, *, port: int) -> None:
        sp.add_argument("--port", type=int, default=port, help=f"listen port (0 picks a free one; default {port})")
        sp.add_argument(
            "--db", default="turnout.db",
            help="the ledger file (default ./turnout.db), or a central ledger's postgresql://… URL (rows ship "
            "there from the local --outbox)",
        )  # fmt: skip
        sp.add_argument(
            "--outbox", metavar="FILE",
            help="with --db postgresql://…: the local ledger rows wait in until shipped (default ./turnout.db)",
        )  # fmt: skip
        sp.add_argument("--mode", choices=MODES, help="routing: observe (the default), route, off")
        sp.add_argument(
            "--upstream",
            action="append",
            metavar="[PROVIDER=]URL",
            help="send provider traffic to this base URL instead; PROVIDER=URL for one provider (repeatable)",
        )
        sp.add_argument("--config", help="turnout's TOML config file")
        sp.add_argument(
            "--state",
            metavar="redis://HOST:PORT/DB",
            help="share budgets, limits, loop counters and the cache with other instances through this Redis",
        )
        sp.add_argument("--record", metavar="FILE", help="record every LLM call into this ledger file (replaces --db)")
        sp.add_argument(
            "--replay",
            metavar="FILE",
            help="answer only from the recordings in FILE (with --record: record what is new)",
        )
        sp.add_argument("--set", action="append", metavar="OPTION=VALUE", help="any mitmproxy/turnout option")
        sp.add_argument(
            "-v", "--verbose", action="store_true", help="print mitmproxy's flow log and its per-connection lines"
        )

    sp = sub.add_parser("proxy", help="run the proxy (mitmdump, or mitmweb with --web)")
    sp.add_argument("--host", default="127.0.0.1")
    proxy_options(sp, port=8080)
    sp.add_argument("--web", action="store_true", help="run mitmweb: inspect flows live in the browser")
    sp.add_argument("--web-port", type=int, default=8081)
    sp.add_argument("--open", action="store_true", help="with --web: open a browser")
    sp.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    sp.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="N proxy processes on one port (SO_REUSEPORT) sharing one ledger; N > 1 needs --state",
    )  # fmt: skip
    sp.set_defaults(func=cmd_proxy)

    sp = sub.add_parser("env", help="print the exports that point a shell at the proxy")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=8080)
    sp.add_argument(
        "--java", action="store_true",
        help="also JAVA_TOOL_OPTIONS: the JVM's proxy properties and a trust store holding turnout's CA",
    )  # fmt: skip
    sp.set_defaults(func=cmd_env)

    sp = sub.add_parser("run", help="run a command through a fresh proxy and summarise its LLM calls")
    proxy_options(sp, port=0)
    sp.add_argument(
        "--transparent", action="store_true",
        help="for programs that ignore HTTPS_PROXY: run CMD in a network namespace whose HTTPS goes to the "
        "proxy (Linux, root; see docs/clients.md)",
    )  # fmt: skip
    sp.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS…")
    sp.set_defaults(func=cmd_run)

    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "command", None) and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if getattr(args, "record", None):
        args.db = args.record  # --record FILE: the run's ledger is the recording
    args.central = None
    if hasattr(args, "outbox") and is_url(args.db):  # proxy / run with a central ledger
        args.central, args.db = args.db, args.outbox or "turnout.db"
    elif getattr(args, "outbox", None):
        parser.error("--outbox goes with --db postgresql://… (the central ledger)")
    try:
        return args.func(args)
    except (UsageError, Failure) as e:
        sys.stderr.write(f"turnout {args.cmd}: {e}\n")
        return e.exit_code
