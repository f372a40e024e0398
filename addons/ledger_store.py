"""LedgerStore: the ledger's writer — opened for `turnout_db`, bounded, closed last.

It sits right after Record in the chain: mitmproxy runs `done` in chain order, so Record has
drained and recorded every flow still open before the writer closes (and spills what it could not
write). Like mitmproxy's `save`, the ledger is a promise: when it cannot keep up, Intercept refuses
new traffic (`Services.refusal`) rather than forward it unrecorded.
"""

from __future__ import annotations

from mitmproxy import ctx, exceptions

from turnout.ledger.writer import LedgerWriter

from .services import Services


class LedgerStore:
    def __init__(self, services: Services | None = None) -> None:
        self.services = services or Services()

    def load(self, loader) -> None:
        loader.add_option("turnout_db", str, "turnout.db", "The ledger: a SQLite file, one row per provider flow.")
        loader.add_option(
            "turnout_durable",
            bool,
            False,
            "Audit mode: an answer's last byte reaches the client only once its ledger row is committed (fsync'd). "
            "Costs the commit's latency on every call's end; off, a crash can lose the last ~50 ms of rows.",
        )
        loader.add_option(
            "turnout_ledger_max_backlog",
            int,
            10_000,
            "Rows queued for the ledger past which new provider requests are refused (503) until it catches up.",
        )
        loader.add_option(
            "turnout_ledger_max_backlog_mb",
            int,
            64,
            "MB of rows (bodies included) queued for the ledger past which new provider requests are refused (503).",
        )

    def configure(self, updated: set[str]) -> None:
        if "turnout_db" in updated:
            self._close()
            try:
                self.services.writer = LedgerWriter(ctx.options.turnout_db)
            except Exception as e:  # noqa: BLE001 - any failure to open is fatal at start, with the path
                raise exceptions.OptionsError(f"turnout_db: cannot open ledger {ctx.options.turnout_db!r}: {e}")
            self.services.writer.start()
            updated = updated | {"turnout_ledger_max_backlog", "turnout_durable"}
        writer = self.services.writer
        if updated & {"turnout_ledger_max_backlog", "turnout_ledger_max_backlog_mb"}:
            rows, mb = ctx.options.turnout_ledger_max_backlog, ctx.options.turnout_ledger_max_backlog_mb
            if rows < 1 or mb < 1:
                raise exceptions.OptionsError("turnout_ledger_max_backlog(_mb): at least 1")
            if writer is not None:
                writer.max_backlog, writer.max_backlog_bytes = rows, mb * 1024 * 1024
        if "turnout_durable" in updated:
            self.services.durable = ctx.options.turnout_durable
            if self.services.durable and writer is not None:
                writer.durable()

    def done(self) -> None:
        self._close()

    def _close(self) -> None:
        writer, self.services.writer = self.services.writer, None
        if writer is not None:
            writer.close()
