"""The everyday questions, asked of a running server: ``recloop weights``, ``algorithms``,
``experiments list|show|results``, ``models list|show``, ``users show``, ``suspects``.

Each talks to the server through ``recloop-client`` (``--url``, else ``RECLOOP_URL``,
else http://127.0.0.1:8000; the key from ``RECLOOP_API_KEY``), prints rich tables, or
with ``--json`` the server's answer as JSON for scripts. Errors print the server's
field and message and exit with status 1 (2 when the server cannot be reached).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer
from recloop_client import (
    AlgorithmStats,
    Client,
    Comparison,
    NotFound,
    RecloopError,
    TransportError,
    VariantResult,
)
from rich.console import Console
from rich.table import Table

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url", help="The server's base URL (else RECLOOP_URL, else http://127.0.0.1:8000)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")]

experiments_app = typer.Typer(help="A/B experiments of a running server.", no_args_is_help=True)
models_app = typer.Typer(help="Registered click models of a running server.", no_args_is_help=True)
users_app = typer.Typer(help="What a running server knows of a user.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the commands to the ``recloop`` command."""
    app.command("weights")(weights)
    app.command("algorithms")(algorithms)
    app.command("suspects")(suspects)
    app.add_typer(experiments_app, name="experiments")
    app.add_typer(models_app, name="models")
    app.add_typer(users_app, name="users")


# -- plumbing ---------------------------------------------------------------------------


@contextmanager
def _client(url: str | None) -> Iterator[Client]:
    base = url or os.environ.get("RECLOOP_URL") or DEFAULT_URL
    err = Console(stderr=True)
    try:
        with Client(base) as client:
            yield client
    except TransportError as exc:
        err.print(f"error: cannot reach the server at {base}: {exc}", markup=False)
        raise typer.Exit(2) from None
    except RecloopError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None


def _plain(value: Any) -> Any:
    """A client model (dataclasses, lists of them) as plain JSON data, ``extra`` merged."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name != "extra"
        }
        out.update(getattr(value, "extra", None) or {})
        return out
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _emit(as_json: bool, data: Any, render: Callable[[], Table | Sequence[Table]]) -> None:
    """``data`` as JSON, or the tables ``render`` makes."""
    if as_json:
        typer.echo(json.dumps(_plain(data), indent=2, default=str))
        return
    console = Console()
    if not console.is_terminal:  # piped: wide rows rather than wrapped cells
        console = Console(width=160)
    tables = render()
    for table in [tables] if isinstance(tables, Table) else tables:
        console.print(table)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _rows(
    title: str,
    columns: Sequence[str],
    items: Iterable[T],
    row: Callable[[T], Sequence[str]],
    right: Collection[str] = (),
) -> Table:
    """A table of ``items``, one row each (``row`` gives its cells), under ``columns``;
    the columns named in ``right`` are right-aligned."""
    table = Table(title=title)
    for name in columns:
        table.add_column(name, justify="right" if name in right else "left")
    for item in items:
        table.add_row(*row(item))
    return table


def _pairs(title: str, rows: Sequence[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for name, value in rows:
        table.add_row(name, "-" if value is None else str(value))
    return table


# -- commands -----------------------------------------------------------------------------


def weights(
    segment: Annotated[
        str | None, typer.Option(help="Only this segment: new, regular, power, inactive.")
    ] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The algorithm weights of each user segment (Thompson sampling over the window)."""
    with _client(url) as client:
        stats = client.algorithms()
    rows = [a for a in stats.algorithms if segment is None or a.segment == segment]
    if segment is not None and not rows:
        Console(stderr=True).print(f"error: no segment {segment!r} in the answer", markup=False)
        raise typer.Exit(1)
    data = {
        s: {a.algorithm: a.weight for a in rows if a.segment == s}
        for s in dict.fromkeys(a.segment for a in rows)
    }

    _emit(
        as_json,
        data,
        lambda: _rows(
            f"algorithm weights (window {stats.window_days:g} days)",
            ("segment", "algorithm", "weight", "enabled"),
            rows,
            lambda a: (a.segment, a.algorithm, f"{a.weight:.3f}", _yes(a.enabled)),
            right=("weight",),
        ),
    )


