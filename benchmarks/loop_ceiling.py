"""How much of the blend→oracle gap could a global scorer close, in hindsight? (issue 15)

``benchmarks.loop``'s hindsight row (the best fixed weights over percentile fusion, chosen
against the truth) closes far less than the 0.5 of the blend→oracle gap issue 15 asks for.
recloop's ranking model sees more than fused percentiles, but not each algorithm's own
score or rank for a candidate. This script bounds what a *global* scorer (one function
for every user, not per-user weights) of what recloop could observe at rank time reaches,
fitted against the truth on the very visits of ``benchmarks.loop`` (its worlds, seeds and
visits, imported; nothing of recloop runs). Each scorer puts its highest-scored candidate
on top; an arm is scored, as in the loop, by the true click probability of that candidate.

Feature sets, one row per candidate of a visit:

- ``(a)`` percentile fusion with the best fixed weights (``benchmarks.loop.hindsight``:
  2,000 Dirichlet weight vectors scored against the truth). On all visits it is the
  loop's own hindsight row (a sanity check); per fold as below.
- ``(r)`` what recloop's ranking model sees today that the loop's visits determine: the
  equal-weight fused score (``fusion``), the one-hot of the first proposing algorithm
  (``algorithm_<a>``, in the order the loop sends candidates) and the item's hashed
  attributes (``attr_00`` .. ``attr_15``: recloop's own ``hashed_attributes`` of what the
  loop registers, its ``sku`` included). Left out: the user's and the request's features
  (segment, interactions, reliability, hour, device: one value per visit, they cannot
  change which candidate a linear scorer puts on top, and the loop sends no context),
  ``position`` (the slot being filled), and the item's ``log_popularity`` and ``ctr``
  and the user's ``affinity``, which recloop learns from the loop's own impressions and
  clicks and ``benchmarks.loop`` does not expose.
- ``(b)`` per algorithm: its raw score for the candidate, its rank percentile
  (``(n - rank + 1) / n``, as the fusion computes it) and an indicator that it did not
  propose the candidate (score and percentile 0 then): 15 columns.
- ``(c)`` (b) and (r) together: what adding the per-algorithm columns to recloop's
  features would give.
- ``(p)`` (b)'s rank percentiles only (0 where the algorithm did not propose the
  candidate; no raw scores, no indicator) with (r): the columns recloop's model gets
  (issue 15, session 16), whose scale does not drift with an algorithm's own scores.
- ``(r+)``, ``(c+)``: (r) and (c) with optimistic stand-ins for the learnt features left
  out: the item's mean true click probability over all users (the ``ctr`` it would show
  under unbiased exposure, without sampling noise) and the cosine of the item's vector
  (recloop's hashed attributes, ``vectors.dim`` 8 as the loop sets) with the user's
  click-probability-weighted mean item vector over the whole catalogue (what recloop's
  EMA of clicked items' vectors would tend to under unbiased exposure).

Scorers, each fitted to the true probabilities of every candidate (so they see far more
than a loop's clicks on its top slot would give): two pointwise, as recloop's model is
trained, ``logistic`` (scikit-learn's ``LogisticRegression`` on standardised columns, each
row twice, labels 1 and 0 weighted ``p`` and ``1 - p``: cross-entropy on soft labels) and
``lightgbm`` (``LightGbmLearner``'s settings with LightGBM's ``cross_entropy`` objective,
which takes labels in [0, 1]); and two fitted to what ranks within a visit, ``log p``
less its visit's mean (a visit's constant cannot change its top pick): ``linear, within
visit`` (least squares, the columns centred per visit too) and ``lightgbm, within
visit`` (trees regressing that target on the raw columns).

Folds: each world (seed) apart, its users split in two by parity; a model fitted on one
half is evaluated on that half (``in-sample``) and on the other half (``held-out``), both
folds in turn, so each row covers every visit, as do the blend and the oracle. CTRs,
gaps and their 95 % intervals pool the seeds as ``benchmarks.loop`` does
(``benchmarks.loop.clustered``: bootstrap over users).

``python -m benchmarks.loop_ceiling [--steps N] [--seeds S] [--world W] [--linear]
[--sets r,c,p]``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks import loop
from recloop.core.features import hashed_attributes
from recloop.core.hashing import hash_features

Vector = npt.NDArray[np.float64]
Matrix = npt.NDArray[np.float64]
Scorer = Callable[[Matrix], Vector]

VECTOR_DIM = 8
"""``vectors.dim`` in ``benchmarks.loop``'s settings: the item vectors affinity uses."""
FEATURE_SETS = ("r", "b", "c", "p", "r+", "c+")
LIGHTGBM: dict[str, object] = {
    "objective": "cross_entropy",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 50,
    "lambda_l2": 1.0,
    "feature_fraction": 0.9,
    "seed": 0,
    "deterministic": True,
    "force_col_wise": True,
    "num_threads": 1,
    "verbose": -1,
}
"""``recloop.learning.learner.LightGbmLearner``'s parameters, with soft labels."""
ROUNDS = 200


