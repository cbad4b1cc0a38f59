"""Loads through ``wrk`` (the Debian package): single events driven by ``single_event.lua``,
read-path request plans replayed by ``replay.lua``."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from benchmarks.client import HOST
from benchmarks.loadgen import Latencies, SingleResult
from benchmarks.workload import ReadPlan, Workload

SCRIPT: Final = Path(__file__).with_name("single_event.lua")
REPLAY_SCRIPT: Final = Path(__file__).with_name("replay.lua")


class WrkError(RuntimeError):
    """wrk failed or printed no result line."""


@dataclass(frozen=True, slots=True)
class WrkLoad:
    port: int
    path: str
    workload: Workload
    id_prefix: str
    connections: int = 32
    threads: int = 2
    duration: float = 10.0


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    """E.g. ``wrk debian/4.1.0-3+b2 [epoll]``."""
    wrk = wrk_path()
    if wrk is None:
        return "not installed"
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0].split(" Copyright")[0] if out else "unknown version"


@dataclass(frozen=True, slots=True)
class WrkReplay:
    """A :class:`ReadPlan` replayed by ``connections`` connections; its files go in ``workdir``."""

    port: int
    plan: ReadPlan
    workdir: Path
    connections: int = 32
    threads: int = 2
    duration: float = 10.0


def run_wrk(load: WrkLoad) -> SingleResult:
    args = [load.id_prefix, str(load.workload.users), str(load.workload.items)]
    return _run(SCRIPT, load.port, load.path, args, load.connections, load.threads, load.duration)


def run_wrk_replay(load: WrkReplay) -> SingleResult:
    paths, bodies = load.plan.write(load.workdir)
    args = [load.plan.method, str(paths), str(load.threads), *([str(bodies)] if bodies else [])]
    return _run(REPLAY_SCRIPT, load.port, "/", args, load.connections, load.threads, load.duration)


def _run(
    script: Path,
    port: int,
    path: str,
    args: list[str],
    connections: int,
    threads: int,
    duration: float,
) -> SingleResult:
    wrk = wrk_path()
    if wrk is None:
        raise WrkError("wrk is not installed")
    command = [
        wrk,
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration))}s",
        "--timeout=10s",
        f"--script={script}",
        f"http://{HOST}:{port}{path}",
        "--",
        *args,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise WrkError(f"wrk exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return parse_result(line)


def parse_result(line: str) -> SingleResult:
    """Read the ``RESULT key=value ...`` line of the Lua script's ``done()``.

    >>> r = parse_result("RESULT requests=300 duration_us=2000000 errors=0 status_errors=1 "
    ...                  "p50_us=1500 p95_us=4000 p99_us=9000")
    >>> r.requests_per_second, r.failed_requests, r.latency.p95
    (150.0, 1, 4.0)
    """
    fields = dict(item.split("=", 1) for item in line.split()[1:])
    n = {key: int(value) for key, value in fields.items()}
    return SingleResult(
        requests=n["requests"],
        failed_requests=n["errors"] + n["status_errors"],
        seconds=n["duration_us"] / 1e6,
        latency=Latencies(n["p50_us"] / 1e3, n["p95_us"] / 1e3, n["p99_us"] / 1e3),
    )
