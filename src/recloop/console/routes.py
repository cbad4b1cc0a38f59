"""The console's routes under ``/console``: sign-in, pages, admin actions.

Pages need a session with the ``read`` role; actions (POST) the ``admin`` role
and the session's CSRF token. With no API keys configured, only loopback
callers get in (as admin, like the API's anonymous principal).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.routing import BaseRoute, Mount

from recloop.api.errors import field_loc
from recloop.api.routers.experiments import definition
from recloop.api.routers.privacy import export_view
from recloop.api.schemas import ExperimentIn
from recloop.console import pages
from recloop.console.sessions import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    Session,
    Sessions,
    csrf_ok,
    is_loopback,
)
from recloop.container import Container
from recloop.core import experiments as xp
from recloop.core.errors import (
    CircuitOpen,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RecloopError,
    Unavailable,
)
from recloop.core.segments import SEGMENTS

HERE = Path(__file__).parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'"
)
"""Console pages load nothing but the package's own assets (the browser enforces it)."""

REASON_MAX = 256
ID_MAX = 256

router = APIRouter(prefix="/console", include_in_schema=False)


def _when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


templates.env.filters["when"] = _when


class _Denied(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


def _sessions(request: Request) -> Sessions:
    state = request.app.state
    sessions: Sessions | None = getattr(state, "console_sessions", None)
    if sessions is None:
        settings = state.container.settings
        sessions = state.console_sessions = Sessions(
            ((k.name, k.sha256, k.roles) for k in settings.auth.keys),
            settings.console.session_secret,
            settings.console.session_hours * 3600.0,
        )
    return sessions


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def _host(request: Request) -> str | None:
    return request.client.host if request.client else None


def _page(
    request: Request,
    name: str,
    session: Session | None,
    context: dict[str, Any],
    status: int = 200,
    cookie: str | None = None,
) -> HTMLResponse:
    response = templates.TemplateResponse(
        request,
        name,
        {"session": session, "csrf_field": CSRF_FIELD, **context},
        status_code=status,
    )
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    if cookie is not None:
        _set_cookie(request, response, cookie)
    return response


def _set_cookie(request: Request, response: Response, sid: str) -> None:
    response.set_cookie(
        COOKIE,
        sid,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/console",
    )


def _session(request: Request) -> tuple[Session | None, str | None]:
    """The caller's session, and a new session id to set when one was opened now."""
    sessions = _sessions(request)
    found = sessions.get(request.cookies.get(COOKIE))
    if sessions.keyed:
        return found, None
    if not is_loopback(_host(request)):
        raise _Denied(403, "no API keys are configured: the console answers loopback only")
    if found is not None:
        return found, None
    sid, session = sessions.anonymous(_host(request) or "unknown")
    return session, sid


async def _view(request: Request, name: str, build: Any) -> Response:
    """A page: the session's, or the sign-in form."""
    try:
        session, new = _session(request)
    except _Denied as denied:
        return _error(request, None, denied.status, denied.message)
    if session is None:
        return RedirectResponse(f"/console/login?next={quote(request.url.path)}", status_code=303)
    try:
        context = await build(_container(request))
    except RecloopError as exc:
        return _error(request, session, _status(exc), str(exc))
    return _page(request, name, session, context, cookie=new)


async def _act(request: Request, action: Any, back: str) -> Response:
    """An admin action: session, admin role, CSRF token; then back to ``back``."""
    try:
        session, _ = _session(request)
    except _Denied as denied:
        return _error(request, None, denied.status, denied.message)
    if session is None:
        return _error(request, None, 401, "sign in first")
    form = await request.form()
    token = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
    if not csrf_ok(session, token if isinstance(token, str) else None):
        return _error(request, session, 403, "missing or wrong CSRF token: reload the page")
    if not session.admin():
        return _error(request, session, 403, f"{session.principal.name!r} lacks the 'admin' role")
    fields = {k: v for k, v in form.items() if isinstance(v, str) and k != CSRF_FIELD}
    try:
        result = await action(_container(request), fields)
    except RecloopError as exc:
        return _error(request, session, _status(exc), str(exc))
    if isinstance(result, Response):
        return result
    return RedirectResponse(back, status_code=303)


def _status(exc: RecloopError) -> int:
    if isinstance(exc, InvalidInput):
        return 422
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, CircuitOpen | Unavailable):
        return 503
    return 400


def _error(request: Request, session: Session | None, status: int, message: str) -> HTMLResponse:
    return _page(request, "error.html", session, {"status": status, "message": message}, status)


def _text(fields: dict[str, str], name: str, required: bool = True, limit: int = ID_MAX) -> str:
    value = fields.get(name, "").strip()
    if required and not value:
        raise InvalidInput(name, "required")
    if len(value) > limit:
        raise InvalidInput(name, f"at most {limit} characters, got {len(value)}")
    return value


