"""What the proxy benchmarks share: free ports, a redis-server, the benchmark upstream, a `turnout proxy`
started as a user starts it (its environment from `turnout env`), and a client load of kept-alive
AsyncOpenAI connections that reports throughput and per-call latency."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_line(proc: subprocess.Popen[str], prefix: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line
        if not line and proc.poll() is not None:
            break
    raise RuntimeError(f"no {prefix!r} line")


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server") or sys.exit("redis-server is not installed (scripts/ensure-servers)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL)  # fmt: skip
    time.sleep(0.3)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_upstream() -> tuple[subprocess.Popen[str], str]:
    """scripts/bench's upstream: OpenAI's wire format, answers at once."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "bench"), "--serve-upstream", "--port", str(port)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    wait_line(proc, "listening on ")
    return proc, f"http://127.0.0.1:{port}"


def start_proxy(args: list[str], db: Path, certs: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """`turnout proxy` with `args`, and the environment `turnout env` gives its clients."""
    env = {**os.environ, "TURNOUT_CERTS": str(certs)}
    cmd = [sys.executable, "-m", "turnout.cli", "proxy", "--port", "0", "--db", str(db), *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    port = int(wait_line(proc, "turnout: listening on ").rsplit(":", 1)[1])
    out = subprocess.run([sys.executable, "-m", "turnout.cli", "env", "--port", str(port)], env=env,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    penv = {}
    for line in out.splitlines():
        k, _, v = line.removeprefix("export ").partition("=")
        penv[k] = shlex.split(v)[0] if v else ""
    return proc, penv


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(60)


@dataclass
class Load:
    rate: float  # calls/s
    latencies_ms: list[float] = field(default_factory=list)

    def pct(self, q: float) -> float:
        values = sorted(self.latencies_ms)
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def load(penv: dict[str, str], seconds: float, connections: int, *, prefix: str = "hi") -> Load:
    """`connections` clients (one kept-alive connection each) sending non-streamed chat back to back."""
    import openai

    saved = dict(os.environ)
    os.environ.update(penv)
    os.environ["OPENAI_API_KEY"] = "sk-bench-0001"
    try:
        clients = [openai.AsyncOpenAI(max_retries=0) for _ in range(connections)]
    finally:
        os.environ.clear()
        os.environ.update(saved)
    done = 0
    latencies: list[float] = []
    end = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def worker(c) -> None:
        nonlocal done
        while time.monotonic() < end:
            t = time.perf_counter()
            await c.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": f"{prefix} {next(counter)}"}]
            )
            latencies.append((time.perf_counter() - t) * 1000)
            done += 1

    await asyncio.gather(*(worker(c) for c in clients[:1]))  # warm up one connection's path
    done, end = 0, time.monotonic() + seconds
    latencies.clear()
    t0 = time.monotonic()
    await asyncio.gather(*(worker(c) for c in clients))
    rate = done / (time.monotonic() - t0)
    for c in clients:
        await c.close()
    return Load(rate, list(latencies))
