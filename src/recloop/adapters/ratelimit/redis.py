"""Rate limits shared through Redis: one script call per request, ``limits``' own keys.

:class:`RedisRateLimiter` decides all of a request's asks of one class, over
every limit of the class, in one ``EVALSHA`` of :data:`SCRIPT`. The script runs
per ask, in order, exactly what ``limits``' Redis storage and its
sliding-window strategy do one call at a time (its ``acquire_sliding_window.lua``,
with the same reads in fewer calls, and ``sliding_window.lua``, verbatim, in
:data:`SCRIPT`), with recloop's rules
around them (:mod:`recloop.core.ratelimit`): each limit hit in order with the
ask's cost, and a refused ask admitted in part, as much as every limit from the
refusing one on has room for, charged to those limits.

Keys are ``limits``' own: for the current window
``<key_prefix>:{LIMITER/<class>/<identity>/<amount>/<multiples>/<granularity>}``,
for the previous one the same followed by ``/-1``,
with ``limits``' arithmetic over their TTLs (Redis's clock, in milliseconds). A
deployment where some instances still count with ``limits`` itself (a rolling
upgrade) therefore shares every counter with this one; a test holds the two
paths' decisions equal on the same keys.

The script touches keys of many identities at once, so it needs a single
Redis (``async+redis://`` or ``async+rediss://``); a Redis Cluster or Sentinel
URL goes to :class:`recloop.adapters.ratelimit.upstream.UpstreamRateLimiter`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from limits import parse_many
from limits.errors import StorageError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from recloop.adapters.redis.packing import with_fast_packing
from recloop.core.ratelimit import Admission

SCRIPT = """
-- Decides groups of asks (a request's asks of one class each), in order.
-- ARGV: gate (1: decide the later groups only if the first is admitted in full), then per
--   group: its number of limits L, per limit its amount and expiry (seconds), its number
--   of asks N, per ask its cost.
-- KEYS: per group, per ask, per limit: the previous window's key, the current one's.
-- Returns the number of groups decided, then per ask not admitted in full: its group and
-- index (0-based), the units admitted, the tightest limit's index (0-based) and that
-- limit's window: previous count, previous PTTL, current count, current PTTL (the caller
-- computes the reset time from them, as limits does).

-- limits' acquire_sliding_window.lua, with fewer calls: both counts in one MGET, the
-- previous window's TTL only when it holds hits (else it weighs nothing), and whether
-- the current window exists from that MGET (the rotation leaves it at 0).
local function acquire(previous_key, current_key, limit, expiry, amount)
    if amount > limit then
        return false
    end
    local current_ttl = tonumber(redis.call('pttl', current_key))
    if current_ttl > 0 and current_ttl < expiry then
        redis.call('rename', current_key, previous_key)
        redis.call('set', current_key, 0, 'PX', current_ttl + expiry)
    end
    local counts = redis.call('mget', previous_key, current_key)
    local previous_count = tonumber(counts[1]) or 0
    local current_count = tonumber(counts[2]) or 0
    local weighted_count = current_count
    if previous_count > 0 then
        local previous_ttl = tonumber(redis.call('pttl', previous_key)) or 0
        if previous_ttl <= 0 then
            previous_ttl = 0
        end
        weighted_count = math.floor(previous_count * previous_ttl / expiry) + current_count
    end
    if (weighted_count + amount) > limit then
        return false
    end
    if counts[2] then
        redis.call('incrby', current_key, amount)
    else
        redis.call('set', current_key, amount, 'PX', expiry * 2)
    end
    return true
end

-- limits' sliding_window.lua
local function window(previous_key, current_key, expiry)
    local previous_count = redis.call('get', previous_key)
    local previous_ttl = redis.call('pttl', previous_key)
    local current_count = redis.call('get', current_key)
    local current_ttl = redis.call('pttl', current_key)
    if current_ttl > 0 and current_ttl < expiry then
        redis.call('rename', current_key, previous_key)
        redis.call('set', current_key, 0, 'PX', current_ttl + expiry)
        previous_count = redis.call('get', previous_key)
        previous_ttl = redis.call('pttl', previous_key)
        current_count = redis.call('get', current_key)
        current_ttl = redis.call('pttl', current_key)
    end
    return tonumber(previous_count) or 0, previous_ttl, tonumber(current_count) or 0, current_ttl
end

-- One ask of ``cost`` over the limits whose keys follow KEYS[base]: nil if admitted in
-- full, else what to report.
local function decide(base, cost, nlimits, amounts, seconds, expiries)
    local refused_at = nil
    for j = 1, nlimits do
        local previous_key, current_key = KEYS[base + 2 * j - 1], KEYS[base + 2 * j]
        if not acquire(previous_key, current_key, amounts[j], expiries[j], cost) then
            refused_at = j
            break
        end
    end
    if not refused_at then
        return nil
    end
    -- limits' get_window_stats for each limit from the refusing one on; the first of
    -- the tightest names the refusal.
    local tightest, least, held = nil, nil, nil
    for j = refused_at, nlimits do
        local previous_key, current_key = KEYS[base + 2 * j - 1], KEYS[base + 2 * j]
        local pc, pttl, cc, cttl = window(previous_key, current_key, expiries[j])
        local weighted = pc * (math.max(0, pttl) / 1000) / seconds[j] + cc
        local remaining = amounts[j] - math.floor(weighted)
        if remaining < 0 then
            remaining = 0
        end
        if least == nil or remaining < least then
            tightest, least, held = j, remaining, {pc, pttl, cc, cttl}
        end
    end
    local allowed = math.max(0, math.min(least, cost))
    if allowed > 0 then
        for j = refused_at, nlimits do
            local previous_key, current_key = KEYS[base + 2 * j - 1], KEYS[base + 2 * j]
            acquire(previous_key, current_key, amounts[j], expiries[j], allowed)
        end
    end
    return {allowed, tightest - 1, held[1], held[2], held[3], held[4]}
