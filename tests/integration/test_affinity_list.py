"""``rank.affinity_list``: the preference affinity fused as one more algorithm's list, its
weight the bandit's (issue 15 item 2), and each credit's draw probability logged (item 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recloop.core.errors import InvalidInput
from tests.conftest import make_settings, start_app

SEGMENTS = ("new", "power", "inactive", "regular")
VECTORS = {
    "x": [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    "y": [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    "z": [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
}
# "als" puts the liked item x last; the affinity list (x: cosine 1) puts it first
CANDIDATES = [
    {"item_id": "y", "algorithm": "als", "score": 3.0},
    {"item_id": "z", "algorithm": "als", "score": 2.0},
    {"item_id": "x", "algorithm": "als", "score": 1.0},
]


def settings(tmp_path: Path, affinity_prior: float, **exploration: Any) -> Any:
    weights = {"als": 1.0 - affinity_prior, "affinity": affinity_prior}
    return make_settings(
        tmp_path,
        "memory",
        bandit={
            "algorithms": ["als", "affinity"],
            "default_weights": dict.fromkeys(SEGMENTS, weights),
            "cache_seconds": 0.0,
            "weight_mode": "mean",  # the prior's means, no Monte Carlo: exact weights
            "seed": 3,
        },
        exploration={"epsilon": dict.fromkeys(SEGMENTS, 0.0), "seed": 4, **exploration},
        rank={"affinity_list": "affinity"},
    )


async def _liked_x(app: Any) -> None:
    items = [{"item_id": k, "vector": v} for k, v in VECTORS.items()]
    r = await app.client.post("/items", json={"items": items})
    assert r.status_code in (200, 201, 202), r.text
    r = await app.client.post(
        "/feedback", json={"event_id": "e1", "user_id": "u", "item_id": "x", "type": "like"}
    )
    assert r.status_code == 202, r.text
    await app.idle(flush=True)


async def _rank(app: Any, user: str = "u") -> dict[str, Any]:
    r = await app.client.post(f"/users/{user}/rank", json={"candidates": CANDIDATES})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.parametrize(("affinity_prior", "top"), [(0.9, "x"), (0.1, "y")])
async def test_the_affinity_lists_weight_decides_how_much_it_moves_the_ranking(
    tmp_path: Path, affinity_prior: float, top: str
) -> None:
    app, close = await start_app(settings(tmp_path, affinity_prior))
    try:
        await _liked_x(app)
        weights = (await app.client.get("/users/u/weights")).json()["weights"]
        assert (weights["affinity"] > 0.5) == (affinity_prior > 0.5)
        ranking = (await _rank(app))["ranking"]
        assert ranking[0]["item_id"] == top
        # every candidate with a vector is on the affinity list, after the caller's own
        assert all(r["algorithms"] == ["als", "affinity"] for r in ranking)
        # no fixed affinity term: the best-fused item scores exactly 1
        assert ranking[0]["score"] == pytest.approx(1.0)
        # a user without preferences has no affinity list: the caller's order
        fresh = (await _rank(app, "nobody"))["ranking"]
        assert [r["item_id"] for r in fresh] == ["y", "z", "x"]
        assert all(r["algorithms"] == ["als"] for r in fresh)
    finally:
        await close()


async def test_a_probe_logs_the_probability_its_algorithm_was_drawn_with(
    tmp_path: Path,
) -> None:
    app, close = await start_app(
        settings(
            tmp_path,
            0.5,
            probe=True,
            credit="probe",
            epsilon=dict.fromkeys(SEGMENTS, 1.0),
            evidence_half=None,
        )
    )
    try:
        await _liked_x(app)
        weights = (await app.client.get("/users/u/weights")).json()["weights"]
        drawn = {}
        for _ in range(40):
            body = await _rank(app)
            top = body["ranking"][0]
            assert top["credit"] in ("als", "affinity")  # ε = 1: every visit a probe
            share = weights[top["credit"]] / sum(weights.values())
            assert top["credit_probability"] == pytest.approx(share)
            assert all(r["credit_probability"] == 0.0 for r in body["ranking"][1:])
            logged = (await app.client.get(f"/impressions/{body['impression_id']}")).json()
            assert logged["slate"][0]["credit_probability"] == top["credit_probability"]
            drawn[top["credit"]] = top["item_id"]
        # each algorithm's probe shows its own top pick
        assert drawn == {"als": "y", "affinity": "x"}
    finally:
        await close()


async def test_an_affinity_list_that_is_no_algorithm_is_refused_at_start(
    tmp_path: Path,
) -> None:
    bad = make_settings(tmp_path, "memory", rank={"affinity_list": "nope"})
    with pytest.raises(InvalidInput, match=r"rank\.affinity_list"):
        await start_app(bad)
