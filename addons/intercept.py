"""Intercept: pick out the provider flows; everything else is tunnelled untouched.

Only provider hosts are TLS-intercepted: a tunnel (CONNECT) to any other host becomes a plain TCP
relay in the `next_layer` hook, before a byte of it is read, so the proxy never sees other
traffic. That is what mitmproxy's `allow_hosts` does, but `allow_hosts` costs regex
scans and ClientHello parsing per connection (twice: before and after the TLS handshake), on the
path of every new connection; this is one dict lookup. If the user sets `allow_hosts` or
`ignore_hosts` themselves, mitmproxy's own rules decide instead. For provider flows it parses the
request once and hangs an `LLMFlow` on the flow.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Sequence

from mitmproxy import connection, ctx, exceptions, http, tls
from mitmproxy.net.tls import starts_like_tls_record
from mitmproxy.proxy import layer, layers

from turnout.ledger import providers
from turnout.ledger.providers import KNOWN_HOSTS, parse_hosts
from turnout.ledger.bodies import parse_body
from turnout.ledger.credentials import credential_fingerprint, query_pairs, redact_path
from turnout.ledger.keys import key_fingerprint

from . import config, state
from .guard import answer_internal_error, fail_closed
from .services import Services

log = logging.getLogger(__name__)


def excluded_by_user_rules(hosts: Sequence[str], allow: Sequence[str], ignore: Sequence[str]) -> list[str]:
    """The provider hosts mitmproxy's own `allow_hosts` / `ignore_hosts` would not intercept (its rules:
    a regex search, case-insensitive, on `host:port`)."""
    out = []
    for host in hosts:
        target = f"{host}:443"
        if (allow and not any(re.search(rx, target, re.IGNORECASE) for rx in allow)) or any(
            re.search(rx, target, re.IGNORECASE) for rx in ignore
        ):
            out.append(host)
    return out


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def is_transparent(client: connection.Client) -> bool:
    return client.proxy_mode.type_name == "transparent"


def provider_host(flow: http.HTTPFlow, hosts: dict[str, str]) -> str | None:
    """The provider host a flow is for: the host it is sent to, or in transparent mode (where that is the
    IP the client dialled) the name the client asked for in its TLS handshake. mitmproxy verifies the
    provider's certificate against that same name, so a client cannot pass another IP off as a provider."""
    host = flow.request.host.lower()
    if host in hosts:
        return host
    sni = (flow.client_conn.sni or "").lower()
    if sni in hosts and is_transparent(flow.client_conn) and flow.request.scheme == "https":
        return sni
    return None


