"""``python -m benchmarks.learning``: serving latency while a model trains (issue 7).

A training run reads the logged impressions and their clicks, then fits and
validates the model in a separate (spawned) process, so that serving goes on
meanwhile. This measures how much serving slows down all the same. One run:

1. starts ``recloop serve`` on a fresh SQLite file in a temporary directory under
   ``.bench/`` (the suite's settings, plus a 0.6 s attribution window, per-user rate
   limits raised for the generator's users and the canary monitor pushed out of the
   run), registers ``ITEMS`` items with three one-hot attributes (``tier``, which
   drives the clicks, ``genre`` and ``sku``) and logs ``--impressions`` impressions:
   ``POST /rank`` with ``CANDIDATES`` candidates, ``k = SHOWN``, a ``device`` context,
   and the clicks a seeded world draws for the ranking posted with the impression's
   id, from ``FILL_CONNECTIONS`` connections (as ``tests/integration/test_learning.py``
   does, on a larger world);
2. ``--repeat`` times: a fixed number of requests with no training (*idle*), then
   a training run (``POST /models/retrain``, ``GET /models/jobs/{id}`` polled until it
   is over) under the same load, kept only while the job runs; each time ``rank``
   with 20 and with 100 candidates and ``strategy``, in turn, from ``CONNECTIONS``
   keep-alive connections in a closed loop (each waits for its answer before the
   next request), in a process of its own; also the CPU of the server process and
   of its children (the training process), from ``/proc``;
3. prints a markdown section (medians of the repetitions), and with ``--write``
   puts it in docs/benchmarks.md above the suite's results marker.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from multiprocessing.synchronize import Event as StopEvent
from pathlib import Path
from typing import Any, Final

import orjson

from benchmarks import harness
from benchmarks.args import add_load_options, add_write, count
from benchmarks.client import Connection, Response
from benchmarks.harness import number, progress, ratio, runs
from benchmarks.loadgen import _run
from benchmarks.processes import LoadProcess, LoadProcessError, run_in_process
from benchmarks.servers import ROOT, Server, ServerError, recloop_server, wait_idle
from benchmarks.stats import median, percentile
from benchmarks.workload import ALGORITHMS, API, FEEDBACK, ITEMS, rank_path, strategy_path

WORKDIR: Final = ROOT / ".bench"
LOG_KEPT: Final = WORKDIR / "learning-recloop.log"
"""The last run's server log (the run's own directory is removed)."""
SECTION: Final = "## Serving while a model trains (continuous learning)"

WORLD_SEED: Final = 11
"""Seeds the items' tiers: the same world registers the items, fills and measures."""
ITEM_COUNT: Final = 1_000
USERS: Final = 2_000
CANDIDATES: Final = 20
SHOWN: Final = 3
TIERS: Final = {"gold": 0.35, "silver": 0.12, "bronze": 0.03}
"""Click probability in the top slot by the item's tier; 1.2 times as much on mobile,
divided by 1 + position lower down."""
DEVICES: Final = ("mobile", "desktop")
FILL_CONNECTIONS: Final = 4
CONNECTIONS: Final = 3
WARMUP_REQUESTS: Final = 300
RANK_BODIES: Final = 64
"""Distinct candidate lists per size that the measured rank requests cycle through."""
POLL_INTERVAL: Final = 0.05
"""How often the job is polled and the server's children looked for, seconds."""
LOAD_START: Final = 1.0
"""Seconds the measured load runs before the training run is started (spawn, connect)."""
JOB_TIMEOUT: Final = 600.0

SERVER_ENV: Final = {
    # Labels are final 0.6 s after an impression: a run can train right after filling.
    "RECLOOP_LEARNING__ATTRIBUTION_WINDOW_MINUTES": "0.01",
    # The generator's 2,000 users click far more often than people do.
    "RECLOOP_RATE_LIMITS__IMPLICIT": "1000000000/minute",
    "RECLOOP_RATE_LIMITS__EXPLICIT": "1000000000/minute",
    # The canary monitor (every 30 s by default) rescans the last day's impressions in
    # the server process: out of the way, so that it falls into neither phase.
    "RECLOOP_LEARNING__MONITOR_SECONDS": "86400",
}

RankBodies = tuple[tuple[tuple[bytes, str], ...], tuple[tuple[bytes, str], ...]]
"""Bodies of rank requests with 20 and with 100 candidates, each with its device."""
KINDS: Final = ("rank, 20 candidates", "rank, 100 candidates", "strategy")
"""What the measured load asks, in turn (request ``i`` is of kind ``i % 3``)."""
PHASES: Final = ("idle", "training")

