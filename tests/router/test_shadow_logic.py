"""The pure parts of shadow evaluations: comparators, the judge's verdict, Wilson bounds, eligibility,
the [shadow] table and the daily cap."""

from __future__ import annotations

import re
import threading

import pytest

from turnout.ledger.daily_cap import DailyCap
from turnout.ledger.messages import answer_parts
from turnout.router import judge
from turnout.router.comparators import Said, compare, final_number, normalise, said
from turnout.router.eligibility import answer_block, request_block
from turnout.router.quality import RollingQuality, recommend, wilson
from turnout.router.shadow_config import parse_shadow


def text(t: str, finish: str = "stop") -> Said:
    return Said(t, (), finish, False)


def chat(content=None, tool_calls=None, finish="stop", refusal=None) -> Said:
    body = {"choices": [{"message": {"role": "assistant", "content": content, "tool_calls": tool_calls, "refusal": refusal}, "finish_reason": finish}]}  # fmt: skip
    return said(answer_parts(body), finish)


REQ = {"model": "gpt-4o", "messages": [{"role": "user", "content": "q"}]}


@pytest.mark.parametrize(
    "ref, cand, verdict",
    [
        ("Positive", "positive.", "pass"),
        ("Answer: negative", "negative", "pass"),
        ("B", "B) Paris", "pass"),
        ("B", "C", "fail"),
        ("Yes", "yes, it is", "pass"),
        ("no", "Yes.", "fail"),
        ("billing", "shipping", "fail"),
    ],
)
def test_short_answers_compare_exactly(ref, cand, verdict):
    v = compare(REQ, text(ref), text(cand))
    assert v is not None and (v.comparator, v.verdict) == ("exact", verdict)


def test_long_free_text_is_left_to_the_judge():
    assert (
        compare(REQ, text("The sea covers most of the planet and shapes its climate."), text("Seas are big.")) is None
    )


def test_math_compares_the_final_number():
    assert final_number("so 1,234.5 in total") == 1234.5 and final_number(r"\boxed{42} (check: 40 + 2)") == 42
    v = compare(REQ, text("... so the answer is 42."), text("It's 42"), task="math")
    assert (v.comparator, v.verdict) == ("numeric", "pass")
    assert compare(REQ, text("42"), text("41"), task="math").verdict == "fail"
    assert compare(REQ, text("42"), text("no idea"), task="math").verdict == "fail"
    assert compare(REQ, text("yes"), text("yes"), task="math").comparator == "exact"  # no number: compared as text


