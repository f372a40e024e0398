"""SQL over the ledger's `flows` table that more than one part of turnout reads."""

from __future__ import annotations

# What was really spent since a time, for rebuilding budget windows: cache hits and blocked flows
# cost nothing; failed flows count only when the provider reported usage; turnout's own calls (shadows,
# judges: `origin` set) are never a user's spend.
SPENT_SQL = (
    'select started_at, cost_usd, prompt_tokens, completion_tokens, api_key_fp, team, feature, "user", model '
    "from flows where started_at >= ? and origin is null and blocked_by is null and (cache is null or cache != 'hit') "
    "and (error is null or prompt_tokens is not null) order by started_at"
)

# Every decided shadow verdict per routing group (provider, requested model, cheaper model, task), for
# the evidence policy: observe mode compares the cheaper model's answer with the requested one's,
# monitor mode the other way round; both are evidence about the same pair.
EVIDENCE_SQL = (
    "select f.provider, se.reference_model, se.candidate_model, coalesce(f.task, '?'), "
    "count(case when se.verdict = 'pass' then 1 end), count(case when se.verdict in ('pass', 'fail') then 1 end) "
    "from shadow_evals se join flows f on f.id = se.flow_id group by 1, 2, 3, 4"
)
