"""The benchmarks, their metrics and targets, and the run that repeats them.

One run starts one ``recloop serve`` (fresh SQLite file) and one bare ceiling
server, registers the workload's items, then runs each selected benchmark
``repeat`` times, waiting before each repetition until the server has
applied everything it accepted. Before the first read-path benchmark it also
gives the known readers their history and starts one experiment; the first
time the guard benchmark runs it starts two more ``recloop serve``, fresh,
one with the guard and one with it off (the baseline). Every load comes from
another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from benchmarks.harness import LoadOptions, progress, ratio
from benchmarks.loadgen import (
    AppliedLoad,
    BatchLoad,
    BatchResult,
    PacedLoad,
    PacedResult,
    ReplayLoad,
    SingleLoad,
    SingleResult,
    VisibilityProbe,
    VisibilityResult,
    applied_load,
    batch_load,
    paced_load,
    probe_visibility,
    replay_load,
    single_load,
)
from benchmarks.processes import LoadProcess, run_in_process
from benchmarks.servers import (
    GUARD_OFF,
    ROOT,
    Server,
    ServerError,
    bare_server,
    expose,
    exposures,
    logged_events,
    post_feedback,
    recloop_server,
    register_items,
    segments,
    start_experiment,
    wait_idle,
)
from benchmarks.stats import median, percentile
from benchmarks.workload import (
    FEEDBACK,
    Readers,
    ReadPlan,
    Workload,
    assignment_path,
    rank_path,
    read_experiment,
    strategy_path,
    weights_path,
)
from benchmarks.wrk import WrkLoad, WrkReplay, run_wrk, run_wrk_replay, wrk_path

_progress = progress("bench")
WORKDIR: Final = ROOT / ".bench"
"""Parent of each run's temporary directory: the SQLite file lives on the project's disk."""

BACKGROUND_RATE: Final = 5_000.0
"""events/s of the background load under which feedback→visible latency is measured (the
specification's level: P95 ≤ 100 ms)."""
HEAVY_BACKGROUND_RATE: Final = 20_000.0
"""The second, heavier background load (issue 14's level: P95 ≤ 50 ms)."""
BACKGROUND_BATCH: Final = 100
BACKGROUND_WARMUP: Final = 2.0
"""Seconds the background load runs before the probe starts."""
EXPLICIT_PER_SECOND_OF_DURATION: Final = 5_000
"""The explicit-applied benchmark posts this many events per second of ``--duration``."""
READ_CONNECTIONS: Final = 32
READ_WARMUP: Final = 1.0
"""Seconds of read load before each measured one (the same requests, other unknown users)."""
READ_UNLOADED: Final = 1.0
"""Seconds of read load from one connection, after the measured one."""
READ_PACED_RATE: Final = 2_000.0
"""Requests/s of the open-loop read load (issue 14)."""
READ_PACED_CONNECTIONS: Final = 64
READ_PLAN_RATE: Final = 10_000
"""A read plan holds this many requests per second of load; a faster load replays it."""
READ_EXPERIMENT: Final = "bench-read"
"""The experiment running during the read benchmarks (see ``workload.read_experiment``)."""
GUARD_BUDGET: Final = 0.15
"""Issue 5: the guard may slow the ingest hot path by at most this share."""


@dataclass(frozen=True, slots=True)
class Options(LoadOptions):
    only: tuple[str, ...] = ()
    use_wrk: bool = True
    server_env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Target:
    bound: float
    at_least: bool
    """True: the target is met by values ≥ bound; False: by values ≤ bound."""

    def met(self, value: float) -> bool:
        return value >= self.bound if self.at_least else value <= self.bound


def at_least(bound: float) -> Target:
    return Target(bound, at_least=True)


def at_most(bound: float) -> Target:
    return Target(bound, at_least=False)


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    label: str
    target: Target | None = None
    remark: str = ""
    """Shown where the target would be, e.g. why there is none."""


@dataclass(frozen=True, slots=True)
class Measured:
    """One metric's values over the repetitions; the median is the one quoted."""

    metric: Metric
    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return median(self.values)

    @property
    def met(self) -> bool | None:
        target = self.metric.target
        return None if target is None else target.met(self.median)


class Run:
    """What a benchmark needs while it runs: the servers, the options, a place for notes."""

    def __init__(
        self,
        recloop: Server,
        bare: Server,
        options: Options,
        workload: Workload,
        workdir: Path,
        readers: Readers | None = None,
        servers: contextlib.ExitStack | None = None,
    ) -> None:
        self.recloop = recloop
        self.bare = bare
        self.options = options
        self.workload = workload
        self.workdir = workdir
        """Scratch space of this run (wrk's request plans, the servers started on demand)."""
        self.readers = readers or Readers()
        self.notes: list[str] = []
        self._servers = servers
        """Where servers started on demand are entered; they stop when it closes."""
        self._ids = itertools.count(1)
        self._turns: dict[str, int] = {}
        self._rank_bodies: tuple[bytes, ...] | None = None
        self._reads_prepared = False
        self._guard_servers: tuple[Server, Server] | None = None

    def prefix(self, name: str) -> str:
        """A prefix for event ids or user ids that no earlier load of this run used."""
        return f"{name}{next(self._ids)}"

    def turn(self, name: str) -> int:
        """How many times ``name`` was asked for before (0, 1, 2, ...): e.g. to alternate."""
        turn = self._turns.get(name, 0)
        self._turns[name] = turn + 1
        return turn

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def check_batch(self, what: str, result: BatchResult) -> None:
        """Note events the server did not accept: invalid, refused by the guard, or in
        failed requests."""
        if result.rejected or result.refused or result.failed_requests:
            self.note(
                f"{what}: {result.rejected} events rejected, {result.rate_limited} "
                f"rate-limited, {result.blocked} of blocked users, {result.failed_requests} "
                "requests failed."
            )

    @property
    def use_wrk(self) -> bool:
        return self.options.use_wrk and wrk_path() is not None

    def prepare_reads(self) -> None:
        """Once per run: every known reader's events applied, the read experiment running
        with every known reader exposed (so only unknown users are ever exposed first)."""
        if self._reads_prepared:
            return
        port, readers = self.recloop.port, self.readers
        seed = readers.seed_batches(self.workload, self.prefix("readers"), datetime.now(UTC))
        accepted = asyncio.run(post_feedback(port, seed))
        asyncio.run(wait_idle(port))
        expected = {c.user_id(n): c.segment for c in readers.cohorts for n in (0, c.users - 1)}
        found = asyncio.run(segments(port, expected))
        if found != expected:
            raise ServerError(f"readers in unexpected segments: expected {expected}, got {found}")
        asyncio.run(start_experiment(port, read_experiment(READ_EXPERIMENT)))
        asyncio.run(expose(port, READ_EXPERIMENT, readers.known()))
        _progress(
            f"readers: {accepted:,} events applied, {len(readers.known()):,} known users "
            f"exposed to {READ_EXPERIMENT}"
        )
        self._reads_prepared = True

    def guard_servers(self) -> tuple[Server, Server]:
        """Once per run: two fresh ``recloop serve``, with the guard (defaults) and with its
        costly parts off, each in a directory of its own with the workload's items. Fresh,
        so that neither carries the history of the suite's other loads (the main server's
        larger log and caches would count against the guard). Only the guard benchmark
        needs them, so only it starts them (they stop when the run ends)."""
        if self._guard_servers is not None:
            return self._guard_servers
        if self._servers is None:
            raise ServerError("this run cannot start servers: it was given no ExitStack")
        started = []
        for name, extra in (("recloop-guard-on", {}), ("recloop-guard-off", GUARD_OFF)):
            env = {**self.options.server_env, **extra}
            server = self._servers.enter_context(recloop_server(self.workdir / name, env, name))
            asyncio.run(register_items(server.port, self.workload))
            _progress(f"{name} on port {server.port}")
            started.append(server)
        self.note(
            "Guard on ÷ off: two fresh `recloop serve`, the baseline started with "
            f"`{' '.join(f'{k}={v}' for k, v in GUARD_OFF.items())}` (and the same other "
            "settings), loaded in turn, which goes first alternating; both get the same "
            "events, each repetition on users no earlier load had."
        )
        self._guard_servers = (started[0], started[1])
        return self._guard_servers

    def rank_bodies(self) -> tuple[bytes, ...]:
        """The candidate lists of ``POST /rank``, the same for every rank load of the run."""
        if self._rank_bodies is None:
            rng = random.Random(0)
            count = self.readers.rank_bodies
            self._rank_bodies = tuple(
                self.readers.rank_body(self.workload, rng) for _ in range(count)
            )
        return self._rank_bodies


@dataclass(frozen=True, slots=True)
class Benchmark:
    name: str
    title: str
    metrics: tuple[Metric, ...]
    run_once: Callable[[Run], dict[str, float]]


@dataclass(frozen=True, slots=True)
class BenchmarkResult:
    benchmark: Benchmark
    measured: tuple[Measured, ...]


@dataclass(frozen=True, slots=True)
class SuiteResult:
    options: Options
    results: tuple[BenchmarkResult, ...]
    notes: tuple[str, ...]
    load_generator: str


# -- single event ------------------------------------------------------------------


def _single_event(run: Run) -> dict[str, float]:
    bare, bare_cpu = _single_event_load(run, run.bare)
    before = asyncio.run(logged_events(run.recloop.port))
    recloop, recloop_cpu = _single_event_load(run, run.recloop)
    logged = asyncio.run(logged_events(run.recloop.port)) - before
    if logged < 0.99 * recloop.requests:
        run.note(f"single event: only {logged} of {recloop.requests} events were logged.")
    for name, result in (("ceiling", bare), ("recloop", recloop)):
        if result.failed_requests:
            run.note(f"single event, {name}: {result.failed_requests} requests failed.")
    return {
        "recloop": recloop.requests_per_second,
        "bare": bare.requests_per_second,
        "ratio": recloop.requests_per_second / bare.requests_per_second,
        "recloop_p50": recloop.latency.p50,
        "recloop_p95": recloop.latency.p95,
        "recloop_p99": recloop.latency.p99,
        "bare_p50": bare.latency.p50,
        "bare_p99": bare.latency.p99,
        "recloop_cpu": recloop_cpu,
        "bare_cpu": bare_cpu,
    }


def _single_event_load(run: Run, server: Server, warmup: float = 1.0) -> tuple[SingleResult, float]:
    """A short warm-up, then ``duration`` seconds measured; also the server's CPU µs per request."""
    _single_event_pass(run, server, warmup)
    cpu = server.cpu_seconds()
    result = _single_event_pass(run, server, run.options.duration)
    return result, _micros_per(server.cpu_seconds() - cpu, result.requests)


def _single_event_pass(run: Run, server: Server, seconds: float) -> SingleResult:
    prefix = run.prefix(f"single-{server.name}")
    if run.use_wrk:
        return run_wrk(WrkLoad(server.port, FEEDBACK, run.workload, prefix, duration=seconds))
    spec = SingleLoad(server.port, FEEDBACK, run.workload, prefix, duration=seconds)
    return run_in_process(single_load, spec, "single-event-load", timeout=seconds + 60)


def _micros_per(seconds: float, count: int) -> float:
    return seconds * 1e6 / count if count else math.nan


SINGLE_EVENT = Benchmark(
    name="single",
    title="Single event",
    metrics=(
        Metric("recloop", "recloop, req/s"),
        Metric("bare", "bare ASGI ceiling, req/s"),
        Metric("ratio", "recloop ÷ ceiling", at_least(0.5)),
        Metric("recloop_p50", "recloop latency P50, ms"),
        Metric("recloop_p95", "recloop latency P95, ms"),
        Metric("recloop_p99", "recloop latency P99, ms"),
        Metric("bare_p50", "ceiling latency P50, ms"),
        Metric("bare_p99", "ceiling latency P99, ms"),
        Metric("recloop_cpu", "recloop server CPU per request, µs"),
        Metric("bare_cpu", "ceiling server CPU per request, µs"),
    ),
    run_once=_single_event,
)


# -- batched ingest ------------------------------------------------------------------


def _batched_ingest(run: Run) -> dict[str, float]:
    o, server = run.options, run.recloop
    spec = BatchLoad(server.port, run.workload, run.prefix("batch"), o.clients, duration=o.duration)
    ingest = _ingest(server, spec)
    result = ingest.result
    run.check_batch("batched ingest", result)
    return {
        "events_per_second": result.events_per_second,
        "request_p50": result.latency.p50,
        "request_p99": result.latency.p99,
        "backlog": ingest.backlog,
        "cpu_per_event": ingest.cpu_per_event,
        "cpu_share": 100.0 * ingest.cpu_during_load / result.seconds,
    }


@dataclass(frozen=True, slots=True)
class Ingest:
    """A batched-ingest load, and the server CPU it cost: during the load, and in all once
    the backlog it left is applied (seconds)."""

    result: BatchResult
    backlog: float
    cpu_during_load: float
    cpu: float

    @property
    def cpu_per_event(self) -> float:
        """Server CPU per accepted event, µs, applying it included."""
        return _micros_per(self.cpu, self.result.accepted)


def _ingest(server: Server, spec: BatchLoad) -> Ingest:
    """``spec`` posted to ``server``, then its backlog waited for."""
    cpu = server.cpu_seconds()
    result = run_in_process(batch_load, spec, "batch-load", timeout=spec.duration + 120)
    cpu_during_load = server.cpu_seconds() - cpu
    backlog = asyncio.run(wait_idle(server.port))
    return Ingest(result, backlog, cpu_during_load, server.cpu_seconds() - cpu)


BATCHED_INGEST = Benchmark(
    name="batch",
    title="Batched ingest",
    metrics=(
        Metric("events_per_second", "durable events/s", at_least(100_000)),
        Metric("request_p50", "1,000-event request P50, ms"),
        Metric("request_p99", "1,000-event request P99, ms"),
        Metric("backlog", "seconds to apply the backlog after the load"),
        Metric("cpu_per_event", "server CPU per event (accepted and applied), µs"),
        Metric("cpu_share", "server CPU during the load, % of one core"),
    ),
    run_once=_batched_ingest,
)


# -- the guard's cost -----------------------------------------------------------------


def _guard_cost(run: Run) -> dict[str, float]:
    """The batched-ingest load against the guard-on and the guard-off server in turn,
    the same events on both, each server idle before its load and its backlog counted.

    Which server goes first alternates from one repetition to the next, so that a drift of
    the machine favours neither, and the ratios are taken within a repetition, between the
    two loads measured together. Each repetition's events go to users no earlier load had:
    the guard judges users by their history, and past a few dozen events in minutes the
    workload's uniformly random users look like spam; the guard would then hold or refuse
    their events, and measure less work than the guard-off server does.
    """
    o = run.options
    on, off = run.guard_servers()
    prefix = run.prefix("guard")
    measured: dict[str, Ingest] = {}
    for server in (on, off) if run.turn("guard") % 2 == 0 else (off, on):
        asyncio.run(wait_idle(server.port))
        server.check_alive()
        spec = BatchLoad(
            server.port,
            run.workload,
            prefix,
            o.clients,
            duration=o.duration,
            user_prefix=f"{prefix}-user",
        )
        measured[server.name] = _ingest(server, spec)
        run.check_batch(f"guard, {server.name}", measured[server.name].result)
    with_guard, without = measured[on.name], measured[off.name]
    on_rate, off_rate = with_guard.result.events_per_second, without.result.events_per_second
    return {
        "on": on_rate,
        "off": off_rate,
        "ratio": ratio(on_rate, off_rate),
        "on_cpu": with_guard.cpu_per_event,
        "off_cpu": without.cpu_per_event,
        "cpu_ratio": ratio(with_guard.cpu_per_event, without.cpu_per_event),
        "refused": with_guard.result.refused + without.result.refused,
    }


GUARD = Benchmark(
    name="guard",
    title="Guard on ÷ off, batched ingest",
    metrics=(
        Metric("on", "guard on (default), durable events/s"),
        Metric("off", "guard off, durable events/s"),
        Metric("ratio", "guard on ÷ off, events/s", at_least(1 - GUARD_BUDGET)),
        Metric("on_cpu", "guard on, server CPU per event (accepted and applied), µs"),
        Metric("off_cpu", "guard off, server CPU per event (accepted and applied), µs"),
        Metric("cpu_ratio", "guard on ÷ off, CPU per event", at_most(1 + GUARD_BUDGET)),
        Metric("refused", "events refused (rate-limited or blocked) per repetition"),
    ),
    run_once=_guard_cost,
)


# -- explicit events applied -----------------------------------------------------------


def _explicit_applied(run: Run) -> dict[str, float]:
    o = run.options
    events = round(EXPLICIT_PER_SECOND_OF_DURATION * o.duration)
    spec = AppliedLoad(run.recloop.port, run.workload, run.prefix("explicit"), events, o.clients)
    result = run_in_process(applied_load, spec, "applied-load", timeout=spec.timeout + 60)
    run.check_batch("explicit applied", result.ingest)
    return {
        "events_per_second": result.events_per_second,
        "ingest_events_per_second": result.ingest.events_per_second,
        "events": result.ingest.accepted,
    }


EXPLICIT_APPLIED = Benchmark(
    name="applied",
    title="Explicit events applied",
    metrics=(
        Metric("events_per_second", "events/s, first post → all applied", at_least(10_000)),
        Metric("ingest_events_per_second", "of which accepted, events/s"),
        Metric("events", "explicit events per repetition"),
    ),
    run_once=_explicit_applied,
)


# -- feedback to visible ----------------------------------------------------------------


def _feedback_visible(run: Run) -> dict[str, float]:
    unloaded = _probe(run)
    found = {
        "unloaded_p50": median(unloaded.latencies_ms),
        "unloaded_p95": percentile(unloaded.latencies_ms, 95),
    }
    for suffix, rate in (("", BACKGROUND_RATE), ("_heavy", HEAVY_BACKGROUND_RATE)):
        asyncio.run(wait_idle(run.recloop.port))
        loaded, achieved = _probe_under(run, rate, f"background{suffix}")
        found[f"loaded_p50{suffix}"] = median(loaded.latencies_ms)
        found[f"loaded_p95{suffix}"] = percentile(loaded.latencies_ms, 95)
        found[f"background{suffix}"] = achieved
    return found


def _probe_under(run: Run, rate: float, name: str) -> tuple[VisibilityResult, float]:
    """The probe while a background load posts ``rate`` events/s (users of its own,
    ``name``); and the rate it achieved."""
    background = BatchLoad(
        run.recloop.port,
        run.workload,
        run.prefix(name),
        run.options.clients,
        batch_size=BACKGROUND_BATCH,
        duration=600.0,  # a bound: it is stopped as soon as the probe is done
        rate=rate,
    )
    with LoadProcess(batch_load, background, "background-load") as load:
        time.sleep(BACKGROUND_WARMUP)
        loaded = _probe(run)
        load.stop()
        achieved = load.result(timeout=60)
    run.check_batch(f"{name} load", achieved)
    return loaded, achieved.events_per_second


def _probe(run: Run) -> VisibilityResult:
    spec = VisibilityProbe(run.recloop.port, run.workload, run.prefix("probe"), run.options.samples)
    return probe_visibility(spec, run.note)


FEEDBACK_VISIBLE = Benchmark(
    name="visible",
    title="Feedback → visible",
    metrics=(
        Metric("unloaded_p50", "unloaded P50, ms"),
        Metric("unloaded_p95", "unloaded P95, ms", at_most(10)),
        Metric("loaded_p50", f"P50 at {BACKGROUND_RATE:,.0f} events/s, ms"),
        Metric("loaded_p95", f"P95 at {BACKGROUND_RATE:,.0f} events/s, ms", at_most(100)),
        Metric("background", "background load achieved, events/s"),
        Metric("loaded_p50_heavy", f"P50 at {HEAVY_BACKGROUND_RATE:,.0f} events/s, ms"),
        Metric(
            "loaded_p95_heavy",
            f"P95 at {HEAVY_BACKGROUND_RATE:,.0f} events/s, ms",
            at_most(50),
        ),
        Metric("background_heavy", "heavier background load achieved, events/s"),
    ),
    run_once=_feedback_visible,
)


# -- read path ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadEndpoint:
    """A per-user read: its method, its path for a user, whether it posts candidates."""

    name: str
    method: str
    path: Callable[[str], str]
    candidates: bool = False
    exposes: bool = True
    """Whether it records exposures of running experiments."""
    paced_ceiling: bool = False
    """Whether the paced load is also sent to the bare ceiling (what the machine and the load
    generator alone give at that rate)."""


def _read_path(run: Run, endpoint: ReadEndpoint) -> dict[str, float]:
    """A warm-up, ``duration`` seconds at ``READ_CONNECTIONS`` connections, then
    ``READ_UNLOADED`` seconds at one connection (no queueing: close to the server's own time
    per request), then ``duration`` seconds paced at ``READ_PACED_RATE`` (open loop)."""
    run.prepare_reads()
    server = run.recloop
    _read_load(run, endpoint, READ_CONNECTIONS, READ_WARMUP)
    exposed = asyncio.run(exposures(server.port, READ_EXPERIMENT))
    cpu = server.cpu_seconds()
    loaded = _read_load(run, endpoint, READ_CONNECTIONS, run.options.duration)
    cpu = server.cpu_seconds() - cpu
    exposed = asyncio.run(exposures(server.port, READ_EXPERIMENT)) - exposed
    alone = _read_load(run, endpoint, 1, READ_UNLOADED)
    for result in (loaded, alone):
        if result.failed_requests:
            run.note(f"{endpoint.name}: {result.failed_requests} requests failed.")
    if loaded.requests > _plan_length(run.options.duration):
        run.note(f"{endpoint.name}: the load replayed its request plan; unknown users repeated.")
    measured = {
        "requests_per_second": loaded.requests_per_second,
        "p50": loaded.latency.p50,
        "p95": loaded.latency.p95,
        "p99": loaded.latency.p99,
        "alone_p50": alone.latency.p50,
        "alone_p95": alone.latency.p95,
        "cpu": _micros_per(cpu, loaded.requests),
    }
    if endpoint.exposes:
        measured["first_exposures"] = 100.0 * exposed / loaded.requests if loaded.requests else 0.0
    cpu = server.cpu_seconds()
    paced = _paced_read_load(run, endpoint, run.options.duration)
    cpu = server.cpu_seconds() - cpu
    answered = paced.requests - paced.unfinished
    if paced.failed_requests or paced.unfinished:
        run.note(
            f"{endpoint.name}, paced: {paced.failed_requests} requests failed, "
            f"{paced.unfinished} unanswered at the end (counted with the time they had waited)."
        )
    if paced.lag.p95 > 0.5:
        run.note(
            f"{endpoint.name}, paced: requests went out late (P95 {paced.lag.p95:.2f} ms after "
            "they were due: the generator's pacing, or no free connection); it counts."
        )
    measured |= {
        "paced_p50": paced.latency.p50,
        "paced_p95": paced.latency.p95,
        "paced_p99": paced.latency.p99,
        "paced_rate": paced.answered_per_second,
        "paced_cpu": _micros_per(cpu, answered),
    }
    if endpoint.paced_ceiling:
        cpu = run.bare.cpu_seconds()
        ceiling = _paced_read_load(run, endpoint, run.options.duration, run.bare)
        cpu = run.bare.cpu_seconds() - cpu
        measured |= {
            "paced_bare_p50": ceiling.latency.p50,
            "paced_bare_p95": ceiling.latency.p95,
            "paced_bare_cpu": _micros_per(cpu, ceiling.requests - ceiling.unfinished),
        }
    return measured


def _paced_read_load(
    run: Run, endpoint: ReadEndpoint, seconds: float, server: Server | None = None
) -> PacedResult:
    """``seconds`` of requests to ``endpoint`` due at ``READ_PACED_RATE``, whatever the
    answers (see :class:`PacedLoad`), with unknown users no earlier load asked about; to
    ``server`` if given (the bare ceiling, which answers 202), else to recloop."""
    prefix = run.prefix(f"{endpoint.name}-paced")
    users = run.readers.user_ids(prefix, math.ceil(READ_PACED_RATE * seconds))
    bodies = run.rank_bodies() if endpoint.candidates else ()
    plan = ReadPlan(endpoint.method, tuple(endpoint.path(u) for u in users), bodies)
    target = server or run.recloop
    status = 202 if target is run.bare else 200
    spec = PacedLoad(
        target.port, plan, READ_PACED_RATE, seconds, READ_PACED_CONNECTIONS, status=status
    )
    timeout = seconds + spec.grace + 60
    return run_in_process(paced_load, spec, f"{endpoint.name}-paced-load", timeout=timeout)


def _read_load(run: Run, endpoint: ReadEndpoint, connections: int, seconds: float) -> SingleResult:
    """``seconds`` of requests to ``endpoint`` from ``connections`` connections, with unknown
    users no earlier load asked about."""
    prefix = run.prefix(f"{endpoint.name}-anon")
    users = run.readers.user_ids(prefix, _plan_length(seconds))
    bodies = run.rank_bodies() if endpoint.candidates else ()
    plan = ReadPlan(endpoint.method, tuple(endpoint.path(u) for u in users), bodies)
    port = run.recloop.port
    if run.use_wrk:
        workdir = run.workdir / "plans" / prefix
        threads = min(2, connections)
        return run_wrk_replay(WrkReplay(port, plan, workdir, connections, threads, seconds))
    spec = ReplayLoad(port, plan, connections, duration=seconds)
    return run_in_process(replay_load, spec, f"{endpoint.name}-load", timeout=seconds + 60)


def _plan_length(seconds: float) -> int:
    return math.ceil(READ_PLAN_RATE * seconds)


def _read_benchmark(
    endpoint: ReadEndpoint,
    title: str,
    p95: Target | None,
    *,
    remark: str = "",
    cpu: Target | None = None,
    paced: Target | None = None,
) -> Benchmark:
    """``p95`` is held against the P95 under load (``remark`` says why when there is none);
    ``cpu`` against the server's CPU per request; ``paced`` against the P95 of the paced
    (open-loop) load."""

    def run_once(run: Run) -> dict[str, float]:
        return _read_path(run, endpoint)

    n = READ_CONNECTIONS
    metrics: tuple[Metric, ...] = (
        Metric("requests_per_second", f"req/s, {n} connections"),
        Metric("p50", f"latency P50 at {n} connections, ms"),
        Metric("p95", f"latency P95 at {n} connections, ms", p95, remark),
        Metric("p99", f"latency P99 at {n} connections, ms"),
        Metric("alone_p50", "latency P50 at 1 connection, ms"),
        Metric("alone_p95", "latency P95 at 1 connection, ms"),
        Metric("cpu", "server CPU per request, µs", cpu),
    )
    if endpoint.exposes:
        metrics += (
            Metric("first_exposures", f"first exposures, % of requests at {n} connections"),
        )
    rate = f"paced {READ_PACED_RATE:,.0f} req/s"
    metrics += (
        Metric("paced_p50", f"latency P50 at {rate}, from when due, ms"),
        Metric("paced_p95", f"latency P95 at {rate}, from when due, ms", paced),
        Metric("paced_p99", f"latency P99 at {rate}, from when due, ms"),
        Metric("paced_rate", f"answered req/s at {rate}"),
        Metric("paced_cpu", f"server CPU per request at {rate}, µs"),
    )
    if endpoint.paced_ceiling:
        metrics += (
            Metric("paced_bare_p50", f"ceiling latency P50 at {rate}, ms"),
            Metric("paced_bare_p95", f"ceiling latency P95 at {rate}, ms"),
            Metric("paced_bare_cpu", f"ceiling server CPU per request at {rate}, µs"),
        )
    return Benchmark(endpoint.name, title, metrics, run_once)


def _assignment_path(user_id: str) -> str:
    return assignment_path(READ_EXPERIMENT, user_id)


WEIGHTS = _read_benchmark(
    ReadEndpoint("weights", "GET", weights_path, exposes=False, paced_ceiling=True),
    "GET weights",
    at_most(10),
    cpu=at_most(80),
    paced=at_most(2),
)
STRATEGY = _read_benchmark(
    ReadEndpoint("strategy", "GET", strategy_path),
    "GET strategy",
    at_most(20),
    cpu=at_most(100),
    paced=at_most(3),
)
RANK = _read_benchmark(
    ReadEndpoint("rank", "POST", rank_path, candidates=True),
    "POST rank, 100 candidates",
    None,
    remark="none in the spec",
    cpu=at_most(600),
    paced=at_most(5),
)
ASSIGNMENT = _read_benchmark(
    ReadEndpoint("assignment", "GET", _assignment_path),
    "GET assignment",
    at_most(5),
    cpu=at_most(80),
    paced=at_most(2),
)


BENCHMARKS: Final = {
    b.name: b
    for b in (
        SINGLE_EVENT,
        BATCHED_INGEST,
        GUARD,
        EXPLICIT_APPLIED,
        FEEDBACK_VISIBLE,
        WEIGHTS,
        STRATEGY,
        RANK,
        ASSIGNMENT,
    )
}


# -- the run --------------------------------------------------------------------------


def run_suite(options: Options, workload: Workload | None = None) -> SuiteResult:
    workload = workload or Workload()
    selected = [BENCHMARKS[name] for name in options.only] or list(BENCHMARKS.values())
    WORKDIR.mkdir(exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="run-", dir=WORKDIR) as tmp,
        recloop_server(Path(tmp) / "recloop", options.server_env) as recloop,
        bare_server(Path(tmp) / "bare") as bare,
        contextlib.ExitStack() as on_demand,
    ):
        _progress(f"recloop on port {recloop.port}, ceiling on port {bare.port}, in {tmp}")
        asyncio.run(register_items(recloop.port, workload))
        run = Run(recloop, bare, options, workload, Path(tmp), servers=on_demand)
        results = tuple(_repeat(run, benchmark) for benchmark in selected)
    return SuiteResult(
        options=options,
        results=results,
        notes=tuple(run.notes),
        load_generator="wrk" if run.use_wrk else "the Python load generator",
    )


def _repeat(run: Run, benchmark: Benchmark) -> BenchmarkResult:
    values: dict[str, list[float]] = {m.key: [] for m in benchmark.metrics}
    for rep in range(1, run.options.repeat + 1):
        asyncio.run(wait_idle(run.recloop.port))
        run.recloop.check_alive()
        measured = benchmark.run_once(run)
        for key, series in values.items():
            series.append(measured[key])
        shown = ", ".join(f"{m.label} {measured[m.key]:,.2f}" for m in benchmark.metrics[:3])
        _progress(f"{benchmark.name} {rep}/{run.options.repeat}: {shown}")
    return BenchmarkResult(
        benchmark, tuple(Measured(m, tuple(values[m.key])) for m in benchmark.metrics)
    )


def iter_measured(suite: SuiteResult) -> Iterator[tuple[Benchmark, Measured]]:
    for result in suite.results:
        for measured in result.measured:
            yield result.benchmark, measured
