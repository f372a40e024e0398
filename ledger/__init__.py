"""The flow ledger: a plain SQLite file (sqlite-utils, WAL, migrations) that any tool can open.

Nothing in here knows about mitmproxy: the addons hand it plain dicts.
"""
