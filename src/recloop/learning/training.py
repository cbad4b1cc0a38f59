"""Training data from logged impressions, and one training run: fit, validate, gate.

Examples are the items ``rank`` showed, with the features it logged when it
showed them (``Impression.shown.features``, float32, built by
:func:`recloop.core.features.feature_matrix`):
training never recomputes a feature, so what a model learns from is what it
will be served. The label is a click on that item carrying the impression's
id within the attribution window; a purchase is kept as a second label.

:func:`build_training_data` and :func:`train` are plain functions of plain data,
so they run in the training process (:mod:`recloop.learning.job`) and serving
is not slowed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from recloop.core.events import Event
from recloop.core.features import COLUMN, FEATURE_NAMES, columns_of
from recloop.learning.learner import Artifact, Learner, LightGbmLearner, Model, load_model
from recloop.learning.learner import load_learner as import_learner
from recloop.learning.validation import (
    Estimate,
    LoggedSlate,
    Metrics,
    PromotionGate,
    curves,
    decide,
    decide_off_policy,
    doubly_robust,
    evaluate,
    model_scores,
    on_policy,
    snips,
    time_split,
)
from recloop.ports import Impression


@dataclass(slots=True)
class Slate:
    """One impression's shown items (by position), for off-policy estimates: ``rows`` in
    :data:`~recloop.core.features.FEATURE_NAMES` columns."""

    timestamp: float
    rows: npt.NDArray[np.float64]
    propensity: float
    reward: float
    epsilon: float


def _no_rows() -> npt.NDArray[np.float64]:
    return np.zeros((0, len(FEATURE_NAMES)))


@dataclass(slots=True)
class TrainingData:
    """The examples: ``features`` (one row per shown item, FEATURE_NAMES columns, the
    float32 values logged), their labels, conversions and impression times."""

    features: npt.NDArray[np.float64] = field(default_factory=_no_rows)
    labels: list[int] = field(default_factory=list)
    conversions: list[int] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    slates: list[Slate] = field(default_factory=list)

    @property
    def examples(self) -> int:
        return len(self.labels)

    @property
    def positives(self) -> int:
        return sum(self.labels)


IMPORTED: Final = "recloop_imported"
"""The context key marking an impression logged by ``recloop import`` (a slate from history,
ranked again by recloop to log it)."""


def build_training_data(
    impressions: Sequence[Impression],
    feedback: Mapping[str, Sequence[Event]],
    window_seconds: float,
) -> TrainingData:
    """Join impressions with the clicks (and purchases) naming them within the window.

    Impressions logged without the model's features (logged before features
    were, or with learning off) are left out. Imported ones (``recloop
    import``: :data:`IMPORTED` in their context) give examples but no logged
    slate: their clicks answered what the product showed back then, not the
    order and propensities recloop logged for them, so the off-policy
    estimates read the slates recloop served only.
    """
    data = TrainingData()
    blocks: list[npt.NDArray[np.float64]] = []
    aligned: dict[tuple[str, ...], bool] = {}
    for imp in impressions:
        shown = imp.shown
        names = shown.feature_names
        usable = aligned.get(names)
        if usable is None:
            usable = aligned[names] = "inverse_position" in names
        if not usable or len(shown) == 0:
            continue
        deadline = imp.created_at + window_seconds
        clicked: set[str] = set()
        bought: set[str] = set()
        for e in feedback.get(imp.impression_id, ()):
            if e.timestamp > deadline:
                continue
            if e.type == "click":
                clicked.add(e.item_id)
            elif e.type == "purchase":
                bought.add(e.item_id)
        rows = columns_of(shown.features, names, FEATURE_NAMES)
        blocks.append(rows)
        data.labels.extend(int(item in clicked) for item in shown.item_ids)
        data.conversions.extend(int(item in bought) for item in shown.item_ids)
        data.timestamps.extend([imp.created_at] * len(shown))
        if imp.context.get(IMPORTED):
            continue
        data.slates.append(
            Slate(
                imp.created_at,
                rows,
                shown.propensities[0],
                float(shown.item_ids[0] in clicked),
                imp.epsilon,
            )
        )
    if blocks:
        data.features = np.concatenate(blocks)
    return data


@dataclass(frozen=True, slots=True)
class Champion:
    kind: str
    data: bytes
    sha256: str
    version: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one training run produced; ``artifact`` is None if there was nothing to train."""

    artifact: Artifact | None
    accepted: bool
    reason: str
    metrics: dict[str, Any]


