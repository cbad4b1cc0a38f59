"""Lean routes for the hot reads, mounted ahead of their documented FastAPI routes.

``GET /users/{user_id}/weights``, ``/strategy``, ``/preferences``, ``GET
/experiments/{experiment_id}/assignment/{user_id}`` and ``POST
/users/{user_id}/rank`` are served here without FastAPI's per-request machinery
(dependency solving, parameter models, response plumbing), which costs several
times the work of the answer itself. The documented routes stay: they describe
these requests in the one OpenAPI document, and they answer whatever a lean
route cannot vouch for.

A lean route serves a request only when it is certain the documented route
would accept it: the caller authorised (the same :func:`~recloop.api.auth.authorize`),
each path parameter 1..128 characters, and for ``rank`` a JSON body that the
msgspec :class:`RankBody` (mirroring :class:`~recloop.api.schemas.RankIn`,
constraints included) decodes. Anything else — a path parameter too long, a body
that is not JSON, not UTF-8, or breaks a constraint, a ``Content-Type`` other than
``application/json`` — is handed, untouched, to the documented route, so errors
keep their exact FastAPI bodies (every violated field, pydantic's messages) and
the hot path never builds a pydantic model. Both routes build the answer with the
same function (``users.weights_body`` and its siblings).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Final

import msgspec
from fastapi.routing import APIRoute, APIRouter
from msgspec import Meta
from starlette._exception_handler import wrap_app_handling_exceptions
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recloop.api.auth import authorize
from recloop.api.requests import has_big_int, may_hold_a_big_int
from recloop.api.responses import send_json
from recloop.api.routers import experiments, users
from recloop.api.schemas import RANK_K_MAX
from recloop.container import Container
from recloop.core.ids import id_problem, json_may_break_id_rule

ID_MAX: Final = 128
"""Path parameters are ``Path(min_length=1, max_length=128)`` on the documented routes."""


class CandidateBody(msgspec.Struct, forbid_unknown_fields=True):
    """:class:`~recloop.api.schemas.CandidateIn` as msgspec decodes it."""

    item_id: Annotated[str, Meta(min_length=1, max_length=ID_MAX)]
    algorithm: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    # Finite, as FiniteFloat: msgspec reads no NaN or Infinity and refuses 1e400.
    score: float | None = None


class RankBody(msgspec.Struct, forbid_unknown_fields=True):
    """:class:`~recloop.api.schemas.RankIn` as msgspec decodes it.

    Whatever it decodes, ``RankIn`` accepts, with the same values (a differential test
    holds the two together); it refuses a little more (``"k": 3.0``, integers too large
    for a float score), which the documented route then answers.
    """

    candidates: Annotated[list[CandidateBody], Meta(min_length=1)]
    k: Annotated[int, Meta(ge=1, le=RANK_K_MAX)] | None = None
    context: dict[str, Any] | None = None


_rank_decoder: Final = msgspec.json.Decoder(RankBody)

Handler = Callable[[Request], Awaitable[dict[str, Any] | None]]
"""A lean handler: the answer (a JSON object), or None to hand the request to the
documented route."""


def _fits(value: str) -> bool:
    return 0 < len(value) <= ID_MAX and id_problem(value, in_path=True) is None


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def _reader(request: Request) -> Container:
    """The app's container, once the caller may read (:func:`~recloop.api.auth.authorize`,
    whose principal a read does not use: without keys, where every caller may, it is not
    built)."""
    container = _container(request)
    if container.keys.enabled:
        authorize(request, "read")
    return container


async def _preferences(request: Request) -> dict[str, Any] | None:
    container = _reader(request)
    user_id: str = request.path_params["user_id"]
    if not _fits(user_id):
        return None
    return await users.preferences_body(container, user_id)


async def _weights(request: Request) -> dict[str, Any] | None:
    container = _reader(request)
    user_id: str = request.path_params["user_id"]
    if not _fits(user_id):
        return None
    return await users.weights_body(container, user_id)


_EXPOSE: Final = {None: True, "true": True, "false": False}
"""The ``expose`` query values the lean strategy route serves (others: the documented route)."""


async def _strategy(request: Request) -> dict[str, Any] | None:
    container = _reader(request)
    user_id: str = request.path_params["user_id"]
    if not _fits(user_id):
        return None
    expose: bool | None = True
    if request.scope["query_string"]:  # the orchestrator's usual request has none
        params = request.query_params
        expose = _EXPOSE.get(params.get("expose"))
        if expose is None or len(params.getlist("expose")) > 1:
            return None
    return await users.strategy_body(container, user_id, expose)


async def _assignment(request: Request) -> dict[str, Any] | None:
    container = _reader(request)
    experiment_id: str = request.path_params["experiment_id"]
    user_id: str = request.path_params["user_id"]
    if not (_fits(experiment_id) and _fits(user_id)):
        return None
    return await experiments.assignment_body(container, experiment_id, user_id)


async def _rank(request: Request) -> dict[str, Any] | None:
    # FastAPI reads and parses the body before it checks the key: a body it cannot parse is
    # a 422 even without one. Whatever msgspec refuses goes to the documented route.
    if not _json_content(request.headers.get("content-type")):
        return None
    body = decode_rank(await request.body())
    if body is None:
        return None
    authorize(request, "read")
    user_id: str = request.path_params["user_id"]
    if not _fits(user_id):
        return None
    return await users.rank_body(
        _container(request), user_id, body.candidates, body.k, body.context
    )


def decode_rank(raw: bytes) -> RankBody | None:
    """A rank body the lean route serves: what msgspec decodes and whose ids keep the id
    rule (``core.ids``); None for anything else (the documented route answers it)."""
    try:
        body = _rank_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    if body.context is not None and may_hold_a_big_int(raw) and has_big_int(body.context):
        return None  # an integer beyond 64 bits: the documented route refuses it
    if json_may_break_id_rule(raw) and any(
        id_problem(c.item_id, in_path=True) is not None
        or (c.algorithm is not None and id_problem(c.algorithm) is not None)
        for c in body.candidates
    ):
        return None  # the documented route names the bad id
    return body


def _json_content(content_type: str | None) -> bool:
    """``application/json``, with parameters or not: the content types sent in practice
    (FastAPI also parses ``application/*+json``; those take the documented route)."""
    if content_type is None:
        return False
    return content_type.partition(";")[0].strip().lower() == "application/json"


DECLINED: Final = "recloop.lean_declined"
"""Set in the scope of a request a lean route declined: the lean routes then match nothing."""


class LeanRoute(Route):
    """A route to a lean handler; where the handler declines, the request is routed again
    with the lean routes out of the way, to the documented route."""

    def __init__(self, path: str, method: str, handler: Handler, status: int = 200) -> None:
        """``status``: the status of the handler's answers."""
        super().__init__(path, LeanEndpoint(handler, status), methods=[method])
        self.methods = {method}  # Starlette adds HEAD to GET; the documented routes have none

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if DECLINED in scope:
            return Match.NONE, {}
        return super().matches(scope)


class LeanEndpoint:
    """The ASGI endpoint of a :class:`LeanRoute`."""

    def __init__(self, handler: Handler, status: int = 200) -> None:
        self.handler = handler
        self.status = status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            answer = await self.handler(request)
        except Exception as exc:  # nothing sent yet: the app's handler for it answers
            await _handled(exc, scope, receive, send)
            return
        if answer is not None:
            await send_json(send, self.status, answer)
            return
        # The body, if the handler read it, is replayed to the documented route.
        body: bytes | None = getattr(request, "_body", None)
        scope[DECLINED] = True
        await scope["router"](scope, receive if body is None else _replay(body, receive), send)


async def _handled(exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer ``exc``, raised before anything was sent, as Starlette's exception handling
    answers it (the handlers the :class:`ExceptionMiddleware` above put in the scope),
    or raise it where no handler takes it."""

    async def raiser(scope: Scope, receive: Receive, send: Send) -> None:
        raise exc

    if "starlette.exception_handlers" not in scope:
        raise exc
    await wrap_app_handling_exceptions(raiser, Request(scope, receive, send))(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


_HANDLERS: Final[tuple[tuple[APIRouter, Callable[..., Any], Handler], ...]] = (
    (users.router, users.get_preferences, _preferences),
    (users.router, users.get_weights, _weights),
    (users.router, users.get_strategy, _strategy),
    (users.router, users.rank, _rank),
    (experiments.router, experiments.assignment, _assignment),
)
"""Each lean handler beside the endpoint of the documented route it stands in for."""


Hit = tuple[Any, ASGIApp, dict[str, str]]
"""A hot route a request matched (:meth:`FastPaths.match`): the route's endpoint and app,
and the path's parameters."""

_Pattern = tuple[tuple[tuple[int, str], ...], tuple[tuple[int, str], ...], Any, ASGIApp]
"""A hot route as :class:`FastPaths` matches it: its literal segments and its parameters'
names, each with its position in the path, its endpoint and its app."""


class FastPaths:
    """The hot routes, found without the router: :class:`~recloop.api.middleware.RequestMiddleware`
    hands a request that one of them matches straight to its endpoint, past the layers
    between that middleware and the routes (FastAPI's exit-stack middleware, the
    router's scan of the routes, the route's own handling), about a third of what a hot
    read costs in the app. The app's entry (:class:`~recloop.api.app.RecloopApp`) hands
    such a request to that middleware past the layers above it too.

    A request matches by its path's segments, as the route's template would match it
    (each parameter one non-empty segment; the same method). The endpoint runs as the
    router runs it (``path_params``, ``endpoint`` and ``router`` in the scope), inside
    Starlette's :class:`ExceptionMiddleware` with the app's exception handlers, which
    the middleware stack puts there too: an error gets the same answer either way.
    What an endpoint declines goes on through ``inner``, the rest of the stack, to
    the documented route.
    """

    def __init__(self, routes: list[Route], handlers: Mapping[Any, Any]) -> None:
        """``routes``: the lean routes (and the lean ``POST /feedback``); ``handlers``:
        the app's ``exception_handlers`` (all installed by then: ``api.errors.install``)."""
        # (method, number of segments, last segment, or "*" for a parameter) -> the
        # route's literal segments and parameters (each with its position), its endpoint
        # and its app. The middleware stack puts the exception middleware there with
        # these handlers.
        kept = {k: v for k, v in handlers.items() if k not in (500, Exception)}
        self._table: dict[tuple[str, int, str], _Pattern] = {}
        for route in routes:
            parts = route.path.split("/")
            last = "*" if parts[-1].startswith("{") else parts[-1]
            literals = tuple((i, p) for i, p in enumerate(parts) if not p.startswith("{"))
            params = tuple((i, p[1:-1]) for i, p in enumerate(parts) if p.startswith("{"))
            app: ASGIApp = ExceptionMiddleware(route.app, handlers=kept)
            if isinstance(route.app, LeanEndpoint):
                # It answers its handler's errors itself (:func:`_handled`), by the
                # handlers the exception middleware holds; nothing else of the
                # middleware's work (a wrapper around every send) is needed.
                app = _HandlersInScope(route.app, app)
            for method in route.methods or ():
                self._table[(method, len(parts), last)] = (literals, params, route.endpoint, app)

    def match(self, scope: Scope) -> Hit | None:
        """The hot route ``scope`` asks for, and the path's parameters; None if none."""
        if scope.get("root_path"):
            return None  # mounted under a prefix: the router knows how to strip it
        parts: list[str] = scope["path"].split("/")
        method, size = scope["method"], len(parts)
        hit = self._table.get((method, size, parts[-1])) or self._table.get((method, size, "*"))
        if hit is None:
            return None
        literals, params, endpoint, app = hit
        for i, literal in literals:
            if parts[i] != literal:
                return None
        found: dict[str, str] = {}
        for i, name in params:
            value = found[name] = parts[i]
            if not value:
                return None  # a parameter is one non-empty segment
        return endpoint, app, found

    async def serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        hit: Hit,
        inner: ASGIApp,
    ) -> None:
        """Run the matched route's endpoint; ``inner`` is the rest of the stack."""
        endpoint, app, path_params = hit
        scope["endpoint"] = endpoint
        scope["router"] = inner
        scope["path_params"] = path_params
        await app(scope, receive, send)


class _HandlersInScope:
    """A :class:`LeanEndpoint` with the exception handlers of ``middleware`` in its scope,
    as that :class:`ExceptionMiddleware` would put them, without running through it.

    The same answers: an endpoint that raises before it sends is answered by those
    handlers (:func:`_handled`); what a declined request raises has already crossed the
    stack's own exception middleware, which holds the same handlers."""

    def __init__(self, endpoint: LeanEndpoint, middleware: ExceptionMiddleware) -> None:
        self.endpoint = endpoint
        self.handlers = (middleware._exception_handlers, middleware._status_handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["starlette.exception_handlers"] = self.handlers
        await self.endpoint(scope, receive, send)


def lean_routes(prefix: str) -> list[Route]:
    """A lean route for each hot read, the same path (under ``prefix``, where the app
    includes the routers) and method as its documented route, to insert ahead of it."""
    routes: list[Route] = []
    for router, endpoint, handler in _HANDLERS:
        (documented,) = (
            r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is endpoint
        )
        (method,) = documented.methods or {"GET"}
        routes.append(LeanRoute(prefix + documented.path, method, handler))
    return routes
