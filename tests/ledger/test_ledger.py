from __future__ import annotations

import sqlite3
import threading

import pytest

from turnout.ledger.keys import key_fingerprint
from turnout.ledger.migrations import MIGRATIONS
from turnout.ledger.pricing import PriceBook, Usage, load_price_file, parse_price_overrides
from turnout.ledger.store import open_ledger
from turnout.ledger.writer import LedgerWriter


def test_migrations_apply_once_and_are_recorded(tmp_path):
    db = open_ledger(tmp_path / "l.db")
    names = [r["name"] for r in db["_turnout_migrations"].rows]
    assert names == [m.__name__ for m in MIGRATIONS]
    db.conn.close()
    db = open_ledger(tmp_path / "l.db")  # idempotent
    assert db["_turnout_migrations"].count == len(MIGRATIONS)
    assert db.execute("pragma journal_mode").fetchone()[0] == "wal"


def test_writer_writes_everything_from_many_threads(tmp_path):
    w = LedgerWriter(tmp_path / "w.db", max_delay=0.01)
    w.start()

    def produce(t):
        for i in range(500):
            w.submit("flows", {"id": f"{t}-{i}", "started_at": "2026-01-01T00:00:00.000Z", "user": {"nested": t}})

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert w.close()
    conn = sqlite3.connect(tmp_path / "w.db")
    assert conn.execute("select count(*) from flows").fetchone()[0] == 2000
    assert conn.execute("select user from flows limit 1").fetchone()[0].startswith('{"nested"')


def test_writer_keeps_rows_while_the_disk_is_full_and_recovers(tmp_path):
    """A real SQLITE_FULL: the database may not grow past its page limit. Rows wait, then land."""
    w = LedgerWriter(tmp_path / "full.db", max_delay=0.01)
    w.start()
    size = w._db.execute("pragma page_count").fetchone()[0]
    w._db.execute(f"pragma max_page_count={size + 1}")
    big = "x" * 20000
    for i in range(20):
        w.submit("flows", {"id": str(i), "request_body": big})
    assert not w.flush(timeout=1.5)
    assert w.last_error and "full" in w.last_error.lower()
    assert w.backlog == 20
    w._db.execute("pragma max_page_count=1073741823")
    assert w.flush(timeout=10)
    assert w.last_error is None
    assert w.close()
    assert sqlite3.connect(tmp_path / "full.db").execute("select count(*) from flows").fetchone()[0] == 20


def test_key_fingerprint():
    fp = key_fingerprint("sk-proj-abcdefghijklmnop1234")
    assert fp.endswith("-1234") and "abcdef" not in fp
    assert key_fingerprint("sk-proj-abcdefghijklmnop1234") == fp
    assert key_fingerprint("short") and "short" not in key_fingerprint("short")
    assert key_fingerprint(None) is None


def test_prices_from_genai_prices_and_overrides(tmp_path):
    book = PriceBook()
    assert book.cost("openai", "gpt-4o", Usage(1000, 200, 100)) == pytest.approx(
        (800 * 2.5 + 200 * 1.25 + 100 * 10) / 1e6
    )
    assert book.cost("openai", "gpt-4o-2024-08-06", Usage(1000, 0, 0)) == pytest.approx(0.0025)
    assert book.cost("openai", "my-llama", Usage(1000, 0, 0)) is None
    f = tmp_path / "prices.toml"
    f.write_text('[models."my-llama"]\ninput_mtok = 0.5\noutput_mtok = 1.0\n')
    book = PriceBook(load_price_file(f))
    assert book.cost("openai", "my-llama", Usage(1_000_000, 0, 1_000_000)) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="unknown field"):
        parse_price_overrides({"m": {"input_mtok": 1, "outptu_mtok": 2}})
    with pytest.raises(ValueError, match="needs input_mtok"):
        parse_price_overrides({"m": {"output_mtok": 2}})


