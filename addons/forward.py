"""Forward: the last request step — what actually goes upstream.

Re-serialises the body when an earlier addon changed it, asks for stream usage the client
did not ask for (so the ledger gets exact token counts), drops turnout's own request headers,
and sends provider traffic to `turnout_upstream` when one is set.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import NamedTuple
from urllib.parse import urlsplit

from mitmproxy import ctx, exceptions, http
from mitmproxy.proxy import server_hooks

from . import state
from .guard import fail_closed
from .services import Services

log = logging.getLogger(__name__)


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


def frame(req: http.Request, headers: dict[str, str] | None) -> None:
    """Give a body turnout has read a `content-length` and no `transfer-encoding`.

    mitmproxy forwards an HTTP/2 request that has a body but no content-length (allowed in h2, where
    frames delimit the body) to an HTTP/1.1 server with no framing at all: the server reads an empty
    request and then the body as a second request — smuggled, with whatever headers it carries.
    `headers`: the request's lower-cased headers when they are known to be current (a cheap check first).
    """
    body = req.raw_content
    if body is None:  # streamed through (not read): mitmproxy frames it
        return
    length = str(len(body))
    if headers is not None and "transfer-encoding" not in headers and headers.get("content-length") == length:
        return
    req.headers.pop("transfer-encoding", None)
    bodiless = not body and req.method in ("GET", "HEAD", "DELETE", "OPTIONS") and "content-length" not in req.headers
    if not bodiless and req.headers.get("content-length") != length:
        req.headers["content-length"] = length


def parse_upstreams(values: list[str], known: frozenset[str]) -> dict[str, Upstream]:
    """`provider=URL` entries (repeatable) to {provider: Upstream}. Raises ValueError."""
    out: dict[str, Upstream] = {}
    for value in values:
        provider, sep, url = value.partition("=")
        if not sep or provider not in known:
            raise ValueError(f"expected PROVIDER=URL with a provider of {sorted(known)}, got {value!r}")
        up = parse_upstream(url)
        if up is not None:
            out[provider] = up
    return out


class Forward:
    def __init__(self, services: Services | None = None) -> None:
        self.services = services or Services()
        self.upstream: Upstream | None = None
        self.upstreams: dict[str, Upstream] = {}  # per provider, over `upstream`

    def load(self, loader) -> None:
        loader.add_option(
            "turnout_upstream",
            str,
            "",
            "Send intercepted provider traffic to this OpenAI-compatible base URL instead "
            "(http:// or https://, paths kept): a self-hosted or corporate endpoint, or a test server.",
        )
        loader.add_option(
            "turnout_upstreams",
            Sequence[str],
            [],
            "Per provider, PROVIDER=URL (repeatable): that provider's traffic goes there instead (over "
            "turnout_upstream).",
        )

    def configure(self, updated: set[str]) -> None:
        if "turnout_upstream" in updated:
            try:
                self.upstream = parse_upstream(ctx.options.turnout_upstream)
            except ValueError as e:
                raise exceptions.OptionsError(f"turnout_upstream: {e}") from None
        if "turnout_upstreams" in updated:
            from turnout.ledger.providers import PROVIDERS

            try:
                self.upstreams = parse_upstreams(list(ctx.options.turnout_upstreams), frozenset(PROVIDERS))
            except ValueError as e:
                raise exceptions.OptionsError(f"turnout_upstreams: {e}") from None
        if updated & {"turnout_upstream", "turnout_upstreams"}:
            self.services.upstream_urls = {
                name: f"{u.scheme}://{u.host}:{u.port}{u.path_prefix}" for name, u in self.upstreams.items()
            }
            if self.upstream is not None:
                u = self.upstream
                self.services.upstream_urls[""] = f"{u.scheme}://{u.host}:{u.port}{u.path_prefix}"

    def _upstream_of(self, provider: str) -> Upstream | None:
        return self.upstreams.get(provider, self.upstream)

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """With `turnout_upstream` set, never dial a provider host itself: whatever path a flow took to get
        here (a bug, another addon), a call the run was promised would go to the upstream must not leave."""
        address = data.server.address
        if address is None or address[0].lower() not in self.services.provider_hosts:
            return
        provider = self.services.provider_hosts[address[0].lower()]
        up = self._upstream_of(provider)
        if up is None:
            return
        if (address[0], address[1]) != (up.host, up.port):
            log.error("turnout: refusing to connect to %s while turnout_upstream is %s", address[0], up.host)
            data.server.error = f"turnout: not connecting to {address[0]}: provider traffic goes to turnout_upstream"

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        llm = state.get(flow)
        if llm is None:
            frame(flow.request, None)
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
        frame(flow.request, None if llm.body_changed else llm.headers)
        up = self._upstream_of(llm.provider.name)
        if up is not None:
            flow.request.path = upstream_path(up.path_prefix, flow.request.path)
            flow.request.scheme = up.scheme
            flow.request.host = up.host
            flow.request.port = up.port
