"""A training job's work (learning.job): the schedule's rule in the one code path, a
training process's error carried back with its name, the read-only database it reads."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text

from recloop.adapters.memory import InMemoryEventLog, InMemoryStateStore
from recloop.adapters.sql import SqlDatabase
from recloop.adapters.sql.tables import impressions as impressions_table
from recloop.adapters.sql.training import (
    ReadOnlyDatabase,
    SqlTrainingReader,
    readable_elsewhere,
    training_reader,
)
from recloop.config import LearningSettings
from recloop.core.slates import Slate
from recloop.learning.job import (
    JobResult,
    TrainingPlan,
    join_in_thread,
    run_plan,
)
from recloop.learning.training import Outcome, TrainingData
from recloop.learning.validation import PromotionGate
from recloop.ports import Impression
from recloop.services.learning import LearningService


def plan(scheduled: bool, last_end: float, min_new: int) -> TrainingPlan:
    return TrainingPlan(
        since=0.0,
        until=1_000.0,
        attribution_seconds=60.0,
        scheduled=scheduled,
        last_end=last_end,
        min_new_examples=min_new,
        champion=None,
        gate=PromotionGate(0.0, 1.0),
        holdout_fraction=0.2,
        learner=None,
        alpha=0.05,
    )


async def store_with(created: list[float]) -> InMemoryStateStore:
    store = InMemoryStateStore()
    await store.add_impressions(
        [
            Impression(
                f"imp-{n}",
                "u1",
                "new",
                at,
                0.1,
                Slate.from_slate(
                    [{"item_id": "a", "position": 0, "features": {"inverse_position": 1.0}}]
                ),
            )
            for n, at in enumerate(created)
        ]
    )
    return store


async def run(p: TrainingPlan, created: list[float]) -> tuple[JobResult, list[str], int]:
    fitted: list[TrainingData] = []
    stages: list[str] = []

    async def fit(data: TrainingData, _: TrainingPlan) -> Outcome:
        fitted.append(data)
        return Outcome(None, False, "fitted", {})

    store = await store_with(created)
    result = await run_plan(p, store, InMemoryEventLog(), stages.append, join_in_thread, fit)
    return result, stages, len(fitted)


async def test_a_scheduled_job_is_skipped_below_the_new_examples_it_needs() -> None:
    created = [100.0, 200.0, 300.0, 400.0]
    result, stages, fits = await run(plan(True, 250.0, 3), created)
    assert fits == 0
    assert result == JobResult(4, 0, None, "skipped: 2 new examples since the last model, below 3")
    assert stages == ["reading impressions", "joining 4 impressions with their clicks"]

    result, stages, fits = await run(plan(True, 250.0, 2), created)
    assert fits == 1 and result.outcome is not None and result.examples == 4
    assert stages[-1] == "training on 4 examples and validating in the training process"


async def test_a_job_not_on_the_schedule_is_never_skipped() -> None:
    result, _, fits = await run(plan(False, 1e9, 1_000), [100.0])
    assert fits == 1 and result.skipped == ""


def test_which_databases_a_training_process_can_read() -> None:
    assert readable_elsewhere("sqlite+aiosqlite:///./data/recloop.db")
    assert readable_elsewhere("postgresql+asyncpg://postgres@127.0.0.1:5432/recloop")
    assert not readable_elsewhere("memory://")
    assert not readable_elsewhere("sqlite+aiosqlite://")
    assert not readable_elsewhere("sqlite+aiosqlite:///:memory:")
    assert training_reader("sqlite+aiosqlite://") is None
    assert training_reader("sqlite+aiosqlite:///./data/recloop.db") == SqlTrainingReader(
        "sqlite+aiosqlite:///./data/recloop.db"
    )


async def test_the_training_process_reads_sqlite_but_never_writes(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'recloop.db'}"
    server = SqlDatabase(url)
    await server.migrate()
    reader = ReadOnlyDatabase(url)
    try:
        async with reader.read() as conn:
            assert (await conn.execute(select(impressions_table))).all() == []
        with pytest.raises(sa_exc.OperationalError, match="readonly"):
            async with reader.read() as conn:
                await conn.execute(text("DELETE FROM impressions"))
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await reader.run_read(lambda c: c.execute("DELETE FROM impressions"))
        with pytest.raises(RuntimeError, match="never migrated"):
            await reader.migrate()
        # The server writes on while the training process has its connection open.
        async with server.write() as conn:
            await conn.execute(text("DELETE FROM impressions"))
    finally:
        await reader.dispose()
        await server.dispose()


async def test_an_error_in_the_training_process_comes_back_named() -> None:
    """The storage's unreachable error (whose constructor does not unpickle) is the job's
    message, not a broken process pool; the stage before it was reported."""
    learning = LearningService(
        InMemoryStateStore(),
        InMemoryEventLog(),
        LearningSettings(),
        training_reader=SqlTrainingReader("postgresql+asyncpg://postgres@127.0.0.1:1/nothing"),
    )
    stages: list[str] = []
    job = await learning.train_now("api", stages.append)
    assert job.status == "failed"
    assert job.message.startswith("TransientError: storage: "), job.message
    assert stages == ["reading impressions"]


async def test_an_abandoned_training_leaves_no_process_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server stopping mid-training cancels it: the cancellation does not wait for the
    training to end (it used to: a stop waited as long as the training ran), and the
    training's process goes too."""
    import asyncio
    import time
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing.connection import wait as wait_for_ended

    from recloop.learning import job
    from recloop.learning.job import in_training_process

    # The training's own pool, seen through the library class it is made of (in a full
    # test run other processes may start meanwhile: only this training's are checked).
    pools: list[ProcessPoolExecutor] = []

    class Seen(ProcessPoolExecutor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            pools.append(self)

    monkeypatch.setattr(job, "ProcessPoolExecutor", Seen)
    task = asyncio.create_task(in_training_process(lambda stage: None, time.sleep, 600.0))
    deadline = time.monotonic() + 60
    started: list[Any] = []
    while not started and time.monotonic() < deadline:  # the spawned process is up
        started = [p for pool in pools for p in (pool._processes or {}).values()]
        await asyncio.sleep(0.05)
    assert started
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=60)  # far less than the training's 600 s
    # Ended: each process's sentinel is ready. Not ``join`` then ``is_alive``: the pool's
    # own thread reaps its processes too, and a join that loses that race returns at once
    # and leaves ``is_alive`` saying True of a process already gone.
    for process in started:
        ended = await asyncio.to_thread(wait_for_ended, [process.sentinel], 20)
        assert ended, f"training process {process.pid} outlived its cancelled training"


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux: /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_training_process_does_not_outlive_a_killed_server() -> None:
    """``kill -9`` of the server mid-training: its training process exits by itself."""
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import asyncio, time\n"
        "from recloop.learning.job import in_training_process\n"
        "asyncio.run(in_training_process(lambda stage: None, time.sleep, 600.0))\n"
    )
    server = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        training: list[int] = []
        while not training and time.monotonic() < deadline:
            time.sleep(0.1)
            training = [
                p
                for p in _children(server.pid)
                if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
                and "resource_tracker" not in Path(f"/proc/{p}/cmdline").read_text()
            ]
        assert training, "the training process did not start"
        time.sleep(1.0)  # its initializer has run
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_running(p) for p in training):
        time.sleep(0.1)
    alive = [p for p in training if _running(p)]
    for p in alive:  # do not leave it behind when the test fails
        os.kill(p, signal.SIGKILL)
    assert not alive
