"""CentralLedger: `turnout_central = postgresql://…` ships every ledger row to one PostgreSQL for the fleet.

The local ledger (`turnout_db`) stays the durable outbox: requests are recorded there as always and
never wait on PostgreSQL; a thread ships them (`turnout.ledger.shipper`). Going down and coming back
are logged, written as `events` rows (`central_unavailable`, `central_recovered`) and exported
(`turnout_central_up`, `turnout_central_backlog`). Empty: the outbox is removed (nothing is lost —
turning it on again queues every row).

It sits after LedgerStore: on shutdown the writer has committed its last rows before the final drain.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from mitmproxy import ctx, exceptions

from turnout.ledger import outbox
from turnout.ledger.postgres import is_url, safe_url
from turnout.ledger.shipper import Shipper

from . import config
from .services import Services

log = logging.getLogger(__name__)


class CentralLedger:
    def __init__(self, services: Services | None = None) -> None:
        self.services = services or Services()
        self._loop: asyncio.AbstractEventLoop | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "turnout_central", str, "",
            "The fleet's central ledger: postgresql://USER@HOST:PORT/DB (or [ledger] central in the config). Rows "
            "ship from the local ledger (turnout_db, the outbox) in the background. Empty: the local ledger only.",
        )  # fmt: skip
        loader.add_option(
            "turnout_central_ship", bool, True,
            "Ship from this process. False: another process ships this ledger (the parent of --workers), "
            "so leave its outbox alone.",
        )  # fmt: skip
        loader.add_option(
            "turnout_central_drain", int, 5,
            "Seconds a shutdown spends shipping what is still waiting (the rest ships on the next start).",
        )  # fmt: skip

    def configure(self, updated: set[str]) -> None:
        if not updated & {"turnout_central", "turnout_db", "turnout_central_ship", "turnout_config"}:
            return
        current = self.services.central
        url = config.configured_url(updated, "turnout_central", "ledger", current.url if current else "")
        if url is None:
            return  # the config changed, but not where the rows go
        if url and not is_url(url):
            raise exceptions.OptionsError(f"turnout_central: expected postgresql://USER@HOST:PORT/DB, got {url!r}")
        if ctx.options.turnout_central_drain < 0:
            raise exceptions.OptionsError("turnout_central_drain: 0 or more seconds")
        self._stop()
        if not ctx.options.turnout_central_ship:
            return
        if not url:
            self._uninstall(ctx.options.turnout_db)
            return
        try:
            import psycopg  # noqa: F401
        except ImportError as e:
            raise exceptions.OptionsError(f"turnout_central: {e} (pip install 'psycopg[binary]')") from None
        shipper = Shipper(ctx.options.turnout_db, url, on_change=self._changed)
        try:
            queued = shipper.start()
        except sqlite3.Error as e:
            raise exceptions.OptionsError(f"turnout_central: cannot set up the outbox in {ctx.options.turnout_db}: {e}")
        self.services.central = shipper
        if queued:
            log.info("turnout: %d existing ledger rows queued for %s", queued, shipper.safe_url)

    def running(self) -> None:
        self._loop = asyncio.get_running_loop()

    def _changed(self, healthy: bool, reason: str) -> None:
        """From the shipper's thread: log and record on the event loop's thread."""
        shipper = self.services.central
        where = shipper.safe_url if shipper else "?"

        def report() -> None:
            if healthy:
                log.warning("turnout: central ledger %s is back; shipping the backlog", where)
                self.services.event("central_recovered", None, f"central ledger {where} is back", {"url": where})
            else:
                log.warning("turnout: central ledger %s unavailable (%s); rows wait in the local ledger", where, reason)
                self.services.event(
                    "central_unavailable",
                    None,
                    f"central ledger {where} unavailable: {reason}",
                    {"url": where, "reason": reason},
                )

        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(report)

    def _uninstall(self, path: str) -> None:
        if not path or path == ":memory:":
            return
        try:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            try:
                waiting = outbox.uninstall(conn)
            finally:
                conn.close()
        except sqlite3.Error as e:
            log.warning("turnout: could not remove the central ledger's outbox from %s: %s", path, e)
            return
        if waiting:
            log.warning(
                "turnout: no central ledger now; %d rows had not shipped (they stay in %s and ship when "
                "turnout_central is set again)",
                waiting,
                path,
            )

    def _stop(self, drain: float = 0.0) -> bool:
        shipper, self.services.central = self.services.central, None
        return shipper.stop(drain) if shipper is not None else True

    async def done(self) -> None:
        shipper = self.services.central
        if shipper is None:
            return
        ok = await asyncio.to_thread(self._stop, float(ctx.options.turnout_central_drain))
        if not ok:
            log.warning(
                "turnout: %d rows wait in the local ledger for %s; they ship on the next start",
                shipper.backlog,
                safe_url(shipper.url),
            )
