"""Scale: a database of many users and items, then ``recloop serve`` restarted on it.

Builds, in process and without HTTP, a SQLite database with ``--items`` items and
``--users`` users who each have learnt state (one ``like`` per user, through the
container's group commit, then a checkpoint), plus ``--tail`` events logged after
the last checkpoint (a crash's worth of log for the restart to replay). Then it
starts ``recloop serve`` on that database and reports:

- restart to serving: from spawning the process to the first answered ``GET
  /users/{id}/weights`` of a stored user, beside the same restart on an empty
  database (the baseline: interpreter, imports, migrations, the app);
- the server's resident memory once serving, after reads of ``--reads`` users'
  preferences (the read cache fills), and after one event for each of ``--writers``
  distinct users is applied (the state table fills: by default as many users as
  ``cache.max_users`` holds).

    uv run --frozen python -m benchmarks.scale [--users 1000000] [--items 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.client import Connection
from benchmarks.servers import RECLOOP_ENV, ROOT, free_port, wait_idle
from benchmarks.workload import API, FEEDBACK
from recloop.config import Settings
from recloop.container import build_container
from recloop.core.events import Event

BATCH = 5_000


def _db_url(workdir: Path) -> str:
    return f"sqlite+aiosqlite:///{workdir / 'data' / 'recloop.db'}"


async def build(workdir: Path, users: int, items: int, tail: int) -> dict[str, float]:
    """The database: items, users' state checkpointed, and ``tail`` events after it."""
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    settings = Settings(storage={"url": _db_url(workdir)}, spam={"enabled": False})
    container = build_container(settings)
    await container.start()
    started = time.perf_counter()
    for start in range(0, items, BATCH):
        await container.items.put_many(
            [
                {
                    "item_id": f"i{i}",
                    "attributes": {"g": f"g{i % 24}", "b": f"b{i % 97}", "sku": f"i{i}"},
                }
                for i in range(start, min(start + BATCH, items))
            ]
        )
    items_seconds = time.perf_counter() - started
    rng = random.Random(7)
    now = time.time()
    started = time.perf_counter()
    for start in range(0, users, BATCH):
        await container.committer.submit(
            [
                Event(f"e{u}", f"u{u}", f"i{rng.randrange(items)}", "like", now)
                for u in range(start, min(start + BATCH, users))
            ]
        )
    await container.processor.checkpoint()
    users_seconds = time.perf_counter() - started
    # A crash's worth of log after the checkpoint: appended to the log itself, past the
    # processor (which applies what the group commit hands it), so never applied here.
    for start in range(0, tail, BATCH):
        batch = [
            Event(f"t{k}", f"u{rng.randrange(users)}", f"i{rng.randrange(items)}", "like", now)
            for k in range(start, min(start + BATCH, tail))
        ]
        await container.event_log.append(batch)
    await container.stop()
    container_size = (workdir / "data" / "recloop.db").stat().st_size
    return {
        "items stored, s": items_seconds,
        "users' events applied and checkpointed, s": users_seconds,
        "database size, MB": container_size / 1e6,
    }


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _first_answer(port: int, path: str, process: subprocess.Popen[bytes]) -> None:
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"recloop serve exited with status {process.returncode}")
        with contextlib.suppress(OSError):
            async with Connection(port) as conn:
                answer = await conn.request("GET", path)
                if answer.status == 200:
                    return
                raise RuntimeError(f"GET {path}: {answer.status} {answer.body[:200]!r}")
        await asyncio.sleep(0.02)


async def _reads(port: int, user_ids: list[str]) -> None:
    async with Connection(port) as conn:
        for user_id in user_ids:
            answer = await conn.request("GET", f"{API}/users/{user_id}/preferences")
            if answer.status != 200:
                raise RuntimeError(f"preferences of {user_id}: {answer.status}")


async def _writes(port: int, users: int, items: int) -> None:
    """One ``like`` for each of ``users`` users, in 1,000-event requests; then applied."""
    async with Connection(port) as conn:
        for start in range(0, users, 1_000):
            events = [
                {"user_id": f"u{u}", "item_id": f"i{u % items}", "type": "like"}
                for u in range(start, min(start + 1_000, users))
            ]
            answer = await conn.post_json(FEEDBACK, {"events": events})
            if answer.status != 202 or answer.json()["accepted"] != len(events):
                raise RuntimeError(f"POST {FEEDBACK}: {answer.status} {answer.body[:200]!r}")
    await wait_idle(port)


def restart(
    workdir: Path, user_id: str, reads: list[str], writers: int = 0, items: int = 1
) -> dict[str, float]:
    """Start ``recloop serve`` on ``workdir``'s database; time it to the first answer."""
    port = free_port()
    python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    command = [str(Path(sys.executable).with_name("recloop")), "serve", "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": python_path, **RECLOOP_ENV}
    started = time.perf_counter()
    with (workdir / "serve.log").open("wb") as out:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=out)
    try:
        path = f"{API}/users/{user_id}/weights"
        asyncio.run(_first_answer(port, path, process))
        serving = time.perf_counter() - started
        rss = _rss_mb(process.pid)
        asyncio.run(_reads(port, reads))
        after_reads = _rss_mb(process.pid)
        asyncio.run(_writes(port, writers, items))
        return {
            "restart to serving, s": serving,
            "RSS serving, MB": rss,
            "RSS after the reads, MB": after_reads,
            "RSS after the writers' events, MB": _rss_mb(process.pid),
        }
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--tail", type=int, default=20_000, help="events to replay (20,000)")
    parser.add_argument("--reads", type=int, default=20_000, help="users read (20,000)")
    parser.add_argument(
        "--writers", type=int, default=200_000, help="distinct users written (200,000)"
    )
    args = parser.parse_args()
    rng = random.Random(11)
    reads = [f"u{rng.randrange(args.users)}" for _ in range(args.reads)]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="recloop-scale-") as tmp:
        empty, full = Path(tmp) / "empty", Path(tmp) / "full"
        asyncio.run(build(empty, 1, 1, 0))
        results["baseline"] = restart(empty, "u0", [])
        results["built"] = asyncio.run(build(full, args.users, args.items, args.tail))
        results["scale"] = restart(full, "u0", reads, args.writers, args.items)
    shape = f"{args.users:,} users, {args.items:,} items, {args.tail:,} events to replay"
    print(f"| {shape} | figure |")
    print("|---|---:|")
    for group in ("built", "scale"):
        for name, value in results[group].items():
            print(f"| {name} | {value:,.1f} |")
    for name, value in results["baseline"].items():
        if name.startswith(("restart", "RSS serving")):
            print(f"| baseline (empty database): {name} | {value:,.1f} |")


if __name__ == "__main__":
    main()