def test_tiered_prices_cost_and_worst_case_pick_the_tier_the_prompt_reaches():
    """claude-sonnet-4-5 costs $3/$15 per M tokens up to 200k prompt tokens and $6/$22.5 past that."""
    from turnout.ledger.request_size import worst_case

    book = PriceBook()
    rates = book.rates("anthropic", "claude-sonnet-4-5")
    assert (rates.input_mtok, rates.output_mtok) == (3.0, 15.0)  # the base tier
    small, big = Usage(1000, 0, 100), Usage(300_000, 0, 1000)
    assert book.cost("anthropic", "claude-sonnet-4-5", small) == pytest.approx((1000 * 3 + 100 * 15) / 1e6)
    assert book.cost("anthropic", "claude-sonnet-4-5", big) == pytest.approx((300_000 * 6 + 1000 * 22.5) / 1e6)
    for usage in (small, big):  # far from a tier's start, a budget reserves what the call costs uncached
        assert worst_case(usage.prompt_tokens, usage.completion_tokens, rates) == pytest.approx(
            book.cost("anthropic", "claude-sonnet-4-5", usage)
        )
    # just under the 200k start by turnout's count, which is an estimate for Claude: reserved at the dearer tier
    near = Usage(185_000, 0, 1000)
    assert book.cost("anthropic", "claude-sonnet-4-5", near) == pytest.approx((185_000 * 3 + 1000 * 15) / 1e6)
    assert worst_case(185_000, 1000, rates) == pytest.approx((185_000 * 6 + 1000 * 22.5) / 1e6)
    flat = book.rates("openai", "gpt-4o")
    assert worst_case(1000, 100, flat) == pytest.approx((1000 * 2.5 + 100 * 10) / 1e6)


def test_iso_utc_matches_datetime_formatting_to_the_millisecond():
    import datetime as dt
    import random

    from turnout.ledger.store import iso_utc

    def ref(ts: float) -> str:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    r = random.Random(7)
    stamps = [r.uniform(0, 4e9) for _ in range(2000)]
    stamps += [float(r.randint(0, 4_000_000_000)) + frac for frac in (0.0, 0.0004999, 0.9995, 0.9999995, 0.9999999999)]
    stamps += [1_700_000_000 + i * 0.0003 for i in range(5000)]  # many within one second, then the next
    assert [iso_utc(t) for t in stamps] == [ref(t) for t in stamps]
    assert iso_utc(None) is None


def test_backlog_is_bounded_in_bytes_as_well_as_rows(tmp_path):
    """A full disk with big bodies: the writer reports the bound crossed by bytes long before the row bound."""
    w = LedgerWriter(tmp_path / "full.db", max_delay=0.01, max_backlog=10_000, max_backlog_bytes=1_000_000)
    w.start()
    size = w._db.execute("pragma page_count").fetchone()[0]
    w._db.execute(f"pragma max_page_count={size + 1}")
    for i in range(4):
        w.submit("flows", {"id": str(i), "request_body": "x" * 400_000})
    assert w.backlog == 4 and w.backlog_bytes > 1_000_000 and w.over_backlog
    w._db.execute("pragma max_page_count=1073741823")
    assert w.flush(timeout=10) and not w.over_backlog and w.backlog_bytes == 0
    assert w.close()


def test_a_row_sqlite_refuses_is_set_aside_and_the_rest_land(tmp_path):
    w = LedgerWriter(tmp_path / "l.db", max_delay=0.01)
    w.start()
    w.submit("flows", {"id": "a", "user": "u\udc00", "response_body": "\ud83d" + "\ude00"})
    w.submit("events", {"id": "not-an-integer", "kind": "x"})  # the events table's integer key refuses it
    w.submit("flows", {"id": "b"})
    assert w.flush(timeout=10) and w.healthy and w.rejected == 1
    db = sqlite3.connect(tmp_path / "l.db")
    assert db.execute("select id, user, response_body from flows order by id").fetchall() == [
        ("a", "u\ufffd", "😀"),
        ("b", None, None),
    ]
    ((kind, message, data),) = db.execute("select kind, message, data from events").fetchall()
    assert kind == "ledger_row_rejected" and "datatype mismatch" in message and '"not-an-integer"' in data
    assert w.close()
