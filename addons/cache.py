"""Cache: answer a call that was already paid for, from the ledger, without touching the network.

Also CI record/replay: `turnout_replay` answers only from a recorded ledger (a miss is an
OpenAI-style 400 naming the first differing field), and `turnout_record` stores every answer.
A hit is served in the `request` hook, so no upstream connection is ever opened (the proxy
runs with `connection_strategy=lazy`). A streamed request gets a valid SSE stream rebuilt
from the recording, so streamed and non-streamed calls share entries.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions, http

from turnout.ledger.attribution import TRUSTED_TEAM_SOURCES
from turnout.ledger.cache import CacheIndex, CacheLimits, HotEntries, load_index_rows, read_entry
from turnout.ledger.canonical import (
    canonical_json,
    canonical_request,
    difference_count,
    first_difference,
    loosen,
    request_key,
)
from turnout.ledger.store import iso_utc, open_ledger, parse_iso

from . import config, state
from .guard import fail_closed
from .services import Services

log = logging.getLogger(__name__)

CACHEABLE = ("chat", "responses", "embeddings", "completions", "messages", "generate", "stream", "stream_json", "embed",
             "batch_embed")  # fmt: skip
# A streamed Gemini call is the same question as the non-streamed one (OpenAI's and Anthropic's say
# `stream` in the body, which the canonical form drops; Gemini says it in the path).
SAME_QUESTION = {"stream": "generate", "stream_json": "generate"}
EMBEDDINGS = frozenset({"embeddings", "embed", "batch_embed"})
# `[cache]` keys in the config file, each the `turnout_cache_<key>` option (`enabled`: `turnout_cache`)
CONFIG_KEYS = ("enabled", "ttl", "max_entries", "max_bytes", "endpoints", "scope", "nondeterministic", "fuzzy")
SCOPES = ("key", "shared", "team")


def wants_bypass(headers: Mapping[str, str]) -> bool:
    """`headers`: lower-cased names (`LLMFlow.headers`)."""
    if headers.get("x-turnout-cache", "").strip().lower() in ("no", "off", "bypass", "false", "0"):
        return True
    control = headers.get("cache-control", "").lower()
    return "no-cache" in control or "no-store" in control


def is_deterministic(endpoint: str, body: dict[str, Any]) -> bool:
    """Only `temperature: 0` (or embeddings) asks for the same answer every time."""
    if endpoint in EMBEDDINGS:
        return True
    config = body.get("generationConfig", body.get("generation_config"))  # Gemini
    return body.get("temperature") == 0 or (isinstance(config, dict) and config.get("temperature") == 0)


class Cache:
    def __init__(self, services: Services | None = None, clock: Callable[[], float] = time.time) -> None:
        self.services = services or Services()
        self.clock = clock  # injected by tests: expiry without sleeping
        self.enabled = True
        self.index = CacheIndex(CacheLimits())
        self.hot = HotEntries()
        self.endpoints: frozenset[str] = frozenset(CACHEABLE)
        self.scope = "key"
        self.nondeterministic = True
        self.fuzzy = False
        self.record = False
        self.conn = None  # read connection to the ledger (hits are read by primary key)
        self.replay_conn = None
        self.replay_keys: dict[str, str] = {}
        self._replay_recordings: list[tuple[str, dict[str, Any]]] | None = None
        self._tasks: set = set()  # answers on their way into the shared store
        self._from_config: set[str] = set()  # options the config's [cache] table set (a reload may change them)

    def load(self, loader) -> None:
        loader.add_option("turnout_cache", bool, True, "Answer identical calls from the ledger's cache.")
        loader.add_option("turnout_cache_ttl", int, 0, "Seconds a cached answer stays fresh (0: forever).")
        loader.add_option(
            "turnout_cache_max_entries", int, 100_000, "Most cached answers kept (least recently used go first)."
        )
        loader.add_option("turnout_cache_max_bytes", int, 512 * 1024 * 1024, "Most bytes of cached answers kept.")
        loader.add_option(
            "turnout_cache_endpoints", Sequence[str], list(CACHEABLE), "Endpoints whose answers are cached."
        )
        loader.add_option(
            "turnout_cache_scope",
            str,
            "key",
            "Whose answers a cached answer may be served to: `key` (the same API key, the default), "
            "`team` (the same attributed team), or `shared` (everyone behind this proxy).",
            choices=list(SCOPES),
        )
        loader.add_option(
            "turnout_cache_nondeterministic",
            bool,
            True,
            "Also cache requests sampled with temperature > 0 (the point is not to pay twice); "
            "off caches only temperature 0 and embeddings.",
        )
        loader.add_option(
            "turnout_cache_fuzzy",
            bool,
            False,
            "Near-identical matching: ignore case, whitespace and punctuation of message prose "
            "(numbers, words and code must still match exactly).",
        )
        loader.add_option("turnout_replay", str, "", "Answer only from the recordings in this ledger file (CI replay).")
        loader.add_option(
            "turnout_record", bool, False, "Record every answer for replay (and never serve from the cache)."
        )

    def configure(self, updated: set[str]) -> None:
        o = ctx.options
        if "turnout_config" in updated:
            self._apply_config_table()
        if updated & {"turnout_cache_ttl", "turnout_cache_max_entries", "turnout_cache_max_bytes"}:
            try:
                self.index = CacheIndex(
                    CacheLimits(o.turnout_cache_ttl, o.turnout_cache_max_entries, o.turnout_cache_max_bytes)
                )
            except ValueError as e:
                raise exceptions.OptionsError(f"turnout_cache: {e}") from None
            updated = updated | {"turnout_db"}  # reload the index under the new limits
        if "turnout_cache_endpoints" in updated:
            unknown = set(o.turnout_cache_endpoints) - set(CACHEABLE)
            if unknown:
                raise exceptions.OptionsError(
                    f"turnout_cache_endpoints: unknown {sorted(unknown)}; known: {list(CACHEABLE)}"
                )
            self.endpoints = frozenset(o.turnout_cache_endpoints)
        self.enabled = o.turnout_cache
        self.scope = o.turnout_cache_scope
        self.nondeterministic = o.turnout_cache_nondeterministic
        self.fuzzy = o.turnout_cache_fuzzy
        self.record = o.turnout_record
        if "turnout_db" in updated:
            self._open_ledger(o.turnout_db)
        if "turnout_replay" in updated:
            self._open_replay(o.turnout_replay)

    def _apply_config_table(self) -> None:
        """`[cache]` in the config file: each key sets its `turnout_cache_…` option, unless that option
        was set explicitly (`--set` wins); an unknown key is an error."""
        try:
            table = config.section(ctx.options.turnout_config, "cache")
        except ValueError as e:
            raise exceptions.OptionsError(f"turnout_config: {e}") from None
        unknown = set(table) - set(CONFIG_KEYS)
        if unknown:
            raise exceptions.OptionsError(
                f"turnout_config [cache]: unknown key(s) {sorted(unknown)}; expected some of {list(CONFIG_KEYS)}"
            )
        changes = {}
        for key, value in table.items():
            name = f"turnout_cache_{key}" if key != "enabled" else "turnout_cache"
            if not ctx.options._options[name].has_changed() or name in self._from_config:
                changes[name] = value
        self._from_config = set(changes)
        if changes:
            try:
                ctx.options.update(**changes)
            except exceptions.OptionsError as e:
                raise exceptions.OptionsError(f"turnout_config [cache]: {e}") from None

    def _open_ledger(self, path: str) -> None:
        try:
            db = open_ledger(path, check_same_thread=False)
        except Exception as e:  # noqa: BLE001
            raise exceptions.OptionsError(f"turnout_db: cannot open {path!r}: {e}") from None
        self.conn = db.conn
        self.index = CacheIndex(self.index.limits)
        self.hot.clear()
        evicted = self.index.load(load_index_rows(self.conn))
        if evicted:
            self._delete(evicted)

    def _open_replay(self, path: str) -> None:
        self.replay_keys, self._replay_recordings, self.replay_conn = {}, None, None
        if not path:
            return
        if not Path(path).exists():
            raise exceptions.OptionsError(f"turnout_replay: no recording at {path!r} (record one with --record)")
        self.replay_conn = open_ledger(path, check_same_thread=False).conn
        for key, canonical in self.replay_conn.execute("select key, canonical from cache_entries"):
            self.replay_keys[request_key(self._key_text(json.loads(canonical)))] = key

    def _key_text(self, canonical: dict[str, Any]) -> str:
        return canonical_json(loosen(canonical) if self.fuzzy else canonical)

    def _scope(self, llm: state.LLMFlow) -> str | None:
        """Whose answers this request may see: everyone's (`shared`), its team's — only a team the config
        named, never one the client picked — or its credentials'. None: it carries no credential, so
        there is no tenant to keep its answers apart from anyone else's, and it is not cached."""
        if self.scope == "shared":
            return "shared"
        if self.scope == "team" and llm.columns.get("team") and llm.columns.get("team_source") in TRUSTED_TEAM_SOURCES:
            return f"team:{llm.columns['team']}"
        return f"cred:{llm.credential_fp}" if llm.credential_fp else None

    def _delete(self, keys: list[str]) -> None:
        for key in keys:
            self.hot.discard(key)
            self.services.execute("delete from cache_entries where key = ?", (key,))

    # -- the request path --------------------------------------------------------------------

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        llm = state.get(flow)
        if llm is None or flow.response or flow.error or not isinstance(llm.body, dict):
            return
        if llm.endpoint not in self.endpoints:
            return
        replay = bool(self.replay_conn)
        if not (self.enabled or self.record or replay):
            return
        bypass = wants_bypass(llm.headers)
        if not (replay or self.record or bypass or self.nondeterministic or is_deterministic(llm.endpoint, llm.body)):
            # Sampled (temperature ≠ 0) answers are neither served nor stored: no key to compute.
            llm.columns["cache"] = "skip"
            return
        scope = self._scope(llm)
        if scope is None and not (replay or self.record):
            llm.columns["cache"] = "skip"  # no credential: no tenant to scope its answers by
            return
        scope = scope or "no-credential"  # recording for replay, which matches across keys anyway
        canonical = canonical_request(SAME_QUESTION.get(llm.endpoint, llm.endpoint), llm.body, llm.model)
        key_text = self._key_text(canonical)
        key = request_key(key_text, scope)
        llm.columns["cache_key"] = key
        store = self.record or self.enabled
        if replay:
            stored_key = self.replay_keys.get(request_key(key_text))
            if stored_key is not None and self._serve(flow, llm, self.replay_conn, stored_key, "replay"):
                return
            if not self.record:
                self._replay_miss(flow, llm, canonical)
                return
        elif self.record:
            llm.columns["cache"] = "miss"
        elif bypass:
            llm.columns["cache"] = "bypass"
            llm.response_headers["x-turnout-cache"] = "bypass"
        elif self.services.state is not None:
            found = await self._shared_lookup(key)
            if found is not None and self._serve(flow, llm, None, key, "hit", found):
                return
            llm.columns["cache"] = "miss"
            llm.response_headers["x-turnout-cache"] = "miss"
        else:
            entry, expired = self.index.lookup(key, self.clock())
            if entry is not None and self._serve(flow, llm, self.conn, key, "hit"):
                return
            if expired:
                self._delete([key])
            llm.columns["cache"] = "miss"
            llm.response_headers["x-turnout-cache"] = "miss"
        if store:
            canonical_text = key_text if not self.fuzzy else None  # already serialised: don't do it twice
            llm.on_record.append(lambda row: self._store(flow, llm, key, scope, canonical, row, canonical_text))

    async def _shared_lookup(self, key: str) -> dict[str, Any] | None:
        """The fleet's entry for this key (this instance's recent ones from memory); None on a miss or when
        Redis is unreachable — then the call simply goes upstream."""
        from turnout.ledger.shared_state import StateUnavailable

        entry = self.hot.get(key)
        if entry is None:
            try:
                entry = await self.services.state.cache_get(key)
            except StateUnavailable as e:
                log.debug("turnout: cache lookup skipped: %s", e)
                return None
            if entry is not None:
                self.hot.put(key, entry)
        ttl = self.index.limits.ttl
        if entry is not None and ttl > 0 and self.clock() - parse_iso(entry["created_at"]) > ttl:
            self.hot.discard(key)
            return None
        return entry

    def _serve(self, flow: http.HTTPFlow, llm: state.LLMFlow, conn, key: str, how: str,
               entry: dict[str, Any] | None = None) -> bool:  # fmt: skip
        if entry is None:
            entry = self.hot.get(key) if conn is self.conn else None
        if entry is None and conn is not None:
            entry = read_entry(conn, key)
            if entry is not None and conn is self.conn:
                self.hot.put(key, _hot(entry))
        if entry is None:
            self.index.remove(key)
            return False
        recorded = json.loads(entry["response_body"])
        provider, endpoint = llm.provider, llm.endpoint or "chat"
        if llm.stream and endpoint not in EMBEDDINGS:
            content = provider.replay_stream(
                endpoint, recorded, include_usage=provider.asked_for_stream_usage(llm.body)
            )
            json_array = provider.stream_framing(endpoint) == "json-array"
            ctype = "application/json; charset=utf-8" if json_array else "text/event-stream; charset=utf-8"
        else:
            content = json.dumps(recorded, ensure_ascii=False).encode()
            ctype = "application/json"
        age = max(0, int(self.clock() - parse_iso(entry["created_at"])))
        flow.response = http.Response.make(
            200, content, {"content-type": ctype, "x-turnout-cache": how, "x-turnout-cache-age": str(age)}
        )
        llm.served_locally = True
        usage = provider.response_usage(endpoint, recorded)
        llm.columns.update(
            cache="hit",
            cost_usd=0.0,
            saved_usd=entry["cost_usd"],
            response_model=provider.response_model(recorded),
            finish_reason=provider.finish_reason(endpoint, recorded),
        )
        if usage is not None:
            llm.columns.update(usage._asdict(), total_tokens=usage.prompt_tokens + usage.completion_tokens)
        if conn is self.conn:
            self.services.execute(
                "update cache_entries set hits = coalesce(hits, 0) + 1, last_hit_at = ? where key = ?",
                (iso_utc(self.clock()), key),
            )
        return True

    def _replay_miss(self, flow: http.HTTPFlow, llm: state.LLMFlow, canonical: dict[str, Any]) -> None:
        nearest = self._nearest(canonical)
        where = f"{llm.endpoint} model={llm.model}"
        if nearest is None:
            detail = "the recording has no call to this endpoint"
        else:
            diff = first_difference(nearest, canonical)
            field, was, now = diff if diff else ("?", None, None)
            detail = (
                f"first difference from the nearest recording at `{field}`: recorded {_short(was)}, got {_short(now)}"
            )
        message = f"turnout replay: no recording for {where}; {detail}"
        flow.response = state.json_response(
            400, llm.provider.error_body(status=400, message=message, type="turnout_replay_miss", code="replay_miss")
        )
        llm.served_locally = True
        llm.columns.update(cache="replay-miss")
        log.warning("%s", message)

    def _nearest(self, canonical: dict[str, Any]) -> dict[str, Any] | None:
        if self._replay_recordings is None:
            self._replay_recordings = [
                (c["endpoint"], c)
                for (text,) in self.replay_conn.execute("select canonical from cache_entries")
                for c in [json.loads(text)]
            ]
        same = [c for endpoint, c in self._replay_recordings if endpoint == canonical["endpoint"]]
        return min(same, key=lambda c: difference_count(c, canonical)) if same else None

    # -- the response path (via Record's on_record) -----------------------------------------

    def _store(
        self,
        flow: http.HTTPFlow,
        llm: state.LLMFlow,
        key: str,
        scope: str,
        canonical: dict[str, Any],
        row: dict[str, Any],
        canonical_text: str | None = None,
    ) -> None:
        status = row.get("status_code") or 0
        if llm.served_locally or row.get("error") or not 200 <= status < 300 or flow.response is None:
            return
        # Record has parsed (or assembled) the answer and serialised it for the row: reuse both.
        body = llm.response_json
        if not isinstance(body, dict):
            return
        text = row.get("response_body") or json.dumps(body, ensure_ascii=False)
        now = self.clock()
        writer = self.services.writer
        if writer is None:
            return
        entry = {
            "key": key,
            "scope": scope,
            "endpoint": llm.endpoint,
            "model": llm.model,
            "canonical": canonical_text or canonical_json(canonical),
            "response_body": text,
            "status_code": status,
            "cost_usd": row.get("cost_usd"),
            "flow_id": flow.id,
            "created_at": iso_utc(now),
            "hits": 0,
            "size": len(text),
        }
        writer.submit("cache_entries", entry)
        self.hot.put(key, _hot(entry))
        self._delete(self.index.add(key, len(text), now))
        if self.services.state is not None:
            self._share(key, entry)

    def _share(self, key: str, entry: dict[str, Any]) -> None:
        """The answer into Redis for every instance, off the call's path; lost only while Redis is down."""
        import asyncio

        limits = self.index.limits
        work = self.services.state.cache_put(
            key, entry["response_body"], entry["created_at"], entry["cost_usd"],
            ttl=limits.ttl, max_entries=limits.max_entries, max_bytes=limits.max_bytes,
        )  # fmt: skip
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._shared_done)

    def _shared_done(self, task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("turnout: cached answer not shared: %s", task.exception())

    def done(self) -> None:
        if state.shutting_down():
            # The process is exiting, and Record (later in the chain) may still be draining flows in flight,
            # whose requests must keep their cache and replay: the read connections close with the process.
            return
        for conn in (self.conn, self.replay_conn):
            if conn is not None:
                conn.close()


def _hot(entry: dict[str, Any]) -> dict[str, Any]:
    """What serving a hit reads: the hot set is capped by answer bytes, so it must not also hold the prompt."""
    return {k: entry[k] for k in ("response_body", "created_at", "cost_usd")}


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
