"""Where the guard's time goes: each part of it alone, in process, on the batch workload.

``python -m benchmarks.guard_parts`` builds the batched-ingest load's events
(1,000-event batches of the mixed workload, 20,000 users) and times, per
event, what the guard adds to ingest in the embedded deployment:

- ``rate limits``: the per-key limit and each user's class limits, as ``IngestService``
  asks them (one ``admit_groups`` call per batch; older commits: the key's limit, then
  one ``admit_many`` per class); ``--storage async+redis://...`` counts them in Redis
  (under a key prefix of their own, deleted afterwards) instead of in process;
- ``spam evidence``: ``GuardService.observe`` (each event folded into its user's evidence,
  users judged when their turn comes);
- ``block and reliability look-ups``: ``GuardService.blocked`` at ingest and
  ``GuardService.reliabilities`` when the batch is applied;
- ``sweep of the quiet users``: then one ``GuardService.sweep`` as if the load had gone
  quiet, judging every user with unjudged evidence (most of them with 20,000 users: a
  user is judged during ingest from their 20th event), per event of the load; the CPU
  of this thread only (the sweep's group detector runs in another: not counted);
- the memory the guard's evidence took (the process's resident set after the spam
  evidence part, less before; the first repetition includes the interpreter's own
  growth).

CPU time of this process (``time.process_time``), with the server's garbage-collector
settings (``recloop serve`` raises the first threshold and freezes the start-up heap). The
whole-server comparison, guard on against guard off, is ``python -m benchmarks --only
guard``; this one says which part of the difference is which.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

from benchmarks.args import count
from benchmarks.workload import EventFactory, Workload
from recloop.adapters.memory.store import InMemoryStateStore
from recloop.config import CacheSettings, Settings, SpamSettings
from recloop.container import rate_limits
from recloop.core.events import EXPLICIT_TYPES, Event
from recloop.services.guard import GuardService
from recloop.services.limits import RateLimits


def events(batches: int, size: int, seed: int, users: int) -> list[list[Event]]:
    """``batches`` batches of the workload's events on ``users`` users, a tenth of a
    second apart."""
    workload = Workload(users=users)
    factory = EventFactory(workload, "parts", seed=seed, user_prefix=f"parts{seed}")
    now = time.time()
    return [
        [
            Event(
                event_id=f["event_id"],
                user_id=f["user_id"],
                item_id=f["item_id"],
                type=f["type"],
                timestamp=now + b * 0.1,
                value=None if f.get("value") is None else float(f["value"]),
            )
            for f in factory.batch(size)
        ]
        for b in range(batches)
    ]


async def admit(limits: RateLimits, batch: Sequence[Event]) -> None:
    """What ``IngestService`` asks the limits for one request."""
    explicit: dict[str, int] = {}
    implicit: dict[str, int] = {}
    for e in batch:
        group = explicit if e.type in EXPLICIT_TYPES else implicit
        group[e.user_id] = group.get(e.user_id, 0) + 1
    if hasattr(limits, "admit_groups"):
        await limits.admit_groups(
            [
                ("key", [("bench", len(batch))]),
                ("explicit", list(explicit.items())),
                ("implicit", list(implicit.items())),
            ],
            gate=True,
        )
        return
    await limits.admit("key", "bench", len(batch))
    for action, users in (("explicit", explicit), ("implicit", implicit)):
        if hasattr(limits, "admit_many"):
            await limits.admit_many(action, list(users.items()))
        else:  # commits before admit_many (to compare with them: PYTHONPATH=<their src>)
            for user_id, n in users.items():
                await limits.admit(action, user_id, n)


async def look_up(guard: GuardService, batch: Sequence[Event]) -> None:
    for e in batch:
        guard.blocked(e.user_id)
    guard.reliabilities([e.user_id for e in batch])


async def cpu_per_event(
    part: Callable[[Sequence[Event]], Awaitable[None]], batches: Sequence[Sequence[Event]]
) -> float:
    """µs of CPU per event of ``part`` over every batch."""
    start = time.process_time()
    for batch in batches:
        await part(batch)
    return (time.process_time() - start) * 1e6 / sum(len(b) for b in batches)


async def measure(batches: int, size: int, seed: int, storage: str, users: int) -> dict[str, float]:
    prefix = f"recloop-guard-parts-{os.getpid()}-{seed}"
    settings = Settings(rate_limits={"storage": storage, "key_prefix": prefix})
    limits = rate_limits(settings)
    assert limits is not None
    loaded = events(batches, size, seed, users)
    guard = GuardService(InMemoryStateStore(), SpamSettings(), max_users=CacheSettings().max_users)
    gc.collect()
    gc.freeze()
    try:
        rss = _rss_mb()
        spam = await cpu_per_event(guard.observe, loaded)
        gc.collect()
        grown = _rss_mb() - rss
        return {
            "rate limits": await cpu_per_event(lambda b: admit(limits, b), loaded),
            "spam evidence": spam,
            "block and reliability look-ups": await cpu_per_event(
                lambda b: look_up(guard, b), loaded
            ),
            _SWEEP: await sweep(guard, loaded),
            _MEMORY: grown,
        }
    finally:
        assert not limits.degraded, limits.last_error
        await limits.close()
        if storage != "memory://":
            await _delete_prefix(storage, prefix)


async def sweep(guard: GuardService, batches: Sequence[Sequence[Event]]) -> float:
    """µs of this thread's CPU per event of one sweep after the load (everyone quiet)."""
    quiet = time.time() + SpamSettings().judge_within_seconds
    start = time.thread_time()
    await guard.sweep(quiet)
    return (time.thread_time() - start) * 1e6 / sum(len(b) for b in batches)


_MEMORY = "the guard's memory after the load (RSS growth), MB"
_SWEEP = "sweep of the quiet users (this thread's CPU)"


def _rss_mb() -> float:
    """This process's resident set, MB (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


async def _delete_prefix(storage: str, prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(storage.removeprefix("async+"))
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        for start in range(0, len(keys), 1_000):
            await client.delete(*keys[start : start + 1_000])
    finally:
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.guard_parts", description=__doc__)
    parser.add_argument("--batches", type=count, default=120, help="requests (120)")
    parser.add_argument("--repeat", type=count, default=3, help="repetitions, fresh users (3)")
    parser.add_argument(
        "--size", type=count, default=1_000, help="events per request (1,000; 1: single events)"
    )
    parser.add_argument(
        "--storage", default="memory://", help="rate_limits.storage (memory://, async+redis://…)"
    )
    parser.add_argument(
        "--users",
        type=count,
        default=Workload().users,
        help="users the events go to (20,000; fewer: more events each, so the spam evidence"
        " includes judgements, due after a user's 20th event and then its 40th, 80th, …)",
    )
    args = parser.parse_args(argv)
    gc.set_threshold(50_000, 20, 20)  # recloop serve's settings (cli.py)
    runs = [
        asyncio.run(measure(args.batches, args.size, seed, args.storage, args.users))
        for seed in range(args.repeat)
    ]
    print("| guard part | CPU per event, µs (median) | runs |")
    print("|---|---:|---|")
    for name in runs[0]:
        values = [r[name] for r in runs]
        shown = " · ".join(f"{v:.2f}" for v in values)
        print(f"| {name} | {statistics.median(values):.2f} | {shown} |")
    total = [sum(v for k, v in r.items() if k != _MEMORY) for r in runs]
    shown = " · ".join(f"{v:.2f}" for v in total)
    print(f"| all parts (CPU) | {statistics.median(total):.2f} | {shown} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
