"""``python -m benchmarks.console``: the console's page times (server side, in process).

Seeds an embedded (SQLite) app with ``--experiments`` experiments (every other one
running), ``--models`` registered models (the newest deployed to the canary slot),
``--users`` users with a like and a click each (through ``POST /feedback``, so the
guard and the state hold them all), every user exposed to the first running
experiment (written to the store in bulk, then taken in as another process's
exposures are), and ``--history-days`` of history at the configured sampling
interval (one real sample, repeated at earlier times). Then requests each page
``--repeat`` times through the ASGI client (no network: the time is the server's)
and prints the median and the slowest per page.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx
from tests.console_seed import seed_models

from recloop.adapters.sql.history import SqlHistoryStore
from recloop.api.app import create_app
from recloop.config import load_settings
from recloop.container import build_container
from recloop.ports import Exposure, StateChanges

PAGES = [
    "/console",
    "/console/experiments",
    "/console/experiments/exp-000",
    "/console/algorithms",
    "/console/models",
    "/console/guard",
    "/console/users?user_id=u1",
]
BATCH = 1000
"""Events per ``POST /feedback``."""


def _say(started: float, text: str) -> None:
    print(f"[{time.perf_counter() - started:7.1f} s] {text}", flush=True)


async def run(
    experiments: int,
    models: int,
    users: int,
    repeat: int,
    history_days: float,
    profile: bool = False,
) -> None:
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp())
    settings = load_settings(
        None,
        storage={"url": f"sqlite+aiosqlite:///{folder / 'recloop.db'}"},
        rate_limits={"enabled": False},
        console={"history_interval_seconds": 0},  # the history is written below
    )
    container = build_container(settings)
    app = create_app(settings, container=container)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        api = httpx.AsyncClient(transport=transport, base_url="http://b/api/v1/learning")
        for i in range(experiments):
            body = {
                "experiment_id": f"exp-{i:03d}",
                "name": f"Experiment {i}",
                "variants": [{"key": "control", "weight": 0.5}, {"key": "b", "weight": 0.5}],
                "metrics": [
                    {"name": "purchased", "type": "binomial", "event": "purchase"},
                    {
                        "name": "clicks",
                        "type": "continuous",
                        "event": "click",
                        "aggregate": "count",
                    },
                ],
            }
            assert (await api.post("/experiments", json=body)).status_code == 201
            if i % 2 == 0:
                assert (await api.post(f"/experiments/exp-{i:03d}/start")).status_code == 200
        _say(started, f"{experiments} experiments")
        per_request = BATCH // 2
        for start in range(0, users, per_request):
            events = [
                {"user_id": f"u{n}", "item_id": f"i{n % 500}", "type": t}
                for n in range(start, min(start + per_request, users))
                for t in ("like", "click")
            ]
            r = await api.post("/feedback", json={"events": events})
            assert r.status_code == 202, r.text
            if start % 100_000 == 0:
                _say(started, f"feedback of {start + per_request} users sent")
        await container.processor.flush_implicit()
        processor = container.processor
        while True:  # until every accepted event is applied
            if processor.explicit_queue_depth == 0 and processor.tracker.in_flight == 0:
                break
            await asyncio.sleep(0.1)
        _say(started, f"{2 * users} events applied")
        exp = container.experiments.get("exp-000")
        now = time.time()
        for start in range(0, users, 50_000):
            chunk = [
                Exposure(
                    "exp-000", f"u{n}", container.experiments.variant_for(exp, f"u{n}") or "", now
                )
                for n in range(start, min(start + 50_000, users))
            ]
            await container.store.commit(StateChanges(exposures=chunk))
        await container.experiments.refresh(statistics=True)
        exposed = sum(container.experiments.exposures_by_variant("exp-000").values())
        _say(started, f"{exposed} users exposed to exp-000")
        versions = [f"m-{i:03d}" for i in range(models)]
        await seed_models(container.store, versions)
        if container.learning is not None and versions:
            await container.learning.deploy(versions[-1], "benchmark canary")
        history = container.history
        assert history is not None
        assert container.db is not None
        store = SqlHistoryStore(container.db)  # the service's: the sample is repeated in it
        interval = 300.0  # console.history_interval_seconds' default
        t0 = time.perf_counter()
        await history.sample()
        _say(started, f"one history sample took {(time.perf_counter() - t0) * 1000:.0f} ms")
        sample = [
            p
            for kind in ("algorithm", "experiment", "canary")
            for p in await store.read(kind, None, 0.0, 10**9)
        ]
        steps = int(history_days * 86_400 / interval)
        for k in range(1, steps):
            await store.append([replace(p, at=p.at - k * interval) for p in sample])
        _say(
            started,
            f"{len(sample) * steps} history points ({len(sample)} per sample, {steps} samples)",
        )
        # As a server restarted on this state would: what start-up built stays out of the
        # collector's full passes (create_app's lifespan does the same).
        gc.collect()
        gc.freeze()
        console = httpx.AsyncClient(transport=transport, base_url="http://b")
        print(f"{experiments} experiments, {models} models, {users} users; {repeat} requests each")
        print(f"{'page':<32} {'median ms':>10} {'max ms':>8}")
        for page in PAGES:
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                r = await console.get(page)
                times.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, (page, r.status_code)
            print(f"{page:<32} {statistics.median(times):>10.1f} {max(times):>8.1f}")
        if profile:
            for page in PAGES:
                profiler = cProfile.Profile()
                profiler.enable()
                await console.get(page)
                profiler.disable()
                print(f"--- {page}")
                pstats.Stats(profiler).sort_stats("tottime").print_stats(14)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.console", description=__doc__)
    parser.add_argument("--experiments", type=int, default=100)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--history-days", type=float, default=7.0)
    parser.add_argument("--profile", action="store_true", help="then profile each page once")
    args = parser.parse_args()
    asyncio.run(
        run(args.experiments, args.models, args.users, args.repeat, args.history_days, args.profile)
    )


if __name__ == "__main__":
    main()
