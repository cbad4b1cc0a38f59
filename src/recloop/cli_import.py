"""The terminal side of ``recloop import``: progress bar, summary table, exit status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from recloop.adapters.sql.writer_lock import WriterBusy
from recloop.config import Settings
from recloop.core.errors import ConfigError
from recloop.importing.rows import parse_mapping
from recloop.importing.runner import SORT_BUFFER, Summary, run_import

BUSY_ADVICE = (
    "An embedded database has one writer. Stop the server (Ctrl-C or SIGTERM: it applies "
    "what it accepted first), run the import, then start the server again; or, to import "
    "while serving, run the distributed deployment and import into it "
    "(recloop import --config FILE with event_log.kind: kafka). Nothing was imported."
)


class RateColumn(ProgressColumn):
    """Rows per second, as rich measures the task's speed."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- rows/s" if speed is None else f"{speed:,.0f} rows/s")


def run_import_command(
    settings: Settings,
    files: list[Path],
    mapping_items: list[str],
    batch_size: int,
    as_json: bool,
    show_progress: bool,
    sort_buffer: int = SORT_BUFFER,
) -> None:
    err = Console(stderr=True)
    try:
        mapping = parse_mapping(mapping_items)
    except ValueError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        err.print(f"error: no such file: {', '.join(missing)}", markup=False)
        raise typer.Exit(2)
    with _bar(err, show_progress and not as_json) as (read, total, advance):
        try:
            summary = asyncio.run(
                run_import(
                    settings,
                    files,
                    mapping,
                    batch_size,
                    on_total=total,
                    progress=advance,
                    sort_buffer=sort_buffer,
                    on_read=read,
                )
            )
        except WriterBusy as exc:
            err.print(f"error: {exc}.\n{BUSY_ADVICE}", markup=False)
            raise typer.Exit(2) from None
        except (OSError, ValueError, ConfigError) as exc:
            err.print(f"error: {exc}", markup=False)
            raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(summary.to_json(), indent=2))
    else:
        Console().print(summary_table(summary))
        for path in summary.rejects_files:
            err.print(f"rejected rows, with their reasons: {path}", markup=False)
    if summary.spooled:
        err.print(
            f"warning: Kafka unreachable: {summary.spooled} events wait in the import's "
            "spool; the next recloop import with this config sends them first",
            markup=False,
        )
    if summary.rows and not summary.accepted and not summary.duplicates:
        raise typer.Exit(1)  # nothing of it could be imported


@contextmanager
def _bar(
    console: Console, enabled: bool
) -> Iterator[tuple[Callable[[int], None], Callable[[int], None], Callable[[int], None]]]:
    """One bar: rows read and sorted (no total yet), then rows imported out of all."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )
    task = progress.add_task("reading", total=None)

    def read(n: int) -> None:
        progress.advance(task, n)

    def total(n: int) -> None:
        progress.reset(task, total=n, completed=0, description="importing")

    def advance(n: int) -> None:
        progress.advance(task, n)

    with progress:
        yield read, total, advance


def summary_table(summary: Summary) -> Table:
    s = summary.to_json()
    table = Table(title="import", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("rows", f"{s['rows']:,}")
    if summary.distributed:
        table.add_row("accepted (appended to the topic)", f"{s['accepted']:,}")
        table.add_row("duplicates (archived by the workers before)", f"{s['duplicates']:,}")
    else:
        table.add_row("accepted", f"{s['accepted']:,}")
        table.add_row("duplicates (imported before)", f"{s['duplicates']:,}")
    table.add_row("rejected", f"{s['rejected']:,}")
    for reason, n in s["rejected_by_reason"].items():
        table.add_row(f"  {reason}", f"{n:,}")
    table.add_row("first timestamp", s["first_timestamp"] or "-")
    table.add_row("last timestamp", s["last_timestamp"] or "-")
    table.add_row("slates logged for training", f"{s['slates']:,}")
    if s["ignored_columns"]:
        table.add_row("ignored columns", ", ".join(s["ignored_columns"]))
    table.add_row("rows/s", f"{s['rows_per_second']:,.0f}")
    if s["sorted_runs"]:
        table.add_row("sorted on disk, runs", f"{s['sorted_runs']:,}")
    return table
