"""rank with the features as one matrix and the slate in columns, against the code it
replaced: on random slates, the same ranking, scores, propensities, exploration and
features (logged as float32) as the per-candidate dicts gave for the same inputs and seed.

The oracle below is the former ``Ranker.rank`` slate building and
``LearningService.feature_rows``, kept as they were (per candidate, on
:func:`recloop.core.features.combine` and its parts)."""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recloop.core.exploration import epsilon_greedy
from recloop.core.features import (
    FEATURE_NAMES,
    ContextFeatures,
    ItemFeatures,
    UserFeatures,
    at_position,
    combine,
    context_part,
    hashed_attributes,
    item_part,
    to_matrix,
    user_part,
)
from recloop.core.ranking import Candidate, cosines, fuse
from recloop.learning.learner import Artifact, LightGbmLearner
from recloop.ports import ModelRecord
from recloop.services.learning import DAY, MIN_ITEM_IMPRESSIONS, LearningService
from recloop.services.ranking import LOGGED_NAMES, Ranker, Strategy
from tests.conftest import Running, make_settings, start_app
from tests.unit.test_ranking import rank_percentiles

pytestmark = pytest.mark.timeout(240)

ALGORITHMS = ["collaborative", "content_based", "popularity", "trending", "other", None]


def old_feature_rows(
    learning: LearningService,
    user_id: str,
    segment: str,
    interactions: int,
    last_event_at: float | None,
    scored: Sequence[Any],
    items: Mapping[str, Any],
    context: Mapping[str, Any],
    now: float,
    ranks: Mapping[str, Sequence[float]],
) -> list[dict[str, float]]:
    """The former ``LearningService.feature_rows``, given each item's rank percentiles
    (``ranks``: computed by hand, :func:`tests.unit.test_ranking.rank_percentiles`)."""
    reliability = 100.0 if learning._reliability is None else learning._reliability(user_id)
    user = user_part(
        UserFeatures(
            segment,
            interactions,
            None if last_event_at is None else max(0.0, (now - last_event_at) / DAY),
            0.0 if reliability is None else reliability,
        )
    )
    device = context.get("device")
    ctx = context_part(ContextFeatures(now, device if isinstance(device, str) else None))
    rows = []
    for s in scored:
        item = items.get(s.item_id)
        shown, clicks = learning._tally.item_stats.get(s.item_id, (0, 0))
        item_features = ItemFeatures(
            shown,
            clicks / shown if shown >= MIN_ITEM_IMPRESSIONS else None,
            None if item is None else max(0.0, (now - item.updated_at) / DAY),
            {} if item is None else item.attributes,
        )
        from_attributes = item is not None and item.vector_source == "hashed"
        hashed = None if item is None else hashed_attributes(item.attributes)
        rows.append(
            combine(
                user,
                item_part(item_features, hashed),
                ctx,
                s.affinity,
                s.affinity if from_attributes else 0.0,
                0,
                s.algorithms[0] if s.algorithms else None,
                ranks[s.item_id],
            )
        )
    return rows


