"""An experiment's reads, in process, on a SQLite file: results, and a first exposure.

Logs ``--events`` events (default 1M: 20k users, 5k items, a mix of explicit and
implicit types) through ``SqlEventLog.append``, exposes ``--exposed`` of the users
to a three-metric experiment (binomial, continuous and ratio, as the API's example)
in two services over the same database, one per way of reading, and reports, in one
run, each read before and after:

- *results* (what ``GET /experiments/{id}/results`` runs, ``live_results``) while
  none of the logged events is committed yet, the worst case: a buffered implicit
  event at the head of the log holds the embedded processor's watermark until the
  flush (``feedback.implicit_flush_seconds``) while traffic goes on. Before: the
  buffered events are counted by reading the uncommitted log
  (``pending_in_log``). After: the service keeps them as the processor's apply
  rounds hand them over (``ExperimentService.taken``, called here 1,000 events at a
  time, its CPU per event reported). Both counts are printed: they agree;
- *a first exposure* of a user with history (what ``GET /users/{id}/strategy``,
  ``/assignment`` and ``/rank`` pay on a user's first request while the experiment
  runs, the exposure's commit included). Before: the user's CUPED pre-period is
  read from the log at once. After: it is deferred, then read for every user
  exposed meanwhile in one read (``settle_covariates``, timed too).

Run it with ``python -m benchmarks.experiment_results`` (``--events 200000`` for
a smaller log).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.args import count
from benchmarks.stats import median
from recloop.adapters.sql import SqlDatabase, SqlEventLog, SqlStateStore
from recloop.config import ExperimentSettings
from recloop.core.events import Event
from recloop.core.experiments import Experiment, Metric, Variant
from recloop.core.ids import uuid7
from recloop.services.experiments import ExperimentService

_TYPES = ["rating", "like", "view", "click", "impression", "dwell", "skip", "purchase"]
EXPERIMENT = Experiment(
    "bench",
    "bench",
    (Variant("control", 0.5), Variant("treatment", 0.5)),
    (
        Metric("purchased", "binomial", event="purchase"),
        Metric("clicks", "continuous", event="click"),
        Metric("ctr", "ratio", numerator="click", denominator="impression"),
    ),
)


def make_events(n: int, users: int, batch: int, seed: int, now: float) -> list[list[Event]]:
    rng = random.Random(seed)
    batches = []
    for start in range(0, n, batch):
        events = []
        for _ in range(min(batch, n - start)):
            kind = rng.choice(_TYPES)
            events.append(
                Event(
                    event_id=uuid7(),
                    user_id=f"user-{rng.randrange(users)}",
                    item_id=f"item-{rng.randrange(5_000)}",
                    type=kind,
                    timestamp=now + rng.random() * 86_400.0,
                    value=float(rng.randint(1, 5)) if kind == "rating" else None,
                )
            )
        batches.append(events)
    return batches


async def run(args: argparse.Namespace, directory: Path) -> None:
    now = time.time()
    db = SqlDatabase(f"sqlite+aiosqlite:///{directory / 'bench.db'}", sqlite_synchronous="FULL")
    await db.migrate()
    log, store = SqlEventLog(db), SqlStateStore(db)
    batches = make_events(args.events, args.users, 1_000, seed=11, now=now)
    clock = [now]
    common: dict[str, Any] = {
        "clock": lambda: clock[0],
        "holds": lambda user_id: True,  # every user may have history
        "committed_offset": lambda: 0,  # nothing committed yet (see the module docstring)
    }
    # Before: results read the uncommitted log, a first exposure reads the user's history.
    scan = ExperimentService(store, log, ExperimentSettings(), **common)
    # After: results read what ``taken`` kept, covariates are read later, together.
    kept = ExperimentService(
        store,
        log,
        ExperimentSettings(covariate_seconds=3600.0),  # settled by hand below
        dispatched=lambda: batches[-1][-1].offset,  # every logged event handed on
        defer_covariates=True,
        **common,
    )
    for service, eid in ((scan, "scan"), (kept, "kept")):
        await service.start()
        await service.create(replace(EXPERIMENT, experiment_id=eid))
        await service.transition(eid, "start")
        # Users exposed before the traffic (time-stamped after ``now``: it follows them).
        for u in range(args.exposed):
            await service.expose(eid, f"user-{u}")
    started = time.perf_counter()
    for events in batches:
        for event, offset in zip(events, await log.append(events), strict=True):
            event.offset = offset if offset is not None else -1  # as the ingest sets it
    print(f"logged {args.events:,} events in {time.perf_counter() - started:.1f} s")
    cpu = time.process_time()
    for events in batches:
        await kept.taken(events)
    taken_us = (time.process_time() - cpu) / args.events * 1e6

    print(f"results with {args.events:,} uncommitted logged events (median of {args.repeat}):")
    for service, eid, how in ((scan, "scan", "read from the log"), (kept, "kept", "kept")):
        times = []
        result = await service.live_results(eid)
        for _ in range(args.repeat):
            started = time.perf_counter()
            result = await service.live_results(eid)
            times.append((time.perf_counter() - started) * 1e3)
        print(f"  buffered events {how:18}: {median(times):10.3f} ms  {result['buffered']}")
    print(f"taken (the apply rounds' hook), CPU per event: {taken_us:.3f} µs")

    # First exposures of users with history (users beyond the exposed ones), two days on.
    clock[0] = now + 2 * 86_400.0
    print(f"first exposure of a user with history (median of {args.first} users):")
    users = iter(range(args.exposed, args.users))
    for service, eid, how in ((scan, "scan", "covariate read at once"), (kept, "kept", "deferred")):
        times = []
        for _ in range(args.first):
            user = f"user-{next(users)}"
            started = time.perf_counter()
            await service.expose(eid, user)
            times.append((time.perf_counter() - started) * 1e3)
        print(f"  {how:22}: {median(times):10.3f} ms")
    started = time.perf_counter()
    read = await kept.settle_covariates()
    print(
        f"  then one read of the deferred covariates of {read} users (all exposed): "
        f"{(time.perf_counter() - started) * 1e3:.1f} ms"
    )
    for service in (scan, kept):
        await service.stop()
    await db.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.experiment_results", description=__doc__
    )
    parser.add_argument("--events", type=count, default=1_000_000)
    parser.add_argument("--users", type=count, default=20_000)
    parser.add_argument("--exposed", type=count, default=2_000)
    parser.add_argument("--first", type=count, default=50, help="first exposures timed")
    parser.add_argument("--repeat", type=count, default=5, help="results requests timed")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
