"""Data for the console's tests: a short seeded run through the API, and models put in
the registry (training one takes a minute of traffic; the console only shows them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from recloop.core.features import FEATURE_NAMES
from recloop.core.segments import SEGMENTS
from recloop.learning.learner import Artifact, LightGbmLearner
from recloop.learning.validation import curves
from recloop.ports import HistoryPoint, HistoryStore, ModelRecord, StateStore

RUNNING = {
    "experiment_id": "exp-blend",
    "name": "New ranking blend",
    "hypothesis": "popularity-heavy blending lifts purchases",
    "variants": [{"key": "control", "weight": 0.5}, {"key": "treatment", "weight": 0.5}],
    "metrics": [
        {"name": "purchased", "type": "binomial", "event": "purchase"},
        {"name": "clicks", "type": "continuous", "event": "click", "aggregate": "count"},
    ],
}
DRAFT = {
    "experiment_id": "exp-draft",
    "name": "Exploration rate",
    "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
    "metrics": [{"name": "purchased", "type": "binomial", "event": "purchase"}],
}
USERS = 40
BLOCKED = "u-spammer"
MODELS = ("m-001", "m-002")


async def seed_api(client: httpx.AsyncClient, algorithms: list[str]) -> None:
    """Experiments (one running with exposures and outcomes, one draft), feedback of
    ``USERS`` users, performance reports for every segment and algorithm, one blocked
    user. ``client`` sends an admin key to ``/api/v1/learning``."""
    genres = ("jazz", "rock", "folk", "pop", "soul")
    items = [
        {"item_id": f"i{n}", "attributes": {"genre": genres[n % 5], "decade": 1960 + 10 * (n % 6)}}
        for n in range(50)
    ]
    r = await client.post("/items", json={"items": items})
    assert r.is_success, r.text
    for body in (RUNNING, DRAFT):
        r = await client.post("/experiments", json=body)
        assert r.status_code == 201, r.text
    assert (await client.post("/experiments/exp-blend/start")).status_code == 200
    rng = np.random.default_rng(7)
    for n in range(USERS):
        user = f"u{n}"
        r = await client.get(f"/experiments/exp-blend/assignment/{user}")
        assert r.status_code == 200, r.text
        events: list[dict[str, Any]] = [
            {"user_id": user, "item_id": f"i{int(rng.integers(50))}", "type": "like"}
            for _ in range(3)
        ]
        events += [
            {"user_id": user, "item_id": f"i{int(rng.integers(50))}", "type": "click"}
            for _ in range(int(rng.integers(1, 5)))
        ]
        if rng.random() < 0.3:
            events.append({"user_id": user, "item_id": "i1", "type": "purchase", "value": 9.5})
        r = await client.post("/feedback", json={"events": events})
        assert r.status_code == 202, r.text
    records = [
        {
            "algorithm": algorithm,
            "segment": segment,
            "impressions": 2000,
            "clicks": int(20 + 40 * i + 10 * j),
        }
        for i, algorithm in enumerate(algorithms)
        for j, segment in enumerate(SEGMENTS)
    ]
    r = await client.post("/algorithm-performance", json={"records": records})
    assert r.status_code == 202, r.text
    r = await client.post(f"/users/{BLOCKED}/block", json={"reason": "bot-like bursts"})
    assert r.status_code == 200, r.text


async def seed_models(store: StateStore, versions: Sequence[str] = MODELS) -> None:
    """Validated candidates in the registry, with holdout metrics as training records
    them (each after the first scored against the one before as champion)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, len(FEATURE_NAMES)))
    y = (X[:, 0] + 0.5 * rng.normal(size=400) > 0).astype(float)
    model = LightGbmLearner(num_boost_round=20).fit(X[:300], y[:300], FEATURE_NAMES)
    artifact = Artifact.of(model)
    stored_curves = curves(y[300:], model.predict(X[300:]))  # on the 100 held out
    for i, version in enumerate(versions):
        candidate = {"n": 80, "positives": 40, "auc": 0.70 + 0.01 * i, "log_loss": 0.6 - 0.01 * i}
        candidate["calibration_error"] = 0.05
        metrics = {
            "candidate": candidate,
            "champion": None
            if i == 0
            else {"auc": 0.7, "log_loss": 0.6, "calibration_error": 0.05},
            "champion_version": None if i == 0 else versions[i - 1],
            "curves": stored_curves,
        }
        record = ModelRecord(
            version,
            1_700_000_000.0 + i,
            "candidate",
            "passed the gate",
            artifact.kind,
            artifact.sha256,
            0.0,
            1.0,
            400,
            int(y.sum()),
            metrics,
            list(artifact.feature_names),
        )
        await store.put_model(record, artifact.data)


SAMPLES = 6
"""Samples of each subject :func:`seed_history` writes."""
CANARY = "m-002"


async def seed_history(
    store: HistoryStore, algorithms: Sequence[str], now: float, step: float = 600.0
) -> None:
    """``SAMPLES`` samples ``step`` seconds apart up to ``now``, as the sampler writes
    them: every (segment, algorithm)'s posterior, exp-blend's two comparisons, and a
    canary of ``CANARY`` whose interval narrows."""
    points = []
    for k in range(SAMPLES):
        at = now - step * (SAMPLES - 1 - k)
        narrowing = 1.0 / (1 + k)
        for i, algorithm in enumerate(algorithms):
            for j, segment in enumerate(SEGMENTS):
                mean = 0.01 + 0.02 * i + 0.002 * j + 0.001 * k
                figures = {"mean": mean, "low": mean - 0.004, "high": mean + 0.004}
                points.append(HistoryPoint("algorithm", segment, algorithm, at, figures))
        for n, metric in enumerate(("purchased", "clicks")):
            effect = 0.05 + 0.02 * n
            figures = {
                "effect": effect,
                "low": effect - 0.5 * narrowing,
                "high": effect + 0.5 * narrowing,
                "users": 10.0 * (k + 1),
                "power": 0.1 + (0.1 - 0.04 * n) * k,
                "remaining": 1000.0 - (100 - 40 * n) * k,
            }
            points.append(
                HistoryPoint("experiment", "exp-blend", f"{metric}:treatment", at, figures)
            )
        figures = {"effect": 0.01, "low": 0.01 - 0.2 * narrowing, "high": 0.01 + 0.2 * narrowing}
        figures |= {"margin": 0.05, "baseline": 1000.0 * (k + 1), "served": 100.0 * (k + 1)}
        points.append(HistoryPoint("canary", CANARY, "canary", at, figures))
    await store.append(points)
