"""The console's plots over time: a sampler that copies figures the services hold in
memory into the history store every ``console.history_interval_seconds``, and the
reads of the pages.

Sampling reads no log and scans nothing: the optimizer's posteriors
(:meth:`Optimizer.overview`), each running experiment's sums (its
:meth:`~ExperimentService.results`, made anytime-valid) and the canary's
counts (:meth:`LearningService.deployment`, one small row). What each kind of
point holds (:class:`~recloop.ports.HistoryPoint`):

==============  ===========================  =================================================
kind            scope / subject              values
==============  ===========================  =================================================
``algorithm``   segment / algorithm          ``mean``, ``low``, ``high`` (the posterior CTR's
                                             95 % credible band), ``weight``, ``impressions``,
                                             ``clicks``
``experiment``  experiment / metric:variant  ``effect``, ``low``, ``high`` (relative effect and
                                             its anytime-valid interval), ``users`` (both
                                             arms), ``power`` and ``remaining`` (users per
                                             arm still needed) to detect ``power_mde``
``canary``      judged version / ``canary``  ``effect``, ``low``, ``high`` (green against blue,
                or ``watch``                 the anytime-valid interval the judge uses),
                                             ``margin`` (rollback below ``-margin``, promote
                                             above it), ``baseline`` and ``served``
                                             impressions
==============  ===========================  =================================================

Power and remaining sample are the fixed-horizon test's (``core.stats.power_at``
and ``sample_size`` on the baseline arm's mean), a guide to how far the
experiment is from seeing ``power_mde``; the anytime-valid interval needs more.
Points older than ``retention_seconds`` are purged after each sample.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from recloop.config import ConsoleSettings, LearningSettings
from recloop.core.deployment import judge_canary
from recloop.core.errors import InvalidInput, NotFound
from recloop.core.stats import power_at, sample_size
from recloop.ports import HistoryPoint, HistoryStore
from recloop.services.experiments import ExperimentService
from recloop.services.learning import LearningService
from recloop.services.optimizer import Optimizer
from recloop.services.tasks import stop_tasks

log = logging.getLogger(__name__)

READ_LIMIT = 200_000
"""Most points one page reads (a page shows a window of its subjects' samples)."""
PURGE_BATCH = 10_000


Series = dict[tuple[str, str], list[HistoryPoint]]
"""Points by (scope, subject), oldest first."""


class HistoryService:
    def __init__(
        self,
        store: HistoryStore,
        config: ConsoleSettings,
        canary: LearningSettings,
        optimizer: Optimizer,
        experiments: ExperimentService,
        learning: LearningService | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._config = config
        self._canary_settings = canary
        self._optimizer = optimizer
        self._experiments = experiments
        self._learning = learning
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        """Why the last background sample failed (None: it did not)."""
        self.last_sample: tuple[float, int] | None = None
        """When the last sample was taken, and the points it wrote."""

    @property
    def config(self) -> ConsoleSettings:
        return self._config

    @property
    def sampling(self) -> bool:
        """Whether the background sampler runs in this process."""
        return self._task is not None and not self._task.done()

    # -- sampling --------------------------------------------------------------------------

    async def sample(self) -> int:
        """Take one sample of every subject now, then purge what is past retention; the
        points written."""
        at = self._clock()
        points = [
            *await self._algorithms(at),
            *self._experiment_points(at),
            *await self._canary(at),
        ]
        await self._store.append(points)
        self.last_sample = (at, len(points))
        before = at - self._config.history_retention_seconds
        while await self._store.purge(before, PURGE_BATCH) >= PURGE_BATCH:
            pass
        return len(points)

    async def _algorithms(self, at: float) -> list[HistoryPoint]:
        return [
            HistoryPoint(
                "algorithm",
                row["segment"],
                row["algorithm"],
                at,
                {
                    "mean": row["posterior_mean"],
                    "low": row["posterior_interval"][0],
                    "high": row["posterior_interval"][1],
                    "weight": row["weight"],
                    "impressions": float(row["impressions"]),
                    "clicks": float(row["clicks"]),
                },
            )
            for row in await self._optimizer.overview()
        ]

    def _experiment_points(self, at: float) -> list[HistoryPoint]:
        points = []
        for exp in self._experiments.all():
            if exp.status != "running":
                continue
            try:
                results = self._experiments.results(exp.experiment_id, sequential=True)
            except NotFound:  # deleted meanwhile
                continue
            for metric in results["metrics"]:
                arms = {row["key"]: row for row in metric["variants"]}
                for c in metric["comparisons"]:
                    base, arm = arms[c["baseline"]], arms[c["variant"]]
                    low, high = c["ci_relative"] or (None, None)
                    power, remaining = self._power(metric["type"], base, arm, exp.alpha)
                    points.append(
                        HistoryPoint(
                            "experiment",
                            exp.experiment_id,
                            f"{metric['name']}:{c['variant']}",
                            at,
                            {
                                "effect": c["relative_effect"],
                                "low": low,
                                "high": high,
                                "users": float(base["users"] + arm["users"]),
                                "power": power,
                                "remaining": remaining,
                            },
                        )
                    )
        return points

    def _power(
        self, kind: str, base: dict[str, Any], arm: dict[str, Any], alpha: float
    ) -> tuple[float | None, float | None]:
        """Power now and users per arm still needed to detect ``power_mde`` (None when the
        baseline cannot tell: a ratio metric, no users, a rate of 0 or 1, no spread)."""
        if kind not in ("binomial", "continuous") or base["mean"] is None:
            return None, None
        c = self._config
        n = min(base["users"], arm["users"])
        shape: dict[str, Any] = {"relative": True, "metric": kind, "stddev": base["stddev"]}
        try:
            needed = sample_size(base["mean"], c.power_mde, alpha, c.power, **shape)
            return power_at(n, base["mean"], c.power_mde, alpha, **shape), float(max(needed - n, 0))
        except InvalidInput:
            return None, None

    async def _canary(self, at: float) -> list[HistoryPoint]:
        if self._learning is None:
            return []
        deployment = await self._learning.deployment()
        slots, live = deployment["slots"], deployment["live"]
        if slots.get("green_version"):
            scope, subject = slots["green_version"], "canary"
            baseline = (live["blue"]["impressions"], live["blue"]["clicks"])
            served = (live["green"]["impressions"], live["green"]["clicks"])
        elif slots.get("promoted_at") is not None and slots.get("blue_version"):
            scope, subject = slots["blue_version"], "watch"
            baseline = (slots["baseline_impressions"], slots["baseline_clicks"])
            served = (live["blue"]["impressions"], live["blue"]["clicks"])
        else:
            return []
        c = self._canary_settings
        numbers = judge_canary(
            baseline, served, c.min_canary_impressions, c.rollback_margin, c.alpha
        ).numbers
        values: dict[str, float | None] = {
            "effect": numbers.get("relative_effect"),
            "low": numbers.get("ci_low"),
            "high": numbers.get("ci_high"),
            "margin": c.rollback_margin,
            # the canary rolls back beyond canary_tolerance, the watch beyond the margin
            "tolerance": c.canary_tolerance if subject == "canary" else c.rollback_margin,
            "baseline": float(baseline[0]),
            "served": float(served[0]),
        }
        return [HistoryPoint("canary", scope, subject, at, values)]

    # -- background ------------------------------------------------------------------------

    async def start(self) -> None:
        """Sample now and every ``history_interval_seconds``, in the background (0: never)."""
        if self._task is None and self._config.history_interval_seconds > 0:
            self._task = asyncio.create_task(self._sample_forever(), name="history-sampler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_tasks(task)

    async def _sample_forever(self) -> None:
        while True:
            try:
                await self.sample()
                self.last_error = None
            except Exception as exc:  # the next sample tries again; the pages say it failed
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("history sample failed: %s", self.last_error)
            await asyncio.sleep(self._config.history_interval_seconds)

    # -- reads -----------------------------------------------------------------------------

    async def series(self, kind: str, scope: str | None = None) -> Series:
        """``kind``'s points of the last ``history_window_hours`` (of ``scope`` only unless
        None)."""
        since = self._clock() - self._config.history_window_seconds
        found: Series = defaultdict(list)
        for p in await self._store.read(kind, scope, since, READ_LIMIT):
            found[(p.scope, p.subject)].append(p)
        return dict(found)
