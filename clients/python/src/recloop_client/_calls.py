"""What each endpoint sends and how its answer is read, shared by both clients.

A :class:`Call` is a request description plus a parser; :class:`~recloop_client.Client`
runs it with ``httpx.Client``, :class:`~recloop_client.AsyncClient` with
``httpx.AsyncClient``. Nothing here does I/O.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from recloop_client import _models as m
from recloop_client._errors import RecloopError, TransportError, ValidationError, error_for

T = TypeVar("T")

API_PREFIX = "/api/v1/learning"
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 10.0


def resolve_url(base_url: str | None) -> str:
    """``base_url``, else ``RECLOOP_URL``, else ``http://127.0.0.1:8000``; the API prefix
    ``/api/v1/learning`` is added unless the URL already ends with it."""
    url = (base_url or os.environ.get("RECLOOP_URL") or DEFAULT_URL).rstrip("/")
    return url if url.endswith(API_PREFIX) else url + API_PREFIX


def resolve_headers(api_key: str | None, headers: Mapping[str, str] | None) -> dict[str, str]:
    """``Authorization: Bearer`` from ``api_key``, else ``RECLOOP_API_KEY`` (none if unset)."""
    key = api_key if api_key is not None else os.environ.get("RECLOOP_API_KEY")
    out = {"user-agent": "recloop-client/0.1", **(headers or {})}
    if key:
        out["authorization"] = f"Bearer {key}"
    return out


def seg(value: str, name: str) -> str:
    """``value`` as one path segment, percent-encoded.

    An id with ``/``, or ``.`` or ``..``, names no resource (the server refuses such
    ids everywhere, and a URL cannot carry them: ``%2F`` is decoded to ``/`` before
    routing, dot segments are removed): ``ValidationError`` before anything is sent,
    as the server's 422 would be.
    """
    if "/" in value or value in (".", ".."):
        detail = [
            {
                "loc": ["path", name],
                "msg": "must not contain '/' or control characters, nor be '.' or '..'",
                "type": "string_pattern_mismatch",
            }
        ]
        raise ValidationError(422, detail)
    return quote(value, safe="")


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    json: Any = None
    params: Mapping[str, Any] | None = None
    also_ok: tuple[int, ...] = ()
    """Error statuses whose body is still the answer (``/health``'s 503)."""

    def request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        return client.build_request(self.method, self.path, json=self.json, params=self.params)

    def answer(self, response: httpx.Response) -> T:
        if response.is_success or response.status_code in self.also_ok:
            try:
                data = response.json()
            except ValueError:
                raise RecloopError(
                    f"{self.method} {self.path}: {response.status_code} with a body that is "
                    f"not JSON: {response.text[:200]!r}"
                ) from None
            return self.parse(data)
        raise error_for(response)


def transport_error(exc: httpx.TransportError, call: Call[Any]) -> TransportError:
    return TransportError(f"{call.method} {call.path}: {type(exc).__name__}: {exc}")


def _one(cls: type[T]) -> Callable[[Any], T]:
    return lambda data: m.decode(cls, data)


def _many(cls: type[T]) -> Callable[[Any], list[T]]:
    return lambda data: [m.decode(cls, d) for d in data]


def _event_json(event: m.Event | Mapping[str, Any]) -> dict[str, Any]:
    return event.to_json() if isinstance(event, m.Event) else dict(event)


def _json(value: Any) -> Any:
    return value.to_json() if hasattr(value, "to_json") else dict(value)


# -- feedback and items ------------------------------------------------------------


def feedback(event: m.Event | Mapping[str, Any]) -> Call[m.FeedbackResult]:
    return Call("POST", "/feedback", _one(m.FeedbackResult), json=_event_json(event))


def feedback_batch(events: Iterable[m.Event | Mapping[str, Any]]) -> Call[m.FeedbackResult]:
    body = {"events": [_event_json(e) for e in events]}
    return Call("POST", "/feedback", _one(m.FeedbackResult), json=body)


def put_item(
    item_id: str, vector: Sequence[float] | None, attributes: Mapping[str, Any] | None
) -> Call[m.Item]:
    body = m._drop_none(
        vector=list(vector) if vector is not None else None,
        attributes=dict(attributes) if attributes is not None else None,
    )
    return Call("PUT", f"/items/{seg(item_id, 'item_id')}", _one(m.Item), json=body)


def put_items(items: Iterable[m.NewItem | Mapping[str, Any]]) -> Call[m.ItemBatch]:
    body = {"items": [_json(i) for i in items]}
    return Call("POST", "/items", _one(m.ItemBatch), json=body)


def item(item_id: str) -> Call[m.Item]:
    return Call("GET", f"/items/{seg(item_id, 'item_id')}", _one(m.Item))


# -- users -------------------------------------------------------------------------


def preferences(user_id: str) -> Call[m.Preferences]:
    return Call("GET", f"/users/{seg(user_id, 'user_id')}/preferences", _one(m.Preferences))


def weights(user_id: str) -> Call[m.Weights]:
    return Call("GET", f"/users/{seg(user_id, 'user_id')}/weights", _one(m.Weights))


def strategy(user_id: str, expose: bool = True) -> Call[m.Strategy]:
    params = None if expose else {"expose": "false"}
    path = f"/users/{seg(user_id, 'user_id')}/strategy"
    return Call("GET", path, _one(m.Strategy), params=params)


def rank(
    user_id: str,
    candidates: Iterable[m.Candidate | str | Mapping[str, Any]],
    k: int | None,
    context: Mapping[str, Any] | None,
) -> Call[m.Ranking]:
    cands = [{"item_id": c} if isinstance(c, str) else _json(c) for c in candidates]
    body = m._drop_none(
        candidates=cands, k=k, context=dict(context) if context is not None else None
    )
    return Call("POST", f"/users/{seg(user_id, 'user_id')}/rank", _one(m.Ranking), json=body)


def impression(impression_id: str) -> Call[m.Impression]:
    return Call("GET", f"/impressions/{seg(impression_id, 'impression_id')}", _one(m.Impression))


# -- algorithms --------------------------------------------------------------------


def report_performance(
    records: m.PerformanceRecord | Iterable[m.PerformanceRecord], report_id: str | None
) -> Call[m.PerformanceReport]:
    if isinstance(records, m.PerformanceRecord):
        body = records.to_json()
        if report_id is not None:
            body["report_id"] = report_id
    else:
        body = m._drop_none(records=[r.to_json() for r in records], report_id=report_id)
    return Call("POST", "/algorithm-performance", _one(m.PerformanceReport), json=body)


def algorithms() -> Call[m.Algorithms]:
    return Call("GET", "/algorithms", _one(m.Algorithms))


def override(
    name: str, action: str, segments: Sequence[str] | None, reason: str | None
) -> Call[m.Override]:
    body = m._drop_none(segments=list(segments) if segments is not None else None, reason=reason)
    return Call("POST", f"/algorithms/{seg(name, 'name')}/{action}", _one(m.Override), json=body)


# -- experiments -------------------------------------------------------------------


def create_experiment(body: dict[str, Any]) -> Call[m.Experiment]:
    return Call("POST", "/experiments", _one(m.Experiment), json=body)


def experiment_body(
    variants: Iterable[m.Variant | Mapping[str, Any]] | None,
    metrics: Iterable[m.Metric | Mapping[str, Any]] | None,
    guardrails: Iterable[m.Metric | Mapping[str, Any]] | None,
    **fields: Any,
) -> dict[str, Any]:
    return m._drop_none(
        **fields,
        variants=[_json(v) for v in variants] if variants is not None else None,
        metrics=[_json(x) for x in metrics] if metrics is not None else None,
        guardrails=[_json(x) for x in guardrails] if guardrails is not None else None,
    )


def experiments() -> Call[list[m.Experiment]]:
    return Call("GET", "/experiments", _many(m.Experiment))


def experiment(experiment_id: str) -> Call[m.Experiment]:
    return Call("GET", f"/experiments/{seg(experiment_id, 'experiment_id')}", _one(m.Experiment))


def update_experiment(experiment_id: str, body: dict[str, Any]) -> Call[m.Experiment]:
    return Call(
        "PATCH",
        f"/experiments/{seg(experiment_id, 'experiment_id')}",
        _one(m.Experiment),
        json=body,
    )


def experiment_action(experiment_id: str, action: str) -> Call[m.Experiment]:
    return Call(
        "POST", f"/experiments/{seg(experiment_id, 'experiment_id')}/{action}", _one(m.Experiment)
    )


def assignment(experiment_id: str, user_id: str) -> Call[m.Assignment]:
    path = (
        f"/experiments/{seg(experiment_id, 'experiment_id')}/assignment/{seg(user_id, 'user_id')}"
    )
    return Call("GET", path, _one(m.Assignment))


def results(experiment_id: str) -> Call[m.Results]:
    return Call(
        "GET", f"/experiments/{seg(experiment_id, 'experiment_id')}/results", _one(m.Results)
    )


def power(body: dict[str, Any]) -> Call[int]:
    return Call("POST", "/experiments/power", lambda d: int(d["users_per_variant"]), json=body)


# -- models, guard, privacy, health ------------------------------------------------


def models() -> Call[list[m.ModelRecord]]:
    return Call("GET", "/models", _many(m.ModelRecord))


def model(version: str) -> Call[m.ModelRecord]:
    return Call("GET", f"/models/{seg(version, 'version')}", _one(m.ModelRecord))


def retrain() -> Call[m.TrainingJob]:
    return Call("POST", "/models/retrain", _one(m.TrainingJob))


def job(job_id: str) -> Call[m.TrainingJob]:
    return Call("GET", f"/models/jobs/{seg(job_id, 'job_id')}", _one(m.TrainingJob))


def deployment() -> Call[m.Deployment]:
    return Call("GET", "/models/deployment", _one(m.Deployment))


def model_action(
    action: str, version: str | None, reason: str | None, force: bool = False
) -> Call[m.Transition]:
    path = (
        f"/models/{seg(version, 'version')}/deploy" if version is not None else f"/models/{action}"
    )
    body = m._drop_none(reason=reason, force=True if force else None)
    return Call("POST", path, _one(m.Transition), json=body)


def reliability(user_id: str) -> Call[m.Reliability]:
    return Call("GET", f"/users/{seg(user_id, 'user_id')}/reliability", _one(m.Reliability))


def suspects(limit: int | None) -> Call[list[m.Suspect]]:
    params = {"limit": limit} if limit is not None else None
    return Call("GET", "/spam/suspects", _many(m.Suspect), params=params)


def block(user_id: str, action: str, reason: str | None) -> Call[m.Suspect]:
    body = m._drop_none(reason=reason)
    return Call("POST", f"/users/{seg(user_id, 'user_id')}/{action}", _one(m.Suspect), json=body)


def export_user(user_id: str) -> Call[m.Export]:
    return Call("GET", f"/users/{seg(user_id, 'user_id')}/export", _one(m.Export))


def erase_user(user_id: str) -> Call[m.Erasure]:
    return Call("DELETE", f"/users/{seg(user_id, 'user_id')}", _one(m.Erasure))


def purge() -> Call[dict[str, int]]:
    return Call("POST", "/privacy/purge", lambda d: {k: int(v) for k, v in d["deleted"].items()})


def health() -> Call[m.Health]:
    return Call("GET", "/health", _one(m.Health), also_ok=(503,))