# -- sign-in ---------------------------------------------------------------------------


def _next(raw: str | None) -> str:
    """Where to go after signing in: a console path only (no open redirect)."""
    if raw and raw.startswith("/console") and "//" not in raw and "\\" not in raw:
        return raw
    return "/console"


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str | None = None) -> Response:
    if not _sessions(request).keyed:
        return RedirectResponse(_next(next), status_code=303)
    return _page(request, "login.html", None, {"next": _next(next), "failed": False})


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    sessions = _sessions(request)
    form = await request.form()
    target = _next(str(form.get("next") or ""))
    if not sessions.keyed:
        return RedirectResponse(target, status_code=303)
    key = form.get("api_key")
    opened = sessions.sign_in(key) if isinstance(key, str) and key.strip() else None
    if opened is None:
        return _page(request, "login.html", None, {"next": target, "failed": True}, 401)
    response = RedirectResponse(target, status_code=303)
    _set_cookie(request, response, opened[0])
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    sessions = _sessions(request)
    sid = request.cookies.get(COOKIE)
    session = sessions.get(sid)
    form = await request.form()
    token = form.get(CSRF_FIELD)
    if session is not None and not csrf_ok(session, token if isinstance(token, str) else None):
        return _error(request, session, 403, "missing or wrong CSRF token: reload the page")
    sessions.sign_out(sid)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


# -- pages -----------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
async def overview(request: Request) -> Response:
    state = request.app.state

    async def build(c: Container) -> dict[str, Any]:
        return await pages.overview_page(c, state.metrics, state.console_rates)

    return await _view(request, "overview.html", build)


@router.get("/experiments", response_class=HTMLResponse)
async def experiments(request: Request) -> Response:
    async def build(c: Container) -> dict[str, Any]:
        return pages.experiments_page(c)

    return await _view(request, "experiments.html", build)


@router.post("/experiments")
async def create_experiment(request: Request) -> Response:
    """A simple experiment: equal-weight variants and one conversion metric (the API's
    ``POST /experiments`` takes every option)."""
    created: list[str] = []

    async def run(c: Container, fields: dict[str, str]) -> None:
        keys = [k.strip() for k in fields.get("variants", "").split(",") if k.strip()]
        event = fields.get("metric_event", "purchase")
        try:
            traffic = float(fields.get("traffic_percent") or 100) / 100.0
        except ValueError:
            raise InvalidInput("traffic_percent", "a number from 0 to 100") from None
        body = {
            "experiment_id": fields.get("experiment_id", "").strip(),
            "name": fields.get("name", "").strip(),
            "hypothesis": fields.get("hypothesis", "").strip() or None,
            "variants": [{"key": k, "weight": 1.0 / max(len(keys), 1)} for k in keys],
            "metrics": [{"name": f"converted_{event}", "type": "binomial", "event": event}],
            "traffic_allocation": traffic,
        }
        try:
            checked = ExperimentIn.model_validate(body)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in field_loc(first["loc"], first["type"]))
            raise InvalidInput(where, first["msg"]) from None
        exp = await c.experiments.create(xp.from_dict(definition(checked.model_dump())))
        created.append(exp.experiment_id)

    response = await _act(request, run, "/console/experiments")
    if created:
        response.headers["location"] = f"/console/experiments/{quote(created[0])}"
    return response


@router.get("/experiments/{experiment_id}", response_class=HTMLResponse)
async def experiment(request: Request, experiment_id: str) -> Response:
    async def build(c: Container) -> dict[str, Any]:
        return await pages.experiment_page(c, experiment_id)

    return await _view(request, "experiment.html", build)


@router.post("/experiments/{experiment_id}/{action}")
async def experiment_action(request: Request, experiment_id: str, action: str) -> Response:
    async def run(c: Container, _: dict[str, str]) -> None:
        if action not in ("start", "stop"):
            raise InvalidInput("action", f"start or stop, got {action!r}")
        await c.experiments.transition(experiment_id, action)

    return await _act(request, run, f"/console/experiments/{quote(experiment_id)}")


@router.get("/algorithms", response_class=HTMLResponse)
async def algorithms(request: Request) -> Response:
    async def build(c: Container) -> dict[str, Any]:
        history = None if c.history is None else await c.history.series("algorithm")
        return pages.algorithms_page(await c.optimizer.overview(), c.optimizer.algorithms, history)

    return await _view(request, "algorithms.html", build)


