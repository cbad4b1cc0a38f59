"""One builder per process kind, each with its start-up order as a list of steps.

Wiring only: nothing here connects (the distributed example config names Kafka,
PostgreSQL and Redis; building does not reach them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from recloop.config import load_settings
from recloop.container import (
    Container,
    Step,
    WorkerContainer,
    build_container,
    build_trainer,
    build_worker,
    start_steps,
    stop_steps,
)
from recloop.core.errors import ConfigError

DISTRIBUTED = Path(__file__).parents[2] / "config" / "distributed.example.yaml"


async def test_steps_start_in_order_and_stop_in_reverse() -> None:
    seen: list[str] = []

    def step(name: str) -> Step:
        async def start() -> None:
            seen.append(f"+{name}")

        async def stop() -> None:
            seen.append(f"-{name}")

        return Step(name, start, stop)

    steps = [step("a"), step("b"), Step("c"), step("d")]
    await start_steps(steps)
    await stop_steps(steps)
    assert seen == ["+a", "+b", "+d", "-d", "-b", "-a"]


def names(c: Container | WorkerContainer) -> list[str]:
    return [s.name for s in c.steps]


def test_serve_embedded_starts_storage_first_and_the_processor_before_acceptance() -> None:
    c = build_container(load_settings(None, storage={"url": "memory://"}))
    assert names(c) == [
        "storage",
        "cache",
        "rate_limits",
        "privacy",
        "optimizer",
        "experiments",
        "guard",
        "retraction",
        "processor",
        "committer",
        "impressions",
        "learning",
        "history",
    ]
    assert c.spool is None and c.shared_cache is None


def test_serve_distributed_spools_and_refreshes_instead_of_applying() -> None:
    c = build_container(load_settings(DISTRIBUTED))
    assert c.spool is not None and c.shared_cache is not None
    steps = names(c)
    assert "processor" not in steps
    assert steps.index("spool") < steps.index("refresher") < steps.index("committer")


def test_a_worker_builds_no_api_services() -> None:
    worker, c = build_worker(load_settings(DISTRIBUTED))
    assert isinstance(c, WorkerContainer) and c.worker is worker
    assert not hasattr(c, "ingest") and not hasattr(c, "ranker")
    assert names(c) == [
        "storage",
        "cache",
        "experiments",
        "guard",
        "privacy",
        "worker",
        "refresher",
    ]
    with pytest.raises(ConfigError, match=r"event_log\.kind: kafka"):
        build_worker(load_settings(None, storage={"url": "memory://"}))


def test_a_trainer_builds_the_learning_service_without_its_schedule() -> None:
    trainer = build_trainer(load_settings(None, storage={"url": "memory://"}))
    assert [s.name for s in trainer.steps] == ["storage", "guard", "learning"]
    with pytest.raises(ConfigError, match=r"learning\.enabled is false"):
        build_trainer(load_settings(None, learning={"enabled": False}))
