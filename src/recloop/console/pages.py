"""What each console page shows, read from the running services (no logic of their own).

Each ``*_page`` function returns the template's context; the routes
(:mod:`recloop.console.routes`) add the session and render it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from recloop.api.routers.health import health_report
from recloop.console.charts import (
    BandPoints,
    Chart,
    Series,
    curve,
    finite,
    forest,
    histogram,
    over_time,
)
from recloop.container import Container
from recloop.core.errors import NotFound
from recloop.core.events import FEEDBACK_TYPES
from recloop.metrics import Metrics
from recloop.ports import HistoryPoint
from recloop.services.history import Series as History

RECENT_EVENTS = 20
RECENT_DAYS = 30.0
STRONGEST = 8
SUSPECTS = 200
SIGNALS_OF = 20
"""Suspects whose fired signals are read (each read judges the user now, as the API's)."""


@dataclass(slots=True)
class _Sample:
    at: float
    accepted: float
    applied: float


class Rates:
    """Events per second accepted and applied between two looks at the overview at
    least ``min_seconds`` apart (the first look: since the app was built, when both
    counters were zero). A look sooner than that repeats the last figures."""

    def __init__(self, min_seconds: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self._min = min_seconds
        self._clock = clock
        self._last = _Sample(clock(), 0.0, 0.0)
        self._rates = (0.0, 0.0, 0.0)

    def rates(self, accepted: float, applied: float) -> tuple[float, float, float]:
        """(accepted/s, applied/s, over how many seconds: 0 before the first figures)."""
        now = self._clock()
        last = self._last
        seconds = now - last.at
        if seconds >= self._min:
            self._rates = (
                (accepted - last.accepted) / seconds,
                (applied - last.applied) / seconds,
                seconds,
            )
            self._last = _Sample(now, accepted, applied)
        return self._rates


def accepted_events(metrics: Metrics) -> float:
    """Events accepted since the process started (``recloop_events_total{status=accepted}``)."""
    total = 0.0
    for family in metrics.events.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("status") == "accepted":
                total += sample.value
    return total


async def overview_page(c: Container, metrics: Metrics, rates: Rates) -> dict[str, Any]:
    health = await health_report(c)
    accepted = accepted_events(metrics)
    applied = float(c.processor.tracker.committed)
    per_second = rates.rates(accepted, applied)
    experiments = sorted(
        c.experiments.all(),
        key=lambda e: max(e.created_at, e.started_at or 0.0, e.stopped_at or 0.0),
        reverse=True,
    )[:5]
    transitions: list[dict[str, Any]] = []
    if c.learning is not None:
        transitions = list(reversed((await c.learning.deployment())["transitions"]))[:5]
    return {
        "health": health,
        "accepted": accepted,
        "applied": applied,
        "accepted_rate": per_second[0],
        "applied_rate": per_second[1],
        "rate_seconds": per_second[2],
        "lag": health["components"].get("event_log", {}).get("detail", {}).get("lag"),
        "dead_letters": c.processor.calls.dead_letters,
        "experiments": experiments,
        "transitions": transitions,
        "learning": c.learning is not None,
        "distributed": c.distributed,
        "history": c.history,
    }


def experiments_page(c: Container) -> dict[str, Any]:
    return {
        "experiments": sorted(c.experiments.all(), key=lambda e: -e.created_at),
        "event_types": sorted(FEEDBACK_TYPES - {"impression"}),
    }


def _band(points: list[HistoryPoint], keys: tuple[str, str, str]) -> BandPoints:
    return [
        (p.at, p.values.get(keys[0]), p.values.get(keys[1]), p.values.get(keys[2])) for p in points
    ]


async def _history(c: Container, kind: str, scope: str | None = None) -> History:
    return {} if c.history is None else await c.history.series(kind, scope)


async def experiment_page(c: Container, experiment_id: str) -> dict[str, Any]:
    exp = c.experiments.get(experiment_id)
    results = c.experiments.results(experiment_id)
    rows = [
        (
            f"{metric['name']}: {comparison['variant']}",
            comparison["relative_effect"],
            *(comparison["ci_relative"] or (None, None)),
        )
        for metric in results["metrics"]
        for comparison in metric["comparisons"]
        if comparison["relative_effect"] is not None
    ]
    charts = []
    if rows:
        charts.append(forest("effects", "Relative effect vs the baseline, with its interval", rows))
    history = await _history(c, "experiment", experiment_id)
    for n, metric in enumerate(m.name for m in exp.all_metrics):
        # subjects are ``metric:variant`` (the sampler's): found from the definition
        groups = [
            (v.key, _band(history[found], ("effect", "low", "high")))
            for v in exp.variants[1:]
            if (found := (experiment_id, f"{metric}:{v.key}")) in history
        ]
        if groups:
            charts.append(
                over_time(
                    f"sequential-{n}",
                    f"{metric}: relative effect over time, anytime-valid interval",
                    groups,
                    y_label="relative effect",
                )
            )
    power_rows: list[dict[str, Any]] = []
    if history:
        mde = c.history.config.power_mde if c.history is not None else None
        times = sorted({p.at for points in history.values() for p in points})
        at = {t: i for i, t in enumerate(times)}
        series = []
        for (_, subject), points in sorted(history.items()):
            values: list[float | None] = [None] * len(times)
            for p in points:
                values[at[p.at]] = finite(p.values.get("power"))
            series.append(Series(subject, values))
            last = points[-1].values
            power_rows.append(
                {"subject": subject, "power": last.get("power"), "remaining": last.get("remaining")}
            )
        charts.append(
            Chart(
                "power",
                f"Power to detect a {mde:.0%} relative effect, over time",
                "lines",
                [float(t) for t in times],
                series,
                y_label="power",
                time=True,
            )
        )
    return {"experiment": exp, "results": results, "charts": charts, "power": power_rows}


def algorithms_page(
    rows: list[dict[str, Any]], algorithms: tuple[str, ...], history: History | None = None
) -> dict[str, Any]:
    by_segment: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_segment[row["segment"]].append(row)
    charts = []
    for segment, found in by_segment.items():
        charts.append(
            forest(
                f"posterior-{segment}",
                f"{segment}: posterior CTR (mean, 95% credible band)",
                [
                    (
                        r["algorithm"],
                        r["posterior_mean"],
                        r["posterior_interval"][0],
                        r["posterior_interval"][1],
                    )
                    for r in found
                ],
            )
        )
    over: dict[str, list[tuple[str, BandPoints]]] = defaultdict(list)
    for (segment, algorithm), points in sorted((history or {}).items()):
        over[segment].append((algorithm, _band(points, ("mean", "low", "high"))))
    for segment in by_segment:
        if segment in over:
            charts.append(
                over_time(
                    f"posterior-over-time-{segment}",
                    f"{segment}: posterior CTR over time (mean, 95% credible band)",
                    over[segment],
                    y_label="CTR",
                )
            )
    return {"segments": dict(by_segment), "charts": charts, "algorithms": algorithms}


VALIDATION = ("auc", "log_loss", "calibration_error")


def holdout(metrics: dict[str, Any], who: str) -> dict[str, Any]:
    """``who``'s (``candidate`` or ``champion``) holdout metrics in a model's record: the
    training job scores both on the same holdout (``learning.training``)."""
    found = metrics.get(who)
    return found if isinstance(found, dict) else {}


def model_curves(version: str, metrics: dict[str, Any]) -> list[Chart]:
    """The ROC curve and reliability diagram training stored for a model (none for a
    model trained before they were stored)."""
    stored = metrics.get("curves")
    if not isinstance(stored, dict):
        return []
    charts = []
    roc = stored.get("roc") or {}
    if roc.get("fpr"):
        charts.append(
            curve(
                "roc",
                f"{version}: ROC curve on its holdout",
                roc["fpr"],
                roc["tpr"],
                "model",
                "chance",
                "false positive rate",
                "true positive rate",
            )
        )
    bins = stored.get("reliability") or {}
    if bins.get("predicted"):
        charts.append(
            curve(
                "reliability",
                f"{version}: reliability on its holdout (click rate per bin of predictions)",
                bins["predicted"],
                bins["observed"],
                "observed",
                "perfectly calibrated",
                "predicted click probability",
                "observed click rate",
            )
        )
    return charts


def canary_chart(history: History) -> Chart | None:
    """The latest judged deployment's interval over time with the margin it is judged at."""
    if not history:
        return None
    (scope, subject), points = max(history.items(), key=lambda kv: kv[1][-1].at)
    margin = points[-1].values.get("margin") or 0.0
    tolerance = points[-1].values.get("tolerance")
    tolerance = margin if tolerance is None else tolerance
    rule = (
        "rollback when the interval is below, promote when above"
        if tolerance == margin
        else f"promote when the interval is above; rollback when below -{tolerance:.0%}"
    )
    return over_time(
        "canary",
        f"{scope} ({subject}): relative CTR vs the baseline over time, anytime-valid interval",
        [
            (
                "green vs blue" if subject == "canary" else "vs baseline",
                _band(points, ("effect", "low", "high")),
            )
        ],
        [
            (
                f"-margin {-margin:.0%}: {rule}",
                -margin,
            )
        ],
        y_label="relative CTR",
    )


async def models_page(c: Container, version: str | None = None) -> dict[str, Any]:
    if c.learning is None:
        return {"learning": False, "models": [], "charts": [], "deployment": None}
    models = await c.learning.models()
    deployment = await c.learning.deployment()
    chronological = sorted(models, key=lambda m: m.created_at)
    charts = []
    if chronological:
        charts.append(
            Chart(
                "validation",
                "Holdout metrics per model version",
                "lines",
                [float(i) for i in range(len(chronological))],
                [
                    Series(
                        n, [finite(holdout(m.metrics, "candidate").get(n)) for m in chronological]
                    )
                    for n in VALIDATION
                ],
                categories=[m.version for m in chronological],
            )
        )
    shown = next((m for m in models if m.version == version), None)
    if shown is None and version is not None:
        raise NotFound("model", version)
    if shown is None:  # the newest with stored curves
        shown = next((m for m in reversed(chronological) if "curves" in m.metrics), None)
    if shown is not None:
        charts.extend(model_curves(shown.version, shown.metrics))
    canary = canary_chart(await _history(c, "canary"))
    if canary is not None:
        charts.append(canary)
    return {
        "learning": True,
        "shown": None if shown is None else shown.version,
        "models": models,
        "validation": VALIDATION,
        "holdout": holdout,
        "deployment": deployment,
        "transitions": list(reversed(deployment["transitions"])),
        "charts": charts,
    }


SCORES_SECONDS = 60.0


class ScoreHistogram:
    """The reliability histogram, recomputed at most every ``seconds``.

    Binning is cheap; reading every held user's score (``GuardService.scores``) is
    not: it walks the guard's whole user cache (about 0.9 s for 200,000 users on the
    development machine). So the guard page shows counts up to ``seconds`` old, and
    only the look that finds them older pays for the walk."""

    def __init__(
        self, seconds: float = SCORES_SECONDS, clock: Callable[[], float] = time.time
    ) -> None:
        self._seconds = seconds
        self._clock = clock
        self._chart: Chart | None = None
        self._at = 0.0

    def chart(self, scores: Callable[[], list[float]]) -> tuple[Chart, float]:
        """The histogram and when its counts were read."""
        now = self._clock()
        if self._chart is None or now - self._at >= self._seconds:
            self._chart = histogram("reliability", "Reliability scores", scores(), 0, 100, 10)
            self._at = now
        return self._chart, self._at


async def guard_page(c: Container, scores: ScoreHistogram | None = None) -> dict[str, Any]:
    suspects = c.guard.suspects(SUSPECTS)
    signals: dict[str, dict[str, Any]] = {}
    for record in suspects[:SIGNALS_OF]:
        try:
            report = await c.guard.report(record.user_id)
        except NotFound:  # erased meanwhile
            continue
        signals[record.user_id] = {
            name: s["value"] for name, s in report["signals"].items() if s["fired"]
        }
    chart, scores_at = (scores or ScoreHistogram(0.0)).chart(c.guard.scores)
    return {
        "enabled": c.settings.spam.enabled,
        "suspects": [r for r in suspects if r.status != "blocked"],
        "blocked": [r for r in suspects if r.status == "blocked"],
        "signals": signals,
        "counts": c.guard.status_counts(),
        "charts": [chart],
        "scores_at": scores_at,
    }


async def user_page(c: Container, user_id: str) -> dict[str, Any]:
    key = c.user_key(user_id)
    try:
        prefs = await c.preferences.get(key)
    except NotFound:
        prefs = None
    strategy = await c.ranker.strategy(key, expose=False)
    strongest: list[tuple[int, float]] = []
    if prefs is not None:
        order = np.argsort(-np.abs(prefs.vector), kind="stable")[:STRONGEST]
        strongest = [(int(i), float(prefs.vector[i])) for i in order if prefs.vector[i] != 0]
    now = time.time()
    events = await c.event_log.read_user_events(key, now - RECENT_DAYS * 86400.0, now)
    try:
        reliability: dict[str, Any] | None = await c.guard.report(key)
    except NotFound:
        reliability = None
    return {
        "user_id": user_id,
        "found": prefs is not None or bool(events),
        "preferences": prefs,
        "strategy": strategy,
        "strongest": strongest,
        "events": events[-RECENT_EVENTS:][::-1],
        "reliability": reliability,
        "exposures": c.experiments.exposures_of(key),
        "privacy": c.privacy is not None,
    }
