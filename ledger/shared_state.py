"""State shared by every turnout instance, in Redis: budget reservations, spike buckets, loop counters
and cached answers.

Each operation is one Lua script, so it is atomic on the server whatever the number of instances:
a reservation is admitted against the spend and reservations every instance holds, in integer
micro-dollars and tokens. Reservations are leases (they expire if the instance holding them dies
mid-call); settling is idempotent by flow id. Time is the calling instance's clock (keep them in NTP).

Knows nothing of mitmproxy. Every call is bounded by `timeout`; after a failure the store is "down"
for a backoff (doubling to `max_backoff`) during which calls fail at once with `StateUnavailable`
instead of waiting on a dead server — the caller's per-budget policy decides what that means.
All keys share one `{prefix}` hash tag, so the scripts also run on a Redis Cluster (one slot).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MICRO = 1_000_000  # budget dollars are stored as integer micro-dollars: no float drift across instances


class StateUnavailable(Exception):
    """The shared store did not answer in time, or is down (the message says which and why)."""


RESERVE = """
-- KEYS: per counter i: spent (3i+1), reservations (3i+2), admissions (3i+3)
-- ARGV: now_ms, flow, lease_ms, amount_u, amount_t, then per counter 9 values:
--   rolling_ms (0: calendar), bucket_ms, lim_u, lim_t, lim_r (-1: none), block, rpm (-1), throttle_at, ttl_s
local now = tonumber(ARGV[1]); local flow = ARGV[2]; local lease = tonumber(ARGV[3])
local au = tonumber(ARGV[4]); local at = tonumber(ARGV[5])
local n = #KEYS / 3
local out = {'ok'}
local function spent_of(key, rolling, bucket)
  if rolling == 0 then
    local v = redis.call('HMGET', key, 'u', 't', 'r')
    return tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0
  end
  local horizon = now - rolling
  local u, t, r = 0, 0, 0
  local all = redis.call('HGETALL', key)
  for j = 1, #all, 2 do
    local idx, unit = string.match(all[j], '^(%-?%d+):(%a)$')
    idx = tonumber(idx)
    if idx * bucket + bucket <= horizon then
      redis.call('HDEL', key, all[j])
    else
      local v = tonumber(all[j + 1])
      if unit == 'u' then u = u + v elseif unit == 't' then t = t + v else r = r + v end
    end
  end
  return u, t, r
end
local function reserved_of(key)
  local u, t, r = 0, 0, 0
  local all = redis.call('HGETALL', key)
  for j = 1, #all, 2 do
    local ru, rt, rr, exp = string.match(all[j + 1], '^(%d+) (%d+) (%d+) (%d+)$')
    if tonumber(exp) <= now then
      redis.call('HDEL', key, all[j])
    else
      u = u + tonumber(ru); t = t + tonumber(rt); r = r + tonumber(rr)
    end
  end
  return u, t, r
end
for i = 0, n - 1 do
  local a = 6 + i * 9
  local rolling, bucket = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local lims = {tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])}
  local block, rpm, tat = tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7])
  local su, st, sr = spent_of(KEYS[3 * i + 1], rolling, bucket)
  local ru, rt, rr = reserved_of(KEYS[3 * i + 2])
  local used = {su + ru, st + rt, sr + rr}
  local util, limited = 0, false
  for k = 1, 3 do
    if lims[k] >= 0 then
      limited = true
      if lims[k] == 0 then util = math.huge else util = math.max(util, used[k] / lims[k]) end
    end
  end
  local rpm_used = -1
  if rpm >= 0 and util >= tat then
    redis.call('ZREMRANGEBYSCORE', KEYS[3 * i + 3], '-inf', now - 60000)
    rpm_used = redis.call('ZCARD', KEYS[3 * i + 3])
  end
  for _, v in ipairs({su, st, sr, ru, rt, rr}) do table.insert(out, v) end
  if block == 1 and limited and util >= 1 then
    out[1] = 'blocked'; table.insert(out, 1, i); return out
  end
  if rpm_used >= rpm and rpm >= 0 then
    out[1] = 'throttled'; table.insert(out, 1, i); return out
  end
