"""Request ids and structured logs: ids echoed or made, carried by every log line of the
request; API keys and review text never written."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request

from recloop.adapters.sql import SqlDatabase
from recloop.api.app import create_app
from recloop.config import Settings
from recloop.container import build_container
from recloop.core.auth import new_key
from recloop.core.events import Event
from recloop.logs import configure_logging, unconfigure_logging
from tests.conftest import Running, make_settings, start_app

KEY, KEY_SHA = new_key()
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Every log record, as the JSON lines ``recloop serve`` writes in production."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging("json", "DEBUG", stream=stream)
    yield stream
    unconfigure_logging()
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Running]:
    keys = [{"name": "orchestrator", "sha256": KEY_SHA, "roles": ["admin"]}]
    running, close = await start_app(make_settings(tmp_path, "memory", auth={"keys": keys}))
    yield running
    await close()


async def test_request_id_is_echoed_or_made(app: Running) -> None:
    r = await app.client.get("/health/live", headers={"X-Request-ID": "req-42.a:b_c"})
    assert r.headers["x-request-id"] == "req-42.a:b_c"
    made = (await app.client.get("/health/live")).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    again = (await app.client.get("/health/live")).headers["x-request-id"]
    assert again != made
    # Ids that could forge log lines (spaces, quotes, newlines) or are too long are replaced.
    for bad in ('a b"c', "x" * 129):
        echoed = await app.client.get("/health/live", headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", echoed.headers["x-request-id"])
    # Errors carry one too.
    r = await app.client.get("/users/u/weights")
    assert r.status_code == 401
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])


async def test_json_log_lines_carry_the_request_id(app: Running, json_logs: io.StringIO) -> None:
    r = await app.client.get("/users/u9/preferences", headers={**AUTH, "X-Request-ID": "trace-1"})
    assert r.status_code == 404
    (line,) = [x for x in lines(json_logs) if x.get("request_id") == "trace-1"]
    assert line["logger"] == "recloop.http"
    assert line["level"] == "debug"
    assert (line["method"], line["status"]) == ("GET", 404)
    assert line["route"] == "/api/v1/learning/users/{user_id}/preferences"
    assert "timestamp" in line
    # Outside a request, no id is bound.
    logging.getLogger("recloop.test").info("after the request")
    assert "request_id" not in lines(json_logs)[-1]


async def test_keys_and_review_text_are_never_logged(app: Running, json_logs: io.StringIO) -> None:
    review = {
        "user_id": "u1",
        "item_id": "i1",
        "type": "review",
        "text": "SECRET-REVIEW-TEXT loved it",
    }
    assert (await app.client.post("/feedback", json=review, headers=AUTH)).status_code == 202
    wrong = {"Authorization": "Bearer rlk_WRONG-KEY-VALUE"}
    assert (await app.client.post("/feedback", json=review, headers=wrong)).status_code == 401
    # Even a careless call passing them as fields is redacted.
    structlog.get_logger("recloop.test").warning(
        "careless", authorization=AUTH["Authorization"], text=review["text"]
    )
    logging.getLogger("recloop.test").warning("careless", extra={"api_key": KEY})
    written = json_logs.getvalue()
    assert written.count("careless") == 2
    for secret in (KEY, "rlk_WRONG-KEY-VALUE", "SECRET-REVIEW-TEXT"):
        assert secret not in written


async def test_an_unhandled_error_is_a_logged_json_500(
    tmp_path: Path, json_logs: io.StringIO
) -> None:
    settings = make_settings(tmp_path, "memory")
    app = create_app(settings, container=build_container(settings))

    async def boom() -> None:
        raise RuntimeError("kaput")

    app.add_api_route("/boom", boom)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://recloop") as client:
            r = await client.get("/boom", headers={"X-Request-ID": "fail-1"})
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error"}
    assert r.headers["x-request-id"] == "fail-1"
    (error,) = [x for x in lines(json_logs) if x.get("level") == "error"]
    assert error["request_id"] == "fail-1"
    assert "RuntimeError: kaput" in error["exception"]


def test_console_format_is_for_people() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging("console", "INFO", stream=stream)
    try:
        logging.getLogger("recloop.test").info("replayed %d events", 3)
        logging.getLogger("recloop.test").debug("not shown")
    finally:
        unconfigure_logging()
        root.setLevel(level)
    written = stream.getvalue()
    assert "replayed 3 events" in written
    assert "not shown" not in written
    assert not written.lstrip().startswith("{")


async def test_the_request_id_travels_with_the_event(app: Running) -> None:
    body = {"events": [{"event_id": "rid-1", "user_id": "u", "item_id": "i", "type": "view"}]}
    headers = {**AUTH, "X-Request-ID": "trace-42"}
    r = await app.client.post("/feedback", json=body, headers=headers)
    assert r.status_code == 202, r.text
    logged = await app.container.event_log.read(0, 10)
    assert [(e.event_id, e.request_id) for e in logged] == [("rid-1", "trace-42")]
    # Into the distributed log and back, as a worker reads it.
    record = logged[0].to_record()
    assert Event.from_record(json.loads(json.dumps(record)), 7).request_id == "trace-42"


BODY_MARKER = "BODY-MARKER-7f3a"


@pytest.mark.parametrize("format", ["console", "json"])
async def test_a_500_logs_its_traceback_without_locals_keys_or_bodies(
    tmp_path: Path, format: Literal["console", "json"]
) -> None:
    """Issue 16: under either format, an unhandled error's traceback names where it failed,
    and neither the caller's key nor the request's body (both in the locals of the frames
    it passes through) is written."""
    keys = [{"name": "orchestrator", "sha256": KEY_SHA, "roles": ["admin"]}]
    settings = make_settings(tmp_path, "memory", auth={"keys": keys})
    app = create_app(settings, container=build_container(settings))

    async def boom(request: Request) -> None:
        body = await request.json()
        raise RuntimeError(f"kaput on {len(body)} fields")

    app.add_api_route("/boom", boom, methods=["POST"])
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging(format, "INFO", stream=stream)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://recloop") as client:
                r = await client.post("/boom", json={"note": BODY_MARKER}, headers=AUTH)
    finally:
        unconfigure_logging()
        root.setLevel(level)
    assert r.status_code == 500
    written = stream.getvalue()
    assert "RuntimeError: kaput on 1 fields" in written
    assert "in boom" in written  # the frames are there, their locals are not
    assert KEY not in written
    assert BODY_MARKER not in written
    assert len(written.splitlines()) < 200


@pytest.mark.services
async def test_a_database_error_carries_no_parameters(postgres_url: str) -> None:
    """A statement's parameters are the values of events or a request (a whole batch):
    a database error's message, logged or dead-lettered, names the statement without
    them. (A driver's own message may still quote the one value it could not encode.)"""
    db = SqlDatabase(postgres_url)
    try:
        async with db.engine.connect() as conn:
            with pytest.raises(DBAPIError) as caught:
                await conn.execute(text("SELECT CAST(:v AS text), 1 / 0"), {"v": BODY_MARKER})
    finally:
        await db.dispose()
    assert "division by zero" in str(caught.value)
    assert BODY_MARKER not in str(caught.value)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_debug_logs_carry_no_bodies(
    settings_factory: Callable[..., Settings], json_logs: io.StringIO
) -> None:
    """At DEBUG too: the database drivers' own debug lines (statements with their
    parameters) would write every event, review text included."""
    running, close = await start_app(settings_factory())
    try:
        review = {"user_id": "u", "item_id": "i", "type": "review", "text": BODY_MARKER}
        assert (await running.client.post("/feedback", json=review)).status_code == 202
        item = {"attributes": {"note": BODY_MARKER}}
        assert (await running.client.put("/items/i", json=item)).status_code == 200
        await running.idle(flush=True)
        assert (await running.client.get("/users/u/export")).status_code == 200
    finally:
        await close()
    written = json_logs.getvalue()
    assert "/feedback" in written  # DEBUG is on: the request line is there
    assert BODY_MARKER not in written
