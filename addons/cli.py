"""The `turnout` command: proxy, env, run (and the reports and tools of later chapters)."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import environment

SCRIPT = Path(__file__).with_name("turnout.py")

# Modules under turnout.addons that add subcommands: each has `register(subparsers)`.
COMMAND_MODULES: list[str] = ["router_cmd", "budgets_cmd", "report_cmd"]
MODES = ("observe", "route", "off")
WEB_COLUMNS = ("tls", "icon", "path", "method", "status", "size", "time", "comment")


def mitmproxy_args(args: argparse.Namespace, *, web: bool) -> list[str]:
    certs = environment.certs_dir()
    environment.ensure_ca(certs)
    argv = [
        "--listen-host", args.host,
        "--listen-port", str(args.port),
        "-s", str(SCRIPT),
        "--set", f"confdir={certs}",
        "--set", "connection_strategy=lazy",
        "--set", "upstream_cert=false",
        "--set", f"turnout_db={Path(args.db).expanduser().absolute()}",
    ]  # fmt: skip
    if args.mode:
        argv += ["--set", f"turnout_mode={args.mode}"]
    if args.upstream:
        argv += ["--set", f"turnout_upstream={args.upstream}"]
    if args.config:
        argv += ["--set", f"turnout_config={Path(args.config).expanduser().absolute()}"]
    if getattr(args, "record", None):
        argv += ["--set", "turnout_record=true"]  # the ledger itself is the recording (args.db)
    if getattr(args, "replay", None):
        argv += ["--set", f"turnout_replay={Path(args.replay).expanduser().absolute()}"]
    if getattr(args, "metrics_port", None):
        argv += ["--set", f"turnout_metrics_port={args.metrics_port}"]
    if web:
        argv += ["--set", f"web_open_browser={'true' if args.open else 'false'}", "--set", f"web_port={args.web_port}"]
        argv += ["--set", "store_streamed_bodies=true"]  # mitmweb shows streamed (SSE) answers too
        if not any(kv.startswith("web_columns=") for kv in args.set or ()):  # show turnout's flow comment
            argv += [a for c in WEB_COLUMNS for a in ("--set", f"web_columns={c}")]
    elif not args.verbose:
        argv += ["--set", "flow_detail=0"]
    if getattr(args, "verbose", False):
        argv += ["--set", "turnout_connection_log=true"]
    for kv in args.set or ():
        argv += ["--set", kv]
    return argv


def cmd_proxy(args: argparse.Namespace) -> int:
    from mitmproxy.tools import main as mitm_main

    argv = mitmproxy_args(args, web=args.web)
    runner = mitm_main.mitmweb if args.web else mitm_main.mitmdump
    return runner(argv) or 0


def cmd_env(args: argparse.Namespace) -> int:
    _, bundle = environment.ensure_ca()
    sys.stdout.write(environment.exports(environment.proxy_env(args.host, args.port, bundle)))
    return 0


def _start_proxy(args: argparse.Namespace) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "turnout.addons.cli", "proxy", "--host", "127.0.0.1", "--port", str(args.port)]
    cmd += ["--db", args.db]
    if args.mode:
        cmd += ["--mode", args.mode]
    if args.record:
        cmd += ["--record", args.record]
    for name in ("upstream", "config", "replay"):
        value = getattr(args, name, None)
        if value:
            cmd += [f"--{name}", value]
    for kv in args.set or ():
        cmd += ["--set", kv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    port: list[int] = []
    ready = threading.Event()
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not port and line.startswith("turnout: listening on "):
                port.append(int(line.rsplit(":", 1)[1]))
                ready.set()
                continue
            lines.append(line)
            if args.verbose or ready.is_set():
                sys.stderr.write(line)
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    ready.wait(60)
    if not port:
        proc.kill()
        sys.stderr.write("".join(lines))
        raise SystemExit("turnout run: the proxy did not start")
    return proc, port[0]


def cmd_run(args: argparse.Namespace) -> int:
    if not args.command:
        raise SystemExit("turnout run: give a command after --, e.g. turnout run -- pytest")
    started = time.time()
    proc, port = _start_proxy(args)
    _, bundle = environment.ensure_ca()
    env = {**os.environ, **environment.proxy_env("127.0.0.1", port, bundle)}
    try:
        child = subprocess.Popen(args.command, env=env)
        # Let ^C and SIGTERM reach the command; the proxy is stopped after it.
        rc = child.wait()
    except FileNotFoundError:
        sys.stderr.write(f"turnout run: command not found: {args.command[0]}\n")
        rc = 127
    except KeyboardInterrupt:
        rc = child.wait()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
    from .summary import print_run_summary

    extra = print_run_summary(args.db, since=started, replay=bool(args.replay))
    return rc if rc != 0 else extra


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="turnout", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    def proxy_options(sp: argparse.ArgumentParser, *, port: int) -> None:
        sp.add_argument("--port", type=int, default=port, help=f"listen port (0 picks a free one; default {port})")
        sp.add_argument("--db", default="turnout.db", help="the ledger file (default ./turnout.db)")
        sp.add_argument("--mode", choices=MODES, help="routing: observe (the default), route, off")
        sp.add_argument("--upstream", help="send provider traffic to this OpenAI-compatible base URL")
        sp.add_argument("--config", help="turnout's TOML config file")
        sp.add_argument("--record", metavar="FILE", help="record every LLM call into this ledger file (replaces --db)")
        sp.add_argument(
            "--replay", metavar="FILE", help="answer only from the recordings in FILE (with --record: record what is new)"
        )
        sp.add_argument("--set", action="append", metavar="OPTION=VALUE", help="any mitmproxy/turnout option")
        sp.add_argument("-v", "--verbose", action="store_true", help="print mitmproxy's flow log and its per-connection lines")

    sp = sub.add_parser("proxy", help="run the proxy (mitmdump, or mitmweb with --web)")
    sp.add_argument("--host", default="127.0.0.1")
    proxy_options(sp, port=8080)
    sp.add_argument("--web", action="store_true", help="run mitmweb: inspect flows live in the browser")
    sp.add_argument("--web-port", type=int, default=8081)
    sp.add_argument("--open", action="store_true", help="with --web: open a browser")
    sp.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    sp.set_defaults(func=cmd_proxy)

    sp = sub.add_parser("env", help="print the exports that point a shell at the proxy")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=8080)
    sp.set_defaults(func=cmd_env)

    sp = sub.add_parser("run", help="run a command through a fresh proxy and summarise its LLM calls")
    proxy_options(sp, port=0)
    sp.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS…")
    sp.set_defaults(func=cmd_run)

    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if getattr(args, "record", None):
        args.db = args.record  # --record FILE: the run's ledger is the recording
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
