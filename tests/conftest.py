"""Real parts: a `turnout proxy` process, the local upstream server, the official SDK, SQLite files."""

from __future__ import annotations

import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from upstream import UpstreamServer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("certs")


@pytest.fixture(scope="session")
def upstream() -> Iterator[UpstreamServer]:
    srv = UpstreamServer().start()
    yield srv
    srv.shutdown()


def free_port() -> int:
    """A TCP port nothing listens on now (for a server the test starts, e.g. --metrics-port)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def turnout_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "turnout.cli", *args]


class Proxy:
    def __init__(self, db: Path, args: list[str], certs: Path) -> None:
        self.db = db
        self.args = args
        self.certs = certs
        self.port = 0
        self.output: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.env: dict[str, str] = {}

    def start(self, timeout: float = 60) -> "Proxy":
        penv = {**os.environ, "TURNOUT_CERTS": str(self.certs)}
        self.proc = subprocess.Popen(
            turnout_cmd("proxy", "--port", "0", "--db", str(self.db), *self.args),
            env=penv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc and self.proc.stdout
            for line in self.proc.stdout:
                self.output.append(line)
                if line.startswith("turnout: listening on ") and not self.port:
                    self.port = int(line.rsplit(":", 1)[1])
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        ready.wait(timeout)
        if not self.port:
            self.stop()
            raise RuntimeError("proxy did not start:\n" + "".join(self.output))
        out = subprocess.run(
            turnout_cmd("env", "--port", str(self.port)), env=penv, capture_output=True, text=True, check=True
        ).stdout
        self.env = {}
        for line in out.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            self.env[key] = shlex.split(value)[0] if value else ""
        return self

    @contextmanager
    def environ(self, api_key: str = "sk-test-key-0001") -> Iterator[dict[str, str]]:
        with mock.patch.dict(os.environ, {**self.env, "OPENAI_API_KEY": api_key}):
            os.environ.pop("OPENAI_BASE_URL", None)
            yield dict(os.environ)

    def client(self, api_key: str = "sk-test-key-0001", **kw: Any):
        import openai

        with self.environ(api_key):
            return openai.OpenAI(**kw)

    def anthropic_client(self, api_key: str = "sk-ant-test-key-0001", **kw: Any):
        import anthropic

        with mock.patch.dict(os.environ, {**self.env, "ANTHROPIC_API_KEY": api_key}):
            os.environ.pop("ANTHROPIC_BASE_URL", None)
            return anthropic.Anthropic(**kw)

    def gemini_client(self, api_key: str = "AIzaSyTEST-gemini-key-0001", **kw: Any):
        """google-genai's Client with only `turnout env`'s environment (HTTPS_PROXY, SSL_CERT_FILE)."""
        from google import genai

        with mock.patch.dict(os.environ, {**self.env, "GEMINI_API_KEY": api_key}):
            for name in ("GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_GENAI_USE_VERTEXAI"):
                os.environ.pop(name, None)
            return genai.Client(**kw)

    def async_client(self, api_key: str = "sk-test-key-0001", **kw: Any):
        import openai

        with self.environ(api_key):
            return openai.AsyncOpenAI(**kw)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def rows(self, where: str = "1", params: tuple = ()) -> list[dict[str, Any]]:
        if not self.db.exists():
            return []
        conn = sqlite3.connect(self.db)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(f"select * from flows where {where} order by started_at", params)]
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def wait_rows(self, n: int, where: str = "1", params: tuple = (), timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows(where, params)
            if len(rows) >= n or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)


@pytest.fixture
def make_proxy(tmp_path: Path, certs_dir: Path, upstream: UpstreamServer):
    started: list[Proxy] = []

    def factory(*args: str, db: Path | None = None, with_upstream: bool = True, shadow: bool = False) -> Proxy:
        # Shadow evaluations sample calls at random and send more requests upstream: off unless a test is about them.
        extra = ["--upstream", upstream.url] if with_upstream else []
        if not shadow:
            extra += ["--set", "turnout_shadow=false"]
        p = Proxy(db or tmp_path / f"ledger{len(started)}.db", [*extra, *args], certs_dir).start()
        started.append(p)
        return p

    yield factory
    for p in started:
        p.stop()


@pytest.fixture
def proxy(make_proxy) -> Proxy:
    return make_proxy()


@pytest.fixture
def redis_server(tmp_path: Path):
    from redis_server import RedisServer

    srv = RedisServer(tmp_path).start()
    yield srv
    srv.stop()


@pytest.fixture
def pg_server():
    """A PostgreSQL of the test's own (initdb + pg_ctl on a free port), destroyed after."""
    from pg_server import PostgresServer

    srv = PostgresServer().init().start()
    yield srv
    srv.destroy()
