"""Model prices from genai-prices, resolved once per model, plus local overrides.

genai-prices' `calc_price` matches the model and walks a unit registry on every call; a proxy
prices every flow, so each (provider, model) is resolved to plain per-million-token rates
once and priced with arithmetic afterwards. Tiered prices fall back to the library.
An unknown model has no price: callers store NULL, never a guess.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple


class Usage(NamedTuple):
    """Token usage of one call, in the ledger's vocabulary."""

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # part of prompt_tokens read from the provider's prompt cache
    completion_tokens: int = 0  # includes reasoning tokens, as the providers bill them
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0  # part of prompt_tokens written to the prompt cache (Anthropic bills these higher)


TIER_MARGIN = (
    1.25  # how far a model's own tokenizer may count above turnout's estimate (Claude), for choosing a price tier
)


@dataclass(frozen=True)
class ModelRates:
    """USD per million tokens. `source` says where the numbers came from.

    For tiered prices (dearer past some prompt size) the flat fields hold the base tier; `cost()`
    and `worst_case()` pick the tier the call's prompt reaches, as genai-prices does.
    """

    input_mtok: float
    output_mtok: float
    cached_input_mtok: float | None
    source: str
    _tiered: Any = None  # a genai-prices ModelPrice when a flat rate cannot express it
    cache_write_mtok: float | None = None

    def worst_case(self, prompt: int, output: int) -> float:
        """USD of `prompt` uncached input tokens and `output` output tokens: what a call can cost at most
        (prompt-cache writes aside, which Anthropic bills above the input rate).

        `prompt` is turnout's count (exact for OpenAI models, a cl100k estimate for others): the tier is chosen as if
        the prompt were TIER_MARGIN larger, so a prompt just under a tier's start reserves the dearer rate.
        """
        if self._tiered is not None:
            reach = int(prompt * TIER_MARGIN)
            rates = _tier_rate(self._tiered.input_mtok, reach), _tier_rate(self._tiered.output_mtok, reach)
            return (prompt * rates[0] + output * rates[1]) / 1_000_000
        return (prompt * self.input_mtok + output * self.output_mtok) / 1_000_000

    def cost(self, usage: Usage) -> float:
        if self._tiered is not None:
            from genai_prices import Usage as GPUsage

            price = self._tiered.calc_price(
                GPUsage(
                    input_tokens=usage.prompt_tokens,
                    cache_read_tokens=usage.cached_prompt_tokens,
                    cache_write_tokens=usage.cache_write_tokens,
                    output_tokens=usage.completion_tokens,
                )
            )
            return float(price["total_price"])
        cached = min(usage.cached_prompt_tokens, usage.prompt_tokens)
        written = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
        cached_rate = self.input_mtok if self.cached_input_mtok is None else self.cached_input_mtok
        write_rate = self.input_mtok if self.cache_write_mtok is None else self.cache_write_mtok
        return (
            (usage.prompt_tokens - cached - written) * self.input_mtok
            + cached * cached_rate
            + written * write_rate
            + usage.completion_tokens * self.output_mtok
        ) / 1_000_000


def _flat(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, Decimal | int | float):
        return float(value)
    return None  # TieredPrices


def _base(value: Any) -> float | None:
    """A flat rate, or a TieredPrices' base tier."""
    flat = _flat(value)
    if flat is not None or value is None:
        return flat
    return _flat(getattr(value, "base", None))


def _tier_rate(value: Any, input_tokens: int) -> float:
    """The rate that applies to a call with `input_tokens` prompt tokens (genai-prices' rule: the highest
    tier whose start the prompt exceeds, else the base)."""
    flat = _flat(value)
    if flat is not None or value is None:
        return flat or 0.0
    for tier in reversed(getattr(value, "tiers", None) or ()):
        if input_tokens > tier.start:
            return float(tier.price)
    return _base(value) or 0.0


def load_genai_prices() -> None:
    """Import genai-prices and read its price snapshot now (~0.1 s cold), at start: done lazily, it would
    stall the proxy's event loop inside the first priced call."""
    from genai_prices import data_snapshot

    data_snapshot.get_snapshot()


@lru_cache(maxsize=1024)
def _genai_rates(provider: str, model: str) -> ModelRates | None:
    from genai_prices import data_snapshot

    try:
        _, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
    except LookupError:
        return None
    import datetime as dt

    price = info.get_prices(dt.datetime.now(dt.UTC))
    raw = {k: getattr(price, k, None) for k in ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")}
    flat = {k: _flat(v) for k, v in raw.items()}
    tiered = any(raw[k] is not None and flat[k] is None for k in raw)
    base = {k: _base(v) for k, v in raw.items()}  # tiered: the base tier (cost/worst_case pick the tier)
    return ModelRates(
        input_mtok=base["input_mtok"] or 0.0,
        output_mtok=base["output_mtok"] or 0.0,
        cached_input_mtok=base["cache_read_mtok"],
        source=f"genai-prices:{info.id}",
        _tiered=price if tiered else None,
        cache_write_mtok=base["cache_write_mtok"],
    )


GENAI_PROVIDER_IDS = {"gemini": "google"}  # turnout's provider name -> genai-prices' provider id


class PriceBook:
    """Looks up rates: local overrides first (custom or self-hosted models), then genai-prices."""

    def __init__(self, overrides: dict[str, ModelRates] | None = None) -> None:
        self.overrides = dict(overrides or {})

    def rates(self, provider: str, model: str | None) -> ModelRates | None:
        if not model:
            return None
        if model in self.overrides:
            return self.overrides[model]
        return _genai_rates(GENAI_PROVIDER_IDS.get(provider, provider), model)

    def cost(self, provider: str, model: str | None, usage: Usage) -> float | None:
        rates = self.rates(provider, model)
        return None if rates is None else round(rates.cost(usage), 10)


def parse_price_overrides(table: dict[str, Any], *, origin: str = "prices") -> dict[str, ModelRates]:
    """`{"my-llama": {"input_mtok": 0.1, "output_mtok": 0.2, "cached_input_mtok": 0.05}}` to rates.

    Raises ValueError naming the model and field, so a typo in a price file is caught at start.
    """
    out: dict[str, ModelRates] = {}
    for model, spec in table.items():
        if not isinstance(spec, dict):
            raise ValueError(f"{origin}: price for {model!r} must be a table, got {type(spec).__name__}")
        unknown = set(spec) - {"input_mtok", "output_mtok", "cached_input_mtok"}
        if unknown:
            raise ValueError(f"{origin}: unknown field(s) {sorted(unknown)} for {model!r}")
        try:
            rates = ModelRates(
                input_mtok=float(spec["input_mtok"]),
                output_mtok=float(spec.get("output_mtok", 0.0)),
                cached_input_mtok=None if spec.get("cached_input_mtok") is None else float(spec["cached_input_mtok"]),
                source=f"override:{origin}",
            )
        except KeyError:
            raise ValueError(f"{origin}: {model!r} needs input_mtok") from None
        except (TypeError, ValueError):
            raise ValueError(f"{origin}: prices for {model!r} must be numbers") from None
        if min(rates.input_mtok, rates.output_mtok, rates.cached_input_mtok or 0.0) < 0:
            raise ValueError(f"{origin}: negative price for {model!r}")
        out[model] = rates
    return out


def load_price_file(path: str | Path) -> dict[str, ModelRates]:
    """A TOML or JSON file: a `[models."name"]` table per model (or the model tables at top level)."""
    path = Path(path)
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    return parse_price_overrides(data.get("models", data), origin=str(path))
