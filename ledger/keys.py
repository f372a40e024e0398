"""API key fingerprints: enough to group and label keys, never enough to use one."""

from __future__ import annotations

import hashlib


def key_fingerprint(key: str | None) -> str | None:
    """sha256 prefix plus the last 4 characters (what provider dashboards show), e.g. `3f9a2b1c0d4e-x7Qz`."""
    if not key:
        return None
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    tail = key[-4:] if len(key) >= 12 else ""  # a short key's tail would be most of the key
    return f"{digest}-{tail}" if tail else digest
