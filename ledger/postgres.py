"""The central ledger in PostgreSQL: its schema, made from the local SQLite ledger's, and idempotent upserts.

The tables are the SQLite ledger's, column for column (INTEGER → integer, REAL → double precision,
TEXT → text), plus `instance`: which turnout ledger the row came from. Columns that later SQLite
migrations add are added here the next time an instance ships (ALTER TABLE … ADD COLUMN IF NOT
EXISTS), so the schema follows the migrations without a second list of them. `flows` and
`cache_entries` keep their keys (flow ids are unique across instances); `events` and `shadow_evals`
are numbered per ledger, so there the key is (instance, id).

The report SQL is written once for both engines: three SQLite functions it uses are defined here
(`instr`, `total`, `group_concat` over numbers), from PostgreSQL built-ins.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

URL_PREFIXES = ("postgresql://", "postgres://")

# The key of each shipped table in the central store.
KEYS: dict[str, tuple[str, ...]] = {
    "flows": ("id",),
    "cache_entries": ("key",),
    "events": ("instance", "id"),
    "shadow_evals": ("instance", "id"),
}

_TYPES = {"INTEGER": "integer", "INT": "integer", "REAL": "double precision", "FLOAT": "double precision"}

# SQLite's functions that turnout's report SQL uses, for PostgreSQL: built-in transition functions, so
# they cost what sum() costs. CREATE OR REPLACE keeps this idempotent.
COMPAT = [
    "CREATE OR REPLACE FUNCTION instr(text, text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE "
    "AS 'SELECT strpos($1, $2)'",
    "CREATE OR REPLACE FUNCTION turnout_join(double precision[]) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE "
    "AS $$SELECT nullif(array_to_string($1, ','), '')$$",
    "CREATE OR REPLACE AGGREGATE total(double precision) (sfunc = float8pl, stype = double precision, "
    "initcond = '0', combinefunc = float8pl, parallel = safe)",
    "CREATE OR REPLACE AGGREGATE group_concat(double precision) (sfunc = array_append, "
    "stype = double precision[], finalfunc = turnout_join)",
]

FLOWS_SUMMARY = """CREATE OR REPLACE VIEW flows_summary AS
SELECT id, instance, started_at, substr(started_at, 1, 10) AS day, provider, endpoint, requested_model, model,
       response_model, stream, status_code, (error IS NULL)::integer AS ok, error, prompt_tokens,
       cached_prompt_tokens, cache_write_tokens, completion_tokens, reasoning_tokens,
       coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0) AS tokens, usage_estimated, cost_usd,
       latency_ms, ttft_ms, api_key_fp, "user", feature, team, project, task, decision, would_route_to, routed,
       cache, blocked_by,
       CASE WHEN cache = 'hit' THEN saved_usd WHEN routed = 1 THEN baseline_cost_usd - cost_usd END AS saved_usd,
       CASE WHEN decision = 'route' AND routed IS NULL THEN cost_usd - projected_cost_usd END AS projected_saving_usd
FROM flows"""

# The indexes the reports and the budget rebuild filter on.
INDEXES = {
    "flows": [("started_at",), ("requested_model", "started_at"), ("api_key_fp", "started_at"), ("origin",)],
    "shadow_evals": [("flow_id",), ("started_at",)],
    "events": [("at",)],
}


def is_url(target: str) -> bool:
    return str(target).startswith(URL_PREFIXES)


def safe_url(url: str) -> str:
    """The URL without its password, for logs and errors."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pg_type(sqlite_type: str) -> str:
    return _TYPES.get(sqlite_type.upper(), "text")


def local_columns(conn: sqlite3.Connection, table: str) -> list[tuple[str, str]]:
    return [(r[1], _pg_type(r[2] or "")) for r in conn.execute(f"PRAGMA table_info([{table}])")]


def sync_schema(pg: Any, local: sqlite3.Connection, tables: list[str]) -> None:
    """Create or extend the central tables to hold every column the local ledger has.

    Only what is missing is created or altered: DDL locks a table exclusively even when IF NOT EXISTS
    makes it a no-op, and an instance reconnecting while the others upsert into several tables would
    then deadlock with them. The catalog is read without table locks."""
    with pg.transaction():
        pg.execute("SELECT pg_advisory_xact_lock(1953853294)")  # instances starting together: one at a time
        have: dict[str, set[str]] = {}
        for table, column in pg.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        ).fetchall():
            have.setdefault(table, set()).add(column)
        indexes = {name for (name,) in pg.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        ).fetchall()}  # fmt: skip
        changed = False
        for table in tables:
            cols = local_columns(local, table)
            keys = KEYS[table]
            if table not in have:
                defs = [f"{_q(c)} {'bigint' if c == 'id' and 'instance' in keys else t}" for c, t in cols]
                pg.execute(
                    f"CREATE TABLE {_q(table)} (instance text, {', '.join(defs)}, "
                    f"PRIMARY KEY ({', '.join(_q(k) for k in keys)}))"
                )
                changed = True
            else:
                for c, t in cols:
                    if c not in have[table]:
                        pg.execute(f"ALTER TABLE {_q(table)} ADD COLUMN IF NOT EXISTS {_q(c)} {t}")
                        changed = True
            for cols_ in INDEXES.get(table, []):
                name = f"idx_{table}_{'_'.join(cols_)}"
                if name not in indexes:
                    pg.execute(f"CREATE INDEX IF NOT EXISTS {_q(name)} ON {_q(table)} ({', '.join(map(_q, cols_))})")
        for sql in COMPAT:
            pg.execute(sql)
        if "flows" in tables and (changed or "flows_summary" not in have):
            pg.execute(FLOWS_SUMMARY)


