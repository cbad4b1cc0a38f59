"""The embedded event log's append, in process: CPU and bytes on disk per logged event.

Appends realistic events (uuid7 event ids, 20k users, 5k items, 30 % explicit,
a fifth attributed to an impression, a tenth with context) in 1,000-event
batches through ``SqlEventLog.append`` on a SQLite file (WAL,
``synchronous=FULL``, as ``recloop serve`` runs it) and reports, per event:

- CPU: the process's CPU time over the appends (the event loop and the SQLite
  writer thread together), the events built beforehand;
- bytes on disk: the database file once the WAL is checkpointed into it;
- bytes written: what the process wrote to storage during the appends
  (``/proc/self/io``: WAL frames and checkpoints), where Linux tells it;

and, once loaded, how long one user's ``read_user_events`` takes.

``--request-ids`` gives each batch one request id, as events posted over HTTP
carry. Run it with ``python -m benchmarks.log_append``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.args import count
from benchmarks.stats import median
from recloop.adapters.sql import SqlDatabase, SqlEventLog
from recloop.core.events import EXPLICIT_TYPES, Event
from recloop.core.ids import uuid7

_EXPLICIT = sorted(EXPLICIT_TYPES - {"review"})
_IMPLICIT = ["view", "click", "dwell", "skip", "add_to_cart", "purchase"]


@dataclass(frozen=True, slots=True)
class Result:
    cpu_us: float
    """Process CPU time per event, µs."""
    file_bytes: float
    """Database file size per event after a WAL checkpoint."""
    written_bytes: float | None
    """Bytes the process wrote to storage per event (None where /proc does not say)."""
    user_read_ms: float
    """Wall time of one ``read_user_events`` over the whole log (median of 20 users)."""


def make_events(n: int, batch: int, seed: int, request_ids: bool) -> list[list[Event]]:
    """``n`` events in batches of ``batch``; see the module docstring for their mix."""
    rng = random.Random(seed)
    now = time.time()
    batches: list[list[Event]] = []
    for start in range(0, n, batch):
        request_id = uuid7().replace("-", "") if request_ids else None
        events = []
        for _ in range(min(batch, n - start)):
            explicit = rng.random() < 0.3
            kind = rng.choice(_EXPLICIT if explicit else _IMPLICIT)
            value: float | None = None
            if kind == "rating":
                value = float(rng.randint(1, 5))
            elif kind == "dwell":
                value = round(rng.expovariate(1 / 40), 1)
            attribution = {}
            if rng.random() < 0.2:
                attribution = {
                    "impression_id": uuid7(),
                    "algorithm": rng.choice(["collaborative", "content", "popularity"]),
                    "position": rng.randrange(10),
                }
            context = {}
            if rng.random() < 0.1:
                context = {"device": rng.choice(["ios", "android", "web"])}
            events.append(
                Event(
                    event_id=uuid7(),
                    user_id=f"user-{rng.randrange(20_000)}",
                    item_id=f"item-{rng.randrange(5_000)}",
                    type=kind,
                    timestamp=now - rng.random() * 3600.0,
                    value=value,
                    context=context,
                    attribution=attribution,
                    request_id=request_id,
                )
            )
        batches.append(events)
    return batches


def _written() -> int | None:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


async def run_once(batches: list[list[Event]], directory: Path) -> Result:
    path = directory / "log.db"
    db = SqlDatabase(f"sqlite+aiosqlite:///{path}", sqlite_synchronous="FULL")
    await db.migrate()
    log = SqlEventLog(db)
    await log.append(batches[0][:1])  # open the writer thread and its connection
    total = sum(len(b) for b in batches)
    written = _written()
    cpu = time.process_time()
    for events in batches:
        await log.append(events)
    cpu = time.process_time() - cpu
    after = _written()
    reads = []
    for user in range(20):
        started = time.perf_counter()
        await log.read_user_events(f"user-{user}", 0.0, 2e9)
        reads.append((time.perf_counter() - started) * 1e3)
    await db.dispose()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    size = path.stat().st_size
    for extra in (path.with_name(path.name + "-wal"),):
        if extra.exists():
            size += extra.stat().st_size
    return Result(
        cpu_us=cpu / total * 1e6,
        file_bytes=size / total,
        written_bytes=None if written is None or after is None else (after - written) / total,
        user_read_ms=median(reads),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.log_append", description=__doc__)
    parser.add_argument("--events", type=count, default=200_000)
    parser.add_argument("--batch", type=count, default=1_000)
    parser.add_argument("--repeat", type=count, default=3, help="runs; medians are quoted")
    parser.add_argument("--request-ids", action="store_true", help="one request id per batch")
    args = parser.parse_args(argv)
    batches = make_events(args.events, args.batch, seed=7, request_ids=args.request_ids)
    results = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            results.append(asyncio.run(run_once(batches, Path(tmp))))
    written = [r.written_bytes for r in results if r.written_bytes is not None]
    print(f"{args.events} events in batches of {args.batch}, median of {args.repeat} runs")
    print(f"CPU per event:             {median([r.cpu_us for r in results]):8.2f} µs")
    print(f"bytes on disk per event:   {median([r.file_bytes for r in results]):8.1f}")
    if written:
        print(f"bytes written per event:   {median(written):8.1f}")
    print(f"read_user_events:          {median([r.user_read_ms for r in results]):8.2f} ms")


if __name__ == "__main__":
    main()