@dataclass(frozen=True, slots=True)
class Rows:
    """One seed's visits as candidate rows: ``start[t]`` is visit ``t``'s first row."""

    visit: npt.NDArray[np.intp]
    start: npt.NDArray[np.intp]
    p: Vector
    features: dict[str, Matrix]


def registered(world: loop.World) -> list[dict[str, Any]]:
    """Each item's attributes as ``benchmarks.loop`` registers them (``sku`` included)."""
    return [{**a, "sku": f"i{j}"} for j, a in enumerate(world.attributes)]


def candidate_rows(world: loop.World, visits: Sequence[loop.Visit]) -> Rows:
    """The feature sets of every candidate of every visit (module docstring)."""
    attributes = registered(world)
    hashed = np.array([hashed_attributes(a) for a in attributes])
    vectors = np.array([hash_features(a, VECTOR_DIM) for a in attributes])
    truth: Matrix = world.p  # type: ignore[attr-defined]  # both worlds keep p(user, item)
    item_ctr = truth.mean(axis=0)
    preference = truth @ vectors  # the expected click-weighted item vector, per user
    preference /= np.linalg.norm(preference, axis=1, keepdims=True)
    k = len(loop.ALGORITHMS)
    blocks: dict[str, list[Matrix]] = {name: [] for name in FEATURE_SETS}
    visit_of, p = [], []
    for t, v in enumerate(visits):
        n = len(v.items)
        algo = np.zeros((n, 3 * k))
        algo[:, 2 * k :] = 1.0
        first = np.full(n, k)
        for a, name in enumerate(loop.ALGORITHMS):
            top, scores = v.proposals[name]
            algo[top, a] = scores
            algo[top, k + a] = (len(top) - np.arange(len(top))) / len(top)
            algo[top, 2 * k + a] = 0.0
            first[top] = np.minimum(first[top], a)
        fusion = algo[:, k : 2 * k].sum(axis=1, keepdims=True)
        items = np.array([int(i[1:]) for i in v.items])
        today = np.hstack([fusion, np.eye(k + 1)[first][:, :k], hashed[items]])
        proxies = np.column_stack([item_ctr[items], vectors[items] @ preference[v.user]])
        blocks["r"].append(today)
        blocks["b"].append(algo)
        blocks["c"].append(np.hstack([algo, today]))
        blocks["p"].append(np.hstack([algo[:, k : 2 * k], today]))
        blocks["r+"].append(np.hstack([today, proxies]))
        blocks["c+"].append(np.hstack([algo, today, proxies]))
        visit_of.append(np.full(n, t))
        p.append(v.p)
    sizes = np.array([len(v.items) for v in visits])
    return Rows(
        np.concatenate(visit_of),
        np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp),
        np.concatenate(p),
        {name: np.vstack(b) for name, b in blocks.items()},
    )


