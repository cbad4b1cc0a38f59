"""The servers under test, each a subprocess listening on a free port of 127.0.0.1.

- ``recloop serve`` in a fresh working directory, so that its SQLite file
  (``./data/recloop.db``) starts empty;
- the bare ASGI ceiling (:mod:`benchmarks.bare`).

Also the few control calls the suite makes to the recloop server between
measurements: register the items, give the read benchmarks' users their
history, start their experiment, count its exposures, wait until everything
is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from benchmarks.client import HOST, Connection, Response
from benchmarks.harness import ROOT, process_cpu, stop_process
from benchmarks.workload import (
    EXPERIMENTS,
    FEEDBACK,
    HEALTH,
    ITEMS,
    Workload,
    assignment_path,
    experiment_path,
    weights_path,
)

RECLOOP_ENV: Final = {
    "RECLOOP_FEEDBACK__IMPLICIT_FLUSH_SECONDS": "1",
    "RECLOOP_RATE_LIMITS__PER_KEY": "1000000000/minute",
}
"""Implicit events are applied within a second (default: 5 minutes), so a run can drain.

The per-client limit (default 100,000 events a minute) is raised, not turned off: every
load comes from 127.0.0.1, one client standing in for many, and the limiter's cost stays
in the measurement. The per-user limits keep their defaults.
"""

GUARD_OFF: Final = {"RECLOOP_SPAM__ENABLED": "false", "RECLOOP_RATE_LIMITS__ENABLED": "false"}
"""The guard's two costly parts off (spam detection and rate limits): the baseline of its cost."""


class ServerError(RuntimeError):
    """A server did not start, died, or did not settle in time."""


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise ServerError(
                f"{self.name} exited with status {self.process.returncode}:\n{self.log_tail()}"
            )

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server has used so far; NaN where /proc is missing."""
        return process_cpu(self.process.pid)[0]

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def recloop_server(
    workdir: Path, env: Mapping[str, str], name: str = "recloop"
) -> Iterator[Server]:
    """``recloop serve`` with ``workdir`` as its working directory and ``env`` added; ``name``
    tells it from others in errors and names its log."""
    command = [str(Path(sys.executable).with_name("recloop")), "serve"]
    with _serve(name, command, workdir, {**RECLOOP_ENV, **env}) as server:
        yield server


@contextlib.contextmanager
def bare_server(workdir: Path) -> Iterator[Server]:
    with _serve("bare", [sys.executable, "-m", "benchmarks.bare"], workdir, {}) as server:
        yield server


@contextlib.contextmanager
def _serve(
    name: str, command: list[str], workdir: Path, env: Mapping[str, str], timeout: float = 60.0
) -> Iterator[Server]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / f"{name}.log"
    python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=workdir,
            env={**os.environ, "PYTHONPATH": python_path, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(name, port, process, log)
    try:
        _wait_listening(server, timeout)
        yield server
    finally:
        _stop(server)


def _wait_listening(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server.check_alive()
        with contextlib.suppress(OSError), socket.create_connection((HOST, server.port), 1.0):
            return  # uvicorn listens only once the app's startup is complete
        time.sleep(0.05)
    raise ServerError(f"{server.name} did not listen within {timeout:.0f}s:\n{server.log_tail()}")


def _stop(server: Server, timeout: float = 60.0) -> None:
    """SIGTERM (a graceful shutdown), SIGKILL if it takes longer than ``timeout``."""
    stop_process(server.process, timeout)


# -- control calls to the recloop server ------------------------------------------


async def register_items(port: int, workload: Workload) -> None:
    """Store every item of ``workload``, so that each event moves a vector."""
    async with Connection(port) as conn:
        for body in workload.item_batches():
            _expect(await conn.post_json(ITEMS, body), 200, f"POST {ITEMS}")


async def post_feedback(port: int, bodies: Iterable[Mapping[str, Any]]) -> int:
    """Post ``POST /feedback`` bodies one after the other; returns how many events were new.

    Raises ServerError if any event is rejected or over its rate limit.
    """
    accepted = 0
    async with Connection(port) as conn:
        for body in bodies:
            answer = _expect(await conn.post_json(FEEDBACK, body), 202, f"POST {FEEDBACK}").json()
            refused = {k: answer.get(k, 0) for k in ("rejected", "rate_limited") if answer.get(k)}
            if refused:
                results = [r for r in answer.get("results", ()) if r["status"] != "accepted"]
                raise ServerError(f"POST {FEEDBACK} refused events {refused}: {results[:3]}")
            accepted += answer["accepted"]
    return accepted


async def segments(port: int, user_ids: Iterable[str]) -> dict[str, str]:
    """Each user's segment, as ``GET /users/{u}/weights`` tells it (which records nothing)."""
    found: dict[str, str] = {}
    async with Connection(port) as conn:
        for user_id in user_ids:
            path = weights_path(user_id)
            answer = _expect(await conn.request("GET", path), 200, f"GET {path}").json()
            found[user_id] = answer["segment"]
    return found


async def start_experiment(port: int, definition: Mapping[str, Any]) -> None:
    """Create the experiment ``definition`` and start it."""
    start = f"{experiment_path(definition['experiment_id'])}/start"
    async with Connection(port) as conn:
        _expect(await conn.post_json(EXPERIMENTS, definition), 201, f"POST {EXPERIMENTS}")
        _expect(await conn.request("POST", start), 200, f"POST {start}")


async def expose(port: int, experiment_id: str, user_ids: Iterable[str]) -> None:
    """Ask for each user's variant, which records their first exposure."""
    async with Connection(port) as conn:
        for user_id in user_ids:
            path = assignment_path(experiment_id, user_id)
            _expect(await conn.request("GET", path), 200, f"GET {path}")


async def exposures(port: int, experiment_id: str) -> int:
    """How many users the experiment has exposed so far (from its live results)."""
    path = f"{experiment_path(experiment_id)}/results"
    async with Connection(port) as conn:
        observed = _expect(await conn.request("GET", path), 200, f"GET {path}").json()
    return int(sum(observed["srm"]["observed"].values()))


def _expect(response: Response, status: int, what: str) -> Response:
    if response.status != status:
        raise ServerError(f"{what} answered {response.status}: {response.body!r}")
    return response


async def wait_idle(port: int, within: float = 300.0, poll_interval: float = 0.05) -> float:
    """Wait until every logged event is applied and nothing is buffered; returns the seconds."""
    start = time.monotonic()
    detail: dict[str, int] = {}
    async with Connection(port) as conn:
        while time.monotonic() - start < within:
            detail = await _health_detail(conn)
            if detail["lag"] == 0 and detail["in_flight"] == 0:
                return time.monotonic() - start
            await asyncio.sleep(poll_interval)
    raise ServerError(f"recloop still had events to apply after {within:.0f}s: {detail}")


async def logged_events(port: int) -> int:
    """The event log's last offset: how many events were ever accepted."""
    async with Connection(port) as conn:
        return int((await _health_detail(conn))["last_offset"])


async def _health_detail(conn: Connection) -> dict[str, int]:
    response = await conn.request("GET", HEALTH)
    if response.status != 200:
        raise ServerError(f"GET {HEALTH} answered {response.status}: {response.body!r}")
    components = response.json()["components"]
    return {**components["event_log"]["detail"], **components["workers"]["detail"]}
