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
from recloop.console.charts import Chart, Series, finite, forest, histogram
from recloop.container import Container
from recloop.core.errors import NotFound
from recloop.core.events import FEEDBACK_TYPES
from recloop.metrics import Metrics

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
        "dead_letters": c.processor.dead_letters,
        "experiments": experiments,
        "transitions": transitions,
        "learning": c.learning is not None,
        "distributed": c.distributed,
    }


def experiments_page(c: Container) -> dict[str, Any]:
    return {
        "experiments": sorted(c.experiments.all(), key=lambda e: -e.created_at),
        "event_types": sorted(FEEDBACK_TYPES - {"impression"}),
    }


def experiment_page(c: Container, experiment_id: str) -> dict[str, Any]:
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
    return {"experiment": exp, "results": results, "charts": charts}


def algorithms_page(rows: list[dict[str, Any]], algorithms: tuple[str, ...]) -> dict[str, Any]:
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
    return {"segments": dict(by_segment), "charts": charts, "algorithms": algorithms}


VALIDATION = ("auc", "log_loss", "calibration_error")


def holdout(metrics: dict[str, Any], who: str) -> dict[str, Any]:
    """``who``'s (``candidate`` or ``champion``) holdout metrics in a model's record: the
    training job scores both on the same holdout (``learning.training``)."""
    found = metrics.get(who)
    return found if isinstance(found, dict) else {}


async def models_page(c: Container) -> dict[str, Any]:
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
    return {
        "learning": True,
        "models": models,
        "validation": VALIDATION,
        "holdout": holdout,
        "deployment": deployment,
        "transitions": list(reversed(deployment["transitions"])),
        "charts": charts,
    }


async def guard_page(c: Container) -> dict[str, Any]:
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
    return {
        "enabled": c.settings.spam.enabled,
        "suspects": [r for r in suspects if r.status != "blocked"],
        "blocked": [r for r in suspects if r.status == "blocked"],
        "signals": signals,
        "counts": c.guard.status_counts(),
        "charts": [histogram("reliability", "Reliability scores", c.guard.scores(), 0, 100, 10)],
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
