"""The Python load generators and probes.

Each public function here (but :func:`probe_visibility`, which runs one) is a *job* for
:class:`benchmarks.processes.LoadProcess`: ``job(spec, stop) -> result``, run in a
process of its own. Every loop is
bounded by a count and a deadline, and ends early when ``stop`` is set.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from typing import Any, TypeVar

from benchmarks.client import Connection, ProtocolError
from benchmarks.processes import run_in_process
from benchmarks.servers import wait_idle
from benchmarks.stats import percentile
from benchmarks.workload import (
    EXPLICIT_MIX,
    FEEDBACK,
    MIXED,
    EventFactory,
    Mix,
    ReadPlan,
    Workload,
    preferences_path,
)

T = TypeVar("T")


def _run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed (it is with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


@dataclass(frozen=True, slots=True)
class Latencies:
    """Request latencies in milliseconds."""

    p50: float
    p95: float
    p99: float

    @classmethod
    def of(cls, seconds: list[float]) -> Latencies:
        ms = [s * 1000.0 for s in seconds]
        return cls(percentile(ms, 50), percentile(ms, 95), percentile(ms, 99))


# -- batches -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchLoad:
    """Batches of events posted by ``clients`` concurrent keep-alive connections.

    Without a ``rate`` each client sends its next batch as soon as the last
    one is answered (closed loop); with one, batches are sent on a fixed
    schedule of ``rate`` events/s shared by the clients, which fall behind it
    (and report so) only if the server cannot keep up. The events go to the
    workload's users, or to users of their own under ``user_prefix`` (see
    :class:`EventFactory`).
    """

    port: int
    workload: Workload
    id_prefix: str
    clients: int = 4
    batch_size: int = 1_000
    duration: float = 10.0
    max_events: int | None = None
    rate: float | None = None
    mix: Mix = MIXED
    seed: int = 0
    user_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class BatchResult:
    requests: int
    accepted: int
    duplicates: int
    rejected: int
    """Invalid events."""
    rate_limited: int
    """Events over a rate limit (of the client or of their user)."""
    blocked: int
    """Events of users the guard has blocked."""
    failed_requests: int
    """Requests answered with another status than 202."""
    seconds: float
    """From the first request sent to the last response read."""
    latency: Latencies

    @property
    def events_per_second(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else 0.0

    @property
    def refused(self) -> int:
        """Valid events the guard turned away: rate-limited or blocked."""
        return self.rate_limited + self.blocked


def batch_load(spec: BatchLoad, stop: Event) -> BatchResult:
    return _run(_batch_load(spec, stop))


async def _batch_load(spec: BatchLoad, stop: Event) -> BatchResult:
    factory = EventFactory(spec.workload, spec.id_prefix, spec.mix, spec.seed, spec.user_prefix)
    budget = spec.max_events if spec.max_events is not None else 2**62
    interval = spec.batch_size / spec.rate if spec.rate else 0.0
    slots = itertools.count()
    counted = ("accepted", "duplicates", "rejected", "rate_limited", "blocked")
    totals = dict.fromkeys(("requests", "failed", *counted), 0)
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + spec.duration

    def next_send() -> float | None:
        """When the next batch is due, or None when the load is over."""
        due = start + next(slots) * interval
        if stop.is_set() or factory.count >= budget or max(due, time.perf_counter()) >= deadline:
            return None
        return due

    async def client() -> None:
        async with Connection(spec.port) as conn:
            while (due := next_send()) is not None:
                body = factory.body(min(spec.batch_size, budget - factory.count))
                if (delay := due - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                sent = time.perf_counter()
                response = await conn.request("POST", FEEDBACK, body)
                latencies.append(time.perf_counter() - sent)
                totals["requests"] += 1
                if response.status != 202:
                    totals["failed"] += 1
                    continue
                answer = response.json()
                for key in counted:
                    totals[key] += answer[key]

    await asyncio.gather(*(client() for _ in range(spec.clients)))
    return BatchResult(
        requests=totals["requests"],
        accepted=totals["accepted"],
        duplicates=totals["duplicates"],
        rejected=totals["rejected"],
        rate_limited=totals["rate_limited"],
        blocked=totals["blocked"],
        failed_requests=totals["failed"],
        seconds=time.perf_counter() - start,
        latency=Latencies.of(latencies),
    )


# -- explicit events until applied ------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppliedLoad:
    """``events`` explicit events posted in batches, then waited for until all are applied."""

    port: int
    workload: Workload
    id_prefix: str
    events: int
    clients: int = 4
    batch_size: int = 1_000
    timeout: float = 300.0
    poll_interval: float = 0.02
    """``GET /health`` reads SQLite and costs the server about a millisecond of CPU."""

    def batches(self) -> BatchLoad:
        """The batched load that posts the events."""
        return BatchLoad(
            port=self.port,
            workload=self.workload,
            id_prefix=self.id_prefix,
            clients=self.clients,
            batch_size=self.batch_size,
            duration=self.timeout,
            max_events=self.events,
            mix=EXPLICIT_MIX,
        )


@dataclass(frozen=True, slots=True)
class AppliedResult:
    ingest: BatchResult
    seconds: float
    """From the first event posted to every logged event applied."""

    @property
    def events_per_second(self) -> float:
        return self.ingest.accepted / self.seconds if self.seconds > 0 else 0.0


def applied_load(spec: AppliedLoad, stop: Event) -> AppliedResult:
    return _run(_applied_load(spec, stop))


async def _applied_load(spec: AppliedLoad, stop: Event) -> AppliedResult:
    start = time.perf_counter()
    ingest = await _batch_load(spec.batches(), stop)
    await wait_idle(spec.port, spec.timeout, spec.poll_interval)
    return AppliedResult(ingest, time.perf_counter() - start)


# -- single events ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SingleLoad:
    """One event per request from ``connections`` keep-alive connections (closed loop)."""

    port: int
    path: str
    workload: Workload
    id_prefix: str
    connections: int = 32
    duration: float = 10.0


@dataclass(frozen=True, slots=True)
class SingleResult:
    requests: int
    failed_requests: int
    seconds: float
    latency: Latencies

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def single_load(spec: SingleLoad, stop: Event) -> SingleResult:
    return _run(_single_load(spec, stop))


async def _single_load(spec: SingleLoad, stop: Event) -> SingleResult:
    factory = EventFactory(spec.workload, spec.id_prefix)
    latencies: list[float] = []
    failed = 0
    start = time.perf_counter()
    deadline = start + spec.duration

    async def client() -> None:
        nonlocal failed
        async with Connection(spec.port) as conn:
            while time.perf_counter() < deadline and not stop.is_set():
                (event,) = factory.batch(1)
                sent = time.perf_counter()
                response = await conn.post_json(spec.path, event)
                latencies.append(time.perf_counter() - sent)
                failed += response.status != 202

    await asyncio.gather(*(client() for _ in range(spec.connections)))
    return SingleResult(
        len(latencies), failed, time.perf_counter() - start, Latencies.of(latencies)
    )


# -- read-path request plans ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayLoad:
    """A :class:`ReadPlan` sent in order by ``connections`` keep-alive connections (closed loop);
    a request is failed unless answered 200."""

    port: int
    plan: ReadPlan
    connections: int = 32
    duration: float = 10.0


def replay_load(spec: ReplayLoad, stop: Event) -> SingleResult:
    return _run(_replay_load(spec, stop))


async def _replay_load(spec: ReplayLoad, stop: Event) -> SingleResult:
    plan = spec.plan
    sent = itertools.count()
    latencies: list[float] = []
    failed = 0
    start = time.perf_counter()
    deadline = start + spec.duration

    async def client() -> None:
        nonlocal failed
        async with Connection(spec.port) as conn:
            while time.perf_counter() < deadline and not stop.is_set():
                i = next(sent)
                body = plan.bodies[i % len(plan.bodies)] if plan.bodies else b""
                begin = time.perf_counter()
                response = await conn.request(plan.method, plan.paths[i % len(plan.paths)], body)
                latencies.append(time.perf_counter() - begin)
                failed += response.status != 200

    await asyncio.gather(*(client() for _ in range(spec.connections)))
    return SingleResult(
        len(latencies), failed, time.perf_counter() - start, Latencies.of(latencies)
    )


# -- read-path request plans, paced ------------------------------------------------


@dataclass(frozen=True, slots=True)
class PacedLoad:
    """A :class:`ReadPlan` sent open-loop at ``rate`` requests/s for ``duration`` s.

    Request ``i`` is due at ``start + i / rate`` whatever happened to the ones
    before it, and goes out on the first free keep-alive connection of a pool
    of ``connections``. Its latency runs from when it was *due*, not from when
    it was sent: time spent waiting for a free connection, or behind a slow
    answer, counts (no coordinated omission). Requests still unanswered
    ``grace`` s after the last one was due count with the time they had waited
    (a lower bound) and as unfinished.
    """

    port: int
    plan: ReadPlan
    rate: float = 2_000.0
    duration: float = 10.0
    connections: int = 64
    grace: float = 5.0
    status: int = 200
    """The status of an answered request (the bare ceiling answers 202)."""


@dataclass(frozen=True, slots=True)
class PacedResult:
    requests: int
    """Requests due (sent or not)."""
    failed_requests: int
    """Answered with another status than ``status``."""
    unfinished: int
    """Not answered within ``grace`` after the last was due."""
    seconds: float
    """From the first request due to the last answer."""
    latency: Latencies
    """From when each request was due to its answer."""
    lag: Latencies
    """From when each request was due to when it was sent: the generator's own pacing error
    (its thread wake-ups) plus any wait for a free connection."""

    @property
    def answered_per_second(self) -> float:
        answered = self.requests - self.unfinished
        return answered / self.seconds if self.seconds > 0 else 0.0


def paced_load(spec: PacedLoad, stop: Event) -> PacedResult:
    return _run(_paced_load(spec, stop))


async def _paced_load(spec: PacedLoad, stop: Event) -> PacedResult:
    # A thread keeps the schedule: time.sleep wakes within tens of microseconds, the event
    # loop's timers only to the millisecond. It hands each due request to the loop, where
    # the connections take them in turn. A short switch interval keeps the thread from
    # waiting for the GIL behind the loop.
    sys.setswitchinterval(0.0002)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    total = max(1, round(spec.rate * spec.duration))
    start = time.perf_counter() + 0.1
    due_of: dict[int, float] = {}
    latencies: list[float] = []
    lags: list[float] = []
    failed = 0
    done = asyncio.Event()

    def schedule() -> None:
        for i in range(total):
            due = start + i / spec.rate
            if (delay := due - time.perf_counter()) > 0:
                time.sleep(delay)
            if i % 256 == 0 and stop.is_set():
                break
            loop.call_soon_threadsafe(queue.put_nowait, (i, due))
        loop.call_soon_threadsafe(done.set)

    async def connection() -> None:
        nonlocal failed
        plan = spec.plan
        async with Connection(spec.port) as conn:
            while (item := await queue.get()) is not None:
                i, due = item
                due_of[i] = due
                lags.append(time.perf_counter() - due)
                body = plan.bodies[i % len(plan.bodies)] if plan.bodies else b""
                try:
                    response = await conn.request(
                        plan.method, plan.paths[i % len(plan.paths)], body
                    )
                    answered = response.status == spec.status
                except (OSError, ProtocolError, TimeoutError):
                    answered = False  # the connection is dropped; the next request reopens it
                latencies.append(time.perf_counter() - due)
                del due_of[i]
                failed += not answered

    workers = [asyncio.create_task(connection()) for _ in range(spec.connections)]
    ticker = threading.Thread(target=schedule, name="pacer", daemon=True)
    ticker.start()
    await done.wait()
    for _ in workers:
        queue.put_nowait(None)
    _, pending = await asyncio.wait(workers, timeout=spec.grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    end = time.perf_counter()
    waiting = [*due_of.values()]  # sent, never answered
    while not queue.empty():
        if (item := queue.get_nowait()) is not None:
            waiting.append(item[1])  # never sent
    latencies += [end - due for due in waiting]
    ticker.join()
    return PacedResult(
        requests=len(latencies),
        failed_requests=failed,
        unfinished=len(waiting),
        seconds=end - start,
        latency=Latencies.of(latencies),
        lag=Latencies.of(lags),
    )


# -- feedback to visible -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VisibilityProbe:
    """``samples`` times: a ``like`` of a fresh user, then poll its preferences until applied."""

    port: int
    workload: Workload
    user_prefix: str
    samples: int
    gap: float = 0.02
    """Pause between two samples, seconds."""
    poll_interval: float = 0.001
    timeout: float = 5.0
    """A sample not visible after this long counts as timed out."""


@dataclass(frozen=True, slots=True)
class VisibilityResult:
    latencies_ms: tuple[float, ...]
    timeouts: int


def visibility_probe(spec: VisibilityProbe, stop: Event) -> VisibilityResult:
    return _run(_visibility_probe(spec, stop))


def probe_visibility(
    spec: VisibilityProbe, note: Callable[[str], None], label: str = "feedback→visible"
) -> VisibilityResult:
    """The orchestrator's side: :func:`visibility_probe` in a process of its own; samples
    that timed out are left out of the percentiles, and ``note`` says how many."""
    timeout = spec.samples * (spec.timeout + spec.gap) + 60
    result = run_in_process(visibility_probe, spec, "visibility-probe", timeout)
    if result.timeouts:
        note(
            f"{label}: {result.timeouts} samples not visible within {spec.timeout:.0f}s "
            "(left out of the percentiles)."
        )
    return result


async def _visibility_probe(spec: VisibilityProbe, stop: Event) -> VisibilityResult:
    latencies: list[float] = []
    timeouts = 0
    async with Connection(spec.port) as conn:
        for n in range(spec.samples):
            if stop.is_set():
                break
            user_id = f"{spec.user_prefix}-{n}"
            seconds = await _time_to_visible(conn, spec, user_id, spec.workload.item_id(n))
            if seconds is None:
                timeouts += 1
            else:
                latencies.append(seconds * 1000.0)
            await asyncio.sleep(spec.gap)
    return VisibilityResult(tuple(latencies), timeouts)


async def _time_to_visible(
    conn: Connection, spec: VisibilityProbe, user_id: str, item_id: str
) -> float | None:
    """Seconds from posting a like until the user's preferences show it, or None."""
    event = {"event_id": f"{user_id}-like", "user_id": user_id, "item_id": item_id, "type": "like"}
    path = preferences_path(user_id)
    start = time.perf_counter()
    response = await conn.post_json(FEEDBACK, event)
    if response.status != 202:
        raise RuntimeError(f"probe event refused ({response.status}): {response.body!r}")
    deadline = start + spec.timeout
    while time.perf_counter() < deadline:
        response = await conn.request("GET", path)
        if response.status == 200 and response.json()["events_applied"] >= 1:
            return time.perf_counter() - start
        await asyncio.sleep(spec.poll_interval)
    return None