class Intercept:
    name = "turnout_intercept"  # mitmweb has a built-in addon called "intercept"

    def __init__(self, services: Services | None = None) -> None:
        self.services = services or Services()
        self.hosts: dict[str, str] = parse_hosts(KNOWN_HOSTS)
        self.services.provider_hosts = self.hosts
        self.tunnel_others = True  # False when the user's allow_hosts / ignore_hosts decide

    def load(self, loader) -> None:
        loader.add_option(
            "turnout_hosts",
            Sequence[str],
            list(KNOWN_HOSTS),
            "Provider hosts turnout intercepts (TLS), as `host` or `host=provider` (openai, anthropic, gemini); "
            "by default every provider turnout knows. Every other host is tunnelled untouched.",
        )
        loader.add_option(
            "turnout_config", str, "", "turnout's TOML config file (router, cache, budgets, attribution, prices)."
        )

    def configure(self, updated: set[str]) -> None:
        if "turnout_hosts" in updated:
            try:
                self.hosts = self.services.provider_hosts = parse_hosts(ctx.options.turnout_hosts)
            except ValueError as e:
                raise exceptions.OptionsError(f"turnout_hosts: {e}") from None
        if updated & {"allow_hosts", "ignore_hosts", "turnout_hosts"}:
            self.tunnel_others = not ctx.options.allow_hosts and not ctx.options.ignore_hosts
            for host in excluded_by_user_rules(list(self.hosts), ctx.options.allow_hosts, ctx.options.ignore_hosts):
                log.warning("turnout: %s is a provider host, but allow_hosts/ignore_hosts tunnel it untouched: "
                            "its calls are not recorded, cached, routed or budgeted", host)  # fmt: skip
        if "turnout_config" in updated:
            try:
                config.load_config(ctx.options.turnout_config)
            except ValueError as e:
                raise exceptions.OptionsError(f"turnout_config: {e}") from None
        if "connection_strategy" in updated and ctx.options.connection_strategy != "lazy":
            # Eager dials the provider at CONNECT time: answers the proxy serves itself would still touch the network.
            ctx.options.update(connection_strategy="lazy", upstream_cert=False)

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        # Loaded as a script, this runs before mitmproxy's NextLayer addon, which then leaves a layer
        # set here alone; added after it, this overrides its choice. Either way the choice stands.
        context = nextlayer.context
        address = context.server.address
        if (
            address is None
            or not self.tunnel_others
            or context.client.transport_protocol != "tcp"  # turnout intercepts HTTPS only; UDP is mitmproxy's
            or address[0].lower() in self.hosts
        ):
            return
        if is_transparent(context.client):
            # The address is the IP the client dialled: its name is in the TLS ClientHello's SNI, which
            # tls_clienthello reads. A connection that does not start like TLS is no provider call; inside
            # TLS that tls_clienthello let through, the decision is made.
            if any(isinstance(parent, layers.ClientTLSLayer) for parent in context.layers):
                return
            data = nextlayer.data_client()
            if len(data) < 3 or starts_like_tls_record(data):
                return
        nextlayer.layer = layers.TCPLayer(context, ignore=not ctx.options.show_ignored_hosts)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        """Transparent connections to hosts that are not providers are tunnelled untouched, by SNI."""
        client = data.context.client
        if self.tunnel_others and is_transparent(client) and (client.sni or "").lower() not in self.hosts:
            data.ignore_connection = True

    def running(self) -> None:
        server = ctx.master.addons.get("proxyserver")
        from turnout.router.tokens import APPROX_ENCODING, encoding_name

        log.info("turnout: intercepting %s", ", ".join(self.hosts))
        if encoding_name() == APPROX_ENCODING:
            log.warning("turnout: tiktoken is not usable here; token counts are estimates (characters / 4)")
        instances = list(server.servers) if server else []
        for instance in instances:
            for host, port, *_ in instance.listen_addrs:
                print(f"turnout: listening on {host}:{port}", flush=True)
        exposed = sorted(
            {
                str(a[0])
                for instance in instances
                if instance.mode.type_name != "transparent"  # reached only by redirected connections
                for a in instance.listen_addrs
                if not is_loopback(str(a[0]))
            }
        )
        if exposed and not ctx.options.proxyauth:
            log.warning(
                "turnout: listening on %s beyond loopback with no proxyauth: anyone who can reach this port can "
                "relay traffic to any host through it and spend on the keys it sees. Set proxyauth "
                "(--set proxyauth=user:pass, or @htpasswd-file) or listen on 127.0.0.1.", ", ".join(exposed),
            )  # fmt: skip

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        host = provider_host(flow, self.hosts)
        if host is None:
            return
        if flow.request.host != host:  # transparent: sent on by name, as a proxy-aware client's call is
            flow.request.host = host
        provider = providers.PROVIDERS[self.hosts[host]]
        try:
            llm, refuse = self._read(flow, host, provider)
        except Exception as e:  # noqa: BLE001 - the flow must still be answered, not forwarded unread
            log.exception("turnout: could not read provider request %s", flow.id)
            flow.metadata[state.KEY] = state.LLMFlow(
                provider=provider, host=host, path=redact_path(flow.request.path), endpoint=None, body=None,
                body_error=f"turnout could not read this request: {e}"[:300], request_text="", requested_model=None,
                api_key_fp=None, stream=False, started=flow.request.timestamp_start,
            )  # fmt: skip
            answer_internal_error(flow, "Intercept", e)
            return
        flow.metadata[state.KEY] = llm
        if refuse is not None:  # a body past turnout's bounds: answered here, recorded, never forwarded
            llm.served_locally = True
            flow.response = state.json_response(
                refuse,
                provider.error_body(status=refuse, message=f"turnout: {llm.body_error}", type="invalid_request_error",
                                    code="turnout_body_rejected"),
                {"x-should-retry": "false"},
            )  # fmt: skip
            return
        refusal = self.services.refusal()
        if refusal is not None:
            # Draining at shutdown, or the ledger cannot be written: refuse rather than forward traffic
            # nobody will see on the bill. Draining, `Connection: close` sends the retry to a fresh connection.
            message, type_, code = refusal
            llm.served_locally = True
            flow.response = state.json_response(
                503,
                provider.error_body(status=503, message=message, type=type_, code=code),
                {"connection": "close"} if self.services.draining else None,
            )

    @staticmethod
    def _read(flow: http.HTTPFlow, host: str, provider) -> tuple[state.LLMFlow, int | None]:
        """The request parsed once for every later addon, and the status to refuse it with (None: go on)."""
        path = flow.request.path
        endpoint = provider.endpoint(path)
        raw = flow.request.get_content(strict=False) or b""
        parsed = parse_body(raw)
        headers = state.lowercase_headers(flow.request.headers)
        query = query_pairs(path)
        key = provider.api_key(headers, dict(query))
        try:
            text: str | bytes = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw  # the ledger keeps bytes that are not UTF-8 as they came
        body = parsed.body
        llm = state.LLMFlow(
            provider=provider,
            host=host,
            path=redact_path(path) if query else path,
            endpoint=endpoint,
            body=body,
            body_error=parsed.error,
            request_text=text,
            requested_model=provider.request_model(endpoint, body, path) if endpoint else None,
            api_key_fp=key_fingerprint(key),
            credential_fp=credential_fingerprint(headers, query),
            stream=bool(endpoint) and provider.wants_stream(endpoint, body),
            headers=headers,
            started=flow.request.timestamp_start,
        )
        return llm, parsed.refuse
