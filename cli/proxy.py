"""`turnout proxy`, `env` and `run`: the proxy's options, translated once into mitmproxy's."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import turnout.addons as turnout_addons
from turnout.ledger.postgres import is_url, safe_url

from . import environment
from .errors import Failure, UsageError

SCRIPT = Path(turnout_addons.__file__).with_name("turnout.py")  # the mitmproxy script (mitmdump -s)
MODES = ("observe", "route", "off")
WEB_COLUMNS = ("tls", "icon", "path", "method", "status", "size", "time", "comment")
MITMDUMP = "import sys; from mitmproxy.tools.main import mitmdump; sys.exit(mitmdump(sys.argv[1:]) or 0)"


def replay_file(target: str) -> Path:
    """The recording to replay: a ledger file, or the central ledger's recordings pulled into a local copy
    (a replay serves a fixed set of answers, so one copy at start is the whole cassette)."""
    if not is_url(target):
        return Path(target).expanduser().absolute()
    from turnout.ledger.postgres import pull_recordings

    dest = Path(tempfile.mkdtemp(prefix="turnout-replay-")) / "recordings.db"
    try:
        n = pull_recordings(target, dest)
    except ConnectionError as e:
        raise Failure(str(e)) from None
    print(f"turnout: replaying {n} recordings from {safe_url(target)}", flush=True)
    return dest.absolute()


def mitmproxy_args(args: argparse.Namespace, *, web: bool, ship: bool = True) -> list[str]:
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
    bare = None
    for value in args.upstream or ():
        name, sep, _ = value.partition("=")
        if sep and "://" not in name:  # PROVIDER=URL (a bare URL may itself hold "=" in a path)
            argv += ["--set", f"turnout_upstreams={value}"]
        else:
            bare = value  # the last bare URL wins, as a repeated flag does
    if bare is not None:
        argv += ["--set", f"turnout_upstream={bare}"]
    if args.config:
        argv += ["--set", f"turnout_config={Path(args.config).expanduser().absolute()}"]
    if getattr(args, "state", None):
        argv += ["--set", f"turnout_state={args.state}"]
    if getattr(args, "central", None):
        argv += ["--set", f"turnout_central={args.central}"]
        if not ship:
            argv += ["--set", "turnout_central_ship=false"]
    if getattr(args, "record", None):
        argv += ["--set", "turnout_record=true"]  # the ledger itself is the recording (args.db)
    if getattr(args, "replay", None):
        argv += ["--set", f"turnout_replay={replay_file(args.replay)}"]
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

    workers = getattr(args, "workers", 1) or 1
    argv = mitmproxy_args(args, web=args.web, ship=workers == 1)  # workers: the parent ships, once
    if workers < 1:
        raise UsageError("--workers must be 1 or more")
    if workers > 1:
        if args.web:
            raise UsageError("--workers and --web do not go together: mitmweb shows one process's flows")
        from turnout.addons.config import url_setting

        from .workers import run_workers

        try:  # the flags, or the config's [state] url and [ledger] central
            state = args.state or url_setting(args.config, "state")
            central = args.central or url_setting(args.config, "ledger")
        except ValueError as e:
            raise UsageError(str(e)) from None
        if central and not args.central:
            argv += ["--set", "turnout_central_ship=false"]
        return run_workers(workers, argv, host=args.host, port=args.port, db=args.db, state=state, central=central)
    runner = mitm_main.mitmweb if args.web else mitm_main.mitmdump
    return runner(argv) or 0


def cmd_env(args: argparse.Namespace) -> int:
    _, bundle = environment.ensure_ca()
    sys.stdout.write(environment.exports(environment.proxy_env(args.host, args.port, bundle, java=args.java)))
    return 0


def _start_proxy(args: argparse.Namespace, modes: tuple[str, ...] = ()) -> tuple[subprocess.Popen[str], list[int]]:
    """mitmdump in a child process, with the same translation of the options as `turnout proxy`; the
    port of each listener (the regular one first, then `modes`' own)."""
    args.host = "127.0.0.1"
    extra = [a for m in ("regular", *modes) for a in ("--mode", m)] if modes else []
    cmd = [sys.executable, "-c", MITMDUMP, *mitmproxy_args(args, web=False), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    ports: list[int] = []
    ready = threading.Event()
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not ready.is_set() and line.startswith("turnout: listening on "):
                ports.append(int(line.rsplit(":", 1)[1]))
                if len(ports) == 1 + len(modes):
                    ready.set()
                continue
            lines.append(line)
            if args.verbose or ready.is_set():
                sys.stderr.write(line)
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    ready.wait(60)
    if len(ports) < 1 + len(modes):
        proc.kill()
        sys.stderr.write("".join(lines))
        raise Failure("the proxy did not start")
    return proc, ports


def cmd_run(args: argparse.Namespace) -> int:
    if not args.command:
        raise UsageError("give a command after --, e.g. turnout run -- pytest")
    started = time.time()
    if getattr(args, "transparent", False):
        rc = _run_transparent(args)
    else:
        proc, (port,) = _start_proxy(args)
        _, bundle = environment.ensure_ca()
        env = {**os.environ, **environment.proxy_env("127.0.0.1", port, bundle, java=True)}
        try:
            rc = _run_command(args.command, env)
        finally:
            _stop(proc)
    from .summary import print_run_summary

    extra = print_run_summary(args.db, since=started, replay=bool(args.replay))
    return rc if rc != 0 else extra


def _run_command(command: list[str], env: dict[str, str]) -> int:
    try:
        child = subprocess.Popen(command, env=env)
    except FileNotFoundError:
        sys.stderr.write(f"turnout run: command not found: {command[0]}\n")
        return 127
    # ^C reaches the command from the terminal; SIGTERM is passed on to it. Either way turnout waits for the
    # command and then stops the proxy (and undoes a --transparent namespace): nothing is left behind.
    previous = signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    try:
        while True:
            try:
                rc = child.wait()
            except KeyboardInterrupt:
                continue
            return 128 - rc if rc < 0 else rc  # killed by a signal: the shell's 128 + N
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def _run_transparent(args: argparse.Namespace) -> int:
    """CMD in a network namespace whose port-443 connections go to the proxy's transparent listener."""
    from . import transparent

    netns = transparent.Namespace()
    with netns:
        proc, (_, port) = _start_proxy(args, modes=(netns.plan.listen,))
        try:
            netns.redirect(port)
            _, bundle = environment.ensure_ca()
            system = environment.system_roots()
            env = {**os.environ, **environment.trust_env(bundle, java=True)}
            if system is None:
                command = ["ip", "netns", "exec", netns.plan.netns, *args.command]
            else:
                command = transparent.exec_command(netns.plan, bundle, system.resolve(), args.command)
            return _run_command(command, env)
        finally:
            _stop(proc)
