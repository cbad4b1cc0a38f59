"""The hot reads (weights, strategy, assignment), part by part, in process (SQLite,
synchronous=FULL).

``python -m benchmarks.read_parts [--requests N] [--repeat R] [--only PART]`` builds the
app as ``recloop serve`` does (the guard on, the rate limit per key raised as the suite
raises it), registers the suite's items, gives its known readers their history, starts its
read experiment and exposes every known reader to it (``benchmarks.workload``, as the
suite does), then measures, in CPU microseconds per request (``time.process_time``: every
thread of the process, so the SQLite threads' share counts), the median of ``R`` rounds of
``N`` requests each, on the suite's users (a known reader in 3 of 10 requests, else an
unknown one, four requests each; fresh unknown users every round and part):

- ``weights``, ``strategy``, ``assignment``: the whole request through the ASGI app
  (middleware, lean route, the answer's encoding), without HTTP parsing, one at a time;
- ``…32``: the same with 32 requests in flight (the suite's connections);
- ``user``: ``Ranker.user`` (the user's preferences, or the store's miss, and segment);
- ``segment_weights``: ``Optimizer.weights`` of the user's segment;
- ``expose``: ``ExperimentService.expose_running`` (first exposures recorded);
- ``look``: ``ExperimentService.running_variants`` (the same, recording nothing).

``--paced RATE`` measures instead, for each of the three routes, an open-loop load through
the ASGI app: request *i* due at *start + i / RATE* s, each in a task of its own, its latency
from when it was due (a request that waited behind another counts its wait): P50/P95/P99
and the CPU per request over the load, the median of the rounds. In process, so without
HTTP parsing, sockets or a load generator's delays: what the routes and what runs beside
them on the event loop (checkpoints, sweeps, first exposures' commits) make a request wait.

The script uses only names that earlier trees have too, so the same command measures
another tree's ``src`` first on ``PYTHONPATH`` (interleave the two for a ratio).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.conftest import Running

from benchmarks.rank_parts import cpu_per_call, seeded
from benchmarks.suite import READ_EXPERIMENT
from benchmarks.workload import (
    Readers,
    Workload,
    assignment_path,
    strategy_path,
    weights_path,
)

Step = Callable[[int], Awaitable[Any]]

PARTS = (
    "weights",
    "strategy",
    "assignment",
    "weights32",
    "strategy32",
    "assignment32",
    "user",
    "segment_weights",
    "expose",
    "look",
)


async def get(app: Any, path: str) -> int:
    """``GET path`` through the ASGI app; its status."""
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    raw = path.encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": raw,
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"recloop")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    return status


async def prepared(tmp: Path) -> tuple[Running, Callable[[], Awaitable[None]], Readers]:
    """The app with the suite's items, readers and read experiment, every known reader
    exposed; and its ``close``."""
    workload, readers = Workload(), Readers()
    running, close = await seeded(tmp, workload, readers)
    client = running.client
    for user_id in readers.known():
        r = await client.get(f"/experiments/{READ_EXPERIMENT}/assignment/{user_id}")
        assert r.is_success, r.text
    await running.idle(flush=True)
    return running, close, readers


async def _parts(
    running: Running, readers: Readers, requests: int, repeat: int, only: tuple[str, ...]
) -> dict[str, list[float]]:
    container = running.container
    app = running.client._transport.app  # type: ignore[attr-defined]
    ranker, optimizer, experiments = container.ranker, container.optimizer, container.experiments
    segments = [(await ranker.user(u)).segment for u in readers.known()]

    def through_app(path: Callable[[str], str], users: list[str]) -> Step:
        async def step(i: int) -> None:
            status = await get(app, path(users[i]))
            assert status == 200, status

        return step

    def paths(name: str) -> Callable[[str], str]:
        if name.startswith("weights"):
            return weights_path
        if name.startswith("strategy"):
            return strategy_path
        return lambda u: assignment_path(READ_EXPERIMENT, u)

    def user(users: list[str]) -> Step:
        async def step(i: int) -> None:
            await ranker.user(users[i])

        return step

    async def segment_weights(i: int) -> None:
        await optimizer.weights(segments[i % len(segments)])

    def expose(users: list[str]) -> Step:
        async def step(i: int) -> None:
            await experiments.expose_running(users[i])

        return step

    def look(users: list[str]) -> Step:
        async def step(i: int) -> None:
            experiments.running_variants(users[i])

        return step

    parts: dict[str, list[float]] = {}
    for round_ in range(repeat):
        for name in only:
            users = readers.user_ids(f"{name}-{round_}", requests, seed=round_)
            if name in ("user", "expose", "look"):
                step = {"user": user, "expose": expose, "look": look}[name](users)
            elif name == "segment_weights":
                step = segment_weights
            else:
                step = through_app(paths(name), users)
            concurrent = 32 if name.endswith("32") else 1
            parts.setdefault(name, []).append(await cpu_per_call(requests, step, concurrent))
            await running.idle(flush=True)
    return parts


async def _paced(
    running: Running, readers: Readers, requests: int, repeat: int, rate: float
) -> dict[str, list[float]]:
    """Per route and round: P50, P95, P99 (ms from when due) and CPU µs per request."""
    app = running.client._transport.app  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    routes: dict[str, Callable[[str], str]] = {
        "weights": weights_path,
        "strategy": strategy_path,
        "assignment": lambda u: assignment_path(READ_EXPERIMENT, u),
    }
    found: dict[str, list[float]] = {}
    for round_ in range(repeat):
        for name, path in routes.items():
            users = readers.user_ids(f"paced-{name}-{round_}", requests, seed=round_)
            latencies: list[float] = []

            async def one(
                user_id: str,
                due: float,
                path: Callable[[str], str] = path,
                latencies: list[float] = latencies,
            ) -> None:
                status = await get(app, path(user_id))
                assert status == 200, status
                latencies.append(loop.time() - due)

            tasks = []
            cpu = time.process_time()
            start = loop.time() + 0.01
            for i, user_id in enumerate(users):
                due = start + i / rate
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(one(user_id, due)))
            await asyncio.gather(*tasks)
            cpu = (time.process_time() - cpu) / requests * 1e6
            q = statistics.quantiles(latencies, n=100)
            for key, value in (("P50", q[49]), ("P95", q[94]), ("P99", q[98])):
                found.setdefault(f"{name} paced {key} ms", []).append(value * 1e3)
            found.setdefault(f"{name} paced CPU µs", []).append(cpu)
            await running.idle(flush=True)
    return found


async def measure(
    requests: int, repeat: int, only: tuple[str, ...], paced: float | None = None
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        running, close, readers = await prepared(Path(tmp))
        try:
            if paced is None:
                parts = await _parts(running, readers, requests, repeat, only)
            else:
                parts = await _paced(running, readers, requests, repeat, paced)
        finally:
            await close()
    return {name: statistics.median(values) for name, values in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", action="append", choices=PARTS, help="repeatable; default all")
    parser.add_argument("--paced", type=float, help="an open-loop load at this rate instead")
    args = parser.parse_args()
    found = asyncio.run(measure(args.requests, args.repeat, tuple(args.only or PARTS), args.paced))
    for name, value in found.items():
        print(f"{name}: {value:,.2f}" if args.paced else f"{name}: {value:,.1f} µs")


if __name__ == "__main__":
    main()
