"""Stateful schemathesis along the OpenAPI links (tests/stateful_workflow.py), run in a
process of its own: see that module for what it checks and why it runs apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(560)

ROOT = Path(__file__).resolve().parents[2]


def test_call_sequences_conform_to_the_schema() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.stateful_workflow"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
