"""The shipped example config documents every key, with the defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from recloop.config import Settings, load_settings

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