JOBS: Final = f"{API}/models/jobs"
RETRAIN: Final = f"{API}/models/retrain"


_progress = progress("bench-learning")


# -- the world ----------------------------------------------------------------------


class World:
    """Items with a hidden tier (an attribute), users on devices, position-biased clicks."""

    def __init__(self, seed: int, stream: int = 0) -> None:
        tiers = random.Random(seed)
        self.tier = {f"i{n}": tiers.choice(list(TIERS)) for n in range(ITEM_COUNT)}
        self.ids = sorted(self.tier)
        self.rng = random.Random(seed * 1_000 + stream + 1)

    def items(self) -> list[dict[str, Any]]:
        # three one-hot attributes: an odd count never cancels out when hashed
        return [
            {"item_id": i, "attributes": {"tier": t, "genre": f"g{n % 7}", "sku": i}}
            for n, (i, t) in enumerate(self.tier.items())
        ]

    def user(self) -> str:
        return f"u{self.rng.randrange(USERS)}"

    def rank_body(self, candidates: int) -> tuple[dict[str, Any], str]:
        """A rank body (the orchestrator's scores know nothing of the tier), and its device."""
        chosen = self.rng.sample(self.ids, candidates)
        device = self.rng.choice(DEVICES)
        body = {
            "candidates": [
                {"item_id": i, "algorithm": ALGORITHMS[n % 4], "score": round(self.rng.random(), 4)}
                for n, i in enumerate(chosen)
            ],
            "k": SHOWN,
            "context": {"device": device},
        }
        return body, device

    def clicks(self, ranking: Sequence[dict[str, Any]], device: str) -> list[str]:
        clicked = []
        for position, slot in enumerate(ranking):
            p = TIERS[self.tier[slot["item_id"]]] * (1.2 if device == "mobile" else 1.0)
            if self.rng.random() < p / (1 + position):
                clicked.append(slot["item_id"])
        return clicked


async def post_clicks(
    conn: Connection, world: World, user: str, answer: dict[str, Any], device: str
) -> tuple[int, Response | None]:
    """Draw the clicks on a ranking and post them with its impression's id: the number
    of clicks, and the answer if it was not a 202 accepting them all."""
    clicks = world.clicks(answer["ranking"], device)
    if not clicks:
        return 0, None
    impression = answer["impression_id"]
    events = [
        {
            "event_id": f"{impression}-{item}",
            "user_id": user,
            "item_id": item,
            "type": "click",
            "attribution": {"impression_id": impression},
        }
        for item in clicks
    ]
    response = await conn.post_json(FEEDBACK, {"events": events})
    if response.status != 202 or response.json()["accepted"] != len(events):
        return len(events), response
    return len(events), None


# -- filling the impression log (a job for LoadProcess) -------------------------------


@dataclass(frozen=True, slots=True)
class FillLoad:
    port: int
    impressions: int
    connections: int = FILL_CONNECTIONS
    timeout: float = 900.0


@dataclass(frozen=True, slots=True)
class FillResult:
    impressions: int
    with_click: int
    clicks: int
    failed: int
    """Rank requests not answered 200, and feedback posts not wholly accepted."""
    seconds: float
    example: str = ""
    """The first failure's answer."""


def fill_load(spec: FillLoad, stop: StopEvent) -> FillResult:
    return _run(_fill(spec, stop))


async def _fill(spec: FillLoad, stop: StopEvent) -> FillResult:
    counts = {"impressions": 0, "with_click": 0, "clicks": 0, "failed": 0}
    example: list[str] = []
    issued = itertools.count()
    start = time.perf_counter()
    deadline = start + spec.timeout

    def failed(response: Response) -> None:
        counts["failed"] += 1
        if not example:
            example.append(f"{response.status} {response.body[:300]!r}")

    async def client(stream: int) -> None:
        world = World(WORLD_SEED, stream)
        async with Connection(spec.port) as conn:
            while next(issued) < spec.impressions:
                if stop.is_set() or time.perf_counter() > deadline:
                    return
                user = world.user()
                body, device = world.rank_body(CANDIDATES)
                response = await conn.post_json(rank_path(user), body)
                if response.status != 200:
                    failed(response)
                    continue
                counts["impressions"] += 1
                clicks, refused = await post_clicks(conn, world, user, response.json(), device)
                if refused is not None:
                    failed(refused)
                elif clicks:
                    counts["with_click"] += 1
                    counts["clicks"] += clicks

    await asyncio.gather(*(client(n) for n in range(spec.connections)))
    return FillResult(**counts, seconds=time.perf_counter() - start, example="".join(example))


# -- the measured load (a job for LoadProcess) ------------------------------------------


