"""`--db` for the commands that read a ledger: a SQLite file, or the fleet's central ledger in PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from turnout.ledger.postgres import is_url

from .errors import Failure

DB_HELP = "the ledger: a SQLite file (default ./turnout.db) or the central ledger's postgresql://… URL"


def exists(target: str) -> bool:
    return is_url(target) or Path(target).expanduser().exists()


def open_for_reading(target: str) -> Any:
    """The ledger at `target` (`execute`/`close`), or a Failure that says what to do."""
    from turnout.ledger.store import open_reader

    if not exists(target):
        raise Failure(
            f"no ledger at {target} — nothing has been recorded there yet.\n"
            f"Start the proxy with `turnout proxy --db {target}` (or pass --db to the ledger you have)."
        )
    try:
        return open_reader(target)
    except ConnectionError as e:
        raise Failure(str(e)) from None