@router.post("/algorithms/{name}/{action}")
async def algorithm_action(request: Request, name: str, action: str) -> Response:
    async def run(c: Container, fields: dict[str, str]) -> None:
        if name not in c.optimizer.algorithms:
            raise InvalidInput("algorithm", f"unknown algorithm {name!r}")
        segment = fields.get("segment", "")
        if segment and segment not in SEGMENTS:
            raise InvalidInput("segment", f"one of {', '.join(SEGMENTS)}, got {segment!r}")
        segments = [segment] if segment else list(SEGMENTS)
        reason = _text(fields, "reason", required=False, limit=REASON_MAX) or None
        if action == "release":
            await c.optimizer.release_manual(name, segments)
        elif action in ("enable", "disable"):
            await c.optimizer.set_manual(name, segments, action == "enable", reason)
        else:
            raise InvalidInput("action", f"enable, disable or release, got {action!r}")

    return await _act(request, run, "/console/algorithms")


@router.get("/models", response_class=HTMLResponse)
async def models(request: Request, version: str | None = None) -> Response:
    async def build(c: Container) -> dict[str, Any]:
        if version is not None and len(version) > ID_MAX:
            raise InvalidInput("version", f"at most {ID_MAX} characters")
        return await pages.models_page(c, version)

    return await _view(request, "models.html", build)


def _learning(c: Container) -> Any:
    if c.learning is None:
        raise Unavailable("continuous learning is off (learning.enabled: false)")
    return c.learning


@router.post("/models/promote")
async def promote(request: Request) -> Response:
    async def run(c: Container, fields: dict[str, str]) -> None:
        reason = _text(fields, "reason", required=False, limit=REASON_MAX)
        await _learning(c).promote(reason or "promoted by hand")

    return await _act(request, run, "/console/models")


@router.post("/models/rollback")
async def rollback(request: Request) -> Response:
    async def run(c: Container, fields: dict[str, str]) -> None:
        reason = _text(fields, "reason", required=False, limit=REASON_MAX)
        await _learning(c).rollback(reason or "rolled back by hand")

    return await _act(request, run, "/console/models")


@router.post("/models/{version}/deploy")
async def deploy(request: Request, version: str) -> Response:
    async def run(c: Container, fields: dict[str, str]) -> None:
        reason = _text(fields, "reason", required=False, limit=REASON_MAX)
        await _learning(c).deploy(version, reason)

    return await _act(request, run, "/console/models")


@router.get("/guard", response_class=HTMLResponse)
async def guard(request: Request) -> Response:
    scores: pages.ScoreHistogram = request.app.state.console_scores

    async def build(c: Container) -> dict[str, Any]:
        return await pages.guard_page(c, scores)

    return await _view(request, "guard.html", build)


@router.post("/guard/{action}")
async def guard_action(request: Request, action: str) -> Response:
    async def run(c: Container, fields: dict[str, str]) -> None:
        if action not in ("block", "unblock"):
            raise InvalidInput("action", f"block or unblock, got {action!r}")
        user_id = _text(fields, "user_id")
        reason = _text(fields, "reason", required=False, limit=REASON_MAX) or None
        await c.guard.set_manual(c.user_key(user_id), action == "block", reason)

    return await _act(request, run, "/console/guard")


@router.get("/users", response_class=HTMLResponse)
async def users(request: Request, user_id: str | None = None) -> Response:
    async def build(c: Container) -> dict[str, Any]:
        if not user_id:
            return {"user_id": None}
        if len(user_id) > ID_MAX:
            raise InvalidInput("user_id", f"at most {ID_MAX} characters")
        return await pages.user_page(c, user_id)

    return await _view(request, "user.html", build)


@router.post("/users/export")
async def export(request: Request) -> Response:
    """A POST (admin, CSRF) though it changes nothing: the export is everything held."""

    async def run(c: Container, fields: dict[str, str]) -> Response:
        user_id = _text(fields, "user_id")
        if c.privacy is None:
            raise Unavailable("privacy service is not configured")
        key = c.user_key(user_id)
        body = export_view(user_id, key, await c.privacy.export(key))
        filename = "".join(ch for ch in user_id if ch.isalnum() or ch in "-_")[:64] or "user"
        return JSONResponse(
            body,
            headers={"Content-Disposition": f'attachment; filename="{filename}.json"'},
        )

    return await _act(request, run, "/console/users")


@router.post("/users/erase")
async def erase(request: Request) -> Response:
    async def run(c: Container, fields: dict[str, str]) -> None:
        user_id = _text(fields, "user_id")
        if fields.get("confirm", "") != user_id:
            raise InvalidInput("confirm", "type the user id again to confirm the erasure")
        if c.privacy is None:
            raise Unavailable("privacy service is not configured")
        await c.privacy.erase(c.user_key(user_id))

    return await _act(request, run, "/console/users?erased=1")


def install(app: FastAPI) -> list[BaseRoute]:
    """Mount the console (pages and static assets) on ``app``; its routes, for the
    metrics' ``route`` labels (an included router's routes are not the app's own)."""
    app.state.console_rates = pages.Rates()
    app.state.console_scores = pages.ScoreHistogram()
    app.include_router(router)
    assets = Mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    app.router.routes.append(assets)
    return [*router.routes, assets]
