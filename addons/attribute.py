"""Attribute: who and what each call is for — feature, team, user, project, template fingerprint.

Runs right after Intercept, so Route, Cache, Breakers and Budget can use the labels (a team's
budget, a feature's output cap). The work is `turnout.ledger.attribution.attribute`, a pure
function; the template fingerprint is cached per prompt, so a repeated system prompt costs a
dict lookup. The `x-turnout-*` headers it reads are stripped by Forward before the request leaves.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx, exceptions, http

from turnout.ledger.attribution import AttributionConfig, attribute, parse_attribution

from . import config, state

log = logging.getLogger(__name__)


class Attribute:
    def __init__(self) -> None:
        self.config = AttributionConfig(keys={})

    def configure(self, updated: set[str]) -> None:
        if "turnout_config" in updated:
            try:
                self.config = parse_attribution(config.section(ctx.options.turnout_config, "attribution"))
            except ValueError as e:
                raise exceptions.OptionsError(f"turnout_config [attribution]: {e}") from None

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        llm = state.get(flow)
        if llm is None:
            return
        try:
            cols = attribute(
                path=llm.path,
                model=llm.requested_model,
                body=llm.body,
                headers=llm.headers,
                api_key_fp=llm.api_key_fp,
                config=self.config,
            )
        except Exception:  # noqa: BLE001 - a labelling bug must never cost the request
            log.exception("turnout: attribution failed for %s", flow.id)
            return
        for k, v in cols.items():
            if v is not None:
                llm.columns[k] = v
