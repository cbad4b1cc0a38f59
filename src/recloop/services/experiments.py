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
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from recloop.config import ExperimentSettings
from recloop.core import experiments as xp
from recloop.core import stats
from recloop.core.assignment import Assigner
from recloop.core.errors import Conflict, NotFound
from recloop.core.events import Event
from recloop.core.experiments import Experiment, Metric, UserMetric
from recloop.core.stats import PairStats
from recloop.ports import (
    EventLog,
    ExperimentStore,
    Exposure,
    StateChanges,
    UserStateStore,
    WaitingReport,
)
from recloop.resilience import RetryCounts, retry_read
from recloop.services.batching import GroupCommit, ShuttingDown
from recloop.services.tasks import stop_tasks

DAY = 86_400.0

log = logging.getLogger(__name__)

T = TypeVar("T")


class ExperimentRecords(ExperimentStore, UserStateStore, Protocol):
    """What :class:`ExperimentService` uses of the state store: the experiments' records,
    the commit that writes exposures and metric values, and whether a user has any state
    (a first exposure's pre-period need not be read from the log without it)."""


class ExperimentService:
    def __init__(
        self,
        store: ExperimentRecords,
        log_: EventLog,
        config: ExperimentSettings,
        clock: Callable[[], float] = time.time,
        algorithms: Sequence[str] = (),
        retries: RetryCounts | None = None,
        holds: Callable[[str], bool] | None = None,
        committed_offset: Callable[[], int] | None = None,
        excluded: Callable[[], Collection[str]] | None = None,
        dispatched: Callable[[], int] | None = None,
        defer_covariates: bool = False,
        unsent: Callable[[], int] | None = None,
        stored: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        """``holds(user_id)``: whether this process holds events of the user not yet in
        the store's state (the processor); with the store, it tells users who have no
        event at all, whose pre-period needs no read of the log. ``excluded()``: the
        users results leave out now (the guard's flagged users).

        ``committed_offset()``: the log offset up to which every accepted event is in
        committed state (the embedded processor's watermark); events after it are
        accepted and not yet applied for good (implicit events wait for the flush). None
        (a distributed API instance): results cannot tell, and say so.

        ``dispatched()``: the highest log offset handed to the processor. Given (with
        ``committed_offset``), the processor hands every event it takes to
        :meth:`taken`, which keeps each running experiment's waiting events as they go
        by, so results count them without reading the log; events handed on and not
        taken yet (the processor's inbox) make the count incomplete. Not given: results
        count by reading the uncommitted log (:func:`pending_in_log`).

        ``defer_covariates``: a first exposure does not read the user's pre-period
        events from the log; the CUPED covariates of the users exposed meanwhile are
        read together, in one read of the log, every ``covariate_seconds``
        (:meth:`settle_covariates`). Only where this process is the one writer of the
        users' metric values (embedded): a distributed API instance records exposures
        while workers move the values.

        ``unsent()`` (a distributed API instance): the events it accepted and has not
        handed to Kafka yet (its spool); while there are some, the workers' reports are
        not complete.

        ``stored(user_id)``: whether the store holds state of the user, as the read path
        knows it (embedded: the preferences' read cache, so a user the strategy has just
        found unknown is not read again at their first exposure); None: a read by primary
        key each time."""
        self._stored = stored
        self._committed_offset = committed_offset
        self._dispatched = dispatched
        self._unsent = unsent
        self._defer_covariates = defer_covariates
        self._waiting: dict[str, _Waiting] = {}
        """Per running experiment, its events taken and not committed (:meth:`taken`)."""
        self._taken_upto = 0
        """The highest offset handed to :meth:`taken`."""
        self._covariates_due: dict[str, dict[str, float]] = {}
        """Per experiment, the users whose covariate is not read yet, with their exposure
        time (``defer_covariates``)."""
        self._settling: dict[str, dict[str, float]] = {}
        """The part of it being read now."""
        self._settling_lock = asyncio.Lock()
        self._covariate_task: asyncio.Task[None] | None = None
        self._holds = holds
        self._excluded = excluded
        self._store = store
        self._log = log_
        self._retries = retries
        self._config = config
        self._algorithms = tuple(algorithms)
        """The configured algorithms a variant's ``weights`` may name (``bandit.algorithms``)."""
        self._clock = clock
        self._experiments: dict[str, Experiment] = {}
        self._assigners: dict[str, tuple[Experiment, Assigner]] = {}
        """Per experiment, the assigner of its current definition (:meth:`variant_for`)."""
        self._exposures: dict[str, dict[str, Exposure]] = {}
        self._tally: dict[str, dict[tuple[str, str | None], int]] = {}
        """Per experiment, its held exposures per (variant, overridden_by): what results
        count, without going over every exposure."""
        self._values: dict[str, dict[tuple[str, str], UserMetric]] = {}
        self._stats: dict[str, dict[tuple[str, str], PairStats]] = {}
        self._running_by_user: dict[str, list[str]] = {}
        self._recording: dict[str, list[asyncio.Future[None]]] = {}
        """Users whose first exposures are being recorded, with the other requests waiting
        for that recording (:meth:`_record_exposures`)."""
        self._writer: GroupCommit[StateChanges, None] = GroupCommit("exposure-writer", self._write)
        self._next_step_at = math.inf
        self._recheck: dict[str, float] = {}
        """Experiments whose due step waits for non-inferiority: when to look again."""
        """When the earliest pending rollout step of a running experiment is due."""

    async def _write(self, batch: list[StateChanges]) -> list[None]:
        """Commit a round of the exposure writer; then answer the requests waiting for the
        recordings it holds (:meth:`_record_exposures`), the recorder's own request or not."""
        merged = StateChanges()
        for changes in batch:
            merged += changes
        try:
            await self._store.commit(merged)
        except Exception as exc:
            self._release_all(merged, exc)
            raise
        self._release_all(merged, None)
        return [None] * len(batch)

    def _release_all(self, changes: StateChanges, error: BaseException | None) -> None:
        for exposure in changes.exposures:
            if exposure.user_id in self._recording:
                self._release(exposure.user_id, error)

    async def start(self) -> None:
        for exp in await self._store.get_experiments():
            self._experiments[exp.experiment_id] = exp
            if exp.status == "draft":
                continue
            eid = exp.experiment_id
            self._exposures[eid] = {}
            for e in await self._store.get_exposures(eid):
                self._hold(e)
            self._values[eid] = {(u, m): v for u, m, v in await self._store.get_user_metrics(eid)}
            self._stats[eid] = {
                (v, m): s for v, m, s in await self._store.get_experiment_stats(eid)
            }
            if exp.status == "running":
                self._waiting[eid] = _Waiting()
                for user_id, exposure in self._exposures[eid].items():
                    if exposure.overridden_by is None:
                        self._running_by_user.setdefault(user_id, []).append(eid)
                if self._defer_covariates:
                    self._covariates_due[eid] = self._unsettled(exp)
        self._schedule()
        self._writer.start()
        if self._defer_covariates:
            self._covariate_task = asyncio.create_task(
                self._settle_forever(), name="experiment-covariates"
            )

    def _unsettled(self, exp: Experiment) -> dict[str, float]:
        """After a restart, the counted users whose covariates may not be read yet: those
        whose every covariate is 0 (read again: a covariate read before is read the same)."""
        metrics = [m.name for m in exp.all_metrics if m.type != "ratio"]
        if not metrics or self._config.cuped_days <= 0:
            return {}
        values = self._values[exp.experiment_id]
        return {
            user_id: e.exposed_at
            for user_id, e in self._exposures[exp.experiment_id].items()
            if e.overridden_by is None
            and all(values.get((user_id, m), UserMetric()).x == 0.0 for m in metrics)
        }

    async def stop(self) -> None:
        task, self._covariate_task = self._covariate_task, None
        if task is not None:
            await stop_tasks(task)
            try:  # what is due now, so the stored values are complete
                await self.settle_covariates()
            except Exception:  # read again after the restart
                log.warning("deferred covariates not read at stop: read after the restart")
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
                    self._hold(e)
            if statistics:
                table = await self._store.get_experiment_stats(eid)
                self._stats[eid] = {(v, m): st for v, m, st in table}
                flagged = [e.user_id for e in self._flagged_exposures(eid)]
                if flagged:  # what results take away for them: their values as stored
                    for u, m, v in await self._store.get_user_metrics(eid, flagged):
                        values[(u, m)] = v
            running = exp.status == "running"
            if running and (was is None or was.status != "running"):
                users: Iterable[str] = (u for u, e in exposures.items() if e.overridden_by is None)
            elif running:
                users = (e.user_id for e in new if e.overridden_by is None)
            else:
                users = ()
                self._waiting.pop(eid, None)
                for user_id in exposures:
                    held = self._running_by_user.get(user_id, [])
                    if eid in held:
                        held.remove(eid)
            for user_id in users:
                held = self._running_by_user.setdefault(user_id, [])
                if eid not in held:
                    held.append(eid)
        self._schedule()

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
            raise Conflict("exists", f"experiment {exp.experiment_id!r} already exists")
        exp = replace(
            exp, status="draft", created_at=self._clock(), seed=exp.seed or exp.experiment_id
        )
        exp = self._checked(exp)
        await self._store.put_experiment(exp)
        self._experiments[exp.experiment_id] = exp
        self._schedule()
        return exp

    async def update(self, experiment_id: str, changes: Mapping[str, Any]) -> Experiment:
        """Change a definition: anything while draft; never what would reshuffle users after."""
        current = self.get(experiment_id)
        xp.check_update(current, changes)
        data = {**xp.to_dict(current), **changes}
        if "rollout" in changes:  # a new plan starts afresh, a halted rollout resumes
            data.update(rollout_step=0, rollout_halted=None)
            self._recheck.pop(experiment_id, None)
        updated = self._checked(xp.from_dict(data))
        await self._store.put_experiment(updated)
        self._experiments[experiment_id] = updated
        self._schedule()
        return updated

    def _checked(self, exp: Experiment) -> Experiment:
        """``exp`` if it can run, its ``override_all`` weights naming every algorithm."""
        xp.check_definition(exp)
        xp.check_overrides(exp, self._algorithms)
        return xp.complete_weights(exp, self._algorithms)

    async def transition(self, experiment_id: str, action: str) -> Experiment:
        current = self.get(experiment_id)
        status = xp.transition(current.status, action)  # type: ignore[arg-type]
        now = self._clock()
        if status == "running":
            xp.check_collisions(
                current, [e for e in self._experiments.values() if e.status == "running"]
            )
            updated = replace(current, status=status, started_at=now)
            self._waiting[experiment_id] = _Waiting()
            self._exposures.setdefault(experiment_id, {})
            self._values.setdefault(experiment_id, {})
            self._stats.setdefault(experiment_id, {})
        else:
            updated = replace(current, status=status, stopped_at=now)
            self._waiting.pop(experiment_id, None)  # nothing moves a stopped experiment
            for user_id in self._exposures.get(experiment_id, {}):
                running = self._running_by_user.get(user_id, [])
                if experiment_id in running:
                    running.remove(experiment_id)
        await self._store.put_experiment(updated)
        self._experiments[experiment_id] = updated
        self._schedule()
        return updated

    # -- gradual rollout ---------------------------------------------------------------

    def _schedule(self) -> None:
        self._next_step_at = min(
            (
                max(step.at, self._recheck.get(e.experiment_id, -math.inf))
                for e in self._experiments.values()
                if e.status == "running" and e.rollout_halted is None
                for step in e.rollout[e.rollout_step : e.rollout_step + 1]
            ),
            default=math.inf,
        )

    async def advance_rollouts(self) -> None:
        """Take every rollout step that is due, unless a guardrail is significantly worse
        (then the rollout halts where it is, with the reason) or, for a step that asks for
        it, not yet non-inferior (then it waits, looked at again every
        ``rollout_recheck_seconds``). Called before assigning,
        so a step takes effect with the first request after its time; cheap otherwise."""
        now = self._clock()
        if now < self._next_step_at:
            return
        for exp in list(self._experiments.values()):
            step = xp.due_step(exp, now)
            if step is None or self._recheck.get(exp.experiment_id, -math.inf) > now:
                continue
            self._recheck.pop(exp.experiment_id, None)
            reasons = xp.worse_guardrails(exp, self.results(exp.experiment_id)["metrics"])
            if reasons:
                updated = replace(exp, rollout_halted="; ".join(reasons))
                log.warning("rollout of %s halted: %s", exp.experiment_id, updated.rollout_halted)
            elif xp.gated(exp, step) and not self._non_inferior(exp):
                # Not yet: look again later, not at every request.
                self._recheck[exp.experiment_id] = now + self._config.rollout_recheck_seconds
                continue
            else:
                updated = replace(
                    exp,
                    traffic_allocation=step.traffic_allocation,
                    rollout_step=exp.rollout.index(step) + 1,
                )
            await self._store.put_experiment(updated)
            self._experiments[exp.experiment_id] = updated
        self._schedule()

    def _non_inferior(self, exp: Experiment) -> bool:
        """Every guardrail with a margin non-inferior in every variant, by the anytime-valid
        confidence sequence (the sequential test's interval, whatever ``exp.sequential``)."""
        table = self._stats.get(exp.experiment_id, {})
        sequential = replace(exp, sequential=True)
        for metric in exp.guardrails:
            if metric.margin is None:
                continue
            base = table.get((exp.variants[0].key, metric.name), PairStats())
            for v in exp.variants[1:]:
                pair = table.get((v.key, metric.name), PairStats())
                ci = self._compare(sequential, metric, base, pair)["ci_absolute"]
                if not xp.non_inferior(metric, ci):
                    return False
        return True

    # -- assignment and exposure ------------------------------------------------------

    def variant_for(self, exp: Experiment, user_id: str) -> str | None:
        """The user's variant by GrowthBook's hashing, or None if outside the namespace range
        or the traffic allocation."""
        held = self._assigners.get(exp.experiment_id)
        if held is None or held[0] is not exp:  # a definition is replaced, never changed
            assigner = Assigner.of(
                exp.seed,
                len(exp.variants),
                coverage=exp.traffic_allocation,
                weights=exp.weights(),
                hash_version=exp.hash_version,
                namespace=None
                if exp.namespace is None
                else (exp.namespace.name, exp.namespace.start, exp.namespace.end),
            )
            held = self._assigners[exp.experiment_id] = (exp, assigner)
        index = held[1].index(user_id)
        return None if index is None else exp.variants[index].key

    async def expose(self, experiment_id: str, user_id: str) -> tuple[str | None, str | None]:
        """The user's variant and the experiment that overrides this one for the user (see
        :meth:`expose_running`); the first exposure of a running experiment is recorded
        durably. The variant is None outside the experiment and when overridden."""
        await self.advance_rollouts()
        exp = self.get(experiment_id)
        if exp.status != "running":
            return self.variant_for(exp, user_id), None
        for entry in self._resolve(user_id):
            if entry[0].experiment_id == experiment_id:
                await self._record_exposures([entry], user_id)
                _, variant, by = entry
                return (variant if by is None else None), by
        return None, None

    async def expose_running(self, user_id: str) -> list[tuple[Experiment, str]]:
        """The running experiments that apply to the user, with the variant; records
        their exposures (:meth:`running_variants` only looks).

        When several may apply and override the same strategy field, one wins
        (``core.experiments.resolve``: the one already counting the user, else the
        earliest started); the others are recorded with ``overridden_by`` and do not
        count the user, and they are left out here.
        """
        await self.advance_rollouts()
        resolved = self._resolve(user_id)
        await self._record_exposures(resolved, user_id)
        return [(exp, variant) for exp, variant, by in resolved if by is None]

    def _resolve(self, user_id: str) -> list[tuple[Experiment, str, str | None]]:
        found = []
        for exp in self._experiments.values():
            if exp.status != "running":
                continue
            variant = self.variant_for(exp, user_id)
            if variant is not None:
                held = self._exposures.get(exp.experiment_id, {}).get(user_id)
                found.append((exp, variant, held is not None and held.overridden_by is None))
        return xp.resolve(found)

    def running_variants(self, user_id: str) -> list[tuple[Experiment, str]]:
        """Every running experiment the user is in, with the variant; records nothing
        (a look, as the console's: :meth:`expose_running` records the exposures). Where
        experiments collide, only the one that wins for the user (:meth:`expose_running`)."""
        return [(exp, variant) for exp, variant, by in self._resolve(user_id) if by is None]

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
        self, assigned: Sequence[tuple[Experiment, str, str | None]], user_id: str
    ) -> None:
        """Record the user's first exposures among ``assigned``; the request recording them
        returns once they are committed, and so do those of the user waiting for it.

        The request holds them in its own task and the exposure writer's task commits
        them: a request cancelled (client gone) before they are held leaves nothing, and
        one cancelled after leaves them to be committed all the same. No task is started
        for the recording and no shield crossed: under load each turn of the event loop a
        first exposure waits for comes after every other ready request."""
        # Concurrent requests of one user share one recording, and answer once it is
        # committed: held exposures are not committed yet while it is under way.
        joined = self._recording.get(user_id)
        if joined is not None:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            joined.append(waiter)
            await waiter
            return await self._record_exposures(assigned, user_id)
        new = [a for a in assigned if user_id not in self._exposures[a[0].experiment_id]]
        if not new:
            return
        waiters: list[asyncio.Future[None]] = []
        self._recording[user_id] = waiters
        try:
            changes = await self._exposure_changes(new, user_id)
        except BaseException:
            self._release(user_id, None)  # nothing held: a waiting request records
            raise
        if not changes.exposures:
            self._release(user_id, None)
            return
        try:
            await self._writer.submit([changes])
        except ShuttingDown as exc:  # not taken: no round will answer the waiters
            self._release(user_id, exc)
            raise

    def _release(self, user_id: str, error: BaseException | None) -> None:
        """Answer the requests waiting for the user's recording (:meth:`_record_exposures`):
        recorded, or ``error``."""
        for waiter in self._recording.pop(user_id, ()):
            if waiter.done():
                continue  # its request was cancelled
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    async def _exposure_changes(
        self, new: Sequence[tuple[Experiment, str, str | None]], user_id: str
    ) -> StateChanges:
        """Hold the user's first exposures of ``new`` and count them; what to commit.

        Everything it reads comes before it holds anything (no await after), so a cancel
        leaves either nothing or the whole of it held."""
        now = self._clock()
        since = now - self._config.cuped_days * DAY
        pre: list[tuple[str, float | None]] = []
        counted = any(by is None for _, _, by in new)
        history_possible = counted and await self._may_have_events(user_id)
        if history_possible and not self._defer_covariates:
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
        for exp, variant, by in new:
            eid = exp.experiment_id
            if user_id in self._exposures[eid]:
                continue  # exposed meanwhile (another process's, taken in by refresh)
            exposure = Exposure(eid, user_id, variant, now, by)
            self._hold(exposure)
            changes.exposures.append(exposure)
            if by is not None:
                continue  # overridden: recorded, not counted
            self._running_by_user.setdefault(user_id, []).append(eid)
            for metric in exp.all_metrics:
                values = UserMetric(0.0, xp.pre_period_value(metric, pre))
                self._set(changes, exp, user_id, variant, metric, None, values)
            if (
                history_possible
                and self._defer_covariates
                and self._config.cuped_days > 0
                and any(m.type != "ratio" for m in exp.all_metrics)
            ):
                self._covariates_due.setdefault(eid, {})[user_id] = now
        return changes

    async def settle_covariates(self) -> int:
        """Read the CUPED covariates of the users exposed since the last call
        (``defer_covariates``), all in one read of the log, and move their values and
        the variants' sums from the covariate 0 they were counted with to it.

        A user's covariate is what :func:`core.experiments.pre_period_value` gives for
        their events time-stamped in the ``cuped_days`` before their exposure, as the log
        holds them now. Returns how many users' covariates were read. Waits for a read
        under way first."""
        async with self._settling_lock:
            self._settling, self._covariates_due = self._covariates_due, {}
            try:
                return await self._settle(self._settling)
            finally:
                self._settling = {}

    async def _settle(self, due: dict[str, dict[str, float]]) -> int:
        users = sorted({u for held in due.values() for u in held})
        if not users:
            return 0
        cuped = self._config.cuped_days * DAY
        times = [t for held in due.values() for t in held.values()]
        try:
            history = await self._read_history(users, min(times) - cuped, max(times))
        except BaseException:
            for eid, held in due.items():  # due again; newer entries kept
                self._covariates_due[eid] = {**held, **self._covariates_due.get(eid, {})}
            raise
        changes = StateChanges()
        for eid, held in due.items():
            exp = self._experiments.get(eid)
            exposures = self._exposures.get(eid, {})
            values = self._values.get(eid, {})
            if exp is None:
                continue
            for user_id, at in held.items():
                exposure = exposures.get(user_id)
                if exposure is None or exposure.overridden_by is not None:
                    continue  # erased meanwhile
                pre = [
                    (e.type, e.value)
                    for e in history.get(user_id, ())
                    if at - cuped <= e.timestamp < at
                ]
                for metric in exp.all_metrics:
                    old = values.get((user_id, metric.name))
                    if metric.type == "ratio" or old is None:
                        continue
                    new = UserMetric(old.y, xp.pre_period_value(metric, pre))
                    if new != old:
                        self._set(changes, exp, user_id, exposure.variant, metric, old, new)
        if changes.user_metrics:
            await self._writer.submit([changes])
        return len(users)

    async def _read_history(
        self, users: Sequence[str], since: float, until: float
    ) -> dict[str, list[Event]]:
        """The users' logged events with ``since <= timestamp < until`` (see
        :data:`_FEW_USERS`)."""
        if len(users) <= _FEW_USERS:
            return await retry_read(
                "read_users_events",
                self._log.read_users_events,
                users,
                since,
                until,
                counts=self._retries,
            )
        found: dict[str, list[Event]] = {u: [] for u in users}
        after = 0
        while events := await retry_read(
            "read", self._log.read, after, 10_000, counts=self._retries
        ):
            for e in events:
                held = found.get(e.user_id)
                if held is not None and since <= e.timestamp < until:
                    held.append(e)
            after = events[-1].offset
        return found

    async def _settle_forever(self) -> None:
        """The first pass at once (what a restart left unsettled), then every
        ``covariate_seconds``."""
        while True:
            try:
                await self.settle_covariates()
            except Exception:
                log.exception("reading deferred covariates failed: read again at the next pass")
            await asyncio.sleep(self._config.covariate_seconds)

    def covariates_due(self, experiment_id: str) -> int:
        """Counted users of the experiment whose CUPED covariate is not read yet."""
        due = self._covariates_due.get(experiment_id, {})
        reading = self._settling.get(experiment_id, {})
        return len(due) + sum(1 for u in reading if u not in due)

    async def taken(self, events: Sequence[Event]) -> None:
        """Note the events the processor takes to apply (in offset order): each running
        experiment keeps those that will move it (of its users, after their exposure, of
        a type a metric listens to) until they are committed (see :meth:`live_results`)."""
        if not events:
            return
        running = self._running_by_user
        if running:
            listened: dict[str, frozenset[str]] = {}  # per experiment, once per call
            for e in events:
                eids = running.get(e.user_id)
                if not eids:
                    continue
                for eid in eids:
                    if e.timestamp < self._exposures[eid][e.user_id].exposed_at:
                        continue
                    types = listened.get(eid)
                    if types is None:
                        types = listened[eid] = _listened(self._experiments[eid])
                    if e.type in types:
                        waiting = self._waiting.setdefault(eid, _Waiting())
                        waiting.add(e.partition, e.offset, e.type)
        self._taken_upto = max(self._taken_upto, events[-1].offset)
        if self._committed_offset is not None and self._waiting:
            committed = {0: self._committed_offset()}
            for waiting in self._waiting.values():
                waiting.prune(committed)

    async def report_waiting(
        self, positions: Mapping[int, int], unfetched: Mapping[int, int | None]
    ) -> None:
        """A distributed worker's report, for the results the API instances give: per owned
        partition, the waiting events (:meth:`taken`) past its committed position
        (``positions``) and the messages not fetched yet, written to the store."""
        for waiting in self._waiting.values():
            waiting.prune(positions)
        now = self._clock()
        reports = []
        for partition in sorted(positions):
            events = {
                eid: counts for eid, w in self._waiting.items() if (counts := w.of(partition))
            }
            reports.append(WaitingReport(partition, events, unfetched.get(partition), now))
        if reports:
            await self._store.put_waiting(reports)

    async def _may_have_events(self, user_id: str) -> bool:
        """False only for a user with no event anywhere: none held by the processor and
        no state in the store (a read by primary key, unlike the log's per-user scan)."""
        if self._holds is None or self._holds(user_id):
            return True
        if self._stored is not None:
            return await self._stored(user_id)
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
            if (dropped := held.pop(user_id, None)) is not None:
                self._tally_add(dropped, -1)
                values = self._values.get(eid, {})
                for key in [k for k in values if k[0] == user_id]:
                    del values[key]
        self._running_by_user.pop(user_id, None)
        for due in (self._covariates_due, self._settling):
            for times in due.values():
                times.pop(user_id, None)
        for _, assigner in self._assigners.values():
            assigner.memo.pop(user_id, None)

    def held_users(self) -> set[str]:
        """The users with an exposure held here, or whose variant is remembered."""
        held = {u for exposures in self._exposures.values() for u in exposures}
        for _, assigner in self._assigners.values():
            held.update(assigner.memo)
        return held

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
        """Users counted as exposed, per variant: neither overridden (another experiment's
        overrides won for them) nor flagged."""
        exp = self.get(experiment_id)
        counts = {v.key: 0 for v in exp.variants}
        for (variant, by), n in self._tally.get(experiment_id, {}).items():
            if by is None and n:
                counts[variant] = counts.get(variant, 0) + n
        for exposure in self._flagged_exposures(experiment_id):
            counts[exposure.variant] -= 1
        return counts

    def overridden(self, experiment_id: str) -> dict[str, int]:
        """Users not counted because another experiment's overrides won, per winner."""
        counts: dict[str, int] = {}
        for (_, by), n in self._tally.get(experiment_id, {}).items():
            if by is not None and n:
                counts[by] = counts.get(by, 0) + n
        return counts

    def _hold(self, exposure: Exposure) -> None:
        """Keep ``exposure`` (replacing the user's one in its experiment, if any)."""
        held = self._exposures.setdefault(exposure.experiment_id, {})
        before = held.get(exposure.user_id)
        if before is not None:
            self._tally_add(before, -1)
        held[exposure.user_id] = exposure
        self._tally_add(exposure, 1)

    def _tally_add(self, exposure: Exposure, step: int) -> None:
        tally = self._tally.setdefault(exposure.experiment_id, {})
        key = (exposure.variant, exposure.overridden_by)
        tally[key] = tally.get(key, 0) + step

    def _flagged_exposures(self, experiment_id: str) -> list[Exposure]:
        if self._excluded is None:
            return []
        held = self._exposures.get(experiment_id, {})
        # An overridden exposure is in no sums: there is nothing to take away.
        return [held[u] for u in self._excluded() if u in held and held[u].overridden_by is None]

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

    def results(self, experiment_id: str, sequential: bool | None = None) -> dict[str, Any]:
        """``sequential``: every interval anytime-valid (True) or fixed-horizon (False),
        whatever the experiment says; None: as it says."""
        exp = self.get(experiment_id)
        if sequential is not None:
            exp = replace(exp, sequential=sequential)
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
        if exp.rollout_halted is not None:
            warnings.append(f"rollout halted: {exp.rollout_halted}")
        overridden = self.overridden(experiment_id)
        if overridden:
            warnings.append(
                f"{sum(overridden.values())} users fell in this experiment but got another "
                f"experiment's overrides ({', '.join(sorted(overridden))}): not counted"
            )
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
            "overridden": overridden,
            "warnings": warnings,
        }

    async def live_results(self, experiment_id: str) -> dict[str, Any]:
        """:meth:`results` with what is accepted and not yet in them.

        ``buffered``: ``{"events": n, "complete": bool, "as_of": t}``, the events of users
        counted in the experiment, after their exposure, of a type some metric listens
        to, accepted and not yet committed. Embedded, now (``as_of`` None); a distributed
        API instance, as the workers last reported it (``as_of``: the oldest report), or
        None before any did. A metric computed while such events of its types exist is
        ``provisional``.

        ``covariates_pending``: counted users whose CUPED covariate is not read yet
        (``defer_covariates``: read within ``covariate_seconds``); while there are some,
        every metric but ratios is ``provisional`` too.
        """
        await self.advance_rollouts()
        result = self.results(experiment_id)
        exp = self.get(experiment_id)
        covariates = self.covariates_due(experiment_id)
        result["covariates_pending"] = covariates
        pending = await self._pending(exp)
        if pending is None:
            result["buffered"] = None
            for metric in result["metrics"]:
                metric["provisional"] = None
            return result
        by_type, complete, as_of = pending
        result["buffered"] = {
            "events": sum(by_type.values()),
            "complete": complete,
            "as_of": as_of,
        }
        for metric, shown in zip(exp.all_metrics, result["metrics"], strict=True):
            waiting = sum(by_type.get(t, 0) for t in metric.events())
            unread = covariates > 0 and metric.type != "ratio"
            shown["provisional"] = waiting > 0 or not complete or unread
        if covariates:
            result["warnings"].append(
                f"the CUPED covariates of {covariates} exposed users are not read yet (they "
                f"are read every experiments.covariate_seconds, "
                f"{self._config.covariate_seconds:g} s): metrics marked provisional will move"
            )
        if by_type:
            result["warnings"].append(
                f"{sum(by_type.values())} accepted events of exposed users are not applied "
                "yet (implicit events wait for the next flush, feedback.implicit_flush_seconds):"
                " metrics marked provisional will move"
            )
        return result

    async def _pending(self, exp: Experiment) -> tuple[dict[str, int], bool, float | None] | None:
        """Per event type, the experiment's accepted, uncommitted events (see
        :meth:`live_results`), whether every accepted event was looked at, and as of when
        (None: now)."""
        if self._committed_offset is None:
            return await self._reported(exp)
        if exp.status != "running":
            return {}, True, None  # nothing moves it any more
        committed = self._committed_offset()
        if self._dispatched is None:
            exposures = self._exposures.get(exp.experiment_id, {})
            counts, complete = await pending_in_log(
                self._log, exp, exposures, committed, self._config.pending_scan_max
            )
            return counts, complete, None
        waiting = self._waiting.get(exp.experiment_id)
        if waiting is not None:
            waiting.prune({0: committed})
        counts = {} if waiting is None else dict(waiting.by_type)
        return counts, max(self._taken_upto, committed) >= self._dispatched(), None

    async def _reported(self, exp: Experiment) -> tuple[dict[str, int], bool, float | None] | None:
        """:meth:`_pending` from the distributed workers' last reports (:meth:`report_waiting`,
        every ``event_log.worker_commit_seconds``): complete when every partition was
        reported with nothing left to fetch and this instance's spool is empty (other
        instances' spools are not seen). None when no worker reported."""
        reports = await retry_read("get_waiting", self._store.get_waiting, counts=self._retries)
        if not reports:
            return None
        as_of = min(r.reported_at for r in reports)
        if exp.status != "running":
            return {}, True, as_of
        counts: dict[str, int] = {}
        for report in reports:
            for event_type, n in report.events.get(exp.experiment_id, {}).items():
                counts[event_type] = counts.get(event_type, 0) + n
        unsent = 0 if self._unsent is None else self._unsent()
        return counts, unsent == 0 and all(r.unfetched == 0 for r in reports), as_of

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


