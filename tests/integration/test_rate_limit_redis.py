"""The Redis limiter (one script call per request) decides as ``limits``' own Redis storage.

Three limiters on the real Redis, each under its own key prefix, get the same
random asks: ours (:class:`RedisRateLimiter`), the oracle (``limits``' own
asynchronous ``SlidingWindowCounterRateLimiter`` over its Redis storage, asked the
documented way) and a mixed one whose batches go at random to ours or to
``limits``' own strategy on the same keys (a rolling upgrade). Every decision
must be the same.

Redis keeps the windows as key TTLs on its own clock, so time is advanced by
shortening every test key's TTL in one atomic script (a key whose TTL runs out
is deleted, as Redis would), by steps that never bring a window boundary within
the few milliseconds between the limiters' calls. The limits are a day and a week long: the few
milliseconds of real time between the three limiters' calls then move a
weighted count by about 1e-8 of a unit, far from changing a decision.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import pytest
from limits import RateLimitItem, parse_many
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string
from redis.asyncio import Redis

from recloop.adapters.ratelimit import RedisRateLimiter, UpstreamRateLimiter, shared_limiter
from recloop.core.ratelimit import Admission
from tests.redis import flush_prefix

CLASSES = {"explicit": "7/day;20 per 7 days", "implicit": "30 per 2 days", "key": "60/day"}
DAY_MS = 86_400_000

ADVANCE = """
local gone = 0
for _, key in ipairs(KEYS) do
    local ttl = redis.call('pttl', key)
    if ttl > 0 then
        if ttl <= tonumber(ARGV[1]) then
            redis.call('del', key)
            gone = gone + 1
        else
            redis.call('pexpire', key, ttl - tonumber(ARGV[1]))
        end
    end
