"""Results as markdown: the table, the machine, and the results section of docs/benchmarks.md."""

from __future__ import annotations

import math
import os
import platform
import sqlite3
import subprocess
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Final

from benchmarks.servers import ROOT
from benchmarks.suite import Measured, Metric, SuiteResult, iter_measured
from benchmarks.wrk import wrk_version

DOC: Final = ROOT / "docs" / "benchmarks.md"
MARKER: Final = "<!-- Results below are written by `python -m benchmarks --write`; edit above. -->"


def number(value: float) -> str:
    """A value as the table shows it.

    >>> number(123456.7), number(812.4), number(42.25), number(0.4567), number(float("nan"))
    ('123,457', '812', '42.2', '0.46', 'n/a')
    """
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _target(metric: Metric) -> str:
    target = metric.target
    if target is None:
        return metric.remark
    return f"{'≥' if target.at_least else '≤'} {number(target.bound)}"


def _verdict(measured: Measured) -> str:
    """met / missed by the median, with how many runs agree when not all do."""
    target = measured.metric.target
    if target is None:
        return ""
    met = sum(target.met(v) for v in measured.values)
    runs = len(measured.values)
    verdict = "met" if measured.met else "**missed**"
    return verdict if met in (0, runs) else f"{verdict} ({met} of {runs} runs met it)"


def table(suite: SuiteResult) -> str:
    rows = [
        "| Benchmark | Metric | Median | Runs | Target | Verdict |",
        "|---|---|---:|---|---|---|",
    ]
    for benchmark, measured in iter_measured(suite):
        runs = " · ".join(number(v) for v in measured.values)
        rows.append(
            f"| {benchmark.title} | {measured.metric.label} | {number(measured.median)} "
            f"| {runs} | {_target(measured.metric)} | {_verdict(measured)} |"
        )
    return "\n".join(rows)


def machine() -> str:
    """One line on the hardware and software the numbers were measured with."""
    cpu = _first_value("/proc/cpuinfo", "model name") or platform.processor() or "unknown CPU"
    memory_kib = _first_value("/proc/meminfo", "MemTotal").split(" ")[0]
    memory = f", {int(memory_kib) / 2**20:.0f} GiB" if memory_kib.isdigit() else ""
    return (
        f"{os.cpu_count()} cores ({cpu}){memory}, Linux {platform.release()}; "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"uvicorn {version('uvicorn')} with uvloop {version('uvloop')} and "
        f"httptools {version('httptools')}, FastAPI {version('fastapi')}; "
        f"{wrk_version()}."
    )


def revision() -> str:
    """The commit measured, and whether ``src/`` had changes not yet committed."""
    git = ["git", "-C", str(ROOT)]
    try:
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown revision"
    return f"commit {commit}" + (" with uncommitted changes in src/" if changed else "")


def _first_value(path: str, key: str) -> str:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return ""


def results_section(suite: SuiteResult, command: str, when: datetime | None = None) -> str:
    when = when or datetime.now(UTC)
    o = suite.options
    notes = [
        f"Single-event and read-path load generator: {suite.load_generator}; the others are "
        "Python (asyncio, in their own processes).",
        "Server, load generators and background load share the machine's cores.",
        *suite.notes,
    ]
    return "\n".join(
        [
            "## Results",
            "",
            f"Measured {when:%Y-%m-%d %H:%M} UTC with `{command}`, on {revision()}: "
            f"median of {o.repeat} repetition{'s' if o.repeat != 1 else ''}, "
            f"{o.duration:g} s per timed load, {o.clients} clients for batches, "
            f"{o.samples} feedback→visible samples per load level.",
            "",
            f"Machine: {machine()}",
            "",
            table(suite),
            "",
            *(f"- {note}" for note in notes),
            "",
        ]
    )


def write_doc(section: str, path: Path = DOC) -> None:
    """Replace what follows the marker in ``path`` with ``section``; keep what precedes it."""
    text = path.read_text() if path.exists() else ""
    head, found, _ = text.partition(MARKER)
    if not found:
        head = text.rstrip() + "\n\n" if text.strip() else ""
    path.write_text(f"{head}{MARKER}\n\n{section}")


def write_section(text: str, heading: str, path: Path = DOC) -> None:
    """Replace the section under ``heading`` in ``path`` (up to the next ``## `` heading or
    the suite's results marker) with ``text``, or insert it just before that marker, where
    ``python -m benchmarks --write`` leaves it alone."""
    doc = path.read_text() if path.exists() else ""
    lines = doc.splitlines(keepends=True)
    block = text.rstrip("\n") + "\n\n"
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n") == heading]
    if starts:
        start = starts[0]
        end = next(
            (
                i
                for i in range(start + 1, len(lines))
                if lines[i].startswith("## ") or lines[i].startswith(MARKER)
            ),
            len(lines),
        )
    else:
        start = end = next((i for i, line in enumerate(lines) if line.startswith(MARKER)), None)
        if start is None:
            path.write_text(doc.rstrip("\n") + "\n\n" + block)
            return
    path.write_text("".join(lines[:start]) + block + "".join(lines[end:]))


# -- the command ---------------------------------------------------------------------
