"""The canary monitor's pass, part by part, in process (SQLite): what it costs per event
logged and per impression ranked.

``python -m benchmarks.monitor_parts [--events N] [--impressions N] [--repeat R]
[--only clicks|tally]``

- ``clicks``: the clicks that name an impression, read from a log of ``N`` events (the
  batch workload's mix of types, half the clicks and impressions naming one), two ways:
  ``whole log`` (every event since the cursor read and decoded, the clicks kept: the
  monitor's read before session 16) and ``attributed clicks``
  (``EventLog.read_impression_clicks``, through ``event_impressions``); CPU per logged
  event.
- ``tally``: ``Tally.add`` of ``N`` impression heads of 100 shown items each (a
  5,000-item catalogue), added a slice at a time as the monitor does; ``Tally.exclude``
  of half their users (flagged by the guard), and again of none; ``Tally.expire`` of them
  all; CPU per impression held. ``--only tally`` uses only what earlier trees have, so
  the same command measures another tree's ``src`` first on ``PYTHONPATH`` (interleave
  the two for a ratio).

Medians of ``R`` repetitions (``time.process_time``: every thread of the process).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from recloop.adapters.sql.database import SqlDatabase
from recloop.adapters.sql.log import SqlEventLog
from recloop.core.events import Event
from recloop.learning.tally import Tally
from recloop.ports import ImpressionHead

TYPES = ["view"] * 35 + ["impression"] * 20 + ["click"] * 15 + ["like"] * 20 + ["rating"] * 10
PAGE = 10_000
"""The monitor's page of the log."""
SLICE = 250
"""Impressions added to the counts at a time."""


async def clicks(events: int, repeat: int) -> dict[str, float]:
    """CPU µs per logged event of each way to read the attributed clicks."""
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        db = SqlDatabase(f"sqlite+aiosqlite:///{Path(tmp) / 'r.db'}")
        await db.migrate()
        log = SqlEventLog(db)
        now = time.time()
        for start in range(0, events, 1_000):
            batch = []
            for k in range(start, min(start + 1_000, events)):
                kind = rng.choice(TYPES)
                named = kind in ("click", "impression") and rng.random() < 0.5
                batch.append(
                    Event(
                        f"e{k}",
                        f"u{rng.randrange(20_000)}",
                        f"i{rng.randrange(5_000)}",
                        kind,
                        now,
                        4.0 if kind == "rating" else None,
                        attribution={"impression_id": f"imp{k % 5_000}"} if named else {},
                    )
                )
            await log.append(batch)

        async def count(
            read: Callable[[int, int], Awaitable[list[Event]]],
            kept: Callable[[list[Event]], int],
        ) -> int:
            """The clicks kept of every page ``read`` gives, as the monitor pages."""
            cursor, found = 0, 0
            while True:
                page = await read(cursor, PAGE)
                if page:
                    cursor = page[-1].offset or cursor
                found += kept(page)
                if len(page) < PAGE:
                    return found

        def named_clicks(page: list[Event]) -> int:
            return sum(1 for e in page if e.type == "click" and e.attribution.get("impression_id"))

        ways: dict[str, Callable[[], Awaitable[int]]] = {
            "whole log": partial(count, log.read, named_clicks),
            "attributed clicks": partial(count, log.read_impression_clicks, len),
        }
        times: dict[str, list[float]] = {"whole log": [], "attributed clicks": []}
        counts: set[int] = set()
        for _ in range(repeat):
            for name, way in ways.items():
                started = time.process_time()
                counts.add(await way())
                times[name].append((time.process_time() - started) / events * 1e6)
        await db.dispose()
    assert len(counts) == 1, counts  # both ways find the same clicks
    return {name: statistics.median(found) for name, found in times.items()}


def tally(impressions: int, repeat: int) -> dict[str, float]:
    """CPU µs per impression held of adding heads to the counts, of excluding half the
    users and including them again, and of expiring them all."""
    rng = random.Random(1)
    catalogue = [f"item-{i}" for i in range(5_000)]
    heads = [
        ImpressionHead(
            f"imp{k}",
            f"u{rng.randrange(2_000)}",
            1_000.0 + k / 100,
            tuple(rng.sample(catalogue, 100)),
        )
        for k in range(impressions)
    ]
    half = frozenset(f"u{u}" for u in range(0, 2_000, 2))
    found: dict[str, list[float]] = {"add": [], "exclude": [], "include": [], "expire": []}
    for _ in range(repeat):
        counts = Tally(600.0)
        started = time.process_time()
        for start in range(0, len(heads), SLICE):
            counts.add(heads[start : start + SLICE])
        found["add"].append((time.process_time() - started) / impressions * 1e6)
        for name, users in (("exclude", half), ("include", frozenset())):
            started = time.process_time()
            counts.exclude(users)  # half the users' impressions out of the counts, then back
            found[name].append((time.process_time() - started) / impressions * 1e6)
        started = time.process_time()
        counts.expire(float("inf"))
        found["expire"].append((time.process_time() - started) / impressions * 1e6)
        assert not counts.item_stats and not len(counts)
    return {name: statistics.median(values) for name, values in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--impressions", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=("clicks", "tally"), default=None)
    args = parser.parse_args()
    if args.only in (None, "clicks"):
        for name, value in asyncio.run(clicks(args.events, args.repeat)).items():
            print(f"clicks, {name}: {value:.2f} µs per logged event")
    if args.only in (None, "tally"):
        for name, value in tally(args.impressions, args.repeat).items():
            print(f"tally, {name}: {value:.2f} µs per impression of 100 items held")


if __name__ == "__main__":
    main()
