"""The console at /console through the ASGI client: every page renders from a seeded
run, admins act, read keys and requests without the CSRF token cannot, nothing loads
from another origin; /docs and /redoc use the package's assets."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from recloop.adapters.sql.history import SqlHistoryStore
from recloop.config import Settings
from recloop.console.sessions import COOKIE
from recloop.core.auth import new_key
from tests.conftest import Running, start_app
from tests.console_seed import (
    BLOCKED,
    CANARY,
    MODELS,
    SAMPLES,
    USERS,
    seed_api,
    seed_history,
    seed_models,
)

INGEST, INGEST_SHA = new_key()
READ, READ_SHA = new_key()
ADMIN, ADMIN_SHA = new_key()
KEYS = [
    {"name": "orchestrator", "sha256": INGEST_SHA, "roles": ["ingest"]},
    {"name": "dashboard", "sha256": READ_SHA, "roles": ["read"]},
    {"name": "ops", "sha256": ADMIN_SHA, "roles": ["admin"]},
]
PAGES = [
    "/console",
    "/console/experiments",
    "/console/experiments/exp-blend",
    "/console/experiments/exp-draft",
    "/console/algorithms",
    "/console/models",
    "/console/guard",
    "/console/users",
    "/console/users?user_id=u1",
]


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Console:
    def __init__(self, running: Running) -> None:
        self.running = running
        self.container = running.container
        self.transport = running.client._transport

    def client(self, host: str = "127.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.transport.app, client=(host, 50000))  # type: ignore[attr-defined]
        return httpx.AsyncClient(transport=transport, base_url="http://recloop")

    async def signed_in(self, key: str) -> httpx.AsyncClient:
        client = self.client()
        r = await client.post("/console/login", data={"api_key": key, "next": "/console"})
        assert r.status_code == 303, r.text
        return client


@pytest.fixture
async def console(settings_factory: Callable[..., Settings]) -> AsyncIterator[Console]:
    settings = settings_factory(auth={"keys": KEYS}, spam={"enabled": True})
    running, close = await start_app(settings)
    running.client.headers["Authorization"] = f"Bearer {ADMIN}"
    await seed_api(running.client, list(settings.bandit.algorithms))
    await seed_models(running.container.store)
    assert running.container.db is not None
    await seed_history(
        SqlHistoryStore(running.container.db), list(settings.bandit.algorithms), time.time()
    )
    await running.idle(flush=True)
    yield Console(running)
    await close()


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def charts(html: str) -> list[dict[str, Any]]:
    """Each chart's spec with the counts the page promises."""
    found = []
    for m in re.finditer(
        r'data-chart="([^"]*)"\s+data-expect-series="(\d+)" data-expect-points="(\d+)"', html
    ):
        spec = json.loads(m.group(1).replace("&#34;", '"').replace("&quot;", '"'))
        found.append({"spec": spec, "series": int(m.group(2)), "points": int(m.group(3))})
    return found


async def test_pages_need_a_session_and_a_read_key(console: Console) -> None:
    client = console.client()
    r = await client.get("/console/experiments")
    assert r.status_code == 303
    assert r.headers["location"] == "/console/login?next=/console/experiments"
    for key in ("rlk_wrong", INGEST, ""):
        r = await client.post("/console/login", data={"api_key": key})
        assert r.status_code == 401
        assert COOKIE not in r.cookies
    r = await client.post("/console/login", data={"api_key": READ, "next": "https://evil.example/"})
    assert r.status_code == 303 and r.headers["location"] == "/console"  # no open redirect
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert READ not in cookie
    page = await client.get("/console/experiments")
    assert page.status_code == 200 and "New ranking blend" in page.text
    assert READ not in page.text


