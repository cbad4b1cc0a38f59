"""Continuous learning: features at serving, retraining, the registry, blue-green slots.

::

    rank ── feature matrix (core.features) ──▶ model of the user's slot ──▶ order
      └── impression: the shown items with their float32 features, slot and version
    training process (SQL storage: it reads the database itself; learning.job):
      clicks naming the impression ─┐
      impressions (training_days) ──┴─▶ build_training_data ─▶ train
                                        ─▶ registry: candidate → rejected | validated
                                        ─▶ deploy: green, canary_fraction of users
    monitor (every monitor_seconds): running counts per slot (learning.tally: new
                                     impressions and clicks since the last pass)
                                     ─▶ judge_canary ─▶ promote | rollback
                                     after promotion: watch vs the baseline ─▶ confirm | rollback

Registry statuses: ``candidate`` (validated, deployable), ``rejected`` (failed
validation), ``green`` (canary), ``active`` (blue), ``retired`` (replaced
after a confirmed promotion), ``rolled_back``.

Without a deployed model ``rank`` orders by the fused score, as before; the
features are logged all the same, so the first model has data to learn from.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import repeat
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from croniter import croniter  # type: ignore[import-untyped]

from recloop.config import LearningSettings
from recloop.core.deployment import (
    CanaryVerdict,
    Slots,
    Transition,
    confirm,
    deploy,
    judge_canary,
    promote,
    rollback,
    slot_of,
)
from recloop.core.errors import Conflict, InvalidInput, NotFound
from recloop.core.events import Event
from recloop.core.features import (
    ATTRIBUTE_BUCKETS,
    FEATURE_NAMES,
    ContextFeatures,
    ItemColumns,
    UserFeatures,
    columns_of,
    write_features,
)
from recloop.core.ids import uuid7
from recloop.core.ranking import Fused
from recloop.learning.job import (
    TrainingFailed,
    TrainingPlan,
    fit,
    in_training_process,
    join_in_thread,
    run_plan,
    train_from_storage,
)
from recloop.learning.learner import ArtifactError, Model, load_model
from recloop.learning.tally import Tally
from recloop.learning.training import Champion, Outcome, TrainingData
from recloop.learning.validation import PromotionGate
from recloop.pauses import let_requests_in
from recloop.ports import (
    EventLog,
    ImpressionHead,
    ModelRecord,
    StateStore,
    TrainingJob,
    TrainingReader,
)
from recloop.services.tasks import stop_tasks
from recloop.services.vectors import ItemRows

log = logging.getLogger(__name__)

DAY = 86_400.0
_PAGE = 10_000
_LAG_SECONDS = 60.0
"""Impressions are read again this far back on each pass: one committed this long after
its creation is still counted."""
MONITOR: Final = "monitor"
"""Who the deployment audit names for the canary's own verdicts and automatic deploys."""
MIN_ITEM_IMPRESSIONS = 20
"""An item's CTR feature is given once it has been shown this often (else: missing)."""
_ADD_CHUNK = 250
"""Impressions the monitor adds to its counts between two pauses for requests."""


@dataclass(frozen=True, slots=True)
class Route:
    """Which model serves a user: slot, version, the model (all None without one)."""

    slot: str | None = None
    version: str | None = None
    model: Model | None = None


def no_examples_reason(
    newer: Sequence[float], until: float, window_minutes: float, training_days: float
) -> str:
    """Why a training window held no example: ``newer`` are the creation times of the
    impressions logged after it (inside the attribution window, their labels not final).

    >>> no_examples_reason([1000.0, 1500.0], 900.0, 30.0, 14.0)
    'no impression in the training window (the 14 days before the last 30 minutes); 2 \
impressions newer than the 30-minute attribution window are not used yet (their clicks may \
still come): the first becomes usable 100 s from now'
    >>> no_examples_reason([], 900.0, 30.0, 14.0)
    'no impression logged in the last 14 days: examples are the impressions POST \
/users/{user_id}/rank logs, joined with the feedback naming them'
    """
    if not newer:
        return (
            f"no impression logged in the last {training_days:g} days: examples are the "
            "impressions POST /users/{user_id}/rank logs, joined with the feedback naming them"
        )
    wait = min(newer) - until
    return (
        f"no impression in the training window (the {training_days:g} days before the last "
        f"{window_minutes:g} minutes); {len(newer)} impressions newer than the "
        f"{window_minutes:g}-minute attribution window are not used yet (their clicks may "
        f"still come): the first becomes usable {wait:.0f} s from now"
    )


