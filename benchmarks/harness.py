"""What every benchmark command shares: progress lines, the machine, CPU from ``/proc``,
process stopping, the figures' format, and the command that writes its section of
docs/benchmarks.md.

Standard library only, so that any scenario module (and ``suite``, which ``report``
imports) can use it.
"""

from __future__ import annotations

import math
import os
import platform
import shlex
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final, TypeVar

Opts = TypeVar("Opts")
R = TypeVar("R")

ROOT: Final = Path(__file__).resolve().parents[1]
DOC: Final = ROOT / "docs" / "benchmarks.md"
MARKER: Final = "<!-- Results below are written by `python -m benchmarks --write`; edit above. -->"


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """What the load benchmarks' runs share; each command's ``Options`` adds its own."""

    duration: float = 10.0
    """Seconds of each timed load."""
    repeat: int = 3
    clients: int = 4
    """Concurrent connections of the batched loads."""
    samples: int = 200
    """Feedback→visible samples per repetition and load level."""


# -- what a run says -----------------------------------------------------------------


def progress(tag: str) -> Callable[[str], None]:
    """A function printing a progress line prefixed ``[tag]`` to stderr."""

    def say(text: str) -> None:
        print(f"[{tag}] {text}", file=sys.stderr, flush=True)

    return say


def number(value: float) -> str:
    """A value as the tables show it.

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


def runs(values: Sequence[float]) -> str:
    """Every repetition's value, as a table's *Runs* column shows them.

    >>> runs([1.0, 2345.0])
    '1.00 · 2,345'
    """
    return " · ".join(number(v) for v in values)


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN where ``b`` is 0 (or either is NaN).

    >>> ratio(3.0, 2.0), ratio(1.0, 0.0)
    (1.5, nan)
    """
    return a / b if b else math.nan


def machine(software: str) -> str:
    """One line on the hardware and software measured with: cores, CPU, memory, kernel,
    Python and SQLite, then ``software`` (what the command adds, its end included)."""
    cpu = _first_value("/proc/cpuinfo", "model name") or platform.processor() or "unknown CPU"
    memory_kib = _first_value("/proc/meminfo", "MemTotal").split(" ")[0]
    memory = f", {int(memory_kib) / 2**20:.0f} GiB" if memory_kib.isdigit() else ""
    return (
        f"{os.cpu_count()} cores ({cpu}){memory}, Linux {platform.release()}; "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {software}"
    )


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


def repetitions(n: int) -> str:
    """How many repetitions the medians are of.

    >>> repetitions(1), repetitions(3)
    ('1 repetition', '3 repetitions')
    """
    return f"{n} repetition{'s' if n != 1 else ''}"


# -- CPU from /proc ------------------------------------------------------------------


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3 on), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def tick() -> float:
    """Clock ticks per second, the unit of ``/proc``'s CPU times."""
    return float(os.sysconf("SC_CLK_TCK"))


def process_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid`` itself (utime + stime) and of its waited-for children
    (cutime + cstime: a reaped child's CPU moves there); NaN if it is gone."""
    fields = proc_stat(pid)
    if fields is None:
        return math.nan, math.nan
    return (
        (int(fields[11]) + int(fields[12])) / tick(),
        (int(fields[13]) + int(fields[14])) / tick(),
    )


def tree_cpu(root: int) -> float:
    """CPU seconds of process ``root`` and its descendants, living or reaped."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or (fields := proc_stat(int(entry.name))) is None:
            continue
        pid = int(entry.name)
        # ppid, then utime, stime, cutime, cstime: fields 4 and 14 to 17 of proc(5)
        cpu[pid] = sum(int(f) for f in fields[11:15]) / tick()
        children.setdefault(int(fields[1]), []).append(pid)
    total, waiting = 0.0, [root]
    while waiting:
        pid = waiting.pop()
        total += cpu.get(pid, 0.0)
        waiting += children.get(pid, [])
    return total


def machine_busy() -> tuple[float, float]:
    """CPU seconds all cores have spent busy since boot (``/proc/stat``): in all, and in
    processes (interrupts, which no process is charged for, left out)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return math.nan, math.nan
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return (user + nice + system + irq + softirq) / tick(), (user + nice + system) / tick()


# -- processes -----------------------------------------------------------------------


def stop_process(
    process: subprocess.Popen[bytes],
    timeout: float,
    on_kill: Callable[[], None] | None = None,
) -> None:
    """SIGTERM (a graceful shutdown), SIGKILL if it takes longer than ``timeout`` (after
    calling ``on_kill``)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        if on_kill is not None:
            on_kill()
        process.kill()
        process.wait(10)


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM to the run: unwind, so that every process it started is stopped."""
    raise SystemExit(128 + signum)


# -- the command that writes a section -----------------------------------------------


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


def section_command(
    prog: str,
    argv: list[str] | None,
    parse_args: Callable[[list[str]], tuple[Opts, bool]],
    measure: Callable[[Opts], R],
    section: Callable[[R, str], str],
    heading: str,
    failures: tuple[type[BaseException], ...],
    kept: str,
) -> int:
    """A benchmark command whose result is a section of docs/benchmarks.md: parse
    ``argv``, ``measure`` (SIGTERM unwinds it, so that its processes are stopped), print
    the section, and with ``--write`` replace ``heading``'s section with it.

    One of ``failures`` ends the run with exit status 1 and a line naming ``kept`` (where
    the logs are)."""
    argv = sys.argv[1:] if argv is None else argv
    options, write = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        run = measure(options)
    except failures as exc:
        print(f"{prog} failed: {exc}\n({kept})", file=sys.stderr)
        return 1
    text = section(run, " ".join([f"python -m {prog}", shlex.join(argv)]).strip())
    print(text)
    if write:
        write_section(text, heading)
        print(f"section '{heading[3:]}' written to {DOC}", file=sys.stderr)
    return 0