def _count(value: float) -> str:
    """A count as the table shows it: whole with thousands separators, fractional
    (inverse-propensity credit) to one decimal.

    >>> _count(12345), _count(1234.56)
    ('12,345', '1,234.6')
    """
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def algorithms(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Each algorithm's counts, posterior and status per segment."""
    with _client(url) as client:
        stats = client.algorithms()

    def row(a: AlgorithmStats) -> tuple[str, ...]:
        low, high = (a.posterior_interval + [float("nan")] * 2)[:2]
        return (
            a.segment,
            a.algorithm,
            _count(a.impressions),
            "-" if a.effective_impressions is None else _count(a.effective_impressions),
            _count(a.clicks),
            f"{a.ctr:.4f}",
            f"{a.posterior_mean:.4f} [{low:.4f}, {high:.4f}]",
            f"{a.weight:.3f}",
            "enabled" if a.enabled else f"disabled: {a.status_reason or '-'}",
        )

    columns = ("segment", "algorithm", "impressions", "effective", "clicks", "ctr", "posterior")
    title = f"algorithms (window {stats.window_days:g} days)"
    _emit(
        as_json, stats, lambda: _rows(title, (*columns, "weight", "status"), stats.algorithms, row)
    )


def suspects(
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many users.")] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The least reliable users first: blocked and suspect, with why."""
    with _client(url) as client:
        found = client.suspects(limit)

    _emit(
        as_json,
        found,
        lambda: _rows(
            "suspects (lowest reliability first)",
            ("user", "score", "status", "since", "by hand", "reason"),
            found,
            lambda s: (
                s.user_id,
                f"{s.score:.1f}",
                s.status,
                _when(s.since),
                _yes(s.manual),
                s.reason or "-",
            ),
        ),
    )


@experiments_app.command("list")
def experiments_list(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Every experiment, with its status and variants."""
    with _client(url) as client:
        found = client.experiments()

    _emit(
        as_json,
        found,
        lambda: _rows(
            "experiments",
            ("id", "name", "status", "variants", "traffic", "started", "stopped"),
            found,
            lambda e: (
                e.experiment_id,
                e.name,
                e.status,
                ", ".join(f"{v.key} ({v.weight:g})" for v in e.variants),
                f"{e.traffic_allocation:g}",
                _when(e.started_at),
                _when(e.stopped_at),
            ),
        ),
    )


@experiments_app.command("show")
def experiments_show(experiment_id: str, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """One experiment's definition."""
    with _client(url) as client:
        e = client.experiment(experiment_id)

    def render() -> list[Table]:
        head = _pairs(
            f"experiment {e.experiment_id}",
            [
                ("name", e.name),
                ("hypothesis", e.hypothesis),
                ("status", e.status),
                ("traffic allocation", f"{e.traffic_allocation:g}"),
                ("alpha", f"{e.alpha:g}"),
                ("sequential", _yes(e.sequential)),
                ("hashing", f"seed {e.seed!r}, version {e.hash_version}"),
                ("metrics", ", ".join(m.name for m in e.metrics) or "-"),
                ("guardrails", ", ".join(m.name for m in e.guardrails) or "-"),
                ("created", _when(e.created_at)),
                ("started", _when(e.started_at)),
                ("stopped", _when(e.stopped_at)),
            ],
        )
        variants = _rows(
            "variants",
            ("key", "weight", "config"),
            e.variants,
            lambda v: (v.key, f"{v.weight:g}", json.dumps(v.config) if v.config else "-"),
        )
        return [head, variants]

    _emit(as_json, e, render)


@experiments_app.command("results")
def experiments_results(experiment_id: str, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Live results: each metric per variant, the comparisons with the baseline, SRM."""
    with _client(url) as client:
        r = client.results(experiment_id)

    def render() -> list[Table]:
        srm = "flagged" if r.srm.flagged else "ok"
        head = _pairs(
            f"results of {r.experiment_id}",
            [
                ("status", r.status),
                ("alpha", f"{r.alpha:g} ({r.correction} correction)"),
                ("sequential", _yes(r.sequential)),
                ("sample ratio", f"{srm} (p = {_num(r.srm.p_value)})"),
                ("warnings", "; ".join(r.warnings) or "-"),
            ],
        )
        tables = [head]
        for metric in r.metrics:
            kind = f"{metric.type}{', guardrail' if metric.guardrail else ''}"
            compared = {c.variant: c for c in metric.comparisons}
            pairs = [(v, compared.get(v.key)) for v in metric.variants]
            columns = ("variant", "users", "mean", "effect", "95% CI", "p (adj.)", "sig.")
            tables.append(_rows(f"{metric.name} ({kind})", columns, pairs, _variant_cells))
        return tables

    _emit(as_json, r, render)


def _variant_cells(pair: tuple[VariantResult, Comparison | None]) -> tuple[str, ...]:
    """A variant's row of a metric's results: its comparison with the baseline (None for
    the baseline itself)."""
    v, c = pair
    ci = c.ci_absolute if c is not None else None
    return (
        v.key,
        f"{v.users:,}",
        _num(v.mean),
        "baseline" if c is None else _num(c.absolute_effect),
        "-" if not ci else f"[{_num(ci[0])}, {_num(ci[1])}]",
        "-" if c is None else _num(c.p_value_adjusted),
        "-" if c is None else _yes(c.significant),
    )


@models_app.command("list")
def models_list(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Every registered model, newest first, with its status and validation AUC."""
    with _client(url) as client:
        found = client.models()

    _emit(
        as_json,
        found,
        lambda: _rows(
            "models",
            ("version", "status", "created", "examples", "positives", "auc", "reason"),
            found,
            lambda mdl: (
                mdl.version,
                mdl.status,
                _when(mdl.created_at),
                f"{mdl.examples:,}",
                f"{mdl.positives:,}",
                _num(mdl.metrics.get("auc")),
                mdl.reason or "-",
            ),
        ),
    )


@models_app.command("show")
def models_show(version: str, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """One registered model: status, training window, metrics, features."""
    with _client(url) as client:
        mdl = client.model(version)

    def render() -> list[Table]:
        rows: list[tuple[str, Any]] = [
            ("status", mdl.status),
            ("reason", mdl.reason or "-"),
            ("kind", mdl.kind),
            ("created", _when(mdl.created_at)),
            ("training window", f"{_when(mdl.window_start)} to {_when(mdl.window_end)}"),
            ("examples", f"{mdl.examples:,} ({mdl.positives:,} positive)"),
            ("sha256", mdl.sha256),
            ("features", ", ".join(mdl.feature_names)),
        ]
        rows += [(f"metric {k}", v) for k, v in sorted(mdl.metrics.items())]
        return [_pairs(f"model {mdl.version}", rows)]

    _emit(as_json, mdl, render)


@users_app.command("show")
def users_show(user_id: str, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """A user's segment, weights and exploration, experiments, preferences summary and
    reliability. Reads the strategy with ``expose=false``: looking records no exposure."""
    with _client(url) as client:
        strategy = client.strategy(user_id, expose=False)
        preferences = _or_none(lambda: client.preferences(user_id))
        reliability = _or_none(lambda: client.reliability(user_id))
    data = {"strategy": strategy, "preferences": preferences, "reliability": reliability}

    def render() -> list[Table]:
        s = strategy
        rows: list[tuple[str, Any]] = [
            ("segment", s.segment),
            ("exploration", f"{s.exploration.strategy}, epsilon {s.exploration.epsilon:g}"),
            ("model", s.model.version or "- (fused ranking)"),
        ]
        if preferences is None:
            rows.append(("preferences", "none yet (no event applied)"))
        else:
            p = preferences
            rows += [
                ("interactions", f"{p.interactions:,}"),
                ("events applied", f"{p.events_applied:,} (held: {p.events_held:,})"),
                ("first event", _when(p.first_event_at)),
                ("last event", _when(p.last_event_at)),
            ]
        if reliability is None:
            rows.append(("reliability", "not judged yet"))
        else:
            r = reliability
            rows.append(("reliability", f"{r.score:.1f} ({r.status}) {r.reason}".strip()))
        head = _pairs(f"user {s.user_id}", rows)
        w = _rows(
            "algorithm weights (the user's segment)",
            ("algorithm", "weight"),
            sorted(s.weights.items(), key=lambda kv: -kv[1]),
            lambda kv: (kv[0], f"{kv[1]:.3f}"),
            right=("weight",),
        )
        x = _rows(
            "experiments",
            ("experiment", "variant"),
            s.experiments,
            lambda v: (str(v.experiment_id), str(v.variant)),
        )
        return [head, w, x]

    _emit(as_json, data, render)


def _or_none(call: Callable[[], T]) -> T | None:
    try:
        return call()
    except NotFound:
        return None
