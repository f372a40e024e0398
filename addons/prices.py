"""Prices: the price book every cost in turnout comes from (genai-prices, plus the user's overrides)."""

from __future__ import annotations

from mitmproxy import ctx, exceptions

from turnout.ledger.pricing import PriceBook, load_genai_prices, load_price_file, parse_price_overrides

from . import config
from .services import Services


class Prices:
    def __init__(self, services: Services | None = None) -> None:
        self.services = services or Services()

    def load(self, loader) -> None:
        loader.add_option(
            "turnout_prices",
            str,
            "",
            "A TOML/JSON price file for custom or self-hosted models: "
            '[models."name"] input_mtok, output_mtok, cached_input_mtok (USD per million tokens).',
        )

    def configure(self, updated: set[str]) -> None:
        if not updated & {"turnout_prices", "turnout_config"}:
            return
        try:
            table = config.section(getattr(ctx.options, "turnout_config", ""), "prices")
            if set(table) - {"models"}:
                raise ValueError(f"[prices]: unknown key(s) {sorted(set(table) - {'models'})}; expected models")
            overrides = parse_price_overrides(table.get("models", {}), origin="[prices]")
            if ctx.options.turnout_prices:
                overrides.update(load_price_file(ctx.options.turnout_prices))
        except (OSError, ValueError) as e:
            raise exceptions.OptionsError(f"turnout_prices: {e}") from None
        self.services.prices = PriceBook(overrides)
        load_genai_prices()
