"""Impressions on disk and the canary monitor's pass, in process (SQLite, synchronous=FULL).

``python -m benchmarks.impressions [--impressions N] [--candidates C] [--shown K]``
registers the suite's items (``benchmarks.workload``), ranks ``N`` times ``C``
candidates showing ``K`` (a device in the context), clicks on a tenth of the slates,
then prints:

- bytes on disk per impression: the pages of the ``impressions`` table and its
  indexes (and ``feature_sets`` where it exists) from SQLite's ``dbstat``, over ``N``;
- the monitor's first pass (built from storage) and a following one after 100 more
  impressions, timed with ``time.process_time`` (the event loop's CPU);
- rank's CPU per request in process (``time.process_time`` over the ``N`` requests, the
  ASGI app called through httpx without a network: the client's share included);
- ``Ranker.rank``'s CPU per call with every candidate shown (the service's share, as in
  ``make bench``'s rank, whose slates are whole), the impression's write included.

It uses the HTTP API and the learning service's ``monitor()`` only, so the same script
measures an older tree too.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.conftest import make_settings, start_app

from benchmarks.workload import ALGORITHMS, Workload
from recloop.core.ranking import Candidate

_TABLES = (
    "impressions",
    "sqlite_autoindex_impressions_1",
    "ix_impressions_user_id",
    "ix_impressions_created_at",
    "feature_sets",
    "sqlite_autoindex_feature_sets_1",
)


def on_disk(path: Path) -> tuple[int, int]:
    """(impressions, bytes of their table, its indexes and feature sets) in the database."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = ",".join(f"'{t}'" for t in _TABLES)
        (size,) = db.execute(f"SELECT SUM(pgsize) FROM dbstat WHERE name IN ({names})").fetchone()
        (count,) = db.execute("SELECT COUNT(*) FROM impressions").fetchone()
    finally:
        db.close()
    return int(count), int(size)


async def measure(impressions: int, candidates: int, shown: int) -> dict[str, float]:
    workload = Workload()
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(
            Path(tmp),
            storage={"sqlite_synchronous": "FULL"},
            rate_limits={"enabled": False},
            learning={"monitor_seconds": 3600},
        )
        app, close = await start_app(settings)
        try:
            for body in workload.item_batches():
                r = await app.client.post("/items", json=body)
                assert r.is_success, r.text
            clicks = []

            async def rank(n: int) -> dict[str, Any]:
                items = rng.sample(range(workload.items), candidates)
                body = {
                    "candidates": [
                        {
                            "item_id": workload.item_id(i),
                            "algorithm": ALGORITHMS[j % len(ALGORITHMS)],
                            "score": round(rng.random(), 4),
                        }
                        for j, i in enumerate(items)
                    ],
                    "k": shown,
                    "context": {"device": rng.choice(["mobile", "desktop"])},
                }
                r = await app.client.post(f"/users/{workload.user_id(n)}/rank", json=body)
                assert r.status_code == 200, r.text
                answer: dict[str, Any] = r.json()
                return answer

            started = time.process_time()
            for n in range(impressions):
                answer = await rank(n)
                if n % 10 == 0:
                    clicks.append(
                        {
                            "event_id": f"click-{n}",
                            "user_id": workload.user_id(n),
                            "item_id": answer["ranking"][0]["item_id"],
                            "type": "click",
                            "attribution": {"impression_id": answer["impression_id"]},
                        }
                    )
            rank_cpu = (time.process_time() - started) / impressions
            count, size = on_disk(Path(tmp) / "recloop.db")
            for start in range(0, len(clicks), 1_000):
                r = await app.client.post(
                    "/feedback", json={"events": clicks[start : start + 1_000]}
                )
                assert r.status_code == 202, r.text
            await app.idle(flush=True)
            learning = app.container.learning
            assert learning is not None
            started = time.process_time()
            await learning.monitor()
            first = time.process_time() - started
            for n in range(100):
                await rank(n)
            started = time.process_time()
            await learning.monitor()
            then = time.process_time() - started
            # The service's share: Ranker.rank itself (features, order, the impression
            # logged by group commit), without HTTP, 100 candidates, the whole slate shown.
            ranker = app.container.ranker
            lists = [
                [
                    Candidate(workload.item_id(i), ALGORITHMS[j % len(ALGORITHMS)], rng.random())
                    for j, i in enumerate(rng.sample(range(workload.items), candidates))
                ]
                for _ in range(64)
            ]
            started = time.process_time()
            for n in range(impressions):
                await ranker.rank(workload.user_id(n), lists[n % 64], None, {"device": "mobile"})
            service_cpu = (time.process_time() - started) / impressions
        finally:
            await close()
    return {
        "impressions": float(count),
        "bytes_per_impression": size / count,
        "monitor_first_pass_s": first,
        "monitor_next_pass_s": then,
        "rank_cpu_us": rank_cpu * 1e6,
        "ranker_whole_slate_cpu_us": service_cpu * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, default=2_000)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--shown", type=int, default=10)
    args = parser.parse_args()
    found = asyncio.run(measure(args.impressions, args.candidates, args.shown))
    for name, value in found.items():
        print(f"{name}: {value:,.4g}")


if __name__ == "__main__":
    main()
