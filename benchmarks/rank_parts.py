"""``POST /rank`` with 100 candidates, part by part, in process (SQLite, synchronous=FULL).

``python -m benchmarks.rank_parts [--requests N] [--repeat R]`` builds the app as
``recloop serve`` does (defaults: continuous learning on, the guard on, the rate limit per
key raised as the suite raises it), registers the suite's items, gives its known readers
their history and starts its read experiment (``benchmarks.workload``), then measures, in
CPU microseconds per request (``time.process_time``: every thread of the process, so the
SQLite writer's share counts), the median of ``R`` rounds of ``N`` requests each:

- ``app``: the whole request through the ASGI app (middleware, lean route, the answer's
  encoding), without HTTP parsing: the suite's bodies and users (a known reader in 3 of
  10 requests, else an unknown one, four requests each);
- ``app32``: the same with 32 requests in flight (the suite's connections: impressions
  are logged in groups, as under load);
- ``decode``: the body decoded (``api.lean.decode_rank``);
- ``strategy``: ``Ranker.strategy`` (segment, weights, experiment exposures);
- ``items``: the candidates' columns (``ItemVectors.table``);
- ``fusion``: ``core.ranking.fuse_columns``;
- ``features``: ``LearningService.feature_matrix``;
- ``answer``: the answer's body as JSON (``rank_body``'s mapping, ``orjson.dumps``);
- ``log``: one impression's row written (``StateStore.add_impressions``, one a
  transaction: the group commit's worst case).

The script uses only names that earlier trees have too, so the same command measures
another tree's ``src`` first on ``PYTHONPATH`` (interleave the two for a ratio).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from tests.conftest import make_settings, start_app

from benchmarks.suite import READ_EXPERIMENT
from benchmarks.workload import API, Readers, Workload, read_experiment
from recloop.api.lean import decode_rank
from recloop.api.routers.users import rank_body
from recloop.core.ids import uuid7
from recloop.core.ranking import fuse_columns


async def _cpu(calls: int, step: Callable[[int], Awaitable[Any]], concurrent: int = 1) -> float:
    """CPU µs per call of ``step(i)`` for ``i`` in ``range(calls)``, ``concurrent`` at a time."""
    started = time.process_time()
    if concurrent == 1:
        for i in range(calls):
            await step(i)
    else:
        todo = iter(range(calls))

        async def worker() -> None:
            for i in todo:
                await step(i)

        await asyncio.gather(*(worker() for _ in range(concurrent)))
    return (time.process_time() - started) / calls * 1e6


async def _asgi(app: Any, path: str, body: bytes) -> int:
    """``POST path`` with ``body`` through the ASGI app; its status."""
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"recloop"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    return status


async def measure(requests: int, repeat: int) -> dict[str, float]:
    workload, readers = Workload(), Readers()
    rng = random.Random(3)
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(
            Path(tmp),
            storage={"sqlite_synchronous": "FULL"},
            vectors={"dim": 64},
            spam={"enabled": True},
            rate_limits={"per_key": "1000000000/minute"},
            feedback={"implicit_flush_seconds": 1},
        )
        running, close = await start_app(settings)
        try:
            client, container = running.client, running.container
            for batch in workload.item_batches():
                r = await client.post("/items", json=batch)
                assert r.is_success, r.text
            for batch in readers.seed_batches(workload, "seed", datetime.now(UTC)):
                r = await client.post("/feedback", json=batch)
                assert r.status_code == 202, r.text
            await running.idle(flush=True)
            r = await client.post("/experiments", json=read_experiment(READ_EXPERIMENT))
            assert r.is_success, r.text
            r = await client.post(f"/experiments/{READ_EXPERIMENT}/start")
            assert r.is_success, r.text
            bodies = [readers.rank_body(workload, rng) for _ in range(readers.rank_bodies)]
            decoded = [decode_rank(b) for b in bodies]
            assert all(d is not None for d in decoded)
            app = client._transport.app  # type: ignore[attr-defined]
            ranker = container.ranker
            vectors = ranker._vectors
            learning = container.learning
            assert learning is not None
            parts: dict[str, list[float]] = {}

            def users(name: str) -> list[str]:
                return readers.user_ids(f"{name}-{len(parts.get(name, []))}", requests)

            for _ in range(repeat):
                def through_app(plan: list[str]) -> Callable[[int], Awaitable[None]]:
                    async def whole(i: int) -> None:
                        path = f"{API}/users/{plan[i]}/rank"
                        status = await _asgi(app, path, bodies[i % len(bodies)])
                        assert status == 200, status

                    return whole

                strategy_plan = users("strategy")

                async def strategy(i: int, plan: list[str] = strategy_plan) -> None:
                    await ranker.strategy(plan[i])

                async def decode(i: int) -> None:
                    decode_rank(bodies[i % len(bodies)])

                ids = [[c.item_id for c in d.candidates] for d in decoded if d is not None]

                async def items(i: int) -> None:
                    await vectors.table(ids[i % len(ids)], hashed=True)

                known = readers.known()
                held = [await ranker.strategy(known[i % len(known)], expose=False) for i in range(64)]
                fuse_in = []
                for i, d in enumerate(decoded):
                    assert d is not None
                    s = held[i]
                    fuse_in.append((d.candidates, s.weights))

                async def fusion(i: int) -> None:
                    candidates, weights = fuse_in[i % len(fuse_in)]
                    fuse_columns(candidates, weights, {}, 60.0, 0.5, "percentile")

                fused = [fuse_columns(c, w, {}, 60.0, 0.5, "percentile") for c, w in fuse_in]
                tables = [await vectors.table(i, hashed=True) for i in ids]

                async def features(i: int) -> None:
                    f = fused[i % len(fused)]
                    learning.feature_matrix(
                        "u", "regular", 20, time.time() - 3600, f,
                        tables[i % len(tables)].take(f.appearance), {}, time.time(),
                    )  # fmt: skip

                answer_plan = users("answer")
                answers = [
                    await rank_body(container, answer_plan[i], decoded[i % 64].candidates, None, None)  # type: ignore[union-attr]
                    for i in range(64)
                ]

                async def answer(i: int) -> None:
                    orjson.dumps(answers[i % len(answers)])

                log_plan = users("log")
                shown = [
                    (await ranker.rank(log_plan[i], decoded[i].candidates, None, None))[0]  # type: ignore[union-attr]
                    for i in range(64)
                ]
                store = container.store
                fresh = [replace(shown[i % 64], impression_id=uuid7()) for i in range(requests)]

                async def log(i: int) -> None:
                    await store.add_impressions([fresh[i]])

                whole = through_app(users("app"))
                loaded = through_app(users("app32"))
                parts.setdefault("app32", []).append(await _cpu(requests, loaded, 32))
                await running.idle(flush=True)
                for name, step in (
                    ("app", whole),
                    ("decode", decode),
                    ("strategy", strategy),
                    ("items", items),
                    ("fusion", fusion),
                    ("features", features),
                    ("answer", answer),
                    ("log", log),
                ):
                    parts.setdefault(name, []).append(await _cpu(requests, step))
                await running.idle(flush=True)
        finally:
            await close()
    return {name: statistics.median(values) for name, values in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    found = asyncio.run(measure(args.requests, args.repeat))
    for name, value in found.items():
        print(f"{name}: {value:,.1f} µs")


if __name__ == "__main__":
    main()
