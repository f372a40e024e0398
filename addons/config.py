"""The user's TOML config file (`--config` / `turnout_config`): one file, a table per concern."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

KNOWN_TABLES = frozenset(
    {"router", "cache", "budgets", "breakers", "attribution", "prices", "shadow", "failover", "providers",
     "failover_circuit", "state", "ledger"}
)  # fmt: skip


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> dict[str, Any]:
    data = tomllib.loads(Path(path).read_text())
    unknown = set(data) - KNOWN_TABLES
    if unknown:
        hint = " (proxy settings are command-line flags or --set options)" if "proxy" in unknown else ""
        raise ValueError(f"{path}: unknown table(s) {sorted(unknown)}; expected some of {sorted(KNOWN_TABLES)}{hint}")
    return data


def load_config(path: str | None) -> dict[str, Any]:
    """The parsed config, or {} when no file is set. Raises ValueError with the file name on any problem."""
    if not path:
        return {}
    p = Path(path).expanduser()
    try:
        return _load(str(p), p.stat().st_mtime)
    except FileNotFoundError:
        raise ValueError(f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{p}: not valid TOML: {e}") from None


def section(path: str | None, name: str) -> dict[str, Any]:
    table = load_config(path).get(name, {})
    if not isinstance(table, dict):
        raise ValueError(f"{path}: [{name}] must be a table")
    return table


# Tables that hold one URL each: [state] url (Redis, the fleet's shared state), [ledger] central (PostgreSQL).
URL_KEYS = {"state": "url", "ledger": "central"}


def url_setting(path: str | None, name: str) -> str:
    """`[state] url` / `[ledger] central` from the config, or ""; a command-line flag or --set option wins."""
    table = section(path, name)
    key = URL_KEYS[name]
    unknown = set(table) - {key}
    if unknown:
        raise ValueError(f"{path}: [{name}] knows only {key!r}, not {sorted(unknown)}")
    value = table.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"{path}: [{name}] {key} must be a string (a URL)")
    return value.strip()


def configured_url(updated: set[str], option: str, table: str, current: str) -> str | None:
    """For an addon's `configure`: where its store is (the option's URL, else the config file's `[table]`
    URL), or None when only the config file changed and the URL did not (nothing to reconnect)."""
    from mitmproxy import ctx, exceptions

    try:
        url = getattr(ctx.options, option).strip() or url_setting(getattr(ctx.options, "turnout_config", ""), table)
    except ValueError as e:
        raise exceptions.OptionsError(str(e)) from None
    return None if updated <= {"turnout_config"} and current == url else url
