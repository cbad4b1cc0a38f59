"""The write path in process, without HTTP: log append, apply and checkpoint per event.

Events of the batch workload (benchmarks/workload.py mix: 70 % implicit, 30 % explicit,
uniformly random users and items) go through the container's group commit in
batches (1,000 events by default; ``--batch 8`` stands for a stream of single-event
requests, which the group commit gathers into small rounds), then the implicit buffer
is flushed and everything checkpointed.
Reported per event: the process's CPU (every thread: the event loop and SQLite's) and
the event loop thread's alone, with the guard's evidence on and off.

    uv run --frozen python -m benchmarks.processor [--events N] [--batch N]
                                                   [--storage sqlite|memory]
                                                   [--journal-rows N]

``--journal-rows 0`` writes each checkpoint's rows in place (no state journal), for a
before/after of the journal in one session.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from recloop.config import Settings
from recloop.container import build_container
from recloop.core.events import Event

TYPES = ["view"] * 35 + ["impression"] * 20 + ["click"] * 15 + ["like"] * 20 + ["rating"] * 10


async def run(
    events: int,
    users: int,
    items: int,
    storage: str,
    spam: bool,
    size: int = 1000,
    journal_rows: int | None = None,
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        url = "memory://" if storage == "memory" else f"sqlite+aiosqlite:///{Path(tmp) / 'r.db'}"
        settings = Settings(
            storage={"url": url},
            feedback={"implicit_flush_seconds": 1.0}
            | ({} if journal_rows is None else {"journal_rows": journal_rows}),
            spam={"enabled": spam},
        )
        container = build_container(settings)
        await container.start()
        try:
            await container.items.put_many(
                [
                    # three attributes: an odd number of hashed features never cancels out
                    {
                        "item_id": f"i{i}",
                        "attributes": {"g": f"g{i % 24}", "b": f"b{i % 97}", "sku": f"i{i}"},
                    }
                    for i in range(items)
                ]
            )
            rng = random.Random(1)
            now = time.time()
            batch = []
            for k in range(events):
                kind = rng.choice(TYPES)
                user, item = f"u{rng.randrange(users)}", f"i{rng.randrange(items)}"
                value = float(rng.randint(1, 5)) if kind == "rating" else None
                batch.append(Event(f"e{k}", user, item, kind, now, value))
            cpu, loop = time.process_time(), time.thread_time()
            wall = time.perf_counter()
            for start in range(0, events, size):
                await container.committer.submit(batch[start : start + size])
            await container.processor.flush_implicit()
            wall = time.perf_counter() - wall
            cpu, loop = time.process_time() - cpu, time.thread_time() - loop
        finally:
            await container.stop()
    return {
        "CPU per event, µs": cpu / events * 1e6,
        "event loop CPU per event, µs": loop / events * 1e6,
        "events/s": events / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--storage", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument("--batch", type=int, default=1000, help="events per submit (1000)")
    parser.add_argument(
        "--journal-rows", type=int, default=None, help="feedback.journal_rows (the default's)"
    )
    args = parser.parse_args()
    shape = f"{args.storage}, {args.events:,} events in batches of {args.batch:,}"
    print(f"| {shape} | guard on | guard off |")
    print("|---|---:|---:|")
    common = (args.events, args.users, args.items, args.storage)
    on = asyncio.run(run(*common, True, args.batch, args.journal_rows))
    off = asyncio.run(run(*common, False, args.batch, args.journal_rows))
    for name in on:
        print(f"| {name} | {on[name]:,.1f} | {off[name]:,.1f} |")


if __name__ == "__main__":
    main()
