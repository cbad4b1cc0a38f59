"""The retraction's read of newly flagged users' events, whole log against bounded.

A log of ``--events`` events (default 1,000,000) from 50,000 users over 30 days
(logging times and timestamps spread evenly along the offsets), the last
``--attackers`` users (default 50) sending 15 events each in its last half hour.
They are read the way ``services.retraction`` reads users flagged together:

- whole: ``read_users_events(ids, 0, until)``, one scan of the log (as before);
- bounded: ``offset_logged_before(min first_event_at - max_future - slack)``
  then ``read_users_events(ids, 0, until, after)`` (the slack: an hour).

Both must find the same events; each is timed ``--repeat`` times (median, wall
time, the database warm). Run with ``python -m benchmarks.spam_retraction_read``
(``--url postgresql+asyncpg://...`` for PostgreSQL: an empty database, vacuumed and
analysed once loaded, as autovacuum keeps a table that grew).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import tempfile
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks.args import count
from benchmarks.stats import median
from recloop.adapters.sql import SqlDatabase, SqlEventLog
from recloop.core.events import Event

DAY = 86_400.0
SLACK = 3_600.0
MAX_FUTURE = 300.0
_AT = 'CAST(:t0 AS DOUBLE PRECISION) + "offset" * CAST(:dt AS DOUBLE PRECISION)'


def make_events(n: int, attackers: int, seed: int) -> tuple[list[Event], list[str]]:
    rng = random.Random(seed)
    shills = [f"shill-{k}" for k in range(attackers)]
    burst = attackers * 15
    events = [
        Event(f"e{k}", f"u{rng.randrange(50_000)}", f"i{rng.randrange(5_000)}", "like", 0.0)
        for k in range(n - burst)
    ]
    tail = len(events) - int(0.5 * 3_600.0 / (30 * DAY / n))  # the last half hour
    for k in range(burst):
        events.insert(
            rng.randrange(tail, len(events) + 1),
            Event(f"s{k}", shills[k % attackers], "target", "rating", 0.0, value=5.0),
        )
    return events, shills


async def run(url: str, n: int, attackers: int, repeat: int, seed: int) -> None:
    db = SqlDatabase(url)
    await db.migrate()
    log = SqlEventLog(db)
    events, shills = make_events(n, attackers, seed)
    started = time.perf_counter()
    for k in range(0, len(events), 10_000):
        await log.append(events[k : k + 10_000])
    # Spread logging times (and timestamps) over 30 days, evenly along the offsets.
    t0, dt = time.time() - 30 * DAY, 30 * DAY / n
    async with db.write() as conn:
        await conn.execute(
            text(f'UPDATE events SET accepted_at = {_AT}, "timestamp" = {_AT}'),
            {"t0": t0, "dt": dt},
        )
    if url.startswith("postgresql"):  # what autovacuum does to a table that grew
        engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(text("VACUUM ANALYZE events"))
        await engine.dispose()
    print(f"loaded {n:,} events in {time.perf_counter() - started:.0f} s")
    until = math.inf
    whole = await log.read_users_events(shills, 0.0, until)
    first = min(e.timestamp for found in whole.values() for e in found)
    timings: dict[str, list[float]] = {"whole": [], "bounded": []}
    after = 0
    for _ in range(repeat):
        t = time.perf_counter()
        found = await log.read_users_events(shills, 0.0, until)
        timings["whole"].append(time.perf_counter() - t)
        assert found == whole
        t = time.perf_counter()
        after = await log.offset_logged_before(first - MAX_FUTURE - SLACK)
        found = await log.read_users_events(shills, 0.0, until, after)
        timings["bounded"].append(time.perf_counter() - t)
        assert found == whole, "the bounded read missed events"
    last = await log.last_offset()
    print(
        f"{attackers} users, {sum(len(v) for v in whole.values())} events; "
        f"bounded read above offset {after:,} of {last:,} ({last - after:,} rows)"
    )
    for name, values in timings.items():
        print(f"{name:8s} median {median(values) * 1e3:8.1f} ms  (of {repeat})")
    await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=count, default=1_000_000)
    parser.add_argument("--attackers", type=count, default=50)
    parser.add_argument("--repeat", type=count, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--url", default=None, help="an empty database (default: SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite+aiosqlite:///{Path(tmp) / 'log.db'}"
        asyncio.run(run(url, args.events, args.attackers, args.repeat, args.seed))


if __name__ == "__main__":
    main()