@dataclass(frozen=True, slots=True)
class ServingLoad:
    """Requests of the ``KINDS`` in turn from ``connections`` connections, closed loop,
    ``requests`` of them, or (``None``) until stopped. The clicks the world draws on each
    ranking are posted too, on the same connection (not timed), so that the impressions
    logged while measuring keep the click rate of the others."""

    port: int
    rank_bodies: RankBodies
    requests: int | None
    connections: int = CONNECTIONS
    seed: int = 0
    timeout: float = 900.0
    server_pid: int = 0
    """Sampled at the first and the last request (CPU seconds, self and reaped children)."""


@dataclass(frozen=True, slots=True)
class Sample:
    kind: int
    start: float
    """Wall clock (``time.time``), comparable with the job's times, which the server sets."""
    seconds: float


@dataclass(frozen=True, slots=True)
class ServingResult:
    samples: tuple[Sample, ...]
    clicks: int
    """Click events posted (untimed)."""
    failed: int
    example: str
    cpu_before: Stamp
    """At the first request."""
    cpu_after: Stamp
    """After the last answer."""


def serving_load(spec: ServingLoad, stop: StopEvent) -> ServingResult:
    return _run(_serving(spec, stop))


async def _serving(spec: ServingLoad, stop: StopEvent) -> ServingResult:
    world = World(WORLD_SEED, stream=1_000 + spec.seed)
    rng = world.rng
    issued = itertools.count()
    samples: list[Sample] = []
    failures: list[str] = []
    clicked = 0
    budget = spec.requests if spec.requests is not None else 2**62
    deadline = time.perf_counter() + spec.timeout
    conns = [Connection(spec.port) for _ in range(spec.connections)]
    # Open every connection before the clock starts.
    for conn in conns:
        await conn.request("GET", strategy_path("warm"))
    before = Stamp.take(spec.server_pid, spec.server_pid, also_self=True)

    async def client(conn: Connection) -> None:
        nonlocal clicked
        while (i := next(issued)) < budget and not stop.is_set():
            if time.perf_counter() > deadline:
                return
            kind = i % len(KINDS)
            user = f"u{rng.randrange(USERS)}"
            device = ""
            if kind == 2:
                method, path, body = "GET", strategy_path(user), b""
            else:
                bodies = spec.rank_bodies[kind]
                body, device = bodies[i % len(bodies)]
                method, path = "POST", rank_path(user)
            wall, begin = time.time(), time.perf_counter()
            response = await conn.request(method, path, body)
            samples.append(Sample(kind, wall, time.perf_counter() - begin))
            if response.status != 200:
                failures.append(f"{method} {path}: {response.status} {response.body[:200]!r}")
            elif device:
                clicks, refused = await post_clicks(conn, world, user, response.json(), device)
                clicked += clicks
                if refused is not None:
                    failures.append(f"POST {FEEDBACK}: {refused.status} {refused.body[:200]!r}")

    try:
        await asyncio.gather(*(client(conn) for conn in conns))
    finally:
        for conn in conns:
            await conn.close()
    after = Stamp.take(spec.server_pid, spec.server_pid, also_self=True)
    return ServingResult(
        tuple(samples), clicked, len(failures), "".join(failures[:1]), before, after
    )


# -- /proc --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stamp:
    """CPU seconds used so far, to subtract from a later stamp."""

    at: float
    """Wall clock."""
    server: float
    """The server process itself."""
    reaped: float
    """The server's children it has waited for (the training process, once it has ended)."""
    run: float
    """Every process of the run: the server and its children, the load generator, the
    orchestrator."""
    machine: float

    @classmethod
    def take(cls, server: int, root: int, also_self: bool = False) -> Stamp:
        """With ``root`` the run's root process (``also_self``: and this process, not a
        descendant of it)."""
        own, reaped = harness.process_cpu(server) if server else (math.nan, math.nan)
        run = harness.tree_cpu(root) if root else math.nan
        if also_self:
            run += sum(harness.process_cpu(os.getpid()))
        return cls(time.time(), own, reaped, run, harness.machine_busy()[0])


