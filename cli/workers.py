"""`turnout proxy --workers N`: N mitmdump processes accepting on one port (SO_REUSEPORT), one ledger.

mitmproxy opens its listening socket with `asyncio.start_server(handler, host, port)` and has no
option for SO_REUSEPORT, so each worker runs mitmdump with that one call given `reuse_port=True`;
the kernel then spreads new connections over the workers. Budgets, limits and the cache must be
shared between them, so N > 1 needs `--state` (an in-process default would be N separate budgets).
The ledger is one SQLite file in WAL mode: each worker has its own background writer, and the
parent migrates it once before any worker starts (concurrent first migrations would race).
SIGTERM / SIGINT reach every worker, and each drains its calls in flight as a single proxy does.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from turnout.ledger.store import open_ledger

from .errors import Failure, UsageError

WORKER = (
    "import asyncio, functools, sys\n"
    "asyncio.start_server = functools.partial(asyncio.start_server, reuse_port=True)\n"
    "from mitmproxy.tools.main import mitmdump\n"
    "sys.exit(mitmdump(sys.argv[1:]) or 0)\n"
)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_workers(
    n: int, argv: list[str], *, host: str, port: int, db: str, state: str | None, central: str | None = None
) -> int:
    if not state:
        raise UsageError(
            "--workers N > 1 needs --state redis://…: the workers must share budgets, limits and the cache "
            "(without it each worker would enforce every budget on its own)"
        )
    if not hasattr(socket, "SO_REUSEPORT"):
        raise Failure("--workers needs SO_REUSEPORT (Linux, BSD, macOS)")
    open_ledger(Path(db).expanduser().absolute()).conn.close()  # migrations once, before the workers race for them
    shipper = None
    if central:  # one shipper for the workers' one ledger: here, not in each worker
        from turnout.ledger.shipper import Shipper

        shipper = Shipper(Path(db).expanduser().absolute(), central, on_change=_central_changed)
        shipper.start()
    if port == 0:
        port = free_port(host)
    argv = _with_port(argv, port)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, *_metrics_port(argv, i)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, bufsize=1) for i in range(n)]  # fmt: skip
    ready = threading.Semaphore(0)

    def pump(i: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("turnout: listening on "):
                ready.release()
                continue
            sys.stdout.write(f"[worker {i}] {line}")
            sys.stdout.flush()

    for i, proc in enumerate(procs):
        threading.Thread(target=pump, args=(i, proc), daemon=True).start()

    def forward(signum, _frame) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    started = 0
    for _ in procs:
        while not ready.acquire(timeout=0.5):
            if any(p.poll() is not None for p in procs):
                break
        else:
            started += 1
            continue
        break
    if started == n:
        print(f"turnout: listening on {host}:{port}", flush=True)
        print(f"turnout: {n} workers (pids {', '.join(str(p.pid) for p in procs)}) sharing {state}", flush=True)
    else:
        forward(signal.SIGTERM, None)
    codes = [p.wait() for p in procs]
    if shipper is not None and not shipper.stop(5):
        print(f"turnout: {shipper.backlog} rows wait in {db} for the central ledger; they ship on the next start")
    if started != n:
        raise Failure("a worker did not start (its output is above)")
    return max(codes, key=abs)


def _central_changed(healthy: bool, reason: str) -> None:
    state = "back; shipping the backlog" if healthy else f"unavailable ({reason}); rows wait in the local ledger"
    print(f"turnout: central ledger {state}", flush=True)


def _with_port(argv: list[str], port: int) -> list[str]:
    out = list(argv)
    i = out.index("--listen-port")
    out[i + 1] = str(port)
    return out


def _metrics_port(argv: list[str], i: int) -> list[str]:
    """Worker i serves /metrics on the given port + i (each process has its own counters)."""
    out = list(argv)
    for j, a in enumerate(out):
        if a.startswith("turnout_metrics_port=") and i:
            out[j] = f"turnout_metrics_port={int(a.split('=', 1)[1]) + i}"
    return out
