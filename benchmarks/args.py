"""Argument types shared by the benchmark commands."""

from __future__ import annotations

import argparse


def positive(text: str) -> float:
    """A float above 0 (seconds, rates)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def count(text: str) -> int:
    """An integer of at least 1 (repetitions, samples, clients)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value
