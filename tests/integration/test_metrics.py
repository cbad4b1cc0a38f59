"""GET /metrics: events counted by type and outcome, HTTP latency by route template, and the
gauges read from the running services when scraped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import values

from recloop.core.auth import new_key
from tests.conftest import Running, free_port, make_settings, start_app
from tests.prometheus import Samples, samples, series, value

METRICS_URL = "http://recloop/metrics"  # at the root, beside the API's prefix


async def scrape(app: Running) -> Samples:
    r = await app.client.get(METRICS_URL)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Running]:
    running, close = await start_app(
        make_settings(tmp_path, "memory", rate_limits={"explicit": "2/minute"})
    )
    yield running
    await close()


async def test_metrics_need_no_key(tmp_path: Path) -> None:
    _, sha = new_key()
    keys = [{"name": "ops", "sha256": sha, "roles": ["admin"]}]
    running, close = await start_app(make_settings(tmp_path, "memory", auth={"keys": keys}))
    try:
        assert (await running.client.get("/users/u/weights")).status_code == 401
        samples = await scrape(running)
        assert value(samples, "recloop_dependency_up", dependency="storage") == 1.0
    finally:
        await close()


async def test_events_are_counted_by_type_and_outcome(tmp_path: Path) -> None:
    running, close = await start_app(
        make_settings(
            tmp_path, "memory", rate_limits={"explicit": "2/minute"}, spam={"enabled": True}
        )
    )
    try:
        client = running.client
        assert (await client.post("/users/bad/block", json={})).status_code == 200
        share = {"user_id": "u5", "item_id": "i", "type": "share"}
        events: list[dict[str, Any]] = [
            {"event_id": "e1", "user_id": "u1", "item_id": "i", "type": "like"},
            {"event_id": "e1", "user_id": "u1", "item_id": "i", "type": "like"},  # duplicate
            {"user_id": "u3", "item_id": "i", "type": "rating", "value": 9},  # domain rule
            {"user_id": "u3", "item_id": "i", "type": "teleport"},  # schema: type unknown
            {"user_id": "bad", "item_id": "i", "type": "click"},  # blocked
            {"user_id": "u4", "item_id": "i", "type": "save"},
            share,
            share,
            share,  # u5's third explicit event in a minute: over 2/minute
        ]
        body = (await client.post("/feedback", json={"events": events})).json()
        assert [r["status"] for r in body["results"]] == [
            "accepted", "duplicate", "rejected", "rejected", "blocked", "accepted",
            "accepted", "accepted", "rate_limited",
        ]  # fmt: skip
        like = {"event_id": "e9", "user_id": "u6", "item_id": "i", "type": "like"}
        assert (await client.post("/feedback", json=like)).status_code == 202
        dwell = {"user_id": "u2", "item_id": "i", "type": "dwell"}  # no value: a single 422
        assert (await client.post("/feedback", json=dwell)).status_code == 422
        assert (await client.post("/feedback", json={"type": "view"})).status_code == 422

        counted = series(await scrape(running), "recloop_events_total")
        expected = {
            ("like", "accepted"): 2.0,
            ("like", "duplicate"): 1.0,
            ("rating", "rejected"): 1.0,
            ("unknown", "rejected"): 1.0,
            ("click", "blocked"): 1.0,
            ("save", "accepted"): 1.0,
            ("share", "accepted"): 2.0,
            ("share", "rate_limited"): 1.0,
            ("dwell", "rejected"): 1.0,
            ("view", "rejected"): 1.0,
        }
        assert counted == {
            frozenset({("type", t), ("status", s)}): n for (t, s), n in expected.items()
        }
    finally:
        await close()


async def test_http_latency_is_labelled_with_route_templates(app: Running) -> None:
    client = app.client
    for user in ("u1", "u2"):
        assert (await client.get(f"/users/{user}/preferences")).status_code == 404
    event = {"user_id": "u1", "item_id": "i", "type": "view"}
    assert (await client.post("/feedback", json=event)).status_code == 202  # the lean route
    assert (await client.get("/no/such/path")).status_code == 404
    assert (await client.request("BREW", "/feedback")).status_code == 405

    samples = await scrape(app)
    count = "recloop_http_request_duration_seconds_count"
    prefs = "/api/v1/learning/users/{user_id}/preferences"
    assert value(samples, count, route=prefs, method="GET", status="404") == 2.0
    feedback = "/api/v1/learning/feedback"
    assert value(samples, count, route=feedback, method="POST", status="202") == 1.0
    assert value(samples, count, route="unmatched", method="GET", status="404") == 1.0
    assert value(samples, count, route=feedback, method="other", status="405") == 1.0
    routes = {dict(labels)["route"] for labels in series(samples, count)}
    assert not any("u1" in route or "u2" in route for route in routes)


async def test_state_gauges_are_read_when_scraped(app: Running) -> None:
    client = app.client
    views = [{"user_id": f"u{i}", "item_id": "i", "type": "view"} for i in range(3)]
    assert (await client.post("/feedback", json={"events": views})).json()["accepted"] == 3
    await app.idle()  # applied except the implicit events, which wait for their flush
    experiment = {
        "experiment_id": "exp",
        "name": "blend",
        "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
        "metrics": [{"name": "clicks", "type": "binomial", "event": "click"}],
    }
    assert (await client.post("/experiments", json=experiment)).status_code == 201
    assert (await client.post("/experiments/exp/start")).status_code == 200
    for i in range(10):
        assert (await client.get(f"/experiments/exp/assignment/x{i}")).status_code == 200
    assert (await client.post("/users/bad/block", json={})).status_code == 200

    samples = await scrape(app)
    assert value(samples, "recloop_implicit_buffered") == 3.0
    assert value(samples, "recloop_event_log_lag") == 3.0
    assert value(samples, "recloop_explicit_queue_depth") == 0.0
    assert value(samples, "recloop_dead_letters_total") == 0.0
    assert value(samples, "recloop_apply_crashes_total") == 0.0
    assert value(samples, "recloop_apply_rounds_total") >= 1.0  # the views: buffered
    assert value(samples, "recloop_checkpoints_total") == 0.0  # nothing applied: buffered
    exposures = series(samples, "recloop_experiment_exposures")
    assert {dict(k)["variant"] for k in exposures} == {"a", "b"}
    assert sum(exposures.values()) == 10.0
    assert value(samples, "recloop_spam_users", status="blocked") == 1.0
    assert value(samples, "recloop_spam_users", status="suspect") == 0.0
    assert value(samples, "recloop_rate_limit_degraded") == 0.0
    assert value(samples, "recloop_dependency_up", dependency="storage") == 1.0

    assert value(samples, "recloop_state_journal_rows") == 0.0

    # Two users' explicit events: one journal record of two rows, nothing compacted yet.
    likes = [{"user_id": f"v{i}", "item_id": "i", "type": "like"} for i in range(2)]
    assert (await client.post("/feedback", json={"events": likes})).json()["accepted"] == 2
    await app.idle()
    await app.container.processor.checkpoint()
    samples = await scrape(app)
    assert value(samples, "recloop_state_journal_rows") == 2.0
    assert value(samples, "recloop_state_rows_journaled_total") == 2.0
    assert value(samples, "recloop_state_rows_compacted_total") == 0.0
    await app.container.processor.checkpoint(compact=True)
    samples = await scrape(app)
    assert value(samples, "recloop_state_journal_rows") == 0.0
    assert value(samples, "recloop_state_rows_compacted_total") == 2.0

    weights = series(samples, "recloop_algorithm_weight")
    ctr = series(samples, "recloop_algorithm_posterior_ctr")
    assert set(weights) == set(ctr)
    assert len(weights) == 4 * 4  # segments x algorithms
    for segment in ("new", "inactive", "power", "regular"):
        total = sum(v for k, v in weights.items() if ("segment", segment) in k)
        assert total == pytest.approx(1.0)
    assert all(0.0 < v < 1.0 for v in ctr.values())

    await app.idle(flush=True)
    samples = await scrape(app)
    assert value(samples, "recloop_implicit_buffered") == 0.0
    assert value(samples, "recloop_event_log_lag") == 0.0


async def test_sample_ratio_mismatch_is_exported_as_the_results_say(tmp_path: Path) -> None:
    # A threshold so high that an uneven split of 21 users is flagged: the gauges must agree
    # with GET /experiments/{id}/results, flagged or not.
    running, close = await start_app(
        make_settings(tmp_path, "memory", experiments={"srm_threshold": 0.999})
    )
    try:
        client = running.client
        experiment = {
            "experiment_id": "split",
            "name": "split",
            "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
            "metrics": [{"name": "clicks", "type": "binomial", "event": "click"}],
        }
        assert (await client.post("/experiments", json=experiment)).status_code == 201
        assert (await client.post("/experiments/split/start")).status_code == 200
        samples = await scrape(running)
        assert value(samples, "recloop_experiment_srm_p_value", experiment="split") is None
        assert value(samples, "recloop_experiment_srm_mismatch", experiment="split") == 0.0
        for i in range(21):  # an odd count: never an exact half
            assert (await client.get(f"/experiments/split/assignment/x{i}")).status_code == 200
        srm = (await client.get("/experiments/split/results")).json()["srm"]
        assert srm["flagged"] is True
        samples = await scrape(running)
        p_value = value(samples, "recloop_experiment_srm_p_value", experiment="split")
        assert p_value == pytest.approx(srm["p_value"])
        assert value(samples, "recloop_experiment_srm_mismatch", experiment="split") == 1.0
        assert (await client.post("/experiments/split/stop")).status_code == 200
        samples = await scrape(running)  # only running experiments are watched
        assert series(samples, "recloop_experiment_srm_mismatch") == {}
    finally:
        await close()


async def test_the_model_deployment_is_exported_from_its_stored_state(app: Running) -> None:
    samples = await scrape(app)
    assert value(samples, "recloop_model_canary_fraction") == 0.0
    assert value(samples, "recloop_model_watching") == 0.0
    assert value(samples, "recloop_model_slot_impressions", slot="green") == 0.0
    transitions = series(samples, "recloop_model_transitions_total")
    assert {dict(k)["action"] for k in transitions} == {"deploy", "promote", "rollback", "confirm"}
    assert set(transitions.values()) == {0.0}

    # The slots and history the learning service stores (its own tests drive real models
    # through them): a canary at 10 %, then the monitor's rollback of an earlier one.
    store = app.container.store
    at = 1_700_000_000.0
    deployed = {"action": "deploy", "at": at, "from_version": None, "to_version": "m1"}
    rolled = {"action": "rollback", "at": at + 1, "from_version": "m1", "to_version": None}
    canary = {"green_version": "m2", "canary_fraction": 0.1, "deployed_at": at + 2}
    await store.put_deployment({"green_version": "m1", "canary_fraction": 0.1}, deployed)
    await store.put_deployment({}, {**rolled, "reason": "canary: worse"})
    await store.put_deployment(canary, {**deployed, "to_version": "m2", "at": at + 2})
    samples = await scrape(app)
    assert value(samples, "recloop_model_canary_fraction") == pytest.approx(0.1)
    assert value(samples, "recloop_model_transitions_total", action="deploy") == 2.0
    assert value(samples, "recloop_model_transitions_total", action="rollback") == 1.0
    assert value(samples, "recloop_model_transitions_total", action="promote") == 0.0


async def test_a_failing_rate_limit_store_shows_as_degraded(tmp_path: Path) -> None:
    dead = f"async+redis://127.0.0.1:{free_port()}"
    running, close = await start_app(
        make_settings(tmp_path, "memory", rate_limits={"storage": dead})
    )
    try:
        samples = await scrape(running)
        assert value(samples, "recloop_dependency_up", dependency="rate_limits") == 1.0
        event = {"user_id": "u", "item_id": "i", "type": "like"}
        assert (await running.client.post("/feedback", json=event)).status_code == 202
        samples = await scrape(running)
        assert value(samples, "recloop_rate_limit_degraded") == 1.0
        assert value(samples, "recloop_dependency_up", dependency="rate_limits") == 0.0
    finally:
        await close()


async def test_multiprocess_mode_reads_the_shared_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    # prometheus-client picks its value class at import; this is what the variable selects.
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    running, close = await start_app(make_settings(tmp_path, "memory"))
    try:
        event = {"user_id": "u", "item_id": "i", "type": "click"}
        assert (await running.client.post("/feedback", json=event)).status_code == 202
        samples = await scrape(running)
        assert value(samples, "recloop_events_total", type="click", status="accepted") == 1.0
        assert value(samples, "recloop_dependency_up", dependency="storage") == 1.0
        assert any(folder.glob("*.db"))
    finally:
        await close()


async def test_the_event_loops_lag_is_exported_while_the_app_runs(app: Running) -> None:
    # the lifespan runs the probe: it wakes every 0.1 s
    deadline = time.monotonic() + 5
    while True:
        found = value(await scrape(app), "recloop_event_loop_lag_seconds_count")
        if found or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert found is not None and found >= 1
