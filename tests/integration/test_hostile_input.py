"""Hostile input (issue 16), the same cases on the embedded deployment (the app in process,
SQLite) and on PostgreSQL: control characters, lone surrogates, slashes and dots, blank and
right-to-left ids, ids at and over the length limit, in every id and string field; NaN,
Infinity and 1e400 in every number; deep nesting; duplicate keys; absurd timestamps.

The rule for each: a clear 4xx, or an acceptance the documentation states (docs/api.md,
"Requests") — never a 5xx. After all of them the stream is not stuck (everything accepted
is applied, /health is ok) and the API key never reached the log.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from recloop.config import Settings
from recloop.core.auth import new_key
from recloop.logs import configure_logging, unconfigure_logging
from tests.conftest import Running, start_app

pytestmark = pytest.mark.timeout(240)

KEY, KEY_SHA = new_key()
VECTOR = [1.0] + [0.0] * 7
LONE = "LONE-SURROGATE"
"""Stands for ``a\\ud800b``: Python cannot encode it, so it is written into the JSON text."""

HOSTILE: dict[str, str] = {
    "nul": "a\x00b",
    "soh": "a\x01b",
    "del": "x\x7f",
    "newline": "a\nb",
    "tab only": "\t",
    "escape sequence": "e\x1b[31m",
    "lone surrogate": LONE,
    "slash": "/",
    "inner slash": "a/b",
    "%2F": "%2F",
    "a%2Fb": "a%2Fb",
    "dot": ".",
    "dot dot": "..",
    "dots around a slash": "a/../b",
    "dots inside": "..a..",
    "space": " ",
    "spaces": "   ",
    "right-to-left mark": "\u200f",
    "right-to-left override": "a\u202eb",
    "byte order mark": "\ufeff",
    "line separator": "a\u2028b",
    "empty": "",
    "at the limit": "x" * 128,
    "over the limit": "x" * 129,
    "astral at the limit": "\U0001f600" * 128,
    "astral over the limit": "\U0001f600" * 129,
}


def _control(s: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in s)


@dataclass(frozen=True)
class Kind:
    """What a field takes: how long, and which strings its rule refuses."""

    min_length: int = 0
    max_length: int = 5000
    ids: bool = False
    """The id rule: no control characters."""
    path: bool = False
    """Also no ``/``, and not ``.`` or ``..`` (ids named in URL paths)."""
    nul: bool = False
    """No U+0000 (free text stored in a PostgreSQL text column)."""
    known: tuple[str, ...] | None = None
    """Only these values (algorithm names)."""

    def refuses(self, s: str) -> bool:
        if s == LONE:
            return True  # not valid Unicode: invalid JSON, wherever it is
        if self.known is not None:
            return s not in self.known
        if not self.min_length <= len(s) <= self.max_length:
            return True
        if self.ids and _control(s):
            return True
        if self.path and ("/" in s or s in (".", "..")):
            return True
        return self.nul and "\x00" in s


PATH_ID = Kind(1, 128, ids=True, path=True)
ID = Kind(1, 128, ids=True)
NAME = Kind(1, 64, ids=True)
ALGORITHM = Kind(known=("collaborative", "content_based", "popularity", "trending"))
TEXT = Kind(0, 5000)
KEY_TEXT = Kind(0, 10**6)  # keys of free-form objects
REASON = Kind(0, 500, nul=True)

H = "@HOSTILE@"
LIKE: dict[str, Any] = {"user_id": "u", "item_id": "i", "type": "like"}
CLICK: dict[str, Any] = {"user_id": "u", "item_id": "i", "type": "click"}


def experiment(**fields: Any) -> dict[str, Any]:
    return {
        "experiment_id": "x",
        "name": "n",
        "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
        "metrics": [{"name": "m", "type": "binomial", "event": "click"}],
        **fields,
    }


# (what, method, path, body with H where the hostile string goes, the field's kind)
FIELDS: list[tuple[str, str, str, Any, Kind]] = [
    ("feedback user_id", "POST", "/feedback", {**LIKE, "user_id": H}, PATH_ID),
    ("feedback item_id", "POST", "/feedback", {**LIKE, "item_id": H}, PATH_ID),
    ("feedback event_id", "POST", "/feedback", {**LIKE, "event_id": H}, ID),
    ("feedback text", "POST", "/feedback", {**LIKE, "type": "review", "text": H}, TEXT),
    ("feedback context key", "POST", "/feedback", {**CLICK, "context": {H: 1}}, KEY_TEXT),
    ("feedback context value", "POST", "/feedback", {**CLICK, "context": {"k": [H]}}, TEXT),
    *[
        (f"attribution.{name}", "POST", "/feedback", {**CLICK, "attribution": {name: H}}, kind)
        for name, kind in [
            ("algorithm", ALGORITHM),
            ("experiment_id", PATH_ID),
            ("impression_id", PATH_ID),
            ("variant", NAME),
            ("model_version", NAME),
        ]
    ],
    ("batch user_id", "POST", "/feedback", {"events": [LIKE, {**LIKE, "user_id": H}]}, PATH_ID),
    ("item attribute key", "PUT", "/items/j", {"attributes": {H: "v"}}, KEY_TEXT),
    ("item attribute value", "PUT", "/items/j", {"attributes": {"k": H}}, TEXT),
    ("items item_id", "POST", "/items", {"items": [{"item_id": H, "vector": VECTOR}]}, PATH_ID),
    ("rank item_id", "POST", "/users/u/rank", {"candidates": [{"item_id": H}]}, PATH_ID),
    (
        "rank algorithm",
        "POST",
        "/users/u/rank",
        {"candidates": [{"item_id": "i", "algorithm": H}]},
        ALGORITHM,
    ),
    (
        "rank context",
        "POST",
        "/users/u/rank",
        {"candidates": [{"item_id": "i"}], "context": {H: H}},
        TEXT,
    ),
    *[
        (
            f"performance {name}",
            "POST",
            "/algorithm-performance",
            {"algorithm": "popularity", "impressions": 1, "clicks": 0, "segment": "new", name: H}
            if name == "report_id"
            else {"algorithm": "popularity", "impressions": 1, "clicks": 0, name: H},
            kind,
        )
        for name, kind in [("user_id", PATH_ID), ("report_id", ID), ("algorithm", ALGORITHM)]
    ],
    ("experiment_id", "POST", "/experiments", experiment(experiment_id=H), PATH_ID),
    ("experiment name", "POST", "/experiments", experiment(name=H), Kind(1, 200)),
    ("experiment hypothesis", "POST", "/experiments", experiment(hypothesis=H), Kind(0, 2000)),
    ("experiment seed", "POST", "/experiments", experiment(seed=H), Kind(1, 128)),
    (
        "variant key",
        "POST",
        "/experiments",
        experiment(variants=[{"key": H, "weight": 0.5}, {"key": "b", "weight": 0.5}]),
        Kind(1, 64),
    ),
    (
        "metric name",
        "POST",
        "/experiments",
        experiment(metrics=[{"name": H, "type": "binomial", "event": "click"}]),
        Kind(1, 64),
    ),
    ("block reason", "POST", "/users/u/block", {"reason": H}, REASON),
    ("override reason", "POST", "/algorithms/trending/disable", {"reason": H}, REASON),
]


def body_with(template: Any, hostile: str, n: int) -> bytes:
    """``template`` as JSON with ``hostile`` in place of :data:`H` (ids made unique by ``n``
    where a repeat would be refused for another reason)."""
    text = json.dumps(template)
    literal = '"a\\ud800b"' if hostile == LONE else json.dumps(hostile)
    text = text.replace(json.dumps(H), literal)
    return text.replace('"experiment_id": "x"', f'"experiment_id": "x{n}"').encode()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """The embedded deployment's storage, and PostgreSQL's."""
    return str(request.param)


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging("json", "DEBUG", stream=stream)
    yield stream
    unconfigure_logging()
    root.setLevel(level)


@pytest.fixture
async def app(
    settings_factory: Callable[..., Settings], logs: io.StringIO
) -> AsyncIterator[Running]:
    keys = [{"name": "hostile", "sha256": KEY_SHA, "roles": ["admin", "ingest", "read"]}]
    settings = settings_factory(auth={"keys": keys}, rate_limits={"enabled": False})
    running, close = await start_app(settings)
    running.client.headers["Authorization"] = f"Bearer {KEY}"
    for item in ("i", "j"):
        r = await running.client.put(f"/items/{item}", json={"vector": VECTOR})
        assert r.status_code == 200, r.text
    yield running
    await close()
    assert KEY not in logs.getvalue()


async def _post(app: Running, method: str, path: str, body: bytes) -> tuple[int, Any]:
    r = await app.client.request(
        method, path, content=body, headers={"content-type": "application/json"}
    )
    return r.status_code, r.json() if r.content else None


async def _settled(app: Running) -> None:
    """Everything accepted is applied, and the service says it is healthy."""
    await app.idle(flush=True)
    health = await app.client.get("/health")
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok", health.text


async def test_strings_in_every_id_and_string_field(app: Running) -> None:
    wrong: list[str] = []
    n = 0
    for what, method, path, template, kind in FIELDS:
        for name, hostile in HOSTILE.items():
            n += 1
            status, answer = await _post(app, method, path, body_with(template, hostile, n))
            refused = kind.refuses(hostile)
            if template.get("events") is not None and status == 202:
                # in a batch, the event alone is rejected
                status = 422 if answer["rejected"] else 202
            if (refused and status != 422) or (not refused and not 200 <= status < 300):
                expected = "422" if refused else "2xx"
                wrong.append(f"{what} = {name}: {status} (expected {expected}) {answer}")
    assert not wrong, "\n".join(wrong)
    await _settled(app)


ACCEPTED_IDS = [
    s
    for s in HOSTILE.values()
    if s != LONE and not PATH_ID.refuses(s)  # the ids a user or item may have
]


async def test_every_accepted_id_is_reachable_and_erasable(app: Running) -> None:
    """The per-id endpoints name every user and item id the API accepts (issue 16, item 3),
    however hostile: read, export, erase."""
    events = [{"user_id": s, "item_id": s, "type": "like"} for s in ACCEPTED_IDS]
    r = await app.client.post("/feedback", json={"events": events})
    assert r.status_code == 202 and r.json()["accepted"] == len(events), r.text
    await _settled(app)
    wrong = []
    for s in ACCEPTED_IDS:
        q = quote(s, safe="")
        for method, path in [
            ("GET", f"/users/{q}/preferences"),
            ("GET", f"/users/{q}/export"),
            ("PUT", f"/items/{q}"),
            ("GET", f"/items/{q}"),
            ("DELETE", f"/users/{q}"),
        ]:
            kwargs: dict[str, Any] = {"json": {"vector": VECTOR}} if method == "PUT" else {}
            r = await app.client.request(method, path, **kwargs)
            if r.status_code != 200:
                wrong.append(f"{method} {path}: {r.status_code} {r.text[:200]}")
        r = await app.client.get(f"/users/{q}/export")
        if r.status_code != 200 or r.json()["events"]:
            wrong.append(f"{s!r} not erased: {r.status_code} {r.text[:200]}")
    assert not wrong, "\n".join(wrong)


# (segment as sent in the URL, whether it must be refused). The others name an id the API
# accepts (a space, %, a right-to-left mark), or what the client makes of them: ``.`` and
# ``..`` are resolved by the client before sending, a byte sequence that is not UTF-8 is
# read with U+FFFD replacement characters. Those may be answered 2xx or 404.
PATH_SEGMENTS = [
    ("%00", True),
    ("%01", True),
    ("%7F", True),
    ("%09", True),
    ("%0A", True),
    ("%2F", True),
    ("a%2Fb", True),
    ("%2E%2E", True),  # "..", percent-encoded: not resolved by the client
    ("%2E", True),
    ("x" * 129, True),
    ("..", False),
    (".", False),
    ("%20", False),
    ("%E2%80%8F", False),
    ("%25", False),
    ("%ED%A0%80", False),  # a surrogate's UTF-8 form: not UTF-8
    ("%FF", False),
]


async def test_hostile_path_segments(app: Running) -> None:
    wrong = []
    for segment, refused in PATH_SEGMENTS:
        for method, path in [
            ("GET", f"/users/{segment}/preferences"),
            ("GET", f"/users/{segment}/weights"),
            ("GET", f"/users/{segment}/strategy"),
            ("GET", f"/users/{segment}/reliability"),
            ("GET", f"/users/{segment}/export"),
            ("DELETE", f"/users/{segment}"),
            ("GET", f"/items/{segment}"),
            ("GET", f"/impressions/{segment}"),
            ("GET", f"/experiments/{segment}"),
            ("GET", f"/experiments/x/assignment/{segment}"),
            ("POST", f"/algorithms/{segment}/enable"),
            ("POST", f"/users/{segment}/rank"),
        ]:
            body = {"candidates": [{"item_id": "i"}]} if path.endswith("/rank") else None
            r = await app.client.request(method, path, json=body)
            ok = 400 <= r.status_code < 500 if refused else r.status_code < 500
            if not ok:
                wrong.append(f"{method} {path}: {r.status_code} {r.text[:200]}")
    assert not wrong, "\n".join(wrong)


BIG_INT = "9" * 400
BAD_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", BIG_INT]
FREE_FORM_NUMBERS = [*BAD_NUMBERS, str(2**64), str(-(2**63) - 1)]

# (what, method, path, body with N where the number goes)
NUMBERS: list[tuple[str, str, str, str]] = [
    (
        "rating value",
        "POST",
        "/feedback",
        '{"user_id": "u", "item_id": "i", "type": "rating", "value": N}',
    ),
    (
        "dwell value",
        "POST",
        "/feedback",
        '{"user_id": "u", "item_id": "i", "type": "dwell", "value": N}',
    ),
    (
        "timestamp",
        "POST",
        "/feedback",
        '{"user_id": "u", "item_id": "i", "type": "view", "timestamp": N}',
    ),
    (
        "propensity",
        "POST",
        "/feedback",
        '{"user_id": "u", "item_id": "i", "type": "click", "attribution": {"propensity": N}}',
    ),
    ("vector", "PUT", "/items/k", '{"vector": [N, 0, 0, 0, 0, 0, 0, 1]}'),
    ("rank score", "POST", "/users/u/rank", '{"candidates": [{"item_id": "i", "score": N}]}'),
    ("rank k", "POST", "/users/u/rank", '{"candidates": [{"item_id": "i"}], "k": N}'),
    (
        "impressions",
        "POST",
        "/algorithm-performance",
        '{"algorithm": "popularity", "segment": "new", "impressions": N, "clicks": 0}',
    ),
    (
        "satisfaction",
        "POST",
        "/algorithm-performance",
        '{"algorithm": "popularity", "segment": "new", "impressions": 1, "clicks": 0, '
        '"satisfaction": N}',
    ),
    (
        "variant weight",
        "POST",
        "/experiments",
        '{"experiment_id": "w", "name": "n", "variants": [{"key": "a", "weight": N}, '
        '{"key": "b", "weight": 0.5}], "metrics": [{"name": "m", "type": "binomial", '
        '"event": "click"}]}',
    ),
    ("power baseline", "POST", "/experiments/power", '{"baseline": N, "mde": 0.1}'),
]

# Free-form objects: a number JSON cannot hold is refused (msgspec; item attributes) or
# kept (Python's json reads NaN and Infinity, logged as null; an integer beyond 64 bits in
# a feedback context is logged as a float) — never a 5xx.
FREE_FORM: list[tuple[str, str, str, str]] = [
    (
        "feedback context",
        "POST",
        "/feedback",
        '{"user_id": "u", "item_id": "i", "type": "click", "context": {"n": N}}',
    ),
    ("item attributes", "PUT", "/items/k", '{"attributes": {"n": N, "tag": "t"}}'),
    (
        "rank context",
        "POST",
        "/users/u/rank",
        '{"candidates": [{"item_id": "i"}], "context": {"n": N}}',
    ),
]


async def test_numbers_json_cannot_hold_are_refused(app: Running) -> None:
    wrong = []
    for what, method, path, template in NUMBERS:
        for number in BAD_NUMBERS:
            body = template.replace("N", number, 1).encode()
            status, answer = await _post(app, method, path, body)
            if status != 422:
                wrong.append(f"{what} = {number[:10]}: {status} (expected 422) {answer}")
    for what, method, path, template in FREE_FORM:
        for number in FREE_FORM_NUMBERS:
            body = template.replace("N", number, 1).encode()
            status, answer = await _post(app, method, path, body)
            if not (200 <= status < 300 or status == 422):
                wrong.append(f"{what} = {number[:10]}: {status} {answer}")
    assert not wrong, "\n".join(wrong)
    await _settled(app)


async def test_an_integer_beyond_64_bits_in_a_feedback_context_is_kept_as_a_float(
    app: Running,
) -> None:
    """msgspec reads it; the event logs write it as the nearest float (null beyond a
    float's range) instead of failing the commit of every event sent with it."""
    big, huge = 2**64, 10**400
    events = [
        {"user_id": "big", "item_id": "i", "type": "click", "context": {"n": "N1"}},
        {"user_id": "big", "item_id": "i", "type": "click", "context": {"n": ["N2"]}},
    ]
    body = json.dumps({"events": events}).replace('"N1"', str(big)).replace('"N2"', str(huge))
    status, answer = await _post(app, "POST", "/feedback", body.encode())
    assert (status, answer["accepted"]) == (202, 2), answer
    await _settled(app)
    exported = (await app.client.get("/users/big/export")).json()
    assert [e["context"]["n"] for e in exported["events"]] == [float(big), [None]]


@pytest.mark.parametrize(
    ("timestamp", "status"),
    [
        ("-1", 202),  # Unix seconds: 1969-12-31T23:59:59Z, within the documented range
        ("-1e12", 422),  # milliseconds, or nothing: out of +-2e10 seconds
        ("1e12", 422),
        ("1767225600000", 422),  # 2026 in milliseconds
        ('"0001-01-01T00:00:00Z"', 202),
        ('"9999-12-31T23:59:59-14:00"', 422),  # in the future
        ('"2026-01-01T00:00:00"', 422),  # no zone
        ('"1767225600"', 422),  # a number in a string
    ],
)
async def test_timestamps_follow_the_documented_rule(
    app: Running, timestamp: str, status: int
) -> None:
    body = f'{{"user_id": "u", "item_id": "i", "type": "view", "timestamp": {timestamp}}}'
    got, answer = await _post(app, "POST", "/feedback", body.encode())
    assert got == status, answer
    if status == 422:
        assert answer["detail"][0]["loc"] == ["body", "timestamp"]


def _nested(depth: int, leaf: str = "1") -> str:
    return '{"a": ' * depth + leaf + "}" * depth


async def test_deep_nesting_and_duplicate_keys(app: Running) -> None:
    """200 levels in a free-form object are kept; past the parsers' limit (about 1000) the
    body is refused as invalid JSON. A key given twice: the last one counts, as in every
    JSON parser recloop uses."""
    deep, too_deep = _nested(200), _nested(5000)
    lists = "[" * 5000 + "]" * 5000
    event = '{"user_id": "u", "item_id": "i", "type": "click", "context": %s}'
    item = '{"attributes": {"tag": "t", "deep": %s}}'
    rank = '{"candidates": [{"item_id": "i"}], "context": %s}'
    report = '{"algorithm": "popularity", "segment": "new", "impressions": 1, "clicks": 0, "x": %s}'
    cases = [
        ("POST", "/feedback", event % deep, 202),
        ("POST", "/feedback", event % too_deep, 422),
        ("POST", "/feedback", '{"events": [%s]}' % (event % too_deep), 422),
        ("PUT", "/items/k", item % deep, 200),
        ("PUT", "/items/k", item % too_deep, 422),
        ("POST", "/users/u/rank", rank % deep, 200),
        ("POST", "/users/u/rank", rank % too_deep, 422),
        ("POST", "/users/u/rank", rank % lists, 422),
        ("POST", "/algorithm-performance", report % lists, 422),
        (
            "POST",
            "/feedback",
            '{"user_id": "a", "user_id": "dup", "item_id": "i", "type": "like"}',
            202,
        ),
        (
            "PUT",
            "/items/k",
            '{"vector": [1, 0, 0, 0, 0, 0, 0, 1], "attributes": {"a": 1, "a": 2}}',
            200,
        ),
        ("POST", "/users/dup/rank", '{"candidates": [{"item_id": "x", "item_id": "i"}]}', 200),
    ]  # fmt: skip
    wrong = []
    for method, path, body, expected in cases:
        status, answer = await _post(app, method, path, body.encode())
        if status != expected:
            wrong.append(f"{method} {path} {body[:80]}: {status} (expected {expected}) {answer}")
    assert not wrong, "\n".join(wrong)
    await _settled(app)
    r = await app.client.get("/users/dup/preferences")
    assert r.status_code == 200, r.text  # the last user_id counted
    item = (await app.client.get("/items/k")).json()
    assert item["attributes"] == {"a": 2}