class LearningService:
    def __init__(
        self,
        store: StateStore,
        log_: EventLog,
        config: LearningSettings,
        reliability: Callable[[str], float | None] | None = None,
        clock: Callable[[], float] = time.time,
        training_reader: TrainingReader | None = None,
        excluded: Callable[[], frozenset[str]] | None = None,
    ) -> None:
        """``training_reader``: opens the storage ``store`` and ``log`` are in from a
        training job's process, which then reads its data there itself (None: the
        in-memory storage, read in this process). ``excluded()``: the users flagged now
        (the guard's), whose impressions and clicks the items' counts leave out from the
        next monitor pass on (training reads the flagged users from the store itself)."""
        self._excluded = excluded
        self._store = store
        self._log = log_
        self._config = config
        self._reliability = reliability
        self._clock = clock
        self._training_reader = training_reader
        self._slots = Slots()
        self._models: dict[str, Model] = {}
        self._tally = Tally(config.attribution_window_minutes * 60.0)
        self._tallied = False
        self._forgotten: set[str] = set()
        """Users erased since the monitor pass under way began (its reads may predate it)."""
        self._cursor = 0
        self._read_from = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._training = asyncio.Lock()
        self._deploying = asyncio.Lock()
        self.last_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, background: bool = True) -> None:
        """Load the slots and their models; start the schedule and the monitor."""
        await self.reload()
        if background:
            self._tasks = [
                asyncio.create_task(self._schedule_loop(), name="retrain-schedule"),
                asyncio.create_task(self._monitor_loop(), name="model-monitor"),
            ]

    async def stop(self) -> None:
        await stop_tasks(*self._tasks, *self._jobs.values())
        self._tasks, self._jobs = [], {}

    async def reload(self) -> None:
        """Take the stored slots (another process may have moved them) and load their models."""
        state, _ = await self._store.get_deployment()
        slots = Slots() if state is None else Slots.from_dict(state)
        for version in (slots.blue_version, slots.green_version, slots.previous_version):
            if version is not None and version not in self._models:
                await self._load(version)
        self._slots = slots

    async def _load(self, version: str) -> Model:
        found = await self._store.get_model(version)
        if found is None:
            raise NotFound("model", version)
        record, data = found
        try:
            model = load_model(record.kind, data, record.sha256)
        except ArtifactError as exc:
            self.last_error = f"model {version}: {exc}"
            log.error("model %s refused: %s", version, exc)
            raise
        self._models[version] = model
        return model

    # -- serving ---------------------------------------------------------------------

    def route(self, user_id: str, slot: str | None = None) -> Route:
        """The user's slot (sticky), or ``slot`` if an experiment forces one."""
        slots = self._slots
        if slots.blue_version is None and slots.green_version is None:
            return Route()
        chosen = slot if slot in ("blue", "green") else slot_of(slots, user_id)
        if chosen == "green" and slots.green_version is None:
            chosen = "blue"
        version = slots.green_version if chosen == "green" else slots.blue_version
        # Blue without a model (the fused ranking) is a slot too while a canary runs.
        return Route(chosen, version, None if version is None else self._models.get(version))

    def feature_matrix(
        self,
        user_id: str,
        segment: str,
        interactions: int,
        last_event_at: float | None,
        fused: Fused,
        items: ItemRows | None,
        context: Mapping[str, Any],
        now: float,
        out: npt.NDArray[np.floating[Any]] | None = None,
        names: tuple[str, ...] = FEATURE_NAMES,
    ) -> npt.NDArray[np.floating[Any]]:
        """Each candidate's features (:data:`~recloop.core.features.FEATURE_NAMES` columns)
        as if shown in the top slot (rank sets the position); ``items``: the candidates'
        item columns in ``fused``'s order (None: no item known). With ``out``, written
        there (its columns ``names``: ``core.features.write_features``) and returned."""
        reliability = 100.0 if self._reliability is None else self._reliability(user_id)
        user = UserFeatures(
            segment,
            interactions,
            None if last_event_at is None else max(0.0, (now - last_event_at) / DAY),
            0.0 if reliability is None else reliability,
        )
        device = context.get("device")
        ctx = ContextFeatures(now, device if isinstance(device, str) else None)
        n = len(fused)
        # each item's [shown, clicked], by C-level look-ups (no Python pass per item)
        found = list(map(self._tally.item_stats.get, fused.item_ids, repeat((0, 0))))
        shown, clicked = zip(*found, strict=True) if found else ((), ())
        popularity = np.fromiter(shown, dtype=np.int64, count=n)
        clicks = np.fromiter(clicked, dtype=np.float64, count=n)
        enough = popularity >= MIN_ITEM_IMPRESSIONS
        ctr = np.empty(n)
        ctr.fill(math.nan)  # np.full's values, without its Python wrapper
        np.divide(clicks, popularity, out=ctr, where=enough)
        if items is None:
            age = np.full(n, math.nan)
            hashed = np.zeros((n, ATTRIBUTE_BUCKETS))
            from_attributes = np.zeros(n, dtype=bool)
        else:
            age = np.where(items.known, np.maximum(0.0, (now - items.updated_at) / DAY), math.nan)
            hashed = items.hashed
            from_attributes = items.from_attributes
        if out is None:
            out = np.empty((n, len(names)), dtype=np.float64)
        write_features(
            out,
            names,
            user,
            ItemColumns(popularity, ctr, age, hashed),
            ctx,
            fused.affinity,
            np.where(from_attributes, fused.affinity, 0.0),
            # one algorithm per item: its one-hot read from its rank percentile's column
            None if fused.single else [a[0] if a else None for a in fused.algorithms],
            fused.rank_pct,
        )
        return out

    @staticmethod
    def predict(
        model: Model, matrix: npt.NDArray[np.floating[Any]], names: Sequence[str]
    ) -> npt.NDArray[np.float64]:
        """The model's click probabilities for the rows of ``matrix`` (columns ``names``),
        its columns aligned to the model's own by name."""
        predicted = model.predict(columns_of(matrix, names, model.feature_names))
        return np.asarray(predicted, dtype=np.float64).reshape(matrix.shape[0])

    # -- registry and deployment -------------------------------------------------------

    async def models(self) -> list[ModelRecord]:
        return await self._store.get_models()

    async def model(self, version: str) -> ModelRecord:
        found = await self._store.get_model(version)
        if found is None:
            raise NotFound("model", version)
        return found[0]

    async def deployment(self) -> dict[str, Any]:
        state, history = await self._store.get_deployment()
        slots = Slots() if state is None else Slots.from_dict(state)
        blue = self._tally.count(("blue", slots.blue_version or ""))
        green = self._tally.count(("green", slots.green_version or ""))
        return {
            "slots": slots.to_dict(),
            "live": {
                "blue": {"impressions": blue[0], "clicks": blue[1]},
                "green": {"impressions": green[0], "clicks": green[1]},
            },
            # older records lack the audit's fields: their defaults
            "transitions": [Transition.from_dict(t).to_dict() for t in history],
        }

    async def deploy(self, version: str, reason: str = "", by: str | None = None) -> Transition:
        """Load ``version`` into the green slot for ``canary_fraction`` of users, or
        ``unproven_canary_share`` of that for a model the gate did not find supported
        off-policy (:meth:`_canary_fraction`; ``reason`` defaults to saying which)."""
        async with self._deploying:
            record = await self.model(version)
            if record.status not in ("candidate", "retired", "rolled_back"):
                raise Conflict(
                    record.status,
                    f"cannot deploy model {version!r}: it is {record.status}; only a validated "
                    "candidate (or a retired or rolled-back model) can be deployed",
                )
            await self.reload()
            try:
                await self._load(version)  # a tampered artifact is refused before any routing
            except ArtifactError as exc:
                raise InvalidInput("version", str(exc)) from exc
            fraction, why, supported = self._canary_fraction(record)
            slots, transition = deploy(
                self._slots,
                version,
                self._clock(),
                fraction,
                reason or why,
                {"off_policy_supported": float(supported)},
            )
            transition = replace(transition, by=by)
            await self._commit(slots, transition, {version: ("green", transition.reason)})
            return transition

    def _canary_fraction(self, record: ModelRecord) -> tuple[float, str, bool]:
        """``canary_fraction``, or ``unproven_canary_share`` of it for a model whose gate did
        not find it supported off-policy (:class:`~recloop.learning.validation.PolicyVerdict`);
        with the reason, and whether it was supported."""
        c = self._config
        gate = record.metrics.get("gate") or {}
        supported = (gate.get("off_policy") or {}).get("supported") is True
        if supported or c.unproven_canary_share == 1.0:
            return c.canary_fraction, f"canary for {c.canary_fraction:.1%} of users", supported
        fraction = c.canary_fraction * c.unproven_canary_share
        return (
            fraction,
            (
                f"canary for {fraction:.1%} of users: unproven off-policy "
                f"({c.unproven_canary_share:g} of canary_fraction {c.canary_fraction:g})"
            ),
            False,
        )

    async def promote(
        self, reason: str = "promoted by hand", by: str | None = None, force: bool = False
    ) -> Transition:
        """Promote green by hand. Unless the canary's own verdict already is ``promote``,
        skipping it needs ``force``; a forced promotion is audited as such (``by``, the
        reason, the canary's numbers when it was skipped).

        Raises
        ------
        Conflict
            if the canary has not decided and ``force`` is false (state ``canary <decision>``).
        """
        await self.reload()
        slots = self._slots
        if slots.green_version is None:
            return await self._promote(reason, by, False, {})  # raises: no green to promote
        await self._observe(slots, self._clock())
        verdict = self._judge(slots)
        if verdict.decision == "promote":
            return await self._promote(reason, by, False, verdict.numbers)
        if not force:
            raise Conflict(
                f"canary {verdict.decision}",
                f"cannot promote: the canary of {slots.green_version!r} has not decided "
                f"({verdict.decision}: {verdict.reason}); promoting without its verdict needs "
                "force: true, and is recorded in the deployment audit",
            )
        return await self._promote(
            f"forced, skipping the canary ({verdict.decision}): {reason}",
            by,
            True,
            verdict.numbers,
        )

    def _judge(self, slots: Slots) -> CanaryVerdict:
        """The canary's verdict on the current counts (green against blue)."""
        c = self._config
        return judge_canary(
            self._tally.count(("blue", slots.blue_version or "")),
            self._tally.count(("green", slots.green_version or "")),
            c.min_canary_impressions,
            c.rollback_margin,
            c.alpha,
            c.canary_tolerance,
        )

    async def _promote(
        self, reason: str, by: str | None, forced: bool, numbers: Mapping[str, float]
    ) -> Transition:
        async with self._deploying:
            await self.reload()
            slots = self._slots
            baseline = self._tally.count(("blue", slots.blue_version or ""))
            new, transition = promote(
                slots, self._clock(), baseline, reason, numbers, by=by, forced=forced
            )
            statuses = {new.blue_version or "": ("active", transition.reason)}
            await self._commit(new, transition, statuses)
            return transition

    async def rollback(
        self, reason: str = "rolled back by hand", by: str | None = None
    ) -> Transition:
        async with self._deploying:
            await self.reload()
            slots = self._slots
            new, transition = rollback(slots, self._clock(), reason)
            transition = replace(transition, by=by)
            statuses: dict[str, tuple[str, str]] = {}
            if transition.from_version is not None:
                statuses[transition.from_version] = ("rolled_back", transition.reason)
            if new.blue_version is not None and slots.green_version is None:
                statuses[new.blue_version] = ("active", "restored by rollback")
            await self._commit(new, transition, statuses)
            return transition

    async def _commit(
        self, slots: Slots, transition: Transition, statuses: Mapping[str, tuple[str, str]]
    ) -> None:
        await self._store.put_deployment(slots.to_dict(), transition.to_dict())
        for version, (status, why) in statuses.items():
            if version:
                await self._store.set_model_status(version, status, why)
        self._slots = slots
        self._tally.restart(self._window(slots, self._clock())[1])
        log.info(
            "model %s: %s -> %s (%s)",
            transition.action,
            transition.from_version,
            transition.to_version,
            transition.reason,
        )

    # -- monitoring --------------------------------------------------------------------

    async def _monitor_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.monitor_seconds)
            try:
                await self.monitor()
            except Exception as exc:  # storage down: try again next time
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("model monitor failed: %s", self.last_error)

    async def monitor(self) -> Transition | None:
        """Bring the counts up to date; judge the canary or the watch; act on the verdict."""
        await self.reload()
        now = self._clock()
        slots = self._slots
        await self._observe(slots, now)
        tally = self._tally
        c = self._config
        if slots.green_version is not None:
            verdict = self._judge(slots)
            if verdict.decision == "rollback":
                return await self.rollback(f"canary: {verdict.reason}", MONITOR)
            if verdict.decision == "promote":
                return await self._promote(
                    f"canary: {verdict.reason}", MONITOR, False, verdict.numbers
                )
        elif slots.promoted_at is not None:
            baseline = (slots.baseline_impressions, slots.baseline_clicks)
            served = tally.count(("blue", slots.blue_version or ""))
            verdict = judge_canary(
                baseline, served, c.min_canary_impressions, c.rollback_margin, c.alpha
            )
            if verdict.decision == "rollback":
                return await self.rollback(f"watch: {verdict.reason}", MONITOR)
            if served[0] >= c.watch_impressions:
                async with self._deploying:
                    new, transition = confirm(slots, now, f"watch: {verdict.reason}")
                    transition = replace(transition, by=MONITOR)
                    previous = slots.previous_version
                    statuses = {} if previous is None else {previous: ("retired", "replaced")}
                    await self._commit(new, transition, statuses)
                    return transition
        return None

    def _window(self, slots: Slots, now: float) -> tuple[float, dict[str, float]]:
        """The impressions the counts cover (created since the first value) and each slot's
        start: a day of item statistics, back to the deployment while one is judged."""
        since = now - self._config.item_stats_days * DAY
        starts = [t for t in (slots.deployed_at, slots.promoted_at) if t is not None]
        judged = slots.green_version is not None or slots.promoted_at is not None
        if starts and (slots.green_version or slots.promoted_at):
            since = min(since, max(starts))
        return since, {
            "green": slots.deployed_at or 0.0,
            "blue": max(t for t in (slots.deployed_at, slots.promoted_at, 0.0) if t is not None)
            if judged
            else 0.0,
        }

    async def _observe(self, slots: Slots, now: float) -> None:
        """Add the impressions and clicks logged since the last pass to the tally; rebuild
        it from storage the first time (and if its window must reach further back)."""
        try:
            await self._tally_new(slots, now)
        finally:
            for user_id in self._forgotten:  # erased while this pass read the store
                self._tally.forget(user_id)
            self._forgotten.clear()

    def forget(self, user_id: str) -> None:
        """An erasure: the impressions shown to ``user_id`` leave the items' and slots'
        counts for good (the store no longer holds them)."""
        self._tally.forget(user_id)
        self._forgotten.add(user_id)

    def held_users(self) -> set[str]:
        """The users whose impressions the counts hold."""
        return self._tally.users()

    async def _tally_new(self, slots: Slots, now: float) -> None:
        since, starts = self._window(slots, now)
        tally = self._tally
        excluded = frozenset() if self._excluded is None else self._excluded()
        if excluded != tally.excluded:
            tally.exclude(excluded)
        if not self._tallied or since < tally.since:
            tally = Tally(self._config.attribution_window_minutes * 60.0)
            tally.exclude(excluded)
            cursor = await self._log.last_offset()
            tally.expire(since)
            tally.restart(starts)
            shown = await self._store.get_impression_heads(since, math.inf)
            await _add_heads(tally, shown)
            await self._add_feedback(tally, [i.impression_id for i in shown])
            self._tally, self._cursor, self._read_from = tally, cursor, now
            self._tallied = True
            return
        if starts != tally.starts:
            tally.restart(starts)
        # Clicks first, then impressions: a click names an impression logged before it.
        clicks: list[Event] = []
        while True:  # only the clicks that name an impression: not the rest of the log
            found = await self._log.read_impression_clicks(self._cursor, _PAGE)
            if found:
                self._cursor = max(self._cursor, found[-1].offset or self._cursor)
            clicks.extend(found)
            if len(found) < _PAGE:
                break
        heads = await self._store.get_impression_heads(  # those held are not decoded again
            self._read_from - _LAG_SECONDS, math.inf, tally.held
        )
        await _add_heads(tally, heads)
        self._read_from = now
        for e in clicks:
            tally.click(str(e.attribution["impression_id"]), e.item_id, e.timestamp, e.user_id)
        tally.expire(since)

    async def _add_feedback(self, tally: Tally, impression_ids: list[str]) -> None:
        """The clicks on ``impression_ids`` counted, read and decoded a slice of
        impressions at a time, pausing for requests in between (a first pass reads the
        feedback of a whole window's impressions)."""
        for start in range(0, len(impression_ids), _ADD_CHUNK):
            if start:
                await let_requests_in()
            chunk = impression_ids[start : start + _ADD_CHUNK]
            for impression_id, events in (await self._log.read_feedback_of(chunk)).items():
                for e in events:
                    if e.type == "click":
                        tally.click(impression_id, e.item_id, e.timestamp, e.user_id)

    # -- retraining ----------------------------------------------------------------------

    async def retrain(self, trigger: str = "api") -> TrainingJob:
        """Queue a training run; returns its job (poll :meth:`job`)."""
        job = TrainingJob(uuid7(), trigger, "queued", self._clock())
        await self._store.put_job(job)
        task = asyncio.create_task(self._run(job), name=f"train-{job.job_id}")
        self._jobs[job.job_id] = task
        task.add_done_callback(lambda _: self._jobs.pop(job.job_id, None))
        return job

    async def job(self, job_id: str) -> TrainingJob:
        found = await self._store.get_job(job_id)
        if found is None:
            raise NotFound("job", job_id)
        return found

    async def wait(self, job_id: str) -> TrainingJob:
        """The job once it has finished."""
        task = self._jobs.get(job_id)
        if task is not None:
            await asyncio.shield(task)
        return await self.job(job_id)

    async def train_now(
        self, trigger: str = "cli", progress: Callable[[str], None] | None = None
    ) -> TrainingJob:
        """Train in the foreground (``recloop train``), reporting each stage to ``progress``."""
        job = TrainingJob(uuid7(), trigger, "queued", self._clock())
        await self._store.put_job(job)
        await self._run(job, progress)
        return await self.job(job.job_id)

    async def _run(self, job: TrainingJob, progress: Callable[[str], None] | None = None) -> None:
        async with self._training:
            job = replace(job, status="running")
            await self._store.put_job(job)
            try:
                job = await self._train(job, progress or (lambda stage: None))
            except Exception as exc:
                log.exception("training job %s failed", job.job_id)
                # An error in the training process names its own type already.
                why = (
                    str(exc) if isinstance(exc, TrainingFailed) else f"{type(exc).__name__}: {exc}"
                )
                job = replace(job, status="failed", message=why)
            await self._store.put_job(replace(job, finished_at=self._clock()))

    async def _train(self, job: TrainingJob, progress: Callable[[str], None]) -> TrainingJob:
        c = self._config
        now = self._clock()
        window = c.attribution_window_minutes * 60.0
        until = now - window  # every example's label is final
        since = until - c.training_days * DAY
        records = await self._store.get_models()
        plan = TrainingPlan(
            since=since,
            until=until,
            attribution_seconds=window,
            scheduled=job.trigger == "schedule",
            last_end=max((r.window_end for r in records), default=-math.inf),
            min_new_examples=c.min_new_examples,
            champion=await self._champion(),
            gate=PromotionGate(c.min_auc_gain, c.max_logloss_increase),
            holdout_fraction=c.holdout_fraction,
            learner=c.learner,
            alpha=c.alpha,
        )
        if self._training_reader is not None:
            # The training process reads and joins the window itself: building the rows
            # and decoding their logged features held the event loop for seconds.
            result = await in_training_process(
                progress, train_from_storage, self._training_reader, plan
            )
        else:
            # In-memory storage: only this process can read it.
            async def fit_in_process(data: TrainingData, planned: TrainingPlan) -> Outcome:
                return await in_training_process(progress, fit, data, planned)

            result = await run_plan(
                plan, self._store, self._log, progress, join_in_thread, fit_in_process
            )
        if result.outcome is None:
            log.info("scheduled retraining %s", result.skipped)
            return replace(job, status="skipped", message=result.skipped)
        outcome = result.outcome
        progress("registering the model")
        if outcome.artifact is None:
            message = outcome.reason
            if result.examples == 0:
                newer = await self._store.get_impressions(until, now + 1.0)
                message += ": " + no_examples_reason(
                    [i.created_at for i in newer],
                    until,
                    c.attribution_window_minutes,
                    c.training_days,
                )
            return replace(job, status="skipped", message=message)
        artifact = outcome.artifact
        version = f"m-{uuid7()}"
        record = ModelRecord(
            version=version,
            created_at=self._clock(),
            status="candidate" if outcome.accepted else "rejected",
            reason=outcome.reason,
            kind=artifact.kind,
            sha256=artifact.sha256,
            window_start=since,
            window_end=until,
            examples=result.examples,
            positives=result.positives,
            metrics=outcome.metrics,
            feature_names=list(artifact.feature_names),
        )
        await self._store.put_model(record, artifact.data)
        log.info("trained %s: %s", version, outcome.reason)
        if outcome.accepted and c.auto_deploy:
            try:
                await self.deploy(version, "", MONITOR)
            except (Conflict, InvalidInput) as exc:
                log.info("not deployed automatically: %s", exc.message)
        return replace(job, status="done", version=version, message=outcome.reason)

    async def _champion(self) -> Champion | None:
        version = self._slots.blue_version
        if version is None:
            return None
        found = await self._store.get_model(version)
        if found is None:
            return None
        record, data = found
        return Champion(record.kind, data, record.sha256, version)

    async def _schedule_loop(self) -> None:
        schedule = croniter(self._config.retrain_schedule, self._clock())
        while True:
            due = schedule.get_next(float)
            await asyncio.sleep(max(0.0, due - self._clock()))
            try:
                job = await self.retrain("schedule")
                await self.wait(job.job_id)
            except Exception as exc:
                log.warning("scheduled retraining failed: %s", exc)


async def _add_heads(tally: Tally, heads: Sequence[ImpressionHead]) -> None:
    """``tally.add(heads)`` in slices, pausing for requests in between (after a restart,
    or a busy minute, there are thousands)."""
    for start in range(0, len(heads), _ADD_CHUNK):
        if start:
            await let_requests_in()
        tally.add(heads[start : start + _ADD_CHUNK])
