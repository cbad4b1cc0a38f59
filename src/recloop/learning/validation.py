"""Is a new click model better than the one serving? Holdout metrics, off-policy value, the gate.

Holdout metrics
---------------
:func:`time_split` keeps the latest examples out of training, as serving
will only ever see the future. On that holdout :func:`evaluate` computes
AUC (ranking), log loss and the expected calibration error (probabilities),
and :func:`decide` applies a :class:`PromotionGate` to the candidate and the champion
measured on the same holdout.

Off-policy value of the top slot
--------------------------------
``rank`` logs, for each impression, which candidate it put in the top slot
and with what probability (``core.exploration``). A :class:`LoggedSlate`
keeps the candidates' features (as if each were in the top slot, see
:func:`~recloop.core.features.at_position`), the index ``a`` of the item shown
there, its logged propensity ``μ`` and the reward ``r`` (1 for a click on it).
The *target* policy is ε-greedy over a model's scores (:func:`target_probabilities`)::

    π(a) = (1 - ε) [a = argmax score] + ε / n

With importance weights ``w_i = π(a_i) / μ_i`` over ``N`` logged slates:

==========================  ======================================================
:func:`snips`               ``Σ w_i r_i / Σ w_i`` (self-normalised IPS)
:func:`doubly_robust`       ``1/N Σ [ Σ_a π(a) r̂(a) + w_i (r_i - r̂(a_i)) ]``, with
                            ``r̂`` the model's predicted click probability
:func:`on_policy`           ``1/N Σ r_i``, the value of the logging policy itself
==========================  ======================================================

Each returns an :class:`Estimate` with a normal-approximation interval
(delta method for SNIPS's ratio), deterministic and cheap; ``effective_n``
is Kish's ``(Σ w)² / Σ w²``, the number of on-policy samples the weighted
ones are worth. When it is small the interval is not to be trusted: the
target policy mostly picks what the logging policy rarely showed.

Degenerate data returns an estimate with a ``reason`` instead of raising:
``no_slates`` (nothing to estimate from), ``zero_weight`` (the target policy
never takes a logged action), ``insufficient_data`` (one slate: a value, no
interval).

References
----------
* A. Swaminathan, T. Joachims (2015), "The self-normalized estimator for
  counterfactual learning", NeurIPS 2015.
* M. Dudík, J. Langford, L. Li (2011), "Doubly robust policy evaluation and
  learning", ICML 2011.
* C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger (2017), "On calibration of
  modern neural networks", ICML 2017 (expected calibration error).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from recloop.core.errors import InvalidInput
from recloop.learning.learner import Model

Vector = npt.NDArray[np.float64]
Matrix = npt.NDArray[np.float64]
Indices = npt.NDArray[np.intp]

CALIBRATION_BINS = 10


# -- Holdout ---------------------------------------------------------------------


def time_split(timestamps: npt.ArrayLike, holdout_fraction: float) -> tuple[Indices, Indices]:
    """Indices of the training rows and of the holdout (the latest ``holdout_fraction``).

    Both are in time order, and every holdout row is at least as late as every
    training row. Rows sharing the boundary timestamp all go to the holdout
    (so that one impression's rows are never split), which can make it a
    little larger than asked.

    >>> train, holdout = time_split([5.0, 1.0, 4.0, 2.0, 3.0], 0.4)
    >>> train.tolist(), holdout.tolist()
    ([1, 3, 4], [2, 0])
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise InvalidInput("holdout_fraction", f"must be in (0, 1), got {holdout_fraction}")
    times = np.asarray(timestamps, dtype=np.float64)
    if times.ndim != 1:
        raise InvalidInput("timestamps", f"must be one-dimensional, got shape {times.shape}")
    order = np.argsort(times, kind="stable")
    if order.size == 0:
        return order, order
    k = max(1, math.ceil(order.size * holdout_fraction))
    cutoff = times[order[order.size - k]]
    late = times[order] >= cutoff
    return order[~late], order[late]


# -- Metrics -----------------------------------------------------------------------


def _labels_and_probabilities(y: npt.ArrayLike, p: npt.ArrayLike) -> tuple[Vector, Vector]:
    labels = np.asarray(y, dtype=np.float64)
    probabilities = np.asarray(p, dtype=np.float64)
    if labels.ndim != 1 or labels.shape != probabilities.shape:
        raise InvalidInput("p", f"must match y's shape {labels.shape}, got {probabilities.shape}")
    if labels.size == 0:
        raise InvalidInput("y", "is empty")
    if not np.all((labels == 0.0) | (labels == 1.0)):
        raise InvalidInput("y", "must hold only 0 and 1")
    if not np.all((probabilities >= 0.0) & (probabilities <= 1.0)):
        raise InvalidInput("p", "must hold probabilities in [0, 1]")
    return labels, probabilities


def auc(y: npt.ArrayLike, p: npt.ArrayLike) -> float | None:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``); None with one class only.

    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> auc([1, 1], [0.2, 0.9]) is None
    True
    """
    labels, probabilities = _labels_and_probabilities(y, p)
    if labels.min() == labels.max():
        return None
    from sklearn import metrics  # type: ignore[import-untyped]  # seconds to import: on use

    return float(metrics.roc_auc_score(labels, probabilities))


def log_loss(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Mean negative log-likelihood (``sklearn.metrics.log_loss``; p clipped to machine epsilon).

    >>> round(log_loss([0, 1], [0.2, 0.6]), 6)  # -(ln 0.8 + ln 0.6) / 2
    0.366985
    """
    labels, probabilities = _labels_and_probabilities(y, p)
    from sklearn import metrics

    return float(metrics.log_loss(labels, probabilities, labels=[0.0, 1.0]))