_FEW_USERS = 20_000
"""Up to this many users, deferred covariates are read with the users' ids in the query
(the log filters them: one pass per 500 ids, each much cheaper than decoding every event);
beyond, in one pass decoding the whole log."""


def _listened(exp: Experiment) -> frozenset[str]:
    return frozenset(t for m in exp.all_metrics for t in m.events())


@dataclass(slots=True)
class _Waiting:
    """One running experiment's events taken and not committed yet, per partition oldest
    first, and their number per type."""

    events: dict[int, deque[tuple[int, str]]] = field(default_factory=dict)
    by_type: dict[str, int] = field(default_factory=dict)

    def add(self, partition: int, offset: int, event_type: str) -> None:
        queue = self.events.get(partition)
        if queue is None:
            queue = self.events[partition] = deque()
        queue.append((offset, event_type))
        self.by_type[event_type] = self.by_type.get(event_type, 0) + 1

    def prune(self, positions: Mapping[int, int]) -> None:
        """Forget the events up to each partition's committed position, and those of
        partitions not in ``positions`` (no longer owned: their new owner counts them)."""
        for partition in list(self.events):
            queue = self.events[partition]
            upto = positions.get(partition)
            while queue and (upto is None or queue[0][0] <= upto):
                self._forget(queue.popleft()[1])
            if not queue:
                del self.events[partition]

    def _forget(self, event_type: str) -> None:
        left = self.by_type[event_type] - 1
        if left:
            self.by_type[event_type] = left
        else:
            del self.by_type[event_type]

    def of(self, partition: int) -> dict[str, int]:
        """The waiting events of one partition, per type."""
        counts: dict[str, int] = {}
        for _, event_type in self.events.get(partition, ()):
            counts[event_type] = counts.get(event_type, 0) + 1
        return counts


async def pending_in_log(
    log_: EventLog,
    exp: Experiment,
    exposures: Mapping[str, Exposure],
    committed: int,
    limit: int,
) -> tuple[dict[str, int], bool]:
    """Per event type, the experiment's events in the log after ``committed`` (of users
    counted in it, after their exposure, of a type a metric listens to), reading at most
    ``limit`` events, and whether that read the whole log after ``committed``.

    What :meth:`ExperimentService.taken` keeps as the events go by, by reading the log
    instead (the oracle of the differential test, and the count where no processor
    hands events on)."""
    types = _listened(exp)
    after, left = committed, limit
    counts: dict[str, int] = {}
    while left > 0:
        events = await log_.read(after, min(left, 10_000))
        if not events:
            return counts, True
        for e in events:
            exposure = exposures.get(e.user_id)
            if (
                exposure is not None
                and exposure.overridden_by is None
                and e.type in types
                and e.timestamp >= exposure.exposed_at
            ):
                counts[e.type] = counts.get(e.type, 0) + 1
        after, left = events[-1].offset, left - len(events)
    return counts, not await log_.read(after, 1)
