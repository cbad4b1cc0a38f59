"""An example history for ``recloop import``, and the import's speed.

``write_history`` writes a public-style history (JSON Lines, the API's fields): users
with a favourite genre are shown slates of five items proposed by one of the
recommendation algorithms (``impression`` rows naming the slate's
``attribution.impression_id``, the algorithm's score in ``context.score``), click some
(far more often the best-scored ones, and items of their genre), and rate some of
what they clicked. Seeded: the same arguments write
the same file. docs/operations.md ("Importing history") uses it for the recipe
import → ``recloop train``; ``tests/integration/test_import.py`` runs that
recipe.

``python -m benchmarks.history [--rows N]`` writes such a file of about N rows in a
temporary directory, imports it with ``recloop import`` into a fresh SQLite file
(the default settings), and prints the rows per second the command reports (the
whole import: reading, sorting, logging, applying, judging).

``--batch-workload`` imports instead the events the batched-ingest benchmark posts
(``benchmarks.workload``: its users, items, mix and event ids, the suite's catalogue
registered first), stamped at 40,000 events per second of history: the same events
the server takes over HTTP, so the import's CPU per row compares with the server's CPU
per event (``python -m benchmarks --only batch``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.workload import EventFactory, Workload
from recloop.config import load_settings
from recloop.container import build_container

GENRES = ("jazz", "rock", "folk", "pop", "classical")
ALGORITHMS = ("collaborative", "content_based", "popularity", "trending")
DAYS = 10  # within learning.training_days (14) of the end: all of it trains
SLATE = 5


def write_history(
    path: Path,
    end: float,
    users: int = 200,
    sessions: int = 12,
    seed: int = 7,
    slates: bool = True,
) -> int:
    """Write the history of the ``DAYS`` days before ``end`` (Unix seconds; the recipe
    uses an hour ago, so that every click's attribution window is over); how many rows.
    ``slates=False`` leaves the impression rows out (clicks and ratings only)."""
    rng = random.Random(seed)
    start = end - DAYS * 86400.0
    items = [f"m{i}" for i in range(300)]
    genre_of = {item: GENRES[i % len(GENRES)] for i, item in enumerate(items)}
    rows: list[dict[str, object]] = []
    for u in range(users):
        user = f"u{u}"
        favourite = GENRES[u % len(GENRES)]
        for s in range(sessions):
            at = start + rng.random() * (DAYS * 86400.0 - 3600.0)
            slate_id = f"{user}-s{s}"
            shown = rng.sample(items, SLATE)
            scores = sorted((rng.random() for _ in shown), reverse=True)
            algorithm = rng.choice(ALGORITHMS)  # the slate's proposer
            for item, score in zip(shown, scores, strict=True):
                attribution = {"algorithm": algorithm, "impression_id": slate_id}
                if slates:
                    rows.append(
                        {
                            "user_id": user,
                            "item_id": item,
                            "type": "impression",
                            "timestamp": round(at, 3),
                            "context": {"score": round(score, 4)},
                            "attribution": attribution,
                        }
                    )
                liked = genre_of[item] == favourite
                p = 0.02 + 0.6 * score**3 + (0.15 if liked else 0.0)
                if rng.random() < p:
                    clicked_at = at + 5.0 + rng.random() * 60.0
                    rows.append(
                        {
                            "user_id": user,
                            "item_id": item,
                            "type": "click",
                            "timestamp": round(clicked_at, 3),
                            "attribution": attribution,
                        }
                    )
                    if rng.random() < 0.3:
                        rating = 5 if liked else rng.choice((1, 2, 3))
                        rows.append(
                            {
                                "user_id": user,
                                "item_id": item,
                                "type": "rating",
                                "value": rating,
                                "timestamp": round(clicked_at + 120.0, 3),
                            }
                        )
    rng.shuffle(rows)  # files are rarely in time order: the import sorts them
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    return len(rows)


BATCH_RATE = 40_000.0
"""Events per second of history in ``--batch-workload``: the batched-ingest benchmark's pace."""


def write_batch_workload(path: Path, rows: int, end: float) -> int:
    """Write ``rows`` events of the batched-ingest benchmark's workload, stamped at
    :data:`BATCH_RATE` per second up to ``end``, in time order; how many rows."""
    events = EventFactory(Workload(), "history", seed=1)
    start = end - rows / BATCH_RATE
    with path.open("w", encoding="utf-8") as out:
        for k0 in range(0, rows, 1_000):
            for k, event in enumerate(events.batch(min(1_000, rows - k0)), start=k0):
                event["timestamp"] = start + k / BATCH_RATE
                out.write(json.dumps(event) + "\n")
    return rows


def register_catalogue(work: Path) -> None:
    """The batched-ingest benchmark's items, registered in ``work``'s default database (as
    the suite registers them before its loads)."""

    async def put() -> None:
        container = build_container(load_settings(None))
        await container.start()
        try:
            for body in Workload().item_batches():
                await container.items.put_many(body["items"])
        finally:
            await container.stop()

    here = Path.cwd()
    os.chdir(work)
    try:
        asyncio.run(put())
    finally:
        os.chdir(here)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.history", description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000, help="about this many rows")
    parser.add_argument(
        "--no-slates", action="store_true", help="clicks and ratings only: no slates to rank"
    )
    parser.add_argument(
        "--batch-workload",
        action="store_true",
        help="the batched-ingest benchmark's events instead (its catalogue registered first)",
    )
    args = parser.parse_args()
    shown = 0 if args.no_slates else SLATE
    per_user = 12 * (shown + SLATE * 0.33)  # sessions x (shown + clicks and ratings)
    users = max(1, math.ceil(args.rows / per_user))
    with tempfile.TemporaryDirectory(prefix="recloop-import-") as tmp:
        work = Path(tmp)
        history = work / "history.jsonl"
        end = time.time() - 3600.0
        if args.batch_workload:
            users = Workload().users
            n = write_batch_workload(history, args.rows, end)
            register_catalogue(work)
        else:
            n = write_history(history, end, users=users, slates=not args.no_slates)
        done = subprocess.run(
            [sys.executable, "-m", "recloop", "import", str(history), "--json"],
            cwd=work,
            check=True,
            capture_output=True,
            text=True,
        )
        summary = json.loads(done.stdout)
    cpu = summary["cpu_seconds"]
    print(
        f"{n:,} rows ({users:,} users): {summary['rows_per_second']:,.0f} rows/s, "
        f"{summary['seconds']:.1f} s; {cpu:.1f} CPU s ({n / cpu:,.0f} rows per CPU second); "
        f"accepted {summary['accepted']:,}, slates {summary['slates']:,}, "
        f"sorted runs {summary['sorted_runs']}"
    )


if __name__ == "__main__":
    main()