async def old_rank(
    ranker: Ranker,
    strategy: Strategy,
    user_id: str,
    candidates: Sequence[Candidate],
    k: int | None,
    context: Mapping[str, Any] | None,
    rng: np.random.Generator,
    float32_features: bool,
) -> list[dict[str, Any]]:
    """The former ``Ranker.rank``'s slate; with ``float32_features`` the model is given
    the rows rounded to float32 (what is logged, and now served)."""
    user, epsilon = strategy.user, strategy.epsilon
    ids = list(dict.fromkeys(c.item_id for c in candidates))
    affinities: dict[str, float] = {}
    if user.preferences is not None and np.any(user.preferences.vector):
        vectors = await ranker._vectors.get_many(ids)
        known = [(i, v) for i, v in vectors.items() if v is not None]
        if known:
            values = cosines(user.preferences.vector, np.stack([v for _, v in known]))
            affinities = dict(zip((i for i, _ in known), values.tolist(), strict=True))
    scored = fuse(
        candidates,
        strategy.weights,
        affinities,
        rrf_k=ranker._config.rrf_k,
        affinity_weight=ranker._config.affinity_weight,
        method=ranker._config.fusion,
    )
    by_id = {s.item_id: s for s in scored}
    route = strategy.route
    rows: dict[str, dict[str, float]] = {}
    scores = {s.item_id: s.score for s in scored}
    learning = ranker._learning
    if learning is not None:
        now = ranker._clock()
        prefs = user.preferences
        items = await ranker._vectors.items(by_id)
        found = old_feature_rows(
            learning,
            user_id,
            user.segment,
            0 if prefs is None else prefs.interactions,
            None if prefs is None else prefs.last_event_at,
            scored,
            items,
            context or {},
            now,
            dict(zip(ids, rank_percentiles(list(candidates), strategy.weights, ids), strict=True)),
        )
        rows = {s.item_id: row for s, row in zip(scored, found, strict=True)}
        if route.model is not None:
            matrix = to_matrix(found, route.model.feature_names)
            if float32_features:
                matrix = matrix.astype(np.float32).astype(np.float64)
            predicted = [float(p) for p in route.model.predict(matrix)]
            scores = {s.item_id: p for s, p in zip(scored, predicted, strict=True)}
            scored = sorted(scored, key=lambda s: -scores[s.item_id])
    slots = epsilon_greedy([s.item_id for s in scored], epsilon, rng)
    shown = slots if k is None else slots[:k]
    return [
        {
            "item_id": slot.item_id,
            "position": slot.position,
            "score": scores[slot.item_id],
            "propensity": slot.propensity,
            "explored": slot.explored,
            "algorithms": list(by_id[slot.item_id].algorithms),
            "features": {
                "fusion": by_id[slot.item_id].fusion,
                "affinity": by_id[slot.item_id].affinity,
                **(at_position(rows[slot.item_id], slot.position) if rows else {}),
            },
        }
        for slot in shown
    ]


def f32(value: float) -> float:
    return float(np.float32(value))


def request(rng: random.Random, items: int) -> tuple[list[Candidate], int | None, Any]:
    chosen = rng.sample(range(items + 10), rng.randrange(0, 40))  # some never registered
    candidates = []
    for n in chosen:
        candidates.append(
            Candidate(
                f"i{n}",
                rng.choice(ALGORITHMS),
                None if rng.random() < 0.2 else rng.uniform(-1.0, 1.0),
            )
        )
        if rng.random() < 0.1:  # proposed by a second algorithm too
            candidates.append(Candidate(f"i{n}", rng.choice(ALGORITHMS), rng.random()))
    k = rng.choice([None, 1, 3, 10, 100])
    context = rng.choice([None, {}, {"device": "Mobile"}, {"device": "tv"}, {"device": 3}])
    return candidates, k, context


