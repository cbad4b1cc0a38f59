"""``python -m benchmarks.console``: the console's page times (server side, in process).

Seeds an embedded (SQLite) app with ``--experiments`` experiments (every other one
running), ``--models`` registered models, and ``--users`` users with events and an
exposure to the first running experiment; then requests each page ``--repeat`` times
through the ASGI client (no network: the time is the server's) and prints the median
and the slowest per page.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from tests.console_seed import seed_models

from recloop.api.app import create_app
from recloop.config import load_settings
from recloop.container import build_container


async def run(experiments: int, models: int, users: int, repeat: int) -> None:
    folder = Path(tempfile.mkdtemp())
    settings = load_settings(
        None,
        storage={"url": f"sqlite+aiosqlite:///{folder / 'recloop.db'}"},
        rate_limits={"enabled": False},
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
        for start in range(0, users, 500):
            events = [
                {"user_id": f"u{n}", "item_id": f"i{n % 500}", "type": t}
                for n in range(start, min(start + 500, users))
                for t in ("like", "click")
            ]
            assert (await api.post("/feedback", json={"events": events})).status_code == 202
        for n in range(users):
            await container.experiments.expose("exp-000", f"u{n}")
        await seed_models(container.store, [f"m-{i:03d}" for i in range(models)])
        console = httpx.AsyncClient(transport=transport, base_url="http://b")
        pages = [
            "/console",
            "/console/experiments",
            "/console/experiments/exp-000",
            "/console/algorithms",
            "/console/models",
            "/console/guard",
            "/console/users?user_id=u1",
        ]
        print(f"{experiments} experiments, {models} models, {users} users; {repeat} requests each")
        print(f"{'page':<32} {'median ms':>10} {'max ms':>8}")
        for page in pages:
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                r = await console.get(page)
                times.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, (page, r.status_code)
            print(f"{page:<32} {statistics.median(times):>10.1f} {max(times):>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.console", description=__doc__)
    parser.add_argument("--experiments", type=int, default=100)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(run(args.experiments, args.models, args.users, args.repeat))


if __name__ == "__main__":
    main()
