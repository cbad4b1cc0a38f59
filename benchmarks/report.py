"""Results as markdown: the table, the machine, and the results section of docs/benchmarks.md."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from benchmarks import harness
from benchmarks.harness import DOC, MARKER, number, revision
from benchmarks.harness import write_section as write_section  # benchmarks.loop's
from benchmarks.suite import Measured, Metric, SuiteResult, iter_measured
from benchmarks.wrk import wrk_version


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
        runs = harness.runs(measured.values)
        rows.append(
            f"| {benchmark.title} | {measured.metric.label} | {number(measured.median)} "
            f"| {runs} | {_target(measured.metric)} | {_verdict(measured)} |"
        )
    return "\n".join(rows)


def machine() -> str:
    """One line on the hardware and software the suite's numbers were measured with."""
    return harness.machine(
        f"uvicorn {version('uvicorn')} with uvloop {version('uvloop')} and "
        f"httptools {version('httptools')}, FastAPI {version('fastapi')}; {wrk_version()}."
    )


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
            f"median of {harness.repetitions(o.repeat)}, "
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


# -- the command ---------------------------------------------------------------------