def train(
    data: TrainingData,
    champion: Champion | None,
    gate: PromotionGate,
    holdout_fraction: float,
    learner: str | None = None,
    alpha: float = 0.05,
) -> Outcome:
    """Fit on the earlier examples, validate on the latest, against the champion.

    Metrics: AUC, log loss and calibration error of both on the same
    time-ordered holdout; the top slot's click rate under each model's
    ε-greedy policy by SNIPS and doubly-robust estimates on the holdout's
    logged exploration, next to the logging policy's own.

    The gate has two halves, both required: :func:`decide` on the holdout
    metrics, and :func:`decide_off_policy`: a candidate whose SNIPS upper
    bound is below the serving (logging) policy's click rate is rejected,
    whatever its AUC; one accepted without a SNIPS point estimate at least the
    serving's lower bound is *unproven* (``supported`` false), and its canary is
    smaller. ``metrics["gate"]`` holds both verdicts. The DR estimate
    is recorded, not gated on: its reward model is the candidate's own
    predictions, so a miscalibrated candidate grades itself (a DR click rate
    below 0 has been seen on a candidate with AUC 0.74), while SNIPS stays
    within [0, 1] whatever the model says.
    """
    if data.examples == 0 or len(set(data.labels)) < 2:
        why = f"not trainable: {data.examples} examples, {data.positives} positives"
        return Outcome(None, False, why, {})
    train_idx, holdout_idx = time_split(data.timestamps, holdout_fraction)
    y = np.asarray(data.labels, dtype=np.float64)
    fit_with: Learner = LightGbmLearner() if learner is None else import_learner(learner)
    model = fit_with.fit(data.features[train_idx], y[train_idx], FEATURE_NAMES)
    holdout_rows = data.features[holdout_idx]
    predicted = _predict(model, holdout_rows)
    candidate = evaluate(y[holdout_idx], predicted)
    incumbent = None
    champion_metrics: Metrics | None = None
    if champion is not None:
        incumbent = load_model(champion.kind, champion.data, champion.sha256)
        champion_metrics = _evaluate(incumbent, holdout_rows, y[holdout_idx])
    auc_accepted, auc_reason = decide(candidate, champion_metrics, gate)
    cutoff = min((data.timestamps[i] for i in holdout_idx), default=float("inf"))
    slates = [s for s in data.slates if s.timestamp >= cutoff]
    off_policy, estimates, serving = _off_policy(model, incumbent, slates, alpha)
    policy = decide_off_policy(estimates, serving, gate.min_effective_n)
    accepted = auc_accepted and policy.accepted
    reason = (
        f"{'accepted' if accepted else 'rejected'} by the gate: AUC {auc_reason}; "
        f"off-policy {policy.reason}"
    )
    metrics: dict[str, Any] = {
        "train_examples": len(train_idx),
        "holdout_examples": len(holdout_idx),
        "candidate": candidate.to_dict(),
        "champion": None if champion_metrics is None else champion_metrics.to_dict(),
        "champion_version": None if champion is None else champion.version,
        "curves": curves(y[holdout_idx], predicted),
        "off_policy": off_policy,
        "gate": {
            "accepted": accepted,
            "auc": {"accepted": auc_accepted, "reason": auc_reason},
            "off_policy": {
                "accepted": policy.accepted,
                "supported": policy.supported,
                "reason": policy.reason,
                "numbers": policy.numbers,
            },
        },
    }
    return Outcome(Artifact.of(model), accepted, reason, metrics)


def _predict(model: Model, rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(model.predict(columns_of(rows, FEATURE_NAMES, model.feature_names)))


def _evaluate(model: Model, rows: npt.NDArray[np.float64], y: np.ndarray) -> Metrics:
    return evaluate(y, _predict(model, rows))


def _off_policy(
    model: Model, champion: Model | None, slates: Sequence[Slate], alpha: float
) -> tuple[dict[str, Any], dict[str, Estimate], Estimate]:
    """The estimates for the record; the candidate's (by estimator) and the serving
    policy's, for the gate.

    Only slates that show more than one item are read: on a slate of one item (``rank``
    with ``k = 1``) every policy puts that item on top with probability 1, so its importance
    weight is ``1 / μ`` whatever the model and the "estimate" is the logging policy's
    rewards reweighted, not the candidate's value. With none left, there is no evidence
    (``single_item_slates``)."""
    several = [s for s in slates if s.rows.shape[0] > 1]
    single = len(slates) - len(several)
    if slates and not several:
        none = Estimate(None, None, None, 0, 0.0, "single_item_slates")
        return {"slates": 0, "single_item_slates": single}, {}, none
    slates = several
    serving = on_policy(_logged(model, slates), alpha)
    if not slates:
        return {"slates": 0}, {}, serving
    epsilon = float(np.median([s.epsilon for s in slates]))
    found: dict[str, Any] = {"slates": len(slates), "epsilon": epsilon}
    if single:
        found["single_item_slates"] = single
    found["logging"] = _plain(serving)
    candidate: dict[str, Estimate] = {}
    for name, m in (("candidate", model), ("champion", champion)):
        if m is None:
            continue
        logged = _logged(m, slates)
        scores = model_scores(m, logged)
        by_snips = snips(logged, scores, epsilon, alpha)
        by_dr = doubly_robust(logged, scores, epsilon, scores, alpha)
        found[f"{name}_snips"] = _plain(by_snips)
        found[f"{name}_dr"] = _plain(by_dr)
        if m is model:
            candidate = {"snips": by_snips}  # DR: recorded above, not gated on
    return found, candidate, serving


def _logged(model: Model, slates: Sequence[Slate]) -> list[LoggedSlate]:
    return [
        LoggedSlate(
            columns_of(_at_top(s.rows), FEATURE_NAMES, model.feature_names),
            0,
            s.propensity,
            s.reward,
        )
        for s in slates
    ]


def _at_top(rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The rows as if each were shown in the top slot (``core.features.at_position`` 0)."""
    top = rows.copy()
    top[:, COLUMN["position"]] = 0.0
    top[:, COLUMN["inverse_position"]] = 1.0
    return top


def _plain(estimate: Estimate) -> dict[str, Any]:
    return {
        "value": estimate.value,
        "ci": [estimate.ci_low, estimate.ci_high],
        "n": estimate.n,
        "effective_n": estimate.effective_n,
    }