end
local value = au .. ' ' .. at .. ' 1 ' .. (now + lease)
for i = 0, n - 1 do
  local ttl = tonumber(ARGV[6 + i * 9 + 8])
  redis.call('HSET', KEYS[3 * i + 2], flow, value)
  redis.call('PEXPIRE', KEYS[3 * i + 2], lease + 60000)
  redis.call('ZADD', KEYS[3 * i + 3], now, flow)
  redis.call('PEXPIRE', KEYS[3 * i + 3], 120000)
  redis.call('EXPIRE', KEYS[3 * i + 1], ttl)
end
table.insert(out, 1, -1)
return out
"""

READ = """
-- KEYS: spent, reservations; ARGV: now_ms, rolling_ms (0: calendar), bucket_ms. Reads only.
local now, rolling, bucket = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {0, 0, 0, 0, 0, 0}
local all = redis.call('HGETALL', KEYS[1])
for j = 1, #all, 2 do
  local v = tonumber(all[j + 1])
  if rolling == 0 then
    if all[j] == 'u' then out[1] = v elseif all[j] == 't' then out[2] = v elseif all[j] == 'r' then out[3] = v end
  else
    local idx, unit = string.match(all[j], '^(%-?%d+):(%a)$')
    if tonumber(idx) * bucket + bucket > now - rolling then
      if unit == 'u' then out[1] = out[1] + v elseif unit == 't' then out[2] = out[2] + v else out[3] = out[3] + v end
    end
  end
end
local res = redis.call('HGETALL', KEYS[2])
for j = 1, #res, 2 do
  local ru, rt, rr, exp = string.match(res[j + 1], '^(%d+) (%d+) (%d+) (%d+)$')
  if tonumber(exp) > now then
    out[4] = out[4] + tonumber(ru); out[5] = out[5] + tonumber(rt); out[6] = out[6] + tonumber(rr)
  end