def calibration_error(y: npt.ArrayLike, p: npt.ArrayLike, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error over ``bins`` equal-width bins of p.

    ``ECE = Σ_b (n_b / N) |mean(y in b) - mean(p in b)|``; p = 1 falls in the last bin.

    >>> round(calibration_error([0, 1, 0, 1], [0.05, 0.05, 0.95, 0.95]), 12)
    0.45
    """
    labels, probabilities = _labels_and_probabilities(y, p)
    if bins < 1:
        raise InvalidInput("bins", f"must be >= 1, got {bins}")
    index = np.minimum((probabilities * bins).astype(np.intp), bins - 1)
    count = np.bincount(index, minlength=bins)
    gap = np.abs(
        np.bincount(index, weights=labels, minlength=bins)
        - np.bincount(index, weights=probabilities, minlength=bins)
    )
    # Σ_b (n_b / N) |Σy_b / n_b - Σp_b / n_b| = Σ_b |Σy_b - Σp_b| / N
    return float(gap[count > 0].sum() / labels.size)


ROC_POINTS = 101
"""Most points of a stored ROC curve (the console draws it; more add nothing to see)."""


def curves(y: npt.ArrayLike, p: npt.ArrayLike, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """A model's ROC curve and reliability diagram on the holdout, small enough to keep
    in its registry record (``metrics["curves"]``).

    ``roc``: ``fpr`` and ``tpr`` of ``sklearn.metrics.roc_curve`` (its corners only,
    thinned evenly to at most :data:`ROC_POINTS`, both ends kept); empty lists with one
    class only. ``reliability``: per non-empty bin of :func:`calibration_error`'s
    ``bins``, the mean predicted probability, the observed click rate and the count.

    >>> found = curves([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], bins=2)
    >>> found["roc"]["fpr"], found["roc"]["tpr"]
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    >>> bins = found["reliability"]
    >>> [round(v, 4) for v in bins["predicted"]], bins["observed"][1], bins["count"]
    ([0.2833, 0.8], 1.0, [3, 1])
    """
    labels, probabilities = _labels_and_probabilities(y, p)
    if bins < 1:
        raise InvalidInput("bins", f"must be >= 1, got {bins}")
    fpr: list[float] = []
    tpr: list[float] = []
    if labels.min() != labels.max():
        from sklearn import metrics

        x, t, _ = metrics.roc_curve(labels, probabilities, drop_intermediate=True)
        keep = np.unique(np.linspace(0, len(x) - 1, min(len(x), ROC_POINTS)).round().astype(int))
        fpr, tpr = [float(v) for v in x[keep]], [float(v) for v in t[keep]]
    index = np.minimum((probabilities * bins).astype(np.intp), bins - 1)
    count = np.bincount(index, minlength=bins)
    clicked = np.bincount(index, weights=labels, minlength=bins)
    predicted = np.bincount(index, weights=probabilities, minlength=bins)
    held = count > 0
    return {
        "roc": {"fpr": fpr, "tpr": tpr},
        "reliability": {
            "predicted": [float(v) for v in predicted[held] / count[held]],
            "observed": [float(v) for v in clicked[held] / count[held]],
            "count": [int(v) for v in count[held]],
        },
    }


@dataclass(frozen=True, slots=True)
class Metrics:
    """A model's holdout metrics; ``auc`` is None when the holdout has one class only."""

    n: int
    positives: int
    auc: float | None
    log_loss: float
    calibration_error: float

    def to_dict(self) -> dict[str, float | int | None]:
        """Plain values for storage (``ModelRecord.metrics``)."""
        return {
            "n": self.n,
            "positives": self.positives,
            "auc": self.auc,
            "log_loss": self.log_loss,
            "calibration_error": self.calibration_error,
        }


def evaluate(y: npt.ArrayLike, p: npt.ArrayLike) -> Metrics:
    """:func:`auc`, :func:`log_loss` and :func:`calibration_error` of predictions ``p``.

    >>> evaluate([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]).auc
    0.75
    """
    labels, probabilities = _labels_and_probabilities(y, p)
    return Metrics(
        n=int(labels.size),
        positives=int(labels.sum()),
        auc=auc(labels, probabilities),
        log_loss=log_loss(labels, probabilities),
        calibration_error=calibration_error(labels, probabilities),
    )


# -- The gate ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PromotionGate:
    """How much better a candidate must be to replace the champion.

    ``min_auc_gain``: AUC gain required over the champion (over 0.5 without
    one). ``max_logloss_increase``: how much worse the log loss may get.
    ``min_effective_n``: the effective sample size an off-policy estimate
    needs to count (:func:`decide_off_policy`).
    """

    min_auc_gain: float = 0.005
    max_logloss_increase: float = 0.001
    min_effective_n: float = 30.0


def decide(candidate: Metrics, champion: Metrics | None, gate: PromotionGate) -> tuple[bool, str]:
    """Accept the candidate? With the reason, numbers included.

    Both models must be measured on the same holdout. Without a champion (or
    when its AUC is undefined), the candidate must reach
    ``AUC > 0.5 + min_auc_gain``; otherwise it must beat the champion's AUC by
    at least ``min_auc_gain`` and not raise the log loss by more than
    ``max_logloss_increase``. A candidate without an AUC (one-class holdout)
    is rejected.

    >>> gate = PromotionGate(min_auc_gain=0.01, max_logloss_increase=0.001)
    >>> decide(Metrics(1000, 90, 0.71, 0.30, 0.01), Metrics(1000, 90, 0.69, 0.31, 0.02), gate)
    (True, 'accepted: AUC 0.7100 vs champion 0.6900 (gain 0.0200 >= 0.0100); log loss 0.3000 vs 0.3100 (increase -0.0100 <= 0.0010)')
    >>> decide(Metrics(1000, 90, 0.505, 0.30, 0.01), None, gate)
    (False, 'rejected: AUC 0.5050 <= 0.5 + 0.0100 = 0.5100 (no champion)')
    """  # noqa: E501
    if candidate.auc is None:
        return False, (
            f"rejected: AUC undefined, the holdout has one class "
            f"({candidate.positives} positives of {candidate.n})"
        )
    if champion is None or champion.auc is None:
        bar = 0.5 + gate.min_auc_gain
        accepted = candidate.auc > bar
        return accepted, (
            f"{'accepted' if accepted else 'rejected'}: AUC {candidate.auc:.4f} "
            f"{'>' if accepted else '<='} 0.5 + {gate.min_auc_gain:.4f} = {bar:.4f} (no champion)"
        )
    gain = candidate.auc - champion.auc
    increase = candidate.log_loss - champion.log_loss
    auc_ok = gain >= gate.min_auc_gain
    loss_ok = increase <= gate.max_logloss_increase
    accepted = auc_ok and loss_ok
    return accepted, (
        f"{'accepted' if accepted else 'rejected'}: "
        f"AUC {candidate.auc:.4f} vs champion {champion.auc:.4f} "
        f"(gain {gain:.4f} {'>=' if auc_ok else '<'} {gate.min_auc_gain:.4f}); "
        f"log loss {candidate.log_loss:.4f} vs {champion.log_loss:.4f} "
        f"(increase {increase:.4f} {'<=' if loss_ok else '>'} {gate.max_logloss_increase:.4f})"
    )


# -- Off-policy estimates --------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class LoggedSlate:
    """One logged impression's top slot.

    ``features``: one row per candidate, each as if shown in the top slot, in
    the columns of the model that will score them. ``shown``: the row of the
    item the logging policy put on top; ``propensity``: the logged
    probability of that; ``reward``: 1.0 if it was clicked, else 0.0.
    """

    features: Matrix
    shown: int
    propensity: float
    reward: float


@dataclass(frozen=True, slots=True)
class Estimate:
    """A policy's estimated click rate in the top slot, with a ``1 - alpha`` interval.

    ``value`` is None only for ``no_slates`` and ``zero_weight``; the interval
    is None also for ``insufficient_data`` (see the module docstring).
    """

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    effective_n: float
    reason: str | None = None


def target_probabilities(scores: npt.ArrayLike, epsilon: float) -> Vector:
    """ε-greedy over ``scores``: ``1 - ε`` on the best (the first, on ties) plus ``ε / n`` each.

    >>> target_probabilities([0.2, 0.5, 0.1, 0.2], 0.2).round(12).tolist()
    [0.05, 0.85, 0.05, 0.05]
    """
    if not 0.0 <= epsilon <= 1.0:
        raise InvalidInput("epsilon", f"must be in [0, 1], got {epsilon}")
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise InvalidInput("scores", f"must be a non-empty vector, got shape {values.shape}")
    probabilities = np.full(values.size, epsilon / values.size)
    probabilities[int(np.argmax(values))] += 1.0 - epsilon
    return probabilities


def model_scores(model: Model, slates: Sequence[LoggedSlate]) -> list[Vector]:
    """``model``'s predicted click probability of every candidate of every slate (one call).

    The scores serve both as the target policy's ranking and as DR's reward model.
    """
    if not slates:
        return []
    predicted = model.predict(np.vstack([s.features for s in slates]))
    bounds = np.cumsum([s.features.shape[0] for s in slates])[:-1]
    return list(np.split(predicted, bounds))


def _check_slates(slates: Sequence[LoggedSlate], per_slate: Sequence[Vector], name: str) -> None:
    if len(per_slate) != len(slates):
        raise InvalidInput(name, f"has {len(per_slate)} entries for {len(slates)} slates")
    for i, (slate, values) in enumerate(zip(slates, per_slate, strict=True)):
        n = slate.features.shape[0]
        if np.shape(values) != (n,):
            raise InvalidInput(f"{name}.{i}", f"must have {n} values, got shape {np.shape(values)}")
        if not 0 <= slate.shown < n:
            raise InvalidInput(f"slates.{i}.shown", f"must be in [0, {n}), got {slate.shown}")
        if not 0.0 < slate.propensity <= 1.0:
            raise InvalidInput(
                f"slates.{i}.propensity", f"must be in (0, 1], got {slate.propensity}"
            )
        if not math.isfinite(slate.reward):
            raise InvalidInput(f"slates.{i}.reward", f"must be finite, got {slate.reward}")


def _weights(
    slates: Sequence[LoggedSlate], scores: Sequence[Vector], epsilon: float
) -> tuple[list[Vector], Vector, Vector]:
    """Target probabilities per slate, importance weights and rewards."""
    _check_slates(slates, scores, "scores")
    targets = [target_probabilities(s, epsilon) for s in scores]
    weights = np.array([t[s.shown] / s.propensity for t, s in zip(targets, slates, strict=True)])
    rewards = np.array([s.reward for s in slates], dtype=np.float64)
    return targets, weights, rewards


def _kish(weights: Vector) -> float:
    total_squares = float(np.sum(weights * weights))
    return float(np.sum(weights)) ** 2 / total_squares if total_squares > 0 else 0.0


def _estimate(value: float, se: float | None, n: int, effective_n: float, alpha: float) -> Estimate:
    if se is None:
        return Estimate(value, None, None, n, effective_n, "insufficient_data")
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    return Estimate(value, value - z * se, value + z * se, n, effective_n)


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise InvalidInput("alpha", f"must be in (0, 1), got {alpha}")


def snips(
    slates: Sequence[LoggedSlate], scores: Sequence[Vector], epsilon: float, alpha: float = 0.05
) -> Estimate:
    """Self-normalised IPS value of ε-greedy over ``scores`` (one vector per slate).

    The interval is the delta method's for a ratio of means::

        V = Σ w r / Σ w,   se = sqrt( Σ (w (r - V))² / (N (N - 1)) ) / mean(w)

    >>> slates = [LoggedSlate(np.zeros((2, 1)), 0, 0.5, 1.0), LoggedSlate(np.zeros((2, 1)), 1, 0.5, 0.0)]
    >>> snips(slates, [np.array([1.0, 0.0]), np.array([1.0, 0.0])], epsilon=0.0).value
    1.0
    """  # noqa: E501
    _check_alpha(alpha)
    if not slates:
        return Estimate(None, None, None, 0, 0.0, "no_slates")
    _, weights, rewards = _weights(slates, scores, epsilon)
    n = len(slates)
    total = float(weights.sum())
    if total == 0.0:
        return Estimate(None, None, None, n, 0.0, "zero_weight")
    value = float(np.dot(weights, rewards)) / total
    se = None
    if n > 1:
        residual = weights * (rewards - value)
        se = math.sqrt(float(np.sum(residual * residual)) / (n * (n - 1))) / (total / n)
    return _estimate(value, se, n, _kish(weights), alpha)


def doubly_robust(
    slates: Sequence[LoggedSlate],
    scores: Sequence[Vector],
    epsilon: float,
    predicted: Sequence[Vector],
    alpha: float = 0.05,
) -> Estimate:
    """Doubly robust value of ε-greedy over ``scores``, ``predicted`` click rates as reward model.

    Per slate ``t_i = Σ_a π(a) r̂(a) + w_i (r_i - r̂(a_i))``; the value is
    their mean and ``se`` their standard deviation over ``sqrt(N)``. Unbiased
    if either the propensities or the reward model are right.

    >>> slates = [LoggedSlate(np.zeros((2, 1)), 0, 0.5, 1.0), LoggedSlate(np.zeros((2, 1)), 1, 0.5, 0.0)]
    >>> r_hat = [np.array([0.8, 0.1]), np.array([0.8, 0.1])]
    >>> round(doubly_robust(slates, r_hat, 0.0, r_hat).value, 6)  # ((0.8 + 2 * 0.2) + 0.8) / 2
    1.0
    """  # noqa: E501
    _check_alpha(alpha)
    if not slates:
        return Estimate(None, None, None, 0, 0.0, "no_slates")
    _check_slates(slates, predicted, "predicted")
    targets, weights, rewards = _weights(slates, scores, epsilon)
    r_hat = [np.asarray(p, dtype=np.float64) for p in predicted]
    direct = np.array([float(t @ p) for t, p in zip(targets, r_hat, strict=True)])
    shown_hat = np.array([p[s.shown] for p, s in zip(r_hat, slates, strict=True)])
    terms = direct + weights * (rewards - shown_hat)
    n = len(slates)
    se = float(np.std(terms, ddof=1)) / math.sqrt(n) if n > 1 else None
    return _estimate(float(terms.mean()), se, n, _kish(weights), alpha)


def on_policy(slates: Sequence[LoggedSlate], alpha: float = 0.05) -> Estimate:
    """The logging policy's own top-slot click rate: the mean reward, with a normal interval.

    >>> e = on_policy([LoggedSlate(np.zeros((1, 1)), 0, 1.0, r) for r in (0.0, 1.0, 1.0, 0.0)])
    >>> e.value, round(e.ci_low, 4), round(e.ci_high, 4)
    (0.5, -0.0658, 1.0658)
    """
    _check_alpha(alpha)
    if not slates:
        return Estimate(None, None, None, 0, 0.0, "no_slates")
    rewards = np.array([s.reward for s in slates], dtype=np.float64)
    n = len(slates)
    se = float(np.std(rewards, ddof=1)) / math.sqrt(n) if n > 1 else None
    return _estimate(float(rewards.mean()), se, n, float(n), alpha)


# -- The off-policy gate -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyVerdict:
    """The off-policy half of the gate: ``accepted``, why, and the numbers it read.

    ``supported``: an accepted candidate whose evidence also says it is no worse than the
    serving policy (a usable estimate at least the serving value's lower bound); an
    accepted candidate without that is *unproven* (no usable estimate, or one whose
    interval reaches the serving value only above its point), and the canary shows it to
    fewer users (``learning.unproven_canary_share``).
    """

    accepted: bool
    reason: str
    numbers: dict[str, float]
    supported: bool = False


NO_EVIDENCE: Mapping[str, str] = {
    "single_item_slates": "every logged slate shows one item (rank with k = 1), so what a "
    "candidate would have put on top among the candidates is not logged",
}
"""Reason codes of an estimate without a value, explained in the gate's reason."""


def decide_off_policy(
    candidate: Mapping[str, Estimate], serving: Estimate, min_effective_n: float = 30.0
) -> PolicyVerdict:
    """Reject a candidate whose policy is confidently worse than the serving one.

    ``candidate`` maps an estimator's name (``snips``, ``dr``) to the
    candidate policy's estimated top-slot click rate; ``serving`` is the
    serving policy's own (:func:`on_policy` on the same logged slates: it
    *is* the logging policy). The candidate is rejected when any estimator's
    upper confidence bound lies below the serving value: even the most
    favourable value its evidence allows is worse than what serves now.

    An estimator without an interval, or with fewer than ``min_effective_n``
    effective samples (Kish), is no evidence either way and is reported as
    such; with no usable estimate at all the candidate passes this half of
    the gate (the AUC half and the canary still judge it) unproven.
    ``supported`` (:class:`PolicyVerdict`) is set when the candidate is accepted
    and some usable estimate is at least the serving value's lower bound.

    >>> serving = Estimate(0.0241, 0.020, 0.028, 4000, 4000.0)
    >>> verdict = decide_off_policy({"snips": Estimate(0.0085, 0.004, 0.013, 4000, 900.0)}, serving)
    >>> verdict.accepted, verdict.reason
    (False, 'rejected: SNIPS 0.0085 [0.0040, 0.0130] upper bound < serving 0.0241')
    >>> verdict = decide_off_policy({"snips": Estimate(0.019, 0.01, 0.03, 4000, 900.0)}, serving)
    >>> verdict.accepted, verdict.supported, verdict.reason
    (True, False, 'accepted, unproven: SNIPS 0.0190 [0.0100, 0.0300] upper bound >= serving 0.0241; point < serving lower bound 0.0200')
    >>> decide_off_policy({"snips": Estimate(0.025, 0.02, 0.03, 4000, 900.0)}, serving).reason
    'accepted: SNIPS 0.0250 [0.0200, 0.0300] upper bound >= serving 0.0241; point >= serving lower bound 0.0200'
    """  # noqa: E501
    if min_effective_n < 0:
        raise InvalidInput("min_effective_n", f"must be >= 0, got {min_effective_n}")
    numbers: dict[str, float] = {}
    if serving.value is None:
        why = NO_EVIDENCE.get(serving.reason or "", f"serving value {serving.reason}")
        return PolicyVerdict(True, f"no off-policy evidence: {why}", {})
    numbers["serving"] = serving.value
    floor = serving.value if serving.ci_low is None else serving.ci_low
    if serving.ci_low is not None:
        numbers["serving_ci_low"] = serving.ci_low
    parts: list[str] = []
    rejected = False
    supported = False
    for name, estimate in candidate.items():
        label = name.upper()
        if estimate.value is None or estimate.ci_high is None or estimate.ci_low is None:
            parts.append(f"{label} no interval ({estimate.reason})")
            continue
        numbers[f"{name}_value"] = estimate.value
        numbers[f"{name}_ci_low"] = estimate.ci_low
        numbers[f"{name}_ci_high"] = estimate.ci_high
        numbers[f"{name}_effective_n"] = estimate.effective_n
        interval = f"{estimate.value:.4f} [{estimate.ci_low:.4f}, {estimate.ci_high:.4f}]"
        if estimate.effective_n < min_effective_n:
            parts.append(
                f"{label} {interval} not used: effective n {estimate.effective_n:.0f} "
                f"< {min_effective_n:.0f}"
            )
            continue
        below = estimate.ci_high < serving.value
        rejected = rejected or below
        part = (
            f"{label} {interval} upper bound {'<' if below else '>='} serving {serving.value:.4f}"
        )
        if not below:
            holds = estimate.value >= floor
            supported = supported or holds
            part += f"; point {'>=' if holds else '<'} serving lower bound {floor:.4f}"
        parts.append(part)
    if not parts:
        return PolicyVerdict(True, "no off-policy evidence: no estimate", numbers)
    verdict = "rejected" if rejected else "accepted" if supported else "accepted, unproven"
    return PolicyVerdict(
        not rejected, f"{verdict}: " + "; ".join(parts), numbers, supported and not rejected
    )