def top_p(rows: Rows, score: Vector, visits: npt.NDArray[np.intp]) -> Vector:
    """The true probability of each listed visit's highest-scored candidate."""
    order = np.lexsort((-score, rows.visit))  # by visit, best first; rows are contiguous
    return rows.p[order[rows.start[visits]]]


def within_visit(values: Matrix, visit: npt.NDArray[np.intp]) -> Matrix:
    """``values`` less their visit's mean (per column): what ranks within a visit."""
    _, inverse, sizes = np.unique(visit, return_inverse=True, return_counts=True)
    sums = np.zeros((len(sizes), values.shape[1]))
    np.add.at(sums, inverse, values)
    return values - (sums / sizes[:, None])[inverse]


def fit_logistic(X: Matrix, p: Vector, visit: npt.NDArray[np.intp]) -> Scorer:
    """Pointwise logistic regression on the soft labels ``p`` (each row twice, 1 and 0)."""
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
    from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]

    scaler = StandardScaler().fit(X)
    Z = scaler.transform(X)
    model = LogisticRegression(C=1.0, max_iter=1_000)
    model.fit(
        np.vstack([Z, Z]),
        np.r_[np.ones(len(p)), np.zeros(len(p))],
        sample_weight=np.r_[p, 1.0 - p],
    )
    return lambda X: np.asarray(model.decision_function(scaler.transform(X)))


def fit_linear_within(X: Matrix, p: Vector, visit: npt.NDArray[np.intp]) -> Scorer:
    """Least squares of ``log p`` on the columns, both centred per visit (a visit's
    constant cannot change its top pick): the linear fit of what ranks within a visit."""
    y = within_visit(np.log(p)[:, None], visit)[:, 0]
    w, *_ = np.linalg.lstsq(within_visit(X, visit), y, rcond=None)
    return lambda X: X @ w


def fit_lightgbm(X: Matrix, p: Vector, visit: npt.NDArray[np.intp]) -> Scorer:
    """Pointwise trees on the soft labels ``p`` (recloop's model, cross-entropy)."""
    import lightgbm as lgb

    booster = lgb.train(LIGHTGBM, lgb.Dataset(X, label=p, params=LIGHTGBM), ROUNDS)
    return lambda X: np.asarray(booster.predict(X, raw_score=True))


def fit_lightgbm_within(X: Matrix, p: Vector, visit: npt.NDArray[np.intp]) -> Scorer:
    """Trees regressing ``log p`` centred per visit on the (raw) columns."""
    import lightgbm as lgb

    params = {**LIGHTGBM, "objective": "regression"}
    y = within_visit(np.log(p)[:, None], visit)[:, 0]
    booster = lgb.train(params, lgb.Dataset(X, label=y, params=params), ROUNDS)
    return lambda X: np.asarray(booster.predict(X))


FITTERS: dict[str, Callable[[Matrix, Vector, npt.NDArray[np.intp]], Scorer]] = {
    "logistic": fit_logistic,
    "linear, within visit": fit_linear_within,
    "lightgbm": fit_lightgbm,
    "lightgbm, within visit": fit_lightgbm_within,
}
"""The scorers fitted, linear first (``--linear`` keeps those only)."""
LINEAR = ("logistic", "linear, within visit")


def weights_p(rows: Rows, weights: Vector, visits: npt.NDArray[np.intp]) -> Vector:
    """The true top-slot probability of percentile fusion with ``weights``."""
    k = len(loop.ALGORITHMS)
    return top_p(rows, rows.features["b"][:, k : 2 * k] @ weights, visits)