async def test_every_page_renders_the_services_numbers(console: Console) -> None:
    client = await console.signed_in(READ)
    c = console.container
    for path in PAGES:
        r = await client.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        assert "default-src 'self'" in r.headers["content-security-policy"]

    overview = (await client.get("/console")).text
    accepted = re.search(r'id="accepted">(\d+)<', overview)
    assert accepted and int(accepted.group(1)) > USERS * 4
    assert 'id="dead-letters">0<' in overview and "event_log" in overview
    sampler = overview.split('id="history-sampler"')[1].split("</tr>")[0]
    assert "sampling" in sampler and "every 300 s" in sampler  # started with the app

    detail = (await client.get("/console/experiments/exp-blend")).text
    exposed = c.experiments.exposures_by_variant("exp-blend")
    assert sum(exposed.values()) == USERS
    for variant, n in exposed.items():
        assert f"<td>{variant}</td><td>0.5</td><td>{n}</td>" in detail
    results = c.experiments.results("exp-blend")
    assert f"p = {results['srm']['p_value']:.4g}" in detail
    forest, *over = charts(detail)
    rows = [(m["name"], cmp) for m in results["metrics"] for cmp in m["comparisons"]]
    assert forest["series"] == 3 and len(forest["spec"]["x"]) == len(rows) == 2
    assert forest["spec"]["categories"] == [f"{name}: treatment" for name, _ in rows]
    assert forest["spec"]["series"][0]["values"] == [c["relative_effect"] for _, c in rows]
    assert forest["spec"]["series"][1]["values"] == [c["ci_relative"][0] for _, c in rows]
    assert forest["points"] == 3 * len(rows)
    # the anytime-valid interval over time per metric, and the power over time
    assert c.history is not None
    stored = await c.history.series("experiment", "exp-blend")
    assert sorted(s for _, s in stored) == ["clicks:treatment", "purchased:treatment"]
    purchased, clicks, power = over
    for chart, subject in ((purchased, "purchased:treatment"), (clicks, "clicks:treatment")):
        points = stored[("exp-blend", subject)]
        assert chart["spec"]["time"] and chart["series"] == 3
        assert chart["spec"]["x"] == [p.at for p in points] and len(points) >= SAMPLES
        assert chart["spec"]["series"][0]["values"] == [p.values["effect"] for p in points]
        assert chart["spec"]["series"][1]["values"] == [p.values["low"] for p in points]
        assert chart["spec"]["bands"] == [[2, 1]]
        assert chart["points"] == 3 * len(points)
    assert power["series"] == 2 and power["points"] == sum(len(p) for p in stored.values())
    last = stored[("exp-blend", "clicks:treatment")][-1].values
    assert f"<tr><td>clicks:treatment</td><td>{last['power']:.3g}</td>" in detail

    algorithms = (await client.get("/console/algorithms")).text
    found = charts(algorithms)
    n = len(c.optimizer.algorithms)
    assert len(found) == 8 and all(f["series"] == 3 and f["points"] == 3 * n for f in found[:4])
    history = await c.history.series("algorithm")
    for chart in found[4:]:  # each segment's posterior over time, one band per algorithm
        segment = chart["spec"]["title"].split(":")[0]
        mine = {a: history[(segment, a)] for s, a in history if s == segment}
        assert sorted(mine) == sorted(c.optimizer.algorithms)
        assert chart["series"] == 3 * n and chart["points"] == 3 * sum(map(len, mine.values()))
        first = sorted(mine)[0]
        assert chart["spec"]["series"][0]["label"] == first
        assert chart["spec"]["series"][0]["values"] == [p.values["mean"] for p in mine[first]]
    overview_rows = await c.optimizer.overview()
    popularity_new = next(
        r for r in overview_rows if r["segment"] == "new" and r["algorithm"] == "popularity"
    )
    assert f"<td>popularity</td><td>{popularity_new['weight']:.3g}</td><td>2000</td>" in algorithms

    models = (await client.get("/console/models")).text
    validation, roc, reliability, canary = charts(models)
    assert validation["spec"]["categories"] == list(MODELS)
    assert validation["series"] == 3 and validation["points"] == 6
    newest = await c.learning.model(MODELS[-1]) if c.learning is not None else None
    assert newest is not None
    stored_curves = newest.metrics["curves"]
    assert roc["spec"]["x"] == stored_curves["roc"]["fpr"] and roc["series"] == 2
    assert roc["spec"]["series"][0]["values"] == stored_curves["roc"]["tpr"]
    assert reliability["spec"]["x"] == stored_curves["reliability"]["predicted"]
    assert reliability["points"] == 2 * len(stored_curves["reliability"]["count"])
    assert f"{MODELS[-1]}: ROC curve" in roc["spec"]["title"]
    assert canary["series"] == 4 and canary["points"] == 4 * SAMPLES
    assert CANARY in canary["spec"]["title"]
    assert canary["spec"]["series"][3]["values"] == [-0.05] * SAMPLES  # the margin
    older = (await client.get(f"/console/models?version={MODELS[0]}")).text
    assert f"{MODELS[0]}: ROC curve" in charts(older)[1]["spec"]["title"]
    assert (await client.get("/console/models?version=nope")).status_code == 404
    assert "champion m-001: 0.7" in models

    from recloop.console.pages import ScoreHistogram

    app = console.transport.app  # type: ignore[attr-defined]
    app.state.console_scores = ScoreHistogram()  # read afresh (the loop above read them)
    guard = (await client.get("/console/guard")).text
    [histogram] = charts(guard)
    assert histogram["points"] == 10
    assert sum(histogram["spec"]["series"][0]["values"]) == len(c.guard.scores()) > 0
    assert BLOCKED in guard.split('id="blocked"')[1].split("</table>")[0]

    user = (await client.get("/console/users?user_id=u1")).text
    assert 'id="segment">new<' in user or 'id="segment">regular<' in user
    assert "exp-blend" in user and "like" in user
    prefs = await c.preferences.get("u1")
    strongest = user.split('id="strongest"')[1].split("</table>")[0]
    top = int(abs(prefs.vector).argmax())
    assert f"<tr><td>{top}</td><td>{prefs.vector[top]:.3g}</td></tr>" in strongest
    # A read key sees no admin action.
    assert "/console/guard/block" not in guard and "Erase" not in user