def upsert(pg: Any, instance: str, rows: dict[str, list[dict[str, Any]]]) -> int:
    """Insert or update every row, keyed as the central table is: shipping twice is harmless."""
    n = 0
    with pg.transaction():
        for table, items in rows.items():
            if not items:
                continue
            cols = ["instance", *items[0]]
            keys = KEYS[table]
            # in key order: two instances upserting the same keys (a shared cache's entries) then lock
            # them in the same order, and cannot deadlock
            items = sorted(items, key=lambda r: tuple(str(r.get(k)) for k in keys if k != "instance"))
            updates = ", ".join(f"{_q(c)} = EXCLUDED.{_q(c)}" for c in cols if c not in keys)
            sql = (
                f"INSERT INTO {_q(table)} ({', '.join(map(_q, cols))}) VALUES ({', '.join(['%s'] * len(cols))}) "
                f"ON CONFLICT ({', '.join(map(_q, keys))}) DO UPDATE SET {updates}"
            )
            with pg.cursor() as cur:
                cur.executemany(sql, [(instance, *(_clean(r.get(c)) for c in cols[1:])) for r in items])
            n += len(items)
    return n


def _clean(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL; SQLite's can (a body, say). Bytes (a BLOB) ship as they are.
    return value.replace("\x00", "\ufffd") if isinstance(value, str) and "\x00" in value else value


def connect(url: str, *, timeout: float = 5.0) -> Any:
    """A psycopg connection (autocommit; `transaction()` blocks group statements)."""
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(timeout)))


_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\?|%")


def to_pg(sql: str) -> str:
    """SQLite's `?` placeholders as psycopg's `%s` (and a literal `%` doubled), leaving quoted text alone."""

    def sub(m: re.Match[str]) -> str:
        t = m.group(0)
        return "%s" if t == "?" else "%%" if t == "%" else t

    return _PLACEHOLDER.sub(sub, sql)


class PgLedger:
    """A read connection to the central ledger with the DB-API surface the reports use on SQLite
    (`execute(sql, params)` with `?` placeholders, returning a cursor; `close()`)."""

    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        import psycopg
        from psycopg.types.numeric import FloatLoader

        self.url = url
        try:
            self.pg = connect(url)
        except psycopg.Error as e:
            raise ConnectionError(f"central ledger {safe_url(url)} unavailable: {e}".strip()) from None
        # avg() and sum() over integers give numeric: floats here, as SQLite gives
        self.pg.adapters.register_loader("numeric", FloatLoader)
        self.pg.execute("SET default_transaction_read_only = on")
        missing = {"flows", "events", "shadow_evals", "cache_entries"} - self.tables()
        if missing:
            raise ConnectionError(
                f"central ledger {safe_url(url)} has no {', '.join(sorted(missing))} table yet: "
                "nothing has been shipped to it (start `turnout proxy --db` with this URL)"
            )

    def tables(self) -> set[str]:
        cur = self.pg.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
        return {r[0] for r in cur.fetchall()}

    def execute(self, sql: str, params: Any = ()) -> Any:
        params = list(params or [])
        return self.pg.execute(to_pg(sql), params) if params else self.pg.execute(sql)

    def close(self) -> None:
        self.pg.close()

    def __enter__(self) -> "PgLedger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def pull_recordings(url: str, dest: Any) -> int:
    """Copy the central ledger's recordings (`cache_entries`) into a new local ledger at `dest`, for replay.
    Returns how many. Raises ConnectionError when the central ledger cannot be read."""
    from pathlib import Path

    from .store import open_ledger

    dest = Path(dest)
    dest.unlink(missing_ok=True)
    db = open_ledger(dest)
    n = 0
    try:
        with PgLedger(url) as pg:
            local = [c for c, _ in local_columns(db.conn, "cache_entries")]
            cur = pg.execute(f"SELECT {', '.join(map(_q, local))} FROM cache_entries ORDER BY created_at")
            with db.conn:
                while rows := cur.fetchmany(500):
                    db["cache_entries"].insert_all([dict(zip(local, r)) for r in rows], replace=True)
                    n += len(rows)
    finally:
        db.close()
    return n
