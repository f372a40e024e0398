"""A real PostgreSQL server on a free port, for the central-ledger tests: `initdb` into a temporary
directory, `pg_ctl` to start and stop it (fsync off: the tests kill it, they do not test its disk).

`initdb` refuses to run as root, so as root the cluster belongs to the `postgres` user (`runuser`).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from redis_server import free_port


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class PostgresServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir: Path | None = None
        self.as_user: list[str] = []

    @property
    def url(self) -> str:
        return f"postgresql://turnout@127.0.0.1:{self.port}/turnout"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.as_user, *argv], capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> "PostgresServer":
        initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if not initdb or not pg_ctl:
            pytest.skip(
                "PostgreSQL's initdb/pg_ctl are not installed (scripts/test installs Debian's postgresql as root)"
            )
        self.pg_ctl = pg_ctl
        self.dir = Path(tempfile.mkdtemp(prefix="turnout-pg-"))
        if os.geteuid() == 0:
            if not shutil.which("runuser"):
                pytest.skip("running as root without runuser: initdb refuses root and cannot run as postgres")
            try:
                shutil.chown(self.dir, user="postgres")
            except LookupError:
                pytest.skip("running as root and there is no `postgres` user for initdb (it refuses root)")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        data = self.dir / "data"
        r = self._run(initdb, "-D", str(data), "-U", "turnout", "--auth=trust", "-E", "UTF8", "--no-sync", check=False)
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr or r.stdout}")
        self.data = data
        return self

    def start(self) -> "PostgresServer":
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        r = self._run(self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start",
                      check=False)  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {r.stderr or r.stdout}")
        if not getattr(self, "_created", False):
            import psycopg

            admin = f"postgresql://turnout@127.0.0.1:{self.port}/postgres"
            with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
                conn.execute("CREATE DATABASE turnout")
            self._created = True
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.dir is not None:
            self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def query(self, sql: str) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(sql).fetchall()

    def destroy(self) -> None:
        self.stop("immediate")
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
