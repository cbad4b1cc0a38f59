"""``python -m benchmarks.distributed_parts``: the distributed deployment's hot parts, in process.

- *postgres*: the worker's archive of a poll's events and its state commit on a fresh
  PostgreSQL database, SQLAlchemy's path (``pg_lane=False``) and PostgreSQL's lane in
  turn: CPU of this process and of the database's backends, per event archived and per
  user row committed.
- *producer*: ``KafkaEventLog.append`` of 1,000-event batches to a Tansu broker: CPU of
  this process per event, and the time to append one event.
- *deployment*: the benchmark's distributed deployment alone (API, 2 workers, Tansu,
  PostgreSQL, Redis), ``--repeat`` batched-ingest loads of ``--duration`` s one after the
  other (``--clients`` connections posting 1,000-event batches, then the backlog
  applied): each process's CPU per event accepted, and the Redis commands sent per event
  (from ``INFO commandstats``; Redis and its counters are the machine's, shared with
  whatever else uses them). Its processes inherit ``PYTHONPATH``.

To compare with other code, put its ``src`` first on ``PYTHONPATH``. Each prints medians
over ``--repeat`` runs (*deployment*: each load's line, then the medians).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

import redis
from benchmarks.distributed import (
    POSTGRES_ADMIN,
    REDIS_URL,
    WORKDIR,
    _admin_sql,
    _create_topic,
    _named_processes,
    cpu_snapshot,
    cpu_used,
    distributed_deployment,
    tansu_broker,
)
from benchmarks.loadgen import BatchLoad, batch_load
from benchmarks.processes import run_in_process
from benchmarks.servers import register_items
from benchmarks.workload import Workload
from recloop.adapters.kafka import KafkaConfig, KafkaEventLog
from recloop.adapters.sql import SqlDatabase, SqlEventLog, SqlStateStore
from recloop.core.events import Event
from recloop.core.preferences import UserState
from recloop.core.state import UserRows
from recloop.ports import StateChanges

BATCH = 2_000
"""Events per archive call (a worker's poll takes up to 2,000)."""
USERS = 1_000
"""Users per state commit."""
ROUNDS = 15


def _backends_cpu(database: str) -> float:
    return sum(_named_processes("postgres", lambda c: f" {database} " in c).values())


async def postgres_once(lane: bool, seed: int) -> tuple[float, float, float, float]:
    """(archive: process, PostgreSQL µs per event; commit: process, PostgreSQL µs per row)."""
    name = f"recloop_parts_{uuid.uuid4().hex[:8]}"
    await _admin_sql(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    db = SqlDatabase(f"{base}/{name}")
    try:
        await db.migrate()
        log, store = SqlEventLog(db, pg_lane=lane), SqlStateStore(db, pg_lane=lane)
        rng = random.Random(seed)
        batches = [
            [
                Event(
                    str(uuid.uuid4()),
                    f"user-{rng.randrange(20_000)}",
                    f"item-{rng.randrange(5_000)}",
                    rng.choice(["view", "click", "like"]),
                    1.7e9,
                    offset=b * BATCH + i + 1,
                    partition=b % 4,
                )
                for i in range(BATCH)
            ]
            for b in range(ROUNDS)
        ]
        commits = []
        for b in range(ROUNDS):
            states = {}
            for _ in range(USERS):
                s = UserState.new(f"user-{rng.randrange(20_000)}", 32)
                s.vector, s.explicit_offset, s.updated_at = np.full(32, 0.1), b, 1.0
                states[s.user_id] = s
            rows = UserRows.of(list(states.values()), 32)
            commits.append(StateChanges(users=rows, positions={0: b}, commit_id=f"c{b}"))
        await log.archive(batches[0][:10])  # connections opened, statements prepared
        await store.get_users(["nobody"])
        c0, p0 = time.process_time(), _backends_cpu(name)
        for batch in batches:
            await log.archive(batch)
        c1, p1 = time.process_time(), _backends_cpu(name)
        for changes in commits:
            await store.commit(changes)
        c2, p2 = time.process_time(), _backends_cpu(name)
    finally:
        await db.dispose()
        await _admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    events, rows_committed = BATCH * ROUNDS, sum(len(c.users) for c in commits)
    return (
        (c1 - c0) / events * 1e6,
        (p1 - p0) / events * 1e6,
        (c2 - c1) / rows_committed * 1e6,
        (p2 - p1) / rows_committed * 1e6,
    )


async def producer_once(port: int) -> tuple[float, float]:
    """(ms to append one event, median; process CPU µs per event in 1,000-event batches)."""
    bootstrap = f"127.0.0.1:{port}"
    topic = f"parts-{uuid.uuid4().hex[:8]}"
    await _create_topic(bootstrap, topic, 4)
    log = KafkaEventLog(KafkaConfig(bootstrap, topic=topic, enable_idempotence=False))
    await log.start()
    try:
        one = []
        for i in range(60):
            started = time.perf_counter()
            await log.append([Event(f"e{i}", f"user-{i}", "item-1", "like", 1.7e9)])
            one.append((time.perf_counter() - started) * 1e3)
        started = time.process_time()
        for b in range(20):
            await log.append(
                [Event(f"b{b}-{j}", f"user-{j}", "item-1", "view", 1.7e9) for j in range(1_000)]
            )
        cpu = (time.process_time() - started) / 20_000 * 1e6
    finally:
        await log.stop()
    return statistics.median(one[10:]), cpu


DEPLOYMENT_PARTS = ("API", "worker 1", "worker 2", "broker (Tansu)", "PostgreSQL", "Redis")


def _redis_calls() -> dict[str, int]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}


def deployment_loads(loads: int, duration: float, clients: int) -> list[dict[str, float]]:
    """Per load: CPU µs per event accepted of each process, and ``all`` (their sum),
    ``events/s``, ``redis calls`` (commands per event, those a script runs included)."""
    workload = Workload()
    WORKDIR.mkdir(exist_ok=True)
    found = []
    with (
        tempfile.TemporaryDirectory(prefix="parts-", dir=WORKDIR) as tmp,
        distributed_deployment(Path(tmp)) as d,
    ):
        asyncio.run(register_items(d.api.port, workload))
        for n in range(loads):
            d.wait_applied()
            prefix = f"parts{n}-{uuid.uuid4().hex[:6]}"
            spec = BatchLoad(d.api.port, workload, prefix, clients, duration=duration)
            calls, before = _redis_calls(), cpu_snapshot(d, d.database)
            result = run_in_process(batch_load, spec, "batch-load", timeout=duration + 120)
            d.wait_applied()
            used, after_calls = cpu_used(before, cpu_snapshot(d, d.database)), _redis_calls()
            accepted = max(result.accepted, 1)
            row = {name: used[name] / accepted * 1e6 for name in DEPLOYMENT_PARTS}
            row["all"] = sum(row.values())
            row["events/s"] = result.events_per_second
            row["redis calls"] = (sum(after_calls.values()) - sum(calls.values())) / accepted
            print(" · ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
            found.append(row)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed_parts")
    parser.add_argument("part", choices=["postgres", "producer", "deployment"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="deployment: s per load")
    parser.add_argument("--clients", type=int, default=4, help="deployment: connections")
    args = parser.parse_args(argv)
    if args.part == "deployment":
        rows = deployment_loads(args.repeat, args.duration, args.clients)
        print(
            "medians: "
            + " · ".join(f"{k} {statistics.median(r[k] for r in rows):.2f}" for k in rows[0])
        )
        return 0
    if args.part == "postgres":
        found: dict[bool, list[tuple[float, ...]]] = {False: [], True: []}
        for r in range(args.repeat):
            for lane in (False, True):
                found[lane].append(asyncio.run(postgres_once(lane, r)))
        for lane, name in ((False, "SQLAlchemy's path"), (True, "PostgreSQL's lane")):
            a, ap, c, cp = (statistics.median(x[i] for x in found[lane]) for i in range(4))
            print(
                f"{name}: archive {a:.2f} µs/event here + {ap:.2f} in PostgreSQL; "
                f"commit {c:.2f} µs/user row here + {cp:.2f} in PostgreSQL"
            )
        return 0
    WORKDIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORKDIR) as tmp, tansu_broker(Path(tmp)) as broker:
        runs = [asyncio.run(producer_once(broker.port)) for _ in range(args.repeat)]
    one = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    print(f"producer: one event appended in {one:.2f} ms; {cpu:.2f} µs CPU per event (batches)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