async def test_looking_at_a_user_records_no_exposure(console: Console) -> None:
    client = await console.signed_in(READ)
    experiments = console.container.experiments
    assert experiments.exposures_of("fresh-user") == []
    r = await client.get("/console/users?user_id=fresh-user")
    assert r.status_code == 200
    variant = experiments.variant_for(experiments.get("exp-blend"), "fresh-user")
    assert f"exp-blend → {variant}" in r.text
    assert experiments.exposures_of("fresh-user") == []
    assert sum(experiments.exposures_by_variant("exp-blend").values()) == USERS


async def test_fractional_counts_show_one_decimal(console: Console) -> None:
    """Inverse-propensity credit counts fractions of impressions (issue 15): the algorithms
    page shows them to one decimal, whole counts as they are."""
    c = console.container
    before = await c.optimizer.overview()
    whole = next(r for r in before if r["segment"] == "new" and r["algorithm"] == "popularity")
    event = {
        "user_id": "ips-newcomer",
        "item_id": "ips-item",
        "type": "impression",
        "attribution": {"credit_weights": {"trending": 1.25}},
    }
    r = await console.running.client.post("/feedback", json=event)
    assert r.status_code == 202, r.text
    await console.running.idle(flush=True)
    rows = await c.optimizer.overview()
    trending = next(r for r in rows if r["segment"] == "new" and r["algorithm"] == "trending")
    assert trending["impressions"] % 1 == 0.25
    page = (await (await console.signed_in(READ)).get("/console/algorithms")).text
    weight = f"{trending['weight']:.3g}"
    assert f"<td>trending</td><td>{weight}</td><td>{trending['impressions']:.1f}</td>" in page
    # beside them, their effective sample size (what the posterior reads)
    effective = trending["effective_impressions"]
    assert 0 < effective < trending["impressions"]
    assert f"<td>{trending['impressions']:.1f}</td><td>{effective:.1f}</td>" in page
    assert isinstance(whole["impressions"], int)
    assert f"<td>{whole['impressions']}</td>" in page


