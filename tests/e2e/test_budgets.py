"""Budgets, breakers and attribution end to end: a real `turnout proxy`, the official SDK, the ledger."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import openai
import pytest

from conftest import turnout_cmd

MSG = [{"role": "user", "content": "hello there"}]
# Identical calls would be cache hits (free, so never counted or blocked): these tests switch the cache off.
NO_CACHE = ("--set", "turnout_cache=false")


def write_config(tmp_path: Path, text: str, name: str = "turnout.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def budget_code(exc: openai.APIStatusError) -> str | None:
    return (exc.body or {}).get("code") if isinstance(exc.body, dict) else None


def test_budget_blocks_with_insufficient_quota_then_lets_through_after_the_window(make_proxy, tmp_path, upstream):
    cfg = write_config(tmp_path, '[[budgets]]\nname = "tiny"\nrolling = "3s"\nrequests = 2\n')
    proxy = make_proxy("--config", str(cfg), *NO_CACHE)
    client = proxy.client(max_retries=0)
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o", messages=MSG)
    sent = len(upstream.requests)
    with pytest.raises(openai.RateLimitError) as ei:
        client.chat.completions.create(model="gpt-4o", messages=MSG)
    err = ei.value
    assert budget_code(err) == "budget_exceeded"
    assert err.body["type"] == "insufficient_quota"
    assert 'budget "tiny"' in err.body["message"] and "2 of 2 requests" in err.body["message"]
    assert "resets at" in err.body["message"]
    assert len(upstream.requests) == sent  # never reached the provider
    time.sleep(3.1)
    client.chat.completions.create(model="gpt-4o", messages=MSG)
    rows = proxy.wait_rows(4)
    assert [r["blocked_by"] for r in rows] == [None, None, "budget:tiny", None]
    assert rows[2]["status_code"] == 429 and rows[2]["cost_usd"] is None


def test_concurrent_requests_overshoot_at_most_the_in_flight_reservations(make_proxy, tmp_path):
    limit = 0.002
    cfg = write_config(tmp_path, f'[[budgets]]\nname = "near"\nwindow = "day"\nusd = {limit}\nalert_at = 0.5\n')
    proxy = make_proxy("--config", str(cfg), *NO_CACHE)
    client = proxy.client(max_retries=0)
    # spend most of it first: each call costs ~$0.00015 (2 words in at $2.5/M, ~15 out at $10/M)
    spent, n = 0.0, 0
    while spent < limit * 0.8:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSG, max_tokens=40)
        n += 1
        spent = sum(r["cost_usd"] for r in proxy.wait_rows(n))
    assert raw.headers["x-turnout-budget"].startswith("near=")  # past alert_at = 0.5
    assert "state=alert" in raw.headers["x-turnout-budget"]
    before = len(proxy.rows())
    aclient = proxy.async_client(max_retries=0)

    async def one(i: int) -> str:
        try:
            await aclient.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": f"hello there {i}"}], max_tokens=40,
                extra_headers={"x-test-hang-ms": "300"},
            )  # fmt: skip
            return "ok"
        except openai.RateLimitError as e:
            assert budget_code(e) == "budget_exceeded"
            return "blocked"

    async def burst() -> list[str]:
        return await asyncio.gather(*(one(i) for i in range(50)))

    outcomes = asyncio.run(burst())
    rows = proxy.wait_rows(before + 50)
    assert len(rows) == before + 50
    total = sum(r["cost_usd"] or 0 for r in rows)
    # the worst case one request can reserve: prompt (tiktoken + overhead, < 20 tokens) x $2.5/M + 40 x $10/M
    worst = 20 * 2.5e-6 + 40 * 10e-6
    assert outcomes.count("blocked") >= 40
    assert total <= limit + worst
    admitted = [r for r in rows[before:] if r["blocked_by"] is None]
    assert len(admitted) == outcomes.count("ok")
    assert all(r["budget_alerts"] for r in admitted)  # past alert_at: every admitted one carries the alert
    proxy.stop()
    conn = sqlite3.connect(proxy.db)
    kinds = [k for (k,) in conn.execute("select kind from events order by id")]
    conn.close()
    assert kinds.count("budget_alert") == 1 and kinds.count("budget_blocked") == 1  # once per window each


def test_long_prompt_is_reserved_at_its_full_token_count(make_proxy, tmp_path):
    """A prompt long enough to be counted off the event loop is still counted in full (o200k for gpt-4o) and reserved.

    While the long call is in flight its worst case (prompt + max_tokens) is held: a budget of exactly
    that many tokens refuses the next request, one token more lets it through.
    """
    from turnout.addons.limits import INLINE_COUNT_CHARS
    from turnout.ledger.request_size import prompt_tokens

    long_msg = [{"role": "user", "content": "Reconcile invoice 4711 against order 0815, line by line. " * 3000}]
    assert len(long_msg[0]["content"]) > 10 * INLINE_COUNT_CHARS
    worst = prompt_tokens({"model": "gpt-4o", "messages": long_msg}) + 100  # in gpt-4o's encoding, o200k

    def second_request_under(limit: int, name: str) -> str:
        cfg = write_config(tmp_path, f'[[budgets]]\nname = "tokens"\nwindow = "day"\ntokens = {limit}\n', name)
        proxy = make_proxy("--config", str(cfg), *NO_CACHE, db=tmp_path / f"{name}.db")
        aclient = proxy.async_client(max_retries=0)

        async def run() -> str:
            long_call = asyncio.create_task(
                aclient.chat.completions.create(
                    model="gpt-4o", messages=long_msg, max_tokens=100, extra_headers={"x-test-hang-ms": "800"}
                )
            )
            await asyncio.sleep(0.4)  # the long call is in flight, its worst case reserved
            try:
                await aclient.chat.completions.create(model="gpt-4o", messages=MSG)
                outcome = "ok"
            except openai.RateLimitError as e:
                outcome = str(budget_code(e))
            await long_call
            return outcome

        outcome = asyncio.run(run())
        assert len(proxy.wait_rows(2)) == 2
        proxy.stop()
        return outcome

    assert second_request_under(worst, "exact.toml") == "budget_exceeded"
    assert second_request_under(worst + 1, "above.toml") == "ok"


def test_restart_keeps_the_spend(make_proxy, tmp_path):
    cfg = write_config(tmp_path, '[[budgets]]\nname = "daily"\nwindow = "day"\nrequests = 3\nusd = 10\n')
    db = tmp_path / "shared.db"
    first = make_proxy("--config", str(cfg), *NO_CACHE, db=db)
    client = first.client(max_retries=0)
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o", messages=MSG)
    first.wait_rows(3)
    first.stop()
    spent = sum(r["cost_usd"] for r in first.rows())

    out = subprocess.run(
        turnout_cmd("budgets", "--db", str(db), "--config", str(cfg), "--format", "json"),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    (status,) = json.loads(out.stdout)
    assert status["spent_requests"] == 3 and status["spent_usd"] == pytest.approx(spent)
    assert status["state"] == "blocked" and status["reserved_usd"] == 0
    table = subprocess.run(
        turnout_cmd("budgets", "--db", str(db), "--config", str(cfg)), capture_output=True, text=True, check=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert "daily" in table.stdout and "blocked" in table.stdout
    none = subprocess.run(turnout_cmd("budgets", "--db", str(db)), capture_output=True, text=True, check=True)
    assert "add [[budgets]] tables to the config file given with --config" in " ".join(none.stdout.split())

    second = make_proxy("--config", str(cfg), *NO_CACHE, db=db)
    with pytest.raises(openai.RateLimitError) as ei:
        second.client(max_retries=0).chat.completions.create(model="gpt-4o", messages=MSG)
    assert budget_code(ei.value) == "budget_exceeded"


def test_loop_breaker_trips_and_recovers_and_spike_limiter(make_proxy, tmp_path, upstream):
    cfg = write_config(
        tmp_path,
        '[breakers]\nloop_threshold = 3\nloop_window = "2s"\n[[breakers.spike]]\nscope = "key"\nrpm = 5\n',
    )
    proxy = make_proxy("--config", str(cfg), *NO_CACHE)
    client = proxy.client(max_retries=0)
    same = [{"role": "user", "content": "are we there yet?"}]
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o", messages=same)
    with pytest.raises(openai.RateLimitError) as ei:
        client.chat.completions.create(model="gpt-4o", messages=same)
    assert budget_code(ei.value) == "loop_detected"
    # another key sending the same request is not in that loop
    proxy.client(api_key="sk-test-key-0002", max_retries=0).chat.completions.create(model="gpt-4o", messages=same)
    time.sleep(2.1)
    client.chat.completions.create(model="gpt-4o", messages=same)  # calmed down
    # spike: this is key 1's 5th request allowed of its 5/minute (the loop refusal took none)
    client.chat.completions.create(model="gpt-4o", messages=MSG)
    with pytest.raises(openai.RateLimitError) as ei:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "another one"}])
    assert budget_code(ei.value) == "rate_limited"
    assert int(ei.value.response.headers["retry-after"]) >= 1
    rows = proxy.wait_rows(8)
    assert [r["blocked_by"] for r in rows] == [None, None, None, "loop", None, None, None, "spike"]


def test_output_cap_clamps_what_the_provider_receives(make_proxy, tmp_path, upstream):
    cfg = write_config(tmp_path, "[breakers]\noutput_cap = 100\noutput_cap_features = { tiny = 10 }\n")
    proxy = make_proxy("--config", str(cfg), *NO_CACHE)
    client = proxy.client()
    r = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSG, max_tokens=5000)
    assert r.headers["x-turnout-clamped"] == "max_tokens 5000→100"
    assert upstream.requests[-1]["body"]["max_tokens"] == 100
    client.chat.completions.create(model="gpt-4o", messages=MSG, max_completion_tokens=50)
    assert upstream.requests[-1]["body"]["max_completion_tokens"] == 50  # under the cap: untouched
    client.chat.completions.create(model="gpt-4o", messages=MSG, extra_headers={"x-turnout-feature": "tiny"})
    assert upstream.requests[-1]["body"]["max_completion_tokens"] == 10  # unset: gets the feature's cap
    client.responses.create(model="gpt-4o", input="hi", max_output_tokens=1000)
    assert upstream.requests[-1]["body"]["max_output_tokens"] == 100
    rows = proxy.wait_rows(4)
    assert [r["clamped"] for r in rows] == [
        "max_tokens 5000→100",
        None,
        "max_completion_tokens unset→10",
        "max_output_tokens 1000→100",
    ]


def test_attribution_columns_from_each_source(make_proxy, tmp_path, upstream):
    from turnout.ledger.keys import key_fingerprint

    fp = key_fingerprint("sk-payments-key-1234")
    cfg = write_config(
        tmp_path,
        f'[attribution]\nkeys = {{ "{fp}" = "payments" }}\n'
        '[[attribution.features]]\nfeature = "support-bot"\nsystem = "support agent"\n',
    )
    proxy = make_proxy("--config", str(cfg), *NO_CACHE)
    before = len(upstream.requests)
    # 1. explicit headers (and the OpenAI-Project / -Organization headers the SDK sends)
    tagged = proxy.client(project="proj_abc", organization="org_xyz")
    tagged.chat.completions.create(
        model="gpt-4o", messages=MSG,
        extra_headers={"x-turnout-feature": "checkout", "x-turnout-team": "web", "x-turnout-user": "alice"},
    )  # fmt: skip
    # 2. config: key → team, system-prompt rule → feature; body `user`
    keyed = proxy.client(api_key="sk-payments-key-1234")
    keyed.chat.completions.create(
        model="gpt-4o", user="bob",
        messages=[{"role": "system", "content": "You are a support agent. Ticket 4411."}, *MSG],
    )  # fmt: skip
    # 3. body: safety_identifier and metadata
    plain = proxy.client()
    plain.chat.completions.create(
        model="gpt-4o", messages=MSG, metadata={"feature": "search", "team": "growth"}, store=False,
        extra_body={"safety_identifier": "carol"},
    )  # fmt: skip
    # 4. automatic: the template name
    plain.chat.completions.create(
        model="gpt-4o", messages=[{"role": "system", "content": "You translate menus for restaurant 12."}, *MSG]
    )
    rows = proxy.wait_rows(4)
    got = [(r["feature"], r["team"], r["user"], r["project"], r["organization"]) for r in rows]
    assert got == [
        ("checkout", "web", "alice", "proj_abc", "org_xyz"),
        ("support-bot", "payments", "bob", None, None),
        ("search", "growth", "carol", None, None),
        ("you-translate-menus-for-restaurant", None, None, None, None),
    ]
    assert rows[3]["template_name"] == "you-translate-menus-for-restaurant" and rows[3]["template_fp"]
    # turnout's own headers never reach the provider
    for req in upstream.requests[before:]:
        assert not [h for h in req["headers"] if h.lower().startswith("x-turnout-")]


def test_two_templates_with_varying_data_give_two_stable_fingerprints(make_proxy):
    proxy = make_proxy(*NO_CACHE)
    client = proxy.client()
    for i in range(3):
        client.chat.completions.create(
            model="gpt-4o",
            messages=[
                {
                    "role": "system",
                    "content": f"You are a support agent. Customer {i}@shop{i}.com, order #{1000 + i * 17}.",
                },
                {"role": "user", "content": f"where is my parcel number {i}?"},
            ],
        )
        client.chat.completions.create(
            model="gpt-4o",
            messages=[
                {
                    "role": "system",
                    "content": f'You classify reviews. Product "{["lamp", "desk chair", "mug"][i]}", id a{i}b{i * 7}c9.',
                },
                {"role": "user", "content": f"review text {i * 31}: it was fine"},
            ],
        )
    rows = proxy.wait_rows(6)
    support = {r["template_fp"] for r in rows[0::2]}
    reviews = {r["template_fp"] for r in rows[1::2]}
    assert len(support) == 1 and len(reviews) == 1 and support != reviews
    assert {r["template_name"] for r in rows} == {"you-are-a-support-agent", "you-classify-reviews-product-id"}
