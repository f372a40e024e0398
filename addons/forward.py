"""Forward: the last request step — what actually goes upstream.

Re-serialises the body when an earlier addon changed it, asks for stream usage the client
did not ask for (so the ledger gets exact token counts), drops turnout's own request headers,
and sends provider traffic to `turnout_upstream` when one is set.
"""

from __future__ import annotations

import json
from typing import NamedTuple
from urllib.parse import urlsplit

from mitmproxy import ctx, exceptions, http

from . import state


class Upstream(NamedTuple):
    scheme: str
    host: str
    port: int
    path_prefix: str


def parse_upstream(url: str) -> Upstream | None:
    """`http(s)://host[:port][/prefix]` to its parts; '' means no redirect. Raises ValueError."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected http(s)://host[:port][/path], got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"no query or fragment allowed in {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Upstream(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


def upstream_path(prefix: str, path: str) -> str:
    """Keep the request path under the upstream's prefix; a prefix ending in /v1 is not doubled."""
    if prefix.endswith("/v1") and (path == "/v1" or path.startswith("/v1/")):
        path = path[3:]
    return prefix + path


class Forward:
    def __init__(self) -> None:
        self.upstream: Upstream | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "turnout_upstream",
            str,
            "",
            "Send intercepted provider traffic to this OpenAI-compatible base URL instead "
            "(http:// or https://, paths kept): a self-hosted or corporate endpoint, or a test server.",
        )

    def configure(self, updated: set[str]) -> None:
        if "turnout_upstream" in updated:
            try:
                self.upstream = parse_upstream(ctx.options.turnout_upstream)
            except ValueError as e:
                raise exceptions.OptionsError(f"turnout_upstream: {e}") from None

    def request(self, flow: http.HTTPFlow) -> None:
        llm = state.get(flow)
        if llm is None or flow.response or flow.error:
            return
        for name in [k for k in llm.headers if k.startswith("x-turnout-")]:
            del flow.request.headers[name]  # case-insensitive, every occurrence
        if llm.endpoint and isinstance(llm.body, dict):
            if llm.provider.ensure_stream_usage(llm.endpoint, llm.body):
                llm.usage_injected = llm.body_changed = True
                # The usage chunk is cut out of what the client sees; an uncompressed stream keeps that exact.
                flow.request.headers["accept-encoding"] = "identity"
            if llm.body_changed:
                flow.request.content = json.dumps(llm.body, ensure_ascii=False, separators=(",", ":")).encode()
        if self.upstream is not None:
            up = self.upstream
            flow.request.path = upstream_path(up.path_prefix, flow.request.path)
            flow.request.scheme = up.scheme
            flow.request.host = up.host
            flow.request.port = up.port