end

local gate = tonumber(ARGV[1]) == 1
local short = {0}
local at, base, group = 2, 0, 0
while at <= #ARGV do
    local nlimits = tonumber(ARGV[at])
    local amounts, seconds, expiries = {}, {}, {}
    for j = 1, nlimits do
        amounts[j] = tonumber(ARGV[at + 2 * j - 1])
        seconds[j] = tonumber(ARGV[at + 2 * j])
        expiries[j] = seconds[j] * 1000
    end
    at = at + 2 * nlimits + 1
    local nasks = tonumber(ARGV[at])
    local refused = false
    for i = 1, nasks do
        local reported = decide(base, tonumber(ARGV[at + i]), nlimits, amounts, seconds, expiries)
        if reported then
            refused = true
            short[#short + 1] = group
            short[#short + 1] = i - 1
            for _, value in ipairs(reported) do
                short[#short + 1] = value
            end
        end
        base = base + 2 * nlimits
    end
    at = at + nasks + 1
    group = group + 1
    short[1] = group
    if gate and group == 1 and refused then
        break
    end
end
return short
"""


class _Class:
    """One class's limits: names, script arguments, and keys split around the identity."""

    __slots__ = ("args", "expiries", "names", "templates")

    def __init__(self, action: str, spec: str, key_prefix: str) -> None:
        items = parse_many(spec)
        self.names = [str(item) for item in items]
        self.expiries = [item.get_expiry() for item in items]
        self.args: list[int] = [len(items)]  # the script's arguments for the class
        self.templates: list[tuple[str, str]] = []
        for item in items:
            self.args += [item.amount, item.get_expiry()]
            # limits inserts a str identifier verbatim: key_for(action, x) == head + x + tail
            head, tail = item.key_for(action, "\x00").split("\x00")
            self.templates.append((f"{key_prefix}:{{{head}", f"{tail}}}"))

    def keys(self, identities: Sequence[str]) -> list[str]:
        """Each identity's (previous, current) window keys, limit by limit."""
        keys: list[str] = []
        if len(self.templates) == 1:
            head, tail = self.templates[0]
            for identity in identities:
                current = f"{head}{identity}{tail}"
                keys += (f"{current}/-1", current)
            return keys
        for identity in identities:
            for head, tail in self.templates:
                current = f"{head}{identity}{tail}"
                keys += (f"{current}/-1", current)
        return keys


class RedisRateLimiter:
    """:class:`recloop.ports.RateLimiter` over one Redis, one script call per request."""

    shared = True

    def __init__(
        self, classes: Mapping[str, str], url: str, key_prefix: str = "recloop", **options: Any
    ) -> None:
        """``url``: ``async+redis://host:port/db`` (or ``redis://``, ``rediss://``);
        ``options`` go to ``redis.asyncio.Redis.from_url``."""
        self._client = with_fast_packing(Redis.from_url(url.removeprefix("async+"), **options))
        self._script = self._client.register_script(SCRIPT)
        self._classes = {name: _Class(name, spec, key_prefix) for name, spec in classes.items()}

    async def admit_many(
        self, action: str, asks: Sequence[tuple[str, int]]
    ) -> dict[int, Admission]:
        return (await self.admit_groups([(action, asks)]))[0] or {}

    async def admit_groups(
        self, groups: Sequence[tuple[str, Sequence[tuple[str, int]]]], gate: bool = False
    ) -> list[dict[int, Admission] | None]:
        """Every group in one script call (see :class:`recloop.ports.RateLimiter`)."""
        keys: list[str] = []
        args: list[int] = [int(gate)]
        tables = []
        for action, asks in groups:
            table = self._classes[action]
            tables.append(table)
            keys += table.keys([identity for identity, _ in asks])
            args += table.args
            args.append(len(asks))
            args += [count for _, count in asks]
        try:
            reply = await self._script(keys=keys, args=args)
        except RedisError as exc:  # as limits' own storage reports it
            raise StorageError(exc) from exc
        shorts: list[dict[int, Admission]] = [{} for _ in groups]
        now = time.time()
        for at in range(1, len(reply), 8):
            g, n, allowed, j, previous, previous_ttl, current, current_ttl = reply[at : at + 8]
            table = tables[g]
            reset_at = _reset_at(
                now, table.expiries[j], previous, previous_ttl, current, current_ttl
            )
            shorts[g][n] = Admission(allowed, table.names[j], reset_at)
        return [short if g < reply[0] else None for g, short in enumerate(shorts)]

    async def forget(self, identity: str, actions: Sequence[str]) -> None:
        keys = [
            key
            for action in actions
            if action in self._classes
            for key in self._classes[action].keys([identity])
        ]
        if keys:
            await self._client.delete(*keys)

    async def close(self) -> None:
        await self._client.aclose()


def _reset_at(
    now: float, expiry: int, previous: int, previous_ttl: int, current: int, current_ttl: int
) -> float:
    """``limits``' ``get_window_stats`` reset time from a window read in Redis (TTLs in
    milliseconds, as its redis-py storage reads them)."""
    if not (previous or current):
        return now
    previous_reset = current_reset = math.inf
    if previous:
        previous_reset = (max(0, float(previous_ttl)) / 1000) % (expiry / previous)
    if current:
        current_reset = (max(0, float(current_ttl)) / 1000) % expiry
    return now + min(previous_reset, current_reset)
