"""The FastAPI application factory. Nothing is built at import time."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Receive, Scope, Send

from recloop import __version__
from recloop.api import errors
from recloop.api.lean import FastPaths, LeanRoute, lean_routes
from recloop.api.links import add_links
from recloop.api.middleware import RequestMiddleware, route_templates
from recloop.api.routers import (
    algorithms,
    experiments,
    feedback,
    guard,
    health,
    items,
    models,
    privacy,
    users,
)
from recloop.api.routers import metrics as metrics_route
from recloop.api.schemas import (
    ErrorOut,
    FeedbackBatchIn,
    FeedbackIn,
    PerformanceBatchIn,
    PerformanceIn,
)
from recloop.config import Settings
from recloop.console import install as install_console
from recloop.container import Container, build_container
from recloop.metrics import Metrics

PREFIX = "/api/v1/learning"

KEYED_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No valid API key."},
    403: {"model": ErrorOut, "description": "The API key lacks the route's role."},
    413: {"model": ErrorOut, "description": "The body is larger than api.max_body_bytes."},
}
"""Answers every route behind an API key may give (all but the health checks)."""


class RecloopApp(FastAPI):
    """The FastAPI app, with the hot routes taken at its door.

    Once the middleware stack is built, an HTTP request for a hot route
    (:class:`~recloop.api.lean.FastPaths`) goes straight to the request middleware,
    which serves it; every other request takes the whole stack. The layers skipped
    do nothing for such a request: FastAPI's telemetry (turned off) and its body
    limit (none set: the request middleware's applies), Starlette's server-error
    middleware (the request middleware answers an error with its own JSON 500, and
    one raised after the response started passes through both alike).
    """

    _entry: RequestMiddleware | None = None

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        layer: Any = stack
        while layer is not None and not isinstance(layer, RequestMiddleware):
            layer = getattr(layer, "app", None)
        self._entry = layer
        return stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        entry = self._entry
        if entry is not None and scope["type"] == "http" and not self.root_path:
            hit = entry.hot(scope)
            if hit is not None:
                scope["app"] = self
                await entry.serve(scope, receive, send, hit)
                return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None, container: Container | None = None, *, lean: bool = True
) -> RecloopApp:
    """Build the app; its lifespan starts the processor (replaying the log) and stops it.

    ``lean``: serve the hot paths by their lean routes (:mod:`recloop.api.lean`, the lean
    ``POST /feedback``) ahead of the documented ones. Without them the documented routes
    answer every request: the oracle the lean routes are tested against.
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        c = container or build_container(settings)
        await c.start()
        app.state.container = c
        # What start-up built (modules, adapters, replayed state) lives as long as the
        # process: keep it out of the collector's full passes, which otherwise rescan
        # it for nothing and pause every request while they do.
        gc.collect()
        gc.freeze()
        lag = app.state.metrics.loop_lag
        lag.start()
        try:
            yield
        finally:
            await lag.stop()
            await c.stop()

    app = RecloopApp(
        title="recloop",
        version=__version__,
        summary="Real-time learning loop for recommender systems.",
        lifespan=lifespan,
        # /items/%2F is /items// once decoded: a 404, not a redirect to another resource.
        redirect_slashes=False,
        # FastAPI's OpenTelemetry bridge looks up three global providers on every request;
        # recloop configures none (its metrics are Prometheus, api/middleware.py).
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # /docs and /redoc are served from the package's assets (recloop.console.docs).
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    app.state.metrics = Metrics(lambda: getattr(app.state, "container", None))
    app.include_router(metrics_route.router)
    templates = route_templates(metrics_route.router.routes)
    for module in (feedback, items, users, algorithms, experiments, guard, models, privacy, health):
        keyed = module is not health
        app.include_router(module.router, prefix=PREFIX, responses=KEYED_ERRORS if keyed else None)
        templates.update(route_templates(module.router.routes, PREFIX))
    fast: FastPaths | None = None
    if lean:
        # The hot paths match first; the FastAPI routes behind them stay for the OpenAPI
        # (and answer what a lean read declines). The request middleware serves them
        # without going through the router (FastPaths).
        hot = [
            LeanRoute(f"{PREFIX}/feedback", "POST", feedback.lean_post_feedback, status=202),
            *lean_routes(PREFIX),
        ]
        app.router.routes[:0] = hot
        fast = FastPaths(hot, app.exception_handlers)
    templates.update(route_templates(install_console(app)))
    templates.update(route_templates(app.router.routes))  # the lean routes, the docs
    app.add_middleware(
        RequestMiddleware,
        metrics=app.state.metrics,
        max_body_bytes=settings.api.max_body_bytes,
        templates=templates,
        fast=fast,
    )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, routes=app.routes, summary=app.summary
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (FeedbackIn, FeedbackBatchIn, PerformanceIn, PerformanceBatchIn):
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
            name_algorithms(schema, settings.bandit.algorithms)
            state_dimension(schema, settings.vectors.dim)
            add_links(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


_ALGORITHM_FIELDS = (
    ("CandidateIn", "algorithm"),
    ("AttributionIn", "algorithm"),
    ("PerformanceIn", "algorithm"),
)


def name_algorithms(document: dict[str, Any], algorithms: Sequence[str]) -> None:
    """The configured algorithms as the ``enum`` of every field and path parameter that
    names one (``core.algorithms``: any other name is refused)."""
    components = document["components"]["schemas"]
    targets = [components[model]["properties"][field] for model, field in _ALGORITHM_FIELDS]
    weights = components["VariantConfigIn"]["properties"]["weights"]["anyOf"][0]
    targets.append(weights["propertyNames"])
    for path, operations in document["paths"].items():
        if "/algorithms/{name}/" in path:
            for operation in operations.values():
                targets += [p["schema"] for p in operation["parameters"] if p["name"] == "name"]
    for target in targets:
        strings = [s for s in target.get("anyOf", [target]) if s.get("type") == "string"]
        for string in strings:
            string["enum"] = list(algorithms)


def state_dimension(document: dict[str, Any], dim: int) -> None:
    """The configured ``vectors.dim`` as the length of every item vector a request sends,
    and the rule that not every number is 0."""
    for model in ("ItemIn", "ItemWithIdIn"):
        vector = document["components"]["schemas"][model]["properties"]["vector"]
        for option in vector.get("anyOf", [vector]):
            if option.get("type") == "array":
                option.update(minItems=dim, maxItems=dim)
                option["not"] = {"items": {"const": 0}}
