"""``Client`` and ``AsyncClient``: one typed method per endpoint.

Both are built the same way: ``base_url`` (else ``RECLOOP_URL``, else
``http://127.0.0.1:8000``; ``/api/v1/learning`` is added unless given), ``api_key``
(else ``RECLOOP_API_KEY``; sent as ``Authorization: Bearer``), ``timeout`` in seconds
(or an ``httpx.Timeout``). Errors are raised as the exceptions of
:mod:`recloop_client._errors`; the clients never retry by themselves (a
:class:`~recloop_client.FeedbackBuffer` does, for feedback).

The two classes are written out twice on purpose (sync and async methods cannot share
one body); what each endpoint sends and reads is in :mod:`recloop_client._calls`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from recloop_client import _calls as c
from recloop_client import _models as m

T = TypeVar("T")


class Client:
    """A synchronous recloop client (thread-safe: ``httpx.Client`` is).

    >>> with Client("http://127.0.0.1:8000") as client:  # doctest: +SKIP
    ...     client.feedback("u1", "i1", "click")
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = c.DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = c.resolve_url(base_url)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=c.resolve_headers(api_key, headers),
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, call: c.Call[T]) -> T:
        try:
            response = self._http.send(call.request(self._http))
        except httpx.TransportError as exc:
            raise c.transport_error(exc, call) from exc
        return call.answer(response)

    # -- feedback and items --------------------------------------------------------

    def feedback(
        self,
        user_id: str,
        item_id: str,
        type: m.FeedbackType | str,
        value: float | None = None,
        *,
        event_id: str | None = None,
        text: str | None = None,
        timestamp: m.Timestamp | None = None,
        context: Mapping[str, Any] | None = None,
        attribution: m.Attribution | Mapping[str, Any] | None = None,
    ) -> m.FeedbackResult:
        """``POST /feedback`` with one event. An invalid event raises ``ValidationError``,
        one over its rate limit ``RateLimited``, one of a blocked user ``AuthError`` (403).
        For many events use :meth:`feedback_batch` or a :class:`FeedbackBuffer`."""
        event = m.Event(
            user_id, item_id, type, value, event_id, text, timestamp, context, attribution
        )
        return self._run(c.feedback(event))

    def feedback_batch(self, events: Iterable[m.Event | Mapping[str, Any]]) -> m.FeedbackResult:
        """``POST /feedback`` with ``{"events": [...]}`` (1 to 1,000): each event gets its
        own outcome in ``results`` (accepted, duplicate, rejected, rate_limited, blocked)."""
        return self._run(c.feedback_batch(events))

    def put_item(
        self,
        item_id: str,
        vector: Sequence[float] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> m.Item:
        """``PUT /items/{item_id}``: store an item's vector, or attributes to hash into one."""
        return self._run(c.put_item(item_id, vector, attributes))

    def put_items(self, items: Iterable[m.NewItem | Mapping[str, Any]]) -> m.ItemBatch:
        """``POST /items`` (1 to 1,000 items, all or nothing)."""
        return self._run(c.put_items(items))

    def item(self, item_id: str) -> m.Item:
        """``GET /items/{item_id}``."""
        return self._run(c.item(item_id))

    # -- users ---------------------------------------------------------------------

    def preferences(self, user_id: str) -> m.Preferences:
        """``GET /users/{user_id}/preferences`` (``NotFound`` until an event is applied)."""
        return self._run(c.preferences(user_id))

    def weights(self, user_id: str) -> m.Weights:
        """``GET /users/{user_id}/weights``: the algorithm weights of the user's segment."""
        return self._run(c.weights(user_id))

    def strategy(self, user_id: str, *, expose: bool = True) -> m.Strategy:
        """``GET /users/{user_id}/strategy``: weights, exploration, model and experiments.

        ``expose=False`` (``?expose=false``) reads it without recording the user's
        exposure to the experiments it assigns (for tools that only look)."""
        return self._run(c.strategy(user_id, expose))

    def rank(
        self,
        user_id: str,
        candidates: Iterable[m.Candidate | str | Mapping[str, Any]],
        k: int | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> m.Ranking:
        """``POST /users/{user_id}/rank``: fuse and order ``candidates`` (item ids, or
        :class:`Candidate` with algorithm and score); the impression is logged."""
        return self._run(c.rank(user_id, candidates, k, context))

    def impression(self, impression_id: str) -> m.Impression:
        """``GET /impressions/{impression_id}`` with the feedback that names it."""
        return self._run(c.impression(impression_id))

    # -- algorithms ----------------------------------------------------------------

    def report_performance(
        self,
        records: m.PerformanceRecord | Iterable[m.PerformanceRecord],
        report_id: str | None = None,
    ) -> m.PerformanceReport:
        """``POST /algorithm-performance``: one record or a batch (≤ 1,000); the same
        ``report_id`` again changes nothing (``status == "duplicate"``)."""
        return self._run(c.report_performance(records, report_id))

    def algorithms(self) -> m.Algorithms:
        """``GET /algorithms``: per segment and algorithm, counts, posterior, weight."""
        return self._run(c.algorithms())

    def enable_algorithm(
        self, name: str, segments: Sequence[str] | None = None, reason: str | None = None
    ) -> m.Override:
        """``POST /algorithms/{name}/enable`` (admin): by hand, for ``segments`` (default all)."""
        return self._run(c.override(name, "enable", segments, reason))

    def disable_algorithm(
        self, name: str, segments: Sequence[str] | None = None, reason: str | None = None
    ) -> m.Override:
        """``POST /algorithms/{name}/disable`` (admin)."""
        return self._run(c.override(name, "disable", segments, reason))

    def release_algorithm(
        self, name: str, segments: Sequence[str] | None = None, reason: str | None = None
    ) -> m.Override:
        """``POST /algorithms/{name}/release`` (admin): back to the automatic rules."""
        return self._run(c.override(name, "release", segments, reason))

    # -- experiments ---------------------------------------------------------------

    def create_experiment(
        self,
        experiment_id: str,
        name: str,
        variants: Iterable[m.Variant | Mapping[str, Any]],
        metrics: Iterable[m.Metric | Mapping[str, Any]],
        *,
        hypothesis: str | None = None,
        traffic_allocation: float | None = None,
        seed: str | None = None,
        hash_version: int | None = None,
        guardrails: Iterable[m.Metric | Mapping[str, Any]] | None = None,
        alpha: float | None = None,
        sequential: bool | None = None,
    ) -> m.Experiment:
        """``POST /experiments`` (admin): a draft; the first variant is the baseline."""
        body = c.experiment_body(
            variants,
            metrics,
            guardrails,
            experiment_id=experiment_id,
            name=name,
            hypothesis=hypothesis,
            traffic_allocation=traffic_allocation,
            seed=seed,
            hash_version=hash_version,
            alpha=alpha,
            sequential=sequential,
        )
        return self._run(c.create_experiment(body))

    def experiments(self) -> list[m.Experiment]:
        """``GET /experiments``."""
        return self._run(c.experiments())

    def experiment(self, experiment_id: str) -> m.Experiment:
        """``GET /experiments/{experiment_id}``."""
        return self._run(c.experiment(experiment_id))

    def update_experiment(
        self,
        experiment_id: str,
        *,
        name: str | None = None,
        hypothesis: str | None = None,
        variants: Iterable[m.Variant | Mapping[str, Any]] | None = None,
        traffic_allocation: float | None = None,
        seed: str | None = None,
        hash_version: int | None = None,
        metrics: Iterable[m.Metric | Mapping[str, Any]] | None = None,
        guardrails: Iterable[m.Metric | Mapping[str, Any]] | None = None,
        alpha: float | None = None,
        sequential: bool | None = None,
    ) -> m.Experiment:
        """``PATCH /experiments/{experiment_id}`` (admin): change the fields given."""
        body = c.experiment_body(
            variants,
            metrics,
            guardrails,
            name=name,
            hypothesis=hypothesis,
            traffic_allocation=traffic_allocation,
            seed=seed,
            hash_version=hash_version,
            alpha=alpha,
            sequential=sequential,
        )
        return self._run(c.update_experiment(experiment_id, body))

    def start_experiment(self, experiment_id: str) -> m.Experiment:
        """``POST /experiments/{experiment_id}/start`` (admin): draft → running."""
        return self._run(c.experiment_action(experiment_id, "start"))

    def stop_experiment(self, experiment_id: str) -> m.Experiment:
        """``POST /experiments/{experiment_id}/stop`` (admin): running → stopped."""
        return self._run(c.experiment_action(experiment_id, "stop"))

    def assignment(self, experiment_id: str, user_id: str) -> m.Assignment:
        """``GET /experiments/{id}/assignment/{user_id}``; records the exposure while running."""
        return self._run(c.assignment(experiment_id, user_id))

    def results(self, experiment_id: str) -> m.Results:
        """``GET /experiments/{experiment_id}/results``: live statistics."""
        return self._run(c.results(experiment_id))

    def power(
        self,
        baseline: float,
        mde: float,
        *,
        relative: bool | None = None,
        alpha: float | None = None,
        power: float | None = None,
        metric: str | None = None,
        stddev: float | None = None,
    ) -> int:
        """``POST /experiments/power``: users needed per variant."""
        body = m._drop_none(
            baseline=baseline,
            mde=mde,
            relative=relative,
            alpha=alpha,
            power=power,
            metric=metric,
            stddev=stddev,
        )
        return self._run(c.power(body))

    # -- models, guard, privacy, health --------------------------------------------

    def models(self) -> list[m.ModelRecord]:
        """``GET /models``: every registered model, newest first."""
        return self._run(c.models())

    def model(self, version: str) -> m.ModelRecord:
        """``GET /models/{version}``."""
        return self._run(c.model(version))

    def retrain(self) -> m.TrainingJob:
        """``POST /models/retrain`` (admin): start a training run; poll :meth:`job`."""
        return self._run(c.retrain())

    def job(self, job_id: str) -> m.TrainingJob:
        """``GET /models/jobs/{job_id}``."""
        return self._run(c.job(job_id))

    def deployment(self) -> m.Deployment:
        """``GET /models/deployment``: the slots, their live counts, every transition."""
        return self._run(c.deployment())

    def deploy_model(self, version: str, reason: str | None = None) -> m.Transition:
        """``POST /models/{version}/deploy`` (admin): into the green (canary) slot."""
        return self._run(c.model_action("deploy", version, reason))

    def promote_model(self, reason: str | None = None, force: bool = False) -> m.Transition:
        """``POST /models/promote`` (admin): green serves everyone. Before the canary's
        verdict this needs ``force=True`` (recorded as forced in the deployment audit)."""
        return self._run(c.model_action("promote", None, reason, force))

    def rollback_model(self, reason: str | None = None) -> m.Transition:
        """``POST /models/rollback`` (admin): drop green, or undo the promotion watched."""
        return self._run(c.model_action("rollback", None, reason))

    def reliability(self, user_id: str) -> m.Reliability:
        """``GET /users/{user_id}/reliability``: the guard's score, status and signals."""
        return self._run(c.reliability(user_id))

    def suspects(self, limit: int | None = None) -> list[m.Suspect]:
        """``GET /spam/suspects``: the lowest reliability scores."""
        return self._run(c.suspects(limit))

    def block_user(self, user_id: str, reason: str | None = None) -> m.Suspect:
        """``POST /users/{user_id}/block`` (admin)."""
        return self._run(c.block(user_id, "block", reason))

    def unblock_user(self, user_id: str, reason: str | None = None) -> m.Suspect:
        """``POST /users/{user_id}/unblock`` (admin)."""
        return self._run(c.block(user_id, "unblock", reason))

    def export_user(self, user_id: str) -> m.Export:
        """``GET /users/{user_id}/export`` (admin): everything stored about the user."""
        return self._run(c.export_user(user_id))

    def erase_user(self, user_id: str) -> m.Erasure:
        """``DELETE /users/{user_id}`` (admin): erase everything keyed by the user."""
        return self._run(c.erase_user(user_id))

    def purge(self) -> dict[str, int]:
        """``POST /privacy/purge`` (admin): run the retention purge now; rows deleted."""
        return self._run(c.purge())

    def health(self) -> m.Health:
        """``GET /health`` (no key needed); a ``down`` server's answer is returned too."""
        return self._run(c.health())


class AsyncClient:
    """An asyncio recloop client; the same methods as :class:`Client`, awaited.

    >>> async with AsyncClient() as client:  # doctest: +SKIP
    ...     await client.weights("u1")
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = c.DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = c.resolve_url(base_url)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=c.resolve_headers(api_key, headers),
            timeout=timeout,
            transport=transport,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _run(self, call: c.Call[T]) -> T:
        try:
            response = await self._http.send(call.request(self._http))
        except httpx.TransportError as exc:
            raise c.transport_error(exc, call) from exc
        return call.answer(response)

    # -- feedback and items --------------------------------------------------------

    async def feedback(
        self,
        user_id: str,
        item_id: str,
        type: m.FeedbackType | str,
        value: float | None = None,
        *,
        event_id: str | None = None,
        text: str | None = None,
        timestamp: m.Timestamp | None = None,
        context: Mapping[str, Any] | None = None,
        attribution: m.Attribution | Mapping[str, Any] | None = None,
    ) -> m.FeedbackResult:
        """``POST /feedback`` with one event. An invalid event raises ``ValidationError``,
        one over its rate limit ``RateLimited``, one of a blocked user ``AuthError`` (403).
        For many events use :meth:`feedback_batch` or a :class:`FeedbackBuffer`."""
        event = m.Event(
            user_id, item_id, type, value, event_id, text, timestamp, context, attribution
        )
        return await self._run(c.feedback(event))

    async def feedback_batch(
        self, events: Iterable[m.Event | Mapping[str, Any]]
    ) -> m.FeedbackResult:
        """``POST /feedback`` with ``{"events": [...]}`` (1 to 1,000): each event gets its
        own outcome in ``results`` (accepted, duplicate, rejected, rate_limited, blocked)."""
        return await self._run(c.feedback_batch(events))

    async def put_item(
        self,
        item_id: str,
        vector: Sequence[float] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> m.Item:
        """``PUT /items/{item_id}``: store an item's vector, or attributes to hash into one."""
        return await self._run(c.put_item(item_id, vector, attributes))

    async def put_items(self, items: Iterable[m.NewItem | Mapping[str, Any]]) -> m.ItemBatch:
        """``POST /items`` (1 to 1,000 items, all or nothing)."""
        return await self._run(c.put_items(items))

    async def item(self, item_id: str) -> m.Item:
        """``GET /items/{item_id}``."""
        return await self._run(c.item(item_id))

    # -- users ---------------------------------------------------------------------

    async def preferences(self, user_id: str) -> m.Preferences:
        """``GET /users/{user_id}/preferences`` (``NotFound`` until an event is applied)."""
        return await self._run(c.preferences(user_id))

    async def weights(self, user_id: str) -> m.Weights:
        """``GET /users/{user_id}/weights``: the algorithm weights of the user's segment."""
        return await self._run(c.weights(user_id))

    async def strategy(self, user_id: str, *, expose: bool = True) -> m.Strategy:
        """``GET /users/{user_id}/strategy``: weights, exploration, model and experiments.

        ``expose=False`` (``?expose=false``) reads it without recording the user's
        exposure to the experiments it assigns (for tools that only look)."""
        return await self._run(c.strategy(user_id, expose))

    async def rank(
        self,
        user_id: str,
        candidates: Iterable[m.Candidate | str | Mapping[str, Any]],
        k: int | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> m.Ranking:
        """``POST /users/{user_id}/rank``: fuse and order ``candidates`` (item ids, or
        :class:`Candidate` with algorithm and score); the impression is logged."""
        return await self._run(c.rank(user_id, candidates, k, context))

    async def impression(self, impression_id: str) -> m.Impression:
        """``GET /impressions/{impression_id}`` with the feedback that names it."""
        return await self._run(c.impression(impression_id))

    # -- algorithms ----------------------------------------------------------------

    async def report_performance(
        self,
        records: m.PerformanceRecord | Iterable[m.PerformanceRecord],
        report_id: str | None = None,
    ) -> m.PerformanceReport:
        """``POST /algorithm-performance``: one record or a batch (≤ 1,000); the same
        ``report_id`` again changes nothing (``status == "duplicate"``)."""
        return await self._run(c.report_performance(records, report_id))

    async def algorithms(self) -> m.Algorithms:
        """``GET /algorithms``: per segment and algorithm, counts, posterior, weight."""
        return await self._run(c.algorithms())

    async def enable_algorithm(
        self, name: str, segments: Sequence[str] | None = None, reason: str | None = None
    ) -> m.Override:
        """``POST /algorithms/{name}/enable`` (admin): by hand, for ``segments`` (default all)."""
        return await self._run(c.override(name, "enable", segments, reason))

    async def disable_algorithm(
        self, name: str, segments: Sequence[str] | None = None, reason: str | None = None
    ) -> m.Override:
        """``POST /algorithms/{name}/disable`` (admin)."""
        return await self._run(c.override(name, "disable", segments, reason))

    async def release_algorithm(
        self, name: str, segments: Sequence[str] | None = None, reason: str | None = None
    ) -> m.Override:
        """``POST /algorithms/{name}/release`` (admin): back to the automatic rules."""
        return await self._run(c.override(name, "release", segments, reason))

    # -- experiments ---------------------------------------------------------------

    async def create_experiment(
        self,
        experiment_id: str,
        name: str,
        variants: Iterable[m.Variant | Mapping[str, Any]],
        metrics: Iterable[m.Metric | Mapping[str, Any]],
        *,
        hypothesis: str | None = None,
        traffic_allocation: float | None = None,
        seed: str | None = None,
        hash_version: int | None = None,
        guardrails: Iterable[m.Metric | Mapping[str, Any]] | None = None,
        alpha: float | None = None,
        sequential: bool | None = None,
    ) -> m.Experiment:
        """``POST /experiments`` (admin): a draft; the first variant is the baseline."""
        body = c.experiment_body(
            variants,
            metrics,
            guardrails,
            experiment_id=experiment_id,
            name=name,
            hypothesis=hypothesis,
            traffic_allocation=traffic_allocation,
            seed=seed,
            hash_version=hash_version,
            alpha=alpha,
            sequential=sequential,
        )
        return await self._run(c.create_experiment(body))

    async def experiments(self) -> list[m.Experiment]:
        """``GET /experiments``."""
        return await self._run(c.experiments())

    async def experiment(self, experiment_id: str) -> m.Experiment:
        """``GET /experiments/{experiment_id}``."""
        return await self._run(c.experiment(experiment_id))

    async def update_experiment(
        self,
        experiment_id: str,
        *,
        name: str | None = None,
        hypothesis: str | None = None,
        variants: Iterable[m.Variant | Mapping[str, Any]] | None = None,
        traffic_allocation: float | None = None,
        seed: str | None = None,
        hash_version: int | None = None,
        metrics: Iterable[m.Metric | Mapping[str, Any]] | None = None,
        guardrails: Iterable[m.Metric | Mapping[str, Any]] | None = None,
        alpha: float | None = None,
        sequential: bool | None = None,
    ) -> m.Experiment:
        """``PATCH /experiments/{experiment_id}`` (admin): change the fields given."""
        body = c.experiment_body(
            variants,
            metrics,
            guardrails,
            name=name,
            hypothesis=hypothesis,
            traffic_allocation=traffic_allocation,
            seed=seed,
            hash_version=hash_version,
            alpha=alpha,
            sequential=sequential,
        )
        return await self._run(c.update_experiment(experiment_id, body))

    async def start_experiment(self, experiment_id: str) -> m.Experiment:
        """``POST /experiments/{experiment_id}/start`` (admin): draft → running."""
        return await self._run(c.experiment_action(experiment_id, "start"))

    async def stop_experiment(self, experiment_id: str) -> m.Experiment:
        """``POST /experiments/{experiment_id}/stop`` (admin): running → stopped."""
        return await self._run(c.experiment_action(experiment_id, "stop"))

    async def assignment(self, experiment_id: str, user_id: str) -> m.Assignment:
        """``GET /experiments/{id}/assignment/{user_id}``; records the exposure while running."""
        return await self._run(c.assignment(experiment_id, user_id))

    async def results(self, experiment_id: str) -> m.Results:
        """``GET /experiments/{experiment_id}/results``: live statistics."""
        return await self._run(c.results(experiment_id))

    async def power(
        self,
        baseline: float,
        mde: float,
        *,
        relative: bool | None = None,
        alpha: float | None = None,
        power: float | None = None,
        metric: str | None = None,
        stddev: float | None = None,
    ) -> int:
        """``POST /experiments/power``: users needed per variant."""
        body = m._drop_none(
            baseline=baseline,
            mde=mde,
            relative=relative,
            alpha=alpha,
            power=power,
            metric=metric,
            stddev=stddev,
        )
        return await self._run(c.power(body))

    # -- models, guard, privacy, health --------------------------------------------

    async def models(self) -> list[m.ModelRecord]:
        """``GET /models``: every registered model, newest first."""
        return await self._run(c.models())

    async def model(self, version: str) -> m.ModelRecord:
        """``GET /models/{version}``."""
        return await self._run(c.model(version))

    async def retrain(self) -> m.TrainingJob:
        """``POST /models/retrain`` (admin): start a training run; poll :meth:`job`."""
        return await self._run(c.retrain())

    async def job(self, job_id: str) -> m.TrainingJob:
        """``GET /models/jobs/{job_id}``."""
        return await self._run(c.job(job_id))

    async def deployment(self) -> m.Deployment:
        """``GET /models/deployment``: the slots, their live counts, every transition."""
        return await self._run(c.deployment())

    async def deploy_model(self, version: str, reason: str | None = None) -> m.Transition:
        """``POST /models/{version}/deploy`` (admin): into the green (canary) slot."""
        return await self._run(c.model_action("deploy", version, reason))

    async def promote_model(self, reason: str | None = None, force: bool = False) -> m.Transition:
        """``POST /models/promote`` (admin): green serves everyone. Before the canary's
        verdict this needs ``force=True`` (recorded as forced in the deployment audit)."""
        return await self._run(c.model_action("promote", None, reason, force))

    async def rollback_model(self, reason: str | None = None) -> m.Transition:
        """``POST /models/rollback`` (admin): drop green, or undo the promotion watched."""
        return await self._run(c.model_action("rollback", None, reason))

    async def reliability(self, user_id: str) -> m.Reliability:
        """``GET /users/{user_id}/reliability``: the guard's score, status and signals."""
        return await self._run(c.reliability(user_id))

    async def suspects(self, limit: int | None = None) -> list[m.Suspect]:
        """``GET /spam/suspects``: the lowest reliability scores."""
        return await self._run(c.suspects(limit))

    async def block_user(self, user_id: str, reason: str | None = None) -> m.Suspect:
        """``POST /users/{user_id}/block`` (admin)."""
        return await self._run(c.block(user_id, "block", reason))

    async def unblock_user(self, user_id: str, reason: str | None = None) -> m.Suspect:
        """``POST /users/{user_id}/unblock`` (admin)."""
        return await self._run(c.block(user_id, "unblock", reason))

    async def export_user(self, user_id: str) -> m.Export:
        """``GET /users/{user_id}/export`` (admin): everything stored about the user."""
        return await self._run(c.export_user(user_id))

    async def erase_user(self, user_id: str) -> m.Erasure:
        """``DELETE /users/{user_id}`` (admin): erase everything keyed by the user."""
        return await self._run(c.erase_user(user_id))

    async def purge(self) -> dict[str, int]:
        """``POST /privacy/purge`` (admin): run the retention purge now; rows deleted."""
        return await self._run(c.purge())

    async def health(self) -> m.Health:
        """``GET /health`` (no key needed); a ``down`` server's answer is returned too."""
        return await self._run(c.health())
