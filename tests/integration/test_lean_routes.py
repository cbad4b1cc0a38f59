"""The lean hot-read routes answer exactly as the documented FastAPI routes do.

Two apps on the memory backend, the same settings (seeded draws), the same history:
one serves the hot reads by their lean routes, the other (``create_app(lean=False)``)
by the documented routes only. Every request, good or bad, goes to both and must get
the same status, the same headers that matter, and the same body (bar the fields
that name a moment or a fresh id). Each case also says who must answer it on the lean
app: the lean route itself, or the documented route it declined to.

The msgspec body of ``rank`` is held against pydantic's ``RankIn`` (the oracle)
on generated bodies: whatever msgspec accepts, ``RankIn`` accepts with the same values.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from starlette.routing import Router
from starlette.types import ASGIApp, Receive, Scope, Send

from recloop.api.app import create_app
from recloop.api.lean import DECLINED, LeanEndpoint, RankBody, decode_rank
from recloop.api.schemas import RANK_K_MAX, RankIn
from recloop.core.auth import new_key
from tests.conftest import make_settings

READ_KEY, READ_SHA = new_key()
INGEST_KEY, INGEST_SHA = new_key()
KEYS = [
    {"name": "reader", "sha256": READ_SHA, "roles": ["admin", "ingest", "read"]},
    {"name": "ingester", "sha256": INGEST_SHA, "roles": ["ingest"]},
]
VOLATILE = frozenset(
    {"computed_at", "impression_id", "updated_at", "preferences_updated_at"}
    | {"created_at", "first_event_at", "last_event_at"}
)
"""Fields naming a moment or a fresh id: present on both sides, values not compared."""
HEADERS = ("content-type", "allow", "www-authenticate", "retry-after")

EXPERIMENT = {
    "experiment_id": "exp",
    "name": "lean",
    "variants": [{"key": "control", "weight": 0.5}, {"key": "treatment", "weight": 0.5}],
    "metrics": [{"name": "clicks", "type": "binomial", "event": "click"}],
}


class Recorder:
    """Wraps an app; remembers, per request, whether a lean route served or declined it
    (the routing leaves its choice in the scope)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.last: str = ""
        self.routed = False
        """Whether the router ran (the request middleware serves the hot routes without it)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            lean = isinstance(scope.get("endpoint"), LeanEndpoint)
            self.last = "declined" if DECLINED in scope else "lean" if lean else "documented"
            self.routed = isinstance(scope.get("router"), Router)


@dataclass
class Pair:
    lean: httpx.AsyncClient
    documented: httpx.AsyncClient
    recorder: Recorder

    async def both(self, method: str, path: str, **kwargs: Any) -> None:
        """Send to both apps; both must succeed (the shared setup)."""
        for client in (self.lean, self.documented):
            r = await client.request(method, path, **kwargs)
            assert r.status_code < 300, r.text


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    closers = []
    clients = []
    recorder: Recorder | None = None
    for lean in (True, False):
        folder = tmp_path / str(lean)
        folder.mkdir()
        settings = make_settings(
            folder,
            backend="memory",
            auth={"keys": KEYS},
            bandit={"seed": 7},
            exploration={"seed": 11},
            rank={"max_candidates": 5},
        )
        app = create_app(settings, lean=lean)
        ctx = app.router.lifespan_context(app)
        await ctx.__aenter__()
        closers.append(ctx)
        asgi: ASGIApp = app
        if lean:
            asgi = recorder = Recorder(app)
        clients.append(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=asgi),
                base_url="http://recloop/api/v1/learning",
                headers={"authorization": f"Bearer {READ_KEY}"},
            )
        )
    assert recorder is not None
    p = Pair(clients[0], clients[1], recorder)
    await p.both("PUT", "/items/i1", json={"vector": [1, 0, 0, 0, 0, 0, 0, 0]})
    await p.both("PUT", "/items/i2", json={"vector": [0, 1, 0, 0, 0, 0, 0, 0]})
    events = [{"user_id": "known", "item_id": "i1", "type": "like"}]
    await p.both("POST", "/feedback", json={"events": events})
    await p.both("POST", "/experiments", json=EXPERIMENT)
    await p.both("POST", "/experiments/exp/start")
    for client in clients:  # the like applied on both
        for _ in range(200):
            r = await client.get("/users/known/preferences")
            if r.status_code == 200:
                break
    yield p
    for client in clients:
        await client.aclose()
    for ctx in closers:
        await ctx.__aexit__(None, None, None)


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<volatile>" if k in VOLATILE else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


async def _same(pair: Pair, served_by: str, method: str, path: str, **kwargs: Any) -> int:
    """Send one request to both apps; require the same answer. Returns the status."""
    lean = await pair.lean.request(method, path, **kwargs)
    documented = await pair.documented.request(method, path, **kwargs)
    what = f"{method} {path[:60]} {kwargs}"[:300]
    assert lean.status_code == documented.status_code, (what, lean.text, documented.text)
    for header in HEADERS:
        assert lean.headers.get(header) == documented.headers.get(header), (what, header)
    if documented.content:
        assert _masked(lean.json()) == _masked(documented.json()), what
    else:
        assert lean.content == documented.content, what
    assert pair.recorder.last == served_by, what
    return lean.status_code


LONG = "x" * 129
BASE = "/users/known"
GET_PATHS = [
    f"{BASE}/weights",
    f"{BASE}/strategy",
    f"{BASE}/preferences",
    "/experiments/exp/assignment/known",
]


async def test_gets_answer_as_documented(pair: Pair) -> None:
    statuses = []
    for path in [
        *GET_PATHS,
        "/users/stranger/weights",
        "/users/stranger/strategy",
        "/users/stranger/preferences",  # 404: no event applied
        "/experiments/exp/assignment/stranger",  # a first exposure
        "/experiments/exp/assignment/stranger",  # the second
        "/experiments/nope/assignment/known",  # 404
        "/users/caf%C3%A9%20%3F/weights",  # escaped: é, space, question mark
        "/users/" + "é" * 128 + "/weights",  # 128 characters, 256 bytes
        f"/experiments/{'e' * 128}/assignment/{'u' * 128}",  # 404, at the bounds
    ]:
        statuses.append(await _same(pair, "lean", "GET", path))
    assert statuses.count(200) == 10 and statuses.count(404) == 3


async def test_strategy_queries_answer_as_documented(pair: Pair) -> None:
    """The lean strategy route reads ``expose`` only when there is a query string."""
    for query, served_by, status in (
        ("", "lean", 200),
        ("?", "lean", 200),
        ("?expose=false", "lean", 200),
        ("?expose=true", "lean", 200),
        ("?other=1", "lean", 200),
        ("?expose=maybe", "declined", 422),
        ("?expose=true&expose=false", "declined", 200),
        ("?expose=1", "declined", 200),
    ):
        for user in ("known", "stranger", "first-look"):
            path = f"/users/{user}/strategy{query}"
            assert await _same(pair, served_by, "GET", path) == status, path


async def test_hot_reads_are_served_past_the_router(pair: Pair) -> None:
    """The request middleware hands a hot read to its lean route directly (FastPaths);
    what the lean route declines goes on to the documented route, what is not a hot
    route goes through the router, and an error the lean route raises gets the app's
    answer without it."""
    for path in GET_PATHS:
        assert (await pair.lean.get(path)).status_code == 200, path
        assert (pair.recorder.last, pair.recorder.routed) == ("lean", False), path
    assert (await pair.lean.get("/users/stranger/preferences")).status_code == 404
    assert (pair.recorder.last, pair.recorder.routed) == ("lean", False)
    assert (await pair.lean.get(f"/users/{LONG}/weights")).status_code == 422
    assert pair.recorder.last == "declined"  # the documented route answered it
    assert (await pair.lean.get("/users/known/weights/x")).status_code == 404  # no such route
    assert (pair.recorder.last, pair.recorder.routed) == ("documented", True)
    unauthorised = await pair.lean.get(GET_PATHS[0], headers={"authorization": "Bearer nope"})
    assert unauthorised.status_code == 401 and not pair.recorder.routed
    assert unauthorised.headers["www-authenticate"] == "Bearer"


async def test_bad_gets_answer_as_documented(pair: Pair) -> None:
    too_long = [
        f"/users/{LONG}/weights",
        f"/users/{LONG}/strategy",
        f"/users/{LONG}/preferences",
        f"/experiments/{LONG}/assignment/known",
        f"/experiments/exp/assignment/{LONG}",
        f"/experiments/{LONG}/assignment/{LONG}",  # both named
    ]
    for path in too_long:
        assert await _same(pair, "declined", "GET", path) == 422
    for path in GET_PATHS:
        for method in ("POST", "PUT", "DELETE", "HEAD"):  # 405 with every allowed method
            assert await _same(pair, "lean", method, path) == 405
    bearer = "authorization"
    for headers, status in (
        ({bearer: "Bearer not-a-key"}, 401),
        ({bearer: "Basic abc"}, 401),
        ({bearer: ""}, 401),
        ({bearer: f"Bearer {INGEST_KEY}"}, 403),
    ):
        for path in [*GET_PATHS, f"/users/{LONG}/weights"]:  # auth goes first
            assert await _same(pair, "lean", "GET", path, headers=headers) == status


def _rank(candidates: Any = None, **fields: Any) -> dict[str, Any]:
    return {"candidates": [{"item_id": "i1"}] if candidates is None else candidates, **fields}


GOOD_BODIES: list[Any] = [
    _rank(),
    _rank([{"item_id": "i1", "algorithm": "popularity", "score": 0.5}, {"item_id": "i2"}]),
    _rank([{"item_id": "i1", "score": 3}, {"item_id": "i2", "score": -1.5e300}], k=1),
    _rank([{"item_id": "zz", "algorithm": None, "score": None}], k=None, context=None),
    _rank(k=99, context={"device": "tv", "nested": {"a": [1, 2.5, None, True]}}),
    _rank(k=RANK_K_MAX),
    _rank([{"item_id": "é" * 128, "algorithm": "content_based"}] * 5),
]
DECLINED_GOOD: list[bytes] = [
    b'{"candidates": [{"item_id": "i1"}], "k": 2.0}',  # RankIn takes 2.0 as 2; msgspec not
    b'{"candidates": [{"item_id": "i1"}], "context": {"x": NaN}}',  # Python's json reads NaN
    b'\xef\xbb\xbf{"candidates": [{"item_id": "i1"}]}',  # a UTF-8 byte order mark
]
BAD_BODIES: list[Any] = [
    {},
    [],
    "text",
    None,
    _rank([]),
    _rank({"item_id": "i1"}),
    _rank(["i1"]),
    _rank([{}]),
    _rank([{"item_id": ""}]),
    _rank([{"item_id": "x" * 129}]),
    _rank([{"item_id": 5}]),
    _rank([{"item_id": "i1", "algorithm": ""}]),
    _rank([{"item_id": "i1", "algorithm": "a" * 65}]),
    _rank([{"item_id": "i1", "score": "1"}]),
    _rank([{"item_id": "i1", "score": True}]),
    _rank([{"item_id": "i1", "extra": 1}]),
    _rank(k=0),
    _rank(k=-3),
    _rank(k=RANK_K_MAX + 1),
    _rank(k=2**64),
    _rank(k=1.5),
    _rank(k=True),
    _rank(k="3"),
    _rank(context=[1]),
    _rank(context="x"),
    _rank(extra=1),
    _rank([{"item_id": "i1", "algorithm": 3, "score": "x"}, {"bad": 1}], k=0, context=1),
]
BAD_RAW: list[bytes] = [
    b"",
    b"{",
    b'{"candidates": [{"item_id": "i1"}]} x',
    b'{"candidates": [{"item_id": "i1", "score": NaN}]}',
    b'{"candidates": [{"item_id": "i1", "score": Infinity}]}',
    b'{"candidates": [{"item_id": "i1", "score": 1e400}]}',
    b'{"candidates": [{"item_id": "i1", "score": ' + b"9" * 400 + b"}]}",
    b'{"candidates": [{"item_id": "\xff"}]}',  # not UTF-8
    b'{"candidates": [{"item_id": "\\ud800"}]}',  # a lone surrogate (no UTF-8 for it)
]


async def test_rank_answers_as_documented(pair: Pair) -> None:
    json_type = {"content-type": "application/json"}
    for body in GOOD_BODIES:
        assert await _same(pair, "lean", "POST", f"{BASE}/rank", json=body) == 200
        assert await _same(pair, "lean", "POST", "/users/stranger/rank", json=body) == 200
    charset = {"content-type": "Application/JSON; charset=utf-8"}
    assert await _same(pair, "lean", "POST", f"{BASE}/rank", json=_rank(), headers=charset) == 200
    for raw in DECLINED_GOOD:
        status = await _same(
            pair, "declined", "POST", f"{BASE}/rank", content=raw, headers=json_type
        )
        assert status == 200, raw
    for body in BAD_BODIES:
        assert await _same(pair, "declined", "POST", f"{BASE}/rank", json=body) == 422, body
    over = _rank([{"item_id": f"i{n}"} for n in range(6)])
    assert await _same(pair, "lean", "POST", f"{BASE}/rank", json=over) == 422  # limit: lean
    unknown = _rank([{"item_id": "i1", "algorithm": "a" * 64}])  # decoded, then refused
    assert await _same(pair, "lean", "POST", f"{BASE}/rank", json=unknown) == 422
    for raw in BAD_RAW:
        status = await _same(
            pair, "declined", "POST", f"{BASE}/rank", content=raw, headers=json_type
        )
        assert status == 422, raw
    good = json.dumps(_rank()).encode()
    for headers in ({}, {"content-type": "text/plain"}, {"content-type": "application/x+json"}):
        await _same(pair, "declined", "POST", f"{BASE}/rank", content=good, headers=headers)
    assert await _same(pair, "declined", "POST", f"/users/{LONG}/rank", json=_rank()) == 422
    assert await _same(pair, "declined", "POST", f"/users/{LONG}/rank", json=_rank(k=0)) == 422


async def test_rank_checks_the_key_where_the_documented_route_does(pair: Pair) -> None:
    for headers, status in (
        ({"authorization": "Bearer nope"}, 401),
        ({"authorization": f"Bearer {INGEST_KEY}"}, 403),
    ):
        assert (
            await _same(pair, "lean", "POST", f"{BASE}/rank", json=_rank(), headers=headers)
            == status
        )
        # A body that does not parse is a 422 first, a body that breaks a rule is not.
        bad_json = {**headers, "content-type": "application/json"}
        assert (
            await _same(pair, "declined", "POST", f"{BASE}/rank", content=b"{", headers=bad_json)
            == 422
        )
        assert (
            await _same(pair, "declined", "POST", f"{BASE}/rank", json=_rank(k=0), headers=headers)
            == status
        )


# -- msgspec against pydantic ---------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.sampled_from(["", "a" * 64, "a" * 65, "b" * 128, "b" * 129, "é" * 128, "\x00"]),
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
_keys = st.sampled_from(["item_id", "algorithm", "score", "extra"])
_candidate = st.one_of(_json, st.dictionaries(_keys, _scalars, max_size=4))
_body = st.one_of(
    _json,
    st.fixed_dictionaries(
        {"candidates": st.one_of(_json, st.lists(_candidate, max_size=4))},
        optional={"k": _scalars, "context": _json, "extra": _scalars},
    ),
)


def _values(body: RankIn | RankBody) -> tuple[Any, ...]:
    candidates = [(c.item_id, c.algorithm, c.score) for c in body.candidates]
    return (candidates, body.k, body.context)


def _same_values(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN and a float's type not to an int's."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_values(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_values(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(_body)
def test_msgspec_rank_body_accepts_only_what_rankin_accepts(body: Any) -> None:
    raw = json.dumps(body).encode()  # NaN and Infinity included, as Python's json writes them
    fast = decode_rank(raw)
    if fast is None:
        return  # declined: the documented route answers
    try:
        oracle = RankIn.model_validate(json.loads(raw))
    except ValidationError as exc:
        pytest.fail(f"msgspec accepted what RankIn refuses: {raw!r}: {exc}")
    assert _same_values(_values(fast), _values(oracle)), raw


def test_msgspec_rank_body_decodes_valid_bodies() -> None:
    """The fast path is taken: every good body of the HTTP test decodes."""
    for body in GOOD_BODIES:
        decoded = msgspec.json.decode(json.dumps(body).encode(), type=RankBody)
        assert _same_values(_values(decoded), _values(RankIn.model_validate(body)))
