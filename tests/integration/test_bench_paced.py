"""The paced (open-loop) read load of the benchmarks: every due request is counted, and a
request's latency runs from when it was due, so a slow server's backlog shows."""

from __future__ import annotations

import multiprocessing
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from benchmarks.client import HOST
from benchmarks.loadgen import PacedLoad, paced_load
from benchmarks.workload import ReadPlan

from tests.conftest import free_port

SLOW_APP = """
import asyncio

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await asyncio.sleep(0.05)  # one request at a time per connection: 20 a second at most
    headers = [(b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
"""


def _serve(args: list[str], cwd: Path) -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen([sys.executable, *args, "--port", str(port)], cwd=cwd)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the server did not start")
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def bare_port() -> Iterator[int]:
    yield from _serve(["-m", "benchmarks.bare"], Path(__file__).parents[2])


@pytest.fixture
def slow_port(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "slow.py").write_text(SLOW_APP)
    args = ["-m", "uvicorn", "slow:app", "--host", HOST, "--log-level", "warning"]
    yield from _serve(args, tmp_path)


def test_every_due_request_is_sent_and_counted(bare_port: int) -> None:
    plan = ReadPlan("GET", ("/a", "/b"))
    spec = PacedLoad(bare_port, plan, rate=400.0, duration=1.0, connections=8, status=202)
    result = paced_load(spec, multiprocessing.Event())
    assert result.requests == 400
    assert result.failed_requests == 0
    assert result.unfinished == 0
    assert result.latency.p50 > 0 and result.lag.p50 >= 0


def test_latency_runs_from_when_a_request_was_due(slow_port: int) -> None:
    # 40 requests due within 0.4 s, one connection, 50 ms each: the last is answered about
    # 2 s after the first was due, 1.6 s after it was due itself. A closed loop measuring
    # from the send would see 50 ms for every one.
    plan = ReadPlan("GET", ("/",))
    spec = PacedLoad(slow_port, plan, rate=100.0, duration=0.4, connections=1, grace=30.0)
    result = paced_load(spec, multiprocessing.Event())
    assert result.requests == 40 and result.failed_requests == 0 and result.unfinished == 0
    assert result.latency.p99 > 1_000.0  # ms: the backlog counts
    assert result.lag.p99 > 1_000.0  # the requests waited for the connection


def test_requests_unanswered_at_the_end_count_as_unfinished(slow_port: int) -> None:
    plan = ReadPlan("GET", ("/",))
    spec = PacedLoad(slow_port, plan, rate=100.0, duration=0.4, connections=1, grace=0.2)
    result = paced_load(spec, multiprocessing.Event())
    assert result.requests == 40
    assert result.unfinished > 20  # at most about 12 could be answered in 0.6 s