async def test_admin_actions_change_state(console: Console) -> None:
    client = await console.signed_in(ADMIN)
    c = console.container
    token = csrf((await client.get("/console/experiments/exp-draft")).text)

    r = await client.post("/console/experiments/exp-draft/start", data={"csrf_token": token})
    assert r.status_code == 303 and c.experiments.get("exp-draft").status == "running"

    form = {
        "csrf_token": token,
        "experiment_id": "exp-new",
        "name": "Three arms",
        "variants": "control, b, c",
        "metric_event": "click",
        "traffic_percent": "50",
    }
    r = await client.post("/console/experiments", data=form)
    assert r.status_code == 303 and r.headers["location"] == "/console/experiments/exp-new"
    created = c.experiments.get("exp-new")
    assert created.status == "draft" and created.traffic_allocation == 0.5
    assert [v.key for v in created.variants] == ["control", "b", "c"]
    assert [(m.name, m.type, m.event) for m in created.metrics] == [
        ("converted_click", "binomial", "click")
    ]
    for change, field in [
        ({"experiment_id": "exp-one", "variants": "control"}, "variants"),
        ({"experiment_id": "exp-bad", "metric_event": "teleport"}, "metrics.0.event"),
        ({"experiment_id": "exp-bad", "traffic_percent": "lots"}, "traffic_percent"),
        ({"experiment_id": "exp-new"}, "exp-new"),  # exists already
    ]:
        r = await client.post("/console/experiments", data={**form, **change})
        assert r.status_code in (409, 422) and field in r.text, (change, r.status_code)
    assert {e.experiment_id for e in c.experiments.all()} == {"exp-blend", "exp-draft", "exp-new"}

    r = await client.post(
        "/console/algorithms/trending/disable", data={"csrf_token": token, "reason": "broken feed"}
    )
    assert r.status_code == 303
    rows = [r for r in await c.optimizer.overview() if r["algorithm"] == "trending"]
    assert rows and all(not r["enabled"] and r["status_reason"] == "broken feed" for r in rows)
    r = await client.post("/console/algorithms/trending/release", data={"csrf_token": token})
    assert r.status_code == 303

    r = await client.post("/console/guard/block", data={"csrf_token": token, "user_id": "u3"})
    assert r.status_code == 303 and c.guard.blocked("u3") is not None
    r = await client.post("/console/guard/unblock", data={"csrf_token": token, "user_id": "u3"})
    assert r.status_code == 303 and c.guard.blocked("u3") is None

    r = await client.post(f"/console/models/{MODELS[1]}/deploy", data={"csrf_token": token})
    assert r.status_code == 303, r.text
    assert c.learning is not None
    assert (await c.learning.model(MODELS[1])).status == "green"
    r = await client.post("/console/models/rollback", data={"csrf_token": token})
    assert r.status_code == 303
    assert (await c.learning.model(MODELS[1])).status == "rolled_back"

    r = await client.post("/console/users/export", data={"csrf_token": token, "user_id": "u2"})
    assert r.status_code == 200 and r.json()["user_id"] == "u2" and r.json()["events"]
    assert "attachment" in r.headers["content-disposition"]
    r = await client.post(
        "/console/users/erase", data={"csrf_token": token, "user_id": "u2", "confirm": "u"}
    )
    assert r.status_code == 422 and "confirm" in r.text
    await c.preferences.get("u2")  # still there
    r = await client.post(
        "/console/users/erase", data={"csrf_token": token, "user_id": "u2", "confirm": "u2"}
    )
    assert r.status_code == 303
    export = (
        await client.post("/console/users/export", data={"csrf_token": token, "user_id": "u2"})
    ).json()
    assert export["events"] == [] and export["state"] is None


async def test_a_read_key_cannot_act(console: Console) -> None:
    client = await console.signed_in(READ)
    c = console.container
    # The read session's own token (its sign-out form carries it).
    token = csrf((await client.get("/console/guard")).text)
    for path, data in [
        ("/console/experiments/exp-draft/start", {}),
        ("/console/experiments", {"experiment_id": "x", "name": "x", "variants": "a, b"}),
        ("/console/algorithms/trending/disable", {}),
        ("/console/guard/block", {"user_id": "u3"}),
        (f"/console/models/{MODELS[0]}/deploy", {}),
        ("/console/users/erase", {"user_id": "u2", "confirm": "u2"}),
        ("/console/users/export", {"user_id": "u2"}),
    ]:
        r = await client.post(path, data={"csrf_token": token, **data})
        assert r.status_code == 403, path
        assert "lacks the &#39;admin&#39; role" in r.text
    assert c.experiments.get("exp-draft").status == "draft"
    assert c.guard.blocked("u3") is None
    assert all(r["enabled"] for r in await c.optimizer.overview() if r["algorithm"] == "trending")
    await c.preferences.get("u2")


async def test_actions_without_the_csrf_token_are_refused(console: Console) -> None:
    client = await console.signed_in(ADMIN)
    c = console.container
    for data in ({}, {"csrf_token": "forged"}):
        r = await client.post("/console/experiments/exp-draft/start", data=data)
        assert r.status_code == 403 and "CSRF" in r.text
        r = await client.post("/console/guard/block", data={"user_id": "u3", **data})
        assert r.status_code == 403
    other = await console.signed_in(ADMIN)  # another session's token is not this one's
    r = await client.post(
        "/console/guard/block",
        data={"user_id": "u3", "csrf_token": csrf((await other.get("/console/guard")).text)},
    )
    assert r.status_code == 403
    assert c.experiments.get("exp-draft").status == "draft" and c.guard.blocked("u3") is None
    # No session at all.
    r = await console.client().post("/console/guard/block", data={"user_id": "u3"})
    assert r.status_code == 401 and c.guard.blocked("u3") is None


