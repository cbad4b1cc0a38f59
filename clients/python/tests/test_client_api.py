"""The typed methods round-trip against a real server; errors arrive as typed exceptions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
from client_testing import ADMIN_KEY, READ_KEY, Server, free_port
from recloop_client import (
    AsyncClient,
    Attribution,
    AuthError,
    Candidate,
    Client,
    Conflict,
    Event,
    Experiment,
    Metric,
    NewItem,
    NotFound,
    PerformanceRecord,
    Preferences,
    RateLimited,
    TransportError,
    ValidationError,
    Variant,
)
from recloop_client._models import decode

T = TypeVar("T")
VECTOR = [1.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 1.0]


def eventually(get: Callable[[], T], ok: Callable[[T], bool], within: float = 30.0) -> T:
    """Poll ``get()`` until ``ok``; fail after ``within`` s (a hang guard, not a timing test)."""
    deadline = time.monotonic() + within
    while True:
        try:
            value = get()
            if ok(value):
                return value
        except NotFound:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s")
        time.sleep(0.05)


def test_items_round_trip_with_ids_that_need_encoding(client: Client) -> None:
    odd = "api items/a%2Fb ü"  # a '/' is not allowed in a path id: this has '%2F' and a space
    with pytest.raises(ValidationError) as bad:
        client.put_item("x/y", vector=VECTOR)
    assert bad.value.status_code == 422
    stored = client.put_item(odd.replace("/", "-"), vector=VECTOR, attributes={"genre": "jazz"})
    assert stored.vector_source == "given"
    assert stored.attributes == {"genre": "jazz"}
    assert client.item(stored.item_id) == stored
    batch = client.put_items(
        [
            NewItem("api-items-1", attributes={"genre": "rock"}),
            {"item_id": "api-items-2", "vector": VECTOR},
        ]
    )
    assert batch.stored == 2
    assert [i.item_id for i in batch.items] == ["api-items-1", "api-items-2"]
    assert client.item("api-items-1").vector_source == "hashed"
    with pytest.raises(NotFound):
        client.item("api-items-none")


def test_feedback_single_and_batch(client: Client) -> None:
    client.put_item("fb-i1", vector=VECTOR)
    one = client.feedback("fb-u1", "fb-i1", "like", event_id="fb-e1", context={"device": "mobile"})
    assert (one.accepted, one.results[0].event_id, one.results[0].status) == (
        1,
        "fb-e1",
        "accepted",
    )
    again = client.feedback("fb-u1", "fb-i1", "like", event_id="fb-e1")
    assert again.duplicates == 1 and again.results[0].status == "duplicate"

    batch = client.feedback_batch(
        [
            Event(
                "fb-u2", "fb-i1", "click", event_id="fb-e2", attribution=Attribution("popularity")
            ),
            {"user_id": "fb-u2", "item_id": "fb-i1", "type": "dwell", "value": -1},
            Event("fb-u2", "fb-i1", "view", event_id="fb-e1"),  # a seen id: a duplicate
        ]
    )
    assert (batch.accepted, batch.rejected, batch.duplicates) == (1, 1, 1)
    rejected = batch.results[1]
    assert rejected.status == "rejected"
    assert rejected.error is not None and rejected.error.field == "value"
    logged = {e["event_id"]: e for e in client.export_user("fb-u1").events}
    assert list(logged) == ["fb-e1"] and logged["fb-e1"]["type"] == "like"


def test_422_is_a_validation_error_naming_the_field(client: Client) -> None:
    with pytest.raises(ValidationError) as rating:
        client.feedback("val-u1", "val-i1", "rating", 9)
    assert rating.value.field == "value"
    assert "between 1 and 5" in rating.value.message
    assert rating.value.request_id  # X-Request-ID, for the server's logs

    with pytest.raises(ValidationError) as kind:
        client.feedback("val-u1", "val-i1", "poke")
    assert kind.value.field == "type"

    with pytest.raises(ValidationError) as unknown:
        client.feedback_batch([])
    assert unknown.value.field == "events"

    with pytest.raises(ValidationError) as k:
        client.rank("val-u1", ["val-i1"], k=0)
    assert k.value.field == "k"
    assert [p.loc for p in k.value.errors] == [("body", "k")]


def test_preferences_weights_strategy_rank_impression(client: Client) -> None:
    client.put_items([NewItem(f"rk-i{n}", vector=VECTOR[n:] + VECTOR[:n]) for n in range(4)])
    client.feedback("rk-u1", "rk-i0", "like")
    prefs: Preferences = eventually(
        lambda: client.preferences("rk-u1"), lambda p: p.events_applied >= 1
    )
    assert prefs.dim == 8 and prefs.interactions == 1

    weights = client.weights("rk-u1")
    assert weights.segment == "new"
    assert sum(weights.weights.values()) == pytest.approx(1.0)
    strategy = client.strategy("rk-u1")
    assert strategy.exploration.strategy == "epsilon_greedy"
    assert 0 < strategy.exploration.epsilon < 1
    assert strategy.model.version is None

    ranking = client.rank(
        "rk-u1",
        [
            Candidate("rk-i1", "popularity", 2.0),
            "rk-i2",
            {"item_id": "rk-i3", "algorithm": "trending"},
        ],
        k=2,
        context={"page": "home"},
    )
    assert len(ranking.ranking) == 2
    assert {r.item_id for r in ranking.ranking} <= {"rk-i1", "rk-i2", "rk-i3"}
    assert all(0 < r.propensity <= 1 for r in ranking.ranking)

    shown = ranking.ranking[0].item_id
    client.feedback("rk-u1", shown, "click", attribution={"impression_id": ranking.impression_id})
    impression = eventually(
        lambda: client.impression(ranking.impression_id), lambda i: len(i.feedback) == 1
    )
    assert impression.user_id == "rk-u1"
    assert impression.context == {"page": "home"}
    assert [s["item_id"] for s in impression.slate] == [r.item_id for r in ranking.ranking]


def test_performance_report_and_algorithms(client: Client) -> None:
    record = PerformanceRecord("trending", impressions=500, clicks=40, segment="power")
    first = client.report_performance(record, report_id="perf-r1")
    assert (first.status, first.records) == ("accepted", 1)
    assert client.report_performance(record, report_id="perf-r1").status == "duplicate"
    batch = client.report_performance(
        [
            PerformanceRecord("popularity", impressions=100, clicks=5, segment="power"),
            PerformanceRecord("popularity", impressions=10, clicks=1, user_id="perf-u1"),
        ]
    )
    assert batch.records == 2 and batch.status == "accepted"

    stats = {(a.segment, a.algorithm): a for a in client.algorithms().algorithms}
    assert stats["power", "trending"].impressions >= 500
    assert stats["power", "trending"].clicks >= 40
    # whole counts: their effective sample size is the impressions themselves
    assert (
        stats["power", "trending"].effective_impressions == stats["power", "trending"].impressions
    )
    with pytest.raises(ValidationError) as both:
        client.report_performance(
            PerformanceRecord("trending", impressions=1, clicks=2, segment="power")
        )
    assert "clicks" in both.value.message

    off = client.disable_algorithm("trending", ["power"], reason="client test")
    assert (off.enabled, off.segments) == (False, ["power"])
    assert client.release_algorithm("trending", ["power"]).enabled is None


def test_experiment_lifecycle(client: Client) -> None:
    assert client.power(0.1, 0.1) > 100
    created = client.create_experiment(
        "xp-client",
        "Client test",
        [Variant("control", 0.5), Variant("treatment", 0.5, {"epsilon": 0.2})],
        [Metric("ctr", "ratio", numerator="click", denominator="impression")],
        guardrails=[Metric("dislikes", "binomial", event="dislike")],
        hypothesis="the client works",
    )
    assert isinstance(created, Experiment)
    assert created.status == "draft"
    assert [v.key for v in created.variants] == ["control", "treatment"]
    assert created.metrics[0].numerator == "click"
    assert "xp-client" in {e.experiment_id for e in client.experiments()}

    renamed = client.update_experiment("xp-client", name="Client test, renamed")
    assert renamed.name == "Client test, renamed"
    assert client.start_experiment("xp-client").status == "running"
    assignment = client.assignment("xp-client", "xp-u1")
    assert assignment.in_experiment and assignment.variant in ("control", "treatment")
    assert client.experiment("xp-client").started_at is not None

    results = client.results("xp-client")
    assert results.experiment_id == "xp-client"
    assert {m.name for m in results.metrics} == {"ctr", "dislikes"}
    observed = results.srm.observed
    assert sum(observed.values()) == 1

    with pytest.raises(Conflict) as moves:
        client.update_experiment("xp-client", seed="moves users")
    assert (moves.value.status_code, moves.value.state) == (409, "running")
    with pytest.raises(Conflict) as twice:
        client.start_experiment("xp-client")
    assert twice.value.state == "running" and "running" in str(twice.value)
    assert client.stop_experiment("xp-client").status == "stopped"
    with pytest.raises(Conflict) as stopped:
        client.stop_experiment("xp-client")
    assert stopped.value.state == "stopped"
    with pytest.raises(ValidationError):  # an invalid body stays a 422
        client.update_experiment("xp-client", traffic_allocation=2.0)
    with pytest.raises(NotFound):
        client.experiment("xp-none")


def test_models_guard_privacy(client: Client) -> None:
    assert client.models() == []
    with pytest.raises(NotFound):
        client.model("v-none")
    deployment = client.deployment()
    assert deployment.slots["blue_version"] is None  # nothing trained yet
    assert deployment.transitions == []
    with pytest.raises(NotFound):
        client.deploy_model("v-none")
    with pytest.raises(Conflict) as empty:  # nothing in the green slot to promote
        client.promote_model("client test")
    assert empty.value.state == "no green"
    job = client.retrain()
    assert job.status in ("queued", "running", "done", "skipped", "failed")
    assert client.job(job.job_id).job_id == job.job_id

    client.put_item("gp-i1", vector=VECTOR)
    client.feedback_batch([Event("gp-u1", "gp-i1", "view") for _ in range(15)])
    reliability = eventually(lambda: client.reliability("gp-u1"), lambda r: bool(r.signals))
    assert 0 <= reliability.score <= 100 and reliability.status == "trusted"
    blocked = client.block_user("gp-u1", reason="client test")
    assert (blocked.status, blocked.manual) == ("blocked", True)
    assert "gp-u1" in {s.user_id for s in client.suspects(limit=50)}
    with pytest.raises(AuthError) as refused:  # a single event of a blocked user: 403
        client.feedback("gp-u1", "gp-i1", "view")
    assert (refused.value.status_code, refused.value.reason) == (403, "blocked")
    assert client.unblock_user("gp-u1").status != "blocked"

    exported = client.export_user("gp-u1")
    assert len(exported.events) == 15
    erased = client.erase_user("gp-u1")
    assert erased.removed["events"] == 15
    assert client.export_user("gp-u1").events == []
    assert set(client.purge()) >= {"events", "impressions"}


def test_health_and_unknown_fields_land_in_extra(client: Client) -> None:
    health = client.health()
    assert health.status == "ok"
    assert "storage" in health.components
    prefs = decode(
        Preferences,
        {
            "user_id": "u",
            "vector": [1, 0],
            "dim": 2,
            "events_applied": 1,
            "events_skipped": 0,
            "interactions": 1,
            "impressions": 0,
            "events_held": 0,
            "first_event_at": None,
            "last_event_at": None,
            "updated_at": None,
            "from_a_newer_server": True,
        },
    )
    assert prefs.extra == {"from_a_newer_server": True}
    assert prefs.vector == [1.0, 0.0]


def test_auth_errors_and_the_environment(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECLOOP_API_KEY", raising=False)
    with server.client() as anonymous, pytest.raises(AuthError) as no_key:
        anonymous.weights("auth-u1")
    assert no_key.value.status_code == 401
    with server.client(api_key=READ_KEY) as reader:
        assert reader.weights("auth-u1").user_id == "auth-u1"
        with pytest.raises(AuthError) as no_role:
            reader.feedback("auth-u1", "auth-i1", "view")
    assert (no_role.value.status_code, no_role.value.reason) == (403, "role")
    assert no_key.value.reason is None

    monkeypatch.setenv("RECLOOP_URL", server.root + "/api/v1/learning/")
    monkeypatch.setenv("RECLOOP_API_KEY", ADMIN_KEY)
    with Client() as from_env:
        assert from_env.base_url == server.root + "/api/v1/learning"
        assert from_env.feedback("auth-u1", "auth-i1", "view").accepted == 1


def test_rate_limited_carries_retry_after(client: Client) -> None:
    for n in range(3):  # the server allows 3 explicit events a minute per user
        client.feedback("rl-u1", "rl-i1", "like", event_id=f"rl-{n}")
    with pytest.raises(RateLimited) as limited:
        client.feedback("rl-u1", "rl-i1", "like", event_id="rl-3")
    assert limited.value.retryable
    assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 60
    assert limited.value.limit is not None and "3" in limited.value.limit
    # in a batch, each refused event says the same
    result = client.feedback_batch([Event("rl-u1", "rl-i1", "like")])
    (outcome,) = result.results
    assert outcome.status == "rate_limited"
    assert outcome.retry_after is not None and 1 <= outcome.retry_after <= 60
    assert outcome.limit == limited.value.limit


def test_transport_error_when_nothing_listens() -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", timeout=5) as client,
        pytest.raises(TransportError) as refused,
    ):
        client.health()
    assert refused.value.retryable


def test_async_client_round_trip(server: Server) -> None:
    async def main() -> None:
        async with AsyncClient(server.root, api_key=ADMIN_KEY) as client:
            await client.put_item("async-i1", vector=VECTOR)
            result = await client.feedback("async-u1", "async-i1", "like", event_id="async-e1")
            assert result.accepted == 1
            with pytest.raises(ValidationError) as bad:
                await client.feedback("async-u1", "async-i1", "rating")
            assert bad.value.field == "value"
            ranking = await client.rank("async-u1", ["async-i1", "async-i2"])
            assert len(ranking.ranking) == 2
            weights, strategy = await asyncio.gather(
                client.weights("async-u1"), client.strategy("async-u1")
            )
            assert weights.weights == strategy.weights
            exported = await client.export_user("async-u1")
            assert [e["event_id"] for e in exported.events] == ["async-e1"]

    asyncio.run(main())