def test_json_mode_parses_validates_and_compares_fields():
    req = {**REQ, "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {
        "type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}}}}  # fmt: skip
    assert compare(req, text('{"age": 3}'), text('```json\n{"age": 3}\n```')).verdict == "pass"
    v = compare(req, text('{"age": 3}'), text('{"age": "three"}'))
    assert v.verdict == "fail" and v.detail.startswith("schema:")
    assert compare(req, text('{"age": 3}'), text('{"age": 4}')).detail == "fields differ: age"
    assert compare(req, text('{"age": 3}'), text("{broken")).detail == "the candidate's answer is not JSON"
    obj = {**REQ, "response_format": {"type": "json_object"}}
    assert compare(obj, text('{"name": "Ada "}'), text('{"name": "ada"}')).verdict == "pass"
    assert compare(obj, text("not json"), text("{}")).verdict == "unknown"


def test_tool_calls_compare_names_and_arguments():
    call = lambda name, args: [{"id": "c", "function": {"name": name, "arguments": args}}]  # noqa: E731
    ref = chat(tool_calls=call("get_weather", '{"city": "Paris", "days": 2}'), finish="tool_calls")
    same = chat(tool_calls=call("get_weather", '{"days": 2.0, "city": "Paris"}'), finish="tool_calls")
    other_args = chat(tool_calls=call("get_weather", '{"city": "Rome", "days": 2}'), finish="tool_calls")
    other_tool = chat(tool_calls=call("get_time", "{}"), finish="tool_calls")
    assert compare(REQ, ref, same).verdict == "pass"
    assert compare(REQ, ref, other_args).verdict == "fail"
    assert compare(REQ, ref, other_args, tool_args="keys").verdict == "pass"
    assert compare(REQ, ref, other_tool).detail.startswith("tools ['get_weather'] vs ['get_time']")
    assert compare(REQ, ref, chat(content="It is sunny in Paris today, I think.")).verdict == "fail"


def test_refusals_and_truncation_fail():
    assert compare(REQ, text("positive"), chat(refusal="I can't help with that.")).comparator == "refusal"
    v = compare(REQ, text("a long story that ends"), text("a long sto", finish="length"))
    assert (v.comparator, v.verdict) == ("finish", "fail")
    assert normalise("  «Positive»!  ") == "«positive»"


def test_the_judge_asks_both_orders_and_a_disagreement_is_a_tie():
    assert judge.prompt().startswith("You compare two answers") and judge.VERSION == "judge-v1"
    q = judge.question("What is up?", "ref answer", "cand answer")
    assert "<answer_A>\nref answer\n</answer_A>" in q and q.endswith("Reply A, B or TIE.")
    assert (
        judge.parse_choice(" b.") == "B" and judge.parse_choice("tie") == "TIE" and judge.parse_choice("maybe") is None
    )
    assert judge.pairwise("B", "A").verdict == "pass"  # the candidate wins in both orders
    assert judge.pairwise("TIE", "TIE").verdict == "pass"  # as good as
    assert judge.pairwise("A", "B").verdict == "fail"  # the reference wins in both orders
    assert judge.pairwise("A", "A").verdict == "tie"  # position bias: always the first
    assert judge.pairwise("B", None).verdict == "unknown"


def test_wilson_bounds_and_recommendations():
    low, high = wilson(95, 100)
    assert 0.88 < low < 0.9 and 0.97 < high < 0.99
    assert wilson(0, 0) == (0.0, 1.0)
    assert recommend(200, 200, 0.95) == "route"  # lower bound ≈ 0.981
    assert recommend(5, 5, 0.95) == "not enough evidence yet"  # lower bound ≈ 0.57
    assert recommend(3, 10, 0.95) == "keep"
    r = RollingQuality(window=4)
    for ok in (True, False, False, False, False):
        r.add(ok)
    assert list(r.verdicts) == [False] * 4 and r.degraded(0.95) and not r.recovered(0.95)


def test_what_is_never_shadowed():
    base = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert request_block("chat", base) is None
    assert request_block("embeddings", {"input": "x"}) == "endpoint embeddings is not shadowed"
    assert "store" in request_block("chat", {**base, "store": True})
    assert request_block("responses", {"model": "gpt-4o", "input": "x", "background": True}) == "background mode"
    assert "server-side" in request_block(
        "responses", {"model": "gpt-4o", "input": "x", "tools": [{"type": "code_interpreter"}]}
    )
    thinking = {"model": "claude-sonnet-4-5", "max_tokens": 9, "messages": [{"role": "user", "content": "q"}, {"role": "assistant",
                "content": [{"type": "thinking", "thinking": "t", "signature": "sig"}, {"type": "text", "text": "a"}]}]}  # fmt: skip
    assert "thinking" in request_block("messages", thinking)
    assert "audio" in request_block("chat", {**base, "modalities": ["text", "audio"]})
    assert answer_block({"status_code": 200, "cache": "hit"}) == "answered from the cache"
    assert answer_block({"status_code": 429, "blocked_by": "budget:x"}).startswith("blocked")
    assert answer_block({"status_code": 500, "error": "HTTP 500"}) == "failed upstream"
    assert answer_block({"status_code": 200}) is None


def test_the_shadow_table_is_checked_key_by_key():
    cfg = parse_shadow(
        {"sample": 0.2, "usd_per_day": 5, "judge_model": "gpt-4o", "timeout": "10s", "never_features": ["x"]}
    )
    assert (cfg.sample, cfg.explore, cfg.usd_per_day, cfg.timeout, cfg.never_features) == (
        0.2,
        0.01,
        5.0,
        10.0,
        frozenset({"x"}),
    )
    for table, needle in (
        ({"sampel": 0.1}, "unknown key(s) ['sampel']"),
        ({"sample": 2}, "sample must be a fraction"),
        ({"usd_per_day": -1}, "usd_per_day must be a non-negative"),
        ({"enabled": "yes"}, "enabled must be true or false"),
        ({"tool_args": "loose"}, "tool_args must be exact or keys"),
        ({"judge_provider": "gemini"}, "judge_provider must be openai or anthropic"),
    ):
        with pytest.raises(ValueError, match=re.escape(needle)):
            parse_shadow(table)


def test_the_daily_cap_cannot_be_overshot_by_concurrent_reservations():
    cap = DailyCap(1.0)
    now = 1_800_000_000.0
    got: list[object] = []

    def grab() -> None:
        for _ in range(100):
            got.append(cap.reserve(0.01, now))

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    admitted = [r for r in got if r is not None]
    assert len(admitted) == 100 and cap.refused == 700 and cap.reserved == pytest.approx(1.0)
    for r in admitted[:50]:
        cap.settle(r, 0.001)
        cap.settle(r, 0.001)  # idempotent
    assert cap.spent == pytest.approx(0.05) and cap.reserved == pytest.approx(0.5)
    assert cap.reserve(0.4, now) is not None and cap.reserve(0.1, now) is None
    assert cap.reserve(0.9, now + 86400) is not None  # a new UTC day starts from zero


def test_the_evidence_policy_decides_only_where_the_evidence_is_conclusive():
    from turnout.router.policy import RoutingDecision
    from turnout.router.quality import apply_evidence

    keep = RoutingDecision("qa", 0.2, "keep", None, "score 0.20 < 0.50", candidate="gpt-4o-mini")
    route = RoutingDecision("qa", 0.9, "route", "gpt-4o-mini", "score 0.90 >= 0.50", candidate="gpt-4o-mini")
    assert apply_evidence(keep, (90, 90), 0.95).decision == "route"  # cleared: routed despite the score
    assert apply_evidence(route, (6, 12), 0.95).decision == "keep"  # measured short: kept despite the score
    assert apply_evidence(route, (20, 20), 0.95) is route  # not conclusive yet: the score decides
    assert apply_evidence(keep, None, 0.95) is keep and apply_evidence(keep, (0, 0), 0.95) is keep
    skip = RoutingDecision("code", None, "skip", None, "task code is never routed")
    assert apply_evidence(skip, (90, 90), 0.95) is skip  # never-route rules are never overridden