async def test_bad_input_is_a_4xx_that_changes_nothing(console: Console) -> None:
    client = await console.signed_in(ADMIN)
    token = csrf((await client.get("/console/guard")).text)
    r = await client.post("/console/guard/block", data={"csrf_token": token, "user_id": " "})
    assert r.status_code == 422 and "user_id: required" in r.text
    r = await client.post("/console/algorithms/nope/disable", data={"csrf_token": token})
    assert r.status_code == 422 and "nope" in r.text
    r = await client.post(
        "/console/algorithms/trending/disable", data={"csrf_token": token, "segment": "x"}
    )
    assert r.status_code == 422 and "segment" in r.text
    r = await client.post("/console/experiments/exp-blend/start", data={"csrf_token": token})
    assert r.status_code == 409 and "running" in r.text  # a state refusal names the state
    assert (await client.get("/console/experiments/missing")).status_code == 404
    r = await client.post("/console/models/nope/deploy", data={"csrf_token": token})
    assert r.status_code == 404
    assert all(r["enabled"] for r in await console.container.optimizer.overview())


async def test_sign_out_ends_the_session(console: Console) -> None:
    client = await console.signed_in(READ)
    token = csrf((await client.get("/console")).text)
    assert (await client.post("/console/logout", data={"csrf_token": "x"})).status_code == 403
    r = await client.post("/console/logout", data={"csrf_token": token})
    assert r.status_code == 303
    assert (await client.get("/console")).status_code == 303


ASSET = re.compile(r'(?:src|href)="([^"]+)"')


async def test_no_page_loads_anything_from_another_origin(console: Console) -> None:
    client = await console.signed_in(ADMIN)
    pages = {path: (await client.get(path)).text for path in PAGES}
    pages["/console/login"] = (await console.client().get("/console/login")).text
    for path in ("/docs", "/redoc"):
        r = await client.get(path)
        assert r.status_code == 200
        pages[path] = r.text
    assets = set()
    for path, html in pages.items():
        for url in ASSET.findall(html):
            assert url.startswith("/") and not url.startswith("//"), (path, url)
            assets.add(url.split("?")[0])
        assert not re.search(r"https?://", html.split("</head>")[0]), path
    assert "/console/static/swagger-ui/swagger-ui-bundle.js" in assets
    assert "/console/static/redoc/redoc.standalone.js" in assets
    for url in sorted(assets):
        if url.startswith("/console/static/"):
            r = await client.get(url)
            assert r.status_code == 200 and r.content, url
    assert "fonts.googleapis" not in pages["/redoc"]
    # Labelled by their templates in the latency metric, not as unmatched requests.
    metrics = (await client.get("/metrics")).text
    assert 'route="/console/static/{path}"' in metrics and 'route="/console/guard"' in metrics


async def test_with_no_keys_only_loopback_callers_get_in(
    settings_factory: Callable[..., Settings],
) -> None:
    running, close = await start_app(settings_factory())
    try:
        console = Console(running)
        local = console.client("127.0.0.1")
        r = await local.get("/console/guard")
        assert r.status_code == 200 and "/console/guard/block" in r.text  # admin, as the API
        token = csrf(r.text)
        r = await local.post("/console/guard/block", data={"csrf_token": token, "user_id": "z"})
        assert r.status_code == 303 and running.container.guard.blocked("z") is not None
        r = await local.post("/console/guard/unblock", data={"user_id": "z"})
        assert r.status_code == 403  # CSRF still checked
        remote = console.client("10.1.2.3")
        assert (await remote.get("/console")).status_code == 403
        r = await remote.post("/console/guard/unblock", data={"csrf_token": token, "user_id": "z"})
        assert r.status_code == 403 and running.container.guard.blocked("z") is not None
    finally:
        await close()


async def test_a_session_crosses_instances(console: Console) -> None:
    """Another app over the same configuration (another instance, or this one restarted:
    nothing of the session is held in memory) takes the cookie and its CSRF token."""
    from recloop.api.app import create_app

    client = await console.signed_in(ADMIN)
    token = csrf((await client.get("/console/guard")).text)
    other = create_app(console.container.settings, container=console.container)
    other.state.container = console.container  # as its lifespan sets it (started already)
    transport = httpx.ASGITransport(app=other, client=("127.0.0.1", 50001))
    async with httpx.AsyncClient(transport=transport, base_url="http://recloop") as elsewhere:
        elsewhere.cookies = client.cookies
        page = await elsewhere.get("/console/guard")
        assert page.status_code == 200 and csrf(page.text) == token
        r = await elsewhere.post(
            "/console/guard/block", data={"user_id": "u3", "reason": "x", "csrf_token": token}
        )
        assert r.status_code == 303
        assert (await console.container.guard.report("u3"))["status"] == "blocked"
        # signed out there: refused there at once
        assert (
            await elsewhere.post("/console/logout", data={"csrf_token": token})
        ).status_code == 303
        elsewhere.cookies = client.cookies
        assert (await elsewhere.get("/console/guard")).status_code == 303
