"""Continuous learning end to end through the API, on a seeded world whose clicks depend
learnably on item and context features: train, validate, deploy, canary, promote, roll
back; a tampered artifact refused; slots and registry kept across a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from typer.testing import CliRunner

from recloop import cli
from recloop.adapters.sql import SqlDatabase
from recloop.adapters.sql.training import ReadOnlyDatabase
from recloop.core.features import FEATURE_NAMES
from recloop.learning.learner import Artifact, LightGbmLearner
from recloop.learning.training import build_training_data, train
from recloop.learning.validation import PromotionGate, time_split
from recloop.ports import ModelRecord
from recloop.services.learning import LearningService
from tests.conftest import Running, make_settings, start_app

pytestmark = pytest.mark.timeout(240)

ITEMS = 300
USERS = 400
CANDIDATES = 20
SHOWN = 3
TIERS = {"gold": 0.35, "silver": 0.12, "bronze": 0.03}
"""Click probability in the top slot by the item's tier: the learnable signal."""


class World:
    """Items with a hidden tier (an attribute), users on devices, position-biased clicks."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.tier = {f"i{n}": self.rng.choice(list(TIERS)) for n in range(ITEMS)}

    def items(self) -> list[dict[str, Any]]:
        return [
            # three one-hot attributes: an odd count never cancels out when hashed
            {"item_id": i, "attributes": {"tier": t, "genre": f"g{n % 7}", "sku": i}}
            for n, (i, t) in enumerate(self.tier.items())
        ]

    def request(self) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
        user = f"u{self.rng.randrange(USERS)}"
        chosen = self.rng.sample(sorted(self.tier), CANDIDATES)
        # The orchestrator's own scores know nothing of the tier.
        candidates = [
            {"item_id": i, "algorithm": "popularity", "score": self.rng.random()} for i in chosen
        ]
        return user, candidates, {"device": self.rng.choice(["mobile", "desktop"])}

    def clicks(self, ranking: list[dict[str, Any]], device: str) -> list[str]:
        clicked = []
        for position, slot in enumerate(ranking):
            p = TIERS[self.tier[slot["item_id"]]] * (1.2 if device == "mobile" else 1.0)
            if self.rng.random() < p / (1 + position):
                clicked.append(slot["item_id"])
        return clicked


async def traffic(app: Running, world: World, requests: int) -> tuple[int, int]:
    """Rank and click like users would; (impressions, impressions with a click)."""
    shown = clicked_any = 0
    for n in range(requests):
        user, candidates, context = world.request()
        r = await app.client.post(
            f"/users/{user}/rank", json={"candidates": candidates, "k": SHOWN, "context": context}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        clicks = world.clicks(body["ranking"], context["device"])
        shown += 1
        clicked_any += bool(clicks)
        if clicks:
            events = [
                {
                    "event_id": f"{body['impression_id']}-{item}",
                    "user_id": user,
                    "item_id": item,
                    "type": "click",
                    "attribution": {"impression_id": body["impression_id"]},
                }
                for item in clicks
            ]
            r = await app.client.post("/feedback", json={"events": events})
            assert r.status_code == 202 and r.json()["accepted"] == len(events), r.text
        if n % 200 == 0:
            await asyncio.sleep(0)
    return shown, clicked_any


def settings(tmp_path: Path, backend: str = "sqlite", url: str | None = None) -> Any:
    return make_settings(
        tmp_path,
        backend,
        url,
        rate_limits={"enabled": False},
        # The specification's uniform ε-greedy at the segment's ε: the off-policy check
        # below needs its exploration (every candidate, every user). Under the adaptive
        # default (fewer, top-5 explorations) the candidate's SNIPS gain over the logging
        # policy fell to 1.05 in 2 of 7 runs (issue 15).
        exploration={"top": 1000, "temperature": None, "evidence_half": None},
        learning={
            "attribution_window_minutes": 0.01,  # labels final 0.6 s after the impression
            "canary_fraction": 0.5,
            "min_canary_impressions": 300,
            "watch_impressions": 1_000_000,
            "monitor_seconds": 3600,  # the test calls monitor() itself
            "min_auc_gain": 0.01,
        },
    )


async def model_of(app: Running, n: int) -> dict[str, Any]:
    """The model serving user ``u<n>``, as ``strategy`` reports it."""
    r = await app.client.get(f"/users/u{n}/strategy")
    assert r.status_code == 200, r.text
    model: dict[str, Any] = r.json()["model"]
    return model


async def retrain(app: Running) -> dict[str, Any]:
    await asyncio.sleep(1.0)  # past the attribution window of the last impression
    r = await app.client.post("/models/retrain")
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    learning = app.container.learning
    assert learning is not None
    await learning.wait(job_id)
    job = (await app.client.get(f"/models/jobs/{job_id}")).json()
    assert job["status"] == "done", job
    return (await app.client.get(f"/models/{job['version']}")).json()


async def test_train_validate_deploy_promote_rollback_restart(tmp_path: Path) -> None:
    world = World(seed=11)
    app, close = await start_app(settings(tmp_path))
    try:
        r = await app.client.post("/items", json={"items": world.items()})
        assert r.is_success, r.text
        # Without a model: version null, features logged all the same.
        strategy = (await app.client.get("/users/u1/strategy")).json()
        assert strategy["model"] == {"version": None, "slot": None}
        baseline = await traffic(app, world, 2_500)

        good = await retrain(app)
        assert good["status"] == "candidate", good["reason"]
        # one name, the documented one: the examples with a click
        assert "positives" not in good and 0 < good["clicks"] < good["examples"]
        metrics = good["metrics"]
        assert metrics["candidate"]["auc"] > 0.65
        ope = metrics["off_policy"]
        # The ratio depends on when clicks are applied relative to later ranks (1.18-1.78
        # over ten runs): a margin of 1.1 says "clearly better" without that timing.
        assert ope["candidate_snips"]["value"] > ope["logging"]["value"] * 1.1

        r = await app.client.post(f"/models/{good['version']}/deploy")
        assert r.status_code == 200, r.text
        assert (await app.client.get(f"/models/{good['version']}")).json()["status"] == "green"
        routes = [
            (await app.client.get(f"/users/u{n}/strategy")).json()["model"] for n in range(60)
        ]
        green = [m for m in routes if m["slot"] == "green"]
        assert green and all(m["version"] == good["version"] for m in green)
        assert 0.2 < len(green) / len(routes) < 0.8  # canary_fraction 0.5, sticky
        again = [await model_of(app, n) for n in range(60)]
        assert again == routes

        learning = app.container.learning
        assert learning is not None
        transition = None
        for _ in range(10):
            await traffic(app, world, 500)
            transition = await learning.monitor()
            if transition is not None:
                break
        assert transition is not None and transition.action == "promote", transition
        deployment = (await app.client.get("/models/deployment")).json()
        assert deployment["slots"]["blue_version"] == good["version"]
        assert [t["action"] for t in deployment["transitions"]] == ["deploy", "promote"]
        assert (await app.client.get(f"/models/{good['version']}")).json()["status"] == "active"
        served = await traffic(app, world, 1_000)
        assert served[1] / served[0] > baseline[1] / baseline[0]  # the model ranks better online

        # A candidate that would pass offline but ranks worse online: scores inverted.
        inverted = await register(app, "inverted", invert=True)
        r = await app.client.post(f"/models/{inverted}/deploy")
        assert r.status_code == 200, r.text
        transition = None
        for _ in range(10):
            await traffic(app, world, 500)
            transition = await learning.monitor()
            if transition is not None:
                break
        assert transition is not None and transition.action == "rollback", transition
        assert "worse" in transition.reason
        assert (await app.client.get(f"/models/{inverted}")).json()["status"] == "rolled_back"
        deployment = (await app.client.get("/models/deployment")).json()
        assert deployment["slots"]["green_version"] is None
        assert deployment["slots"]["blue_version"] == good["version"]

        # A tampered artifact is refused, saying why.
        tampered = await register(app, "tampered", tamper=True)
        r = await app.client.post(f"/models/{tampered}/deploy")
        assert r.status_code == 422, r.text
        assert "checksum mismatch" in r.text
        before = {
            n: (await app.client.get(f"/users/u{n}/strategy")).json()["model"] for n in range(20)
        }
    finally:
        await close()

    # A restart keeps the registry, the slots and who is served by which.
    app, close = await start_app(settings(tmp_path))
    try:
        after = {
            n: (await app.client.get(f"/users/u{n}/strategy")).json()["model"] for n in range(20)
        }
        assert after == before
        listed = (await app.client.get("/models")).json()
        assert {m["version"]: m["status"] for m in listed}[good["version"]] == "active"
    finally:
        await close()


async def _examples(app: Running) -> tuple[np.ndarray, np.ndarray]:
    store, log = app.container.store, app.container.event_log
    impressions = await store.get_impressions(0.0, math.inf)
    feedback = await log.read_feedback_of([i.impression_id for i in impressions])
    data = build_training_data(impressions, feedback, 60.0)
    return data.features, np.asarray(data.labels, dtype=np.float64)


async def register(
    app: Running,
    version: str,
    invert: bool = False,
    tamper: bool = False,
    metrics: dict[str, Any] | None = None,
) -> str:
    """Register a model by hand as a validated candidate: trained on the logged examples
    (on inverted labels: it ranks the worst first), its bytes altered after the checksum
    if ``tamper``."""
    X, y = await _examples(app)
    artifact = Artifact.of(LightGbmLearner().fit(X, 1.0 - y if invert else y, FEATURE_NAMES))
    data = bytearray(artifact.data)
    if tamper:
        data[len(data) // 2] ^= 0x01
    record = ModelRecord(
        version,
        1e12,
        "candidate",
        "registered by the test",
        artifact.kind,
        artifact.sha256,
        0.0,
        1.0,
        len(y),
        int(y.sum()),
        metrics or {},
        list(artifact.feature_names),
    )
    await app.container.store.put_model(record, bytes(data))
    return version


async def test_an_unproven_candidate_gets_a_smaller_canary(tmp_path: Path) -> None:
    """A model whose gate found it supported off-policy gets ``canary_fraction`` (0.5 here);
    one without that support (none recorded: registered by hand) gets
    ``unproven_canary_share`` (0.2) of it, and the audit says so."""
    world = World(seed=11)
    app, close = await start_app(settings(tmp_path))
    try:
        await app.client.post("/items", json={"items": world.items()})
        await traffic(app, world, 300)
        await register(app, "unproven")
        r = await app.client.post("/models/unproven/deploy")
        assert r.status_code == 200, r.text
        deployed = r.json()
        assert deployed["numbers"]["canary_fraction"] == pytest.approx(0.1)
        assert deployed["numbers"]["off_policy_supported"] == 0.0
        assert "unproven off-policy" in deployed["reason"]
        slots = (await app.client.get("/models/deployment")).json()["slots"]
        assert slots["canary_fraction"] == pytest.approx(0.1)
        assert (await app.client.post("/models/rollback")).status_code == 200
        supported = {"gate": {"off_policy": {"accepted": True, "supported": True}}}
        await register(app, "supported", metrics=supported)
        r = await app.client.post("/models/supported/deploy", json={"reason": "try it"})
        assert r.status_code == 200, r.text
        deployed = r.json()
        assert deployed["numbers"]["canary_fraction"] == 0.5
        assert deployed["numbers"]["off_policy_supported"] == 1.0
        assert deployed["reason"] == "try it"
    finally:
        await close()


async def test_a_candidate_trained_on_shuffled_labels_is_rejected(tmp_path: Path) -> None:
    world = World(seed=5)
    app, close = await start_app(settings(tmp_path))
    try:
        await app.client.post("/items", json={"items": world.items()})
        await traffic(app, world, 1_500)
        store, log = app.container.store, app.container.event_log
        impressions = await store.get_impressions(0.0, math.inf)
        feedback = await log.read_feedback_of([i.impression_id for i in impressions])
    finally:
        await close()
    data = build_training_data(impressions, feedback, 60.0)
    gate = PromotionGate(0.01, 0.01)
    champion_outcome = train(data, None, gate, 0.3)
    assert champion_outcome.accepted, champion_outcome.reason
    assert champion_outcome.artifact is not None
    from recloop.learning.training import Champion

    a = champion_outcome.artifact
    champion = Champion(a.kind, a.data, a.sha256, "champion")
    # Shuffled training labels; the holdout keeps the truth both models are judged on.
    train_idx, _ = time_split(data.timestamps, 0.3)
    labels = data.labels[:]
    taken = [labels[i] for i in train_idx]
    random.Random(3).shuffle(taken)
    for i, label in zip(train_idx, taken, strict=True):
        labels[i] = label
    shuffled = dataclasses.replace(data, labels=labels)
    outcome = train(shuffled, champion, gate, 0.3)
    assert not outcome.accepted
    assert outcome.reason.startswith("rejected by the gate: AUC rejected: AUC")
    assert outcome.metrics["gate"]["auc"]["accepted"] is False


async def test_recloop_train_from_the_command_line(tmp_path: Path) -> None:
    world = World(seed=8)
    app, close = await start_app(settings(tmp_path))
    try:
        await app.client.post("/items", json={"items": world.items()})
        await traffic(app, world, 1_200)
    finally:
        await close()
    await asyncio.sleep(1.0)  # past the attribution window
    env = {
        "RECLOOP_STORAGE__URL": f"sqlite+aiosqlite:///{tmp_path / 'recloop.db'}",
        "RECLOOP_VECTORS__DIM": "8",
        "RECLOOP_LEARNING__ATTRIBUTION_WINDOW_MINUTES": "0.01",
    }
    result = await asyncio.to_thread(CliRunner().invoke, cli.app, ["train"], env=env)
    assert result.exit_code == 0, result.output
    assert "done: m-" in result.output
    app, close = await start_app(settings(tmp_path))
    try:
        listed = (await app.client.get("/models")).json()
        assert len(listed) == 1 and listed[0]["status"] == "candidate"
        assert listed[0]["examples"] == 1_200 * SHOWN
    finally:
        await close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_with_sql_storage_the_training_process_reads_its_data_itself(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """The server's engine runs no query of the window's impressions or their clicks; the
    model is the one the in-server path (the in-memory storage's) trains on the same data."""
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    world = World(seed=13)
    app, close = await start_app(settings(tmp_path, backend, url))
    db, learning = app.container.db, app.container.learning
    assert db is not None and learning is not None
    statements: list[str] = []

    def executed(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    def reads_window() -> list[str]:
        return [s for s in statements if "FROM impressions" in s or "impression_id IN" in s]

    event.listen(db.engine.sync_engine, "before_cursor_execute", executed)
    try:
        await app.client.post("/items", json={"items": world.items()})
        await traffic(app, world, 1_200)
        await asyncio.sleep(1.0)  # past the attribution window
        statements.clear()
        stages: list[str] = []
        job = await learning.train_now("api", stages.append)
        assert job.status == "done", job.message
        assert reads_window() == [], reads_window()
        assert stages == [
            "reading impressions",
            "joining 1200 impressions with their clicks",
            f"training on {1_200 * SHOWN} examples and validating in the training process",
            "registering the model",
        ]
        assert job.version is not None
        in_child = await learning.model(job.version)
        assert in_child.examples == 1_200 * SHOWN

        # The same data read and joined in this process, as with the in-memory storage.
        here = LearningService(
            app.container.store, app.container.event_log, app.container.settings.learning
        )
        statements.clear()
        in_server_job = await here.train_now("api")
        assert in_server_job.status == "done", in_server_job.message
        assert reads_window(), "the in-server path reads through the server's engine"
        assert in_server_job.version is not None
        in_server = await here.model(in_server_job.version)
        assert (in_child.examples, in_child.positives) == (in_server.examples, in_server.positives)
        assert in_child.metrics == in_server.metrics
        assert in_child.sha256 == in_server.sha256

        # The schedule's rule, applied in the training process: nothing new since.
        skipped = await learning.train_now("schedule")
        assert skipped.status == "skipped"
        assert skipped.message == "skipped: 0 new examples since the last model, below 1000"
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", executed)
        await close()


async def test_the_training_process_never_writes_to_postgresql(postgres_url: str) -> None:
    """Its sessions are read-only, still after the pool took a connection back."""
    server = SqlDatabase(postgres_url)
    await server.migrate()
    reader = ReadOnlyDatabase(postgres_url)
    try:
        for _ in range(2):  # the second time on the connection the pool kept
            async with reader.read() as conn:
                assert (await conn.execute(text("SELECT count(*) FROM impressions"))).scalar() == 0
            with pytest.raises(sa_exc.DBAPIError, match="read-only transaction"):
                async with reader.read() as conn:
                    await conn.execute(text("DELETE FROM impressions"))
        with pytest.raises(RuntimeError, match="never migrated"):
            await reader.migrate()
    finally:
        await reader.dispose()
        await server.dispose()


async def test_a_promotion_that_skips_the_canary_needs_force_and_is_audited(
    tmp_path: Path,
) -> None:
    world = World(seed=12)
    app, close = await start_app(settings(tmp_path))
    try:
        await app.client.post("/items", json={"items": world.items()})
        await traffic(app, world, 300)
        version = await register(app, "hand-made")
        r = await app.client.post(f"/models/{version}/deploy", json={"reason": "try it"})
        assert r.status_code == 200, r.text
        before = (await app.client.get("/models/deployment")).json()

        # The canary has too few impressions to decide: a promotion by hand is refused...
        for body in (None, {"reason": "looks fine"}, {"force": False}):
            r = await app.client.post("/models/promote", json=body)
            assert r.status_code == 409, r.text
            refusal = r.json()
            assert refusal["state"].startswith("canary ") and "has not decided" in refusal["detail"]
            assert "force: true" in refusal["detail"]
        r = await app.client.post("/models/promote", json={"force": "yes"})
        assert r.status_code == 422, r.text  # an explicit boolean, not a truthy string
        assert [e["loc"] for e in r.json()["detail"]] == [["body", "force"]]
        # ...and changes nothing.
        assert (await app.client.get("/models/deployment")).json() == before
        assert (await app.client.get(f"/models/{version}")).json()["status"] == "green"

        r = await app.client.post(
            "/models/promote", json={"force": True, "reason": "incident 42: the old model leaks"}
        )
        assert r.status_code == 200, r.text
        promoted = r.json()
        assert promoted["forced"] is True and promoted["action"] == "promote"
        assert promoted["by"].startswith("client:")  # no keys configured: the caller's address
        assert "incident 42" in promoted["reason"] and "skipping the canary" in promoted["reason"]
        assert promoted["numbers"]["green_impressions"] < 300  # what the canary had seen

        deployment = (await app.client.get("/models/deployment")).json()
        audit = deployment["transitions"]
        assert [(t["action"], t["forced"]) for t in audit] == [
            ("deploy", False),
            ("promote", True),
        ]
        assert audit[0]["by"] == promoted["by"] and audit[0]["reason"] == "try it"
        assert audit[1] == promoted
        assert deployment["slots"]["blue_version"] == version
        assert (await app.client.get(f"/models/{version}")).json()["status"] == "active"
    finally:
        await close()


async def test_a_retrain_that_finds_no_example_says_why(tmp_path: Path) -> None:
    """Impressions inside the attribution window (30 minutes by default) are not examples
    yet; a retrain that finds none says so instead of a bare count."""
    app, close = await start_app(make_settings(tmp_path, "memory", rate_limits={"enabled": False}))
    try:
        learning = app.container.learning
        assert learning is not None
        empty = await learning.train_now("api")
        assert empty.status == "skipped"
        assert "no impression logged in the last 14 days" in empty.message
        candidates = [{"item_id": f"i{j}", "algorithm": "popularity"} for j in range(3)]
        for n in range(4):
            r = await app.client.post(f"/users/u{n}/rank", json={"candidates": candidates})
            assert r.status_code == 200, r.text
        job = await learning.train_now("api")
        assert job.status == "skipped"
        assert job.message.startswith("not trainable: 0 examples, 0 positives: ")
        assert "4 impressions newer than the 30-minute attribution window" in job.message
    finally:
        await close()