end
return out
"""

SETTLE = """
-- KEYS: settled marker, then per counter spent (2i+2), reservations (2i+3)
-- ARGV: now_ms, flow, u, t, then per counter: rolling_ms (0: calendar), bucket_ms, ttl_s
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', 172800) == false then return 0 end
local now = tonumber(ARGV[1]); local flow = ARGV[2]
local u, t = tonumber(ARGV[3]), tonumber(ARGV[4])
local n = (#KEYS - 1) / 2
for i = 0, n - 1 do
  local a = 5 + i * 3
  local rolling, bucket, ttl = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local spent = KEYS[2 * i + 2]
  redis.call('HDEL', KEYS[2 * i + 3], flow)
  if rolling == 0 then
    redis.call('HINCRBY', spent, 'u', u); redis.call('HINCRBY', spent, 't', t); redis.call('HINCRBY', spent, 'r', 1)
  else
    local idx = math.floor(now / bucket)
    redis.call('HINCRBY', spent, idx .. ':u', u); redis.call('HINCRBY', spent, idx .. ':t', t)
    redis.call('HINCRBY', spent, idx .. ':r', 1)
  end
  redis.call('EXPIRE', spent, ttl)
end
return 1
"""

SEED = """
-- KEYS: marker, then one spent hash per entry; ARGV: n fields per key... as (key index, field, amount, ttl)
if redis.call('SET', KEYS[1], '1', 'NX') == false then return 0 end
for j = 1, #ARGV, 4 do
  local key = KEYS[tonumber(ARGV[j]) + 1]
  redis.call('HINCRBY', key, ARGV[j + 1], tonumber(ARGV[j + 2]))
  redis.call('EXPIRE', key, tonumber(ARGV[j + 3]))
end
return 1
"""

SPIKE = """
-- KEYS: one bucket hash per (spec, kind, value); ARGV: now_ms, then per key: rate_per_min, amount
local now = tonumber(ARGV[1])
local levels = {}
for i = 1, #KEYS do
  local rate, amount = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local v = redis.call('HMGET', KEYS[i], 'level', 'at')
  local level, at = tonumber(v[1]) or rate, tonumber(v[2]) or now
  if now > at then level = math.min(rate, level + (now - at) * rate / 60000) end
  levels[i] = level
  local need = math.min(amount, rate)
  if level + 1e-9 < need then
    return {i, tostring((need - level) * 60 / rate)}
  end
end
for i = 1, #KEYS do
  local rate, amount = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local take = amount
  if amount > rate then take = rate end
  redis.call('HSET', KEYS[i], 'level', tostring(levels[i] - take), 'at', now)
  redis.call('PEXPIRE', KEYS[i], 120000)
end
return {0, '0'}
"""

LOOP = """
-- KEYS: the (key, fingerprint) attempts; ARGV: now_ms, window_ms, member
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return redis.call('ZCARD', KEYS[1])
"""

CACHE_GET = """
-- KEYS: entry, lru; ARGV: now_ms, key
local v = redis.call('HMGET', KEYS[1], 'response_body', 'created_at', 'cost_usd')
if not v[1] then redis.call('ZREM', KEYS[2], ARGV[2]); return false end
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
return v
"""

CACHE_PUT = """
-- KEYS: entry, lru, bytes; ARGV: now_ms, key, body, created_at, cost, ttl_ms (0: none), max_entries,
--   max_bytes, entry prefix
local size = string.len(ARGV[3])
local old = redis.call('HGET', KEYS[1], 'size')
if old then redis.call('DECRBY', KEYS[3], tonumber(old)) end
redis.call('HSET', KEYS[1], 'response_body', ARGV[3], 'created_at', ARGV[4], 'cost_usd', ARGV[5], 'size', size)
if tonumber(ARGV[6]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[6]) end
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
local total = redis.call('INCRBY', KEYS[3], size)
local evicted = 0
while redis.call('ZCARD', KEYS[2]) > tonumber(ARGV[7]) or total > tonumber(ARGV[8]) do
  local oldest = redis.call('ZPOPMIN', KEYS[2])
  if #oldest == 0 or oldest[1] == ARGV[2] then
    if #oldest > 0 then redis.call('ZADD', KEYS[2], oldest[2], oldest[1]) end
    break
  end
  local k = ARGV[9] .. oldest[1]
  local s = redis.call('HGET', k, 'size')
  if s then total = redis.call('DECRBY', KEYS[3], tonumber(s)) end
  redis.call('DEL', k)
  evicted = evicted + 1
end
return evicted
"""


@dataclass(frozen=True)
class CounterKey:
    """Where one budget counter lives: its spend hash (per calendar window, or rolling buckets)."""

    spent: str
    reservations: str
    admissions: str


class RedisState:
    """One Redis (by URL) for every instance; async, on the event loop that first uses it."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "turnout",
        timeout: float = 0.5,
        max_backoff: float = 5.0,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[bool, str], None] | None = None,
    ) -> None:
        import redis.asyncio  # noqa: F401 - fail at configure time, not on the first request

        self.url = url
        self.prefix = "{" + prefix + "}"
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.clock = clock
        self.on_change = on_change  # (healthy, reason): the addon logs it and writes an events row
        self.healthy = True
        self.last_error = ""
        self.errors = 0
        self._down_until = 0.0
        self._backoff = 0.0
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scripts: dict[str, Any] = {}
        self.on_connect: list[Callable[[], Awaitable[None]]] = []  # run after the first success and each recovery
        self._connected = False
        self._reconnecting: asyncio.Future[None] | None = None

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _redis(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self._client = aioredis.Redis.from_url(
                self.url,
                socket_connect_timeout=self.timeout,
                socket_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),  # our own backoff: a dead server is not retried per call
                health_check_interval=30,
            )
            self._loop = loop
            self._scripts = {}
        return self._client

    def _script(self, name: str, source: str) -> Any:
        s = self._scripts.get(name)
        if s is None:
            s = self._scripts[name] = self._redis().register_script(source)
        return s

    async def run(self, name: str, source: str, keys: list[str], args: list[Any]) -> Any:
        """One script, bounded by the timeout; `StateUnavailable` when it fails or the store is backing off."""
        now = time.monotonic()
        if not self.healthy and now < self._down_until:
            raise StateUnavailable(f"shared state {self.safe_url} unavailable ({self.last_error}); retrying")
        if not self._connected and name != "ping":
            await self._reconnect()
        try:
            result = await asyncio.wait_for(self._script(name, source)(keys=keys, args=args), self.timeout)
        except (asyncio.TimeoutError, OSError) as e:
            self._failed(f"no answer within {self.timeout:g}s" if isinstance(e, asyncio.TimeoutError) else str(e))
            raise StateUnavailable(f"shared state {self.safe_url} unavailable ({self.last_error})") from None
        except Exception as e:  # noqa: BLE001 - redis-py's ConnectionError / ResponseError and kin
            import redis.exceptions

            if isinstance(e, redis.exceptions.ResponseError) and "NOSCRIPT" not in str(e):
                raise  # a bug in a script: loud, not an outage
            self._failed(f"{type(e).__name__}: {e}")
            raise StateUnavailable(f"shared state {self.safe_url} unavailable ({self.last_error})") from None
        return result

    async def _reconnect(self) -> None:
        """A first contact, or one after a failure (maybe a Redis restarted empty): the on-connect work (seeding
        the budgets from the ledger) runs before any counter is read, once, while concurrent calls wait for it."""
        if self._reconnecting is None:
            self._reconnecting = asyncio.ensure_future(self._do_reconnect())
        try:
            await asyncio.shield(self._reconnecting)
        finally:
            if self._reconnecting is not None and self._reconnecting.done():
                self._reconnecting = None
        if not self._connected:
            raise StateUnavailable(f"shared state {self.safe_url} unavailable ({self.last_error})")

    async def _do_reconnect(self) -> None:
        try:
            await self.run("ping", "return 1", [], [])
        except StateUnavailable:
            return
        await self._recovered()

    @property
    def safe_url(self) -> str:
        """The URL without its password (it goes into logs and 503 bodies)."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.url)
        if parts.password:
            netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
            return urlunsplit(parts._replace(netloc=netloc))
        return self.url

    def _failed(self, reason: str) -> None:
        self.errors += 1
        self.last_error = reason
        self._backoff = min(self.max_backoff, max(0.1, self._backoff * 2))
        self._down_until = time.monotonic() + self._backoff
        self._connected = False
        if self._client is not None:  # drop half-open connections: the next try dials afresh
            client, self._client = self._client, None
            asyncio.ensure_future(_close(client))
        if self.healthy:
            self.healthy = False
            log.warning("turnout: shared state %s unavailable: %s", self.safe_url, reason)
            if self.on_change:
                self.on_change(False, reason)

    async def connect(self) -> None:
        """Dial and load the scripts ahead of the first request (a failure here is just the first outage)."""
        try:
            await self._reconnect()
            for name, source in (("reserve", RESERVE), ("settle", SETTLE), ("spike", SPIKE), ("loop", LOOP),
                                 ("cache_get", CACHE_GET), ("cache_put", CACHE_PUT)):  # fmt: skip
                await asyncio.wait_for(self._redis().script_load(source), self.timeout)
        except (StateUnavailable, asyncio.TimeoutError, OSError):
            pass
        except Exception as e:  # noqa: BLE001 - redis-py's connection errors
            self._failed(f"{type(e).__name__}: {e}")

    async def _recovered(self) -> None:
        was_down = not self.healthy
        self.healthy, self._backoff, self._connected = True, 0.0, True  # before the hooks: they run once
        if was_down:
            log.warning("turnout: shared state %s is back", self.safe_url)
            if self.on_change:
                self.on_change(True, "")
        for hook in list(self.on_connect):
            try:
                await hook()
            except StateUnavailable:
                return
            except Exception:  # noqa: BLE001 - a failed seed must not fail the request that found Redis back
                log.exception("turnout: shared state: on-connect work failed")

    async def close(self) -> None:
        if self._client is not None:
            await _close(self._client)
            self._client = None

    # -- budgets -----------------------------------------------------------------------------

    def counter_key(self, name: str, value: str, window_tag: str) -> CounterKey:
        base = self.key("b", _short(name), _short(value))
        return CounterKey(f"{base}:s:{window_tag}", f"{base}:res", f"{base}:adm")

    async def reserve(self, flow: str, counters: list[tuple[CounterKey, list[Any]]], amount_u: int, amount_t: int,
                      lease: float) -> list[Any]:  # fmt: skip
        keys = [k for ck, _ in counters for k in (ck.spent, ck.reservations, ck.admissions)]
        args: list[Any] = [_ms(self.clock()), flow, int(lease * 1000), amount_u, amount_t]
        for _, a in counters:
            args += a
        return await self.run("reserve", RESERVE, keys, args)

    async def settle(self, flow: str, counters: list[tuple[CounterKey, list[Any]]], amount_u: int,
                     amount_t: int) -> bool:  # fmt: skip
        keys = [self.key("settled", flow)]
        args: list[Any] = [_ms(self.clock()), flow, amount_u, amount_t]
        for ck, a in counters:
            keys += [ck.spent, ck.reservations]
            args += a
        return bool(await self.run("settle", SETTLE, keys, args))

    async def read(self, ck: CounterKey, rolling_ms: int, bucket_ms: int) -> list[int]:
        """(spent u, t, r, reserved u, t, r) of one counter, changing nothing."""
        out = await self.run("read", READ, [ck.spent, ck.reservations], [_ms(self.clock()), rolling_ms, bucket_ms])
        return [int(x) for x in out]

    async def release(self, flow: str, counters: list[CounterKey]) -> None:
        if counters:
            await self.run("release", "for i = 1, #KEYS do redis.call('HDEL', KEYS[i], ARGV[1]) end return 1",
                           [c.reservations for c in counters], [flow])  # fmt: skip

    async def seed(self, marker: str, entries: list[tuple[str, str, int, int]]) -> bool:
        """Add a ledger's spend once per Redis lifetime (the marker): (spent key, field, amount, ttl)."""
        keys = [marker]
        index: dict[str, int] = {}
        args: list[Any] = []
        for key, field, amount, ttl in entries:
            if key not in index:
                index[key] = len(keys)
                keys.append(key)
            args += [index[key], field, amount, ttl]
        return bool(await self.run("seed", SEED, keys, args))

    # -- breakers ----------------------------------------------------------------------------

    async def spike(self, buckets: list[tuple[str, float, float]]) -> tuple[int, float]:
        """(bucket key, rate per minute, amount) each; (0, 0) taken from all, or (1-based index, wait seconds)."""
        keys = [self.key("spike", k) for k, _, _ in buckets]
        args: list[Any] = [_ms(self.clock())]
        for _, rate, amount in buckets:
            args += [repr(float(rate)), repr(float(amount))]
        i, wait = await self.run("spike", SPIKE, keys, args)
        return int(i), float(wait)

    async def loop_count(self, key: str, window: float, member: str) -> int:
        return int(await self.run("loop", LOOP, [self.key("loop", key)], [_ms(self.clock()), int(window * 1000),
                                                                            member]))  # fmt: skip

    # -- cache -------------------------------------------------------------------------------

    async def cache_get(self, key: str) -> dict[str, Any] | None:
        v = await self.run("cache_get", CACHE_GET, [self.key("c", key), self.key("c-lru")], [_ms(self.clock()), key])
        if not v:
            return None
        body, created, cost = (x.decode() if isinstance(x, bytes) else x for x in v)
        return {"response_body": body, "created_at": created, "cost_usd": float(cost) if cost else None}

    async def cache_put(self, key: str, body: str, created_at: str, cost: float | None, *, ttl: float,
                        max_entries: int, max_bytes: int) -> int:  # fmt: skip
        return int(
            await self.run(
                "cache_put", CACHE_PUT, [self.key("c", key), self.key("c-lru"), self.key("c-bytes")],
                [_ms(self.clock()), key, body, created_at, "" if cost is None else repr(cost), int(ttl * 1000),
                 max_entries, max_bytes, self.key("c", "")],
            )
        )  # fmt: skip


def _ms(t: float) -> int:
    return int(t * 1000)


def _short(text: str) -> str:
    """A scope value as a key part: short, no separator in it (a user id can hold anything)."""
    if len(text) <= 64 and text.replace("-", "").replace("_", "").replace(".", "").isalnum():
        return text
    return "h" + hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


async def _close(client: Any) -> None:
    try:
        await client.aclose()
    except Exception:  # noqa: BLE001 - closing a connection that already failed
        pass