async def populate(app: Running, rng: random.Random, items: int) -> None:
    """Items (with attributes, some with their own vectors), users with preferences, and
    ranked slates with clicks so that some items have a click-through rate."""
    registered = []
    for n in range(items):
        item: dict[str, Any] = {"item_id": f"i{n}"}
        if n % 3 or n % 4:  # hashed from attributes (or, with a vector too, not)
            item["attributes"] = {"genre": f"g{n % 5}", "tier": rng.choice("abc"), "sku": n}
        if n % 4 == 0:
            item["vector"] = [rng.uniform(-1, 1) for _ in range(8)]
        registered.append(item)
    r = await app.client.post("/items", json={"items": registered})
    assert r.is_success, r.text
    events = [
        {
            "event_id": f"e{n}",
            "user_id": f"u{n % 12}",
            "item_id": f"i{rng.randrange(items)}",
            "type": rng.choice(["click", "view", "purchase"]),
        }
        for n in range(200)
    ]
    r = await app.client.post("/feedback", json={"events": events})
    assert r.status_code == 202, r.text
    await app.idle(flush=True)
    clicks = []
    for n in range(80):
        body = {
            "candidates": [{"item_id": f"i{i}", "algorithm": "popularity"} for i in range(12)],
            "k": 5,
        }
        r = await app.client.post(f"/users/u{n % 15}/rank", json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        for slot in answer["ranking"]:
            if rng.random() < 0.3:
                clicks.append(
                    {
                        "event_id": f"c{len(clicks)}",
                        "user_id": f"u{n % 15}",
                        "item_id": slot["item_id"],
                        "type": "click",
                        "attribution": {"impression_id": answer["impression_id"]},
                    }
                )
    r = await app.client.post("/feedback", json={"events": clicks})
    assert r.status_code == 202, r.text
    await app.idle(flush=True)
    learning = app.container.learning
    if learning is not None:
        await learning.monitor()
        stats = learning._tally.item_stats
        assert any(shown >= MIN_ITEM_IMPRESSIONS and clicked for shown, clicked in stats.values())


async def compare(app: Running, rng: random.Random, requests: int, model: bool) -> None:
    ranker = app.container.ranker
    now = ranker._clock()
    ranker._clock = lambda: now  # both sides compute time features at the same instant
    for _ in range(requests):
        user = f"u{rng.randrange(15)}"
        candidates, k, context = request(rng, 60)
        strategy = await ranker.strategy(user)
        assert (strategy.route.model is not None) == model
        oracle_rng = copy.deepcopy(ranker._rng)
        impression, _ = await ranker.rank(user, candidates, k, context)
        for float32_features in (True,) if model else (True, False):
            drawn = copy.deepcopy(oracle_rng)
            expected = await old_rank(
                ranker, strategy, user, candidates, k, context, drawn, float32_features
            )
            # the generator moved on exactly as the oracle's did
            assert drawn.bit_generator.state == ranker._rng.bit_generator.state
            got = impression.slate
            assert [s["item_id"] for s in got] == [s["item_id"] for s in expected]
            for new, old in zip(got, expected, strict=True):
                assert new["position"] == old["position"]
                assert new["score"] == old["score"]
                assert new["propensity"] == old["propensity"]
                assert new["explored"] == old["explored"]
                assert new["algorithms"] == old["algorithms"]
                assert list(new["features"]) == list(old["features"])
                logged = {name: f32(v) for name, v in old["features"].items()}
                assert new["features"] == logged


def settings(tmp_path: Path, learning: bool = True) -> Any:
    return make_settings(
        tmp_path,
        "memory",
        rate_limits={"enabled": False},
        # the oracle explores as rank did: uniformly over every other candidate, at the
        # segment's ε (core.exploration.explore draws and computes exactly that then)
        exploration={
            "probe": False,  # the oracle's draw (probes: tests/unit/test_probe.py)
            "seed": 7,
            "epsilon": {"new": 0.5, "inactive": 0.3, "power": 0.2, "regular": 0.9},
            "top": 100_000,
            "temperature": None,
            "evidence_half": None,
        },
        learning={"monitor_seconds": 3600, "enabled": learning},
    )


async def test_rank_matches_the_per_candidate_oracle_without_a_model(tmp_path: Path) -> None:
    rng = random.Random(3)
    app, close = await start_app(settings(tmp_path))
    try:
        await populate(app, rng, 60)
        await compare(app, rng, 150, model=False)
    finally:
        await close()


async def test_rank_matches_the_oracle_with_a_model_on_the_logged_float32_rows(
    tmp_path: Path,
) -> None:
    rng = random.Random(4)
    app, close = await start_app(settings(tmp_path))
    try:
        await populate(app, rng, 60)
        learning = app.container.learning
        assert learning is not None
        data = np.random.default_rng(0)
        X = data.normal(size=(400, len(FEATURE_NAMES)))
        X[:, FEATURE_NAMES.index("affinity")] = data.uniform(-1, 1, 400)
        y = (X[:, FEATURE_NAMES.index("affinity")] + data.normal(0, 0.5, 400) > 0).astype(float)
        artifact = Artifact.of(LightGbmLearner().fit(X, y, FEATURE_NAMES))
        record = ModelRecord(
            "m1", 1.0, "candidate", "test", artifact.kind, artifact.sha256, 0.0, 1.0,
            400, int(y.sum()), {}, list(artifact.feature_names),
        )  # fmt: skip
        await app.container.store.put_model(record, artifact.data)
        await learning.deploy("m1")
        await learning.promote(force=True)
        await compare(app, rng, 100, model=True)
    finally:
        await close()


async def test_rank_matches_the_oracle_without_continuous_learning(tmp_path: Path) -> None:
    """Only the fused rank and the affinity are logged then."""
    rng = random.Random(5)
    app, close = await start_app(settings(tmp_path, learning=False))
    try:
        assert app.container.learning is None
        await populate(app, rng, 60)
        await compare(app, rng, 100, model=False)
        impression = (await app.container.store.get_impressions(0.0, math.inf))[-1]
        assert impression.shown.feature_names == ("fusion", "affinity")
    finally:
        await close()


def test_the_logged_names_are_the_features_with_affinity_first() -> None:
    """``rank`` copies the click model's columns into the logged matrix by slices around
    the affinity's column."""
    at = FEATURE_NAMES.index("affinity")
    assert LOGGED_NAMES[:2] == ("fusion", "affinity")
    assert LOGGED_NAMES[2:] == FEATURE_NAMES[:at] + FEATURE_NAMES[at + 1 :]
