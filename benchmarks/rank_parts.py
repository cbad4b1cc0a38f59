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
- ``probe``: the exploring draw and its propensities (``core.exploration.probe`` over
  the fused lists' top picks, as ``rank`` calls it, at ε = 0.3);
- ``answer``: the answer's body as JSON (``rank_body``'s mapping of the shown slate,
  ``Slate.ranking``, then ``orjson.dumps``);
- ``encode``: one shown slate encoded for the log (``core.slates.encode``: its header,
  numbers and the compressed features);
- ``log``: one impression's row written (``StateStore.add_impressions``, one a
  transaction: the group commit's worst case).

The collector runs as in ``recloop serve`` (``gc.set_threshold(50_000, 20, 20)``, start-up
frozen): with the default threshold a full pass over the app's heap lands on some
requests and not others. The script uses only names that earlier trees have too, so the
same command measures another tree's ``src`` first on ``PYTHONPATH`` (interleave the two
for a ratio).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from tests.conftest import Running, make_settings, start_app

from benchmarks.suite import READ_EXPERIMENT
from benchmarks.workload import API, Readers, Workload, read_experiment
from recloop.api.lean import RankBody, decode_rank
from recloop.core.exploration import probe
from recloop.core.ids import uuid7
from recloop.core.ranking import fuse_columns
from recloop.core.slates import encode
from recloop.ports import Impression


async def cpu_per_call(
    calls: int, step: Callable[[int], Awaitable[Any]], concurrent: int = 1
) -> float:
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


async def seeded(
    tmp: Path, workload: Workload, readers: Readers
) -> tuple[Running, Callable[[], Awaitable[None]]]:
    """The app as the suite's read benchmarks find it: its items registered, its readers'
    history applied, the read experiment running; and its ``close``."""
    settings = make_settings(
        tmp,
        storage={"sqlite_synchronous": "FULL"},
        vectors={"dim": 64},
        spam={"enabled": True},
        rate_limits={"per_key": "1000000000/minute"},
        feedback={"implicit_flush_seconds": 1},
    )
    running, close = await start_app(settings)
    client = running.client
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
    return running, close


async def measure(requests: int, repeat: int) -> dict[str, float]:
    workload, readers = Workload(), Readers()
    rng = random.Random(3)
    gc.set_threshold(50_000, 20, 20)  # as recloop serve runs
    with tempfile.TemporaryDirectory() as tmp:
        running, close = await seeded(Path(tmp), workload, readers)
        try:
            bodies = [readers.rank_body(workload, rng) for _ in range(readers.rank_bodies)]
            found = [decode_rank(b) for b in bodies]
            decoded = [d for d in found if d is not None]
            assert len(decoded) == len(bodies)
            gc.collect()
            gc.freeze()
            parts = await _parts(running, readers, bodies, decoded, requests, repeat)
        finally:
            await close()
    return {name: statistics.median(values) for name, values in parts.items()}


Step = Callable[[int], Awaitable[Any]]


async def _parts(
    running: Running,
    readers: Readers,
    bodies: list[bytes],
    decoded: list[RankBody],
    requests: int,
    repeat: int,
) -> dict[str, list[float]]:
    """Each part's CPU µs per request, one entry per round."""
    container = running.container
    app = running.client._transport.app  # type: ignore[attr-defined]
    ranker = container.ranker
    vectors = ranker._vectors
    learning = container.learning
    assert learning is not None
    ids = [[c.item_id for c in d.candidates] for d in decoded]
    known = readers.known()
    held = [await ranker.strategy(known[i], expose=False) for i in range(len(decoded))]
    fuse_in = [(d.candidates, s.weights) for d, s in zip(decoded, held, strict=True)]
    fused = [fuse_columns(c, w, {}, 60.0, 0.5, "percentile") for c, w in fuse_in]
    tables = [await vectors.table(i, hashed=True) for i in ids]
    plan = readers.user_ids("logged", len(decoded))
    shown = [
        (await ranker.rank(u, d.candidates, None, None))[0]
        for u, d in zip(plan, decoded, strict=True)
    ]

    def through_app(users: list[str]) -> Step:
        async def step(i: int) -> None:
            path = f"{API}/users/{users[i]}/rank"
            status = await _asgi(app, path, bodies[i % len(bodies)])
            assert status == 200, status

        return step

    def strategy(users: list[str]) -> Step:
        async def step(i: int) -> None:
            await ranker.strategy(users[i])

        return step

    def log(fresh: list[Impression]) -> Step:
        async def step(i: int) -> None:
            await container.store.add_impressions([fresh[i]])

        return step

    async def decode(i: int) -> None:
        decode_rank(bodies[i % len(bodies)])

    async def items(i: int) -> None:
        await vectors.table(ids[i % len(ids)], hashed=True)

    async def fusion(i: int) -> None:
        candidates, weights = fuse_in[i % len(fuse_in)]
        fuse_columns(candidates, weights, {}, 60.0, 0.5, "percentile")

    async def features(i: int) -> None:
        f, now = fused[i % len(fused)], time.time()
        rows = tables[i % len(tables)].take(f.appearance)
        learning.feature_matrix("u", "regular", 20, now - 3600, f, rows, {}, now)

    draws = np.random.default_rng(0)
    probes = []
    for f, s in zip(fused, held, strict=True):
        named = [a for a in f.firsts if s.weights.get(a, 0.0) > 0.0]
        probes.append(([f.firsts[a] for a in named], [s.weights[a] for a in named], len(f)))

    async def exploring(i: int) -> None:
        picks, weights, n = probes[i % len(probes)]
        probe(picks, weights, n, 0.3, draws)

    async def encoding(i: int) -> None:
        encode(shown[i % len(shown)].shown)

    async def answer(i: int) -> None:
        impression = shown[i % len(shown)]
        orjson.dumps(
            {  # rank_body's mapping
                "impression_id": impression.impression_id,
                "ranking": impression.shown.ranking(),
                "epsilon": impression.epsilon,
                "segment": impression.segment,
                "experiments": impression.experiments,
            }
        )

    parts: dict[str, list[float]] = {}
    for round_ in range(repeat):
        users = {
            name: readers.user_ids(f"{name}-{round_}", requests)
            for name in ("app32", "app", "strategy")
        }
        fresh = [replace(shown[i % len(shown)], impression_id=uuid7()) for i in range(requests)]
        steps: tuple[tuple[str, Step, int], ...] = (
            ("app32", through_app(users["app32"]), 32),
            ("app", through_app(users["app"]), 1),
            ("decode", decode, 1),
            ("strategy", strategy(users["strategy"]), 1),
            ("items", items, 1),
            ("fusion", fusion, 1),
            ("features", features, 1),
            ("probe", exploring, 1),
            ("answer", answer, 1),
            ("encode", encoding, 1),
            ("log", log(fresh), 1),
        )
        for name, step, concurrent in steps:
            parts.setdefault(name, []).append(await cpu_per_call(requests, step, concurrent))
            await running.idle(flush=True)
    return parts


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
