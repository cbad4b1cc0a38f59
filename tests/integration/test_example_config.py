"""The shipped example config documents every key, with the defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from recloop.config import Settings, load_settings
from recloop.container import build_container, build_worker

EXAMPLE = Path(__file__).parents[2] / "config" / "recloop.example.yaml"


def _leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_example_lists_every_key_with_its_default() -> None:
    documented = _leaves(yaml.safe_load(EXAMPLE.read_text()))
    defaults = _leaves(Settings().model_dump(mode="json"))
    assert documented == defaults


def test_example_loads(monkeypatch: Any) -> None:
    assert load_settings(EXAMPLE) == Settings()


def test_distributed_example_loads_and_builds(monkeypatch: Any) -> None:
    settings = load_settings(EXAMPLE.with_name("distributed.example.yaml"))
    assert settings.event_log.kind == "kafka"
    assert settings.storage.url.startswith("postgresql+asyncpg://")
    assert settings.cache.shared_url is not None
    build_container(settings)  # wiring only: nothing connects before start()
    worker, _ = build_worker(settings)
    assert worker.assignment() == frozenset()
