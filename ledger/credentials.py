"""Credentials in a request: which headers and query parameters carry them, a fingerprint of all
of them (whose cached answers a request may see), and the same request with them redacted.

Providers take keys in several places: `Authorization: Bearer` (OpenAI), `x-api-key` (Anthropic),
`api-key` (Azure OpenAI), `x-goog-api-key` or `?key=` (Gemini), `?api-key=` (Azure-style gateways),
Basic auth (self-hosted servers). A cache scoped by "the key turnout could parse" puts every
request it could not parse into one shared scope; scoping by *every* credential-bearing value
the request carries cannot. A request carrying none has no tenant to scope by.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl

CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "x-turnout-relay-token",
    }  # the failover relay's per-process token
)
CREDENTIAL_PARAMS = frozenset({"key", "api-key", "api_key", "apikey", "access_token", "token", "sig", "signature"})
REDACTED = "REDACTED"


def credential_fingerprint(headers: Mapping[str, str], query: Iterable[tuple[str, str]] = ()) -> str | None:
    """sha256 over every credential header (names lower-cased) and credential query parameter; None: none."""
    parts = sorted(
        [(f"h:{name}", value) for name, value in headers.items() if name in CREDENTIAL_HEADERS and value.strip()]
        + [(f"q:{name.lower()}", value) for name, value in query if name.lower() in CREDENTIAL_PARAMS and value]
    )
    if not parts:
        return None
    text = "\n".join(f"{name}={value}" for name, value in parts)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


_PARAM = re.compile(r"(?P<name>[^&=;]+)=(?P<value>[^&;]*)")


def redact_path(path: str) -> str:
    """`path` with the value of every credential query parameter replaced by REDACTED (the rest byte for byte)."""
    head, sep, query = path.partition("?")
    if not sep or not query:
        return path

    def sub(m: re.Match[str]) -> str:
        name = m.group("name")
        decoded = parse_qsl(f"{name}=x", keep_blank_values=True)
        plain = decoded[0][0] if decoded else name
        return f"{name}={REDACTED}" if plain.lower() in CREDENTIAL_PARAMS else m.group(0)

    return f"{head}?{_PARAM.sub(sub, query)}"


def query_pairs(path: str) -> list[tuple[str, str]]:
    _, sep, query = path.partition("?")
    return parse_qsl(query, keep_blank_values=True) if sep else []


def redact_header(name: str, value: str) -> str:
    """What a credential header shows once redacted: its scheme (Bearer, Basic) and a fingerprint, never the secret."""
    scheme, _, rest = value.partition(" ")
    shown = scheme if rest and scheme.lower() in ("bearer", "basic", "token") else ""
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{shown} {REDACTED}:{digest}".strip()