def _children(pid: int) -> dict[int, tuple[float, str]]:
    """The living children of ``pid``: their CPU seconds and command lines."""
    found: dict[int, tuple[float, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = harness.proc_stat(int(entry.name))
        if fields is None or int(fields[1]) != pid:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found[int(entry.name)] = ((int(fields[11]) + int(fields[12])) / harness.tick(), cmdline)
    return found


# -- control calls ------------------------------------------------------------------


async def _post(port: int, path: str, payload: Any, status: int) -> Any:
    async with Connection(port, timeout=120.0) as conn:
        response = await conn.post_json(path, payload)
    if response.status != status:
        raise ServerError(f"POST {path} answered {response.status}: {response.body[:500]!r}")
    return response.json()


async def _get(port: int, path: str) -> Any:
    async with Connection(port) as conn:
        response = await conn.request("GET", path)
    if response.status != 200:
        raise ServerError(f"GET {path} answered {response.status}: {response.body[:500]!r}")
    return response.json()


# -- one run ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    impressions: int = 30_000
    repeat: int = 3
    requests: int = 3_000
    """Requests of the idle phase (a third of each kind)."""


@dataclass
class Run:
    options: Options
    server: Server
    rank_bodies: RankBodies
    fill: FillResult | None = None
    values: dict[str, list[float]] = field(default_factory=dict)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seeds: Iterator[int] = field(default_factory=itertools.count)

    def record(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(value)

    def median(self, key: str) -> float:
        return median(self.values.get(key, []))

    def runs(self, key: str) -> list[float]:
        return self.values.get(key, [])

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def _rank_bodies() -> RankBodies:
    world = World(WORLD_SEED, stream=999)

    def bodies(size: int) -> tuple[tuple[bytes, str], ...]:
        made = (world.rank_body(size) for _ in range(RANK_BODIES))
        return tuple((orjson.dumps(body), device) for body, device in made)

    return bodies(20), bodies(100)


def _latencies(run: Run, phase: str, samples: Sequence[Sample]) -> None:
    for kind in range(len(KINDS)):
        ms = [s.seconds * 1000.0 for s in samples if s.kind == kind]
        for q in (50, 95, 99):
            run.record(f"{phase}.{kind}.p{q}", percentile(ms, q))
    run.record(f"{phase}.requests", len(samples))


def _check(run: Run, phase: str, result: ServingResult) -> None:
    run.record(f"{phase}.clicks", result.clicks)
    if result.failed:
        run.note(f"{phase}: {result.failed} requests not answered 200, e.g. {result.example[:200]}")


def idle_phase(run: Run) -> None:
    spec = ServingLoad(
        run.server.port,
        run.rank_bodies,
        run.options.requests,
        seed=next(run.seeds),
        server_pid=run.server.process.pid,
    )
    result = run_in_process(serving_load, spec, "idle-load", timeout=spec.timeout + 60)
    a, b = result.cpu_before, result.cpu_after
    seconds = b.at - a.at
    _check(run, "idle", result)
    _latencies(run, "idle", result.samples)
    run.record("idle.seconds", seconds)
    run.record("idle.rate", len(result.samples) / seconds)
    run.record("idle.server_cpu", 100.0 * (b.server - a.server) / seconds)
    run.record("idle.child_cpu", 100.0 * (b.reaped - a.reaped) / seconds)
    run.record("idle.machine_cpu", 100.0 * (b.machine - a.machine) / seconds)
    others = b.machine - a.machine - (b.run - a.run)
    run.record("idle.others_cpu", max(0.0, 100.0 * others / seconds))


@dataclass
class Watch:
    """What polling saw of one training run."""

    job: dict[str, Any] = field(default_factory=dict)
    child_first: float = math.nan
    child_last: float = math.nan
    child_cpu: dict[int, float] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)
    child_gone: bool = False
    before: Stamp | None = None
    after: Stamp | None = None


async def _watch_training(run: Run) -> Watch:
    """Start a training run; poll it until it is over, noting the server's new children."""
    port, pid = run.server.port, run.server.process.pid
    watch = Watch()
    already = set(_children(pid))  # e.g. multiprocessing's resource tracker
    watch.before = Stamp.take(pid, os.getpid())
    job = await _post(port, RETRAIN, {}, 202)
    path = f"{JOBS}/{job['job_id']}"
    deadline = time.monotonic() + JOB_TIMEOUT
    async with Connection(port) as conn:
        while job["status"] in ("queued", "running"):
            if time.monotonic() > deadline:
                raise ServerError(f"training job still {job['status']} after {JOB_TIMEOUT:.0f}s")
            run.server.check_alive()
            await asyncio.sleep(POLL_INTERVAL)
            _look_for_child(watch, pid, already)
            response = await conn.request("GET", path)
            if response.status != 200:
                raise ServerError(f"GET {path} answered {response.status}: {response.body!r}")
            job = response.json()
    watch.after = Stamp.take(pid, os.getpid())
    watch.job = job
    return watch


def _look_for_child(watch: Watch, server: int, already: set[int]) -> None:
    """Note the training process's CPU and when it was seen: scan the server's children
    until it appears, then read only its own ``/proc`` entry (a scan costs ~2 ms)."""
    if watch.child_gone:
        return
    known = [pid for pid in watch.child_cpu if pid not in watch.ended]
    if known:
        found = {}
        for pid in known:
            fields = harness.proc_stat(pid)
            if fields is None or int(fields[1]) != server:
                watch.ended.add(pid)
            else:
                found[pid] = (int(fields[11]) + int(fields[12])) / harness.tick()
        if not found:
            watch.child_gone = True
            return
    else:
        found = {
            pid: cpu
            for pid, (cpu, cmdline) in _children(server).items()
            if pid not in already and "resource_tracker" not in cmdline
        }
    if found:
        now = time.time()
        if math.isnan(watch.child_first):
            watch.child_first = now
        watch.child_last = now
        watch.child_cpu.update(found)


def training_phase(run: Run, rep: int) -> None:
    spec = ServingLoad(
        run.server.port,
        run.rank_bodies,
        None,
        seed=next(run.seeds),
        server_pid=run.server.process.pid,
    )
    with LoadProcess(serving_load, spec, "training-load") as load:
        time.sleep(LOAD_START)
        watch = asyncio.run(_watch_training(run))
        load.stop()
        result = load.result(timeout=60)
    job = watch.job
    started, finished = float(job["created_at"]), float(job["finished_at"] or math.nan)
    if result.samples and result.samples[0].start > started:
        run.note("training: the measured load started after the training run; raise LOAD_START.")
    inside = [s for s in result.samples if s.start >= started and s.start + s.seconds <= finished]
    seconds = finished - started
    _check(run, "training", result)
    _latencies(run, "training", inside)
    a, b = watch.before, watch.after
    assert a is not None and b is not None
    wall = b.at - a.at
    # The training process is reaped when the job ends: its CPU is the server's children's.
    reaped = b.reaped - a.reaped
    seen = sum(watch.child_cpu.values())
    run.record("training.seconds", seconds)
    run.record("training.rate", len(inside) / seconds if seconds > 0 else math.nan)
    run.record("training.server_cpu", 100.0 * (b.server - a.server) / wall)
    run.record("training.child_cpu", 100.0 * max(reaped, seen) / wall)
    run.record("training.machine_cpu", 100.0 * (b.machine - a.machine) / wall)
    others = b.machine - a.machine - (b.run - a.run)
    run.record("training.others_cpu", max(0.0, 100.0 * others / wall))
    run.record("training.child_cpu_seconds", max(reaped, seen))
    child_seconds = watch.child_last - watch.child_first
    run.record("job.child_seconds", child_seconds)
    if math.isnan(child_seconds):
        run.note(
            "training: no training process seen among the server's children "
            f"(polled every {POLL_INTERVAL * 1000:.0f} ms)."
        )
    else:
        # While the training process ran, and the rest of the job (in the server).
        during = [
            s
            for s in inside
            if s.start >= watch.child_first and s.start + s.seconds <= watch.child_last
        ]
        _latencies(run, "child", during)
        rest = [
            s
            for s in inside
            if not (s.start >= watch.child_first and s.start + s.seconds <= watch.child_last)
        ]
        _latencies(run, "server_side", rest)
    model: dict[str, Any] = {}
    if job.get("version"):
        model = asyncio.run(_get(run.server.port, f"{API}/models/{job['version']}"))
    found = ((model.get("metrics") or {}).get("candidate") or {}).get("auc")
    auc = math.nan if found is None else float(found)
    run.record("job.auc", auc)
    run.record("job.examples", float(model.get("examples", math.nan)))
    run.jobs.append(
        {
            "rep": rep,
            "status": job["status"],
            "model": model.get("status", ""),
            "message": job.get("message", ""),
            "seconds": seconds,
            "child_seconds": child_seconds,
            "auc": auc,
            "examples": model.get("examples", 0),
            "positives": model.get("positives", 0),
            "requests": len(inside),
        }
    )
    if job["status"] != "done" or model.get("status") == "rejected":
        run.note(f"training run {rep}: {job['status']}: {job.get('message', '')[:200]}")


def run_benchmark(options: Options) -> Run:
    WORKDIR.mkdir(exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="learning-", dir=WORKDIR) as tmp:
        workdir = Path(tmp) / "recloop"
        try:
            with recloop_server(workdir, SERVER_ENV) as server:
                run = Run(options, server, _rank_bodies())
                _measure(run, started)
        finally:
            log = workdir / "recloop.log"
            if log.exists():
                shutil.copyfile(log, LOG_KEPT)
    return run


def _measure(run: Run, started: float) -> None:
    server, o = run.server, run.options
    _progress(f"recloop on port {server.port} (pid {server.process.pid})")
    asyncio.run(_post(server.port, ITEMS, {"items": World(WORLD_SEED).items()}, 200))
    spec = FillLoad(server.port, o.impressions)
    fill = run_in_process(fill_load, spec, "fill", timeout=spec.timeout + 60)
    run.fill = fill
    if fill.failed:
        run.note(f"filling: {fill.failed} requests failed, e.g. {fill.example[:200]}")
    _progress(
        f"{fill.impressions:,} impressions ({fill.with_click:,} with a click, {fill.clicks:,} "
        f"clicks) logged in {fill.seconds:.0f}s"
    )
    asyncio.run(wait_idle(server.port))
    warm = ServingLoad(server.port, run.rank_bodies, WARMUP_REQUESTS, seed=next(run.seeds))
    run_in_process(serving_load, warm, "warm-up", timeout=warm.timeout + 60)
    for rep in range(1, o.repeat + 1):
        asyncio.run(wait_idle(server.port))
        time.sleep(1.0)  # past the attribution window of the last impression
        server.check_alive()
        idle_phase(run)
        asyncio.run(wait_idle(server.port))
        time.sleep(1.0)
        training_phase(run, rep)
        j = run.jobs[-1]
        _progress(
            f"{rep}/{o.repeat}: idle rank-100 P99 {run.runs('idle.1.p99')[-1]:.1f} ms, "
            f"training rank-100 P99 {run.runs('training.1.p99')[-1]:.1f} ms; training "
            f"{j['status']} in {j['seconds']:.1f}s (training process {j['child_seconds']:.1f}s), "
            f"AUC {j['auc']:.3f}, {j['examples']:,} examples, {j['requests']} requests measured"
        )
    _progress(f"measured in {time.monotonic() - started:.0f}s; stopping")


# -- the report ----------------------------------------------------------------------


def latency_table(run: Run) -> str:
    rows = [
        "| request | percentile, ms | idle | during training | training ÷ idle "
        "| idle runs | training runs |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for kind, name in enumerate(KINDS):
        for q in (50, 95, 99):
            idle, busy = run.median(f"idle.{kind}.p{q}"), run.median(f"training.{kind}.p{q}")
            rows.append(
                f"| {name} | P{q} | {number(idle)} | {number(busy)} | {number(ratio(busy, idle))} "
                f"| {runs(run.runs(f'idle.{kind}.p{q}'))} "
                f"| {runs(run.runs(f'training.{kind}.p{q}'))} |"
            )
    for key, label in (
        ("rate", "requests/s (all three kinds)"),
        ("requests", "requests measured"),
        ("server_cpu", "server process CPU, % of one core"),
        ("child_cpu", "training process CPU, % of one core"),
        ("machine_cpu", "whole machine CPU, % of one core (load generator included)"),
        ("others_cpu", "processes not of this run, % of one core"),
    ):
        idle, busy = run.median(f"idle.{key}"), run.median(f"training.{key}")
        rows.append(
            f"| all | {label} | {number(idle)} | {number(busy)} | {number(ratio(busy, idle))} "
            f"| {runs(run.runs(f'idle.{key}'))} | {runs(run.runs(f'training.{key}'))} |"
        )
    return "\n".join(rows)


def split_table(run: Run) -> str:
    """P99 during training: while the training process ran, and while the server itself
    worked on the job (reading impressions and clicks, building the data, registering)."""
    rows = [
        "| request | P99 idle, ms | P99 while the server worked on the job, ms "
        "| P99 while the training process ran, ms |",
        "|---|---:|---:|---:|",
    ]
    for kind, name in enumerate(KINDS):
        rows.append(
            f"| {name} | {number(run.median(f'idle.{kind}.p99'))} "
            f"| {number(run.median(f'server_side.{kind}.p99'))} "
            f"| {number(run.median(f'child.{kind}.p99'))} |"
        )
    rows.append(
        f"| requests measured | {number(run.median('idle.requests'))} "
        f"| {number(run.median('server_side.requests'))} "
        f"| {number(run.median('child.requests'))} |"
    )
    return "\n".join(rows)


def jobs_table(run: Run) -> str:
    rows = [
        "| run | job | model | seconds, job | of which the training process | training "
        "process CPU, s | examples | clicked | holdout AUC |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    cpu = run.runs("training.child_cpu_seconds")
    for n, j in enumerate(run.jobs):
        rows.append(
            f"| {j['rep']} | {j['status']} | {j['model'] or 'none'} | {number(j['seconds'])} "
            f"| {number(j['child_seconds'])} | {number(cpu[n]) if n < len(cpu) else 'n/a'} "
            f"| {j['examples']:,} | {j['positives']:,} "
            f"| {'n/a' if math.isnan(j['auc']) else format(j['auc'], '.3f')} |"
        )
    return "\n".join(rows)


def _machine() -> str:
    return harness.machine(f"LightGBM {version('lightgbm')}, uvicorn {version('uvicorn')}.")


BUSY_ELSEWHERE: Final = 10.0
"""% of one core used by processes not of this run above which a note says so."""


def busy_elsewhere(run: Run) -> list[str]:
    """A note when processes outside the run took CPU during the measurements."""
    shares = [(p, v) for p in PHASES for v in run.runs(f"{p}.others_cpu")]
    busy = [v for _, v in shares if v > BUSY_ELSEWHERE]
    if not busy:
        return []
    return [
        f"Processes outside this run used more than {BUSY_ELSEWHERE:.0f} % of one core "
        f"during {len(busy)} of the {len(shares)} measured phases (up to {max(busy):.0f} %): "
        "those phases are slower than on a quiet machine."
    ]


def explanation(run: Run) -> list[str]:
    cores = os.cpu_count() or 1
    idle99 = run.median("idle.1.p99")
    child99, server99 = run.median("child.1.p99"), run.median("server_side.1.p99")
    whole = {q: ratio(run.median(f"training.1.p{q}"), run.median(f"idle.1.p{q}")) for q in (50, 99)}
    server_idle, server_busy = run.median("idle.server_cpu"), run.median("training.server_cpu")
    child, machine = run.median("training.child_cpu"), run.median("training.machine_cpu")
    job, child_seconds = run.median("training.seconds"), run.median("job.child_seconds")
    child_share = ratio(run.median("training.child_cpu_seconds"), child_seconds) * 100.0
    examples = run.median("job.examples")
    fit_ok, job_ok = ratio(child99, idle99) < 1.5, ratio(server99, idle99) < 2.0
    verdict = {
        (True, False): "So the separate process keeps the fit itself from slowing serving "
        "much, but not the training run as a whole: the slowest requests come from the "
        "job's work in the server process.",
        (True, True): "So the separate process keeps serving from slowing down much while "
        "a model trains.",
        (False, False): "Here even the fit, in its own process, slows serving noticeably "
        "(the cores are shared), and the job's work in the server process slows it most.",
        (False, True): "Here the fit, in its own process, slows serving noticeably: the "
        "cores are shared.",
    }[(fit_ok, job_ok)]
    return [
        f"- A training run took {number(job)} s at the median ({number(examples)} examples), "
        f"of which the training process (spawned; fit, then validation) ran "
        f"{number(child_seconds)} s at {number(child_share)} % of one core. The other "
        f"{number(job - child_seconds)} s are the job's work in the server process: before "
        "the training process, reading the model registry and the champion and starting the "
        "process (which reads the impressions and their clicks from the database itself and "
        "joins them); after it, registering the model.",
        f"- *While the training process ran*, rank's P99 (100 candidates) was "
        f"{number(child99)} ms against {number(idle99)} ms idle "
        f"({number(ratio(child99, idle99))} times): serving only competes with it for CPU. "
        f"The machine has {cores} cores; the server's event loop uses at most one "
        f"({number(server_idle)} % of one core idle, {number(server_busy)} % over the job), "
        f"the training process another ({number(child)} % of one core over the whole job), "
        f"the load generator and the poller a little of either: the machine ran at "
        f"{number(machine)} % of one core (of {100 * cores}) during the job.",
        f"- *While the server itself worked on the job*, rank's P99 was {number(server99)} ms "
        f"({number(ratio(server99, idle99))} times idle; "
        f"{number(run.median('server_side.requests'))} requests of the three kinds in that "
        "time). With SQL storage the server no longer reads or joins the training data "
        "(the training process does, on its own read-only connection), so its part is "
        "short: the registry, the champion, starting the process and registering the "
        "model. With the in-memory storage it still reads on the event loop.",
        f"- *training ÷ idle* is the slowdown of a percentile over the whole job: 1 means "
        f"serving did not notice the training run. For rank with 100 candidates it was "
        f"{number(whole[50])} at P50 and {number(whole[99])} at P99. The loads are closed "
        f"loops of {CONNECTIONS} connections, so the server is busy all the time in both "
        "phases and a request's latency is its own time plus that of the requests ahead "
        "of it: CPU the server loses, and any stall of its event loop, show in full. " + verdict,
    ]


def section(run: Run, command: str, when: datetime | None = None) -> str:
    when = when or datetime.now(UTC)
    o = run.options
    fill = run.fill
    filled = (
        f"{fill.impressions:,} impressions ({fill.with_click:,} with a click, {fill.clicks:,} "
        f"clicks) logged in {fill.seconds:.0f} s"
        if fill
        else "no impressions"
    )
    return "\n".join(
        [
            SECTION,
            "",
            f"Measured {when:%Y-%m-%d %H:%M} UTC with `{command}` (`make bench-learning`), on "
            f"{harness.revision()}: median of {harness.repetitions(o.repeat)}.",
            "",
            f"Machine: {_machine()}",
            "",
            "Options: `--impressions N` (30,000) impressions logged before the first training "
            "run, `--repeat R` (3), `--requests N` (3,000) requests in each idle phase, "
            "`--write` (replace this section). Progress goes to stderr, the section to "
            f"stdout; the last run's server log is kept in `{LOG_KEPT.relative_to(ROOT)}`.",
            "",
            "Training runs in a separate (spawned) process so that serving is not slowed "
            "(issue 7); this measures how much it is slowed all the same. One `recloop serve` "
            "(the suite's settings, a fresh SQLite file) with "
            + ", ".join(f"`{k}={v}`" for k, v in SERVER_ENV.items())
            + ": labels are final 0.6 s after an impression, the generator's users may click "
            "as often as it likes, and the canary monitor, which rescans the last day's "
            "impressions in the server every 30 s, stays out of the measurements.",
            "",
            f"- *The data*: {ITEM_COUNT:,} items with three one-hot attributes (`tier`, "
            f"`genre`, `sku`), {USERS:,} users; `rank` with {CANDIDATES} random candidates, "
            f"`k = {SHOWN}` and `context.device` mobile or desktop, then clicks drawn by the "
            "item's tier (top-slot click probability 0.35, 0.12 or 0.03, 1.2 times as much "
            "on mobile, divided by 1 + position lower down) and posted with the impression's "
            f"id, from {FILL_CONNECTIONS} connections: {filled}. The measured `rank` requests log "
            "impressions too (and their clicks, see below), so each training run has more "
            "examples than the one before.",
            f"- *The load*: `POST /users/{{u}}/rank` with 20 candidates, with 100 candidates "
            f"(`k = {SHOWN}`, a device; {RANK_BODIES} lists of each size in turn), and "
            f"`GET /users/{{u}}/strategy`, in turn, for random users of the {USERS:,}, "
            f"from {CONNECTIONS} keep-alive connections in a closed loop, in a process of "
            "its own (the suite's lean client). The clicks the world draws on each ranking "
            "are posted as well, untimed, on the same connection, so that what is logged "
            "while measuring keeps the click rate of the rest (the holdout is the latest "
            "examples). *Idle*: a fixed number of requests "
            "(`--requests`), no training. *During training*: the same load runs from "
            f"{LOAD_START:g} s before `POST /models/retrain` until the job is over "
            f"(`GET /models/jobs/{{id}}` polled every {POLL_INTERVAL * 1000:.0f} ms), and "
            "only requests sent and answered between the job's `created_at` and "
            "`finished_at` count.",
            "- *CPU* from `/proc/<pid>/stat`: the server process's own, and the training "
            "process's (found among the server's children while it runs; reaped when the "
            "job ends, its CPU is then the server's children's), over the idle load and over "
            "the job, as a share of one core.",
            "",
            latency_table(run),
            "",
            "P99 during the training runs, split by where the job's work was being done "
            "(the training process's life as the poller saw it):",
            "",
            split_table(run),
            "",
            "The training runs:",
            "",
            jobs_table(run),
            "",
            *(f"- {note}" for note in run.notes or ["No request failed."]),
            *(f"- {note}" for note in busy_elsewhere(run)),
            *explanation(run),
            "",
        ]
    )


# -- the command ---------------------------------------------------------------------


def parse_args(argv: list[str]) -> tuple[Options, bool]:
    default = Options()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.learning",
        description="Serving latency (rank, strategy) idle and while a model trains.",
    )
    parser.add_argument(
        "--impressions",
        type=count,
        default=default.impressions,
        help=f"impressions logged before the first training run ({default.impressions:,})",
    )
    add_load_options(parser, default, "repeat")
    parser.add_argument(
        "--requests",
        type=count,
        default=default.requests,
        help=f"requests of each idle phase ({default.requests:,})",
    )
    add_write(parser, SECTION)
    args = parser.parse_args(argv)
    return Options(args.impressions, args.repeat, args.requests), args.write


def main(argv: list[str] | None = None) -> int:
    return harness.section_command(
        "benchmarks.learning",
        argv,
        parse_args,
        run_benchmark,
        section,
        SECTION,
        (ServerError, LoadProcessError, OSError),
        f"server log in {LOG_KEPT}",
    )


if __name__ == "__main__":
    sys.exit(main())
