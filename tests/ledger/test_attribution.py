"""Attribution: template fingerprints, body identity, config rules, precedence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.ledger.attribution import (
    AttributionConfig,
    attribute,
    identity_from_body,
    lead_in,
    normalise_template,
    parse_attribution,
    prompt_parts,
    template_for,
    template_name,
)

SUPPORT = (
    "You are a support agent for ACME. The customer is {email} (id {uuid}), order #{order}, "
    'placed {date} at {time}. Their plan is "{plan}". Ticket {ticket}. See {url}.'
)
SUMMARY = "Summarise the document for user {email}. Keep it under {n} words. Document id {ticket}."


def chat(system: str, text: str = "hello", **extra) -> dict:
    return {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
        **extra,
    }


def support(i: int) -> str:
    return SUPPORT.format(
        email=f"user{i}@example{i}.com", uuid=f"{i:08x}-ceea-467f-a9b1-3c2f9e0b1a2d", order=i * 37,
        date=f"2024-0{1 + i % 9}-1{i % 10}", time=f"1{i % 10}:0{i % 6}", plan=["Pro", "Free tier", "Enterprise"][i % 3],
        ticket=f"TCK{i * 7919:06d}", url=f"https://acme.example/t/{i}?q={i}",
    )  # fmt: skip


def test_variable_parts_are_normalised():
    norm = normalise_template(support(3))
    for raw in ("user3@", "ceea-467f", "111", "Free tier", "https://", "TCK"):
        assert raw not in norm
    assert norm.startswith("You are a support agent for ACME. The customer is <email> (id <uuid>)")


def test_same_template_different_data_one_fingerprint_two_templates_two():
    support_fps = {template_for(chat(support(i), f"my order {i} is late")) for i in range(20)}
    summary_fps = {
        template_for(chat(SUMMARY.format(email=f"a{i}@b.io", n=50 + i, ticket=f"{i:x}deadbeef"), f"text {i}"))
        for i in range(20)
    }
    assert len(support_fps) == 1 and len(summary_fps) == 1
    (a,), (b,) = support_fps, summary_fps
    assert a.fp != b.fp
    assert a.name == "you-are-a-support-agent"
    assert b.name == "summarise-the-document-for-user"


def test_user_lead_in_is_part_of_the_template_but_free_text_is_not():
    assert lead_in("Translate to French:\nI like cheese") == "Translate to French"
    assert lead_in("Summarise this ticket:\n\nprinter broken") == "Summarise this ticket"
    assert lead_in("what is the weather in Paris?") == ""
    t1 = template_for({"messages": [{"role": "user", "content": "Translate to French:\nI like cheese"}]})
    t2 = template_for({"messages": [{"role": "user", "content": "Translate to French:\nGood morning, 42 times"}]})
    t3 = template_for({"messages": [{"role": "user", "content": "Translate to German:\nI like cheese"}]})
    assert t1 == t2 and t1 != t3 and t1.name == "translate-to-french"
    assert template_for({"messages": [{"role": "user", "content": "hi there"}]}) is None


def test_prompt_parts_of_responses_and_content_parts():
    assert prompt_parts({"instructions": "Be brief", "input": "hello"}) == ("Be brief", "hello")
    body = {"input": [{"role": "developer", "content": [{"type": "input_text", "text": "Rules"}]},
                      {"role": "user", "content": [{"type": "input_text", "text": "q"}]}]}  # fmt: skip
    assert prompt_parts(body) == ("Rules", "q")
    assert prompt_parts(None) == ("", "")


@settings(max_examples=60, deadline=None)
@given(
    st.emails(),
    st.uuids(),
    st.integers(min_value=0, max_value=10**12),
    st.text(alphabet="abcdefgh ", min_size=1, max_size=30),
)
def test_fingerprint_is_stable_under_any_variable_data(email, uuid, number, quoted):
    body = chat(f'You are a billing bot. Customer {email}, account {uuid}, balance {number}. Note: "{quoted}"')
    base = chat(
        'You are a billing bot. Customer a@b.co, account 00000000-0000-0000-0000-000000000000, balance 1. Note: "x"'
    )
    assert template_for(body) == template_for(base)


def test_template_name_skips_placeholders():
    assert template_name("<n> You're   a <id> helpful bot that writes") == "youre-a-helpful-bot-that"
    assert template_name("<n> <id>") == "untitled"


def test_identity_from_body():
    assert identity_from_body({"user": "u1"}).user == "u1"
    assert identity_from_body({"user": "u1", "safety_identifier": "s1"}).user == "s1"
    meta = identity_from_body({"metadata": {"feature": "search", "team": "growth", "user": "u9"}})
    assert (meta.user, meta.feature, meta.team) == ("u9", "search", "growth")
    assert identity_from_body("nope").user is None


CFG = parse_attribution(
    {
        "keys": {"abc123abc123-WXYZ": "payments", "def456def456": "search"},
        "features": [
            {"feature": "embeddings", "path": "/v1/embeddings*"},
            {"feature": "support-bot", "system": r"support agent", "model": "gpt-4o*"},
            {"feature": "translator", "template": "translate-*"},
        ],
    }
)


def run(body, headers=None, key=None, path="/v1/chat/completions", cfg=CFG):
    return attribute(
        path=path, model=(body or {}).get("model"), body=body, headers=headers or {}, api_key_fp=key, config=cfg
    )


def test_precedence_header_over_rule_over_body_over_automatic():
    body = chat(support(1), metadata={"feature": "from-metadata", "team": "meta-team"}, user="body-user")
    assert run(body)["feature"] == "support-bot"  # config rule beats metadata
    assert run(body, {"x-turnout-feature": "hdr"})["feature"] == "hdr"  # header beats rule
    other = chat("You write haikus about {n} cats.", metadata={"feature": "from-metadata"})
    assert run(other)["feature"] == "from-metadata"  # body beats automatic
    assert run(chat("You write haikus about cats."))["feature"] == "you-write-haikus-about-cats"  # automatic
    assert run(chat("You write haikus."), cfg=AttributionConfig(keys={}, auto_feature=False))["feature"] is None
    cols = run(body, key="abc123abc123-WXYZ")
    assert cols["team"] == "payments" and cols["user"] == "body-user"
    assert run(body, key="def456def456-QQQQ")["team"] == "search"  # prefix form of a fingerprint
    assert run(body)["team"] == "meta-team"
    # a key's configured team beats what the client says, unless the config trusts the header
    assert run(body, {"x-turnout-team": "t", "x-turnout-user": "u"}, key="abc123abc123-WXYZ")["team"] == "payments"
    trusting = AttributionConfig(keys=CFG.keys, rules=CFG.rules, trust_headers=True)
    cols = run(body, {"x-turnout-team": "t"}, key="abc123abc123-WXYZ", cfg=trusting)
    assert (cols["team"], cols["team_source"]) == ("t", "trusted_header")
    assert run(body, {"x-turnout-team": "t"})["team_source"] == "header"  # unlabelled traffic: the header names it
    assert run(body)["team_source"] == "body"
    assert run(body, {"x-turnout-user": "u"})["user"] == "u"
    assert run({"model": "m", "input": "x"}, path="/v1/embeddings")["feature"] == "embeddings"
    tr = run({"model": "m", "messages": [{"role": "user", "content": "Translate to Dutch:\nhi"}]})
    assert tr["feature"] == "translator"


def test_project_and_organization_headers():
    cols = run(chat("x"), {"openai-project": "proj_1", "openai-organization": "org_2"})
    assert (cols["project"], cols["organization"]) == ("proj_1", "org_2")


@pytest.mark.parametrize(
    "table, msg",
    [
        ({"keys": ["x"]}, "keys"),
        ({"features": [{"path": "/x"}]}, "needs feature"),
        ({"features": [{"feature": "f"}]}, "at least one"),
        ({"features": [{"feature": "f", "system": "("}]}, "bad system regex"),
        ({"nope": 1}, "unknown"),
    ],
)
def test_bad_config_is_a_value_error(table, msg):
    with pytest.raises(ValueError, match=msg):
        parse_attribution(table)
