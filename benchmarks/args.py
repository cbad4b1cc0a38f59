"""Argument types shared by the benchmark commands."""

from __future__ import annotations

import argparse
from typing import Final

from benchmarks.harness import DOC


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


LOAD_OPTIONS: Final = {
    "duration": (positive, "seconds per timed load"),
    "repeat": (count, "repetitions; medians are quoted"),
    "samples": (count, "feedback→visible samples per load level"),
    "clients": (count, "concurrent connections posting batches"),
}
"""The options the load benchmarks share: their type and help."""


def add_load_options(
    parser: argparse.ArgumentParser,
    defaults: object,
    *names: str,
    preset: bool = False,
    **helps: str,
) -> None:
    """``--<name>`` for each of ``names`` (of :data:`LOAD_OPTIONS`), its default taken from
    ``defaults`` and shown in the help (``helps`` replaces a help's text). ``preset``: the
    option's default is None, a preset (``--quick``) fills in what is not given."""
    for name in names:
        kind, text = LOAD_OPTIONS[name]
        default = getattr(defaults, name)
        parser.add_argument(
            f"--{name}",
            type=kind,
            default=None if preset else default,
            help=f"{helps.get(name, text)} ({default:g})",
        )


def add_write(parser: argparse.ArgumentParser, heading: str) -> None:
    """``--write``: replace the section under ``heading`` in docs/benchmarks.md."""
    parser.add_argument(
        "--write", action="store_true", help=f"replace the '{heading[3:]}' section of {DOC.name}"
    )