def seed_arms(
    world: loop.World,
    visits: Sequence[loop.Visit],
    seed: int,
    models: Sequence[str],
    sets: Sequence[str] = FEATURE_SETS,
) -> dict[str, Vector]:
    """Every arm's true top-slot probability on each of ``visits`` (one world, one seed)."""
    static = loop.static_arms(visits, seed)
    arms = {name: static[name] for name in ("static blend", "oracle", loop.HINDSIGHT)}
    rows = candidate_rows(world, visits)
    users = np.array([v.user for v in visits])
    folds = [np.flatnonzero(users % 2 == f) for f in (0, 1)]
    row_fold = (users % 2)[rows.visit]
    found: dict[str, Vector] = {}

    def put(name: str, visits_of: npt.NDArray[np.intp], p: Vector) -> None:
        found.setdefault(name, np.zeros(len(visits)))[visits_of] = p

    for f, fitted in enumerate(folds):
        other = folds[1 - f]
        _, w = loop.hindsight([visits[t] for t in fitted.tolist()], seed)
        put("(a) fixed weights, in-sample", fitted, weights_p(rows, w, fitted))
        put("(a) fixed weights, held-out", other, weights_p(rows, w, other))
        train = row_fold == f
        for model in models:
            for name in sets:
                X = rows.features[name]
                score = FITTERS[model](X[train], rows.p[train], rows.visit[train])(X)
                put(f"({name}) {model}, in-sample", fitted, top_p(rows, score, fitted))
                put(f"({name}) {model}, held-out", other, top_p(rows, score, other))
    return {**arms, **found}


def run_world(
    make: Callable[[int], loop.World],
    seeds: int,
    steps: int,
    models: Sequence[str],
    sets: Sequence[str] = FEATURE_SETS,
) -> tuple[str, dict[str, dict[str, Any]]]:
    """Arms pooled over ``seeds`` worlds (as ``benchmarks.loop.run_world`` pools them)."""
    users: list[npt.NDArray[np.intp]] = []
    arms: dict[str, list[Vector]] = {}
    for seed in range(seeds):
        started = time.process_time()
        world = make(100 + seed)
        visits = world.visits(steps, seed=200 + seed)
        for name, p in seed_arms(world, visits, seed, models, sets).items():
            arms.setdefault(name, []).append(p)
        users.append(np.array([v.user + seed * loop.N_USERS for v in visits], dtype=np.intp))
        took = time.process_time() - started
        print(f"  {world.name} seed {seed}: {took:.0f} CPU s", file=sys.stderr, flush=True)
    merged = {k: np.concatenate(v) for k, v in arms.items()}
    return make(100).name, loop.clustered(np.concatenate(users), merged, seed=7)


def table(results: Sequence[tuple[str, dict[str, dict[str, Any]]]]) -> str:
    names = [w for w, _ in results]
    head = " | ".join(f"`{w}` CTR | `{w}` gap closed [95 % CI]" for w in names)
    lines = [f"| scorer | {head} |", "|---" + "|---:" * (2 * len(names)) + "|"]
    order = ["static blend", loop.HINDSIGHT]
    order += [k for k in results[0][1] if k.startswith("(")]
    order.append("oracle")
    for arm in order:
        cells = []
        for _, stats in results:
            s = stats[arm]
            lo, hi = s["gap_ci"]
            gap = "—" if arm == "static blend" else f"{s['gap']:.2f} [{lo:.2f}, {hi:.2f}]"
            cells += [f"{100 * s['ctr']:.2f} %", gap]
        label = "(a) fixed weights, all visits (the loop's row)" if arm == loop.HINDSIGHT else arm
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop_ceiling", description=__doc__)
    loop.world_arguments(parser, seeds=3)
    parser.add_argument("--linear", action="store_true", help="the linear scorers only")
    parser.add_argument(
        "--sets", default=",".join(FEATURE_SETS), help="the feature sets fitted, comma-separated"
    )
    args = parser.parse_args(argv)
    sets = args.sets.split(",")
    if not set(sets) <= set(FEATURE_SETS):
        parser.error(f"--sets: each of {', '.join(FEATURE_SETS)}, got {args.sets!r}")
    kinds = loop.kinds(args.world)
    models = list(LINEAR) if args.linear else list(FITTERS)
    results = [run_world(loop.WORLDS[k], args.seeds, args.steps, models, sets) for k in kinds]
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
