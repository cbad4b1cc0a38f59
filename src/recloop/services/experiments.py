"""A/B experiments: lifecycle, GrowthBook-compatible assignment, exposures, live statistics.

Statistics are kept live as mergeable sufficient statistics per (variant,
metric) (``core.stats.PairStats``): every exposed user contributes one pair
(x, y) per metric — y the metric since exposure, x the CUPED covariate (the
same metric in the ``cuped_days`` before exposure) or a ratio's denominator.
An event moves a user's (x, y); the variant's sums move by the difference, in
the same transaction as the user's state (exactly once, like everything the
processor applies). Results are computed from the sums on request, less the
contribution of the users flagged now (``excluded``: suspect or blocked): each
one's pair, taken away as erasure takes it (``stats_delta(None, values)``), and
their exposures. The stored sums keep everyone, so a user unblocked counts again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from recloop.core import experiments as xp
from recloop.core import stats
from recloop.core.assignment import assign
from recloop.core.errors import InvalidInput, NotFound
from recloop.core.experiments import Experiment, Metric, UserMetric
from recloop.core.stats import PairStats
from recloop.ports import EventLog, Exposure, StateChanges, StateStore
from recloop.resilience import RetryCounts, retry_read
from recloop.services.batching import GroupCommit

DAY = 86_400.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ExperimentsConfig:
    cuped_days: float = 14.0
    correction: str = "holm"
    srm_threshold: float = 0.001
    sequential_tuning: float = 5000.0


class ExperimentService:
    def __init__(
        self,
        store: StateStore,
        log_: EventLog,
        config: ExperimentsConfig,
        clock: Callable[[], float] = time.time,
        retries: RetryCounts | None = None,
        holds: Callable[[str], bool] | None = None,
        excluded: Callable[[], Collection[str]] | None = None,
    ) -> None:
        """``holds(user_id)``: whether this process holds events of the user not yet in
        the store's state (the processor); with the store, it tells users who have no
        event at all, whose pre-period needs no read of the log. ``excluded()``: the
        users results leave out now (the guard's flagged users)."""
        self._holds = holds
        self._excluded = excluded
        self._store = store
        self._log = log_
        self._retries = retries
        self._config = config
        self._clock = clock
        self._experiments: dict[str, Experiment] = {}
        self._exposures: dict[str, dict[str, Exposure]] = {}
        self._values: dict[str, dict[tuple[str, str], UserMetric]] = {}
        self._stats: dict[str, dict[tuple[str, str], PairStats]] = {}
        self._running_by_user: dict[str, list[str]] = {}
        self._recording: dict[str, asyncio.Future[None]] = {}
        self._writer: GroupCommit[StateChanges, None] = GroupCommit("exposure-writer", self._write)

    async def _write(self, batch: list[StateChanges]) -> list[None]:
        merged = StateChanges()
        for changes in batch:
            merged += changes
        await self._store.commit(merged)
        return [None] * len(batch)

    async def start(self) -> None:
        for exp in await self._store.get_experiments():
            self._experiments[exp.experiment_id] = exp
            if exp.status == "draft":
                continue
            eid = exp.experiment_id
            self._exposures[eid] = {e.user_id: e for e in await self._store.get_exposures(eid)}
            self._values[eid] = {(u, m): v for u, m, v in await self._store.get_user_metrics(eid)}
            self._stats[eid] = {
                (v, m): s for v, m, s in await self._store.get_experiment_stats(eid)
            }
            if exp.status == "running":
                for user_id in self._exposures[eid]:
                    self._running_by_user.setdefault(user_id, []).append(eid)
        self._writer.start()

    async def stop(self) -> None:
        await self._writer.stop()

    async def refresh(self, statistics: bool) -> None:
        """Take in what other processes changed (distributed deployment).

        Definitions and statuses are replaced; exposures recorded elsewhere are
        added, with their users' stored metric values. Values of exposures known
        here are kept: a worker is the only writer of its users' values, and the
        store may not hold its latest commit yet. ``statistics``: replace the
        variant statistics, and the flagged users' values, too (an API instance,
        which answers for results but does not move them: the values are what it
        takes away for a flagged user).
        """
        for exp in await self._store.get_experiments():
            eid = exp.experiment_id
            was = self._experiments.get(eid)
            self._experiments[eid] = exp
            if exp.status == "draft":
                continue
            exposures = self._exposures.setdefault(eid, {})
            values = self._values.setdefault(eid, {})
            self._stats.setdefault(eid, {})
            stored = await self._store.get_exposures(eid)
            new = [e for e in stored if e.user_id not in exposures]
            if new:
                fresh = {e.user_id for e in new}
                for u, m, v in await self._store.get_user_metrics(eid):
                    if u in fresh:
                        values[(u, m)] = v
                for e in new:
                    exposures[e.user_id] = e
            if statistics:
                table = await self._store.get_experiment_stats(eid)
                self._stats[eid] = {(v, m): st for v, m, st in table}
                flagged = [e.user_id for e in self._flagged_exposures(eid)]
                if flagged:  # what results take away for them: their values as stored
                    for u, m, v in await self._store.get_user_metrics(eid, flagged):
                        values[(u, m)] = v
            running = exp.status == "running"
            if running and (was is None or was.status != "running"):
                users: Iterable[str] = exposures
            elif running:
                users = (e.user_id for e in new)
            else:
                users = ()
                for user_id in exposures:
                    held = self._running_by_user.get(user_id, [])
                    if eid in held:
                        held.remove(eid)
            for user_id in users:
                held = self._running_by_user.setdefault(user_id, [])
                if eid not in held:
                    held.append(eid)

    # -- definitions and lifecycle ------------------------------------------------

    def get(self, experiment_id: str) -> Experiment:
        exp = self._experiments.get(experiment_id)
        if exp is None:
            raise NotFound("experiment", experiment_id)
        return exp

    def all(self) -> list[Experiment]:
        return sorted(self._experiments.values(), key=lambda e: e.created_at)

    async def create(self, exp: Experiment) -> Experiment:
        if exp.experiment_id in self._experiments:
            raise InvalidInput("experiment_id", f"experiment {exp.experiment_id!r} already exists")
        exp = replace(
            exp, status="draft", created_at=self._clock(), seed=exp.seed or exp.experiment_id
        )
        xp.check_definition(exp)
        await self._store.put_experiment(exp)
        self._experiments[exp.experiment_id] = exp
        return exp

    async def update(self, experiment_id: str, changes: Mapping[str, Any]) -> Experiment:
        """Change a definition: anything while draft; never what would reshuffle users after."""
        current = self.get(experiment_id)
        xp.check_update(current, changes)
        data = {**xp.to_dict(current), **changes}
        updated = xp.from_dict(data)
        xp.check_definition(updated)
        await self._store.put_experiment(updated)
        self._experiments[experiment_id] = updated
        return updated

    async def transition(self, experiment_id: str, action: str) -> Experiment:
        current = self.get(experiment_id)
        status = xp.transition(current.status, action)  # type: ignore[arg-type]
        now = self._clock()
        if status == "running":
            updated = replace(current, status=status, started_at=now)
            self._exposures.setdefault(experiment_id, {})
            self._values.setdefault(experiment_id, {})
            self._stats.setdefault(experiment_id, {})
        else:
            updated = replace(current, status=status, stopped_at=now)
            for user_id in self._exposures.get(experiment_id, {}):
                running = self._running_by_user.get(user_id, [])
                if experiment_id in running:
                    running.remove(experiment_id)
        await self._store.put_experiment(updated)
        self._experiments[experiment_id] = updated
        return updated

    # -- assignment and exposure ------------------------------------------------------

    def variant_for(self, exp: Experiment, user_id: str) -> str | None:
        """The user's variant by GrowthBook's hashing, or None if outside the traffic allocation."""
        result = assign(
            user_id,
            exp.seed,
            len(exp.variants),
            coverage=exp.traffic_allocation,
            weights=exp.weights(),
            hash_version=exp.hash_version,
        )
        if result.variant_index is None:
            return None
        return exp.variants[result.variant_index].key

    async def expose(self, experiment_id: str, user_id: str) -> str | None:
        """The user's variant; the first exposure of a running experiment is recorded durably."""
        exp = self.get(experiment_id)
        variant = self.variant_for(exp, user_id)
        if variant is not None and exp.status == "running":
            await self._record_exposures([(exp, variant)], user_id)
        return variant

    async def expose_running(self, user_id: str) -> list[tuple[Experiment, str]]:
        """Every running experiment the user is in, with the variant; records exposures."""
        found = []
        for exp in self._experiments.values():
            if exp.status != "running":
                continue
            variant = self.variant_for(exp, user_id)
            if variant is not None:
                found.append((exp, variant))
        await self._record_exposures(found, user_id)
        return found

    def running_variants(self, user_id: str) -> list[tuple[Experiment, str]]:
        """Every running experiment the user is in, with the variant; records nothing
        (a look, as the console's: :meth:`expose_running` records the exposures)."""
        found = []
        for exp in self._experiments.values():
            if exp.status == "running":
                variant = self.variant_for(exp, user_id)
                if variant is not None:
                    found.append((exp, variant))
        return found

    def exposures_of(self, user_id: str) -> list[dict[str, Any]]:
        """The user's recorded exposures: experiment, variant, when (a read)."""
        found = []
        for experiment_id, exposures in self._exposures.items():
            exposure = exposures.get(user_id)
            if exposure is not None:
                found.append(
                    {
                        "experiment_id": experiment_id,
                        "variant": exposure.variant,
                        "exposed_at": exposure.exposed_at,
                    }
                )
        return found

    async def _record_exposures(
        self, assigned: Sequence[tuple[Experiment, str]], user_id: str
    ) -> None:
        new = [(e, v) for e, v in assigned if user_id not in self._exposures[e.experiment_id]]
        if not new:
            return
        # Concurrent first requests of one user share one recording.
        running = self._recording.get(user_id)
        if running is not None:
            await asyncio.shield(running)
            return await self._record_exposures(assigned, user_id)
        task = asyncio.ensure_future(self._record_new(new, user_id))
        self._recording[user_id] = task
        try:
            await asyncio.shield(task)
        finally:
            if self._recording.get(user_id) is task:
                del self._recording[user_id]

    async def _record_new(self, new: Sequence[tuple[Experiment, str]], user_id: str) -> None:
        now = self._clock()
        since = now - self._config.cuped_days * DAY
        pre: list[tuple[str, float | None]] = []
        if await self._may_have_events(user_id):
            history = await retry_read(
                "read_user_events",
                self._log.read_user_events,
                user_id,
                since,
                now,
                counts=self._retries,
            )
            pre = [(e.type, e.value) for e in history]
        changes = StateChanges()
        for exp, variant in new:
            eid = exp.experiment_id
            if user_id in self._exposures[eid]:
                continue  # exposed meanwhile by a concurrent request
            exposure = Exposure(eid, user_id, variant, now)
            self._exposures[eid][user_id] = exposure
            self._running_by_user.setdefault(user_id, []).append(eid)
            changes.exposures.append(exposure)
            for metric in exp.all_metrics:
                values = UserMetric(0.0, xp.pre_period_value(metric, pre))
                self._set(changes, exp, user_id, variant, metric, None, values)
        if changes.exposures:
            await self._writer.submit([changes])

    async def _may_have_events(self, user_id: str) -> bool:
        """False only for a user with no event anywhere: none held by the processor and
        no state in the store (a read by primary key, unlike the log's per-user scan)."""
        if self._holds is None or self._holds(user_id):
            return True
        stored = await retry_read(
            "get_users", self._store.get_users, [user_id], counts=self._retries
        )
        return bool(stored)

    def _set(
        self,
        changes: StateChanges,
        exp: Experiment,
        user_id: str,
        variant: str,
        metric: Metric,
        old: UserMetric | None,
        new: UserMetric,
    ) -> None:
        eid = exp.experiment_id
        self._values[eid][(user_id, metric.name)] = new
        delta = xp.stats_delta(old, new)
        stats_key = (variant, metric.name)
        current = self._stats[eid].get(stats_key)
        self._stats[eid][stats_key] = delta if current is None else current + delta
        changes.user_metrics.append((eid, user_id, metric.name, new))
        changes.experiment_stats.append((eid, variant, metric.name, delta))

    # -- erasure ---------------------------------------------------------------------

    async def erase_user(
        self,
        user_id: str,
        exposures: Sequence[Exposure],
        values: Sequence[tuple[str, str, UserMetric]],
        commit: Callable[[StateChanges], Awaitable[T]],
    ) -> T:
        """Take the user out of every experiment's statistics, then out of this service.

        ``exposures`` and ``values`` ((experiment_id, metric, values)) are the user's
        stored ones. The changes handed to ``commit`` move each variant's sums from the
        user's values to *no user* (``stats_delta(None, values)`` taken away: n - 1 and
        the user's sums); ``commit`` writes them with the deletion of the user's rows, in
        one transaction. This service's memory follows once it has, so results read
        afterwards equal those of the experiment without the user.
        """
        variants = {e.experiment_id: e.variant for e in exposures}
        changes = StateChanges()
        for eid, metric, value in values:
            variant = variants.get(eid)
            if variant is not None:
                delta = PairStats() - xp.stats_delta(None, value)
                changes.experiment_stats.append((eid, variant, metric, delta))
        result = await commit(changes)
        for eid, variant, metric, delta in changes.experiment_stats:
            table = self._stats.get(eid)
            if table is not None:
                current = table.get((variant, metric))
                table[(variant, metric)] = delta if current is None else current + delta
        self.forget(user_id)
        return result

    def forget(self, user_id: str) -> None:
        """Drop what this service holds about the user (their rows are erased elsewhere)."""
        for eid, held in self._exposures.items():
            if held.pop(user_id, None) is not None:
                values = self._values.get(eid, {})
                for key in [k for k in values if k[0] == user_id]:
                    del values[key]
        self._running_by_user.pop(user_id, None)

    def held_users(self) -> set[str]:
        """The users with an exposure held here."""
        return {u for held in self._exposures.values() for u in held}

    # -- learning from events (called by the processor, inside its commit) -------------

    def watches(self, user_id: str) -> bool:
        """Whether events of ``user_id`` can move a running experiment's statistics."""
        return bool(self._running_by_user.get(user_id))

    def observe(
        self, user_id: str, event_type: str, value: float | None, timestamp: float
    ) -> StateChanges:
        """The metric changes one applied event causes; they commit with the user's state."""
        changes = StateChanges()
        for eid in self._running_by_user.get(user_id, ()):
            exposure = self._exposures[eid][user_id]
            if timestamp < exposure.exposed_at:
                continue
            exp = self._experiments[eid]
            for metric in exp.all_metrics:
                if event_type not in metric.events():
                    continue
                old = self._values[eid].get((user_id, metric.name), UserMetric())
                new = xp.observe(metric, old, event_type, value)
                if new != old:
                    self._set(changes, exp, user_id, exposure.variant, metric, old, new)
        return changes

    # -- results ------------------------------------------------------------------

    def exposures_by_variant(self, experiment_id: str) -> dict[str, int]:
        """Exposed users per variant, the flagged ones left out."""
        exp = self.get(experiment_id)
        counts = {v.key: 0 for v in exp.variants}
        for exposure in self._exposures.get(experiment_id, {}).values():
            counts[exposure.variant] = counts.get(exposure.variant, 0) + 1
        for exposure in self._flagged_exposures(experiment_id):
            counts[exposure.variant] -= 1
        return counts

    def _flagged_exposures(self, experiment_id: str) -> list[Exposure]:
        if self._excluded is None:
            return []
        held = self._exposures.get(experiment_id, {})
        return [held[u] for u in self._excluded() if u in held]

    def counted_stats(self, experiment_id: str) -> dict[tuple[str, str], PairStats]:
        """Each (variant, metric)'s sums less the flagged users' pairs: what results read.

        A flagged user's pair is taken away as :meth:`erase_user` takes it away, from
        the values they reached before they were flagged (their events are not learnt
        from since, so the values stay where they were)."""
        table = dict(self._stats.get(experiment_id, {}))
        values = self._values.get(experiment_id, {})
        exp = self._experiments.get(experiment_id)
        for exposure in self._flagged_exposures(experiment_id):
            for metric in () if exp is None else exp.all_metrics:
                value = values.get((exposure.user_id, metric.name))
                key = (exposure.variant, metric.name)
                if value is not None and key in table:
                    table[key] = table[key] - xp.stats_delta(None, value)
        return table

    def results(self, experiment_id: str) -> dict[str, Any]:
        exp = self.get(experiment_id)
        observed = self.exposures_by_variant(experiment_id)
        srm = stats.srm_test(
            observed, {v.key: v.weight for v in exp.variants}, self._config.srm_threshold
        )
        table = self.counted_stats(experiment_id)
        metrics = []
        comparisons: list[dict[str, Any]] = []
        for metric in exp.all_metrics:
            arms = [(v.key, table.get((v.key, metric.name), PairStats())) for v in exp.variants]
            rows = []
            for key, pair in arms:
                row: dict[str, Any] = {"key": key, "users": pair.n, "mean": _mean(metric, pair)}
                row["stddev"] = None if metric.type == "ratio" or pair.n < 2 else pair.y.stddev
                if metric.type == "binomial":
                    row["conversions"] = round(pair.sum_y)
                rows.append(row)
            base_key, base = arms[0]
            compared = []
            for key, pair in arms[1:]:
                result = self._compare(exp, metric, base, pair)
                entry = {"variant": key, "baseline": base_key, **result}
                compared.append(entry)
                comparisons.append(entry)
            metrics.append(
                {
                    "name": metric.name,
                    "type": metric.type,
                    "guardrail": metric in exp.guardrails,
                    "variants": rows,
                    "comparisons": compared,
                }
            )
        adjusted = stats.adjust_pvalues(
            [c["p_value"] for c in comparisons], method=self._config.correction
        )
        for entry, p_adj in zip(comparisons, adjusted, strict=True):
            entry["p_value_adjusted"] = p_adj
            entry["significant"] = p_adj is not None and p_adj < exp.alpha
        warnings = []
        if any(v.config for v in exp.variants):
            warnings.append(
                "treatment and control feed the same retraining pool: the feedback loop "
                "couples the arms (a model trained on both carries each arm's effect to the other)"
            )
        if srm.flagged:
            warnings.append("sample ratio mismatch: do not trust the comparisons")
        return {
            "experiment_id": experiment_id,
            "status": exp.status,
            "correction": self._config.correction,
            "sequential": exp.sequential,
            "alpha": exp.alpha,
            "srm": {
                "p_value": srm.p_value,
                "flagged": srm.flagged,
                "observed": dict(srm.observed),
                "expected": dict(srm.expected),
            },
            "metrics": metrics,
            "warnings": warnings,
        }

    def _compare(
        self, exp: Experiment, metric: Metric, control: PairStats, treatment: PairStats
    ) -> dict[str, Any]:
        alpha = exp.alpha
        if metric.type == "ratio":
            result = stats.ratio_test(control, treatment, alpha)
        else:
            # CUPED whenever the pre-exposure covariate varies; else the plain test.
            result = stats.cuped_welch_test(control, treatment, alpha)
            if not result.cuped:
                plain = stats.proportions_test if metric.type == "binomial" else stats.welch_test
                result = plain(control.y, treatment.y, alpha)
        if exp.sequential:
            n = control.n + treatment.n
            result = stats.make_sequential(result, n, alpha, self._config.sequential_tuning)
        return {
            "absolute_effect": result.absolute_effect,
            "ci_absolute": _pair(result.ci_absolute),
            "relative_effect": result.relative_effect,
            "ci_relative": _pair(result.ci_relative),
            "p_value": result.p_value,
            "test": result.test,
            "cuped": result.cuped,
            "reason": result.reason,
        }


def _pair(ci: tuple[float, float] | None) -> list[float] | None:
    return None if ci is None else [ci[0], ci[1]]


def _mean(metric: Metric, pair: PairStats) -> float | None:
    if metric.type == "ratio":
        return None if pair.sum_x == 0 else pair.sum_y / pair.sum_x
    return None if pair.n == 0 else pair.sum_y / pair.n