end
return gone
"""


class Oracle:
    """``limits``' own strategy and Redis storage, hit as recloop's rules say."""

    def __init__(self, url: str, prefix: str) -> None:
        self.storage = storage_from_string(
            f"async+{url}", implementation="redispy", key_prefix=prefix
        )
        self.limiter = SlidingWindowCounterRateLimiter(self.storage)
        self.items = {name: parse_many(spec) for name, spec in CLASSES.items()}

    async def admit(self, action: str, identity: str, count: int) -> Admission:
        items: list[RateLimitItem] = self.items[action]
        lim = self.limiter
        for n, item in enumerate(items):
            if not await lim.hit(item, action, identity, cost=count):
                stats = [await lim.get_window_stats(i, action, identity) for i in items]
                tightest = min(range(n, len(items)), key=lambda k: stats[k].remaining)
                allowed = max(0, min(stats[tightest].remaining, count))
                if allowed:
                    for later in items[n:]:
                        await lim.hit(later, action, identity, cost=allowed)
                return Admission(allowed, str(items[tightest]), stats[tightest].reset_time)
        return Admission(count)

    async def admit_many(self, action: str, asks: list[tuple[str, int]]) -> dict[int, Admission]:
        decided = {n: await self.admit(action, *ask) for n, ask in enumerate(asks)}
        return {n: a for n, a in decided.items() if a.limit is not None}

    async def admit_groups(
        self, groups: list[tuple[str, list[tuple[str, int]]]], gate: bool
    ) -> list[dict[int, Admission] | None]:
        decided: list[dict[int, Admission] | None] = []
        for action, asks in groups:
            gated = gate and decided and decided[0]
            decided.append(None if gated else await self.admit_many(action, asks))
        return decided

    async def close(self) -> None:
        await self.storage.bridge.storage.aclose()


def random_asks(rng: random.Random, users: list[str], counts: list[int]) -> list[tuple[str, int]]:
    """1 to 8 asks, sometimes of a few users only (so some ask twice)."""
    return [
        (rng.choice(users[: rng.choice([4, len(users)])]), rng.choice(counts))
        for _ in range(rng.randint(1, 8))
    ]


def same(got: dict[int, Admission], want: dict[int, Admission], asked_at: float) -> bool:
    """Equal admitted units and refusing limits; reset times equal up to the real time
    between the calls.

    ``limits`` reports a reset as a TTL modulo a period, read from Redis's clock in
    milliseconds. A key set and read within the same millisecond (always, inside one
    script: Redis freezes its clock there; sometimes, in limits' separate calls) reads
    a remainder of 0 where a millisecond later reads almost a whole period: when one
    side's reset is at the boundary (``asked_at``), the other may be a period later.
    """
    return got.keys() == want.keys() and all(
        (got[n].admitted, got[n].limit) == (want[n].admitted, want[n].limit)
        and (
            abs((got[n].reset_at or 0) - (want[n].reset_at or 0)) < 0.5
            or min(got[n].reset_at or 0, want[n].reset_at or 0) - asked_at < 0.5
        )
        for n in got
    )


@pytest.mark.parametrize("seed", [5, 6])
async def test_script_decides_as_limits_redis_storage(redis_url: str, seed: int) -> None:
    base = f"recloop-test-{uuid.uuid4().hex[:8]}"
    ours = RedisRateLimiter(CLASSES, redis_url, f"{base}-ours")
    oracle = Oracle(redis_url, f"{base}-oracle")
    upstream = UpstreamRateLimiter(CLASSES, f"async+{redis_url}", f"{base}-mixed")
    mixed_ours = RedisRateLimiter(CLASSES, f"async+{redis_url}", f"{base}-mixed")
    client = Redis.from_url(redis_url)
    advance = client.register_script(ADVANCE)
    rng = random.Random(seed)
    users = [f"user-{n}" for n in range(25)] + ["ünï/code", "a b"]
    counts = [1, 1, 2, 3, 5, 8, 9, 25, 70]
    asks_seen = partial = refused = expired = gated = 0
    try:
        for _ in range(300):
            # Steps of odd milliseconds: a window boundary never falls within the few
            # milliseconds between the limiters' calls (a key's TTL reaching its expiry
            # there would shift its window for one limiter and not the other).
            step = rng.choice([0, 0, 0.01, 0.1, 0.3, 0.6, 1.0, 1.4, 2.5]) * DAY_MS
            if step:
                step += rng.randrange(1_000, 60_000)
                keys = [key async for key in client.scan_iter(match=f"{base}-*")]
                if keys:
                    expired += await advance(keys=keys, args=[int(step)])
            if rng.random() < 0.3:  # a whole request: the API key's ask, then each class's
                groups = [("key", [("api-key", rng.choice(counts))])]
                groups += [(action, random_asks(rng, users, counts)) for action in CLASSES]
                gate = rng.random() < 0.8
            else:
                groups, gate = [(rng.choice(list(CLASSES)), random_asks(rng, users, counts))], False
            asked_at = time.time()
            want_all = await oracle.admit_groups(groups, gate)
            got_all = await ours.admit_groups(groups, gate)
            mixed_all = await rng.choice([upstream, mixed_ours]).admit_groups(groups, gate)
            assert [g is None for g in got_all] == [g is None for g in want_all]
            assert [g is None for g in mixed_all] == [g is None for g in want_all]
            for (action, asks), got, want, mixed in zip(
                groups, got_all, want_all, mixed_all, strict=True
            ):
                if want is None:
                    gated += 1
                    continue
                assert got is not None and mixed is not None
                assert same(got, want, asked_at), (action, asks, got, want)
                assert same(mixed, want, asked_at), (action, asks, mixed, want)
                asks_seen += len(asks)
                partial += sum(1 for a in got.values() if a.admitted)
                refused += len(got)
        assert asks_seen > 1_000
        assert refused > 150 and partial > 50 and expired > 100 and gated > 10
    finally:
        for limiter in (ours, oracle, upstream, mixed_ours):
            await limiter.close()
        await client.aclose()
        await flush_prefix(redis_url, base)


async def test_one_script_call_per_request(redis_url: str) -> None:
    """A request's asks, over every limit of the class, reach Redis as one EVALSHA."""
    prefix = f"recloop-test-{uuid.uuid4().hex[:8]}"
    limiter = shared_limiter(CLASSES, f"async+{redis_url}", prefix)
    assert isinstance(limiter, RedisRateLimiter)
    sent: list[str] = []
    execute = limiter._client.execute_command

    async def counted(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]).upper())
        return await execute(*args, **options)

    limiter._client.execute_command = counted  # type: ignore[method-assign]
    client = Redis.from_url(redis_url)
    try:
        await limiter.admit_many("explicit", [("warm", 1)])  # loads the script
        sent.clear()
        key, short, _ = await limiter.admit_groups(
            [
                ("key", [("api-key", 50)]),
                ("explicit", [(f"u{n}", 1 + n % 9) for n in range(500)]),
                ("implicit", [(f"u{n}", 1) for n in range(500)]),
            ],
            gate=True,
        )
        assert sent == ["EVALSHA"]
        assert key == {} and short is not None
        assert sorted(short) == [n for n in range(500) if 1 + n % 9 > 7]
        assert {a.admitted for a in short.values()} == {7}
        sent.clear()
        gated = await limiter.admit_groups(
            [("key", [("api-key", 50)]), ("explicit", [("u0", 1)])], gate=True
        )
        assert sent == ["EVALSHA"]
        assert gated[0] is not None and gated[0][0].admitted == 10  # 60 a day
        assert gated[1] is None  # not decided, nothing charged
        assert await limiter.admit_many("explicit", [("u0", 6)]) == {}  # u0 had 1 of 7
        await limiter.forget("u3", ["explicit", "implicit"])
        assert [key async for key in client.scan_iter(match=f"{prefix}:*u3/*")] == []
        assert [key async for key in client.scan_iter(match=f"{prefix}:*u4/*")] != []
    finally:
        await limiter.close()
        await client.aclose()
        await flush_prefix(redis_url, prefix)
