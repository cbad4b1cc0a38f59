"""The algorithm optimizer: per-segment Thompson sampling over recommendation algorithms.

Counts reach it two ways, both durable and applied exactly once:

- feedback events carrying ``attribution.algorithm``, committed by the
  processor together with the user state (:meth:`Optimizer.record` runs after
  the commit);
- aggregated reports from the orchestrator (:meth:`Optimizer.report`), stored
  with their ``report_id`` in the same transaction as the counts.

Weights are computed from counts held in memory (``core.bandit.WindowCounts``),
so reads never wait on the write path. Counts taken back (:meth:`Optimizer.take_back`:
the attributed feedback of the users the guard flags now) are left out of every total
while they are; the stored counts keep them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from recloop.config import BanditSettings
from recloop.core.availability import AlgorithmStatus, evidence_since, next_status
from recloop.core.bandit import (
    BetaPrior,
    PerformanceCounts,
    PooledPrior,
    Posterior,
    WindowCounts,
    bucket_start,
    disable_reason,
    floor_weights,
    mean_weights,
    pooled_prior,
    posterior,
    probability_best,
    sample_weights,
    segment_priors,
)
from recloop.core.errors import InvalidInput
from recloop.core.ids import uuid7
from recloop.core.segments import SEGMENTS
from recloop.ports import AlgorithmCount, OptimizerStore


@dataclass(frozen=True, slots=True)
class SegmentWeights:
    """What the orchestrator blends for one segment, and why."""

    segment: str
    weights: dict[str, float]
    disabled: list[AlgorithmStatus]
    mode: str
    computed_at: float
    seed: int
    evidence: float = 0.0
    """Impressions credited per enabled algorithm in the window, on average, each
    algorithm's at their effective sample size (``PerformanceCounts.effective_impressions``:
    the impressions themselves unless credited by inverse propensity); what
    ``exploration.segment_evidence_half`` shrinks a probing ε by."""


@dataclass(frozen=True, slots=True)
class PerformanceReport:
    """One aggregated report of the orchestrator, already resolved to a segment."""

    algorithm: str
    segment: str
    impressions: int
    clicks: int
    conversions: int
    satisfaction: float | None
    timestamp: float

    def counts(self) -> PerformanceCounts:
        sat_n = 0 if self.satisfaction is None else self.impressions
        sat_sum = 0.0 if self.satisfaction is None else self.satisfaction * self.impressions
        return PerformanceCounts(self.impressions, self.clicks, self.conversions, sat_sum, sat_n)


class Optimizer:
    def __init__(
        self,
        store: OptimizerStore,
        config: BanditSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        self._window = WindowCounts(config.bucket_seconds)
        self._taken_back: WindowCounts | None = None
        self._status: dict[tuple[str, str], AlgorithmStatus] = {}
        self._cache: dict[str, SegmentWeights] = {}
        self._seeds = np.random.default_rng(config.seed)
        self._expired_at = 0.0

    @property
    def algorithms(self) -> tuple[str, ...]:
        return tuple(self._config.algorithms)

    async def start(self) -> None:
        """Load the window's counts and the algorithms' status from the store."""
        now = self._clock()
        since = now - self._config.window_seconds - self._config.bucket_seconds
        self.record(await self._store.get_algorithm_counts(since))
        for status in await self._store.get_algorithm_status():
            self._status[(status.segment, status.algorithm)] = status

    async def reload(self) -> None:
        """Replace the window and the status with the store's (an API instance of the
        distributed deployment, where workers commit the counts)."""
        now = self._clock()
        since = now - self._config.window_seconds - self._config.bucket_seconds
        window = WindowCounts(self._config.bucket_seconds)
        for row in await self._store.get_algorithm_counts(since):
            if row.algorithm in self._config.algorithms:
                window.add(row.segment, row.algorithm, row.bucket_start, row.counts)
        statuses = await self._store.get_algorithm_status()
        self._window = window
        self._status = {(s.segment, s.algorithm): s for s in statuses}
        self._cache.clear()

    # -- counting --------------------------------------------------------------

    def record(self, rows: Iterable[AlgorithmCount]) -> None:
        """Add committed counts to the in-memory window."""
        for row in rows:
            if row.algorithm in self._config.algorithms:
                self._window.add(row.segment, row.algorithm, row.bucket_start, row.counts)

    def take_back(self, rows: Iterable[AlgorithmCount]) -> None:
        """Leave ``rows`` out of every total from now on, in place of those left out
        before (the services' retraction: the flagged users' attributed feedback)."""
        window = WindowCounts(self._config.bucket_seconds)
        for row in rows:
            if row.algorithm in self._config.algorithms:
                window.add(row.segment, row.algorithm, row.bucket_start, row.counts)
        self._taken_back = window if window.keys() else None
        self._cache.clear()

    def count_row(
        self, segment: str, algorithm: str, timestamp: float, counts: PerformanceCounts
    ) -> AlgorithmCount:
        return AlgorithmCount(
            segment, algorithm, bucket_start(timestamp, self._config.bucket_seconds), counts
        )

    async def report(
        self, reports: Sequence[PerformanceReport], report_id: str | None, batch: bool = True
    ) -> tuple[str, bool]:
        """Store aggregated reports durably, once per ``report_id``; (report_id, applied).

        ``batch`` says whether errors name ``records.<i>.algorithm`` or just ``algorithm``.
        """
        for i, r in enumerate(reports):
            if r.algorithm not in self._config.algorithms:
                raise InvalidInput(
                    f"records.{i}.algorithm" if batch else "algorithm",
                    f"unknown algorithm {r.algorithm!r}; known: {list(self._config.algorithms)}",
                )
        rows = [self.count_row(r.segment, r.algorithm, r.timestamp, r.counts()) for r in reports]
        report_id = report_id or uuid7()
        payload = orjson.dumps([_report_dict(r) for r in reports])
        applied = await self._store.add_performance_report(report_id, payload, rows)
        if applied:
            self.record(rows)
            for r in reports:
                self._cache.pop(r.segment, None)
        return report_id, applied

    # -- weights ---------------------------------------------------------------

    def _totals(
        self, segment: str, algorithm: str, now: float, since: float | None
    ) -> PerformanceCounts:
        window = self._config.window_seconds
        if since is not None:
            window = min(window, now - since)
        totals = self._window.totals(segment, algorithm, now, window)
        if self._taken_back is None:
            return totals
        return totals - self._taken_back.totals(segment, algorithm, now, window)

    def window_totals(self, segment: str, now: float) -> dict[str, PerformanceCounts]:
        """Each algorithm's counts in the segment's window at ``now``."""
        return {alg: self._totals(segment, alg, now, None) for alg in self._config.algorithms}

    def pooled_prior(
        self, segment: str, now: float, totals: Mapping[str, PerformanceCounts] | None = None
    ) -> PooledPrior:
        """The segment's empirical-Bayes prior from every algorithm's counts in the window
        (``totals``: :meth:`window_totals`, if already read)."""
        c = self._config
        if totals is None:
            totals = self.window_totals(segment, now)
        counts = [totals[alg] for alg in c.algorithms]
        return pooled_prior(counts, c.prior_ctr, c.prior_strength, c.prior_min_strength)

    def priors(
        self, segment: str, now: float, totals: Mapping[str, PerformanceCounts] | None = None
    ) -> dict[str, BetaPrior]:
        """Each algorithm's prior: the pooled prior, its mean scaled by the default weights."""
        pooled = self.pooled_prior(segment, now, totals)
        return segment_priors(self._config.default_weights[segment], pooled.mean, pooled.strength)

    def posteriors(
        self,
        segment: str,
        now: float,
        priors: Mapping[str, BetaPrior] | None = None,
        totals: Mapping[str, PerformanceCounts] | None = None,
    ) -> dict[str, Posterior]:
        if totals is None:
            totals = self.window_totals(segment, now)
        if priors is None:
            priors = self.priors(segment, now, totals)
        return {alg: posterior(priors[alg], totals[alg]) for alg in self._config.algorithms}

    async def _review(
        self,
        segment: str,
        now: float,
        totals: Mapping[str, PerformanceCounts],
        priors: Mapping[str, BetaPrior],
    ) -> bool:
        """Move algorithms of ``segment`` between enabled and disabled as the evidence says
        (``totals``, ``priors``: the window's, read once per computation of the weights);
        whether any moved (their status was then written: counts may have come meanwhile)."""
        c = self._config
        changes = []
        for alg in c.algorithms:
            current = self._status.get((segment, alg))
            since = evidence_since(current)
            counts = totals[alg] if since is None else self._totals(segment, alg, now, since)
            post = posterior(priors[alg], counts)
            reason = disable_reason(
                counts, post, c.min_impressions, c.credible_level, c.disable_ctr
            )
            new = next_status(current, segment, alg, reason, now, c.cooldown_seconds)
            if new is not None:
                self._status[(segment, alg)] = new
                changes.append(new)
        if changes:
            await self._store.put_algorithm_status(changes)
        return bool(changes)

    def _disabled(self, segment: str) -> list[AlgorithmStatus]:
        return [
            s
            for alg in self._config.algorithms
            if (s := self._status.get((segment, alg))) is not None and not s.enabled
        ]

    async def weights(self, segment: str) -> SegmentWeights:
        """The segment's algorithm weights: enabled algorithms only, summing to 1.

        If every algorithm is disabled, the weights fall back to all of them
        (the orchestrator must recommend something); ``disabled`` still lists them.
        """
        c = self._config
        now = self._clock()
        cached = self._cache.get(segment)
        if (
            cached is not None
            and c.weight_mode in ("probability", "mean")
            and now - cached.computed_at < c.cache_seconds
        ):
            return cached
        if now - self._expired_at >= c.bucket_seconds:
            self._window.expire(now, c.window_seconds)  # keeps memory bounded by the window
            self._expired_at = now
        # The window's counts, read once: a week of hourly buckets per algorithm, summed
        # for the review, the prior, the posteriors and the evidence alike.
        totals = self.window_totals(segment, now)
        priors = self.priors(segment, now, totals)
        if await self._review(segment, now, totals, priors):
            totals = self.window_totals(segment, now)
            priors = self.priors(segment, now, totals)
        disabled = self._disabled(segment)
        off = {s.algorithm for s in disabled}
        enabled = [a for a in c.algorithms if a not in off] or list(c.algorithms)
        posts = self.posteriors(segment, now, priors, totals)
        live = {a: posts[a] for a in enabled}
        seed = int(self._seeds.integers(2**32))
        if c.weight_mode == "probability":
            drawn = probability_best(live, draws=c.draws, seed=seed)
            weights = floor_weights(drawn.weights, c.min_weight)
        elif c.weight_mode == "mean":
            drawn = mean_weights(live, seed=seed)
            weights = floor_weights(drawn.weights, c.min_weight)
        else:
            drawn = sample_weights(live, seed=seed)
            weights = drawn.weights
        evidence = sum(totals[a].effective_impressions for a in enabled)
        result = SegmentWeights(
            segment, weights, disabled, c.weight_mode, now, drawn.seed, evidence / len(enabled)
        )
        self._cache[segment] = result
        return result

    async def set_manual(
        self, algorithm: str, segments: Sequence[str] | None, enabled: bool, reason: str | None
    ) -> list[AlgorithmStatus]:
        """Enable or disable ``algorithm`` by hand; automatic rules leave it alone from then on."""
        targets = self._targets(algorithm, segments)
        now = self._clock()
        verb = "enabled" if enabled else "disabled"
        statuses = [
            AlgorithmStatus(segment, algorithm, enabled, True, reason or f"{verb} by hand", now)
            for segment in targets
        ]
        await self._store.put_algorithm_status(statuses)
        for status in statuses:
            self._status[(status.segment, algorithm)] = status
            self._cache.pop(status.segment, None)
        return statuses

    async def release_manual(self, algorithm: str, segments: Sequence[str] | None) -> None:
        """Hand ``algorithm`` back to the automatic rules (enabled until evidence disables it)."""
        targets = self._targets(algorithm, segments)
        now = self._clock()
        statuses = [
            AlgorithmStatus(s, algorithm, True, False, "returned to automatic rules", now)
            for s in targets
        ]
        await self._store.put_algorithm_status(statuses)
        for status in statuses:
            self._status[(status.segment, algorithm)] = status
            self._cache.pop(status.segment, None)

    def _targets(self, algorithm: str, segments: Sequence[str] | None) -> list[str]:
        if algorithm not in self._config.algorithms:
            raise InvalidInput(
                "name", f"unknown algorithm {algorithm!r}; known: {list(self._config.algorithms)}"
            )
        targets = list(segments) if segments else list(SEGMENTS)
        for i, segment in enumerate(targets):
            if segment not in SEGMENTS:
                raise InvalidInput(f"segments.{i}", f"unknown segment {segment!r}")
        return targets

    async def overview(self) -> list[dict[str, Any]]:
        """Per segment and algorithm: counts (and the impressions' effective sample size,
        what the posterior reads), rates, posterior, enabled, weight."""
        now = self._clock()
        rows = []
        for segment in SEGMENTS:
            weights = await self.weights(segment)
            posts = self.posteriors(segment, now)
            for alg in self._config.algorithms:
                counts = self._totals(segment, alg, now, None)
                post = posts[alg]
                status = self._status.get((segment, alg))
                rows.append(
                    {
                        "segment": segment,
                        "algorithm": alg,
                        "impressions": counts.impressions,
                        "effective_impressions": counts.effective_impressions,
                        "clicks": counts.clicks,
                        "conversions": counts.conversions,
                        "ctr": counts.ctr,
                        "conversion_rate": counts.conversion_rate,
                        "satisfaction": counts.satisfaction,
                        "posterior_mean": post.mean,
                        "posterior_interval": list(post.interval(0.95)),
                        "enabled": status is None or status.enabled,
                        "status_reason": None if status is None else status.reason,
                        "weight": weights.weights.get(alg, 0.0),
                    }
                )
        return rows


def _report_dict(r: PerformanceReport) -> dict[str, Any]:
    return {name: getattr(r, name) for name in PerformanceReport.__slots__}
