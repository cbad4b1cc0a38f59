"""The write path in process, without HTTP: log append, apply and checkpoint per event.

Events of the batch workload (benchmarks/workload.py mix: 70 % implicit, 30 % explicit,
uniformly random users and items) go through the container's group commit in
batches (1,000 events by default; ``--batch 8`` stands for a stream of single-event
requests, which the group commit gathers into small rounds), then the implicit buffer
is flushed and everything checkpointed.
Reported per event: the process's CPU (every thread: the event loop and SQLite's) and
the event loop thread's alone, with the guard's evidence on and off.

``--ingest`` sends the batches as ``POST /feedback`` bodies through the route's own
work without HTTP (``api.routers.feedback.answer_feedback``: decode, domain rules, the
blocked users' screen, the rate limits, the log, the answer encoded): the server's
batched ingest less uvicorn and the request middleware. Guard off then also turns the
rate limits off, as the server benchmark's baseline does; the per-key limit is raised
as there (``benchmarks.servers.RECLOOP_ENV``).

    uv run --frozen python -m benchmarks.processor [--events N] [--batch N]
                                                   [--storage sqlite|memory]
                                                   [--journal-rows N] [--ingest]

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

import orjson

from recloop.api.routers.feedback import answer_feedback
from recloop.config import Settings
from recloop.container import build_container
from recloop.core.events import Event
from recloop.metrics import Metrics

TYPES = ["view"] * 35 + ["impression"] * 20 + ["click"] * 15 + ["like"] * 20 + ["rating"] * 10


async def run(
    events: int,
    users: int,
    items: int,
    storage: str,
    spam: bool,
    size: int = 1000,
    journal_rows: int | None = None,
    ingest: bool = False,
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        url = "memory://" if storage == "memory" else f"sqlite+aiosqlite:///{Path(tmp) / 'r.db'}"
        settings = Settings(
            storage={"url": url},
            feedback={"implicit_flush_seconds": 1.0}
            | ({} if journal_rows is None else {"journal_rows": journal_rows}),
            spam={"enabled": spam},
            rate_limits={"enabled": spam or not ingest, "per_key": "1000000000/minute"},
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
            bodies = (
                [_body(batch[start : start + size]) for start in range(0, events, size)]
                if ingest
                else []
            )
            metrics = Metrics(lambda: container)
            cpu, loop = time.process_time(), time.thread_time()
            wall = time.perf_counter()
            for start in range(0, events, size):
                if ingest:
                    body = bodies[start // size]
                    orjson.dumps(await answer_feedback(body, container, "bench", metrics))
                else:
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


def _body(events: list[Event]) -> bytes:
    """The events as a ``POST /feedback`` batch (stamped by the ingest, as the load's are)."""
    return orjson.dumps(
        {
            "events": [
                {"event_id": e.event_id, "user_id": e.user_id, "item_id": e.item_id, "type": e.type}
                | ({} if e.value is None else {"value": e.value})
                for e in events
            ]
        }
    )


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
    parser.add_argument(
        "--ingest", action="store_true", help="through POST /feedback's work, without HTTP"
    )
    args = parser.parse_args()
    shape = f"{args.storage}, {args.events:,} events in batches of {args.batch:,}"
    shape += " through the ingest" if args.ingest else ""
    print(f"| {shape} | guard on | guard off |")
    print("|---|---:|---:|")
    common = (args.events, args.users, args.items, args.storage)
    on = asyncio.run(run(*common, True, args.batch, args.journal_rows, args.ingest))
    off = asyncio.run(run(*common, False, args.batch, args.journal_rows, args.ingest))
    for name in on:
        print(f"| {name} | {on[name]:,.1f} | {off[name]:,.1f} |")


if __name__ == "__main__":
    main()
